"""Sweep specs without training: parsing TOML/YAML/flags, clear errors naming the file and the key,
grid x random x seeds expansion, trial names, and the ``sem-fast train`` flags of a trial."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from sem_fast.train import TrainConfig, get_recipe
from sem_fast.cli import _train_config, build_parser, main
from sem_fast.sweep import SweepSpecError, expand, load_spec, parse_spec
from sem_fast.sweep.spec import apply_flags
from sem_fast.sweep.trials import config_to_argv

EXAMPLE_SPECS = Path(__file__).resolve().parents[2] / "examples" / "sweeps"

TOML = """
recipe = "demo"
seeds = [0, 1]
[fixed]
width = 4
epochs = 2
[grid]
gamma = [0, 0.5]
alpha = [0.2, 1.0]
"""
YAML = """
recipe: demo
seeds: [0, 1]
fixed: {width: 4, epochs: 2}
grid:
  gamma: [0, 0.5]
  alpha: [0.2, 1.0]
"""


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_toml_and_yaml_specs_expand_to_the_same_grid_of_trials(tmp_path):
    from_toml = expand(load_spec(_write(tmp_path, "s.toml", TOML)), tmp_path / "out")
    from_yaml = expand(load_spec(_write(tmp_path, "s.yaml", YAML)), tmp_path / "out")
    assert [t.name for t in from_toml] == [t.name for t in from_yaml]
    assert len(from_toml) == 2 * 2 * 2
    got = [(t.config.gamma, t.config.alpha, t.config.seed) for t in from_toml]
    assert got == [(g, a, s) for g in (0.0, 0.5) for a in (0.2, 1.0) for s in (0, 1)]
    base = get_recipe("demo")
    for t in from_toml:
        assert t.config == base.replace(width=4, epochs=2, gamma=t.config.gamma, alpha=t.config.alpha,
                                        seed=t.config.seed, out=t.config.out, data_root=t.config.data_root)  # fmt: skip
        assert t.config.out == str((tmp_path / "out" / "trials" / t.name).resolve())
    groups = [t.group for t in from_toml]
    assert groups[0] == groups[1] != groups[2]  # seeds of one configuration share a group


def test_a_changed_fixed_value_gives_other_trial_names(tmp_path):
    before = expand(load_spec(_write(tmp_path, "a.toml", TOML)), tmp_path)
    after = expand(load_spec(_write(tmp_path, "b.toml", TOML.replace("epochs = 2", "epochs = 3"))), tmp_path)
    assert not {t.name for t in before} & {t.name for t in after}


def test_random_search_draws_within_bounds_reproducibly_for_every_grid_point(tmp_path):
    text = """
