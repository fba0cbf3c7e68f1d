"""Shared benchmark machinery: timing that can be trusted, the correctness gate, and the rows of the
summary table printed at the end of a run (see ``conftest.py``) and written to RESULTS.md.

Every benchmark first checks its fast output against `sem_fast.reference` (a benchmark of a wrong
kernel is worthless). Then `measure`:

1. **warms up until nothing compiles**: ``fn`` is called until one call compiles no new graph
   (``torch._dynamo`` counters); a provider still compiling after `MAX_WARMUP_CALLS` calls, or
   one that graph-breaks or whose CUDA graph is skipped, fails the benchmark, and so does any
   compilation during the timed rounds (a recompiling provider once timed 64 ms instead of 0.6);
2. on CUDA checks that one call does not synchronize with the host
   (``torch.cuda.set_sync_debug_mode("error")``) unless the provider syncs by design
   (``host_syncs=True``: the paper-style loop's ``loss.item()``);
3. times ``rounds`` rounds of ``calls`` calls. CUDA: the L2 cache is flushed before each round (a
   256 MB write, as ``triton.testing.do_bench`` does), the GPU time of the round comes from CUDA
   events and the host time (enqueueing the calls) from ``time.perf_counter``, with no
   synchronization inside or between rounds. CPU: wall-clock time of the round;
4. drops the rounds that other processes disturbed: a round during which this process's threads
   waited on the CPU run queue (Linux ``/proc/self/task/*/schedstat``) for more than
   `CONTENTION_LIMIT` of its time is timed again, up to `MAX_ROUND_FACTOR` times the rounds
   asked for or `RETIME_BUDGET_S` of timing; a row left with fewer than `MIN_CLEAN_ROUNDS`
   undisturbed rounds keeps them all and is marked contended (on a shared machine two runs
   otherwise differ by several times);
5. records the spread over the kept rounds (min, quartiles, IQR) per call, the rounds, calls and
   dropped rounds, and the invocation (one id per pytest process), so that the report states its
   spread and only forms ratios of rows timed in the same run.

With ``--benchmark-disable`` ``fn`` runs once untimed (twice when the first call compiled: the
second must compile nothing), so the suite doubles as a quick correctness and recompile gate.
"""

from __future__ import annotations

import os
import statistics
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pytest
import torch
from torch._dynamo.utils import counters

from sem_fast import available_backends

#: Correctness-gate tolerances (atol, rtol) per dtype of the compared output: fp32 within 1e-5
#: relative; bf16/fp16 within a few units in the last place of values of order 1-10.
TOL: dict[torch.dtype, tuple[float, float]] = {
    torch.float32: (1e-5, 1e-5),
    torch.bfloat16: (3e-2, 1.6e-2),
    torch.float16: (4e-3, 2e-3),
}
#: Calls that may still compile before a provider counts as recompiling forever: the first call
#: compiles, a second may add a dynamic-shape graph (torch marks a changed dimension dynamic and
#: compiles once more), a third may compile the backward on its first use; a fourth never should.
MAX_WARMUP_CALLS = 4
#: Bytes written to flush the L2 cache before each CUDA round (H100/H200 L2: 50 MB), as do_bench.
L2_FLUSH_BYTES = 256 * 2**20
#: Default rounds: CUDA rounds are one call each (the L2 flush precedes every call, as in
#: do_bench); CPU rounds are milliseconds, 15 of them give quartiles that two runs reproduce.
DEFAULT_ROUNDS = {"cuda": 100, "cpu": 15}
#: A round is disturbed when this process's threads waited on the run queue for more than this
#: share of its wall time (measured: a quiet 2-core machine waits < 0.5%; with 5 runnable
#: processes on it, rounds wait 10-50% and time 2-8x slower).
CONTENTION_LIMIT = 0.02
#: Rounds tried, as a multiple of the rounds asked for, to collect undisturbed ones, and the
#: seconds of timed rounds after which disturbed ones are no longer retimed (keeps a CPU run on a
#: busy machine within minutes: the rounds asked for always run).
MAX_ROUND_FACTOR = 8
RETIME_BUDGET_S = 10.0
#: Fewest undisturbed rounds a spread is computed from; with fewer, every round is kept and the
#: row is marked contended.
MIN_CLEAN_ROUNDS = 5
#: One id per pytest process: the report forms a ratio only of two rows with the same id.
INVOCATION = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Spread:
    """Time per call over the timed rounds, in µs: ``min``, quartiles ``q1 <= median <= q3``;
    ``dropped``: disturbed rounds left out; ``contended``: too few undisturbed rounds, all kept."""

    min: float
    q1: float
    median: float
    q3: float
    rounds: int
    calls: int
    dropped: int = 0
    contended: bool = False

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1

    @classmethod
    def of(cls, seconds_per_call: Sequence[float], calls: int, dropped: int = 0, contended: bool = False) -> Spread:
        """The spread of per-call times (seconds) of ``len(seconds_per_call)`` rounds."""
        us = sorted(s * 1e6 for s in seconds_per_call)
        q1, median, q3 = statistics.quantiles(us, n=4, method="inclusive") if len(us) > 1 else us * 3
        return cls(us[0], q1, median, q3, len(us), calls, dropped, contended)


