"""The native backend's own checks: its raw ops (``torch.ops.sem_fast_native.*``) check their
metadata themselves when called directly, so a bad call raises instead of reading out of bounds
(uint8 images have at most 16 channels: the per-channel mean/std live in a fixed-size kernel
argument; ``'auto'`` then takes the reference), and each op compiles with
``torch.compile(fullgraph=True)`` (the Triton backend's counterpart: ``test_triton_backend.py``,
through a whole compiled step). Its ops against the reference: ``test_mix.py`` and
``test_sem_loss.py``, shared with the other backends.

Tolerance: compiled and eager calls run the same kernels; fp32 within 1e-5 relative (``TOL32``).
"""

import pytest
import torch

import sem_fast.ops.native as native
from sem_fast import SEMConfig, mix_images
from sem_fast.sampling import sample_augment
from tests.ops.cases import elem_draw, images, mix_cfg, mix_op_args, problem, switch_draw
from tests.utils import assert_close

pytestmark = pytest.mark.skipif(native.probe("cpu") is not None, reason=f"{native.probe('cpu')}")

TOL32 = dict(rtol=1e-5, atol=1e-6)

MIX_CALL_ERRORS = {
    # name: (argument index in mix_op_args, replacement, message)
    "perm_int32": (1, torch.arange(4, dtype=torch.int32), "perm must be Long"),
    "lam_short": (2, torch.ones(3), r"lam must have shape \[4\]"),
    "box_three_columns": (3, torch.zeros(4, 3, dtype=torch.int32), r"box must have shape \[4, 4\]"),
    "images_int16": (0, torch.zeros(4, 7, 9, 3, dtype=torch.int16), "images must be uint8"),
    "offset_without_flip": (6, None, "offset and flip must be given together"),
    "twenty_uint8_channels": (0, torch.zeros(4, 7, 9, 20, dtype=torch.uint8), "channels but mean/std have"),
}


@pytest.mark.parametrize("case", MIX_CALL_ERRORS.values(), ids=MIX_CALL_ERRORS.keys())
def test_direct_mix_op_call_with_bad_metadata_raises_instead_of_reading_out_of_bounds(case):
    index, value, message = case
    gen = torch.Generator().manual_seed(12)
    cfg = mix_cfg(3, crop_padding=1, hflip=True)
    x, draw = images("uint8", 4, 3, 7, 9, torch.float32, gen), switch_draw(4, 7, 9, gen)
    args = list(mix_op_args(x, draw, cfg, sample_augment(4, cfg, device="cpu", generator=gen)))
    args[index] = value
    with pytest.raises(RuntimeError, match=message):
        torch.ops.sem_fast_native.mix_images(*args)


def test_uint8_images_with_more_than_16_channels_raise_by_name_and_auto_takes_the_reference():
    """The reference takes any channel count; the native limit surfaces as an error naming it when
    the backend is asked for by name (directly, too), and 'auto' falls back to the reference."""
    gen = torch.Generator().manual_seed(13)
    x, draw, cfg = images("uint8", 2, 17, 5, 6, torch.float32, gen), switch_draw(2, 5, 6, gen), mix_cfg(17)
    with pytest.raises(ValueError, match="backend='native' cannot take this input: .* at most 16 channels, got 17"):
        mix_images(x, draw, cfg.replace(backend="native"))
    with pytest.raises(ValueError, match="uint8 images may have at most 16 channels, got 17"):
        torch.ops.sem_fast_native.mix_images(*mix_op_args(x, draw, cfg, None))
    for got, expected in zip(mix_images(x, draw, cfg), mix_images(x, draw, cfg.replace(backend="reference"))):
        assert torch.equal(got, expected)


