"""Every fast backend's SEM loss op (``backend`` fixture: ``'triton'`` and ``'native'``, on each
device they run on) against the reference: loss and gradients in fp32, bf16 and fp16, odd shapes,
edge draws, many classes, logits up to +-1e4 and masked (-inf) classes (eager and compiled),
random problems (hypothesis), opcheck, the double-backward error, bad input, out-of-range values
and a perm that is not a permutation through the unchecked entry point, and the launches per
direction. torch.compile of each backend: ``test_triton_backend.py`` and
``test_native_backend.py``.

On CPU the Triton kernels run in Triton's interpreter (the root ``conftest.py`` sets
TRITON_INTERPRET=1). Inputs are built on the CPU and moved to the backend's device.

``truth`` is the reference evaluated in float64 on the same (rounded) inputs: with many classes
the float32 reference's own logsumexp error reaches 1e-5 (measured: 1.1e-5 on a gradient at
K = 65539 against 2.9e-7 for the Triton kernel), so float32 would not be a fair yardstick.
Tolerances: fp32 within 1e-5 relative of ``truth`` (``TOL32``), plus two fp32 ulps at 1 absolute:
softmax gradients that cancel to ~0 (``p - 1`` for confident logits) carry that error in any fp32
computation. bf16/fp16 inputs: flash-attention's rule,
``max|fast - truth| <= 2 * max|plain - truth| + LOW_ATOL`` with ``plain`` the same loss computed
by plain PyTorch in that dtype. A gradient the backend returns in a low-precision input dtype
while the other inputs are fp32: within one rounding to that dtype of ``truth`` (``ROUNDED_TOL``).
Logits of magnitude 1e4: flash-attention's rule in every dtype (fp32 too: plain PyTorch's own fp32
error there is ~1e-3), with a floor of `LARGE_ULPS` fp32 ulps of the compared quantity's largest
value (room for a different summation order over the rows).
"""

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import sem_fast
import sem_fast.ops.triton.loss as triton_loss
from sem_fast import SEMConfig, sample_draw
from sem_fast import reference as ref
from tests.ops.cases import DTYPES, elem_draw, given_draw, plain_loss, problem, to_device
from tests.utils import assert_close, assert_low_precision_close, cuda_launches, triton_launches

TOL32 = dict(rtol=1e-5, atol=2**-22)
#: Room for fp32 summation-order differences in the fp32 loss values (which are O(1)).
LOW_ATOL = 1e-6
#: One rounding to bf16 (8 significant bits; fp16 has 11) is within 2**-8 relative.
ROUNDED_TOL = dict(rtol=2**-8, atol=1e-6)
#: Weights of (loss, ce, sem) in the scalar that is differentiated, so every output's gradient counts.
OUTPUT_WEIGHTS = (1.0, 0.5, 0.25)
#: Floor of the large-logit comparisons, in fp32 ulps (2**-23 relative) of the largest |truth|.
LARGE_ULPS = 4


