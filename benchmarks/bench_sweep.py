"""Trials per GPU-hour of a sweep: one trial after another vs several packed on the device.

A sweep of ``TRIALS`` short trials (the same configuration, seeds 0..TRIALS-1) runs into a fresh
directory per round, through `sem_fast.sweep.run_sweep`:

- ``sequential``: ``--parallel 1``, the trials one after another in this process;
- ``1 process at a time``: one ``sem-fast train`` subprocess after another (separates the cost
  of a process per trial from the gain of packing);
- ``packed xN``: ``--parallel N``, N subprocesses at once on the device.

On CUDA the trials are the paper's PreActResNet18 (width 64, batch 128, bf16) for ``EPOCHS``
epochs of the bundled 3,000-image CIFAR-10 subset (23 steps each) with the test set evaluated
after the last one, ``torch.compile`` off (each process would compile anew: that measures the
compiler, not the packing). On the CPU, sequential vs packed x2 for a width-4 network, 2 steps,
one thread per trial: a smoke run of the machinery (CPU numbers say nothing about a GPU), which
CI runs untimed in about 10 s.

Recorded per provider: seconds per trial (``us_per_call``, median over rounds, with its spread),
``trials_per_h`` and the device's training ``img_per_s`` over the sweep. Correctness gate: every
trial finishes, and each provider's final train losses match the sequential sweep's within
``LOSS_RTOL``.

    pytest benchmarks/bench_sweep.py --benchmark-only
    SEM_FAST_BENCH_SWEEP_EPOCHS=8 pytest benchmarks/bench_sweep.py --benchmark-only
"""

from __future__ import annotations

import functools
import json
import math
import os
import tempfile
import time
from pathlib import Path

import pytest
import torch

from benchmarks.harness import device, device_name, record
from sem_fast.sweep import parse_spec, run_sweep
from sem_fast.sweep.local import TrialOutcomes, run_parallel
from sem_fast.sweep.runner import SweepReport, plan
from sem_fast.sweep.spec import expand

DEV = device()
ON_CUDA = DEV.type == "cuda"
TRIALS = 8 if ON_CUDA else 2
EPOCHS = int(os.environ.get("SEM_FAST_BENCH_SWEEP_EPOCHS", "4" if ON_CUDA else "1"))
PACKING = [2, 4] if ON_CUDA else [2]
PROVIDERS = ["sequential", *(["1 process at a time"] if ON_CUDA else []), *(f"packed x{n}" for n in PACKING)]
ROUNDS = int(os.environ.get("SEM_FAST_BENCH_ROUNDS", "2" if ON_CUDA else "1"))
#: Batch and step cap of one trial: the paper's batch on CUDA, every full batch of the
#: 3,000-image subset (23 per epoch); a 2-step CPU smoke run.
BATCH, STEPS = (128, 0) if ON_CUDA else (16, 2)
#: Relative difference allowed between the final train losses of a trial run in this process and
#: in a subprocess. CUDA: bf16 autocast and cuDNN's non-deterministic backward kernels make two
#: runs of one configuration differ by well under 1% over a few epochs. CPU: fp32, the only
#: difference is the thread count (reduction order), ~1e-6 after 2 steps. A wrong configuration
#: (another seed, lr, gamma) moves the loss by far more than either.
LOSS_RTOL = 0.05 if ON_CUDA else 1e-4

FIXED = {
    "dataset": "c10-bundled", "model": "prn18", "width": 64 if ON_CUDA else 4, "epochs": EPOCHS, "es_epochs": 0,
    "batch_size": BATCH, "max_steps_per_epoch": STEPS, "eval_every": EPOCHS, "compile": False, "progress": False,
}  # fmt: skip
SPEC = parse_spec({"recipe": "demo", "seeds": list(range(TRIALS)), "fixed": FIXED}, "benchmarks/bench_sweep.py")
CASE = f"{TRIALS} trials of PreActResNet18(width={FIXED['width']}) x {EPOCHS} epoch(s)"


def _quiet(line: str) -> None:
    """The sweep's progress lines are not wanted in benchmark output."""


def _sweep(provider: str, out: Path) -> SweepReport:
    """Run the benchmark's sweep with ``provider`` into the empty directory ``out``."""
    if provider == "sequential":
        return run_sweep(SPEC, out, log=_quiet)
    if provider == "1 process at a time":
        report = SweepReport(TRIALS)
        run_parallel(plan(expand(SPEC, out), report), 1, report.outcomes, _quiet)
        return report
    return run_sweep(SPEC, out, parallel=int(provider.rsplit("x", 1)[1]), log=_quiet)


def _final_numbers(out: Path) -> dict[str, dict[str, float]]:
    """Per trial: the final train loss and the optimizer steps."""
    numbers = {}
    for trial in expand(SPEC, out):
        summary = json.loads((trial.dir / "summary.json").read_text())
        numbers[trial.name] = {"train_loss": summary["final"]["train_loss"], "steps": summary["steps"]}
    return numbers


@functools.cache
def _sequential_numbers() -> dict[str, dict[str, float]]:
    """The sequential sweep's numbers (run once, untimed), the reference of the gate."""
    with tempfile.TemporaryDirectory() as tmp:
        report = _sweep("sequential", Path(tmp))
        assert len(report.outcomes.finished) == TRIALS, report.outcomes.failed
        return _final_numbers(Path(tmp))


@pytest.fixture(autouse=True, scope="module")
def one_thread_on_cpu():
    """On the CPU, the in-process trials get one thread, as each of the 2 packed processes does on
    a 2-core machine (and tiny ops run faster on one thread than on a busy two)."""
    threads = torch.get_num_threads()
    if not ON_CUDA:
        torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _check(provider: str, out: Path, outcomes: TrialOutcomes) -> None:
    assert len(outcomes.finished) == TRIALS and not outcomes.failed, f"{provider}: {outcomes.failed}"
    got, expected = _final_numbers(out), _sequential_numbers()
    assert got.keys() == expected.keys()
    for name, values in got.items():
        want = expected[name]
        assert values["steps"] == want["steps"], f"{provider}: {name}"
        close = math.isclose(values["train_loss"], want["train_loss"], rel_tol=LOSS_RTOL)
        assert close, f"{provider}: {name} {values} != sequential {want}"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_sweep_trials_per_hour(benchmark, provider, tmp_path):
    benchmark.group = "sweep: trials per device-hour"
    benchmark.extra_info.update(case=CASE, provider=provider, device=device_name(DEV))
    rounds = iter(range(1 << 30))

    def fresh_directory():
        return (tmp_path / f"round{next(rounds)}",), {}

    def run(out: Path) -> None:
        started = time.perf_counter()
        report = _sweep(provider, out)
        seconds.append(time.perf_counter() - started)
        _check(provider, out, report.outcomes)
        steps.append(_final_numbers(out)[report.outcomes.finished[0]]["steps"])

    seconds: list[float] = []
    steps: list[int] = []  # optimizer steps of one trial
    if benchmark.disabled:
        benchmark(lambda: run(fresh_directory()[0][0]))  # a disabled fixture calls it once, untimed
        return
    benchmark.pedantic(run, setup=fresh_directory, rounds=ROUNDS)
    row = record(benchmark, [s / TRIALS for s in seconds], calls=1, items=steps[0] * BATCH)
    benchmark.extra_info["trials_per_h"] = 3600e6 / row.us_per_call
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
