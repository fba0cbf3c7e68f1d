"""The examples keep working: run each for a few steps."""

import importlib.util
import math
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name):
    """The example ``examples/<name>.py`` as a module (registered, as dataclasses need)."""
    module_name = "example_" + name.replace("/", "_")
    spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def test_own_training_loop_runs_and_reports_a_finite_loss(capsys):
    loss = _load("own_training_loop").main(["--steps", "4", "--batch-size", "8"])
    assert math.isfinite(loss) and 0 < loss < 10
    assert "step 4/4" in capsys.readouterr().out


def _write_trials(path: Path, rows: list[tuple[str, int, float, float]]) -> None:
    """A sweep's trials.csv: (gamma, seed, final_val_acc, final_test_acc) per finished trial."""
    path.mkdir(parents=True)
    lines = ["trial,state,gamma,seed,final_test_acc,best_test_acc,final_val_acc,epochs,train_time_s,threads,dir"]
    lines += [f"g{g}s{s},finished,{g},{s},{test},{test},{val},20,1.0,1,x" for g, s, val, test in rows]
    (path / "trials.csv").write_text("\n".join(lines) + "\n")


def test_study_analysis_chooses_gamma_on_validation_and_pairs_by_seed(tmp_path):
    analyze = _load("studies/analyze")
    # Student-t 0.975 quantiles from tables: df 1, 4, 30.
    for df, t in ((1, 12.7062), (4, 2.7764), (30, 2.0423)):
        assert abs(analyze.t_quantile(0.975, df) - t) < 1e-4
    plain = {s: 60.0 + s for s in range(5)}
    rows = [("0", s, 50.0, acc) for s, acc in plain.items()]
    rows += [("1", s, 51.0, plain[s] + 10.0) for s in range(5)]  # best on test, not on validation
    rows += [("2", s, 52.0, plain[s] + 1.0 + s) for s in range(5)]  # chosen: best validation mean
    _write_trials(tmp_path / "mixup", rows)
    _write_trials(tmp_path / "erm", [("0", s, 40.0, 55.0 + 2 * s) for s in range(5)])
    text = analyze.report(tmp_path)
    # gamma = 2 - mixup per seed: 1..5, mean 3, sd sqrt(2.5), half-width 2.7764 * sqrt(2.5 / 5).
    half = 2.7764 * math.sqrt(0.5)
    assert (
        f"mixup + SEM (gamma = 2, chosen on validation) − mixup | +1.00, +2.00, +3.00, +4.00, +5.00 | +3.00 | 1.58 | [{3 - half:+.2f}, {3 + half:+.2f}]"
        in text
    )
    assert "mixup − ERM | +5.00, +4.00, +3.00, +2.00, +1.00 | +3.00" in text
    assert "mixup + SEM (gamma = 2) − ERM | +6.00, +6.00, +6.00, +6.00, +6.00 | +6.00 | 0.00" in text
    assert "gamma = 1 − mixup | +10.00" in text and "for the record" in text
    assert "a > b (the 95 % interval excludes 0)" in text
    # A wider grid run later, read with the first as one grid: gamma = 4 has the best validation.
    _write_trials(tmp_path / "wide", [("4", s, 53.0, plain[s] + 2.0) for s in range(5)])
    wide = analyze.report(tmp_path, ["mixup", "wide"])
    assert "mixup + SEM (gamma = 4, chosen on validation) − mixup | +2.00, +2.00" in wide
    assert "gamma = 2 − mixup | +1.00" in wide and "| mixup + SEM, gamma = 4 (chosen) | 53.00 ± 0.00 |" in wide
    with pytest.raises(ValueError, match="gamma = 0, seed = 0 is also in"):
        analyze.report(tmp_path, ["mixup", "mixup"])
    fig = analyze.gamma_figure(tmp_path, ["mixup", "wide"])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1", "2", "4"]
    assert [t.get_text() for t in ax.get_legend().get_texts()][0] == "ERM test: 59.00 ± 3.16"
    assert len(ax.get_lines()) >= 5 and ax.get_xlabel() == "SEM weight gamma (0: plain mixup)"
    analyze.main([str(tmp_path), "--mixup", "mixup", "wide", "--plot", str(tmp_path / "acc")])
    assert (tmp_path / "acc.png").stat().st_size > 0 and (tmp_path / "acc.svg").stat().st_size > 0
    _write_trials(tmp_path / "unfinished" / "mixup", [("0", 0, 50.0, 60.0)])
    (tmp_path / "unfinished" / "mixup" / "trials.csv").write_text(
        (tmp_path / "unfinished" / "mixup" / "trials.csv").read_text().replace("finished", "stopped")
    )
    with pytest.raises(ValueError, match="not finished"):
        analyze.report(tmp_path / "unfinished")
