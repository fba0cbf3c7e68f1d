"""The compiled SEM loss op (`sem_fast.ext.sem_loss`, csrc/) against the reference: loss and
gradients in fp32, bf16 and fp16, odd shapes, edge draws, many classes, random problems
(hypothesis), opcheck, torch.compile, bad input. Runs on every device the extension has kernels
for (CPU here; CUDA too where built with them); skipped when the extension is not built.

Tolerances: fp32 within 1e-5 relative of the float32 reference (``TOL32``; the atol covers
gradient entries near 0, such as ``p - 1`` at a confident true class, where the reference's own
fp32 rounding of O(1) intermediates is ~1e-7). bf16/fp16 inputs: flash-attention's rule,
``max|fast - truth| <= 2 * max|plain - truth| + LOW_ATOL`` with ``truth`` the float32 reference on
the same rounded inputs and ``plain`` the same loss computed by plain PyTorch in that dtype.
"""

import re

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from sem_fast import MixDraw, SEMConfig, ext, sample_draw
from sem_fast import reference as ref
from tests.utils import assert_close, assert_low_precision_close

pytestmark = pytest.mark.skipif(ext.probe("cpu") is not None, reason=f"{ext.probe('cpu')}")

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
TOL32 = dict(rtol=1e-5, atol=1e-6)
#: Room for fp32 summation-order differences in the fp32 loss values (which are O(1)).
LOW_ATOL = 1e-6
#: Weights of (loss, ce, sem) in the scalar that is differentiated, so every output's gradient counts.
OUTPUT_WEIGHTS = (1.0, 0.5, 0.25)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() and ext.probe("cuda") is None else [])


def _problem(B, K, D, dtype, gen, *, layout="contiguous", labels_dtype=torch.int64):
    """``(logits (B, K), z_mix (B, D), z_clean (B, D), labels (B,))``; ``layout='strided'`` gives
    non-contiguous views (a column slice and a transpose)."""
    if layout == "strided":
        logits = (3 * torch.randn(B, 2 * K, generator=gen)).to(dtype)[:, ::2]
        z_mix, z_clean = (torch.randn(D, B, generator=gen).to(dtype).t() for _ in range(2))
    else:
        logits = (3 * torch.randn(B, K, generator=gen)).to(dtype)
        z_mix, z_clean = (torch.randn(B, D, generator=gen).to(dtype) for _ in range(2))
    labels = torch.randint(0, K, (B,), generator=gen).to(labels_dtype)
    return logits, z_mix, z_clean, labels


def _elem_draw(B: int, gen: torch.Generator) -> MixDraw:
    return sample_draw(B, 8, 8, SEMConfig(lam_mode="elem"), device="cpu", generator=gen)


def _plain_loss(logits, z_mix, z_clean, labels, draw, cfg):
    """The SEM loss with every operation in the inputs' (low) dtype, by plain PyTorch."""
    dtype = logits.dtype
    targets = ref.mixed_targets(labels, draw, logits.shape[1], cfg.label_smoothing).to(dtype)
    ce = -(targets * F.log_softmax(logits, dim=1)).sum(1).mean()
    if z_clean is None:
        return ce, ce, torch.zeros((), dtype=dtype, device=logits.device)
    lam = draw.lam.to(dtype).view(-1, 1)
    target = lam * z_clean + (1 - lam) * z_clean[draw.perm]
    diff = z_mix - (target.detach() if cfg.detach_target else target)
    sq = diff * diff
    sem = sq.mean() if cfg.sem_reduction == "mean" else sq.sum(1).mean()
    return ce + cfg.gamma * sem, ce, sem


