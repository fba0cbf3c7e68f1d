"""Bad values on every backend, eager and compiled: memory-safe, a NaN loss and NaN gradients,
never a crash (the behaviour documented in `sem_fast.reference`).

Value checks (label range, permutation, crop offsets) read tensors on the host; they are skipped
with ``check_values=False`` and while ``torch.compile`` traces, so the kernels themselves must
stay in bounds. Each (backend, device, eager/compiled) runs in a child process: an out-of-bounds
read can abort the whole process (an Inductor bounds check inside an OpenMP region raises
SIGABRT), which a test in this process could not report. The child runs one clean batch (finite
loss: the NaNs below come from the bad values), then every bad value through
``fused_sem_step(..., check_values=False)``, eager or under ``torch.compile(fullgraph=True)``,
with ``backward()``, and prints the results as JSON.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sem_fast import SEMConfig, available_backends, fused_sem_step, sample_draw
from sem_fast import reference as ref
from sem_fast.draws import AugmentDraw
from sem_fast.ops.registry import get_backend
from sem_fast.sampling import sample_augment
from tests.ops.cases import given_draw, images, mix_cfg, problem, to_device
from tests.utils import TinyNet, assert_close, set_seed

REPO = Path(__file__).resolve().parents[2]
DEVICES = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
BACKENDS = ["reference", "native", "triton"]
B, H, W, K, PAD = 6, 8, 8, 10, 2

#: The clean batch's partners: each sample pairs with the next.
PERM = [1, 2, 3, 4, 5, 0]
#: name -> (field of the clean batch, sample, bad value).
BAD_VALUES = {
    "label_negative": ("labels", 1, -1),
    "label_K": ("labels", 2, K),
    "label_far_past_K": ("labels", 3, 2**20),
    "partner_past_the_batch": ("perm", 1, B + 100),
    "partner_negative": ("perm", 4, -1),
    "crop_offset_past_2p": ("offset", 2, [0, 2 * PAD + 1]),
    "crop_offset_negative": ("offset", 3, [-1, 0]),
    "perm_not_a_permutation": ("perm", 0, PERM[1]),
}
#: The bad values each backend is held to: all of them, on every backend.
CASES = {name: list(BAD_VALUES) for name in BACKENDS}


def run_child(backend: str, device: str, compiled: bool) -> dict[str, dict[str, float | bool]]:
    """In the child: the clean batch, then each bad value of ``CASES[backend]``, through one
    (compiled) step and its backward; per case the loss and whether a parameter gradient is NaN."""
    cfg = SEMConfig(backend=backend, mix="switch", lam_mode="elem", crop_padding=PAD, hflip=True, detach_target=False)
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (B, H, W, 3), dtype=torch.uint8, generator=gen)
    batch = dict(
        labels=torch.randint(0, K, (B,), generator=gen),
        perm=torch.tensor(PERM),
        offset=sample_augment(B, cfg, device="cpu", generator=gen).offset,
    )
    draw = sample_draw(B, H, W, cfg, device="cpu", generator=gen)
    flip = torch.arange(B) % 2 == 0
    set_seed(0)
    model = TinyNet(num_classes=K).to(device)
    get_backend(backend, device)  # imports the backend: an import inside the compiled step breaks the graph
    step = torch.compile(fused_sem_step, fullgraph=True) if compiled else fused_sem_step
    results = {}
    for case in ["clean", *CASES[backend]]:
        bad = {name: t.clone() for name, t in batch.items()}
        if case != "clean":
            field, sample, value = BAD_VALUES[case]
            bad[field][sample] = torch.tensor(value)
        x, labels, bad_draw, augment = to_device(
            device, images, bad["labels"], draw._replace(perm=bad["perm"]), AugmentDraw(bad["offset"], flip)
        )
        model.zero_grad(set_to_none=True)
        model.calls.clear()  # its length would be a guard: one compiled graph for every case
        out = step(model, x, labels, cfg, draw=bad_draw, augment=augment, check_values=False)
        out.loss.backward()
        grads_nan = any(bool(p.grad.isnan().any()) for p in model.parameters())
        results[case] = dict(loss=out.loss.item(), grads_nan=grads_nan)
    return results


@pytest.mark.parametrize("compiled", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["eager", "compiled"])
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_values_give_a_nan_loss_and_nan_gradients_not_a_crash(backend, device, compiled):
    reason = available_backends(device)[backend]
    if reason is not None:
        pytest.skip(reason)
    call = f"run_child({backend!r}, {device!r}, {compiled})"
    code = f"import json; from tests.ops.test_bad_values import run_child; print(json.dumps({call}))"
    child = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert child.returncode == 0, f"the child process died (exit status {child.returncode}):\n{child.stderr[-4000:]}"
    results = json.loads(child.stdout.splitlines()[-1])
    assert math.isfinite(results.pop("clean")["loss"])
    assert sorted(results) == sorted(CASES[backend])
    for case, result in results.items():
        assert math.isnan(result["loss"]), f"{case}: loss {result['loss']}"
        assert result["grads_nan"], f"{case}: every parameter gradient is finite"


def test_boxes_and_lambda_outside_their_range_mean_the_same_on_every_backend(backend):
    """Unchecked, a box is clipped to the image (an inverted one is empty) and ignored for a
    mixup sample, and lambda is used as given (extrapolating): memory-safe, and one meaning."""
    gen = torch.Generator().manual_seed(10)
    draw = given_draw(
        [1, 2, 3, 0],
        [1.5, -0.25, 0.6, 0.5],
        [[-3, 20, 2, 5], [0, 0, 0, 0], [5, 2, 1, 4], [1, 1, 1, 1]],  # past the image, -, inverted, on a mixup sample
        [True, False, True, False],
    )
    x = images("uint8", 4, 3, 7, 9, torch.float32, gen)
    logits, z_mix, z_clean, labels = problem(4, 5, 3, torch.float32, gen)
    cfg = mix_cfg(3)
    expected = (*ref.mix_images(x, draw, cfg), *ref.sem_loss(logits, z_mix, z_clean, labels, draw, cfg))
    x, logits, z_mix, z_clean, labels, draw = to_device(backend.device, x, logits, z_mix, z_clean, labels, draw)
    got = (
        *backend.mix_images_unchecked(x, draw, cfg),
        *backend.sem_loss_unchecked(logits, z_mix, z_clean, labels, draw, cfg),
    )
    for name, g, e in zip(("x_clean", "x_mix", "loss", "ce", "sem"), got, expected, strict=True):
        assert_close(g, e, rtol=1e-5, atol=1e-5, name=name)
