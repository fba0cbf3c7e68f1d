"""Session set-up for tests and benchmarks: run Triton kernels in the interpreter without a GPU, and
compile with torch.compile into a cache of this session's own.

TRITON_INTERPRET must be set before anything imports triton, hence here. Inductor's on-disk caches
key compiled graphs on op names, not on our kernels' Python, so a graph cached before a schema
changed would be reused (seen: a stale backward with the old argument list); a fresh cache folder
per session (inherited by the tests' subprocesses) rules that out.
"""

import os
import shutil
import tempfile

import torch

_INDUCTOR_CACHE = None if "TORCHINDUCTOR_CACHE_DIR" in os.environ else tempfile.mkdtemp(prefix="sem_fast_inductor_")
if _INDUCTOR_CACHE is not None:
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = _INDUCTOR_CACHE

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_unconfigure(config):
    if _INDUCTOR_CACHE is not None:
        shutil.rmtree(_INDUCTOR_CACHE, ignore_errors=True)
