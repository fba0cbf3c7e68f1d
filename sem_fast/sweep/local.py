"""Running trials on this machine: one after another in this process, or ``parallel``
``sem-fast train`` subprocesses at once on the same device.

Packing: small models leave a GPU idle between kernel launches and during the host work of
each step; several trial processes overlap their launches on one device (each has its own CUDA
context and stream; CUDA time-slices between them). The CPU threads are split between the
processes (``OMP_NUM_THREADS`` = cores / ``parallel`` unless ``threads`` is given), so CPU-bound
trials do not oversubscribe the host. What packing gains is measured by
``benchmarks/bench_sweep.py``.

Threads and numbers: on the CPU, PyTorch's convolution and BatchNorm gradients depend on the
number of threads (their reductions are split across them; measured: torch 2.13, 1 vs 2 threads
differ in the last bits, our fused ops do not), so a trial is bit-identical to another run of it
only at the same thread count (recorded in its ``summary.json``); ``threads`` fixes it.

Lifetime: a trial process ends with the sweep that started it, whichever way the sweep ends
(Ctrl-C, SIGTERM, SIGKILL): it learns its parent from `PARENT_ENV` and asks the kernel for a
SIGTERM when that parent dies (`die_with_parent`), which the trainer handles like Ctrl-C.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from sem_fast.sweep.spec import Trial
from sem_fast.sweep.trials import config_to_argv
from sem_fast.train import train

#: Seconds between checks of the running trial processes (trials last seconds to hours).
POLL_S = 0.1
#: Seconds a trial process gets to save and exit after Ctrl-C before it is killed (its last
#: finished epoch is checkpointed already; this only spares the epoch in flight).
STOP_TIMEOUT_S = 30.0
#: A trial's output (progress, errors) in parallel mode, in its run directory.
LOG_NAME = "train.log"
#: Environment variable naming, to a trial process, the pid of the sweep process that started it.
PARENT_ENV = "SEM_FAST_SWEEP_PID"
#: ``prctl`` option: the signal a process gets when its parent dies (Linux, <sys/prctl.h>).
PR_SET_PDEATHSIG = 1
#: Seconds between checks of the parent pid where ``prctl`` is missing (macOS).
PARENT_POLL_S = 1.0

Log = Callable[[str], None]
#: ``(trial, resume)`` pairs still to run.
Pending = list[tuple[Trial, bool]]


class TrialOutcomes:
    """What happened to the trials run now: finished (resumed ones also listed in ``resumed``),
    failed (name -> message), and whether Ctrl-C stopped the sweep."""

    def __init__(self) -> None:
        self.finished: list[str] = []
        self.resumed: list[str] = []
        self.failed: dict[str, str] = {}
        self.interrupted = False

    def done(self, trial: Trial, resume: bool) -> None:
        self.finished.append(trial.name)
        if resume:
            self.resumed.append(trial.name)


def run_sequential(pending: Pending, outcomes: TrialOutcomes, log: Log, threads: int | None = None) -> None:
    """Train each trial in this process, in order (on ``threads`` CPU threads when given); a
    failing trial is recorded and the sweep goes on; Ctrl-C stops the sweep (the trial's last
    finished epoch is checkpointed)."""
    with _torch_threads(threads):
        _run_sequential(pending, outcomes, log)


def _run_sequential(pending: Pending, outcomes: TrialOutcomes, log: Log) -> None:
    for i, (trial, resume) in enumerate(pending, 1):
        log(f"[{i}/{len(pending)}] {'resuming' if resume else 'training'} {trial.name}")
        try:
            train(trial.config, resume=resume)
        except KeyboardInterrupt:
            outcomes.interrupted = True
            return
        except Exception as err:  # noqa: BLE001 - one bad trial (NaN loss, OOM, missing data) must not end the sweep
            outcomes.failed[trial.name] = f"{type(err).__name__}: {err}"
            log(f"  failed: {outcomes.failed[trial.name]}")
            continue
        outcomes.done(trial, resume)


def run_parallel(pending: Pending, parallel: int, outcomes: TrialOutcomes, log: Log, threads: int | None = None) -> None:
    """Run up to ``parallel`` trials at once, each a ``sem-fast train`` subprocess on ``threads``
    CPU threads (default: cores / ``parallel``) writing its output to ``<trial>/train.log``; on
    Ctrl-C every running trial is asked to stop (SIGINT). The trials die with this process."""
    threads = threads or max(1, _cpu_count() // parallel)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           PARENT_ENV: str(os.getpid())}  # fmt: skip
    queue = deque(pending)
    running: dict[subprocess.Popen, tuple[Trial, bool]] = {}
    started = 0
    try:
        while queue or running:
            while queue and len(running) < parallel:
                trial, resume = queue.popleft()
                started += 1
                log(f"[{started}/{len(pending)}] {'resuming' if resume else 'training'} {trial.name}")
                running[_launch(trial, resume, env)] = (trial, resume)
            time.sleep(POLL_S)
            for proc in [p for p in running if p.poll() is not None]:
                trial, resume = running.pop(proc)
                if proc.returncode == 0:
                    outcomes.done(trial, resume)
                else:
                    outcomes.failed[trial.name] = f"exit status {proc.returncode}: {_last_line(trial.dir / LOG_NAME)}"
                    log(f"  {trial.name} failed: {outcomes.failed[trial.name]}")
    except KeyboardInterrupt:
        outcomes.interrupted = True
        _stop(list(running))


def _launch(trial: Trial, resume: bool, env: dict[str, str]) -> subprocess.Popen:
    argv = config_to_argv(trial.config.replace(progress=False))
    command = [sys.executable, "-m", "sem_fast", "train", *argv, *(["--resume"] if resume else [])]
    trial.dir.mkdir(parents=True, exist_ok=True)
    with (trial.dir / LOG_NAME).open("a") as f:  # the child keeps its own descriptor of the file
        f.write(f"$ {' '.join(command)}\n")
        f.flush()
        return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT, env=env)


def _stop(processes: list[subprocess.Popen]) -> None:
    """SIGINT each process (``sem-fast train`` then exits with its checkpoint intact), wait, kill stragglers."""
    for proc in processes:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for proc in processes:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def die_with_parent() -> None:
    """In a trial process started by `run_parallel`: get SIGTERM when the sweep process ends
    (``prctl(PR_SET_PDEATHSIG)`` on Linux, a watcher thread elsewhere). Does nothing in a process
    not started by a sweep; the variable is removed, so this process's own children are unaffected."""
    parent = os.environ.pop(PARENT_ENV, None)
    if parent is None:
        return
    try:
        if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    except (OSError, AttributeError):  # no prctl: not Linux
        threading.Thread(target=_watch_parent, args=(int(parent),), daemon=True).start()
    if os.getppid() != int(parent):  # the sweep ended before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_S)
    os.kill(os.getpid(), signal.SIGTERM)


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _last_line(path: Path) -> str:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def _cpu_count() -> int:
    """CPU cores this process may use (its affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
