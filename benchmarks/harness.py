"""Shared benchmark machinery: device timing on top of pytest-benchmark, the correctness gate,
and the rows of the summary table printed at the end of a run (see ``conftest.py``).

Every benchmark first checks its fast output against `sem_fast.reference` (a benchmark of a
wrong kernel is worthless), then times ``calls`` back-to-back calls per round with one device
synchronization at the end of the round, so launch-bound ops are not dominated by the sync.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch

from sem_fast import available_backends

#: Correctness-gate tolerances (atol, rtol) per dtype of the compared output: fp32 within 1e-5
#: relative; bf16/fp16 within a few units in the last place of values of order 1-10.
TOL: dict[torch.dtype, tuple[float, float]] = {
    torch.float32: (1e-5, 1e-5),
    torch.bfloat16: (3e-2, 1.6e-2),
    torch.float16: (4e-3, 2e-3),
}


@dataclass
class Row:
    """One line of the summary table."""

    group: str
    case: str
    provider: str
    us_per_call: float
    throughput: float | None
    unit: str


ROWS: list[Row] = []


def device() -> torch.device:
    """CUDA when present, else CPU (sizes are chosen per device by each benchmark)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def fast_backends(dev: torch.device) -> list[str]:
    """The sem_fast backends other than the reference that can run on ``dev``."""
    return [name for name, why in available_backends(dev).items() if why is None and name != "reference"]


def skip_if_untimeable(benchmark, backend: str, dev: torch.device, *, smallest: bool) -> None:
    """Triton on a CPU runs in the interpreter: worth one correctness run (untimed, in the
    ``smallest`` case, to keep CI short), never a timing."""
    if backend == "triton" and dev.type == "cpu" and not (benchmark.disabled and smallest):
        pytest.skip("Triton runs interpreted on CPU (TRITON_INTERPRET=1): checked untimed in the smallest case")


def synchronize(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def assert_matches(actual: torch.Tensor, expected: torch.Tensor, name: str) -> None:
    """The correctness gate: ``actual`` equals the reference ``expected`` within ``TOL``."""
    atol, rtol = TOL[actual.dtype if actual.dtype in TOL else torch.float32]
    torch.testing.assert_close(
        actual.float(), expected.float(), atol=atol, rtol=rtol, msg=lambda m: f"{name} vs reference: {m}"
    )


def measure(
    benchmark,
    fn: Callable[[], object],
    *,
    dev: torch.device,
    group: str,
    case: str,
    provider: str,
    items: int | None = None,
    bytes_moved: int | None = None,
    calls: int | None = None,
    rounds: int | None = None,
) -> None:
    """Time ``fn`` and record µs per call, img/s (``items`` per call) and GB/s (``bytes_moved``).

    Rounds of ``calls`` calls (default 10 on CUDA, 1 on CPU) end with one synchronization;
    the median round over ``calls`` is the time per call. With ``--benchmark-disable`` ``fn``
    runs once, untimed, so the suite doubles as a quick smoke test.
    """
    benchmark.group = group
    benchmark.extra_info.update(case=case, provider=provider, device=device_name(dev))
    if benchmark.disabled:
        benchmark(fn)  # a disabled fixture calls fn once, untimed
        return
    on_cuda = dev.type == "cuda"
    calls = calls or (10 if on_cuda else 1)
    rounds = rounds or int(os.environ.get("SEM_FAST_BENCH_ROUNDS", 20 if on_cuda else 5))

    def run_round() -> None:
        for _ in range(calls):
            fn()
        synchronize(dev)

    fn()  # warm-up outside the timing: compilation, autotuning, allocator
    synchronize(dev)
    benchmark.pedantic(run_round, rounds=rounds, warmup_rounds=1)
    seconds = benchmark.stats.stats.median / calls
    benchmark.extra_info.update(calls_per_round=calls, us_per_call=seconds * 1e6)
    throughput, unit = None, ""
    if bytes_moved is not None:
        throughput, unit = bytes_moved / seconds / 1e9, "GB/s"
        benchmark.extra_info.update(bytes_moved=bytes_moved, gb_per_s=throughput)
    if items is not None:
        benchmark.extra_info["img_per_s"] = items / seconds
        if throughput is None:
            throughput, unit = items / seconds, "img/s"
    ROWS.append(Row(group, case, provider, seconds * 1e6, throughput, unit))


def device_name(dev: torch.device) -> str:
    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({os.cpu_count()} cores)"


def format_table(rows: list[Row], baseline: str = "reference") -> str:
    """Rows as a Markdown table per group, with each row's speed relative to ``baseline``
    (the reference path) in the same case: ``>1`` is faster."""
    lines: list[str] = []
    for group in dict.fromkeys(r.group for r in rows):
        lines += [f"\n### {group}\n", "| case | provider | µs/call | throughput | vs reference |", "|---|---|---:|---:|---:|"]
        base = {r.case: r.us_per_call for r in rows if r.group == group and r.provider == baseline}
        for r in (r for r in rows if r.group == group):
            speed = f"{_num(base[r.case] / r.us_per_call)}×" if r.case in base else ""
            tput = f"{_num(r.throughput)} {r.unit}" if r.throughput is not None else ""
            lines.append(f"| {r.case} | {r.provider} | {_num(r.us_per_call)} | {tput} | {speed} |")
    return "\n".join(lines)


def _num(v: float) -> str:
    """Three significant digits, thousands separated: 0.0123, 4.56, 789, 12,345."""
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"