def _check_against_reference(
    backend, logits, z_mix, z_clean, labels, draw, cfg, *, fast=None, truth_fn=ref.sem_loss, plain_fn=plain_loss,
    large=False,
):
    """Loss values and gradients (w.r.t. logits, z_mix, z_clean) of ``backend``'s op (or of
    ``fast``, a function with its signature) against the float64 ``truth_fn``, on the backend's
    device; ``large``: flash-attention's rule in every dtype, with the `LARGE_ULPS` floor."""
    logits, z_mix, z_clean, labels, draw = to_device(backend.device, logits, z_mix, z_clean, labels, draw)
    dtype = logits.dtype

    def run(fn, cast):
        inputs = [None if t is None else cast(t).detach().requires_grad_(True) for t in (logits, z_mix, z_clean)]
        outputs = fn(inputs[0], inputs[1], inputs[2], labels, draw, cfg)
        total = sum(w * o for w, o in zip(OUTPUT_WEIGHTS, outputs))
        used = [t for t in inputs if t is not None]
        return outputs, torch.autograd.grad(total, used, allow_unused=True)

    out, grads = run(fast or backend.sem_loss, lambda t: t)
    truth, truth_grads = run(truth_fn, lambda t: t.double())
    plain, plain_grads = run(plain_fn, lambda t: t)
    for o in out:
        assert o.dtype == torch.float32 and o.shape == () and o.device == logits.device
    names = ("loss", "ce", "sem", "d logits", "d z_mix", "d z_clean")
    for name, f, t, p in zip(names, (*out, *grads), (*truth, *truth_grads), (*plain, *plain_grads)):
        assert (f is None) == (t is None), f"{name}: gradient presence differs from the reference"
        if f is None:
            continue
        assert f.dtype == (torch.float32 if name in names[:3] else dtype), name
        f, t, p = f.cpu(), t.cpu(), p.cpu()
        if large:
            floor = LARGE_ULPS * 2**-23 * t.abs().max().item()
            assert_low_precision_close(f, t, p, atol=floor, name=name)
        elif dtype == torch.float32:
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


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cfg", CONFIGS.values(), ids=CONFIGS.keys())
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_loss_and_gradients_match_the_reference(backend, shape, cfg, dtype):
    B, K, D, layout = shape
    gen = torch.Generator().manual_seed(B * K + D)
    logits, z_mix, z_clean, labels = problem(B, K, D, dtype, gen, layout=layout)
    z_clean = None if cfg is CONFIGS["no_sem_term"] else z_clean
    _check_against_reference(backend, logits, z_mix, z_clean, labels, elem_draw(B, gen), cfg)


def test_lambda_zero_and_one_and_the_identity_permutation(backend):
    gen = torch.Generator().manual_seed(1)
    logits, z_mix, z_clean, labels = problem(4, 10, 17, torch.float32, gen)
    cfg = SEMConfig(detach_target=False, label_smoothing=0.1)
    for perm in (torch.tensor([2, 3, 0, 1]), torch.arange(4)):
        draw = given_draw(perm, [0.0, 1.0, 0.0, 1.0])
        _check_against_reference(backend, logits, z_mix, z_clean, labels, draw, cfg)


def test_confident_logits_keep_the_true_class_gradient(backend):
    """softmax -> 1 at the label: the -1 of the target must meet p in fp32, before rounding."""
    gen = torch.Generator().manual_seed(2)
    logits, z_mix, z_clean, labels = problem(6, 1000, 17, torch.float32, gen)
    logits[torch.arange(6), labels] += 30.0
    draw = given_draw(torch.arange(6), [1.0] * 6)
    for dtype in DTYPES:
        inputs = (t.to(dtype) for t in (logits, z_mix, z_clean))
        _check_against_reference(backend, *inputs, labels, draw, SEMConfig())


def test_many_classes_and_features_span_several_blocks(backend):
    """K and D above the Triton interpreter's tile (2**16) run the looped online-logsumexp path;
    the row maximum sits in the last block of row 0 (the running sum must be rescaled)."""
    gen = torch.Generator().manual_seed(3)
    logits, z_mix, z_clean, labels = problem(2, 2**16 + 3, 2**16 + 5, torch.float32, gen)
    logits[0, -2] = logits[1, 0] = 20.0
    cfg = SEMConfig(detach_target=False, label_smoothing=0.1)
    _check_against_reference(backend, logits, z_mix, z_clean, labels, elem_draw(2, gen), cfg)


def _compiled(backend, cfg):
    """The public ``sem_loss`` on ``backend`` with ``cfg`` under ``torch.compile(fullgraph=True)``
    (AOTAutograd with the fake kernels and the registered autograd; eager kernels, so that CPU
    runs stay fast), compiled afresh: no graph of another test is reused."""
    cfg = cfg.replace(backend=backend.name)
    torch._dynamo.reset()

    def loss(logits, z_mix, z_clean, labels, draw, _cfg):
        return sem_fast.sem_loss(logits, z_mix, z_clean, labels, draw, cfg)

    return torch.compile(loss, fullgraph=True, backend="aot_eager")


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_logits_of_magnitude_1e4_keep_their_accuracy(backend, dtype, compiled):
    """Everything relative to the row max, as F.cross_entropy does: within 2x plain PyTorch's own
    error in the same dtype (issue 14: an absolute fp32 logsumexp broke this from +-30 on)."""
    gen = torch.Generator().manual_seed(13)
    B, K, D = 6, 1000, 17
    logits, z_mix, z_clean, labels = problem(B, K, D, dtype, gen)
    logits = (1e4 * (2 * torch.rand(B, K, generator=gen) - 1)).to(dtype)
    logits[torch.arange(B), labels] = 1e4  # the label's logit is the max: softmax -> one-hot
    cfg = SEMConfig(gamma=0.5, detach_target=False, label_smoothing=0.1)
    fast = _compiled(backend, cfg) if compiled else None
    _check_against_reference(backend, logits, z_mix, z_clean, labels, elem_draw(B, gen), cfg, fast=fast, large=True)


