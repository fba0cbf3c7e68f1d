"""The reference path against hand computations (plain Python floats) and gradcheck in float64; bad
values (memory-safe, NaN); contracts (a -inf logit, float64, fresh outputs in the requested layout)."""

import math

import pytest
import torch
import torch.nn.functional as F

from sem_fast import MixDraw, SEMConfig, fused_sem_step, mix_images, sem_loss
from sem_fast import reference as ref
from sem_fast.draws import AugmentDraw
from tests.utils import TinyNet


def _draw(perm, lam, box=None, is_cutmix=None):
    B = len(perm)
    return MixDraw(
        perm=torch.tensor(perm),
        lam=torch.tensor(lam, dtype=torch.float32),
        box=torch.tensor(box if box is not None else [[0, 0, 0, 0]] * B, dtype=torch.int32),
        is_cutmix=torch.tensor(is_cutmix if is_cutmix is not None else [False] * B),
    )


LOGITS = [[2.0, -1.0, 0.5], [0.1, 0.3, -0.7], [1.5, 1.5, -2.0]]
LABELS = [0, 2, 1]
PERM = [2, 0, 1]
Z_MIX = [[0.5, -1.0], [2.0, 0.25], [-0.75, 1.0]]
Z_CLEAN = [[1.0, 0.0], [0.5, -0.5], [-1.0, 2.0]]


def _hand_ce(lam, eps):
    total = 0.0
    for b, row in enumerate(LOGITS):
        logz = math.log(sum(math.exp(v) for v in row))
        logp = [v - logz for v in row]
        K = len(row)
        target = [eps / K] * K
        target[LABELS[b]] += (1 - eps) * lam[b]
        target[LABELS[PERM[b]]] += (1 - eps) * (1 - lam[b])
        total += -sum(t * lp for t, lp in zip(target, logp))
    return total / len(LOGITS)


def _hand_sem(lam, reduction):
    sq = 0.0
    for b in range(len(Z_MIX)):
        for d in range(len(Z_MIX[0])):
            t = lam[b] * Z_CLEAN[b][d] + (1 - lam[b]) * Z_CLEAN[PERM[b]][d]
            sq += (Z_MIX[b][d] - t) ** 2
    return sq / (len(Z_MIX) * len(Z_MIX[0])) if reduction == "mean" else sq / len(Z_MIX)


@pytest.mark.parametrize("lam", [[0.0] * 3, [1.0] * 3, [0.3] * 3, [0.3, 1.0, 0.0]])
@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_sem_loss_equals_hand_computation(lam, eps, reduction):
    cfg = SEMConfig(gamma=0.7, label_smoothing=eps, sem_reduction=reduction)
    loss, ce, sem = ref.sem_loss(
        torch.tensor(LOGITS), torch.tensor(Z_MIX), torch.tensor(Z_CLEAN), torch.tensor(LABELS), _draw(PERM, lam), cfg
    )
    assert ce.item() == pytest.approx(_hand_ce(lam, eps), rel=1e-6)
    assert sem.item() == pytest.approx(_hand_sem(lam, reduction), rel=1e-6)
    assert loss.item() == pytest.approx(_hand_ce(lam, eps) + 0.7 * _hand_sem(lam, reduction), rel=1e-6)
    assert loss.dtype == ce.dtype == sem.dtype == torch.float32 and loss.shape == ()


def test_without_clean_features_the_sem_term_is_zero_and_loss_is_the_mixed_ce():
    loss, ce, sem = ref.sem_loss(
        torch.tensor(LOGITS), torch.tensor(Z_MIX), None, torch.tensor(LABELS), _draw(PERM, [0.3] * 3), SEMConfig()
    )
    assert sem.item() == 0.0 and loss.item() == pytest.approx(_hand_ce([0.3] * 3, 0.0), rel=1e-6)


