"""Whole training step img/s: `fused_sem_step` + backward + SGD on PreActResNet18 at 32x32.

Providers (one case = batch size):
- ``sem`` / ``mixup (gamma=0)``: `fused_sem_step` with the 'auto' backend, eager; their ratio is
  the SEM overhead (one extra forward pass, no backward through it with ``detach_target``);
- ``reference``: the SEM step on the reference path;
- ``sem compiled`` / ``mixup compiled`` / ``sem cudagraph`` (CUDA): the step under
  ``torch.compile`` and ``mode="reduce-overhead"`` (CUDA graphs, possible because nothing in the
  step syncs with the host);
- ``sem whole-step graph`` (CUDA): the whole 'sem' step -- draws (`sample_step_draws`), mix, both
  passes, loss, backward, fused SGD -- replayed as one CUDA graph by the trainer's `GraphedStep`
  (``sem-fast train --cuda-graph``), warmed up and captured before the timing; checked against
  the same step run eagerly. On a CPU it runs the captured function eagerly, untimed (CI);
- ``paper-style loop``: how the mixup papers' code does it: fp32, NCHW, a batch normalized by the
  loader, ``np.random.beta`` per batch, two CE terms, ``F.mse_loss`` on a materialized target,
  ``loss.item()`` every step for logging.
On CUDA the sem_fast providers run under bf16 autocast with a channels-last model.

    pytest benchmarks/bench_step.py --benchmark-only
"""

from __future__ import annotations

import contextlib
import copy
import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from benchmarks.harness import assert_matches, device, measure
from sem_fast import SEMConfig, fused_sem_step, sample_draw
from sem_fast.models import PreActResNet18
from sem_fast.reference import normalize
from sem_fast.sampling import sample_step_draws
from sem_fast.train.cuda_graph import WARMUP_STEPS, GraphedStep

DEV = device()
ON_CUDA = DEV.type == "cuda"
BATCHES = [128, 512] if ON_CUDA else [32]
WIDTH = 64 if ON_CUDA else 16  # the paper's network on GPU; a narrow one keeps CPU runs short
CFG = SEMConfig(mix="mixup", alpha=1.0, gamma=1.0)
WHOLE_STEP_GRAPH = "sem whole-step graph"
PROVIDERS = ["sem", "mixup (gamma=0)", "reference", "paper-style loop", WHOLE_STEP_GRAPH]
if ON_CUDA:
    PROVIDERS += ["sem compiled", "mixup compiled", "sem cudagraph"]


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    fmt = torch.channels_last if ON_CUDA else torch.contiguous_format
    return PreActResNet18(num_classes=10, width=WIDTH).to(DEV, memory_format=fmt)


def _data(B: int):
    g = torch.Generator(device=DEV).manual_seed(0)
    images = torch.randint(0, 256, (B, 32, 32, 3), dtype=torch.uint8, device=DEV, generator=g)
    labels = torch.randint(0, 10, (B,), device=DEV, generator=g)
    return images, labels, g


def _sem_fast_step(provider: str, B: int):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images, labels, g = _data(B)
    cfg = CFG.replace(gamma=0.0) if provider.startswith("mixup") else CFG
    if provider == "reference":
        cfg = cfg.replace(backend="reference")
    step = fused_sem_step
    if provider.endswith("compiled"):
        step = torch.compile(fused_sem_step)
    elif provider.endswith("cudagraph"):
        step = torch.compile(fused_sem_step, mode="reduce-overhead")
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if ON_CUDA else contextlib.nullcontext()

    def run():
        with autocast:
            out = step(model, images, labels, cfg, generator=g, check_values=False)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        return out

    return run