def _index_target_loss(logits, z_mix, z_clean, labels, draw, cfg):
    """The mixed CE (no smoothing, no SEM term) by ``F.cross_entropy`` with class-index targets,
    which stays finite where a class that no target names has a -inf logit."""
    ce = draw.lam * F.cross_entropy(logits, labels, reduction="none")
    ce = (ce + (1 - draw.lam) * F.cross_entropy(logits, labels[draw.perm], reduction="none")).mean()
    return ce, ce, torch.zeros((), dtype=ce.dtype, device=ce.device)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_masked_minus_inf_classes_give_the_finite_cross_entropy(backend, dtype, compiled):
    """Classes masked with a -inf logit that no target names (label smoothing 0): F.cross_entropy
    is finite, and so are the loss and its gradient, 0 at the masked classes."""
    gen = torch.Generator().manual_seed(14)
    B, K = 5, 40
    logits, z_mix, _, _ = problem(B, K, 8, dtype, gen)
    labels = torch.randint(0, K // 2, (B,), generator=gen)
    logits[:, K // 2 :: 3] = float("-inf")
    cfg = SEMConfig(label_smoothing=0.0)
    fast = _compiled(backend, cfg) if compiled else None
    _check_against_reference(
        backend, logits, z_mix, None, labels, elem_draw(B, gen), cfg,
        fast=fast, truth_fn=_index_target_loss, plain_fn=_index_target_loss,
    )  # fmt: skip
    logits, z_mix, labels, draw = to_device(backend.device, logits, z_mix, labels, elem_draw(B, gen))
    logits.requires_grad_(True)
    (d_logits,) = torch.autograd.grad(backend.sem_loss(logits, z_mix, None, labels, draw, cfg)[0], logits)
    assert (d_logits[:, K // 2 :: 3] == 0).all()


def test_int32_labels_and_mixed_feature_dtypes(backend):
    """z_mix and z_clean in different dtypes are upcast to fp32 together (lossless); each
    gradient comes back in its input's dtype."""
    gen = torch.Generator().manual_seed(4)
    logits, z_mix, z_clean, labels = problem(5, 7, 9, torch.float32, gen, labels_dtype=torch.int32)
    _check_against_reference(backend, logits, z_mix, z_clean, labels, elem_draw(5, gen), SEMConfig())
    cfg = SEMConfig(detach_target=False)
    inputs = [logits, z_mix.to(torch.bfloat16), z_clean.to(torch.float16)]
    labels, draw, *inputs = to_device(backend.device, labels, elem_draw(5, gen), *inputs)
    got_in = [t.clone().requires_grad_(True) for t in inputs]
    truth_in = [t.double().requires_grad_(True) for t in inputs]
    got, truth = backend.sem_loss(*got_in, labels, draw, cfg), ref.sem_loss(*truth_in, labels, draw, cfg)
    for name, g, t in zip(("loss", "ce", "sem"), got, truth):
        assert_close(g, t, name=name, **TOL32)
    got_grads, truth_grads = torch.autograd.grad(got[0], got_in), torch.autograd.grad(truth[0], truth_in)
    for name, g, t, x in zip(("d logits", "d z_mix", "d z_clean"), got_grads, truth_grads, inputs):
        assert g.dtype == x.dtype, name
        assert_close(g, t, name=name, **(TOL32 if x.dtype == torch.float32 else ROUNDED_TOL))


@pytest.mark.parametrize("used", ["ce", "sem"])
def test_gradient_of_one_output_alone(backend, used):
    """Only ``ce`` (or ``sem``) is differentiated: the other outputs' gradients are None."""
    gen = torch.Generator().manual_seed(5)
    logits, z_mix, z_clean, _ = problem(5, 7, 9, torch.float32, gen)
    labels, draw, cfg = torch.randint(0, 7, (5,), generator=gen), elem_draw(5, gen), SEMConfig(detach_target=False)
    labels, draw, *inputs = to_device(backend.device, labels, draw, logits, z_mix, z_clean)
    inputs = [t.requires_grad_(True) for t in inputs]
    index = 1 if used == "ce" else 2
    got = torch.autograd.grad(backend.sem_loss(*inputs, labels, draw, cfg)[index], inputs, allow_unused=True)
    expected = torch.autograd.grad(ref.sem_loss(*inputs, labels, draw, cfg)[index], inputs, allow_unused=True)
    for g, e in zip(got, expected):
        assert (g is None) == (e is None)
        if g is not None:
            assert_close(g, e, **TOL32)


def test_without_clean_features_sem_is_zero_and_loss_is_ce(backend):
    gen = torch.Generator().manual_seed(6)
    logits, z_mix, _, labels = problem(3, 5, 4, torch.float32, gen)
    logits, z_mix, labels, draw = to_device(backend.device, logits, z_mix, labels, elem_draw(3, gen))
    loss, ce, sem = backend.sem_loss(logits, z_mix.requires_grad_(True), None, labels, draw, SEMConfig())
    assert sem.item() == 0.0 and torch.equal(loss, ce)
    assert torch.autograd.grad(loss, z_mix, allow_unused=True) == (None,)


def test_out_of_range_labels_and_perm_give_nan_not_a_crash(backend):
    """Value checks are skipped under torch.compile; the kernels must stay memory-safe."""
    gen = torch.Generator().manual_seed(7)
    logits, z_mix, z_clean, labels = problem(4, 5, 3, torch.float32, gen)
    draw, cfg = elem_draw(4, gen), SEMConfig(detach_target=False)
    cases = (
        (torch.tensor([0, 5, 1, 2]), draw),
        (torch.tensor([-1, 0, 1, 2]), draw),
        (labels, draw._replace(perm=torch.tensor([1, 2, 3, 4]))),
    )
    leaves = [t.requires_grad_(True) for t in to_device(backend.device, logits, z_mix, z_clean)]
    for bad_labels, bad_draw in cases:
        bad_labels, bad_draw = to_device(backend.device, bad_labels, bad_draw)
        loss, ce, sem = backend.sem_loss_unchecked(*leaves, bad_labels, bad_draw, cfg)
        assert loss.isnan() and ce.isnan()
        d_logits, _, d_clean = torch.autograd.grad(loss, leaves)
        assert d_logits.isnan().any()  # in the rows that use the bad label
    assert sem.isnan() and d_clean.isnan().any()  # the bad perm also breaks the SEM target


NOT_PERMUTATIONS = {
    "one_repeated_entry": [1, 1, 3, 0],
    "all_the_same": [2, 2, 2, 2],
    "repeat_and_out_of_range": [0, 0, 4, 1],
}


@pytest.mark.parametrize("detach_target", [True, False], ids=["detached", "through_target"])
@pytest.mark.parametrize("perm", NOT_PERMUTATIONS.values(), ids=NOT_PERMUTATIONS.keys())
def test_perm_that_is_not_a_permutation_gives_nan_loss_and_nan_gradients(backend, perm, detach_target):
    """Values are unchecked under torch.compile, in CUDA graphs and through the unchecked entry
    point: a repeated partner must not give a finite loss (the decided behaviour, as in the
    reference: loss, ce and sem NaN, every gradient NaN; without the SEM term sem stays 0); the next
    call with a permutation is right again (nothing stale is left behind)."""
    gen = torch.Generator().manual_seed(11)
    logits, z_mix, z_clean, labels = problem(4, 5, 3, torch.float32, gen)
    draw, cfg = elem_draw(4, gen), SEMConfig(detach_target=detach_target)
    bad_draw = draw._replace(perm=torch.tensor(perm))
    leaves = [t.requires_grad_(True) for t in to_device(backend.device, logits, z_mix, z_clean)]
    for sem_term in (True, False):
        inputs = leaves if sem_term else leaves[:2] + [None]
        outputs = backend.sem_loss_unchecked(*inputs, *to_device(backend.device, labels, bad_draw), cfg)
        expected = ref.sem_loss(logits, z_mix, z_clean if sem_term else None, labels, bad_draw, cfg)
        assert [o.isnan().item() for o in outputs] == [e.isnan().item() for e in expected] == [True, True, sem_term]
        used = [t for t in inputs if t is not None]
        grads = torch.autograd.grad(sum(outputs), used, allow_unused=True)
        for g in grads:
            assert g is None or g.isnan().all()
    _check_against_reference(backend, logits, z_mix, z_clean, labels, draw, cfg)


def test_the_op_counts_a_repeated_perm_entry_in_every_program_layout(backend, monkeypatch):
    """The permutation check spans programs: the two rows that share a partner sit in different
    programs (Triton: one row per program here), in the first and the last."""
    if backend.name == "triton":
        monkeypatch.setattr(triton_loss, "INTERPRETER_TILE", 4)  # a tile of one row of K = 3 (4 lanes)
    gen = torch.Generator().manual_seed(12)
    logits, z_mix, z_clean, labels = to_device(backend.device, *problem(9, 3, 2, torch.float32, gen))
    perm, lam = to_device(backend.device, torch.tensor([8, 1, 2, 3, 4, 5, 6, 7, 8]), torch.full((9,), 0.5))
    loss, ce, sem, row_stats, _ = backend.ops.sem_loss(logits, z_mix, z_clean, labels, perm, lam, 1.0, 0.0, True)
    assert loss.isnan() and ce.isnan() and sem.isnan()
    assert row_stats[:, 0].isnan().all() and (row_stats[:, 1] == float("-inf")).all()


def _bad(**fields):
    gen = torch.Generator().manual_seed(0)
    logits, z_mix, z_clean, labels = problem(4, 5, 3, torch.float32, gen)
    args = dict(logits=logits, z_mix=z_mix, z_clean=z_clean, labels=labels, draw=elem_draw(4, gen), cfg=SEMConfig())
    return args | fields


def _draw_with(**fields):
    return elem_draw(4, torch.Generator())._replace(**fields)


#: name -> (arguments, error type, pattern of its message): the message names the argument.
BAD_INPUTS = {
    "int_logits": (_bad(logits=torch.zeros(4, 5, dtype=torch.int64)), TypeError, "logits must be"),
    "logits_wrong_batch": (_bad(logits=torch.zeros(3, 5)), ValueError, r"logits must have shape \(4, N\)"),
    "z_clean_shape_differs": (_bad(z_clean=torch.zeros(4, 4)), ValueError, "z_clean must have the shape of z_mix"),
    "float_labels": (_bad(labels=torch.zeros(4)), TypeError, "labels must be int64 or int32"),
    "label_out_of_range": (_bad(labels=torch.tensor([0, 1, 5, 2])), ValueError, r"labels must lie in \[0, 5\)"),
    "negative_label": (_bad(labels=torch.tensor([0, -1, 2, 2])), ValueError, "found -1"),
    "perm_not_a_permutation": (
        _bad(draw=_draw_with(perm=torch.zeros(4, dtype=torch.int64))), ValueError, "draw.perm must be a permutation"
    ),
    "lam_above_one": (_bad(draw=_draw_with(lam=torch.full((4,), 1.5))), ValueError, r"draw.lam must lie in \[0, 1\]"),
    "labels_on_meta": (_bad(labels=torch.zeros(4, dtype=torch.int64, device="meta")), ValueError, "labels is on meta"),
    "cfg_not_a_config": (_bad(cfg=None), TypeError, "cfg must be a SEMConfig"),
}


@pytest.mark.parametrize("args, error, message", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_raises_an_error_naming_the_argument(backend, args, error, message):
    names = ("logits", "z_mix", "z_clean", "labels", "draw")
    args = args | dict(zip(names, to_device(backend.device, *(args[name] for name in names))))
    with pytest.raises(error, match=message):
        backend.sem_loss(**args)


def test_opcheck_of_the_forward_and_backward_ops(backend):
    gen = torch.Generator().manual_seed(8)
    draw = to_device(backend.device, elem_draw(5, gen))[0]
    scalar = torch.tensor(0.5, device=backend.device)
    cases = ((torch.float32, True, True), (torch.bfloat16, True, True), (torch.float16, False, False))
    for dtype, has_sem, grad in cases:
        logits, z_mix, z_clean, labels = to_device(backend.device, *problem(5, 11, 6, dtype, gen))
        logits, z_mix, z_clean = (t.requires_grad_(grad) for t in (logits, z_mix, z_clean))
        z_clean = z_clean if has_sem else None
        args = (logits, z_mix, z_clean, labels, draw.perm, draw.lam, 0.7, 0.1, has_sem)
        torch.library.opcheck(backend.ops.sem_loss.default, args)
        row_stats, inv_perm = backend.ops.sem_loss(*args)[3:]
        inputs = [t.detach() if t is not None else None for t in (logits, z_mix, z_clean)]
        for grads, flags in (
            ((scalar, scalar, scalar), (True, has_sem, has_sem)),
            ((scalar, None, None), (True, False, has_sem)),
            ((None, scalar, None), (True, False, False)),
        ):
            saved = (row_stats, inv_perm)
            backward_args = (*grads, *inputs, labels, draw.perm, draw.lam, *saved, 0.7, 0.1, has_sem, *flags)
            torch.library.opcheck(backend.ops.sem_loss_backward.default, backward_args)


def test_double_backward_raises_an_error_naming_the_op_and_the_reference(backend):
    """A gradient penalty through ``d logits`` needs the gradient of the backward: the fast
    kernels have none, and say so instead of returning None or zeros."""
    gen = torch.Generator().manual_seed(9)
    logits, z_mix, z_clean, labels = to_device(backend.device, *problem(4, 5, 3, torch.float32, gen))
    draw = to_device(backend.device, elem_draw(4, gen))[0]
    logits.requires_grad_(True)
    loss = backend.sem_loss(logits, z_mix, z_clean, labels, draw, SEMConfig())[0]
    (d_logits,) = torch.autograd.grad(loss, logits, create_graph=True)
    with pytest.raises(RuntimeError, match=rf"sem_fast_{backend.name}::sem_loss has no double backward.*'reference'"):
        d_logits.square().sum().backward()


def test_double_backward_under_torch_compile_raises_too(backend):
    """Through a compiled loss, PyTorch's own error for a double backward through any compiled
    graph fires before the op's backward is reached (so it cannot name the op): still an error,
    never a silent None or zero."""
    gen = torch.Generator().manual_seed(10)
    logits, z_mix, z_clean, labels = to_device(backend.device, *problem(4, 5, 3, torch.float32, gen))
    draw = to_device(backend.device, elem_draw(4, gen))[0]
    logits.requires_grad_(True)
    loss = _compiled(backend, SEMConfig())(logits, z_mix, z_clean, labels, draw, None)[0]
    (d_logits,) = torch.autograd.grad(loss, logits, create_graph=True)
    with pytest.raises(RuntimeError, match="torch.compile with aot_autograd does not currently support double"):
        d_logits.square().sum().backward()


@settings(max_examples=30, deadline=None, database=None)
@given(data=st.data())
def test_property_random_problems_match_the_reference(backend, data):
    B = data.draw(st.integers(1, 9))
    K = data.draw(st.one_of(st.integers(1, 40), st.integers(900, 1100)))
    D = data.draw(st.integers(1, 40))
    dtype = data.draw(st.sampled_from(DTYPES))
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31 - 1)))
    layout = data.draw(st.sampled_from(["contiguous", "strided"]))
    labels_dtype = data.draw(st.sampled_from([torch.int64, torch.int32]))
    logits, z_mix, z_clean, labels = problem(B, K, D, dtype, gen, layout=layout, labels_dtype=labels_dtype)
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
    _check_against_reference(backend, logits, z_mix, z_clean, labels, draw, cfg)


# --- launches -----------------------------------------------------------------------------------

#: Kernel launches per direction, per fast backend: (forward, backward with a detached target,
#: backward through the target). Every one is a single fused kernel: the forward's last program
#: (block) reduces the rows and checks the permutation, the backward reads the forward's inverse
#: permutation.
LAUNCHES = {"triton": (1, 1, 1), "native": (1, 1, 1)}


def _launches(backend, fn) -> int:
    """Kernel launches of ``fn()``: Triton's by a launch counter (interpreter or GPU), the native
    CUDA kernels' by the profiler."""
    if backend.name == "triton":
        with triton_launches() as launches:
            fn()
        return launches.total()
    if backend.device.type != "cuda":
        pytest.skip("the native CPU kernels launch nothing")
    return cuda_launches(fn).total()


@pytest.mark.parametrize("detach_target", [True, False], ids=["detached", "through_target"])
def test_one_launch_forward_and_one_launch_backward(backend, detach_target):
    gen = torch.Generator().manual_seed(15)
    logits, z_mix, z_clean, labels = to_device(backend.device, *problem(37, 11, 9, torch.float32, gen))
    draw, cfg = to_device(backend.device, elem_draw(37, gen))[0], SEMConfig(detach_target=detach_target)
    leaves = [t.requires_grad_(True) for t in (logits, z_mix, z_clean)]
    backend.sem_loss_unchecked(*leaves, labels, draw, cfg)  # warm-up: compiles, makes the cached counter
    out, seed = [], torch.ones((), device=backend.device)  # a given seed: autograd launches no fill for it
    forward = _launches(backend, lambda: out.append(backend.sem_loss_unchecked(*leaves, labels, draw, cfg)))
    backward = _launches(backend, lambda: torch.autograd.grad(out[0][0], leaves, seed, allow_unused=True))
    expected = LAUNCHES[backend.name]
    assert (forward, backward) == (expected[0], expected[1] if detach_target else expected[2])


def _function_body(source: str, name: str) -> str:
    start = source.index(f"cudaError_t {name}(")
    return source[start : source.index("\n}\n", start)]


def test_native_cuda_launchers_launch_one_kernel_each():
    """Static count (no GPU here): each launcher of csrc/cuda/loss_kernels.cu holds one kernel
    launch, which its dtype dispatch runs once, and calls no other launcher (the GPU run of
    `test_one_launch_forward_and_one_launch_backward` counts them with the profiler)."""
    source = (Path(__file__).resolve().parents[2] / "csrc" / "cuda" / "loss_kernels.cu").read_text()
    for name in ("launch_sem_loss", "launch_sem_loss_backward"):
        body = _function_body(source, name)
        assert body.count("<<<") == 1, name
        assert not re.search(r"\blaunch_\w+\(", body.split("(", 1)[1]), name


def test_the_election_counter_is_left_at_zero(backend, monkeypatch):
    """The last program resets the counter it was elected by, so one cached counter serves every
    later launch on its stream (checked here with one counter reused on purpose, on a grid of 9
    programs and then of 1)."""
    if backend.name != "triton":
        pytest.skip("the Triton kernels' counter (the native one is in csrc/cuda/ops_cuda.cpp)")
    counter = torch.zeros(1, dtype=torch.int32, device=backend.device)
    monkeypatch.setattr(triton_loss, "election_counter", lambda device: counter)
    monkeypatch.setattr(triton_loss, "INTERPRETER_TILE", 4)
    gen = torch.Generator().manual_seed(16)
    for B, K in ((9, 3), (2, 4)):
        logits, z_mix, z_clean, labels = problem(B, K, 2, torch.float32, gen)
        draw = elem_draw(B, gen)
        got = backend.sem_loss_unchecked(logits, z_mix, z_clean, labels, draw, SEMConfig())
        assert counter.item() == 0
        truth = ref.sem_loss(logits.double(), z_mix.double(), z_clean.double(), labels, draw, SEMConfig())
        for g, t in zip(got, truth):
            assert_close(g, t, **TOL32)
