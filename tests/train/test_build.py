"""Model, precision and lr-schedule construction from a `TrainConfig`."""

import itertools
import math

import pytest
import torch

from sem_fast.models import PreActResNet18, WideResNet
from sem_fast.train import TrainConfig
from sem_fast.train.build import autocast_dtype, build_model, build_optimizer, build_scheduler


def _lrs(config: TrainConfig, steps_per_epoch: int) -> list[float]:
    """The lr each optimizer step of the run uses."""
    model = torch.nn.Linear(2, 2)
    optimizer = build_optimizer(config, model)
    scheduler = build_scheduler(config, optimizer, steps_per_epoch)
    lrs = []
    for _ in range(config.epochs * steps_per_epoch):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_step_schedule_decays_at_the_milestone_fractions():
    config = TrainConfig(epochs=4, lr=0.1, schedule="step", milestones=(0.5, 0.75), lr_decay=0.1)
    assert _lrs(config, 2) == pytest.approx([0.1] * 4 + [0.01] * 2 + [0.001] * 2)


def test_cosine_schedule_starts_at_lr_and_falls_to_near_zero():
    lrs = _lrs(TrainConfig(epochs=2, lr=0.2, schedule="cosine"), 50)
    assert lrs[0] == pytest.approx(0.2) and lrs[-1] == pytest.approx(0.2 * 0.5 * (1 + math.cos(math.pi * 99 / 100)))
    assert all(a >= b for a, b in itertools.pairwise(lrs))


def test_onecycle_schedule_peaks_at_lr():
    lrs = _lrs(TrainConfig(epochs=3, lr=0.4, schedule="onecycle"), 20)
    assert max(lrs) == pytest.approx(0.4, rel=1e-3) and lrs[0] < 0.05 and lrs[-1] < 1e-4


def test_model_matches_the_config():
    assert isinstance(build_model(TrainConfig(width=8)), PreActResNet18)
    wrn = build_model(TrainConfig(model="wrn", depth=10, widen=1, dataset="c100"))
    assert isinstance(wrn, WideResNet) and wrn.head.out_features == 100
    assert build_model(TrainConfig(width=8, classes=(1, 4, 7))).head.out_features == 3


def test_auto_precision_is_bf16_on_cuda_and_off_on_cpu():
    assert autocast_dtype("auto", torch.device("cpu")) is None
    assert autocast_dtype("auto", torch.device("cuda", 0)) is torch.bfloat16
    assert autocast_dtype("fp16", torch.device("cpu")) is torch.float16


def test_nesterov_is_dropped_without_momentum():
    optimizer = build_optimizer(TrainConfig(momentum=0.0, nesterov=True), torch.nn.Linear(2, 2))
    assert optimizer.param_groups[0]["nesterov"] is False
