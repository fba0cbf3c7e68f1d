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


class FakeBenchmark:
    """The parts of pytest-benchmark's fixture `measure` uses: ``pedantic`` runs the warm-up
    rounds and the rounds; a disabled fixture's call runs ``fn`` once."""

    def __init__(self, disabled: bool = False) -> None:
        self.disabled, self.extra_info, self.group = disabled, {}, None

    def __call__(self, fn):
        return fn()

    def pedantic(self, fn, rounds, warmup_rounds):
        for _ in range(warmup_rounds + rounds):
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
    # warm on shape 3 (the first two calls), then a new shape in the timed rounds
    fn = lambda: f(torch.ones(3 if next(calls) < 3 else 4))  # noqa: E731
    with pytest.raises(pytest.fail.Exception, match="compiled 1 new graph"):
        measure(FakeBenchmark(), fn, dev=CPU, group="g", case="c", provider="late", rounds=3)


def test_measure_records_the_spread_rounds_and_invocation(monkeypatch):
    monkeypatch.setattr(harness, "ROWS", [])
    bench = FakeBenchmark()
    x = torch.ones(1000)
    measure(bench, lambda: x.cos(), dev=CPU, group="g", case="c", provider="cos", items=1000, bytes_moved=8000,
            calls=3, rounds=5)  # fmt: skip
    info = bench.extra_info
    assert (info["rounds"], info["calls_per_round"], info["warmup_calls"]) == (5, 3, 1)
    assert info["us_min"] <= info["us_q1"] <= info["us_per_call"] <= info["us_q3"]
    assert info["invocation"] == harness.INVOCATION and info["gb_per_s"] == pytest.approx(8 / info["us_per_call"])
    (row,) = harness.ROWS
    assert row.spread.rounds == 5 and row.unit == "GB/s" and row.invocation == harness.INVOCATION
