"""The Ray Tune backend on a local 2-CPU Ray instance (skipped when ``ray[tune]`` is not
installed): trials run as Tune trials give the summaries of the local backend, and ASHA stops
trials early, which later runs of the sweep then skip."""

from __future__ import annotations

import json

import pytest

from sem_fast.sweep import load_spec, run_sweep
from sem_fast.sweep.ray_backend import RayOptions
from tests.sweep.test_sweep import TINY, _numbers, _summaries

ray = pytest.importorskip("ray")
pytest.importorskip("ray.tune")


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance for the module: 2 CPUs, no dashboard."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _spec(tmp_path, text):
    path = tmp_path / "spec.toml"
    path.write_text(text)
    return load_spec(path)


def test_ray_trials_give_the_summaries_of_local_trials(local_ray, tmp_path):
    spec = _spec(tmp_path, TINY.format(seeds="0").replace("gamma = [0.0, 1.0]", "gamma = [1.0]"))
    report = run_sweep(spec, tmp_path / "ray", backend="ray", ray_options=RayOptions(), log=lambda line: None)
    assert len(report.outcomes.finished) == 2 and not report.outcomes.failed
    local = run_sweep(spec, tmp_path / "local", log=lambda line: None)
    assert len(local.outcomes.finished) == 2
    on_ray, here = _summaries(tmp_path / "ray"), _summaries(tmp_path / "local")
    assert sorted(on_ray) == sorted(here)
    for name, summary in on_ray.items():
        assert _numbers(summary) == _numbers(here[name]), name
    assert (tmp_path / "ray" / "results.md").read_text() == (tmp_path / "local" / "results.md").read_text()


@pytest.mark.slow
def test_asha_stops_the_weaker_trials_early_and_the_next_run_skips_them(local_ray, tmp_path):
    """Two-class trials (about 50% test accuracy untrained) run first, on the 2 CPUs; the
    all-class trials (about 10%) reach ASHA's first rung below them and are stopped there."""
    text = (TINY.format(seeds="0, 1").replace("epochs = 2", "epochs = 3").replace("eval_every = 2", "eval_every = 1")
            .replace("gamma = [0.0, 1.0]\nalpha = [0.2, 1.0]", "classes = [[0, 1], []]"))  # fmt: skip
    spec = _spec(tmp_path, text)
    options = RayOptions(asha=True, grace_period=1, reduction_factor=2)
    report = run_sweep(spec, tmp_path / "out", backend="ray", ray_options=options, log=lambda line: None)
    assert not report.outcomes.failed and not report.outcomes.interrupted
    all_classes = {name for name in report.stopped + report.outcomes.finished if "classes=_" in name}
    assert len(all_classes) == 2 and all_classes <= set(report.stopped)
    assert report.outcomes.finished and all("classes=0,1_" in name for name in report.outcomes.finished)
    for name in report.stopped:
        trial = tmp_path / "out" / "trials" / name
        stopped = json.loads((trial / "stopped.json").read_text())
        assert stopped["epoch"] < 3 and not (trial / "summary.json").exists()
    markdown = (tmp_path / "out" / "results.md").read_text()
    assert f"{len(report.stopped)} stopped early (ASHA)" in markdown
    again = run_sweep(spec, tmp_path / "out", backend="ray", ray_options=options, log=lambda line: None)
    assert sorted(again.stopped) == sorted(report.stopped) and again.outcomes.finished == []