@pytest.mark.parametrize("detach", [True, False])
def test_detach_target_controls_whether_gradients_reach_the_clean_pass(detach):
    z_mix = torch.tensor(Z_MIX, requires_grad=True)
    z_clean = torch.tensor(Z_CLEAN, requires_grad=True)
    lam = [0.3, 0.6, 0.9]
    loss, _, _ = ref.sem_loss(
        torch.tensor(LOGITS), z_mix, z_clean, torch.tensor(LABELS), _draw(PERM, lam), SEMConfig(detach_target=detach)
    )
    loss.backward()
    # d/dz_mix of mean((z_mix - t)^2) = 2 (z_mix - t) / (B D); d/dz_clean gathers -that * lam
    # from its own row and * (1 - lam) from the row whose partner it is.
    t = [[lam[b] * Z_CLEAN[b][d] + (1 - lam[b]) * Z_CLEAN[PERM[b]][d] for d in range(2)] for b in range(3)]
    g_mix = [[2 * (Z_MIX[b][d] - t[b][d]) / 6 for d in range(2)] for b in range(3)]
    torch.testing.assert_close(z_mix.grad, torch.tensor(g_mix))
    if detach:
        assert z_clean.grad is None
    else:
        g_clean = [[0.0, 0.0] for _ in range(3)]
        for b in range(3):
            for d in range(2):
                g_clean[b][d] -= lam[b] * g_mix[b][d]
                g_clean[PERM[b]][d] -= (1 - lam[b]) * g_mix[b][d]
        torch.testing.assert_close(z_clean.grad, torch.tensor(g_clean))


IMG = torch.arange(2 * 1 * 2 * 3, dtype=torch.float32).view(2, 1, 2, 3)  # (B, C, H, W) float


@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0])
def test_mixup_is_a_per_sample_lerp_with_the_partner(lam):
    x_clean, x_mix = ref.mix_images(IMG, _draw([1, 0], [lam, lam]), SEMConfig(channels_last=False))
    assert torch.equal(x_clean, IMG)
    for b, j in ((0, 1), (1, 0)):
        for h in range(2):
            for w in range(3):
                expected = lam * IMG[b, 0, h, w].item() + (1 - lam) * IMG[j, 0, h, w].item()
                assert x_mix[b, 0, h, w].item() == pytest.approx(expected, abs=1e-6)


def test_cutmix_pastes_the_partner_inside_the_box_only():
    box = [[0, 1, 1, 3], [0, 0, 0, 0]]  # sample 0 takes rows [0, 1) x cols [1, 3) from sample 1
    _, x_mix = ref.mix_images(IMG, _draw([1, 0], [4 / 6, 1.0], box, [True, True]), SEMConfig())
    expected = IMG.clone()
    expected[0, :, 0:1, 1:3] = IMG[1, :, 0:1, 1:3]
    assert torch.equal(x_mix, expected)


def test_cutmix_with_a_full_image_box_gives_the_partner():
    _, x_mix = ref.mix_images(IMG, _draw([1, 0], [0.0, 0.0], [[0, 2, 0, 3]] * 2, [True, True]), SEMConfig())
    assert torch.equal(x_mix, IMG[[1, 0]])


def test_uint8_input_is_normalized_per_channel_and_returned_channels_last():
    images = torch.tensor([[[[0, 51, 255]]]], dtype=torch.uint8)  # (1, 1, 1, 3) NHWC
    cfg = SEMConfig(mean=(0.0, 0.2, 0.5), std=(1.0, 0.5, 0.25), mix="none")
    x_clean, x_mix = ref.mix_images(images, _draw([0], [1.0]), cfg)
    assert x_clean.shape == (1, 3, 1, 1) and x_mix is x_clean
    torch.testing.assert_close(x_clean.flatten(), torch.tensor([0.0, (0.2 - 0.2) / 0.5, (1.0 - 0.5) / 0.25]))
    big = torch.zeros(2, 4, 5, 3, dtype=torch.uint8)
    assert ref.mix_images(big, _draw([1, 0], [0.5, 0.5]), SEMConfig())[1].is_contiguous(memory_format=torch.channels_last)


def test_out_dtype_casts_both_outputs():
    x_clean, x_mix = ref.mix_images(IMG, _draw([1, 0], [0.5, 0.5]), SEMConfig(out_dtype=torch.bfloat16))
    assert x_clean.dtype == x_mix.dtype == torch.bfloat16