@dataclass
class Row:
    """One line of the summary table: the median µs per call and, when timed by `measure` or
    `record`, its spread, the host time per call (CUDA) and the invocation that timed it; a row
    pooled over several runs (`benchmarks.report.pool_rows`) counts them in ``runs``, and its
    spread's ``q1``/``q3`` are the lowest and highest of the runs' medians."""

    group: str
    case: str
    provider: str
    us_per_call: float
    throughput: float | None
    unit: str
    spread: Spread | None = None
    host_us: float | None = None
    invocation: str = ""
    runs: int = 1


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


def compile_counts() -> tuple[int, int, int]:
    """``(graphs compiled, graph breaks, CUDA graphs skipped)`` so far in this process."""
    return (counters["stats"]["unique_graphs"], sum(counters["graph_break"].values()),
            counters["inductor"]["cudagraph_skips"])  # fmt: skip


def _check_compiles(before: tuple[int, int, int], provider: str, *, may_compile: bool) -> bool:
    """Fail on graph breaks or skipped CUDA graphs since ``before``, and on any compilation unless
    ``may_compile``; returns whether something was compiled."""
    graphs, breaks, skips = (a - b for a, b in zip(compile_counts(), before))
    if breaks:
        reasons = "; ".join(reason.splitlines()[0] for reason in counters["graph_break"])
        pytest.fail(f"{provider}: {breaks} graph break(s) under torch.compile ({reasons})")
    if skips:
        pytest.fail(f"{provider}: {skips} CUDA graph(s) skipped (ran eager); TORCH_LOGS=perf_hints says why")
    if graphs and not may_compile:
        pytest.fail(f"{provider}: compiled {graphs} new graph(s) while timed (a recompile: TORCH_LOGS=recompiles)")
    return graphs > 0


def warm_up(fn: Callable[[], object], dev: torch.device, provider: str) -> int:
    """Call ``fn`` until one call compiles nothing; returns the number of calls. Fails when it is
    still compiling after `MAX_WARMUP_CALLS` calls, or graph-breaks."""
    for n in range(1, MAX_WARMUP_CALLS + 1):
        before = compile_counts()
        fn()
        synchronize(dev)
        if not _check_compiles(before, provider, may_compile=True):
            return n
    pytest.fail(f"{provider}: still compiling after {MAX_WARMUP_CALLS} calls (recompiles: TORCH_LOGS=recompiles)")


def _check_no_host_sync(fn: Callable[[], object], dev: torch.device, provider: str) -> None:
    if dev.type != "cuda":
        return  # nothing to synchronize with
    torch.cuda.set_sync_debug_mode("error")
    try:
        fn()
    except RuntimeError as err:
        pytest.fail(f"{provider}: synchronizes with the host inside the timed call ({err})")
    finally:
        torch.cuda.set_sync_debug_mode("default")


#: glibc malloc settings for CPU timings (`steady_allocator`): blocks up to 32 MiB (glibc's largest
#: mmap threshold on 64-bit) come from the heap, and freed memory stays there (no trimming).
MALLOC_MMAP_THRESHOLD = 32 * 2**20
MALLOC_TRIM_THRESHOLD = 2**30


