"""An exclusive lock per run (or sweep) directory, held by the process writing in it for its life.

Two trainers writing into one run directory interleave their metrics and checkpoints (an orphan
of a killed sweep and the sweep's re-run did: ``metrics.jsonl`` ended with 5 lines for 3 epochs).
`hold_lock` takes ``<dir>/.lock`` with ``flock(LOCK_EX | LOCK_NB)`` and writes the holder's pid,
host, start time and command into it. The kernel releases the lock when its process ends, even
by SIGKILL, so a lock left by a dead process is taken over without a word; a live holder makes
`DirectoryInUseError` name it. Needs ``fcntl`` (Linux, macOS); elsewhere no lock is taken.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sem_fast.train.run_files import LOCK_NAME

try:
    import fcntl
except ImportError:  # Windows: no advisory locks
    fcntl = None


class DirectoryInUseError(RuntimeError):
    """Another live process holds the directory's lock; the message names it."""

    def __init__(self, directory: Path, holder: dict[str, object]) -> None:
        self.directory, self.holder = directory, holder
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(holder.get("started", 0))))
        super().__init__(
            f"{directory} is in use by process {holder.get('pid', '?')} on {holder.get('host', '?')} "
            f"(since {since}: {holder.get('command', '?')}); wait for it to end, or stop it "
            f"(kill {holder.get('pid', '<pid>')}) and run the command again"
        )


@contextmanager
def hold_lock(directory: Path) -> Iterator[None]:
    """Hold ``directory``'s exclusive lock (the directory must exist) for the ``with`` block;
    `DirectoryInUseError` when a live process holds it."""
    if fcntl is None:
        yield
        return
    fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DirectoryInUseError(directory, _read_holder(fd)) from None
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                  "command": " ".join(sys.argv)}  # fmt: skip
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _read_holder(fd: int) -> dict[str, object]:
    try:
        return json.loads(os.pread(fd, 4096, 0).decode())
    except ValueError:  # being written by its holder just now
        return {}
