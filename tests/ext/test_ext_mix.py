"""The compiled mix op (`sem_fast.ext.mix_images`, csrc/) against the reference: values and
gradients in fp32, bf16 and fp16, odd shapes and layouts, edge draws, random batches
(hypothesis), opcheck, torch.compile, bad input. Runs on every device the extension has kernels
for (CPU here; CUDA too where built with them); skipped when the extension is not built.

Tolerances: fp32 outputs and gradients within 1e-5 relative of the float32 reference (``TOL32``;
the atol covers values near 0). bf16/fp16: flash-attention's rule,
``max|fast - truth| <= 2 * max|plain - truth| + LOW_ATOL`` with ``truth`` the float32 reference on
the same rounded inputs and ``plain`` plain PyTorch doing the mix arithmetic in that dtype.
"""

import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sem_fast import MixDraw, SEMConfig, ext, sample_draw
from sem_fast import reference as ref
from sem_fast.sampling import AugmentDraw, sample_augment
from tests.utils import assert_close, assert_low_precision_close

pytestmark = pytest.mark.skipif(ext.probe("cpu") is not None, reason=f"{ext.probe('cpu')}")

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
TOL32 = dict(rtol=1e-5, atol=1e-6)
#: Half an ulp at 1 in fp16 (2**-11): room for one rounding where plain PyTorch happens to be exact.
LOW_ATOL = {torch.bfloat16: 2**-11, torch.float16: 2**-11}
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() and ext.probe("cuda") is None else [])


def _cfg(channels: int, **changes) -> SEMConfig:
    """A config whose mean/std have one value per channel (CIFAR's for 3 channels)."""
    stats = {} if channels == 3 else dict(mean=(0.45,) * channels, std=(0.25,) * channels)
    return SEMConfig(backend="cuda", **stats).replace(**changes)


def _images(kind: str, B: int, C: int, H: int, W: int, dtype: torch.dtype, gen: torch.Generator) -> torch.Tensor:
    """A batch in one of the accepted layouts: uint8 NHWC (dense or a column slice), float NCHW
    (contiguous, channels_last, or every other column)."""
    if kind.startswith("uint8"):
        x = torch.randint(0, 256, (B, H, W + 2, C), dtype=torch.uint8, generator=gen)
        return x[:, :, 1 : W + 1] if kind == "uint8_strided" else x[:, :, :W].contiguous()
    x = torch.randn(B, C, H, 2 * W, generator=gen).to(dtype)
    if kind == "float_strided":
        return x[..., ::2]
    x = x[..., :W].contiguous()
    return x.to(memory_format=torch.channels_last) if kind == "float_channels_last" else x


def _switch_draw(B: int, H: int, W: int, gen: torch.Generator) -> MixDraw:
    """Even samples mixed by CutMix, odd ones by mixup, one random permutation."""
    cut = sample_draw(B, H, W, SEMConfig(mix="cutmix", lam_mode="elem"), device="cpu", generator=gen)
    lerp = sample_draw(B, H, W, SEMConfig(mix="mixup", lam_mode="elem"), device="cpu", generator=gen)
    is_cutmix = torch.arange(B) % 2 == 0
    return MixDraw(
        perm=cut.perm,
        lam=torch.where(is_cutmix, cut.lam, lerp.lam),
        box=torch.where(is_cutmix[:, None], cut.box, torch.zeros_like(cut.box)),
        is_cutmix=is_cutmix,
    )


def _draw(perm, lam, box, is_cutmix) -> MixDraw:
    return MixDraw(
        perm=torch.tensor(perm),
        lam=torch.tensor(lam, dtype=torch.float32),
        box=torch.tensor(box, dtype=torch.int32),
        is_cutmix=torch.tensor(is_cutmix),
    )


def _to(device, *items):
    """Tensors, MixDraws and AugmentDraws (or None) moved to ``device``."""
    moved = []
    for item in items:
        if isinstance(item, tuple):
            item = type(item)(*(t.to(device) for t in item))
        elif item is not None:
            item = item.to(device)
        moved.append(item)
    return moved


def _plain_mix(images, draw, cfg, augment, dtype):
    """Plain PyTorch with the mix arithmetic in ``dtype`` (uint8 is normalized in fp32 first)."""
    uint8 = images.dtype == torch.uint8
    x = ref.as_float_nchw(images) if uint8 else images
    if augment is not None:
        x = ref.augment_images(x, augment, cfg)
    x = ref.normalize_units(x, uint8, cfg).to(dtype)
    B, _, H, W = x.shape
    partner = x[draw.perm]
    lam = draw.lam.to(dtype).view(B, 1, 1, 1)
    lerp = lam * x + (1 - lam) * partner
    paste = torch.where(ref.box_mask(draw.box, H, W), partner, x)
    return x, torch.where(draw.is_cutmix.view(B, 1, 1, 1), paste, lerp)