seeds = [0]
[grid]
mix = ["mixup", "cutmix"]
[random]
samples = 3
seed = 7
lr = { log_uniform = [0.01, 0.3] }
label_smoothing = { uniform = [0.0, 0.1] }
es_epochs = { int_uniform = [0, 2] }
sem_reduction = { choice = ["mean", "sum"] }
"""
    spec = load_spec(_write(tmp_path, "r.toml", text))
    first, again = expand(spec, tmp_path), expand(spec, tmp_path)
    assert [t.name for t in first] == [t.name for t in again] and len(first) == 2 * 3
    draws = [(t.config.lr, t.config.label_smoothing, t.config.es_epochs, t.config.sem_reduction) for t in first]
    assert draws[:3] == draws[3:]  # the draws are shared by the grid points
    assert len(set(draws)) == 3
    repeated = parse_spec({"random": {"samples": 5, "mix": {"choice": ["mixup"]}}}, "flags")
    assert len(expand(repeated, tmp_path)) == 1  # five equal draws are one trial
    for lr, smoothing, es, reduction in draws:
        assert 0.01 <= lr <= 0.3 and 0.0 <= smoothing <= 0.1 and es in (0, 1, 2) and reduction in ("mean", "sum")
    other_seed = expand(load_spec(_write(tmp_path, "r2.toml", text.replace("seed = 7", "seed = 8"))), tmp_path)
    assert [t.config.lr for t in other_seed] != [t.config.lr for t in first]


def test_log_uniform_draws_are_uniform_in_the_exponent(tmp_path):
    spec = parse_spec({"random": {"samples": 400, "lr": {"log_uniform": [1e-4, 1.0]}}}, "flags")
    exponents = [math.log10(t.config.lr) for t in expand(spec, tmp_path)]
    below = sum(e < -2 for e in exponents) / len(exponents)  # half the exponent range
    assert 0.4 < below < 0.6


@pytest.mark.parametrize(
    "name,text,message",
    [
        ("s.toml", "[grid]\ngama = [0.1]\n", "s.toml: grid.gama is not a TrainConfig field (did you mean 'gamma'?)"),
        ("s.toml", "seed = 1\n", "s.toml: unknown key 'seed' (did you mean 'seeds'?)"),
        ("s.toml", "[grid]\ngamma = 0.5\n", "s.toml: grid.gamma must be a non-empty list of values, got 0.5"),
        ("s.toml", "[grid]\ngamma = [-1.0]\n", "s.toml: grid.gamma = -1: SEMConfig.gamma must be a finite number"),
        ("s.toml", "[fixed]\nepochs = 3\nes_epochs = 5\n", "s.toml: fixed.es_epochs = 5: es_epochs (--es-epochs)"),
        ("s.toml", "[fixed]\nepochs = 'ten'\n", "s.toml: fixed.epochs must be an integer, got 'ten'"),
        ("s.toml", "[fixed]\nout = 'x'\n", "s.toml: fixed.out cannot be set: the sweep sets each trial's"),
        ("s.toml", "[grid]\nseed = [0, 1]\n", "s.toml: grid.seed cannot be set: list the seeds in `seeds = [...]`"),
        ("s.toml", "[grid]\ngamma = [0.5, 0.5]\n", "s.toml: grid.gamma lists a value twice"),
        ("s.toml", "[grid]\ncompile = [true, false]\n", "s.toml: grid.compile cannot be swept: it does not change"),
        ("s.toml", "[grid]\nrecipe = ['demo', 'prn18-c10-mixup-sme']\n",
         "s.toml: grid.recipe: unknown recipe 'prn18-c10-mixup-sme'; did you mean prn18-c10-mixup-sem"),
        ("s.toml", "[random]\nlr = { normal = [0, 1] }\n", "s.toml: random.lr: unknown distribution 'normal'"),
        ("s.toml", "[random]\nlr = { log_uniform = [0, 1] }\n", "s.toml: random.lr: log_uniform takes [low, high]"),
        ("s.toml", "[random]\nmix = { uniform = [0, 1] }\n", "s.toml: random.mix: uniform draws numbers; mix is not"),
        ("s.toml", "[fixed]\ngamma = 1\n[grid]\ngamma = [0.0]\n", "s.toml: ['gamma'] set in more than one of fixed"),
        ("s.toml", "seeds = []\n", "s.toml: seeds must be a non-empty list of distinct integers >= 0"),
        ("s.toml", "metric = 'acc'\n", "s.toml: metric must be one of ('final_test_acc', 'best_test_acc', 'final_val_acc')"),
        ("s.toml", "plot = ['mix']\n", "s.toml: plot.mix: only numeric fields can be an x axis"),
        ("s.toml", "[grid\ngamma = [0.1]\n", "s.toml: not valid TOML"),
        ("s.yaml", "grid:\n  alpha: [1.0]\n  batchsize: [32]\n",
         "s.yaml: grid.batchsize is not a TrainConfig field (did you mean 'batch_size'?)"),
        ("s.yaml", "grid: [1, 2]\n", "s.yaml: grid must be a table/mapping of TrainConfig fields"),
        ("s.yaml", "grid: {gamma: [0.1}\n", "s.yaml: not valid YAML"),
        ("s.json", "{}", "s.json: a sweep spec must be a .toml, .yaml or .yml file"),
    ],
)  # fmt: skip
def test_a_malformed_spec_file_names_the_file_and_the_bad_key(tmp_path, name, text, message):
    path = _write(tmp_path, name, text)
    with pytest.raises(SweepSpecError) as err:
        expand(load_spec(path), tmp_path)
    assert str(err.value).startswith(str(tmp_path / name)) and message in str(err.value), str(err.value)


def test_the_sweep_command_exits_2_naming_the_bad_key_before_running_anything(tmp_path, capsys):
    path = _write(tmp_path, "s.toml", "[grid]\ngama = [0.1]\n")
    with pytest.raises(SystemExit) as exit_:
        main(["sweep", str(path), "--out", str(tmp_path / "out")])
    assert exit_.value.code == 2
    assert f"{path}: grid.gama is not a TrainConfig field (did you mean 'gamma'?)" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--grid", "gama=0,1"], "command line: --grid gama is not a TrainConfig field (did you mean 'gamma'?)"),
        (["--grid", "gamma"], "command line: --grid expects KEY=VALUE, got 'gamma'"),
        (["--set", "epochs=x"], "command line: --set epochs=x: invalid literal for int()"),
        (["--random", "lr=0.1,0.2"], "command line: --random lr=0.1,0.2: expected DIST:A,B,..."),
        (["--set", "hflip=maybe"], "command line: --set hflip=maybe: expected true or false"),
        (["--parallel", "0"], "--parallel must be >= 1, got 0"),
    ],
)
def test_bad_sweep_flags_exit_2_naming_the_flag(tmp_path, argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["sweep", "--out", str(tmp_path), *argv])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_flags_replace_the_keys_of_the_file(tmp_path):
    data = apply_flags(
        {"recipe": "demo", "fixed": {"width": 4}, "grid": {"gamma": [0.0, 1.0], "alpha": [1.0]}},
        seeds=(3,), sets=["gamma=0.25", "classes=0,1,2"], grid=["alpha=0.2,0.4", "milestones=0.5,0.75;0.3"],
        random_axes=["lr=log_uniform:0.01,0.1"], samples=2,
    )  # fmt: skip
    trials = expand(parse_spec(data, "command line"), tmp_path)
    assert len(trials) == 2 * 2 * 2
    assert {t.config.gamma for t in trials} == {0.25} and {t.config.seed for t in trials} == {3}
    assert {t.config.alpha for t in trials} == {0.2, 0.4} and {t.config.classes for t in trials} == {(0, 1, 2)}
    assert {t.config.milestones for t in trials} == {(0.5, 0.75), (0.3,)}
    assert all(0.01 <= t.config.lr <= 0.1 for t in trials) and {t.config.width for t in trials} == {4}


def test_dry_run_lists_every_trial_as_new(tmp_path, capsys):
    path = _write(tmp_path, "s.toml", TOML)
    assert main(["sweep", str(path), "--out", str(tmp_path / "out"), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 9 and all(line.startswith("new ") for line in lines[:8]) and "8 trials" in lines[8]


@pytest.mark.parametrize(
    "config",
    [
        get_recipe("demo").replace(width=4, gamma=0.25, classes=(0, 1, 2), nesterov=False, compile=False,
                                   milestones=(0.3, 0.6), data_root="/d/x"),
        get_recipe("prn18-c10-cutmix-sem-es").replace(lr=1 / 3, hflip=False, progress=False),
        TrainConfig(model="wrn", depth=16, widen=2, compile=True, label_smoothing=0.1, mix="switch"),
    ],
    ids=["demo-changed", "table1-recipe", "custom"],
)  # fmt: skip
def test_a_trial_config_round_trips_through_the_train_command_line(config):
    parser = build_parser()
    args = parser.parse_args(["train", *config_to_argv(config)])
    assert _train_config(args, args.subparser) == config


@pytest.mark.parametrize("path", sorted(EXAMPLE_SPECS.glob("*.*")), ids=lambda p: p.name)
def test_the_example_specs_are_valid(path, tmp_path):
    trials = expand(load_spec(path), tmp_path)
    assert trials and len({t.name for t in trials}) == len(trials)
