"""The names that moved out of `sem_fast.train` still import, with a DeprecationWarning naming the
new import, and give the very objects of their new home."""

from __future__ import annotations

import warnings

import pytest

import sem_fast.eval
import sem_fast.sweep
import sem_fast.train


def test_evaluate_checkpoint_from_sem_fast_train_warns_and_is_sem_fast_evals():
    with pytest.warns(DeprecationWarning, match=r"from sem_fast\.eval import evaluate_checkpoint"):
        from sem_fast.train import evaluate_checkpoint
    assert evaluate_checkpoint is sem_fast.eval.evaluate_checkpoint


def test_the_training_names_of_sem_fast_train_import_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from sem_fast.train import RECIPES, NonFiniteLossError, TrainConfig, get_recipe, train
    assert (RECIPES, NonFiniteLossError, TrainConfig, get_recipe, train) == (
        sem_fast.train.RECIPES, sem_fast.train.NonFiniteLossError, sem_fast.train.TrainConfig,
        sem_fast.train.get_recipe, sem_fast.train.train,
    )  # fmt: skip


def test_an_unknown_name_of_sem_fast_train_is_an_attribute_error():
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        sem_fast.train.no_such_name  # noqa: B018


def test_from_sem_fast_train_sweep_import_warns_and_gives_sem_fast_sweeps_objects():
    with pytest.warns(DeprecationWarning, match=r"sem_fast\.train\.sweep is deprecated; use `from sem_fast\.sweep"):
        from sem_fast.train.sweep import load_spec, run_sweep
    assert load_spec is sem_fast.sweep.load_spec and run_sweep is sem_fast.sweep.run_sweep


@pytest.mark.parametrize("name", sem_fast.sweep.__all__)
def test_every_public_sweep_name_warns_naming_its_new_import(name):
    import sem_fast.train.sweep as old_path

    with pytest.warns(DeprecationWarning, match=rf"from sem_fast\.sweep import {name}`"):
        value = getattr(old_path, name)
    assert value is getattr(sem_fast.sweep, name)
