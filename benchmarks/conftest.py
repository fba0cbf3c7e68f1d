"""pytest-benchmark set-up: machine info and the run's selection for the JSON, and the summary table.

The selection (``-k``/``-m`` expressions, the paths or node ids given, how many benchmarks were
deselected) goes into ``machine_info["selection"]``, so that `benchmarks.report` marks a run of
part of the suite as a subset in RESULTS.md instead of passing it off as the whole.
"""

import os
import platform
from pathlib import Path

import torch

from benchmarks.harness import INVOCATION, ROWS, format_table, steady_allocator

BENCHMARKS = Path(__file__).resolve().parent
_DESELECTED: list[int] = []
_SELECTED: list[int] = []
LOAD_AT_START = os.getloadavg()[0]
_ALLOCATOR: list[str | None] = []


def pytest_configure(config):
    """Timed runs fix the CPU allocator before any benchmark allocates (`steady_allocator`)."""
    if not config.getoption("benchmark_disable", False):
        _ALLOCATOR.append(steady_allocator())


def pytest_deselected(items):
    _DESELECTED.append(len(items))


def pytest_collection_finish(session):
    _SELECTED.append(sum(1 for item in session.items if item.path.parent == BENCHMARKS))


def selection(config) -> dict:
    """What this run selected, and whether that is less than the whole benchmark suite."""
    keyword, markexpr = config.option.keyword or "", config.option.markexpr or ""
    whole = {BENCHMARKS, BENCHMARKS.parent}  # `pytest benchmarks` or the root (testpaths adds tests/)
    paths = [arg for arg in config.args if Path(arg.split("::")[0]).resolve() not in whole or "::" in arg]
    deselected = sum(_DESELECTED)
    described = [f"-k {keyword!r}"] * bool(keyword) + [f"-m {markexpr!r}"] * bool(markexpr) + paths
    return {"subset": bool(described or deselected), "description": " ".join(described), "keyword": keyword,
            "markexpr": markexpr, "paths": paths, "selected": sum(_SELECTED), "deselected": deselected}  # fmt: skip


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["torch"] = torch.__version__
    machine_info["cuda_device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    try:
        import triton

        machine_info["triton"] = triton.__version__
    except ImportError:
        machine_info["triton"] = None
    machine_info["python"] = platform.python_version()
    machine_info["invocation"] = INVOCATION
    machine_info["load_average"] = {"start": LOAD_AT_START, "end": os.getloadavg()[0]}
    machine_info["allocator"] = _ALLOCATOR[0] if _ALLOCATOR else None
    machine_info["selection"] = selection(config)


def pytest_terminal_summary(terminalreporter):
    if ROWS:
        terminalreporter.write_sep("=", "sem_fast timings (median per call and spread; vs reference: >1 is faster)")
        terminalreporter.write_line(format_table(ROWS))
