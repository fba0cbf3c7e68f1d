"""The ``sem-fast`` command: help, clear errors for bad flags, train then eval end to end."""

import json
import subprocess
import sys

import pytest

from sem_fast.cli import main
from sem_fast.train.recipes import RECIPES

#: A demo run shrunk to seconds.
TINY = ["--width", "4", "--epochs", "2", "--es-epochs", "1", "--batch-size", "16", "--max-steps-per-epoch", "2"]


def _exit(argv, capsys):
    """``(exit status, stdout, stderr)`` of ``sem-fast argv`` run in-process."""
    try:
        status = main(argv)
    except SystemExit as err:
        status = err.code
    out = capsys.readouterr()
    return status, out.out, out.err


def test_module_entry_point_prints_help():
    result = subprocess.run([sys.executable, "-m", "sem_fast.train", "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and "{train,eval,recipes,sweep,info}" in result.stdout


def test_package_entry_point_prints_the_same_help():
    result = subprocess.run([sys.executable, "-m", "sem_fast", "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and "{train,eval,recipes,sweep,info}" in result.stdout
    assert result.stdout.startswith("usage: sem-fast ")


@pytest.mark.parametrize(
    "command,expected",
    [("train", ["--recipe", "--resume", "--gamma", "--es-epochs", "--compile", "--no-compile", "--amp"]),
     ("eval", ["--data-root", "--corruptions", "--ood-folder", "--max-images"])],
)  # fmt: skip
def test_subcommand_help_lists_its_flags(command, expected, capsys):
    status, out, _ = _exit([command, "--help"], capsys)
    assert status == 0 and all(flag in out for flag in expected)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["train", "--bogus"], "unrecognized arguments: --bogus"),
        (["train", "--recipe", "prn18-c10-mixup-sme"], "did you mean prn18-c10-mixup-sem"),
        (["train", "--recipe", "demo", "--lr", "-1"], "lr (--lr) must be a finite number > 0"),
        (["train", "--epochs", "x"], "argument --epochs: invalid int value: 'x'"),
        (["train", "--model", "vgg"], "argument --model: invalid choice: 'vgg'"),
        (["train", "--classes", "0,a"], "argument --classes: expected comma-separated ints"),
        (["train", "--recipe", "demo", "--es-epochs", "20"], "es_epochs (--es-epochs) must be at most epochs=15"),
        (["train", "--resume"], "--resume without --recipe needs --out"),
        (["train", "--resume", "--overwrite", "--out", "x"], "--resume and --overwrite exclude each other"),
        (["eval", "ckpt.pt", "--max-images", "-1"], "--max-images must be >= 0"),
        (["eval", "ckpt.pt", "--severities", "0,6"], "--severities must be values in 1..5"),
        (["eval", "ckpt.pt", "--corruptions", "fog"], "--corruptions: unknown ['fog']"),
        (["eval", "ckpt.pt", "--ood-folder", "lsun"], "--ood-folder expects NAME=DIR"),
        (["eval"], "the following arguments are required: checkpoint"),
    ],
)
def test_bad_flags_exit_2_with_a_message_naming_the_problem(argv, message, capsys):
    status, _, err = _exit(argv, capsys)
    assert status == 2 and message in err


def test_missing_checkpoint_exits_1_naming_the_path(tmp_path, capsys):
    status, _, err = _exit(["eval", str(tmp_path / "nowhere")], capsys)
    assert status == 1 and f"no checkpoint at {tmp_path / 'nowhere'}" in err


def test_recipes_lists_every_recipe(capsys):
    status, out, _ = _exit(["recipes"], capsys)
    assert status == 0 and all(f"`{name}`" in out for name in RECIPES)


def test_train_then_resume_then_eval_through_the_command(tmp_path, capsys):
    run = tmp_path / "run"
    status, out, err = _exit(["train", "--recipe", "demo", "--out", str(run), *TINY, "--no-progress"], capsys)
    assert status == 0, err
    summary = json.loads((run / "summary.json").read_text())
    assert f"final test accuracy {summary['final_test_acc']:.2f}%" in out
    assert summary["config"]["width"] == 4 and summary["config"]["es_epochs"] == 1

    status, _, err = _exit(["train", "--recipe", "demo", "--out", str(run), *TINY], capsys)
    assert status == 1 and "--resume" in err and "--overwrite" in err
    status, out, _ = _exit(["train", "--resume", "--out", str(run), "--no-progress"], capsys)
    assert status == 0 and "2 epochs" in out  # already finished: resuming only rewrites the summary

    status, out, err = _exit(["eval", str(run), "--max-images", "50", "--corruptions", "contrast", "--severities",
                              "2", "--noise-images", "20"], capsys)  # fmt: skip
    assert status == 0, err
    report = json.loads((run / "eval" / "eval.json").read_text())
    assert f"| clean | {report['clean']['accuracy']:.2f} |" in out
    assert report["corruptions"]["per_corruption"]["contrast"]["accuracy_by_severity"][0] >= 0


@pytest.mark.parametrize("argv", [["train", "--bogus"], ["train", "--epochs", "x"], ["sweep", "--out", "x", "--parallel", "0"],
                                  ["eval"]])  # fmt: skip
def test_a_bad_command_line_prints_one_error_line_and_a_hint_not_the_usage(argv, capsys):
    status, _, err = _exit(argv, capsys)
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 2 and "usage:" not in err
    command = f"sem-fast {argv[0]}"
    assert lines[0].startswith(f"{command}: error: ") and lines[1] == f"{command}: hint: `{command} --help` lists the options"


def test_warnings_are_one_line_naming_the_command(tmp_path, capsys):
    status, _, err = _exit(["train", "--recipe", "demo", "--out", str(tmp_path / "run"), *TINY, "--es-epochs", "2",
                            "--no-progress", "--no-plots"], capsys)  # fmt: skip
    assert status == 0
    assert "sem-fast train: warning: the early stop covers 2 of the 2 epochs: only 0 epoch(s) train with mixup" in err


def test_a_missing_matplotlib_names_the_extra_to_install(tmp_path, capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.split(".")[0] == "matplotlib":
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    status, _, err = _exit(["train", "--recipe", "demo", "--out", str(tmp_path / "run"), *TINY], capsys)
    assert status == 1 and "the learning curves (--no-plots: none) needs matplotlib" in err
    assert 'pip install "sem_fast[plots]"' in err
    assert not (tmp_path / "run").exists()  # refused before anything was written
