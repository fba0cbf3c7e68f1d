"""`TrainConfig`: every choice of a training run, validated on construction.

Each field carries its help text (``metadata['help']``); the ``sem-fast train`` CLI builds one
flag per field from it, so a recipe and the command line can set exactly the same things.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from sem_fast.config import BACKEND_CHOICES, SEMConfig, canonical_backend
from sem_fast.data import LOADER_BACKENDS
from sem_fast.train.train_sets import TRAIN_SETS, TrainSet

MODELS = ("prn18", "wrn")
SCHEDULES = ("step", "cosine", "onecycle", "constant")
AMP_MODES = ("auto", "bf16", "fp16", "off")
MIXES = ("mixup", "cutmix", "switch", "none")
#: Fields that may differ between a run and its resumption (they do not change the numbers:
#: the run directory, the data folder's location, the progress line, the plots and compilation).
#: A sweep leaves them out of a trial's identity.
RESUMABLE_CHANGES = ("progress", "plots", "compile", "out", "data_root")
#: The seed value of ``data_seed`` that means "the run's ``seed``".
RUN_SEED = -1


def _help(text: str, choices: tuple[str, ...] = ()) -> dict[str, object]:
    """Field metadata: the CLI help and, for string options, the allowed values."""
    return {"help": text, "choices": choices}


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Defaults are the paper recipe's values where the paper gives them
    (200 epochs, SGD with lr decay and weight decay) and *ours* elsewhere (README, "Defaults
    that are ours")."""

    recipe: str = field(default="custom", metadata=_help("recipe the run started from (set by --recipe)"))
    out: str = field(default="", metadata=_help("run directory (default runs/<recipe>)"))
    # Model.
    model: str = field(default="prn18", metadata=_help("network", MODELS))
    width: int = field(default=64, metadata=_help("PreActResNet18 first-stage channels (paper: 64)"))
    depth: int = field(default=28, metadata=_help("WideResNet depth, 6n+4 (paper: 28)"))
    widen: int = field(default=10, metadata=_help("WideResNet widening factor (paper: 10)"))
    # Data.
    dataset: str = field(default="c10", metadata=_help("training set (see the README)", tuple(TRAIN_SETS)))
    data_root: str = field(default="data", metadata=_help("folder holding the datasets (no downloads)"))
    loader: str = field(default="auto", metadata=_help("loader backend (sem_fast.data.make_loader)", LOADER_BACKENDS))
    classes: tuple[int, ...] = field(
        default=(), metadata=_help("train on these classes only, e.g. 0,1,2,3,4,5 (the rest become OOD); empty: all")
    )
    train_subset: float = field(default=0.0, metadata=_help(
        "train on a class-balanced part of the training split drawn by --data-seed: N images (N/K per class) "
        "or a fraction (< 1) of every class; 0: all. The test set is always whole"))
    val_split: float = field(default=0.0, metadata=_help(
        "hold out this fraction of every class of the training images as a validation set, evaluated with the "
        "test set (choose hyper-parameters on it, not on the test set); 0: none"))
    data_seed: int = field(default=RUN_SEED, metadata=_help(
        "seed of the --train-subset and --val-split draws (-1: the run's --seed)"))
    # Optimization.
    epochs: int = field(default=200, metadata=_help("training epochs (paper: 200)"))
    batch_size: int = field(default=128, metadata=_help("training batch size"))
    lr: float = field(default=0.1, metadata=_help("peak SGD learning rate"))
    momentum: float = field(default=0.9, metadata=_help("SGD momentum"))
    nesterov: bool = field(default=False, metadata=_help("Nesterov momentum"))
    weight_decay: float = field(default=5e-4, metadata=_help("SGD weight decay (all parameters)"))
    schedule: str = field(default="step", metadata=_help("lr schedule, stepped every optimizer step", SCHEDULES))
    milestones: tuple[float, ...] = field(
        default=(0.5, 0.75), metadata=_help("step schedule: fractions of the run where lr is multiplied by --lr-decay")
    )
    lr_decay: float = field(default=0.1, metadata=_help("step schedule: factor applied at each milestone"))
    # Method.
    mix: str = field(default="mixup", metadata=_help("mixing (none = ERM)", MIXES))
    alpha: float = field(default=1.0, metadata=_help("mixup Beta(alpha, alpha) parameter"))
    cutmix_alpha: float = field(default=1.0, metadata=_help("CutMix Beta parameter"))
    gamma: float = field(default=0.0, metadata=_help("SEM weight (0: no SEM term)"))
    es_fraction: float = field(default=0.0, metadata=_help(
        "early stop of mixing: train the last round(F * epochs) epochs without mixing (scales with --epochs)"))
    es_epochs: int = field(default=0, metadata=_help(
        "early stop of mixing as a number of epochs; when > 0 it replaces --es-fraction"))
    sem_reduction: str = field(default="mean", metadata=_help("SEM distance reduction over features", ("mean", "sum")))
    detach_target: bool = field(default=True, metadata=_help("stop the gradient through the SEM target"))
    label_smoothing: float = field(default=0.0, metadata=_help("label smoothing of the cross-entropy"))
    crop_padding: int = field(default=4, metadata=_help("random-crop padding in pixels (0: no crop)"))
    hflip: bool = field(default=True, metadata=_help("random horizontal flips"))
    backend: str = field(default="auto", metadata=_help("fused-op backend", BACKEND_CHOICES))
    # Runtime.
    seed: int = field(default=0, metadata=_help("seed of the model init, loader order and mixing draws"))
    device: str = field(default="auto", metadata=_help("auto (cuda if available), cpu, cuda, cuda:1, ..."))
    amp: str = field(default="auto", metadata=_help("mixed precision (auto: bf16 on CUDA, off on CPU)", AMP_MODES))
    compile: bool | None = field(default=None, metadata=_help("torch.compile the step (default: on with CUDA)"))
    cuda_graph: bool = field(
        default=False,
        metadata=_help("replay the whole training step as one CUDA graph (CUDA; one process; amp bf16/off)"),
    )
    channels_last: bool = field(default=True, metadata=_help("channels-last model and images"))
    eval_every: int = field(default=1, metadata=_help("test-set evaluation every N epochs (and after the last)"))
    max_steps_per_epoch: int = field(default=0, metadata=_help("cap on steps per epoch, for smoke runs (0: none)"))
    progress: bool = field(default=True, metadata=_help("progress bar on stderr"))
    plots: bool = field(default=True, metadata=_help(
        "draw the learning curves (curves.png/.svg) after every epoch; needs matplotlib: pip install 'sem_fast[plots]'"))

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.metadata["choices"] and getattr(self, f.name) not in f.metadata["choices"]:
                raise ValueError(
                    f"{f.name} ({_flag(f.name)}) must be one of {f.metadata['choices']}, got {getattr(self, f.name)!r}"
                )
        for name in ("width", "widen", "epochs", "batch_size", "eval_every"):
            _integer(name, getattr(self, name), low=1)
        for name in ("es_epochs", "max_steps_per_epoch", "seed"):
            _integer(name, getattr(self, name), low=0)
        _integer("data_seed", self.data_seed, low=RUN_SEED)
        for name in ("nesterov", "progress", "plots", "compile", "cuda_graph"):
            value = getattr(self, name)
            if not isinstance(value, bool) and not (name == "compile" and value is None):
                raise ValueError(f"{name} ({_flag(name)}) must be a bool, got {value!r}")
        _integer("depth", self.depth, low=10)
        if (self.depth - 4) % 6:
            raise ValueError(f"depth (--depth) must be 6n + 4 (e.g. 28), got {self.depth}")
        if self.es_epochs > self.epochs:
            raise ValueError(
                f"es_epochs (--es-epochs) must be at most epochs={self.epochs}, got {self.es_epochs} "
                f"(or give the early stop as a fraction of the run with --es-fraction)"
            )
        _number("es_fraction", self.es_fraction, high=1.0)
        _number("train_subset", self.train_subset)
        if self.train_subset >= 1 and self.train_subset != int(self.train_subset):
            raise ValueError(
                f"train_subset (--train-subset) must be a whole number of images (>= 1) or a fraction (< 1), "
                f"got {self.train_subset!r}"
            )
        _number("val_split", self.val_split)
        if self.val_split >= 1:
            raise ValueError(f"val_split (--val-split) must be a fraction in [0, 1), got {self.val_split!r}")
        _number("lr", self.lr, low_open=True)
        _number("lr_decay", self.lr_decay, low_open=True)
        _number("weight_decay", self.weight_decay)
        _number("momentum", self.momentum, high=1.0)
        object.__setattr__(self, "milestones", tuple(float(m) for m in self.milestones))
        if not all(0.0 < m < 1.0 for m in self.milestones) or list(self.milestones) != sorted(self.milestones):
            raise ValueError(
                f"milestones (--milestones) must be increasing fractions of the run in (0, 1), got {self.milestones}"
            )
        object.__setattr__(self, "backend", canonical_backend(self.backend))  # 'cuda' -> 'native', warned
        self._check_classes()
        self.sem_config()  # validates the method fields, naming the SEMConfig field

    def _check_classes(self) -> None:
        object.__setattr__(self, "classes", tuple(int(c) for c in self.classes))
        k = TRAIN_SETS[self.dataset].num_classes
        if self.classes and (
            len(set(self.classes)) != len(self.classes) or not all(0 <= c < k for c in self.classes) or len(self.classes) < 2
        ):
            raise ValueError(
                f"classes (--classes) must be at least 2 distinct class indices in [0, {k}), got {self.classes}"
            )

    @property
    def train_set(self) -> TrainSet:
        """The `TrainSet` named by ``dataset``."""
        return TRAIN_SETS[self.dataset]

    @property
    def num_classes(self) -> int:
        """Size of the model's head: ``len(classes)`` or all classes of the dataset."""
        return len(self.classes) or self.train_set.num_classes

    @property
    def run_dir(self) -> str:
        """``out``, or ``runs/<recipe>`` when empty."""
        return self.out or f"runs/{self.recipe}"

    @property
    def early_stop_epochs(self) -> int:
        """Epochs at the end of the run that train without mixing: ``es_epochs`` when > 0, else
        ``es_fraction`` of ``epochs``, rounded half up (0 for ERM, which never mixes)."""
        if self.mix == "none":
            return 0
        return self.es_epochs or math.floor(self.es_fraction * self.epochs + 0.5)

    def early_stop_warning(self) -> str | None:
        """A warning when the early stop leaves mixing (and SEM) fewer than half of the epochs."""
        es = self.early_stop_epochs
        if 2 * es <= self.epochs:
            return None
        return (
            f"the early stop covers {es} of the {self.epochs} epochs: only {self.epochs - es} epoch(s) train with "
            f"{self.mix}{' and SEM' if self.gamma > 0 else ''}; lower --es-epochs / --es-fraction (0: no early stop)"
        )

    def mixing_epoch(self, epoch: int) -> bool:
        """Whether 0-based ``epoch`` mixes: every epoch but the last `early_stop_epochs` (with ``mix != 'none'``)."""
        return self.mix != "none" and epoch < self.epochs - self.early_stop_epochs

    def sem_config(self, *, mixing: bool = True) -> SEMConfig:
        """The `SEMConfig` of the step; ``mixing=False`` gives the early-stop phase (``mix='none'``)."""
        return SEMConfig(
            mix=self.mix if mixing else "none",
            alpha=self.alpha,
            cutmix_alpha=self.cutmix_alpha,
            gamma=self.gamma,
            sem_reduction=self.sem_reduction,
            detach_target=self.detach_target,
            label_smoothing=self.label_smoothing,
            mean=self.train_set.mean,
            std=self.train_set.std,
            channels_last=self.channels_last,
            backend=self.backend,
            crop_padding=self.crop_padding,
            hflip=self.hflip,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Inverse of `to_dict`; unknown keys raise ``ValueError`` naming them."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s) {unknown}; known: {sorted(names)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` applied and validated."""
        return TrainConfig.from_dict({**self.to_dict(), **changes})


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _integer(name: str, value: object, *, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} ({_flag(name)}) must be an integer >= {low}, got {value!r}")


def _number(name: str, value: object, *, low_open: bool = False, high: float = math.inf) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (value <= 0 if low_open else value < 0) or value > high:
        bound = "> 0" if low_open else ">= 0"
        upper = f" and <= {high}" if high != math.inf else ""
        raise ValueError(f"{name} ({_flag(name)}) must be a finite number {bound}{upper}, got {value!r}")