def _compare(name, fast_out, truth, plain, dtype):
    fast_out, truth, plain = (t.cpu() for t in (fast_out, truth, plain))
    if dtype == torch.float32:
        assert_close(fast_out, truth, name=name, **TOL32)
    else:
        assert_low_precision_close(fast_out, truth, plain, atol=LOW_ATOL[dtype], name=name)


def _check_against_reference(images, draw, cfg, augment, dtype):
    """Values (and gradients for float input) of the compiled op against the reference."""
    float_input = images.dtype != torch.uint8
    x = images.detach().requires_grad_(float_input)
    clean, mixed = ext.mix_images(x, draw, cfg, augment=augment)
    exp_clean, exp_mix = ref.mix_images(images, draw, cfg, augment=augment)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    for out, exp in ((clean, exp_clean), (mixed, exp_mix)):
        assert out.dtype == exp.dtype == dtype and out.shape == exp.shape and out.is_contiguous(memory_format=fmt)
        assert out.device == images.device

    x32 = images.detach().float().requires_grad_(float_input) if float_input else images
    x_low = images.detach().requires_grad_(float_input)
    truth = ref.mix_images(x32, draw, cfg.replace(out_dtype=torch.float32), augment=augment)
    plain = _plain_mix(x_low, draw, cfg, augment, dtype)
    for name, out, t, p in zip(("x_clean", "x_mix"), (clean, mixed), truth, plain):
        _compare(name, out, t, p, dtype)
    if not float_input:
        return
    gen = torch.Generator().manual_seed(7)
    g_clean, g_mix = (torch.randn(clean.shape, generator=gen).to(dtype).to(images.device) for _ in range(2))

    def grad(outputs, leaf):
        loss = sum((o.float() * g.float()).sum() for o, g in zip(outputs, (g_clean, g_mix)))
        return torch.autograd.grad(loss, leaf)[0]

    d_images = grad((clean, mixed), x)
    assert d_images.dtype == images.dtype and d_images.shape == images.shape
    _compare("d images", d_images, grad(truth, x32), grad(plain, x_low), dtype)


