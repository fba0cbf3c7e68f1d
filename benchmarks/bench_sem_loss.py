"""Loss op forward + backward: mixed cross-entropy + interpolated SEM target + squared error.

Providers: every sem_fast backend that runs on the device, the eager reference path and the
``torch.compile``d reference path. Gradients flow to the logits, ``z_mix`` and (the literal
reading of Eq. 9, ``detach_target=False``) ``z_clean``.

    pytest benchmarks/bench_sem_loss.py --benchmark-only
"""

from __future__ import annotations

import pytest
import torch

from benchmarks.harness import assert_matches, device, fast_backends, measure, skip_if_untimeable
from sem_fast import SEMConfig, sample_draw
from sem_fast import reference as ref
from sem_fast.ops.registry import get_backend

DEV = device()
if DEV.type == "cuda":
    CASES = [(B, K, D) for B in (128, 512) for K in (10, 100, 1000) for D in (512, 640)]
    DTYPE = torch.bfloat16  # what autocast hands the loss
else:
    CASES = [(B, K, 512) for B in (128, 512) for K in (10, 100, 1000)]
    DTYPE = torch.float32
#: torch.compile of the reference takes ~10 s per shape on a CPU: compile it for one CPU case.
COMPILED_CASES = CASES if DEV.type == "cuda" else [(128, 100, 512)]


def _case_id(case) -> str:
    return "B{}-K{}-D{}".format(*case)


def _setup(case):
    B, K, D = case
    cfg = SEMConfig(mix="switch", lam_mode="elem", detach_target=False, label_smoothing=0.1)
    g = torch.Generator(device=DEV).manual_seed(0)
    leaves = [torch.randn(B, n, device=DEV, generator=g, dtype=DTYPE).requires_grad_() for n in (K, D, D)]
    labels = torch.randint(0, K, (B,), device=DEV, generator=g)
    draw = sample_draw(B, 32, 32, cfg, device=DEV, generator=g)
    return cfg, leaves, labels, draw


def _fwd_bwd(loss_fn, cfg, leaves, labels, draw):
    def run():
        for t in leaves:
            t.grad = None
        loss, ce, sem = loss_fn(*leaves, labels, draw, cfg)
        loss.backward()
        return loss, ce, sem, *(t.grad for t in leaves)

    return run


def _check(run, reference_run, name: str) -> None:
    expected = [t.clone() for t in reference_run()]
    got = run()
    for label, a, b in zip(("loss", "ce", "sem", "dlogits", "dz_mix", "dz_clean"), got, expected):
        assert_matches(a, b, f"{name} {label}")


@pytest.mark.parametrize("case", CASES, ids=_case_id)
@pytest.mark.parametrize("provider", ["reference", "reference-compiled", *fast_backends(DEV)])
def test_sem_loss_fwd_bwd(benchmark, case, provider):
    skip_if_untimeable(benchmark, provider, DEV, smallest=case == CASES[0])
    if provider == "reference-compiled" and case not in COMPILED_CASES:
        pytest.skip("the compiled reference is measured in one CPU case (compile time)")
    cfg, leaves, labels, draw = _setup(case)
    if provider == "reference-compiled":
        loss_fn = torch.compile(ref.sem_loss, fullgraph=True)
    else:
        loss_fn = get_backend(provider, DEV).sem_loss
    run = _fwd_bwd(loss_fn, cfg, leaves, labels, draw)
    _check(run, _fwd_bwd(ref.sem_loss, cfg, leaves, labels, draw), provider)
    measure(benchmark, run, dev=DEV, group="sem_loss fwd+bwd", case=_case_id(case), provider=provider, items=case[0])
