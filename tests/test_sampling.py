"""sample_draw / sample_augment / sample_step_draws: distributions, boxes, lambda correction,
determinism, no host sync -- for both samplers: the torch ops (``backend='reference'``, and the
CPU) and the Triton kernel (``backend='triton'``, here in the interpreter)."""

import math

import pytest
import torch

from sem_fast import MixDraw, SEMConfig, sample_draw
from sem_fast.sampling import draw_sampler, sample_augment, sample_step_draws
from tests.utils import HostSyncRecorder

#: sampler -> the backend that selects it on the CPU.
BACKENDS = {"torch": "reference", "triton": "triton"}


@pytest.fixture(params=list(BACKENDS))
def backend(request):
    """The ``SEMConfig.backend`` that makes `sample_draw` use each sampler on the CPU."""
    assert draw_sampler(SEMConfig(backend=BACKENDS[request.param]), "cpu") == request.param
    return BACKENDS[request.param]


def _draw(backend, B=64, H=32, W=32, seed=0, **cfg):
    cfg = SEMConfig(backend=backend, **cfg)
    return sample_draw(B, H, W, cfg, device="cpu", generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("alpha", [0.2, 1.0, 2.0])
def test_lambda_matches_beta_mean_and_variance(backend, alpha):
    n = 40_000
    lam = _draw(backend, B=n, alpha=alpha, lam_mode="elem").lam.double()
    var = 1.0 / (4.0 * (2.0 * alpha + 1.0))  # Beta(a, a): mean 1/2, variance 1 / (4 (2a + 1))
    # Standard errors: sqrt(var / n) for the mean; the variance estimate's with the Beta(a, a)
    # fourth moment, bounded here by sqrt(2 var^2 / n) * 2. Five standard errors: a false alarm
    # has probability < 1e-6.
    assert abs(lam.mean().item() - 0.5) < 5 * math.sqrt(var / n)
    assert abs(lam.var().item() - var) < 5 * 2 * math.sqrt(2 * var**2 / n)
    assert ((lam >= 0) & (lam <= 1)).all()


def test_small_alpha_gives_lambdas_near_zero_and_one_without_nan(backend):
    lam = _draw(backend, B=10_000, alpha=0.01, lam_mode="elem").lam
    assert torch.isfinite(lam).all()
    assert ((lam < 0.01) | (lam > 0.99)).float().mean() > 0.9


def test_batch_mode_shares_one_lambda_and_elem_mode_draws_one_per_sample(backend):
    assert _draw(backend, lam_mode="batch").lam.unique().numel() == 1
    assert _draw(backend, lam_mode="elem").lam.unique().numel() > 32


@pytest.mark.parametrize("H, W", [(32, 32), (7, 9), (1, 1)])
@pytest.mark.parametrize("lam_mode", ["batch", "elem"])
def test_cutmix_boxes_lie_in_the_image_and_lambda_is_one_minus_box_area(backend, H, W, lam_mode):
    d = _draw(backend, B=512, H=H, W=W, mix="cutmix", lam_mode=lam_mode)
    y0, y1, x0, x1 = d.box.long().unbind(1)
    assert ((0 <= y0) & (y0 <= y1) & (y1 <= H) & (0 <= x0) & (x0 <= x1) & (x1 <= W)).all()
    expected = 1.0 - ((y1 - y0) * (x1 - x0)).float() / float(H * W)
    assert torch.equal(d.lam, expected)
    assert d.is_cutmix.all()


def test_cutmix_box_side_follows_sqrt_one_minus_lambda_before_clipping(backend):
    d = _draw(backend, B=2000, H=32, W=32, mix="cutmix", lam_mode="elem", correct_lam=False)
    y0, y1, x0, x1 = d.box.long().unbind(1)
    cut = (32 * torch.sqrt(1 - d.lam)).long()
    # The clipped box is never larger than the cut, and unclipped boxes (inside the image) are
    # exactly 2 * (cut // 2) wide, as in the CutMix reference code.
    assert ((y1 - y0) <= cut).all() and ((x1 - x0) <= cut).all()
    unclipped = (y0 > 0) & (y1 < 32) & (x0 > 0) & (x1 < 32)
    assert unclipped.sum() > 100
    assert ((y1 - y0)[unclipped] == 2 * (cut[unclipped] // 2)).all()


def test_cutmix_box_centres_are_uniform_over_the_image(backend):
    """Unclipped boxes are centred on their centre draw; with small boxes (lambda near 1) the
    centre rows spread uniformly over the image: each of 8 bands of 4 rows gets 1/8 (alpha 0.2
    makes a fifth of the boxes that small)."""
    d = _draw(backend, B=8000, H=32, W=32, mix="cutmix", lam_mode="elem", cutmix_alpha=0.2, correct_lam=False)
    y0, y1, _, _ = d.box.long().unbind(1)
    small = (y1 - y0) <= 2  # half-height <= 1: the box touches row cy, so (y0 + y1) // 2 == cy
    counts = torch.bincount(((y0 + y1)[small] // 2) // 4, minlength=8).double()
    expected = counts.sum() / 8
    assert counts.sum() > 1000 and ((counts - expected) ** 2 / expected).sum() < 24.3  # chi2(7): p = 1e-3


def test_without_lambda_correction_lambda_stays_the_beta_draw(backend):
    corrected = _draw(backend, B=256, mix="cutmix", lam_mode="elem", seed=3)
    raw = _draw(backend, B=256, mix="cutmix", lam_mode="elem", seed=3, correct_lam=False)
    assert torch.equal(corrected.box, raw.box)
    assert not torch.equal(corrected.lam, raw.lam)


def test_mixup_samples_have_empty_boxes(backend):
    d = _draw(backend, mix="mixup")
    assert not d.is_cutmix.any() and (d.box == 0).all()


def test_switch_mixes_both_kinds_per_sample_in_elem_mode(backend):
    d = _draw(backend, B=1000, mix="switch", lam_mode="elem", switch_prob=0.3)
    frac = d.is_cutmix.float().mean().item()
    assert 0.2 < frac < 0.4
    assert (d.box[~d.is_cutmix] == 0).all()


@pytest.mark.parametrize("B", [1, 2, 37, 300])
def test_perm_is_a_permutation_and_flip_pairing_reverses_the_batch(backend, B):
    d = _draw(backend, B=B)
    assert torch.equal(d.perm.sort().values, torch.arange(B))
    assert torch.equal(_draw(backend, B=B, pairing="flip").perm, torch.arange(B - 1, -1, -1))


@pytest.mark.parametrize("cfg", [dict(mix="none"), dict(mix_prob=0.0), dict(mix="cutmix", mix_prob=0.0)])
def test_unmixed_batch_has_lambda_one_and_no_box(backend, cfg):
    d = _draw(backend, **cfg)
    assert torch.equal(d.perm, torch.arange(64))
    assert (d.lam == 1).all() and (d.box == 0).all() and not d.is_cutmix.any()


def test_mix_prob_applies_per_sample_in_elem_mode(backend):
    d = _draw(backend, B=2000, lam_mode="elem", mix_prob=0.25, mix="cutmix")
    assert 0.2 < d.is_cutmix.float().mean().item() < 0.3
    assert (d.lam[~d.is_cutmix] == 1).all()


def test_same_seed_gives_identical_draws_and_another_seed_does_not(backend):
    a, b = _draw(backend, seed=7, mix="switch"), _draw(backend, seed=7, mix="switch")
    c = _draw(backend, seed=8, mix="switch")
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a.perm, c.perm)


def test_step_draws_follow_the_generator_and_augment_only_when_configured(backend):
    cfg = SEMConfig(backend=backend, mix="switch", lam_mode="elem", crop_padding=4, hflip=True)
    a = sample_step_draws(16, 32, 32, cfg, device="cpu", generator=torch.Generator().manual_seed(3))
    b = sample_step_draws(16, 32, 32, cfg, device="cpu", generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(x, y) for x, y in zip((*a[0], *a[1]), (*b[0], *b[1])))
    assert torch.equal(a[0].perm.sort().values, torch.arange(16))
    assert a[1].offset.min() >= 0 and a[1].offset.max() <= 8 and a[1].offset.unique().numel() > 1
    assert sample_step_draws(16, 32, 32, cfg.replace(crop_padding=0, hflip=False), device="cpu")[1] is None


def test_draw_dtypes_and_shapes(backend):
    d = _draw(backend, B=6)
    assert isinstance(d, MixDraw)
    assert (d.perm.dtype, d.lam.dtype, d.box.dtype, d.is_cutmix.dtype) == (
        torch.int64, torch.float32, torch.int32, torch.bool,
    )  # fmt: skip
    assert d.box.shape == (6, 4) and d.lam.shape == d.perm.shape == d.is_cutmix.shape == (6,)


@pytest.mark.parametrize("mix", ["mixup", "cutmix", "switch", "none"])
@pytest.mark.parametrize("lam_mode", ["batch", "elem"])
def test_torch_sampler_never_reads_values_on_the_host_nor_copies_python_data(mix, lam_mode):
    """(The Triton sampler's launch reads nothing on the host either, but in the CPU interpreter
    every launch copies its tensors to numpy; on CUDA `test_sampling_on_cuda_does_not_synchronize`
    covers it.)"""
    cfg = SEMConfig(mix=mix, lam_mode=lam_mode, mix_prob=0.5, crop_padding=4, hflip=True)
    # Meta tensors have no data: reading one raises, so running on "meta" proves no value is read.
    d = sample_draw(8, 32, 32, cfg, device="meta")
    a = sample_augment(8, cfg, device="meta")
    assert d.lam.device.type == "meta" and a.offset.device.type == "meta"
    with HostSyncRecorder() as recorded:
        sample_step_draws(8, 32, 32, cfg, device="cpu")
        sample_draw(8, 32, 32, cfg, device="cpu")
        sample_augment(8, cfg, device="cpu")
    assert recorded.syncs == [] and recorded.created == []


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_sampling_on_cuda_does_not_synchronize(backend):
    cfg = SEMConfig(backend=backend, mix="switch", lam_mode="elem", crop_padding=4, hflip=True)
    g = torch.Generator(device="cuda").manual_seed(0)
    sample_step_draws(8, 32, 32, cfg, device="cuda", generator=g)  # warm-up (lazy CUDA init, compile)
    sample_draw(8, 32, 32, cfg, device="cuda", generator=g)
    sample_augment(8, cfg, device="cuda", generator=g)
    torch.cuda.set_sync_debug_mode("error")
    try:
        sample_step_draws(8, 32, 32, cfg, device="cuda", generator=g)
        sample_draw(8, 32, 32, cfg, device="cuda", generator=g)
        sample_augment(8, cfg, device="cuda", generator=g)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_augment_offsets_and_flips_follow_the_config(backend):
    g = torch.Generator().manual_seed(0)
    cfg = SEMConfig(backend=backend, crop_padding=4, hflip=True)
    a = sample_augment(4000, cfg, device="cpu", generator=g)
    assert a.offset.dtype == torch.int32 and a.offset.min() == 0 and a.offset.max() == 8
    counts = torch.bincount(a.offset.long().flatten(), minlength=9).double()
    assert ((counts - 8000 / 9) ** 2 / (8000 / 9)).sum() < 26.1  # chi2(8): p = 1e-3
    assert 0.45 < a.flip.float().mean().item() < 0.55
    none = sample_augment(16, cfg.replace(crop_padding=0, hflip=False), device="cpu", generator=g)
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