@pytest.mark.parametrize("mode", ["zeros", "reflect"])
def test_augment_crops_with_padding_and_flips_each_sample(mode):
    images = torch.randint(0, 256, (3, 5, 6, 3), dtype=torch.uint8)
    cfg = SEMConfig(crop_padding=2, padding_mode=mode, mix="none", channels_last=False)
    aug = AugmentDraw(offset=torch.tensor([[2, 2], [0, 4], [1, 3]], dtype=torch.int32), flip=torch.tensor([False, True, True]))
    x_clean, _ = ref.mix_images(images, _draw([0, 1, 2], [1.0] * 3), cfg, augment=aug)
    x = ref.normalize(images, cfg)
    black = ref.normalize(torch.zeros(1, 1, 1, 3, dtype=torch.uint8), cfg).view(3)
    assert torch.equal(x_clean[0], x[0])  # offset (p, p), no flip: identity
    for b in (1, 2):
        dy, dx = aug.offset[b].tolist()
        for i in range(5):
            for j in range(6):
                jj = 5 - j if aug.flip[b] else j
                r, c = i + dy - 2, jj + dx - 2  # position in the unpadded image
                if mode == "reflect":
                    r, c = abs(r) if r < 5 else 8 - r, abs(c) if c < 6 else 10 - c
                    expected = x[b, :, r, c]
                else:
                    expected = x[b, :, r, c] if 0 <= r < 5 and 0 <= c < 6 else black
                assert torch.equal(x_clean[b, :, i, j], expected), (b, i, j)


def test_augmented_partner_is_mixed_in():
    images = torch.randint(0, 256, (2, 4, 4, 3), dtype=torch.uint8)
    cfg = SEMConfig(hflip=True)
    aug = AugmentDraw(offset=torch.zeros(2, 2, dtype=torch.int32), flip=torch.tensor([False, True]))
    x_clean, x_mix = ref.mix_images(images, _draw([1, 0], [0.25, 0.25]), cfg, augment=aug)
    torch.testing.assert_close(x_mix[0], 0.25 * x_clean[0] + 0.75 * x_clean[1])
    assert torch.equal(x_clean[1], ref.normalize(images, cfg)[1].flip(-1))


def test_reference_loss_gradients_pass_gradcheck_in_float64():
    g = torch.Generator().manual_seed(0)
    B, K, D = 4, 5, 3
    logits = torch.randn(B, K, dtype=torch.float64, generator=g, requires_grad=True)
    z_mix = torch.randn(B, D, dtype=torch.float64, generator=g, requires_grad=True)
    z_clean = torch.randn(B, D, dtype=torch.float64, generator=g, requires_grad=True)
    labels = torch.tensor([0, 4, 2, 2])
    draw = _draw([2, 3, 0, 1], [0.3, 0.8, 0.0, 1.0])
    for cfg in (SEMConfig(detach_target=False, label_smoothing=0.1), SEMConfig(detach_target=False, sem_reduction="sum")):
        assert torch.autograd.gradcheck(
            lambda a, b, c: ref.sem_loss(a, b, c, labels, draw, cfg), (logits, z_mix, z_clean)
        )