def _check_against_reference(logits, z_mix, z_clean, labels, draw, cfg):
    """Loss values and gradients (w.r.t. logits, z_mix, z_clean) against the reference."""
    dtype = logits.dtype

    def run(fn, cast):
        inputs = [None if t is None else cast(t).detach().requires_grad_(True) for t in (logits, z_mix, z_clean)]
        outputs = fn(inputs[0], inputs[1], inputs[2], labels, draw, cfg)
        total = sum(w * o for w, o in zip(OUTPUT_WEIGHTS, outputs))
        used = [t for t in inputs if t is not None]
        return outputs, torch.autograd.grad(total, used, allow_unused=True)

    out, grads = run(ext.sem_loss, lambda t: t)
    truth, truth_grads = run(ref.sem_loss, lambda t: t.float())
    plain, plain_grads = run(_plain_loss, lambda t: t)
    for o in out:
        assert o.dtype == torch.float32 and o.shape == () and o.device == logits.device
    names = ("loss", "ce", "sem", "d logits", "d z_mix", "d z_clean")
    for name, f, t, p in zip(names, (*out, *grads), (*truth, *truth_grads), (*plain, *plain_grads)):
        assert (f is None) == (t is None), f"{name}: gradient presence differs from the reference"
        if f is None:
            continue
        assert f.dtype == (torch.float32 if name in names[:3] else dtype), name
        f, t, p = f.cpu(), t.cpu(), p.cpu()
        if dtype == torch.float32:
            assert_close(f, t, name=name, **TOL32)
        else:
            assert_low_precision_close(f, t, p, atol=LOW_ATOL, name=name)


