"""Every fast backend's mix op (``backend`` fixture: ``'triton'`` and ``'native'``, on each device
they run on) against the reference: values and gradients in fp32, bf16 and fp16, odd shapes and
layouts, edge draws, random batches (hypothesis), opcheck, double backward, bad input,
out-of-range values through the unchecked entry point. torch.compile of each backend:
``test_triton_backend.py`` and ``tests/ext/test_native_backend.py``.

On CPU the Triton kernels run in Triton's interpreter (the root ``conftest.py`` sets
TRITON_INTERPRET=1). Inputs are built on the CPU and moved to the backend's device.

Tolerances: fp32 outputs and gradients within 1e-5 relative of the float32 reference (``TOL32``;
the atol covers values near 0). bf16/fp16: flash-attention's rule,
``max|fast - truth| <= 2 * max|plain - truth| + LOW_ATOL`` with ``truth`` the float32 reference on
the same rounded inputs and ``plain`` plain PyTorch doing the mix arithmetic in that dtype.
"""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sem_fast import sample_draw
from sem_fast import reference as ref
from sem_fast.draws import AugmentDraw
from sem_fast.sampling import sample_augment
from tests.ops.cases import (
    DTYPES,
    IMAGE_KINDS,
    given_draw,
    images,
    mix_cfg,
    mix_op_args,
    plain_mix,
    switch_draw,
    to_device,
)
from tests.utils import assert_close, assert_low_precision_close, cuda_launches, triton_launches

TOL32 = dict(rtol=1e-5, atol=1e-6)
#: Half an fp16 ulp at 1 (2**-11): room for one rounding where plain PyTorch happens to be exact.
LOW_ATOL = 2**-11


def _compare(name, fast_out, truth, plain, dtype):
    fast_out, truth, plain = (t.cpu() for t in (fast_out, truth, plain))
    if dtype == torch.float32:
        assert_close(fast_out, truth, name=name, **TOL32)
    else:
        assert_low_precision_close(fast_out, truth, plain, atol=LOW_ATOL, name=name)


def _check_against_reference(backend, images, draw, cfg, augment, dtype):
    """Values (and gradients for float input) of ``backend``'s op against the reference, on the
    backend's device; ``dtype`` is the expected output dtype. Returns the op's ``(x_clean, x_mix)``."""
    images, draw, augment = to_device(backend.device, images, draw, augment)
    float_input = images.dtype != torch.uint8
    x = images.detach().requires_grad_(float_input)
    clean, mixed = backend.mix_images(x, draw, cfg, augment=augment)
    x32 = images.detach().float().requires_grad_(float_input) if float_input else images
    x_low = images.detach().requires_grad_(float_input)
    truth = ref.mix_images(x32, draw, cfg.replace(out_dtype=torch.float32), augment=augment)
    plain = plain_mix(x_low, draw, cfg, augment, dtype)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    for name, out, t, p in zip(("x_clean", "x_mix"), (clean, mixed), truth, plain):
        assert out.dtype == cfg.resolve_out_dtype(images) == dtype and out.shape == t.shape, name
        assert out.is_contiguous(memory_format=fmt) and out.device == images.device, name
        _compare(name, out, t, p, dtype)
    if not float_input:
        return clean, mixed
    gen = torch.Generator().manual_seed(7)
    g_clean, g_mix = (torch.randn(clean.shape, generator=gen).to(dtype).to(images.device) for _ in range(2))

    def grad(outputs, leaf):
        loss = sum((o.float() * g.float()).sum() for o, g in zip(outputs, (g_clean, g_mix)))
        return torch.autograd.grad(loss, leaf)[0]

    d_images = grad((clean, mixed), x)
    assert d_images.dtype == images.dtype and d_images.shape == images.shape
    _compare("d images", d_images, grad(truth, x32), grad(plain, x_low), dtype)
    return clean, mixed


