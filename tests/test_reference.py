"""The reference path against hand computations (plain Python floats) and gradcheck in float64."""

import math

import pytest
import torch

from sem_fast import MixDraw, SEMConfig
from sem_fast import reference as ref
from sem_fast.draws import AugmentDraw


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