SHAPES = {
    # name: (B, K, D, layout)
    "B1_K3_D17": (1, 3, 17, "contiguous"),
    "odd_B_K1000_D640": (5, 1000, 640, "contiguous"),
    "B7_K10_D17_noncontiguous": (7, 10, 17, "strided"),
    "B33_K1_D640": (33, 1, 640, "contiguous"),
}
CONFIGS = {
    "mean_detached_target": SEMConfig(gamma=0.7),
    "sum_through_target_smoothed": SEMConfig(gamma=1.3, sem_reduction="sum", detach_target=False, label_smoothing=0.1),
    "no_sem_term": SEMConfig(label_smoothing=0.2),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cfg", CONFIGS.values(), ids=CONFIGS.keys())
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_loss_and_gradients_match_the_reference(shape, cfg, dtype, device):
    B, K, D, layout = shape
    gen = torch.Generator().manual_seed(B * K + D)
    logits, z_mix, z_clean, labels = _problem(B, K, D, dtype, gen, layout=layout)
    z_clean = None if cfg is CONFIGS["no_sem_term"] else z_clean
    draw = _elem_draw(B, gen)
    logits, z_mix, labels = (t.to(device) for t in (logits, z_mix, labels))
    z_clean = None if z_clean is None else z_clean.to(device)
    _check_against_reference(logits, z_mix, z_clean, labels, MixDraw(*(t.to(device) for t in draw)), cfg)


def test_lambda_zero_and_one_and_the_identity_permutation():
    gen = torch.Generator().manual_seed(1)
    logits, z_mix, z_clean, labels = _problem(4, 10, 17, torch.float32, gen)
    cfg = SEMConfig(detach_target=False, label_smoothing=0.1)
    for perm in (torch.tensor([2, 3, 0, 1]), torch.arange(4)):
        lam = torch.tensor([0.0, 1.0, 0.0, 1.0])
        draw = MixDraw(perm, lam, torch.zeros(4, 4, dtype=torch.int32), torch.zeros(4, dtype=torch.bool))
        _check_against_reference(logits, z_mix, z_clean, labels, draw, cfg)


def test_confident_logits_keep_the_true_class_gradient():
    """softmax -> 1 at the label: the -1 of the target must meet p in fp32, before rounding."""
    gen = torch.Generator().manual_seed(2)
    logits, z_mix, z_clean, labels = _problem(6, 1000, 17, torch.float32, gen)
    logits[torch.arange(6), labels] += 30.0
    no_box = torch.zeros(6, 4, dtype=torch.int32)
    draw = MixDraw(torch.arange(6), torch.ones(6), no_box, torch.zeros(6, dtype=torch.bool))
    for dtype in DTYPES:
        _check_against_reference(logits.to(dtype), z_mix.to(dtype), z_clean.to(dtype), labels, draw, SEMConfig())


def test_many_classes_and_features():
    gen = torch.Generator().manual_seed(3)
    logits, z_mix, z_clean, labels = _problem(2, 2**16 + 3, 2**16 + 5, torch.float32, gen)
    cfg = SEMConfig(detach_target=False, label_smoothing=0.1)
    _check_against_reference(logits, z_mix, z_clean, labels, _elem_draw(2, gen), cfg)


def test_int32_labels_and_mixed_feature_dtypes():
    """z_mix and z_clean in different dtypes are upcast to fp32 together (lossless); each
    gradient comes back in its input's dtype."""
    gen = torch.Generator().manual_seed(4)
    logits, z_mix, z_clean, labels = _problem(5, 7, 9, torch.float32, gen, labels_dtype=torch.int32)
    _check_against_reference(logits, z_mix, z_clean, labels, _elem_draw(5, gen), SEMConfig())
    cfg = SEMConfig(detach_target=False)
    inputs = [logits, z_mix.to(torch.bfloat16), z_clean.to(torch.float16)]
    got_in, ref_in = ([t.clone().requires_grad_(True) for t in inputs] for _ in range(2))
    draw = _elem_draw(5, gen)
    got, expected = ext.sem_loss(*got_in, labels, draw, cfg), ref.sem_loss(*ref_in, labels, draw, cfg)
    for name, g, e in zip(("loss", "ce", "sem"), got, expected):
        assert_close(g, e, name=name, **TOL32)
    got_grads = torch.autograd.grad(got[0], got_in)
    expected_grads = torch.autograd.grad(expected[0], ref_in)
    for name, g, e, t in zip(("d logits", "d z_mix", "d z_clean"), got_grads, expected_grads, inputs):
        assert g.dtype == t.dtype, name
        assert_close(g, e, name=name, atol=1e-6, rtol=2**-8)  # both round an fp32 gradient to the input dtype


@pytest.mark.parametrize("used", ["ce", "sem"])
def test_gradient_of_one_output_alone(used):
    """Only ``ce`` (or ``sem``) is differentiated: the other inputs' gradients are None."""
    gen = torch.Generator().manual_seed(5)
    inputs = [t.requires_grad_(True) for t in _problem(5, 7, 9, torch.float32, gen)[:3]]
    labels, draw, cfg = torch.randint(0, 7, (5,), generator=gen), _elem_draw(5, gen), SEMConfig(detach_target=False)
    index = 1 if used == "ce" else 2
    got = torch.autograd.grad(ext.sem_loss(*inputs, labels, draw, cfg)[index], inputs, allow_unused=True)
    expected = torch.autograd.grad(ref.sem_loss(*inputs, labels, draw, cfg)[index], inputs, allow_unused=True)
    for g, e in zip(got, expected):
        assert (g is None) == (e is None)
        if g is not None:
            assert_close(g, e, **TOL32)


def test_without_clean_features_sem_is_zero_and_loss_is_ce():
    gen = torch.Generator().manual_seed(6)
    logits, z_mix, _, labels = _problem(3, 5, 4, torch.float32, gen)
    loss, ce, sem = ext.sem_loss(logits, z_mix.requires_grad_(True), None, labels, _elem_draw(3, gen), SEMConfig())
    assert sem.item() == 0.0 and torch.equal(loss, ce)
    assert torch.autograd.grad(loss, z_mix, allow_unused=True) == (None,)


def test_out_of_range_labels_and_perm_give_nan_not_a_crash():
    """Value checks are skipped under torch.compile; the kernels must stay memory-safe."""
    gen = torch.Generator().manual_seed(7)
    problem = _problem(4, 5, 3, torch.float32, gen)
    logits, z_mix, z_clean, labels = (t.requires_grad_(t.is_floating_point()) for t in problem)
    draw, cfg = _elem_draw(4, gen), SEMConfig(detach_target=False)
    for bad_labels, bad_draw in (
        (torch.tensor([0, 5, 1, 2]), draw),
        (torch.tensor([-1, 0, 1, 2]), draw),
        (labels, draw._replace(perm=torch.tensor([1, 2, 3, 4]))),
    ):
        loss, ce, sem = ext.sem_loss_unchecked(logits, z_mix, z_clean, bad_labels, bad_draw, cfg)
        assert loss.isnan() and ce.isnan()
        d_logits, _, d_clean = torch.autograd.grad(loss, (logits, z_mix, z_clean))
        assert d_logits.isfinite().all()  # the gradient drops the missing class; the loss flags it
    assert sem.isnan() and d_clean.isnan().any()  # the bad perm also breaks the SEM target


def _bad(**fields):
    gen = torch.Generator().manual_seed(0)
    logits, z_mix, z_clean, labels = _problem(4, 5, 3, torch.float32, gen)
    args = dict(logits=logits, z_mix=z_mix, z_clean=z_clean, labels=labels, draw=_elem_draw(4, gen), cfg=SEMConfig())
    return args | fields


BAD_INPUTS = {
    "int_logits": _bad(logits=torch.zeros(4, 5, dtype=torch.int64)),
    "logits_wrong_batch": _bad(logits=torch.zeros(3, 5)),
    "z_clean_shape_differs": _bad(z_clean=torch.zeros(4, 4)),
    "float_labels": _bad(labels=torch.zeros(4)),
    "label_out_of_range": _bad(labels=torch.tensor([0, 1, 5, 2])),
    "negative_label": _bad(labels=torch.tensor([0, -1, 2, 2])),
    "perm_not_a_permutation": _bad(
        draw=_elem_draw(4, torch.Generator())._replace(perm=torch.zeros(4, dtype=torch.int64))
    ),
    "lam_above_one": _bad(draw=_elem_draw(4, torch.Generator())._replace(lam=torch.full((4,), 1.5))),
    "labels_on_meta": _bad(labels=torch.zeros(4, dtype=torch.int64, device="meta")),
    "cfg_not_a_config": _bad(cfg=None),
}


@pytest.mark.parametrize("args", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_raises_the_reference_error(args):
    with pytest.raises((TypeError, ValueError)) as expected:
        ref.sem_loss(**args)
    with pytest.raises(type(expected.value), match=re.escape(str(expected.value))):
        ext.sem_loss(**args)


def test_direct_op_call_with_bad_metadata_raises_instead_of_reading_out_of_bounds():
    gen = torch.Generator().manual_seed(9)
    logits, z_mix, z_clean, labels = _problem(4, 5, 3, torch.float32, gen)
    draw = _elem_draw(4, gen)
    op = torch.ops.sem_fast_ext.sem_loss
    with pytest.raises(RuntimeError, match=r"z_clean must have the shape of z_mix"):
        op(logits, z_mix, z_clean[:, :2], labels, draw.perm, draw.lam, 0.0, 1.0, True)
    with pytest.raises(RuntimeError, match=r"logits must have shape \(4, N\)"):
        op(logits[:3], z_mix, z_clean, labels, draw.perm, draw.lam, 0.0, 1.0, True)
    with pytest.raises(RuntimeError, match=r"lam must have shape \[4\]"):
        op(logits, z_mix, z_clean, labels, draw.perm, draw.lam[:3], 0.0, 1.0, True)
    with pytest.raises(RuntimeError, match=r"labels must be int64 or int32"):
        op(logits, z_mix, z_clean, labels.float(), draw.perm, draw.lam, 0.0, 1.0, True)


def test_opcheck_of_the_forward_and_backward_ops():
    gen = torch.Generator().manual_seed(8)
    draw = _elem_draw(5, gen)
    cases = ((torch.float32, True, True), (torch.bfloat16, True, True), (torch.float16, False, False))
    for dtype, has_sem, grad in cases:
        logits, z_mix, z_clean, labels = _problem(5, 11, 6, dtype, gen)
        logits, z_mix, z_clean = (t.requires_grad_(grad) for t in (logits, z_mix, z_clean))
        args = (logits, z_mix, z_clean if has_sem else None, labels, draw.perm, draw.lam, 0.1, 0.7, has_sem)
        torch.library.opcheck(torch.ops.sem_fast_ext.sem_loss.default, args)
    logits, z_mix, z_clean, labels = _problem(5, 11, 6, torch.bfloat16, gen)
    lse = torch.logsumexp(logits.float(), dim=1)
    scalar = torch.tensor(0.5)
    torch.library.opcheck(
        torch.ops.sem_fast_ext.mixed_ce_backward.default, (scalar, logits, labels, draw.perm, draw.lam, lse, 0.1)
    )
    for with_clean, z_clean_dtype in ((True, torch.bfloat16), (False, torch.bfloat16), (True, torch.float32)):
        args = (scalar, z_mix, z_clean.to(z_clean_dtype), draw.perm, draw.lam, True, with_clean)
        torch.library.opcheck(torch.ops.sem_fast_ext.sem_distance_backward.default, args)


def test_compiled_with_fullgraph_matches_eager():
    """The fake kernels and registered autograd let torch.compile trace the op without a break."""
    gen = torch.Generator().manual_seed(10)
    leaves = [t.requires_grad_(True) for t in _problem(5, 7, 9, torch.float32, gen)[:3]]
    labels = torch.randint(0, 7, (5,), generator=gen)
    draw, cfg = _elem_draw(5, gen), SEMConfig(detach_target=False, label_smoothing=0.1)

    def loss_fn(logits, z_mix, z_clean):
        return ext.sem_loss_unchecked(logits, z_mix, z_clean, labels, draw, cfg)[0]

    compiled = torch.compile(loss_fn, fullgraph=True, backend="aot_eager")
    got, expected = compiled(*leaves), loss_fn(*leaves)
    assert_close(got, expected, name="loss", **TOL32)
    got_grads, expected_grads = torch.autograd.grad(got, leaves), torch.autograd.grad(expected, leaves)
    for name, g, e in zip(("d logits", "d z_mix", "d z_clean"), got_grads, expected_grads):
        assert_close(g, e, name=name, **TOL32)


@settings(max_examples=30, deadline=None, database=None)
@given(data=st.data())
def test_property_random_problems_match_the_reference(data):
    B = data.draw(st.integers(1, 9))
    K = data.draw(st.one_of(st.integers(1, 40), st.integers(900, 1100)))
    D = data.draw(st.integers(1, 40))
    dtype = data.draw(st.sampled_from(DTYPES))
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31 - 1)))
    layout = data.draw(st.sampled_from(["contiguous", "strided"]))
    labels_dtype = data.draw(st.sampled_from([torch.int64, torch.int32]))
    logits, z_mix, z_clean, labels = _problem(B, K, D, dtype, gen, layout=layout, labels_dtype=labels_dtype)
    cfg = SEMConfig(
        mix=data.draw(st.sampled_from(["mixup", "cutmix", "switch"])),
        lam_mode=data.draw(st.sampled_from(["batch", "elem"])),
        pairing=data.draw(st.sampled_from(["perm", "flip"])),
        gamma=data.draw(st.floats(0.0, 3.0)),
        sem_reduction=data.draw(st.sampled_from(["mean", "sum"])),
        detach_target=data.draw(st.booleans()),
        label_smoothing=data.draw(st.sampled_from([0.0, 0.1, 0.5])),
    )
    draw = sample_draw(B, 8, 8, cfg, device="cpu", generator=gen)
    z_clean = z_clean if data.draw(st.booleans()) else None
    _check_against_reference(logits, z_mix, z_clean, labels, draw, cfg)
