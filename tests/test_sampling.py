"""sample_draw / sample_augment: distributions, boxes, lambda correction, determinism, no host sync."""

import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from sem_fast import MixDraw, SEMConfig, sample_draw
from sem_fast.sampling import sample_augment


def _draw(B=64, H=32, W=32, seed=0, **cfg):
    return sample_draw(B, H, W, SEMConfig(**cfg), device="cpu", generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("alpha", [0.2, 1.0, 2.0])
def test_lambda_matches_beta_mean_and_variance(alpha):
    n = 40_000
    lam = _draw(B=n, alpha=alpha, lam_mode="elem").lam.double()
    var = 1.0 / (4.0 * (2.0 * alpha + 1.0))  # Beta(a, a): mean 1/2, variance 1 / (4 (2a + 1))
    # Standard errors: sqrt(var / n) for the mean; the variance estimate's with the Beta(a, a)
    # fourth moment, bounded here by sqrt(2 var^2 / n) * 2. Five standard errors: a false alarm
    # has probability < 1e-6.
    assert abs(lam.mean().item() - 0.5) < 5 * math.sqrt(var / n)
    assert abs(lam.var().item() - var) < 5 * 2 * math.sqrt(2 * var**2 / n)
    assert ((lam >= 0) & (lam <= 1)).all()


def test_small_alpha_gives_lambdas_near_zero_and_one_without_nan():
    lam = _draw(B=10_000, alpha=0.01, lam_mode="elem").lam
    assert torch.isfinite(lam).all()
    assert ((lam < 0.01) | (lam > 0.99)).float().mean() > 0.9


def test_batch_mode_shares_one_lambda_and_elem_mode_draws_one_per_sample():
    assert _draw(lam_mode="batch").lam.unique().numel() == 1
    assert _draw(lam_mode="elem").lam.unique().numel() > 32


@pytest.mark.parametrize("H, W", [(32, 32), (7, 9), (1, 1)])
@pytest.mark.parametrize("lam_mode", ["batch", "elem"])
def test_cutmix_boxes_lie_in_the_image_and_lambda_is_one_minus_box_area(H, W, lam_mode):
    d = _draw(B=512, H=H, W=W, mix="cutmix", lam_mode=lam_mode)
    y0, y1, x0, x1 = d.box.long().unbind(1)
    assert ((0 <= y0) & (y0 <= y1) & (y1 <= H) & (0 <= x0) & (x0 <= x1) & (x1 <= W)).all()
    expected = 1.0 - ((y1 - y0) * (x1 - x0)).float() / float(H * W)
    assert torch.equal(d.lam, expected)
    assert d.is_cutmix.all()


def test_cutmix_box_side_follows_sqrt_one_minus_lambda_before_clipping():
    d = _draw(B=2000, H=32, W=32, mix="cutmix", lam_mode="elem", correct_lam=False)
    y0, y1, x0, x1 = d.box.long().unbind(1)
    cut = (32 * torch.sqrt(1 - d.lam)).long()
    # The clipped box is never larger than the cut, and unclipped boxes (inside the image) are
    # exactly 2 * (cut // 2) wide, as in the CutMix reference code.
    assert ((y1 - y0) <= cut).all() and ((x1 - x0) <= cut).all()
    unclipped = (y0 > 0) & (y1 < 32) & (x0 > 0) & (x1 < 32)
    assert unclipped.sum() > 100
    assert ((y1 - y0)[unclipped] == 2 * (cut[unclipped] // 2)).all()


def test_without_lambda_correction_lambda_stays_the_beta_draw():
    corrected = _draw(B=256, mix="cutmix", lam_mode="elem", seed=3)
    raw = _draw(B=256, mix="cutmix", lam_mode="elem", seed=3, correct_lam=False)
    assert torch.equal(corrected.box, raw.box)
    assert not torch.equal(corrected.lam, raw.lam)


def test_mixup_samples_have_empty_boxes():
    d = _draw(mix="mixup")
    assert not d.is_cutmix.any() and (d.box == 0).all()


def test_switch_mixes_both_kinds_per_sample_in_elem_mode():
    d = _draw(B=1000, mix="switch", lam_mode="elem", switch_prob=0.3)
    frac = d.is_cutmix.float().mean().item()
    assert 0.2 < frac < 0.4
    assert (d.box[~d.is_cutmix] == 0).all()


def test_perm_is_a_permutation_and_flip_pairing_reverses_the_batch():
    d = _draw(B=37)
    assert torch.equal(d.perm.sort().values, torch.arange(37))
    assert torch.equal(_draw(B=5, pairing="flip").perm, torch.tensor([4, 3, 2, 1, 0]))


@pytest.mark.parametrize("cfg", [dict(mix="none"), dict(mix_prob=0.0), dict(mix="cutmix", mix_prob=0.0)])
def test_unmixed_batch_has_lambda_one_and_no_box(cfg):
    d = _draw(**cfg)
    assert (d.lam == 1).all() and (d.box == 0).all() and not d.is_cutmix.any()


def test_mix_prob_applies_per_sample_in_elem_mode():
    d = _draw(B=2000, lam_mode="elem", mix_prob=0.25, mix="cutmix")
    assert 0.2 < d.is_cutmix.float().mean().item() < 0.3
    assert (d.lam[~d.is_cutmix] == 1).all()


def test_same_seed_gives_identical_draws_and_another_seed_does_not():
    a, b, c = _draw(seed=7, mix="switch"), _draw(seed=7, mix="switch"), _draw(seed=8, mix="switch")
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a.perm, c.perm)


def test_draw_dtypes_and_shapes():
    d = _draw(B=6)
    assert isinstance(d, MixDraw)
    assert (d.perm.dtype, d.lam.dtype, d.box.dtype, d.is_cutmix.dtype) == (
        torch.int64, torch.float32, torch.int32, torch.bool,
    )  # fmt: skip
    assert d.box.shape == (6, 4) and d.lam.shape == d.perm.shape == d.is_cutmix.shape == (6,)


class _NoHostSync(TorchDispatchMode):
    """Fails on ops that read a value on the host (``.item()``, ``torch.equal``) or change device."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in (torch.ops.aten._local_scalar_dense.default, torch.ops.aten.equal.default):
            raise AssertionError(f"host sync: {func}")
        if func is torch.ops.aten._to_copy.default and kwargs.get("device") not in (None, args[0].device):
            raise AssertionError("device transfer")
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("mix", ["mixup", "cutmix", "switch", "none"])
def test_sampling_never_reads_values_on_the_host(mix):
    cfg = SEMConfig(mix=mix, lam_mode="elem", mix_prob=0.5, crop_padding=4, hflip=True)
    # Meta tensors have no data: reading one raises, so running on "meta" proves no value is read.
    d = sample_draw(8, 32, 32, cfg, device="meta")
    a = sample_augment(8, cfg, device="meta")
    assert d.lam.device.type == "meta" and a.offset.device.type == "meta"
    with _NoHostSync():
        sample_draw(8, 32, 32, cfg, device="cpu")
        sample_augment(8, cfg, device="cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_sampling_on_cuda_does_not_synchronize():
    cfg = SEMConfig(mix="switch", lam_mode="elem", crop_padding=4, hflip=True)
    g = torch.Generator(device="cuda").manual_seed(0)
    sample_draw(8, 32, 32, cfg, device="cuda", generator=g)  # warm-up (lazy CUDA init syncs)
    torch.cuda.set_sync_debug_mode("error")
    try:
        sample_draw(8, 32, 32, cfg, device="cuda", generator=g)
        sample_augment(8, cfg, device="cuda", generator=g)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_augment_offsets_and_flips_follow_the_config():
    g = torch.Generator().manual_seed(0)
    a = sample_augment(4000, SEMConfig(crop_padding=4, hflip=True), device="cpu", generator=g)
    assert a.offset.dtype == torch.int32 and a.offset.min() == 0 and a.offset.max() == 8
    assert 0.45 < a.flip.float().mean().item() < 0.55
    none = sample_augment(16, SEMConfig(), device="cpu", generator=g)
    assert (none.offset == 0).all() and not none.flip.any()


@pytest.mark.parametrize(
    "args, kwargs, error, message",
    [
        ((0, 32, 32, SEMConfig()), {"device": "cpu"}, ValueError, "batch_size must be a positive int"),
        ((4, 0, 32, SEMConfig()), {"device": "cpu"}, ValueError, "height must be a positive int"),
        ((4, 32, 32, "mixup"), {"device": "cpu"}, TypeError, "cfg must be a SEMConfig"),
        ((4, 32, 32, SEMConfig()), {"device": "cpu", "generator": 0}, TypeError, "generator must be a torch.Generator"),
        ((4, 32, 32, SEMConfig()), {"device": "meta", "generator": torch.Generator()}, ValueError, "cpu generator"),
    ],
)
def test_bad_arguments_raise_clear_errors(args, kwargs, error, message):
    with pytest.raises(error, match=message):
        sample_draw(*args, **kwargs)
