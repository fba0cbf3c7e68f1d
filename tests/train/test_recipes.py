"""Recipes cover the paper's Table 1; `TrainConfig` rejects bad values naming the flag; the early
stop scales with the run's length."""

import warnings

import pytest

from sem_fast.train import RECIPES, TrainConfig, get_recipe
from sem_fast.train.recipes import ES_FRACTION, SEM_GAMMA, recipe_table

TABLE1_ROWS = ("erm", "mixup", "mixup-sem", "mixup-es", "mixup-sem-es",
               "cutmix", "cutmix-sem", "cutmix-es", "cutmix-sem-es")  # fmt: skip
TABLE1_COLUMNS = [(net, data) for net in ("prn18", "wrn28-10") for data in ("c10", "c100", "timagenet")]


@pytest.mark.parametrize("net,data", TABLE1_COLUMNS)
def test_every_table1_row_of_a_column_has_a_recipe_with_its_method(net, data):
    for row in TABLE1_ROWS:
        c = get_recipe(f"{net}-{data}-{row}")
        assert c.dataset == data and c.epochs == 200 and c.recipe == f"{net}-{data}-{row}"
        assert c.model == ("prn18" if net == "prn18" else "wrn")
        assert c.mix == {"erm": "none", "mixup": "mixup", "cutmix": "cutmix"}[row.split("-")[0]]
        assert c.gamma == (SEM_GAMMA if "sem" in row else 0.0)
        assert c.es_fraction == (ES_FRACTION if row.endswith("es") else 0) and c.es_epochs == 0
        assert c.early_stop_epochs == (50 if row.endswith("es") else 0)  # the last lr stage of 200 epochs


def test_recipe_list_is_table1_plus_the_demo_and_the_table_lists_each():
    assert len(RECIPES) == len(TABLE1_ROWS) * len(TABLE1_COLUMNS) + 1
    table = recipe_table()
    assert all(f"| `{name}` |" in table for name in RECIPES)


def test_wrn_recipe_is_wide_resnet_28_10_and_prn18_has_paper_width():
    assert (get_recipe("wrn28-10-c100-cutmix").depth, get_recipe("wrn28-10-c100-cutmix").widen) == (28, 10)
    assert get_recipe("prn18-timagenet-erm").width == 64


def test_unknown_recipe_error_suggests_the_closest_names():
    with pytest.raises(ValueError, match="did you mean prn18-c10-mixup-sem"):
        get_recipe("prn18-c10-mixup-sme")


@pytest.mark.parametrize(
    "changes,flag",
    [
        ({"lr": -0.1}, "--lr"),
        ({"lr": float("nan")}, "--lr"),
        ({"epochs": 0}, "--epochs"),
        ({"es_epochs": 300}, "--es-epochs"),
        ({"es_fraction": 1.5}, "--es-fraction"),
        ({"train_subset": 100.5}, "--train-subset"),
        ({"train_subset": -1.0}, "--train-subset"),
        ({"val_split": 1.0}, "--val-split"),
        ({"data_seed": -2}, "--data-seed"),
        ({"batch_size": 2.5}, "--batch-size"),
        ({"milestones": (0.75, 0.5)}, "--milestones"),
        ({"milestones": (1.5,)}, "--milestones"),
        ({"classes": (0, 0, 1)}, "--classes"),
        ({"classes": (0, 10)}, "--classes"),
        ({"model": "resnet50"}, "--model"),
        ({"schedule": "linear"}, "--schedule"),
        ({"depth": 27}, "--depth"),
        ({"momentum": 1.5}, "--momentum"),
        ({"nesterov": "yes"}, "--nesterov"),
    ],
)
def test_config_rejects_bad_values_naming_the_flag(changes, flag):
    with pytest.raises(ValueError, match=flag):
        TrainConfig(**changes)


def test_config_rejects_bad_method_values_through_semconfig():
    with pytest.raises(ValueError, match="alpha"):
        TrainConfig(alpha=0.0)


def test_config_round_trips_through_a_dict_and_rejects_unknown_keys():
    config = get_recipe("prn18-c10-cutmix-sem-es").replace(classes=(0, 2, 4), milestones=(0.3, 0.6))
    assert TrainConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown TrainConfig field"):
        TrainConfig.from_dict({**config.to_dict(), "learning_rate": 0.1})


def test_mixing_stops_for_exactly_the_last_es_epochs():
    config = TrainConfig(epochs=10, es_epochs=3)
    assert [config.mixing_epoch(e) for e in range(10)] == [True] * 7 + [False] * 3
    assert config.sem_config(mixing=False).mix == "none" and config.sem_config().mix == "mixup"
    assert not any(TrainConfig(mix="none").mixing_epoch(e) for e in range(3))


@pytest.mark.parametrize("epochs,mixing", [(15, 13), (10, 9), (3, 3), (200, 173)])
def test_the_demo_early_stop_is_a_fraction_of_the_run(epochs, mixing):
    """``--recipe demo --set epochs=3`` mixes in every epoch, ``--epochs 10`` in 9 of 10 (it kept
    2 fixed epochs before: 1 of 3 and 8 of 10 mixed)."""
    config = get_recipe("demo").replace(epochs=epochs)
    assert sum(config.mixing_epoch(e) for e in range(epochs)) == mixing
    assert config.early_stop_warning() is None


def test_an_absolute_early_stop_overrides_the_fraction():
    config = get_recipe("prn18-c10-mixup-es").replace(epochs=40, es_epochs=4)
    assert config.early_stop_epochs == 4 and get_recipe("prn18-c10-mixup-es").replace(epochs=40).early_stop_epochs == 10


def test_an_early_stop_covering_most_of_the_run_is_warned_about(tiny_config):
    from sem_fast.train import train

    config = tiny_config.replace(epochs=3, es_epochs=2, max_steps_per_epoch=1)
    assert "the early stop covers 2 of the 3 epochs: only 1 epoch(s) train with mixup and SEM" in (
        config.early_stop_warning()
    )
    with pytest.warns(UserWarning, match="the early stop covers 2 of the 3 epochs"):
        train(config)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert config.replace(es_epochs=1).early_stop_warning() is None
        assert config.replace(mix="none").early_stop_warning() is None  # ERM never mixes


def test_class_subset_sets_the_head_size():
    assert TrainConfig(classes=(5, 1, 3)).num_classes == 3 and TrainConfig(dataset="c100").num_classes == 100