def test_direct_loss_op_call_with_bad_metadata_raises_instead_of_reading_out_of_bounds():
    gen = torch.Generator().manual_seed(9)
    logits, z_mix, z_clean, labels = problem(4, 5, 3, torch.float32, gen)
    draw = elem_draw(4, gen)
    op = torch.ops.sem_fast_native.sem_loss
    with pytest.raises(RuntimeError, match=r"z_clean must have the shape of z_mix"):
        op(logits, z_mix, z_clean[:, :2], labels, draw.perm, draw.lam, 1.0, 0.0, True)
    with pytest.raises(RuntimeError, match=r"logits must have shape \(4, N\)"):
        op(logits[:3], z_mix, z_clean, labels, draw.perm, draw.lam, 1.0, 0.0, True)
    with pytest.raises(RuntimeError, match=r"lam must have shape \[4\]"):
        op(logits, z_mix, z_clean, labels, draw.perm, draw.lam[:3], 1.0, 0.0, True)
    with pytest.raises(RuntimeError, match=r"labels must be int64 or int32"):
        op(logits, z_mix, z_clean, labels.float(), draw.perm, draw.lam, 1.0, 0.0, True)
    row_stats, inv_perm = op(logits, z_mix, z_clean, labels, draw.perm, draw.lam, 1.0, 0.0, True)[3:]
    backward = torch.ops.sem_fast_native.sem_loss_backward
    with pytest.raises(RuntimeError, match=r"row_stats must have shape \[4, 2\]"):
        backward(None, None, None, logits, z_mix, z_clean, labels, draw.perm, draw.lam, row_stats[:3], inv_perm,
                 1.0, 0.0, True, True, True, True)  # fmt: skip
    with pytest.raises(RuntimeError, match=r"inv_perm must be Long"):
        backward(None, None, None, logits, z_mix, z_clean, labels, draw.perm, draw.lam, row_stats, inv_perm.int(),
                 1.0, 0.0, True, True, True, True)  # fmt: skip
    with pytest.raises(RuntimeError, match=r"z_mix_grad and z_clean_grad need z_clean"):
        backward(None, None, None, logits, z_mix, None, labels, draw.perm, draw.lam, row_stats, inv_perm,
                 1.0, 0.0, True, True, True, False)  # fmt: skip


def test_mix_compiled_with_fullgraph_matches_eager():
    """The fake kernels and registered autograd let torch.compile trace the op without a break."""
    gen = torch.Generator().manual_seed(13)
    cfg = mix_cfg(3, crop_padding=2, hflip=True)
    x = images("float", 3, 3, 7, 9, torch.float32, gen).requires_grad_(True)
    draw, augment = switch_draw(3, 7, 9, gen), sample_augment(3, cfg, device="cpu", generator=gen)

    def step(x):
        clean, mixed = native.mix_images(x, draw, cfg, augment)
        return (clean * clean).sum() + mixed.sum()

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    got, expected = compiled(x), step(x)
    assert_close(got, expected, name="value", **TOL32)
    (d_got,), (d_expected,) = torch.autograd.grad(got, x), torch.autograd.grad(expected, x)
    assert_close(d_got, d_expected, name="d images", **TOL32)


def test_loss_compiled_with_fullgraph_matches_eager():
    """The fake kernels and registered autograd let torch.compile trace the op without a break."""
    gen = torch.Generator().manual_seed(10)
    leaves = [t.requires_grad_(True) for t in problem(5, 7, 9, torch.float32, gen)[:3]]
    labels = torch.randint(0, 7, (5,), generator=gen)
    draw, cfg = elem_draw(5, gen), SEMConfig(detach_target=False, label_smoothing=0.1)

    def loss_fn(logits, z_mix, z_clean):
        return native.sem_loss(logits, z_mix, z_clean, labels, draw, cfg)[0]

    compiled = torch.compile(loss_fn, fullgraph=True, backend="aot_eager")
    got, expected = compiled(*leaves), loss_fn(*leaves)
    assert_close(got, expected, name="loss", **TOL32)
    got_grads, expected_grads = torch.autograd.grad(got, leaves), torch.autograd.grad(expected, leaves)
    for name, g, e in zip(("d logits", "d z_mix", "d z_clean"), got_grads, expected_grads):
        assert_close(g, e, name=name, **TOL32)
