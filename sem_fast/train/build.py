"""Build the run's parts from a `TrainConfig`: device, precision, model, optimizer, lr schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

from sem_fast.data.loader import resolve_device
from sem_fast.models import PreActResNet18, WideResNet
from sem_fast.train.config import TrainConfig


def pick_device(name: str) -> torch.device:
    """``'auto'`` -> the current CUDA device when there is one, else the CPU; other names are checked."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return resolve_device(name)


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``amp`` on ``device`` (None: full fp32). ``'auto'`` is bf16 on CUDA and
    off on the CPU, where bf16 convolutions are slower than fp32 on most hosts."""
    if amp == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[amp]


def build_model(config: TrainConfig) -> nn.Module:
    """The network of ``config`` (fresh initialization from the current torch RNG), on the CPU."""
    if config.model == "prn18":
        return PreActResNet18(num_classes=config.num_classes, width=config.width)
    return WideResNet(depth=config.depth, widen=config.widen, num_classes=config.num_classes)


def build_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.SGD:
    """SGD over every parameter with ``config``'s lr, momentum, Nesterov flag and weight decay;
    with ``config.cuda_graph`` the fused implementation, whose update takes the learning rate as
    a device tensor without reading it on the host, so a CUDA graph can capture it (one
    multi-tensor launch; results equal to the default SGD up to rounding)."""
    return torch.optim.SGD(
        model.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        nesterov=config.nesterov and config.momentum > 0,
        weight_decay=config.weight_decay,
        fused=True if config.cuda_graph else None,
    )


def build_scheduler(
    config: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """The lr schedule, stepped once per optimizer step over ``config.epochs * steps_per_epoch`` steps.

    - ``step``: lr times ``lr_decay`` at each milestone (fractions of the run);
    - ``cosine``: half-cosine from lr to 0;
    - ``onecycle``: PyTorch's `OneCycleLR` with peak ``lr`` (its default warm-up, 30% of the run);
    - ``constant``: lr throughout.
    """
    total = config.epochs * steps_per_epoch
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=total)
    if config.schedule == "cosine":
        factor = lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))
    elif config.schedule == "step":
        bounds = [round(m * total) for m in config.milestones]
        factor = lambda step: config.lr_decay ** sum(step >= b for b in bounds)
    else:
        factor = lambda step: 1.0
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