def _whole_step_graph(B: int) -> tuple[GraphedStep, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(graphed step, images, labels, the last step's loss, the model's first weight)``; call the
    step as ``graphed(images, labels)``."""
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, fused=True)  # takes a device lr
    images, labels, g = _data(B)
    loss = torch.zeros((), device=DEV)
    autocast = contextlib.nullcontext()
    if ON_CUDA:  # captured autocast needs its weight-cast cache off (as make_graphed_callables requires)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        draw, augment = sample_step_draws(B, 32, 32, CFG, device=DEV, generator=g)
        with autocast:
            out = fused_sem_step(model, x, y, CFG, draw=draw, augment=augment, check_values=False)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        loss.copy_(out.loss.detach())

    return GraphedStep(step, images, labels, opt, g), images, labels, loss, next(model.parameters())


def _check_whole_step_graph(B: int) -> None:
    """Past its warm-up and capture, the graphed step trains like the same step run eagerly."""
    graphed, images, labels, loss, weight = _whole_step_graph(B)
    eager, _, _, eager_loss, eager_weight = _whole_step_graph(B)
    for _ in range(WARMUP_STEPS + 2):  # eager warm-up, capture + replay, one more replay
        graphed(images, labels)
        eager.step(images, labels)
    assert_matches(loss.to(torch.bfloat16 if ON_CUDA else torch.float32), eager_loss, "whole-step graph loss")
    assert_matches(weight, eager_weight, "whole-step graph weights")


def _paper_style_step(B: int):
    model = _model().to(memory_format=torch.contiguous_format)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images, labels, _ = _data(B)
    inputs = normalize(images, CFG).contiguous()  # the loader's ToTensor + Normalize
    rng = np.random.default_rng(0)
    losses = []

    def run():
        lam = float(rng.beta(CFG.alpha, CFG.alpha))
        index = torch.randperm(B, device=DEV)
        mixed = lam * inputs + (1 - lam) * inputs[index]
        with torch.no_grad():
            z = model.encode(inputs)
        z_mix = model.encode(mixed)
        out = model.classify(z_mix)
        loss = lam * F.cross_entropy(out, labels) + (1 - lam) * F.cross_entropy(out, labels[index])
        loss = loss + CFG.gamma * F.mse_loss(z_mix, lam * z + (1 - lam) * z[index])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())

    return run


def _check_against_reference(B: int) -> None:
    """The fused step's loss equals the reference step's on the same weights and draw."""
    images, labels, g = _data(B)
    draw = sample_draw(B, 32, 32, CFG, device=DEV, generator=g)
    model = _model()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if ON_CUDA else contextlib.nullcontext()
    with autocast:
        fast = fused_sem_step(model, images, labels, CFG, draw=draw)
        slow = fused_sem_step(copy.deepcopy(model), images, labels, CFG.replace(backend="reference"), draw=draw)
    assert_matches(fast.loss.to(torch.bfloat16 if ON_CUDA else torch.float32), slow.loss, "step loss")


@pytest.mark.parametrize("B", BATCHES, ids=lambda b: f"B{b}")
@pytest.mark.parametrize("provider", PROVIDERS)
def test_step_throughput(benchmark, B, provider):
    if provider == "sem":
        _check_against_reference(B)
    if provider == WHOLE_STEP_GRAPH:
        if not ON_CUDA and not benchmark.disabled:
            pytest.skip("no CUDA graph on a CPU: the captured function is checked untimed (--benchmark-disable)")
        _check_whole_step_graph(B)
        graphed, images, labels, _, _ = _whole_step_graph(B)
        for _ in range(WARMUP_STEPS + 1):  # warm-up and capture, outside the timing
            graphed(images, labels)
        run = functools.partial(graphed, images, labels)
    elif provider == "paper-style loop":
        run = _paper_style_step(B)
    else:
        run = _sem_fast_step(provider, B)
    measure(
        benchmark, run, dev=DEV, group=f"PreActResNet18(width={WIDTH}) step, 32x32", case=f"B{B}",
        provider=provider, items=B, calls=5 if ON_CUDA else 1, host_syncs=provider == "paper-style loop",
    )