def steady_allocator() -> str | None:
    """Fix glibc's malloc thresholds for this process, so that a CPU op's time does not depend on
    what ran before it: by default glibc serves a block above a threshold it moves with the
    process's history by a fresh ``mmap`` (zeroed pages faulted in on every call). Measured: timm's
    batch mixup at B = 128 timed 1.7-2.2 ms alone and 0.4-0.5 ms after other benchmarks, 0.4-0.5 ms
    both ways with the thresholds fixed. Returns what was set, or None where malloc is not glibc's."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        return None
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's malloc.h
    if not (mallopt(m_mmap_threshold, MALLOC_MMAP_THRESHOLD) and mallopt(m_trim_threshold, MALLOC_TRIM_THRESHOLD)):
        return None
    mmap_mib, trim_mib = MALLOC_MMAP_THRESHOLD >> 20, MALLOC_TRIM_THRESHOLD >> 20
    return f"glibc malloc: mmap threshold {mmap_mib} MiB, trim threshold {trim_mib} MiB"


def run_queue_wait() -> float:
    """Seconds this process's threads have waited on a CPU run queue so far (Linux schedstat;
    0 where it cannot be read, so that no round counts as disturbed)."""
    total = 0
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return 0.0
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                total += int(f.read().split()[1])
        except (OSError, IndexError, ValueError):  # the thread exited, or no schedstat
            continue
    return total / 1e9


_L2_FLUSH: list[torch.Tensor] = []


def _flush_l2(dev: torch.device) -> None:
    if not _L2_FLUSH:
        _L2_FLUSH.append(torch.empty(L2_FLUSH_BYTES, dtype=torch.uint8, device=dev))
    _L2_FLUSH[0].zero_()


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
    host_syncs: bool = False,
) -> None:
    """Warm ``fn`` up, time it (see the module docstring) and record µs per call with its spread,
    img/s (``items`` per call) and GB/s (``bytes_moved`` per call).

    ``calls`` per round default to 1; ``rounds`` to `DEFAULT_ROUNDS` (``SEM_FAST_BENCH_ROUNDS``
    overrides). ``host_syncs=True`` marks a provider that synchronizes by design (not checked).
    """
    benchmark.group = group
    benchmark.extra_info.update(case=case, provider=provider, device=device_name(dev), invocation=INVOCATION)
    if benchmark.disabled:
        before = compile_counts()
        benchmark(fn)  # a disabled fixture calls fn once, untimed
        if _check_compiles(before, provider, may_compile=True):
            before = compile_counts()
            fn()  # the call after a compiling one must compile nothing
            _check_compiles(before, provider, may_compile=False)
        return
    calls = calls or 1
    rounds = rounds or int(os.environ.get("SEM_FAST_BENCH_ROUNDS", DEFAULT_ROUNDS[dev.type]))
    benchmark.extra_info["warmup_calls"] = warm_up(fn, dev, provider)
    if not host_syncs:
        _check_no_host_sync(fn, dev, provider)
    wall: list[float] = []
    disturbed: list[bool] = []
    events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []

    def more_rounds() -> bool:
        if disturbed.count(False) >= rounds:
            return False
        return len(disturbed) < rounds or (len(disturbed) < rounds * MAX_ROUND_FACTOR and sum(wall) < RETIME_BUDGET_S)

    def timed_rounds() -> None:
        while more_rounds():
            waited = run_queue_wait()
            if dev.type == "cuda":  # the events bracket the calls alone: nothing the host does in between
                _flush_l2(dev)
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            elapsed = time.perf_counter() - t0  # on CUDA: the host's time to enqueue the calls
            if dev.type == "cuda":
                end.record()
                events.append((start, end))
            wall.append(elapsed)
            disturbed.append(run_queue_wait() - waited > CONTENTION_LIMIT * elapsed)

    before = compile_counts()
    benchmark.pedantic(timed_rounds, rounds=1, iterations=1)
    synchronize(dev)
    _check_compiles(before, provider, may_compile=False)
    seconds = [start.elapsed_time(end) / 1e3 for start, end in events] if dev.type == "cuda" else wall
    keep = [not d for d in disturbed]
    contended = sum(keep) < min(rounds, MIN_CLEAN_ROUNDS)
    if contended:
        keep = [True] * len(keep)
    kept = [s / calls for s, k in zip(seconds, keep) if k]
    host = [s / calls for s, k in zip(wall, keep) if k] if dev.type == "cuda" else None
    if hasattr(benchmark, "stats"):  # pytest-benchmark's table and JSON "stats": the kept rounds, per call
        benchmark.stats.stats.data[:] = kept
    record(benchmark, kept, calls=calls, items=items, bytes_moved=bytes_moved, host_seconds=host,
           dropped=len(keep) - sum(keep), contended=contended)  # fmt: skip


def record(
    benchmark,
    seconds_per_call: Sequence[float],
    *,
    calls: int,
    items: int | None = None,
    bytes_moved: int | None = None,
    host_seconds: Sequence[float] | None = None,
    dropped: int = 0,
    contended: bool = False,
) -> Row:
    """Record timed rounds (seconds per call, one value per round) of the benchmark whose ``group``
    and ``extra_info`` case/provider are set: the spread, img/s (``items`` per call) and GB/s
    (``bytes_moved`` per call) at the median, into the JSON's ``extra_info`` and as a `Row`."""
    info = benchmark.extra_info
    info.setdefault("invocation", INVOCATION)
    spread = Spread.of(seconds_per_call, calls, dropped, contended)
    seconds = spread.median / 1e6
    info.update(calls_per_round=calls, rounds=spread.rounds, us_per_call=spread.median, us_min=spread.min,
                us_q1=spread.q1, us_q3=spread.q3, dropped_rounds=dropped, contended=contended)  # fmt: skip
    host_us = statistics.median(host_seconds) * 1e6 if host_seconds else None
    if host_us is not None:
        info["host_us_per_call"] = host_us
    throughput, unit = None, ""
    if items is not None:
        info["img_per_s"] = throughput = items / seconds
        unit = "img/s"
    if bytes_moved is not None:
        info["bytes_moved"] = bytes_moved
        info["gb_per_s"] = throughput = bytes_moved / seconds / 1e9
        unit = "GB/s"
    row = Row(benchmark.group, info["case"], info["provider"], spread.median, throughput, unit, spread, host_us,
              info["invocation"])  # fmt: skip
    ROWS.append(row)
    return row


