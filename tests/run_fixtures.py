"""Fixtures of the trainer, evaluation and sweep tests (`tests/train`, `tests/eval`, `tests/sweep`,
whose conftest.py imports them): a tiny, fast configuration on the bundled CIFAR-10 subset."""

from __future__ import annotations

import functools

import pytest
import torch

import sem_fast.data.factory
from sem_fast.train import TrainConfig, get_recipe


@pytest.fixture(autouse=True, scope="module")
def fast_cpu():
    """Run the tiny models on one CPU thread: their ops are far too small to gain from two, and on
    a busy host each op's thread barrier costs more than the op (10x slower steps, measured).
    Decompress the bundled subset once per module instead of once per loader (about 1 s each)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sem_fast.data.factory, "load_bundled", functools.cache(sem_fast.data.factory.load_bundled))
        yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_config(tmp_path) -> TrainConfig:
    """The demo recipe shrunk to seconds: width-4 PreActResNet18, 3 epochs of 3 steps of 16
    images, mixup + SEM with crop/flip (so every random stream is used), the test set evaluated
    after the last epoch only, no early stop, no learning-curve figures (tests/train/test_curves.py
    draws them), run directory in tmp_path."""
    return get_recipe("demo").replace(
        out=str(tmp_path / "run"), width=4, epochs=3, es_fraction=0.0, batch_size=16, max_steps_per_epoch=3,
        crop_padding=4, hflip=True, eval_every=3, progress=False, plots=False,
    )  # fmt: skip
