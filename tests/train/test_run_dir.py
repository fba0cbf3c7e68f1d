"""The run directory: nothing replaced without --overwrite (which removes the whole earlier run,
eval/ included), no trace of a failed start, only the run's own checkpoint resumed, a finished
constant-lr run extended exactly, and the thread count recorded."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from sem_fast.cli import main
from sem_fast.train import loop, train
from sem_fast.train.checkpoint import load_checkpoint
from sem_fast.train.run_files import RUN_OUTPUTS

#: Fields that measure time and so differ between two runs of the same configuration.
TIMING = ("epoch_time_s", "img_per_s", "elapsed_s")


def _numbers(history):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in history]


def test_overwrite_removes_everything_of_the_earlier_run_eval_included(tiny_config):
    config = tiny_config.replace(epochs=1)
    train(config)
    run = Path(config.run_dir)
    for name in ("eval", "tensorboard"):
        (run / name).mkdir(exist_ok=True)
        (run / name / "old.txt").write_text("from the earlier run")
    for name in ("curves.png", "curves.svg"):
        (run / name).write_text("earlier run's figure")
    (run / "notes.txt").write_text("the user's own file")
    train(config.replace(seed=1), overwrite=True)
    assert not (run / "eval").exists() and not (run / "curves.png").exists() and not (run / "tensorboard").exists()
    assert (run / "notes.txt").read_text() == "the user's own file"  # only what sem_fast writes is removed
    assert json.loads((run / "summary.json").read_text())["config"]["seed"] == 1
    assert {"eval", "config.json", "checkpoint.pt", "summary.json", "metrics.jsonl"} <= set(RUN_OUTPUTS)


def test_a_directory_holding_a_summary_needs_resume_or_overwrite(tiny_config):
    config = tiny_config.replace(epochs=1)
    train(config)
    Path(config.run_dir, "checkpoint.pt").unlink()  # a finished run whose checkpoint was deleted
    with pytest.raises(FileExistsError, match=r"holds a run \(summary.json\): continue it with --resume"):
        train(config)


def test_a_failed_start_leaves_no_directory(tiny_config, tmp_path):
    from sem_fast.data import DatasetNotFoundError

    config = tiny_config.replace(out=str(tmp_path / "new" / "nested" / "run"), dataset="c10",
                                 data_root=str(tmp_path / "no-data"))  # fmt: skip
    with pytest.raises(DatasetNotFoundError):
        train(config)
    assert not (tmp_path / "new").exists()


def test_an_interruption_before_the_first_checkpoint_leaves_no_directory_and_says_so(tiny_config, monkeypatch, capsys):
    def interrupted(self, progress):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop._Run, "train_epoch", interrupted)
    status = main(["train", "--recipe", "demo", "--out", tiny_config.out, "--width", "4", "--no-plots"])
    err = capsys.readouterr().err
    assert status == 130 and "no epoch had finished, so nothing was saved: run the same command again" in err
    assert not Path(tiny_config.out).exists()


def test_a_non_finite_loss_in_the_first_epoch_says_no_checkpoint_was_written(tiny_config, monkeypatch):
    def poisoned(model, images, labels, cfg, **kwargs):
        out = real(model, images, labels, cfg, **kwargs)
        return out._replace(loss=out.loss * float("inf"))

    real = loop.fused_sem_step
    monkeypatch.setattr(loop, "fused_sem_step", poisoned)
    with pytest.raises(loop.NonFiniteLossError, match="No epoch finished, so no checkpoint was written") as err:
        train(tiny_config)
    assert "intact" not in str(err.value) and err.value.saved_epoch == 0


@pytest.fixture
def other_runs_checkpoint(tiny_config, tmp_path):
    """Run B (gamma 0.5) holding the checkpoint of run A (gamma 1), copied over B's own."""
    a, b = tiny_config.replace(out=str(tmp_path / "a"), epochs=2), tiny_config.replace(out=str(tmp_path / "b"), gamma=0.5)
    train(a)
    train(b.replace(epochs=1))
    shutil.copy(Path(a.run_dir, "checkpoint.pt"), Path(b.run_dir, "checkpoint.pt"))
    return b


def test_a_checkpoint_of_another_run_is_refused_with_the_difference(other_runs_checkpoint, capsys):
    b = other_runs_checkpoint
    before = Path(b.run_dir, "metrics.jsonl").read_text()
    with pytest.raises(ValueError, match=r"is not the checkpoint of the run in .*gamma: 0\.5 in config\.json, 1\.0 in "
                                         r"the checkpoint"):  # fmt: skip
        train(b, resume=True)
    status = main(["train", "--resume", "--out", b.run_dir])  # the command takes the run's config.json as its base
    err = capsys.readouterr().err
    assert status == 1 and "gamma: 0.5 in config.json, 1.0 in the checkpoint" in err
    assert Path(b.run_dir, "metrics.jsonl").read_text() == before  # nothing rewritten


def test_resume_extends_a_constant_lr_run_exactly_as_a_longer_run(tiny_config, tmp_path):
    config = tiny_config.replace(schedule="constant", epochs=2, eval_every=1)
    longer = config.replace(out=str(tmp_path / "longer"), epochs=4)
    train(config)
    train(config.replace(epochs=4), resume=True)
    train(longer)
    got, expected = load_checkpoint(config.run_dir), load_checkpoint(longer.run_dir)
    assert got["epoch"] == 4 and _numbers(got["history"]) == _numbers(expected["history"])
    for name, tensor in expected["model"].items():
        assert torch.equal(got["model"][name], tensor), name
    assert json.loads(Path(config.run_dir, "config.json").read_text())["epochs"] == 4


def test_resume_refuses_a_new_length_where_the_schedule_depends_on_it_and_says_why(tiny_config):
    train(tiny_config.replace(epochs=2))  # the demo's one-cycle schedule
    with pytest.raises(ValueError, match=r"--resume cannot change epochs \(2 -> 4\): the onecycle lr schedule is laid "
                                         r"out over the run's length.*--schedule constant and no early stop"):  # fmt: skip
        train(tiny_config.replace(epochs=4), resume=True)


def test_the_thread_count_is_recorded_and_a_change_on_resume_is_warned_about(tiny_config):
    class Stop(Exception):
        pass

    def stop(record):
        raise Stop

    with pytest.raises(Stop):
        train(tiny_config, on_epoch_end=stop)
    assert load_checkpoint(tiny_config.run_dir)["threads"] == torch.get_num_threads() == 1  # tests/run_fixtures.py
    torch.set_num_threads(2)
    try:
        with pytest.warns(UserWarning, match=r"resuming with 2 CPU thread\(s\); .* was written with 1: .*not be "
                                             r"bit-identical"):  # fmt: skip
            summary = train(tiny_config, resume=True)
    finally:
        torch.set_num_threads(1)
    assert summary["threads"] == 2


@pytest.mark.parametrize("content", ["model", "garbage"])
def test_an_unloadable_checkpoint_gets_our_message_never_a_hint_to_load_it_unsafely(content, tmp_path, capsys):
    path = tmp_path / "checkpoint.pt"
    if content == "model":
        torch.save(torch.nn.Linear(2, 2), path)
    else:
        path.write_bytes(b"\x80\x02garbage" * 10)
    status = main(["eval", str(path), "--no-progress"])
    err = capsys.readouterr().err
    assert status == 1 and f"{path} is not a readable sem_fast checkpoint: it " in err
    if content == "model":
        assert "holds a Python object of type torch.nn.modules.linear.Linear" in err
    assert "weights_only" not in err and "trust" not in err and len(err.strip().splitlines()) == 1