def test_reference_mix_gradients_pass_gradcheck_in_float64():
    x = torch.randn(3, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    draw = _draw([2, 0, 1], [0.3, 0.75, 0.5], [[0, 0, 0, 0], [1, 3, 0, 2], [0, 0, 0, 0]], [False, True, False])
    aug = AugmentDraw(offset=torch.tensor([[0, 1], [2, 2], [1, 0]], dtype=torch.int32), flip=torch.tensor([True, False, True]))
    for cfg, a in ((SEMConfig(channels_last=False), None), (SEMConfig(crop_padding=1, padding_mode="reflect"), aug)):
        assert torch.autograd.gradcheck(lambda t: ref.mix_images(t, draw, cfg, a), (x,))


# --- bad values: memory-safe and NaN, without a host sync (the module docstring's list) ----------


def _loss_leaves():
    return [torch.tensor(t, requires_grad=True) for t in (LOGITS, Z_MIX, Z_CLEAN)]


def test_a_label_outside_the_classes_gives_nan_targets_for_its_sample_and_whoever_pairs_with_it():
    for bad in (3, -1, 2**40):
        labels = torch.tensor([0, bad, 1])  # sample 2 pairs with sample 1 (PERM[2] == 1)
        targets = ref.mixed_targets(labels, _draw(PERM, [0.3] * 3), 3, 0.0)
        assert targets[0].isfinite().all() and targets[1:].isnan().all()
        logits, z_mix, z_clean = _loss_leaves()
        loss, ce, sem = ref.sem_loss(logits, z_mix, z_clean, labels, _draw(PERM, [0.3] * 3), SEMConfig())
        assert loss.isnan() and ce.isnan() and sem.isfinite()
        (d_logits,) = torch.autograd.grad(loss, logits)
        assert d_logits[0].isfinite().all() and d_logits[1:].isnan().all()


@pytest.mark.parametrize("partner", [2, -1, 2**40])
def test_a_partner_outside_the_batch_is_read_as_nan(partner):
    """Sample 0 (mixup) and sample 1 (CutMix, box rows [0, 1) x cols [1, 3)) have partner
    ``partner``; sample 0 of a batch of 2 is nobody's partner. Negative indices do not wrap."""
    draw = _draw([partner, partner], [0.5, 4 / 6], [[0, 0, 0, 0], [0, 1, 1, 3]], [False, True])
    x = IMG.clone().requires_grad_(True)
    _, x_mix = ref.mix_images(x, draw, SEMConfig(channels_last=False))
    assert x_mix[0].isnan().all()
    inside = ref.box_mask(draw.box, 2, 3)[1]
    assert x_mix[1][inside.expand_as(x_mix[1])].isnan().all()
    assert torch.equal(x_mix[1][~inside.expand_as(x_mix[1])], IMG[1][~inside.expand_as(IMG[1])])
    (d_x,) = torch.autograd.grad(x_mix[1][~inside.expand_as(x_mix[1])].sum(), x)
    assert d_x.isfinite().all()  # nothing flows back through the masked read
    logits, z_mix, z_clean = (t[:2] for t in _loss_leaves())
    loss, ce, sem = ref.sem_loss(logits, z_mix, z_clean, torch.tensor([0, 2]), draw, SEMConfig(detach_target=False))
    assert loss.isnan() and ce.isnan() and sem.isnan()


def test_a_crop_offset_outside_the_padding_gives_a_nan_sample_and_a_nan_gradient():
    cfg = SEMConfig(crop_padding=1, mix="none", channels_last=False)
    x = torch.randn(4, 2, 3, 3, requires_grad=True)
    offset = torch.tensor([[0, 0], [3, 0], [0, -1], [2, 2]], dtype=torch.int32)  # 2 * padding = 2
    augment = AugmentDraw(offset, torch.zeros(4, dtype=torch.bool))
    x_clean, _ = ref.mix_images(x, _draw([0, 1, 2, 3], [1.0] * 4), cfg, augment)
    assert x_clean[[0, 3]].isfinite().all() and x_clean[[1, 2]].isnan().all()
    (d_x,) = torch.autograd.grad(x_clean.sum(), x)
    assert d_x[[0, 3]].isfinite().all() and d_x[[1, 2]].isnan().all()


def test_a_perm_that_is_not_a_permutation_gives_a_nan_loss_and_nan_gradients():
    duplicate = [2, 0, 0]  # sample 1 is nobody's partner
    logits, z_mix, z_clean = _loss_leaves()
    cfg = SEMConfig(detach_target=False)
    loss, ce, sem = ref.sem_loss(logits, z_mix, z_clean, torch.tensor(LABELS), _draw(duplicate, [0.3] * 3), cfg)
    assert loss.isnan() and ce.isnan() and sem.isnan()
    assert all(g.isnan().all() for g in torch.autograd.grad(loss, (logits, z_mix, z_clean)))
    assert not ref.is_permutation(torch.tensor(duplicate)) and ref.is_permutation(torch.tensor(PERM))
    # The mix itself is defined for any partners inside the batch.
    _, x_mix = ref.mix_images(IMG.repeat(2, 1, 1, 1)[:3], _draw(duplicate, [0.25] * 3), SEMConfig())
    x = IMG.repeat(2, 1, 1, 1)[:3]
    torch.testing.assert_close(x_mix, 0.25 * x + 0.75 * x[duplicate])


# --- contracts: -inf logits, float64, fresh outputs in the requested layout --------------------


@pytest.mark.parametrize("lam", [1.0, 0.3])
def test_a_class_masked_with_minus_inf_adds_nothing_unless_a_target_weighs_it(lam):
    """As ``F.cross_entropy``: a finite loss and gradient when no target puts weight on the
    masked class; with label smoothing every class has weight, so the loss is inf."""
    logits = torch.tensor(LOGITS)
    logits[:, 1] = -math.inf  # class 1 is nobody's label
    labels = torch.tensor([0, 2, 2])
    draw = _draw(PERM, [lam] * 3)
    leaf = logits.clone().requires_grad_(True)
    _, ce, _ = ref.sem_loss(leaf, torch.tensor(Z_MIX), None, labels, draw, SEMConfig())
    expected = lam * F.cross_entropy(logits, labels) + (1 - lam) * F.cross_entropy(logits, labels[PERM])
    torch.testing.assert_close(ce, expected)
    (d_logits,) = torch.autograd.grad(ce, leaf)
    assert d_logits.isfinite().all() and (d_logits[:, 1] == 0).all()
    smoothed = ref.sem_loss(logits, torch.tensor(Z_MIX), None, labels, draw, SEMConfig(label_smoothing=0.1))[1]
    assert smoothed == math.inf == F.cross_entropy(logits, labels, label_smoothing=0.1)


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_float64_input_gives_the_hand_computation_to_float64_precision(eps):
    lam = [0.25, 0.5, 1.0]  # exact in float32, the dtype of draw.lam
    cfg = SEMConfig(gamma=0.7, label_smoothing=eps)
    as64 = [torch.tensor(t, dtype=torch.float64) for t in (LOGITS, Z_MIX, Z_CLEAN)]
    loss, ce, sem = ref.sem_loss(*as64, torch.tensor(LABELS), _draw(PERM, lam), cfg)
    assert loss.dtype == ce.dtype == sem.dtype == torch.float64
    assert ce.item() == pytest.approx(_hand_ce(lam, eps), rel=1e-13)
    assert sem.item() == pytest.approx(_hand_sem(lam, "mean"), rel=1e-13)


def test_float64_runs_through_the_public_ops_and_the_step_on_the_reference():
    cfg = SEMConfig(backend="reference")
    x = IMG.double()
    draw = _draw([1, 0], [0.25, 0.25])
    x_clean, x_mix = mix_images(x, draw, cfg)
    assert x_clean.dtype == x_mix.dtype == torch.float64
    torch.testing.assert_close(x_mix, 0.25 * x + 0.75 * x[[1, 0]])
    as64 = [torch.tensor(t, dtype=torch.float64) for t in (LOGITS, Z_MIX, Z_CLEAN)]
    loss = sem_loss(*as64, torch.tensor(LABELS), _draw(PERM, [0.3] * 3), cfg)[0]
    assert loss.dtype == torch.float64
    out = fused_sem_step(TinyNet(in_channels=1).double(), x, torch.tensor([0, 9]), cfg, draw=draw)
    assert out.loss.dtype == torch.float64 and out.loss.isfinite()


@pytest.mark.parametrize("kind", ["float32", "float32_channels_last", "uint8"])
@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("mix", ["mixup", "none"])
def test_mix_returns_new_tensors_in_the_requested_memory_format(kind, channels_last, mix):
    x = torch.randn(2, 3, 4, 5)
    images = {
        "float32": x,
        "float32_channels_last": x.to(memory_format=torch.channels_last),
        "uint8": torch.randint(0, 256, (2, 4, 5, 3), dtype=torch.uint8),
    }[kind]
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    cfg = SEMConfig(channels_last=channels_last, mix=mix)
    x_clean, x_mix = ref.mix_images(images, _draw([1, 0], [0.5, 0.5]), cfg)
    for out in (x_clean, x_mix):
        assert out.is_contiguous(memory_format=fmt)
        assert out.untyped_storage().data_ptr() != images.untyped_storage().data_ptr()
    assert (x_mix is x_clean) == (mix == "none")