def device_name(dev: torch.device) -> str:
    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({os.cpu_count()} cores)"


def format_table(rows: list[Row], baseline: str = "reference") -> str:
    """Rows as a Markdown table per group: median µs per call with its spread (min, IQR, rounds x
    calls; for rows pooled over runs, the lowest to highest of the runs' medians), host µs per call
    where measured (CUDA), throughput at the median, and the speed relative to ``baseline`` (the
    reference path) in the same case and invocation (``>1`` is faster)."""
    lines: list[str] = []
    host = any(r.host_us is not None for r in rows)
    pooled = any(r.runs > 1 for r in rows)
    columns = ["case", "provider", "µs/call (median of the runs)" if pooled else "µs/call (median)", "min"]
    columns += ["runs' medians" if pooled else "IQR", "runs: rounds × calls" if pooled else "rounds × calls"]
    columns += ["host µs/call"] * host + ["throughput", "vs reference"]
    for group in dict.fromkeys(r.group for r in rows):
        grouped = [r for r in rows if r.group == group]
        lines += [f"\n### {group}\n", "| " + " | ".join(columns) + " |", "|---|---|" + "---:|" * (len(columns) - 2)]
        base = {(r.case, r.invocation): r.us_per_call for r in grouped if r.provider == baseline and r.invocation}
        for r in grouped:
            s, ref = r.spread, base.get((r.case, r.invocation))
            n = format_number
            cells = [r.case, r.provider, n(r.us_per_call)]
            if s and pooled:
                width = f"{n(s.q1)}–{n(s.q3)} ({(s.q3 - s.q1) / s.median:.0%})"
                cells += [n(s.min), width, f"{r.runs}: {_rounds(s)}"]
            elif s:
                cells += [n(s.min), f"{n(s.iqr)} ({s.iqr / s.median:.0%})", _rounds(s)]
            else:
                cells += [""] * 3
            cells += [n(r.host_us) if r.host_us is not None else ""] * host
            cells.append(f"{n(r.throughput)} {r.unit}" if r.throughput is not None else "")
            cells.append(f"{n(ref / r.us_per_call)}×" if ref is not None else "")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _rounds(s: Spread) -> str:
    """``rounds × calls``, with the disturbed rounds dropped, or a contended row marked."""
    text = f"{s.rounds} × {s.calls}"
    if s.contended:
        return text + " **contended**"
    return text + f" (+{s.dropped} disturbed)" if s.dropped else text


def format_number(v: float) -> str:
    """Three significant digits, thousands separated: 0.0123, 4.56, 789, 12,345."""
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"
