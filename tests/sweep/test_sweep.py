"""``sem-fast sweep`` end to end on tiny trials: a 2x2 grid (gamma x alpha) x 2 seeds runs, its
table and plots are written, a second run redoes nothing, an interrupted sweep resumes the
interrupted trial and skips the finished ones, packed subprocesses give the summaries of
sequential trials at the same thread count, and a sweep directory holds one sweep."""

from __future__ import annotations

import csv
import json
import statistics

import pytest

from sem_fast.cli import main
from sem_fast.sweep import load_spec, run_sweep
from sem_fast.sweep import local as sweep_local
from sem_fast.sweep.plot import metric_figure
from sem_fast.sweep.spec import expand
from sem_fast.train import loop

#: The demo recipe shrunk to a fraction of a second per trial (see tests/train/conftest.py).
TINY = """
recipe = "demo"
seeds = [{seeds}]
[fixed]
width = 4
epochs = 2
es_epochs = 0
batch_size = 16
max_steps_per_epoch = 2
eval_every = 2
progress = false
plots = false
[grid]
gamma = [0.0, 1.0]
alpha = [0.2, 1.0]
"""
#: Summary fields that measure time or place, not the training.
NOT_NUMBERS = {"epoch_time_s", "img_per_s", "elapsed_s", "train_time_s", "checkpoint", "device"}


def _write(tmp_path, text):
    path = tmp_path / "spec.toml"
    path.write_text(text)
    return path


def _spec(tmp_path, seeds="0, 1"):
    return load_spec(_write(tmp_path, TINY.format(seeds=seeds)))


def _numbers(summary):
    out = {k: v for k, v in summary.items() if k not in NOT_NUMBERS}
    out["final"] = {k: v for k, v in summary["final"].items() if k not in NOT_NUMBERS}
    out["config"] = {k: v for k, v in summary["config"].items() if k not in ("out", "progress")}
    return out


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """The 2x2 grid x seeds (0, 1), run one trial after another: ``(spec, out, report)``."""
    root = tmp_path_factory.mktemp("sweep")
    spec = _spec(root)
    return spec, root / "out", run_sweep(spec, root / "out", log=lambda line: None)


def _summaries(out):
    return {p.parent.name: json.loads(p.read_text()) for p in (out / "trials").glob("*/summary.json")}


def test_every_trial_of_the_grid_finishes_with_its_own_configuration(swept):
    _, out, report = swept
    assert len(report.outcomes.finished) == 8 and not report.outcomes.failed and report.pending == 0
    summaries = _summaries(out)
    assert sorted(summaries) == sorted(report.outcomes.finished)
    got = sorted((s["config"]["gamma"], s["config"]["alpha"], s["config"]["seed"]) for s in summaries.values())
    assert got == [(g, a, s) for g in (0.0, 1.0) for a in (0.2, 1.0) for s in (0, 1)]
    assert all(s["epochs"] == 2 and s["final_test_acc"] is not None for s in summaries.values())
    manifest = json.loads((out / "sweep.json").read_text())
    assert [t["name"] for t in manifest["trials"]] == report.outcomes.finished


def _expected_cells(out):
    """``{(gamma, alpha): [final_test_acc by seed]}`` read back from the trials' summaries."""
    cells = {}
    for s in _summaries(out).values():
        cells.setdefault((s["config"]["gamma"], s["config"]["alpha"]), []).append(s["final_test_acc"])
    return cells


ROWS = {(0.0, 0.2): "Mixup (alpha=0.2)", (0.0, 1.0): "Mixup (alpha=1)",
        (1.0, 0.2): "Mixup + SEM (alpha=0.2, gamma=1)", (1.0, 1.0): "Mixup + SEM (alpha=1, gamma=1)"}  # fmt: skip
COLUMN = "CIFAR-10 subset / PreActResNet18 (width 4)"


def test_results_table_shows_mean_and_std_over_seeds_per_configuration(swept):
    _, out, _ = swept
    markdown = (out / "results.md").read_text()
    assert f"| Method | {COLUMN} |" in markdown and "mean ± std over 2 seed(s)" in markdown
    assert "8 of 8 trials finished" in markdown
    with (out / "results.csv").open(newline="") as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    for key, values in _expected_cells(out).items():
        mean, std = statistics.fmean(values), statistics.stdev(values)
        assert f"| {ROWS[key]} | {mean:.2f} ± {std:.2f} |" in markdown
        row = rows[ROWS[key]]
        assert float(row[f"{COLUMN} mean"]) == pytest.approx(mean) and float(row[f"{COLUMN} std"]) == pytest.approx(std)
        assert row[f"{COLUMN} n"] == "2"
    with (out / "trials.csv").open(newline="") as f:
        trials = list(csv.DictReader(f))
    assert len(trials) == 8 and {t["state"] for t in trials} == {"finished"}


