"""The paper's Table 1 as recipes, one `TrainConfig` per row and column, plus the CPU ``demo``.

Names read ``<net>-<data>-<method>[-sem][-es]``: net ``prn18`` (PreActResNet18) or ``wrn28-10``
(WideResNet-28-10); data ``c10``, ``c100`` or ``timagenet``; method ``erm``, ``mixup`` or
``cutmix``; ``-sem`` adds the SEM term, ``-es`` turns mixing off for the last epochs. ERM has no
mixing, so it has neither a SEM nor an ES variant (9 methods x 6 columns = 54 recipes).

The paper fixes 200 epochs and "SGD with learning rate decay and weight decay"; every other value
is ours (see the README, "Defaults that are ours"), and every one can be overridden by a flag.
"""

from __future__ import annotations

import difflib
from typing import Any

from sem_fast.train.config import TrainConfig

NETS: dict[str, dict[str, Any]] = {
    "prn18": {"model": "prn18", "width": 64},
    "wrn28-10": {"model": "wrn", "depth": 28, "widen": 10},
}
DATA = ("c10", "c100", "timagenet")
METHODS: dict[str, dict[str, Any]] = {
    "erm": {"mix": "none"},
    "mixup": {"mix": "mixup", "alpha": 1.0},
    "cutmix": {"mix": "cutmix", "cutmix_alpha": 1.0},
}
#: SEM weight of the ``-sem`` recipes (ours: the paper's grid was lost; MSE averaged over features).
SEM_GAMMA = 1.0
#: Mixing-free part of the ``-es`` recipes (ours): the last learning-rate stage of the step
#: schedule, epochs 150-200 of 200; a fraction, so that it scales with ``--epochs``.
ES_FRACTION = 0.25

#: The README demo: a narrow PreActResNet18 on the bundled 3,000-image CIFAR-10 subset, sized
#: to finish in about two minutes on a 2-core CPU (one-cycle lr, as in fast-CIFAR recipes).
DEMO = TrainConfig(
    recipe="demo",
    dataset="c10-bundled",
    model="prn18",
    width=16,
    epochs=15,
    batch_size=64,
    lr=0.1,
    nesterov=True,
    schedule="onecycle",
    mix="mixup",
    gamma=SEM_GAMMA,
    es_fraction=2 / 15,  # the last 2 of the 15 epochs; 1 of 10 with --epochs 10, none with --epochs 3
)


def _table1() -> dict[str, TrainConfig]:
    recipes = {}
    for net, net_fields in NETS.items():
        for data in DATA:
            for method, method_fields in METHODS.items():
                variants = [("", {})] if method == "erm" else [
                    ("", {}), ("-sem", {"gamma": SEM_GAMMA}), ("-es", {"es_fraction": ES_FRACTION}),
                    ("-sem-es", {"gamma": SEM_GAMMA, "es_fraction": ES_FRACTION}),
                ]  # fmt: skip
                for suffix, extra in variants:
                    name = f"{net}-{data}-{method}{suffix}"
                    recipes[name] = TrainConfig(recipe=name, dataset=data, **net_fields, **method_fields, **extra)
    return recipes


RECIPES: dict[str, TrainConfig] = {"demo": DEMO, **_table1()}


def get_recipe(name: str) -> TrainConfig:
    """The recipe ``name``; unknown names raise ``ValueError`` with the closest known names."""
    if name in RECIPES:
        return RECIPES[name]
    close = difflib.get_close_matches(name, RECIPES, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else "; list them with `sem-fast recipes`"
    raise ValueError(f"unknown recipe {name!r}{hint}")


def recipe_table() -> str:
    """Markdown table of every recipe: name, network, data, method, gamma, ES epochs, epochs."""
    rows = ["| recipe | network | data | mixing | gamma | ES epochs | epochs | batch | lr schedule |",
            "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, c in RECIPES.items():
        net = f"PreActResNet18(width={c.width})" if c.model == "prn18" else f"WRN-{c.depth}-{c.widen}"
        rows.append(
            f"| `{name}` | {net} | {c.dataset} | {c.mix} | {c.gamma:g} | {c.early_stop_epochs} | {c.epochs} | "
            f"{c.batch_size} | {c.schedule} {c.lr:g} |"
        )
    return "\n".join(rows)