CASES = {
    # name: (B, C, H, W, images kind, padding_mode or None for no augment, channels_last)
    "B1_rgb_7x9_uint8": (1, 3, 7, 9, "uint8", None, True),
    "odd_B_32x32_strided_uint8_zero_pad": (5, 3, 32, 32, "uint8_strided", "zeros", False),
    "gray_7x9_uint8_reflect": (5, 1, 7, 9, "uint8", "reflect", True),
    "gray_7x9_float_reflect": (3, 1, 7, 9, "float", "reflect", False),
    "rgb_32x32_float_channels_last_input": (4, 3, 32, 32, "float_channels_last", None, True),
    "odd_B_7x9_noncontiguous_float_zero_pad": (5, 3, 7, 9, "float_strided", "zeros", True),
    "B1_rgb_32x32_float_reflect": (1, 3, 32, 32, "float", "reflect", True),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_values_and_gradients_match_the_reference(case, dtype, device):
    B, C, H, W, kind, padding, channels_last = case
    gen = torch.Generator().manual_seed(B * H + W)
    images = _images(kind, B, C, H, W, dtype, gen)
    cfg = _cfg(C, channels_last=channels_last, out_dtype=dtype if kind.startswith("uint8") else None)
    augment = None
    if padding is not None:
        cfg = cfg.replace(crop_padding=2, padding_mode=padding, hflip=True)
        augment = sample_augment(B, cfg, device="cpu", generator=gen)
    images, draw, augment = _to(device, images, _switch_draw(B, H, W, gen), augment)
    _check_against_reference(images, draw, cfg, augment, dtype)


def test_reflect_padding_wider_than_half_the_image_reads_pixels_up_to_three_times():
    """pad = side - 1 on a 3x4 image: a pixel is read directly and through both mirrors, so its
    gradient sums up to 3x3 crop positions."""
    gen = torch.Generator().manual_seed(11)
    cfg = _cfg(3, crop_padding=2, padding_mode="reflect", hflip=True)
    images = _images("float", 6, 3, 3, 4, torch.float32, gen)
    offset = torch.tensor([[0, 0], [4, 4], [2, 2], [0, 4], [4, 0], [1, 3]], dtype=torch.int32)
    augment = AugmentDraw(offset=offset, flip=torch.tensor([False, True, False, True, False, True]))
    _check_against_reference(images, _switch_draw(6, 3, 4, gen), cfg, augment, torch.float32)


def test_float32_input_with_a_bf16_output_and_under_autocast():
    gen = torch.Generator().manual_seed(0)
    images = _images("float", 3, 3, 7, 9, torch.float32, gen)
    draw = _switch_draw(3, 7, 9, gen)
    _check_against_reference(images, draw, _cfg(3, out_dtype=torch.bfloat16), None, torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        clean, mixed = ext.mix_images(images, draw, _cfg(3))
    assert clean.dtype == mixed.dtype == torch.bfloat16


def test_mixup_lambda_one_keeps_the_sample_and_lambda_zero_takes_the_partner():
    images = _images("uint8", 4, 3, 7, 9, torch.float32, torch.Generator().manual_seed(1))
    draw = _draw([1, 2, 3, 0], [1.0, 0.0, 1.0, 0.0], [[0, 0, 0, 0]] * 4, [False] * 4)
    clean, mixed = ext.mix_images(images, draw, _cfg(3))
    assert torch.equal(mixed[[0, 2]], clean[[0, 2]])
    assert torch.equal(mixed[[1, 3]], clean[[2, 0]])


def test_cutmix_empty_box_keeps_the_sample_full_box_takes_the_partner_border_box_pastes():
    H, W = 7, 9
    images = _images("uint8", 3, 3, H, W, torch.float32, torch.Generator().manual_seed(2))
    draw = _draw([2, 0, 1], [1.0, 0.0, 1 - 6 / 63], [[0, 0, 0, 0], [0, H, 0, W], [H - 2, H, W - 3, W]], [True] * 3)
    clean, mixed = ext.mix_images(images, draw, _cfg(3))
    assert torch.equal(mixed[0], clean[0])
    assert torch.equal(mixed[1], clean[0])
    inside = ref.box_mask(draw.box[2:], H, W)[0]
    assert torch.equal(mixed[2], torch.where(inside, clean[1], clean[2]))
    _check_against_reference(images, draw, _cfg(3, out_dtype=torch.float32), None, torch.float32)


def test_identity_permutation_mixes_each_sample_with_itself():
    gen = torch.Generator().manual_seed(3)
    images = _images("float", 5, 3, 7, 9, torch.float32, gen)
    draw = _switch_draw(5, 7, 9, gen)._replace(perm=torch.arange(5))
    clean, mixed = ext.mix_images(images, draw, _cfg(3))
    assert_close(mixed, clean, name="x_mix", **TOL32)
    _check_against_reference(images, draw, _cfg(3), None, torch.float32)


def test_without_mixing_x_mix_is_x_clean_and_gradients_add_up():
    gen = torch.Generator().manual_seed(4)
    images = _images("float", 3, 3, 7, 9, torch.float32, gen).requires_grad_(True)
    cfg = _cfg(3, mix="none")
    draw = sample_draw(3, 7, 9, cfg, device="cpu", generator=gen)
    clean, mixed = ext.mix_images(images, draw, cfg)
    assert mixed is clean
    (clean.sum() + 2 * mixed.sum()).backward()
    assert torch.equal(images.grad, torch.full_like(images, 3.0))


def test_gradient_of_the_mixed_output_alone_matches_the_reference():
    """The clean pass usually runs under no_grad: only x_mix gets a gradient (None for x_clean)."""
    gen = torch.Generator().manual_seed(5)
    cfg = _cfg(3, crop_padding=3, padding_mode="reflect", hflip=True)
    x = _images("float", 4, 3, 7, 9, torch.float32, gen).requires_grad_(True)
    draw, augment = _switch_draw(4, 7, 9, gen), sample_augment(4, cfg, device="cpu", generator=gen)
    g = torch.randn(4, 3, 7, 9, generator=gen)
    grads = [
        torch.autograd.grad((op(x, draw, cfg, augment=augment)[1] * g).sum(), x)[0]
        for op in (ext.mix_images, ref.mix_images)
    ]
    assert_close(grads[0], grads[1], name="d images", **TOL32)


def test_out_of_range_perm_and_offsets_give_nan_not_a_crash():
    """Value checks are skipped under torch.compile; the kernels must stay memory-safe."""
    gen = torch.Generator().manual_seed(9)
    cfg = _cfg(3, crop_padding=2, hflip=True)
    images = _images("uint8", 4, 3, 7, 9, torch.float32, gen)
    draw = _switch_draw(4, 7, 9, gen)._replace(perm=torch.tensor([1, 4, 3, 0]))
    offset = torch.tensor([[0, 0], [1, 2], [2, 9], [4, 4]], dtype=torch.int32)
    augment = AugmentDraw(offset=offset, flip=torch.zeros(4, dtype=torch.bool))
    clean, mixed = ext.mix_images_unchecked(images, draw, cfg, augment)
    assert clean[[0, 1, 3]].isfinite().all() and clean[2].isnan().all()
    assert mixed[1].isnan().all()  # partner 4 of a batch of 4
    assert mixed[3].isfinite().all()  # partner 0 is fine
    floats = _images("float", 4, 3, 7, 9, torch.float32, gen).requires_grad_(True)
    clean, mixed = ext.mix_images_unchecked(floats, draw, cfg, augment)
    (d_images,) = torch.autograd.grad(clean.sum() + mixed.sum(), floats)
    assert d_images[2].isnan().all()  # its crop offset is bad, and no sample has it as partner
    assert d_images[[0, 1, 3]].isfinite().all()


def _bad(**fields):
    gen = torch.Generator().manual_seed(0)
    images, draw = _images("uint8", 4, 3, 7, 9, torch.float32, gen), _switch_draw(4, 7, 9, gen)
    return dict(images=images, draw=draw, cfg=_cfg(3), augment=None) | fields


BAD_INPUTS = {
    "int32_images": _bad(images=torch.zeros(4, 7, 9, 3, dtype=torch.int32)),
    "3d_images": _bad(images=torch.zeros(7, 9, 3, dtype=torch.uint8)),
    "channels_differ_from_mean": _bad(images=torch.zeros(4, 7, 9, 1, dtype=torch.uint8)),
    "perm_int32": _bad(draw=_switch_draw(4, 7, 9, torch.Generator())._replace(perm=torch.arange(4, dtype=torch.int32))),
    "perm_not_a_permutation": _bad(
        draw=_switch_draw(4, 7, 9, torch.Generator())._replace(perm=torch.zeros(4, dtype=torch.int64))
    ),
    "lam_wrong_shape": _bad(draw=_switch_draw(4, 7, 9, torch.Generator())._replace(lam=torch.ones(3))),
    "box_outside_image": _bad(
        draw=_draw([1, 2, 3, 0], [0.5] * 4, [[0, 8, 0, 2]] + [[0, 0, 0, 0]] * 3, [True, False, False, False])
    ),
    "augment_offset_too_large": _bad(
        cfg=_cfg(3, crop_padding=1),
        augment=AugmentDraw(torch.full((4, 2), 3, dtype=torch.int32), torch.zeros(4, dtype=torch.bool)),
    ),
    "reflect_padding_too_large": _bad(
        cfg=_cfg(3, crop_padding=7, padding_mode="reflect"),
        augment=AugmentDraw(torch.zeros(4, 2, dtype=torch.int32), torch.zeros(4, dtype=torch.bool)),
    ),
    "cfg_not_a_config": _bad(cfg={"mix": "mixup"}),
}


@pytest.mark.parametrize("args", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_raises_the_reference_error(args):
    with pytest.raises((TypeError, ValueError)) as expected:
        ref.mix_images(args["images"], args["draw"], args["cfg"], augment=args["augment"])
    with pytest.raises(type(expected.value), match=re.escape(str(expected.value))):
        ext.mix_images(args["images"], args["draw"], args["cfg"], augment=args["augment"])


def _op_args(images, draw, cfg, augment):
    offset, flip = (None, None) if augment is None else augment
    return (
        images, *draw, offset, flip, list(cfg.mean), list(cfg.std), cfg.crop_padding,
        cfg.padding_mode == "reflect", cfg.resolve_out_dtype(images), cfg.channels_last, cfg.mixes,
    )  # fmt: skip


DIRECT_CALL_ERRORS = {
    # name: (argument index in _op_args, replacement, message)
    "perm_int32": (1, torch.arange(4, dtype=torch.int32), "perm must be Long"),
    "lam_short": (2, torch.ones(3), r"lam must have shape \[4\]"),
    "box_three_columns": (3, torch.zeros(4, 3, dtype=torch.int32), r"box must have shape \[4, 4\]"),
    "images_int16": (0, torch.zeros(4, 7, 9, 3, dtype=torch.int16), "images must be uint8"),
    "offset_without_flip": (6, None, "offset and flip must be given together"),
    "twenty_uint8_channels": (0, torch.zeros(4, 7, 9, 20, dtype=torch.uint8), "channels but mean/std have"),
}


@pytest.mark.parametrize("case", DIRECT_CALL_ERRORS.values(), ids=DIRECT_CALL_ERRORS.keys())
def test_direct_op_call_with_bad_metadata_raises_instead_of_reading_out_of_bounds(case):
    index, value, message = case
    gen = torch.Generator().manual_seed(12)
    cfg = _cfg(3, crop_padding=1, hflip=True)
    args = list(_op_args(_images("uint8", 4, 3, 7, 9, torch.float32, gen), _switch_draw(4, 7, 9, gen), cfg,
                         sample_augment(4, cfg, device="cpu", generator=gen)))  # fmt: skip
    args[index] = value
    with pytest.raises(RuntimeError, match=message):
        torch.ops.sem_fast_ext.mix_images(*args)


def test_opcheck_of_the_forward_and_backward_ops():
    gen = torch.Generator().manual_seed(10)
    reflect = _cfg(3, crop_padding=2, padding_mode="reflect", hflip=True, out_dtype=torch.bfloat16)
    augment = sample_augment(3, reflect, device="cpu", generator=gen)
    draw = _switch_draw(3, 7, 9, gen)
    uint8 = _images("uint8", 3, 3, 7, 9, torch.float32, gen)
    floats = _images("float_channels_last", 3, 3, 7, 9, torch.float32, gen).requires_grad_(True)
    for args in (
        _op_args(uint8, draw, reflect, augment),
        _op_args(floats, draw, _cfg(3, channels_last=False), None),
        _op_args(floats, draw, _cfg(3, mix="none"), None),
        _op_args(floats, draw, reflect, augment),
    ):
        torch.library.opcheck(torch.ops.sem_fast_ext.mix_images.default, args)
    grad = torch.randn(3, 3, 7, 9, generator=gen)
    for g_clean, g_mix in ((grad, grad.flip(0)), (grad.to(memory_format=torch.channels_last), None), (None, grad)):
        args = (g_clean, g_mix, *draw, augment.offset, augment.flip, 2, True, torch.float16)
        torch.library.opcheck(torch.ops.sem_fast_ext.mix_images_backward.default, args)


def test_compiled_with_fullgraph_matches_eager():
    """The fake kernels and registered autograd let torch.compile trace the op without a break."""
    gen = torch.Generator().manual_seed(13)
    cfg = _cfg(3, crop_padding=2, hflip=True)
    images = _images("float", 3, 3, 7, 9, torch.float32, gen).requires_grad_(True)
    draw, augment = _switch_draw(3, 7, 9, gen), sample_augment(3, cfg, device="cpu", generator=gen)

    def step(x):
        clean, mixed = ext.mix_images_unchecked(x, draw, cfg, augment)
        return (clean * clean).sum() + mixed.sum()

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    got, expected = compiled(images), step(images)
    assert_close(got, expected, name="value", **TOL32)
    (d_got,), (d_expected,) = torch.autograd.grad(got, images), torch.autograd.grad(expected, images)
    assert_close(d_got, d_expected, name="d images", **TOL32)


@settings(max_examples=25, deadline=None, database=None)
@given(data=st.data())
def test_property_random_batches_match_the_reference(data):
    sizes = (st.integers(1, 6), st.sampled_from([1, 3]), st.integers(1, 12), st.integers(1, 12))
    B, C, H, W = (data.draw(s) for s in sizes)
    dtype = data.draw(st.sampled_from(DTYPES))
    kind = data.draw(st.sampled_from(["uint8", "uint8_strided", "float", "float_channels_last", "float_strided"]))
    padding = data.draw(st.integers(0, 3))
    modes = ["zeros", "reflect"] if padding < min(H, W) else ["zeros"]
    cfg = _cfg(
        C,
        mix=data.draw(st.sampled_from(["mixup", "cutmix", "switch", "none"])),
        lam_mode=data.draw(st.sampled_from(["batch", "elem"])),
        pairing=data.draw(st.sampled_from(["perm", "flip"])),
        crop_padding=padding,
        padding_mode=data.draw(st.sampled_from(modes)),
        hflip=data.draw(st.booleans()),
        channels_last=data.draw(st.booleans()),
        out_dtype=dtype if kind.startswith("uint8") else None,
    )
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31 - 1)))
    images = _images(kind, B, C, H, W, dtype, gen)
    draw = sample_draw(B, H, W, cfg, device="cpu", generator=gen)
    augment = sample_augment(B, cfg, device="cpu", generator=gen) if cfg.augments else None
    _check_against_reference(images, draw, cfg, augment, dtype)