@pytest.mark.parametrize("field,other", [("gamma", "alpha"), ("alpha", "gamma")])
def test_accuracy_plots_against_gamma_and_alpha_show_mean_and_std_per_line(swept, field, other):
    from PIL import Image

    spec, out, report = swept
    for fmt in ("png", "svg"):
        assert out / f"plot_{field}.{fmt}" in report.files
    with Image.open(out / f"plot_{field}.png") as image:
        assert image.size == (960, 720)  # 6.4 x 4.8 inches at 150 dpi
    trials = expand(spec, out)
    ax = metric_figure(trials, _summaries(out), "final_test_acc", field).axes[0]
    assert ax.get_xlabel() == {"gamma": "γ (weight of the SEM term)", "alpha": "α (mixup's Beta(α, α))"}[field]
    assert ax.get_ylabel() == "test accuracy (%) after the last epoch"
    assert ax.get_title() == f"Test accuracy vs {field}: mean ± std over 2 seed(s)"
    cells = _expected_cells(out)  # (gamma, alpha) -> accuracies over the seeds
    series = {bar.get_label(): bar for bar in ax.containers}  # one error-bar line per value of the other field
    assert sorted(series) == ([f"{other}=0", f"{other}=1"] if other == "gamma" else [f"{other}=0.2", f"{other}=1"])
    for label, bar in series.items():
        value = float(label.split("=")[1])
        xs = list(bar.lines[0].get_xdata())
        assert xs == ([0.0, 1.0] if field == "gamma" else [0.2, 1.0])
        values = [cells[(value, x) if other == "gamma" else (x, value)] for x in xs]
        assert list(bar.lines[0].get_ydata()) == pytest.approx([statistics.fmean(v) for v in values])
        caps = bar.lines[1][0].get_ydata()  # the lower caps: mean - std
        assert list(caps) == pytest.approx([statistics.fmean(v) - statistics.stdev(v) for v in values])


def test_a_second_run_trains_nothing_and_rewrites_the_same_table(swept, monkeypatch):
    spec, out, _ = swept
    before = (out / "results.md").read_text()
    calls = []
    monkeypatch.setattr(sweep_local, "train", lambda *a, **k: calls.append(a))
    report = run_sweep(spec, out, log=lambda line: None)
    assert calls == [] and len(report.skipped) == 8 and report.outcomes.finished == []
    assert (out / "results.md").read_text() == before


def test_an_interrupted_sweep_resumes_the_interrupted_trial_and_skips_finished_ones(swept, tmp_path, monkeypatch):
    _, full_out, _ = swept
    spec = _spec(tmp_path, seeds="0")  # the seed-0 trials of the module's sweep: same names
    calls = []
    real = loop.train

    def interrupt_second_trial(config, *, resume=False):
        calls.append((config.out.rsplit("/", 1)[1], resume))

        def stop(record):
            raise KeyboardInterrupt

        return real(config, resume=resume, on_epoch_end=stop if len(calls) == 2 else None)

    monkeypatch.setattr(sweep_local, "train", interrupt_second_trial)
    report = run_sweep(spec, tmp_path / "out", log=lambda line: None)
    first, second = calls[0][0], calls[1][0]
    assert report.outcomes.interrupted and report.outcomes.finished == [first] and report.pending == 3
    assert "1 of 4 trials finished" in (tmp_path / "out" / "results.md").read_text()

    calls.clear()
    monkeypatch.setattr(sweep_local, "train", lambda config, *, resume=False: calls.append(
        (config.out.rsplit("/", 1)[1], resume)) or real(config, resume=resume))  # fmt: skip
    report = run_sweep(spec, tmp_path / "out", log=lambda line: None)
    assert calls[0] == (second, True) and [resume for _, resume in calls[1:]] == [False, False]
    assert first not in [name for name, _ in calls] and report.skipped == [first]
    assert report.outcomes.resumed == [second] and len(report.outcomes.finished) == 3
    resumed = _summaries(tmp_path / "out")
    expected = _summaries(full_out)
    for name, summary in resumed.items():
        assert _numbers(summary) == _numbers(expected[name]), name  # as if never interrupted


