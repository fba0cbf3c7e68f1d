"""benchmarks/harness.py: warm-up until nothing compiles, recompiles and graph breaks fail the
benchmark, and the spread of the timed rounds is recorded (fake pytest-benchmark fixture, CPU)."""

from __future__ import annotations

import pytest
import torch

from benchmarks import harness
from benchmarks.harness import Spread, measure, warm_up

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """Each test compiles its lambdas anew (dynamo caches compiled code per code object)."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.fixture(autouse=True)
def own_rows(monkeypatch):
    """The rows these tests time stay out of the table the benchmarks' conftest prints at the end."""
    monkeypatch.setattr(harness, "ROWS", [])


class FakeBenchmark:
    """The parts of pytest-benchmark's fixture `measure` uses: ``pedantic`` runs the warm-up
    rounds and the rounds; a disabled fixture's call runs ``fn`` once."""

    def __init__(self, disabled: bool = False) -> None:
        self.disabled, self.extra_info, self.group = disabled, {}, None

    def __call__(self, fn):
        return fn()

    def pedantic(self, fn, rounds=1, iterations=1, warmup_rounds=0):
        for _ in range(warmup_rounds + rounds * iterations):
            fn()


def _recompiling():
    """A compiled function called with a new shape each time, shapes kept static: every call compiles."""
    f = torch.compile(lambda x: x * 2, backend="eager", dynamic=False)
    sizes = iter(range(1, 100))
    return lambda: f(torch.ones(next(sizes)))


def _graph_breaking():
    def g(x):
        x = x + 1
        torch._dynamo.graph_break()
        return x * 2

    f = torch.compile(g, backend="eager")
    return lambda: f(torch.ones(3))


def test_spread_holds_the_quartiles_of_the_rounds():
    s = Spread.of([5e-6, 1e-6, 3e-6, 2e-6, 4e-6], calls=2)
    assert (s.min, s.q1, s.median, s.q3, s.iqr, s.rounds, s.calls) == pytest.approx((1, 2, 3, 4, 2, 5, 2))


def test_warm_up_stops_at_the_first_call_that_compiles_nothing():
    f = torch.compile(lambda x: x.sin() + 1, backend="eager")
    x = torch.ones(4)
    assert warm_up(lambda: f(x), CPU, "compiled") == 2  # the first call compiles, the second does not
    assert warm_up(lambda: x.sin(), CPU, "eager") == 1


def test_a_provider_that_keeps_recompiling_fails_its_warm_up():
    with pytest.raises(pytest.fail.Exception, match="recompiling: still compiling after 4 calls"):
        warm_up(_recompiling(), CPU, "recompiling")


def test_a_graph_break_fails_the_benchmark_also_untimed():
    with pytest.raises(pytest.fail.Exception, match=r"breaking: 1 graph break\(s\) under torch.compile"):
        measure(FakeBenchmark(disabled=True), _graph_breaking(), dev=CPU, group="g", case="c", provider="breaking")


def test_untimed_run_fails_a_provider_whose_second_call_compiles_again():
    with pytest.raises(pytest.fail.Exception, match="compiled 1 new graph"):
        measure(FakeBenchmark(disabled=True), _recompiling(), dev=CPU, group="g", case="c", provider="recompiling")


def test_a_recompile_during_the_timed_rounds_fails_the_benchmark():
    f = torch.compile(lambda x: x * 2, backend="eager", dynamic=False)
    calls = iter(range(1000))

    def fn():  # warm on shape 3 (the first calls), then a new shape in the timed rounds
        return f(torch.ones(3 if next(calls) < 3 else 4))

    with pytest.raises(pytest.fail.Exception, match="compiled 1 new graph"):
        measure(FakeBenchmark(), fn, dev=CPU, group="g", case="c", provider="late", rounds=3)


def _run_queue(monkeypatch, disturbed_rounds):
    """Fake schedstat: round ``i`` (0-based) waits 1 s on the run queue if ``disturbed_rounds(i)``."""
    reads, waited = iter(range(10**6)), [0.0]

    def wait() -> float:
        i = next(reads)
        if i % 2 == 1 and disturbed_rounds(i // 2):  # the read after round i // 2
            waited[0] += 1.0
        return waited[0]

    monkeypatch.setattr(harness, "run_queue_wait", wait)


def _measure_cos(rounds=5) -> dict:
    bench, x = FakeBenchmark(), torch.ones(1000)
    measure(bench, lambda: x.cos(), dev=CPU, group="g", case="c", provider="cos", rounds=rounds)
    return bench.extra_info


def test_rounds_other_processes_disturbed_are_dropped_and_timed_again(monkeypatch):
    _run_queue(monkeypatch, lambda i: i in (1, 3))
    info = _measure_cos()
    assert (info["rounds"], info["dropped_rounds"], info["contended"]) == (5, 2, False)
    _run_queue(monkeypatch, lambda i: i % 20 != 0)  # 6 undisturbed of the 15 x 8 tried: enough, kept
    info = _measure_cos(rounds=15)
    assert (info["rounds"], info["dropped_rounds"], info["contended"]) == (6, 114, False)


def test_a_row_without_enough_undisturbed_rounds_keeps_all_and_is_marked_contended(monkeypatch):
    _run_queue(monkeypatch, lambda i: i % 30 != 0)  # 4 of the 15 x 8 rounds tried undisturbed
    info = _measure_cos(rounds=15)
    assert (info["rounds"], info["dropped_rounds"], info["contended"]) == (15 * harness.MAX_ROUND_FACTOR, 0, True)


def test_measure_records_the_spread_rounds_and_invocation(monkeypatch):
    _run_queue(monkeypatch, lambda i: False)
    bench = FakeBenchmark()
    x = torch.ones(1000)
    measure(bench, lambda: x.cos(), dev=CPU, group="g", case="c", provider="cos", items=1000, bytes_moved=8000,
            calls=3, rounds=5)  # fmt: skip
    info = bench.extra_info
    assert (info["rounds"], info["calls_per_round"], info["warmup_calls"], info["dropped_rounds"]) == (5, 3, 1, 0)
    assert info["us_min"] <= info["us_q1"] <= info["us_per_call"] <= info["us_q3"]
    assert info["invocation"] == harness.INVOCATION and info["gb_per_s"] == pytest.approx(8 / info["us_per_call"])
    (row,) = harness.ROWS
    assert row.spread.rounds == 5 and row.unit == "GB/s" and row.invocation == harness.INVOCATION


def test_the_cpu_allocator_is_fixed_where_malloc_is_glibcs():
    import platform

    described = harness.steady_allocator()
    if platform.libc_ver()[0] == "glibc":
        assert described == "glibc malloc: mmap threshold 32 MiB, trim threshold 1024 MiB"
    else:
        assert described is None