CASES = {
    # name: (B, C, H, W, images kind, padding_mode or None for no augment, channels_last)
    "B1_rgb_7x9_uint8": (1, 3, 7, 9, "uint8", None, True),
    "odd_B_32x32_strided_uint8_zero_pad": (5, 3, 32, 32, "uint8_strided", "zeros", False),
    "gray_7x9_uint8_reflect": (5, 1, 7, 9, "uint8", "reflect", True),
    "gray_7x9_float_reflect": (3, 1, 7, 9, "float", "reflect", False),
    "rgb_32x32_float_channels_last_input": (4, 3, 32, 32, "float_channels_last", None, True),
    "odd_B_7x9_noncontiguous_float_zero_pad": (5, 3, 7, 9, "float_strided", "zeros", True),
    "B1_rgb_32x32_float_reflect": (1, 3, 32, 32, "float", "reflect", True),
    # Runs of whole vectors (W a multiple of 8): the vector loads and stores of the loader's layout.
    "rgb_16x24_uint8_channels_last": (3, 3, 16, 24, "uint8", None, True),
    "rgb_16x24_uint8_channels_last_reflect": (3, 3, 16, 24, "uint8", "reflect", True),
    "rgba_8x16_uint8_channels_last_zero_pad": (3, 4, 8, 16, "uint8", "zeros", True),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_values_and_gradients_match_the_reference(backend, case, dtype):
    B, C, H, W, kind, padding, channels_last = case
    gen = torch.Generator().manual_seed(B * H + W)
    x = images(kind, B, C, H, W, dtype, gen)
    cfg = mix_cfg(C, channels_last=channels_last, out_dtype=dtype if kind.startswith("uint8") else None)
    augment = None
    if padding is not None:
        cfg = cfg.replace(crop_padding=2, padding_mode=padding, hflip=True)
        augment = sample_augment(B, cfg, device="cpu", generator=gen)
    _check_against_reference(backend, x, switch_draw(B, H, W, gen), cfg, augment, dtype)


def test_reflect_padding_wider_than_half_the_image_reads_pixels_up_to_three_times(backend):
    """pad = side - 1 on a 3x4 image: a pixel is read directly and through both mirrors, so its
    gradient sums up to 3x3 crop positions."""
    gen = torch.Generator().manual_seed(11)
    cfg = mix_cfg(3, crop_padding=2, padding_mode="reflect", hflip=True)
    x = images("float", 6, 3, 3, 4, torch.float32, gen)
    offset = torch.tensor([[0, 0], [4, 4], [2, 2], [0, 4], [4, 0], [1, 3]], dtype=torch.int32)
    augment = AugmentDraw(offset=offset, flip=torch.tensor([False, True, False, True, False, True]))
    _check_against_reference(backend, x, switch_draw(6, 3, 4, gen), cfg, augment, torch.float32)


def test_large_images_span_several_programs_per_sample(backend):
    """C*H*W above the Triton interpreter's block (2**16) splits each sample over several programs."""
    gen = torch.Generator().manual_seed(6)
    B, C, H, W = 2, 3, 150, 151
    cfg = mix_cfg(3, crop_padding=4, hflip=True)
    x = images("float", B, C, H, W, torch.float32, gen)
    draw, augment = switch_draw(B, H, W, gen), sample_augment(B, cfg, device="cpu", generator=gen)
    _check_against_reference(backend, x, draw, cfg, augment, torch.float32)


def test_float32_input_with_a_bf16_output_and_under_autocast(backend):
    gen = torch.Generator().manual_seed(0)
    x = images("float", 3, 3, 7, 9, torch.float32, gen)
    draw = switch_draw(3, 7, 9, gen)
    _check_against_reference(backend, x, draw, mix_cfg(3, out_dtype=torch.bfloat16), None, torch.bfloat16)
    x, draw = to_device(backend.device, x, draw)
    with torch.autocast(backend.device.type, dtype=torch.bfloat16):
        clean, mixed = backend.mix_images(x, draw, mix_cfg(3))
    assert clean.dtype == mixed.dtype == torch.bfloat16


def test_mixup_lambda_one_keeps_the_sample_and_lambda_zero_takes_the_partner(backend):
    x = images("uint8", 4, 3, 7, 9, torch.float32, torch.Generator().manual_seed(1))
    draw = given_draw([1, 2, 3, 0], [1.0, 0.0, 1.0, 0.0])
    clean, mixed = backend.mix_images(*to_device(backend.device, x, draw), mix_cfg(3))
    assert torch.equal(mixed[[0, 2]], clean[[0, 2]])
    assert torch.equal(mixed[[1, 3]], clean[[2, 0]])


def test_cutmix_empty_box_keeps_the_sample_full_box_takes_the_partner_border_box_pastes(backend):
    H, W = 7, 9
    x = images("uint8", 3, 3, H, W, torch.float32, torch.Generator().manual_seed(2))
    boxes = [[0, 0, 0, 0], [0, H, 0, W], [H - 2, H, W - 3, W]]
    draw = given_draw([2, 0, 1], [1.0, 0.0, 1 - 6 / 63], boxes, [True] * 3)
    clean, mixed = _check_against_reference(backend, x, draw, mix_cfg(3), None, torch.float32)
    assert torch.equal(mixed[0], clean[0])
    assert torch.equal(mixed[1], clean[0])
    inside = ref.box_mask(draw.box[2:], H, W)[0].to(backend.device)
    assert torch.equal(mixed[2], torch.where(inside, clean[1], clean[2]))


def test_identity_permutation_mixes_each_sample_with_itself(backend):
    gen = torch.Generator().manual_seed(3)
    x = images("float", 5, 3, 7, 9, torch.float32, gen)
    draw = switch_draw(5, 7, 9, gen)._replace(perm=torch.arange(5))
    clean, mixed = _check_against_reference(backend, x, draw, mix_cfg(3), None, torch.float32)
    assert_close(mixed, clean, name="x_mix", **TOL32)


def test_without_mixing_x_mix_is_x_clean_and_gradients_add_up(backend):
    gen = torch.Generator().manual_seed(4)
    cfg = mix_cfg(3, mix="none")
    x, draw = images("float", 3, 3, 7, 9, torch.float32, gen), sample_draw(3, 7, 9, cfg, device="cpu", generator=gen)
    x, draw = to_device(backend.device, x, draw)
    x.requires_grad_(True)
    clean, mixed = backend.mix_images(x, draw, cfg)
    assert mixed is clean
    (clean.sum() + 2 * mixed.sum()).backward()
    assert torch.equal(x.grad, torch.full_like(x, 3.0))


def test_gradient_of_the_mixed_output_alone_matches_the_reference(backend):
    """The clean pass usually runs under no_grad: only x_mix gets a gradient (None for x_clean)."""
    gen = torch.Generator().manual_seed(5)
    cfg = mix_cfg(3, crop_padding=3, padding_mode="reflect", hflip=True)
    x = images("float", 4, 3, 7, 9, torch.float32, gen)
    draw, augment = switch_draw(4, 7, 9, gen), sample_augment(4, cfg, device="cpu", generator=gen)
    g = torch.randn(4, 3, 7, 9, generator=gen)
    x, draw, augment, g = to_device(backend.device, x, draw, augment, g)
    x.requires_grad_(True)
    grads = [
        torch.autograd.grad((op(x, draw, cfg, augment=augment)[1] * g).sum(), x)[0]
        for op in (backend.mix_images, ref.mix_images)
    ]
    assert_close(grads[0], grads[1], name="d images", **TOL32)


def test_out_of_range_perm_and_offsets_give_nan_not_a_crash(backend):
    """Value checks are skipped under torch.compile; the kernels must stay memory-safe."""
    gen = torch.Generator().manual_seed(9)
    cfg = mix_cfg(3, crop_padding=2, hflip=True)
    uint8, floats = images("uint8", 4, 3, 7, 9, torch.float32, gen), images("float", 4, 3, 7, 9, torch.float32, gen)
    draw = switch_draw(4, 7, 9, gen)._replace(perm=torch.tensor([1, 4, 3, 0]))
    offset = torch.tensor([[0, 0], [1, 2], [2, 9], [4, 4]], dtype=torch.int32)
    augment = AugmentDraw(offset=offset, flip=torch.zeros(4, dtype=torch.bool))
    uint8, floats, draw, augment = to_device(backend.device, uint8, floats, draw, augment)
    clean, mixed = backend.mix_images_unchecked(uint8, draw, cfg, augment)
    assert clean[[0, 1, 3]].isfinite().all() and clean[2].isnan().all()
    assert mixed[1].isnan().all()  # partner 4 of a batch of 4
    assert mixed[3].isfinite().all()  # partner 0 is fine
    floats.requires_grad_(True)
    clean, mixed = backend.mix_images_unchecked(floats, draw, cfg, augment)
    (d_images,) = torch.autograd.grad(clean.sum() + mixed.sum(), floats)
    assert d_images[2].isnan().all()  # its crop offset is bad, and no sample has it as partner
    assert d_images[[0, 1, 3]].isfinite().all()


def _bad(**fields):
    gen = torch.Generator().manual_seed(0)
    x, draw = images("uint8", 4, 3, 7, 9, torch.float32, gen), switch_draw(4, 7, 9, gen)
    return dict(images=x, draw=draw, cfg=mix_cfg(3), augment=None) | fields


def _draw_with(**fields):
    return switch_draw(4, 7, 9, torch.Generator().manual_seed(0))._replace(**fields)


#: name -> (arguments, error type, pattern of its message): the message names the argument.
BAD_INPUTS = {
    "int32_images": (_bad(images=torch.zeros(4, 7, 9, 3, dtype=torch.int32)), TypeError, "images must be uint8"),
    "3d_images": (_bad(images=torch.zeros(7, 9, 3, dtype=torch.uint8)), ValueError, "images must be 4-D"),
    "channels_differ_from_mean": (
        _bad(images=torch.zeros(4, 7, 9, 1, dtype=torch.uint8)), ValueError, "images have 1 channels but cfg.mean"
    ),
    "perm_int32": (_bad(draw=_draw_with(perm=torch.arange(4, dtype=torch.int32))), TypeError, "draw.perm must be"),
    "perm_not_a_permutation": (
        _bad(draw=_draw_with(perm=torch.zeros(4, dtype=torch.int64))), ValueError, "draw.perm must be a permutation"
    ),
    "lam_wrong_shape": (_bad(draw=_draw_with(lam=torch.ones(3))), ValueError, "draw.lam must have shape"),
    "box_outside_image": (
        _bad(draw=given_draw([1, 2, 3, 0], [0.5] * 4, [[0, 8, 0, 2]] + [[0, 0, 0, 0]] * 3, [True, False, False, False])),
        ValueError,
        r"draw.box\[0\] = \[0, 8, 0, 2\]",
    ),
    "augment_offset_too_large": (
        _bad(
            cfg=mix_cfg(3, crop_padding=1),
            augment=AugmentDraw(torch.full((4, 2), 3, dtype=torch.int32), torch.zeros(4, dtype=torch.bool)),
        ),
        ValueError,
        "augment.offset must lie in",
    ),
    "reflect_padding_too_large": (
        _bad(
            cfg=mix_cfg(3, crop_padding=7, padding_mode="reflect"),
            augment=AugmentDraw(torch.zeros(4, 2, dtype=torch.int32), torch.zeros(4, dtype=torch.bool)),
        ),
        ValueError,
        "crop_padding=7 with padding_mode='reflect'",
    ),
    "cfg_not_a_config": (_bad(cfg={"mix": "mixup"}), TypeError, "cfg must be a SEMConfig"),
}


@pytest.mark.parametrize("args, error, message", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_raises_an_error_naming_the_argument(backend, args, error, message):
    x, draw, augment = to_device(backend.device, args["images"], args["draw"], args["augment"])
    with pytest.raises(error, match=message):
        backend.mix_images(x, draw, args["cfg"], augment=augment)


def test_opcheck_of_the_forward_and_backward_ops(backend):
    """opcheck runs each sample several times: B=2 (one CutMix and one mixup sample) keeps the
    Triton interpreter's work small."""
    gen = torch.Generator().manual_seed(10)
    reflect_cfg = mix_cfg(3, crop_padding=2, padding_mode="reflect", hflip=True, out_dtype=torch.bfloat16)
    augment = sample_augment(2, reflect_cfg, device="cpu", generator=gen)
    draw = switch_draw(2, 7, 9, gen)
    uint8 = images("uint8", 2, 3, 7, 9, torch.float32, gen)
    floats = images("float_channels_last", 2, 3, 7, 9, torch.float32, gen)
    grad = torch.randn(2, 3, 7, 9, generator=gen)
    augment, draw, uint8, floats, grad = to_device(backend.device, augment, draw, uint8, floats, grad)
    floats.requires_grad_(True)
    forward, backward = backend.ops.mix_images.default, backend.ops.mix_images_backward.default
    for args in (
        mix_op_args(uint8, draw, reflect_cfg, augment),
        mix_op_args(floats, draw, mix_cfg(3, channels_last=False), None),
        mix_op_args(floats, draw, mix_cfg(3, mix="none"), None),
        mix_op_args(floats, draw, reflect_cfg, augment),
    ):
        torch.library.opcheck(forward, args)
    for g_clean, g_mix, reflect, channels_last in (
        (grad, grad.flip(0), True, True),
        (grad.to(memory_format=torch.channels_last), None, False, False),
        (None, grad, False, True),
    ):
        args = (g_clean, g_mix, *draw, augment.offset, augment.flip, 2, reflect, torch.float16, channels_last)
        torch.library.opcheck(backward, args)


def test_double_backward_runs_the_forward_kernel_and_matches_the_reference(backend):
    """The mix is linear in float input, so a gradient of its gradient (e.g. a gradient penalty
    on the input) exists; it runs the forward kernel (the backward's adjoint)."""
    gen = torch.Generator().manual_seed(12)
    cfg = mix_cfg(3, crop_padding=2, padding_mode="reflect", hflip=True)
    x = images("float", 4, 3, 7, 9, torch.float32, gen)
    draw, augment = switch_draw(4, 7, 9, gen), sample_augment(4, cfg, device="cpu", generator=gen)
    g_clean, g_mix, v = (torch.randn(4, 3, 7, 9, generator=gen) for _ in range(3))
    x, draw, augment, g_clean, g_mix, v = to_device(backend.device, x, draw, augment, g_clean, g_mix, v)

    def second_order(op):
        leaf = x.detach().requires_grad_(True)
        weights = [g.detach().requires_grad_(True) for g in (g_clean, g_mix)]
        clean, mixed = op(leaf, draw, cfg, augment=augment)
        (d_x,) = torch.autograd.grad((clean * weights[0]).sum() + (mixed * weights[1]).sum(), leaf, create_graph=True)
        return torch.autograd.grad((d_x * v).sum(), weights)

    for name, fast, truth in zip(("d g_clean", "d g_mix"), second_order(backend.mix_images), second_order(ref.mix_images)):
        assert_close(fast, truth, name=name, **TOL32)


def test_forward_is_one_launch_and_backward_two(backend):
    """The raw ops on every path (uint8 and float input, crop/flip, clean only): the forward is one
    kernel launch; the backward is the inverse permutation and one gather kernel (one launch
    without a gradient of x_mix)."""
    if backend.name == "native" and backend.device.type != "cuda":
        pytest.skip("the C++ CPU kernels launch nothing")

    def launches(fn) -> int:
        if backend.name == "native":
            return cuda_launches(fn).total()
        with triton_launches() as counted:
            fn()
        return counted.total()

    gen = torch.Generator().manual_seed(14)
    cfg = mix_cfg(3, crop_padding=2, padding_mode="reflect", hflip=True)
    draw, augment = switch_draw(2, 7, 9, gen), sample_augment(2, cfg, device="cpu", generator=gen)
    uint8, floats = images("uint8", 2, 3, 7, 9, torch.float32, gen), images("float", 2, 3, 7, 9, torch.float32, gen)
    grad = torch.randn(2, 3, 7, 9, generator=gen)
    draw, augment, uint8, floats, grad = to_device(backend.device, draw, augment, uint8, floats, grad)
    forward, backward = backend.ops.mix_images.default, backend.ops.mix_images_backward.default
    for args in (
        mix_op_args(uint8, draw, cfg, augment),
        mix_op_args(floats, draw, mix_cfg(3, channels_last=False), None),
        mix_op_args(floats, draw, mix_cfg(3, mix="none"), None),
    ):
        assert launches(lambda args=args: forward(*args)) == 1
    for g_mix, expected in ((grad, 2), (None, 1)):
        args = (grad, g_mix, *draw, augment.offset, augment.flip, 2, True, torch.float32, True)
        assert launches(lambda args=args: backward(*args)) == expected


#: fp32 NaN bit patterns: the canonical NaN that NVIDIA arithmetic produces (0x7FFFFFFF), payloads
#: whose low bits are all ones (a round-to-nearest-even on the bits carries them into the sign),
#: a negative one, a signalling one and the quiet NaN.
NAN_BITS = [0x7FFFFFFF, -1, 0x7FFF8000, 0x7FFFC000, 0x7F800001, 0x7FC00000]


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # numpy, in the interpreter
def test_nan_inputs_stay_nan_in_bf16_outputs(backend):
    """A NaN in a float batch is NaN in the bf16 outputs wherever the reference (in fp32) puts
    one, whatever its payload: x_clean passes the input's bits through the bf16 store unchanged,
    x_mix after arithmetic."""
    gen = torch.Generator().manual_seed(13)
    x = images("float", 4, 3, 7, 9, torch.float32, gen)
    flat = x.view(-1).view(torch.int32)
    positions = torch.randperm(flat.numel(), generator=gen)[: 4 * len(NAN_BITS)]
    flat[positions] = torch.tensor(NAN_BITS, dtype=torch.int32).repeat(4)
    draw = switch_draw(4, 7, 9, gen)
    cfg = mix_cfg(3, out_dtype=torch.bfloat16)
    clean, mixed = backend.mix_images(*to_device(backend.device, x, draw), cfg)
    truth = ref.mix_images(x, draw, cfg.replace(out_dtype=torch.float32))
    for name, out, t in zip(("x_clean", "x_mix"), (clean, mixed), truth):
        assert out.dtype == torch.bfloat16
        assert torch.equal(out.cpu().isnan(), t.isnan()), f"{name}: NaN lost or made"
    assert clean.isnan().sum() == len(positions)


@settings(max_examples=25, deadline=None, database=None)
@given(data=st.data())
def test_property_random_batches_match_the_reference(backend, data):
    sizes = (st.integers(1, 6), st.sampled_from([1, 3]), st.integers(1, 12), st.integers(1, 12))
    B, C, H, W = (data.draw(s) for s in sizes)
    dtype = data.draw(st.sampled_from(DTYPES))
    kind = data.draw(st.sampled_from(IMAGE_KINDS))
    padding = data.draw(st.integers(0, 3))
    modes = ["zeros", "reflect"] if padding < min(H, W) else ["zeros"]
    cfg = mix_cfg(
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
    x = images(kind, B, C, H, W, dtype, gen)
    draw = sample_draw(B, H, W, cfg, device="cpu", generator=gen)
    augment = sample_augment(B, cfg, device="cpu", generator=gen) if cfg.augments else None
    _check_against_reference(backend, x, draw, cfg, augment, dtype)