def test_a_failing_trial_is_reported_and_the_others_still_run(tmp_path, monkeypatch, capsys):
    real = loop.train

    def fail_alpha_1(config, *, resume=False):
        if config.alpha == 1.0:
            raise loop.NonFiniteLossError(1, 1, 2, 1, {"loss": float("nan")}, saved_epoch=0)
        return real(config, resume=resume)

    monkeypatch.setattr(sweep_local, "train", fail_alpha_1)
    status = main(["sweep", str(_write(tmp_path, TINY.format(seeds="0"))), "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert status == 1 and "2 of 4 trials finished" in out and "2 failed" in out
    assert out.count("- failed: `") == 2 and "NonFiniteLossError: non-finite loss at epoch 1" in out


def test_packed_subprocesses_give_the_summaries_of_sequential_trials_at_the_same_thread_count(swept, tmp_path):
    """Two ``sem-fast train`` processes at once, one CPU thread each, as the sequential trials had
    (PyTorch's CPU convolutions and BatchNorm give other bits at another thread count)."""
    _, full_out, _ = swept
    report = run_sweep(_spec(tmp_path, seeds="0"), tmp_path / "out", parallel=2, threads=1, log=lambda line: None)
    assert len(report.outcomes.finished) == 4 and not report.outcomes.failed, report.outcomes.failed
    packed, sequential = _summaries(tmp_path / "out"), _summaries(full_out)
    assert len(packed) == 4
    for name, summary in packed.items():
        assert _numbers(summary) == _numbers(sequential[name]), name
        assert (tmp_path / "out" / "trials" / name / "train.log").is_file()



def test_each_trial_records_the_cpu_threads_it_trained_on(swept):
    _, out, _ = swept
    with (out / "trials.csv").open(newline="") as f:
        assert {row["threads"] for row in csv.DictReader(f)} == {"1"}  # tests/run_fixtures.py: one thread


ONE_SEED_GRID = TINY.format(seeds="0").replace("alpha = [0.2, 1.0]\n", "")  # 2 trials: gamma 0 and 1


def test_another_sweep_into_a_sweep_directory_is_refused_and_overwrite_replaces_it(tmp_path):
    from sem_fast.sweep.runner import SweepExistsError
    from sem_fast.sweep.spec import parse_spec

    first = _write(tmp_path, ONE_SEED_GRID)
    out = tmp_path / "out"
    run_sweep(load_spec(first), out, log=lambda line: None)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != ".lock"}
    other = parse_spec({"recipe": "demo", "fixed": load_spec(first).fixed, "grid": {"alpha": [0.2, 1.0]}}, "alpha spec")
    with pytest.raises(SweepExistsError, match=rf"{out} holds another sweep \(2 trials there, 2 in this spec \(2 new, 2 not "
                                               r"in it\).*--overwrite"):  # fmt: skip
        run_sweep(other, out, log=lambda line: None)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != ".lock"} == before  # unchanged
    report = run_sweep(other, out, overwrite=True, log=lambda line: None)
    assert len(report.outcomes.finished) == 2
    names = sorted(p.name for p in (out / "trials").iterdir())
    assert len(names) == 2 and all(name.startswith("alpha=") for name in names)  # the gamma trials are gone
    assert (out / "plot_alpha.png").is_file() and not (out / "plot_gamma.png").exists()  # no stale plot
    assert "alpha=0.2" in (out / "results.md").read_text()


def test_a_sweep_directory_in_use_by_another_sweep_is_refused(tmp_path):
    from sem_fast.train.run_lock import DirectoryInUseError, hold_lock

    spec = load_spec(_write(tmp_path, ONE_SEED_GRID))
    (tmp_path / "out").mkdir()
    with hold_lock(tmp_path / "out"), pytest.raises(DirectoryInUseError, match=r"out is in use by process \d+"):
        run_sweep(spec, tmp_path / "out", log=lambda line: None)
    assert not (tmp_path / "out" / "trials").exists()


def test_a_sweep_on_a_training_subset_tabulates_the_validation_accuracy(tmp_path):
    """Issue 17's study design: gamma chosen on a validation split of a training subset."""
    from sem_fast.sweep.spec import parse_spec

    fixed = {**load_spec(_write(tmp_path, ONE_SEED_GRID)).fixed, "train_subset": 100.0, "val_split": 0.2}
    spec = parse_spec({"recipe": "demo", "metric": "final_val_acc", "fixed": fixed, "grid": {"gamma": [0.0, 1.0]}}, "s")
    report = run_sweep(spec, tmp_path / "out", log=lambda line: None)
    summaries = _summaries(tmp_path / "out")
    assert len(report.outcomes.finished) == 2 and all(s["images"]["val"] == 20 for s in summaries.values())
    markdown = (tmp_path / "out" / "results.md").read_text()
    assert markdown.startswith("### Validation accuracy (%) after the last epoch")
    for s in summaries.values():
        assert f"{s['final_val_acc']:.2f}" in markdown
