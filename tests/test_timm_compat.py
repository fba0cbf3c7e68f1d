"""timm / torchvision bridges: `SEMConfig.from_timm` maps or refuses every timm ``Mixup`` argument,
and on the same draws our mixing and `soft_targets` equal timm's ``Mixup`` / ``mixup_target`` and
torchvision's v2 ``MixUp`` / ``CutMix`` (images and soft labels), and our fused cross-entropy equals
timm's ``SoftTargetCrossEntropy`` on their targets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sem_fast import MixDraw, SEMConfig, sample_draw, sem_loss, soft_targets
from sem_fast import reference as ref
from sem_fast.extras import import_torchvision
from sem_fast.timm_compat import TIMM_MIXUP_DEFAULTS

import_torchvision("the torchvision comparisons")  # before timm, which imports torchvision
timm_mixup = pytest.importorskip("timm.data.mixup")
v2 = pytest.importorskip("torchvision.transforms.v2")

#: Same draws, same float32 math in another order: equal up to float32 rounding of values ~1-4.
TOL = {"atol": 1e-6, "rtol": 1e-6}
B, C, H, W, K = 6, 3, 13, 11, 7  # even batch (timm requires it), odd image sides and class count


@pytest.mark.parametrize(
    ("timm_args", "expected"),
    [
        ({}, {"mix": "mixup", "alpha": 1.0, "mix_prob": 1.0, "lam_mode": "batch", "pairing": "flip",
              "label_smoothing": 0.1}),
        ({"mixup_alpha": 0.8, "cutmix_alpha": 1.0, "prob": 1.0, "switch_prob": 0.5, "mode": "batch",
          "label_smoothing": 0.1, "num_classes": 1000},
         {"mix": "switch", "alpha": 0.8, "cutmix_alpha": 1.0, "switch_prob": 0.5, "mix_prob": 1.0}),
        ({"mixup_alpha": 0.0, "cutmix_alpha": 2.0, "prob": 0.5, "correct_lam": False, "mode": "elem",
          "label_smoothing": 0.0},
         {"mix": "cutmix", "cutmix_alpha": 2.0, "mix_prob": 0.5, "correct_lam": False, "lam_mode": "elem",
          "label_smoothing": 0.0}),
        ({"mixup_alpha": 0.2, "cutmix_alpha": 0}, {"mix": "mixup", "alpha": 0.2}),
    ],
)  # fmt: skip
def test_from_timm_maps_each_argument_to_the_config_field(timm_args, expected):
    cfg = SEMConfig.from_timm(**timm_args)
    for name, value in expected.items():
        assert getattr(cfg, name) == value, name


def test_from_timm_takes_other_config_fields_and_lets_pairing_be_overridden():
    cfg = SEMConfig.from_timm(mixup_alpha=0.4, gamma=0.5, backend="reference", pairing="perm")
    assert (cfg.alpha, cfg.gamma, cfg.backend, cfg.pairing) == (0.4, 0.5, "reference", "perm")


@pytest.mark.parametrize(
    ("kwargs", "error", "names"),
    [
        ({"mode": "pair"}, ValueError, "mode='pair'"),
        ({"mode": "half"}, ValueError, "mode must be"),
        ({"cutmix_minmax": (0.2, 0.8)}, ValueError, "cutmix_minmax"),
        ({"multi_label": True}, ValueError, "multi_label"),
        ({"mixup_alpha": 0.0, "cutmix_alpha": 0.0}, ValueError, "mix='none'"),
        ({"mixup_alpha": -1.0}, ValueError, "mixup_alpha must be >= 0"),
        ({"cutmix_alpha": "1"}, TypeError, "cutmix_alpha must be a number"),
        ({"num_classes": 0}, ValueError, "num_classes"),
        ({"prob": 1.5}, ValueError, "mix_prob"),
        ({"mixup_alpha": 1.0, "alpha": 0.5}, TypeError, "['alpha'] are decided by timm's arguments"),
        ({"smoothing": 0.1}, TypeError, "['smoothing'] are neither timm Mixup arguments nor SEMConfig fields"),
    ],
)  # fmt: skip
def test_from_timm_refuses_by_name(kwargs, error, names):
    with pytest.raises(error) as info:
        SEMConfig.from_timm(**kwargs)
    assert names in str(info.value)


def test_from_timm_knows_every_argument_of_the_installed_timm_mixup():
    import inspect

    params = inspect.signature(timm_mixup.Mixup.__init__).parameters
    assert {name: p.default for name, p in params.items() if name != "self"} == TIMM_MIXUP_DEFAULTS


def _timm_draw(mixer, images: torch.Tensor, seed: int) -> MixDraw:
    """The draw timm's ``Mixup(images)`` makes after ``np.random.seed(seed)``: its own parameter
    functions called in the order its ``__call__`` calls them."""
    np.random.seed(seed)
    n = images.shape[0]
    box = torch.zeros(n, 4, dtype=torch.int32)
    if mixer.mode == "batch":
        lam, cut = mixer._params_per_batch()
        lams, cuts = np.full(n, lam, dtype=np.float64), np.full(n, cut and lam != 1.0)
        if cuts[0]:
            bbox, lam = timm_mixup.cutmix_bbox_and_lam(images.shape, lam, correct_lam=mixer.correct_lam)
            lams[:], box[:] = lam, torch.tensor([int(v) for v in bbox], dtype=torch.int32)
    else:
        lams, cuts = mixer._params_per_elem(n)
        cuts = cuts & (lams != 1.0)
        for i in np.flatnonzero(cuts):
            bbox, lams[i] = timm_mixup.cutmix_bbox_and_lam(images[i].shape, lams[i], correct_lam=mixer.correct_lam)
            box[i] = torch.tensor([int(v) for v in bbox], dtype=torch.int32)
    flip = torch.arange(n - 1, -1, -1)
    return MixDraw(flip, torch.tensor(lams, dtype=torch.float32), box, torch.from_numpy(np.asarray(cuts)))


def _batch(seed: int):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, C, H, W, generator=g), torch.randint(0, K, (B,), generator=g)


TIMM_CASES = [
    {"mixup_alpha": 1.0, "cutmix_alpha": 0.0, "mode": "batch", "label_smoothing": 0.1},
    {"mixup_alpha": 0.0, "cutmix_alpha": 1.0, "mode": "batch", "label_smoothing": 0.0},
    {"mixup_alpha": 0.8, "cutmix_alpha": 1.0, "mode": "batch", "switch_prob": 0.5, "label_smoothing": 0.1},
    {"mixup_alpha": 0.8, "cutmix_alpha": 1.0, "mode": "elem", "switch_prob": 0.5, "prob": 0.7, "label_smoothing": 0.1},
    {"mixup_alpha": 0.0, "cutmix_alpha": 0.5, "mode": "elem", "correct_lam": False, "label_smoothing": 0.2},
]


@pytest.mark.parametrize("timm_args", TIMM_CASES, ids=lambda a: "-".join(f"{k}={v}" for k, v in a.items()))
@pytest.mark.parametrize("seed", range(4))
def test_images_and_soft_targets_equal_timm_mixup_on_the_same_draw(timm_args, seed):
    images, labels = _batch(seed)
    mixer = timm_mixup.Mixup(**timm_args, num_classes=K)
    draw = _timm_draw(mixer, images, seed)
    np.random.seed(seed)
    timm_images, timm_targets = mixer(images.clone(), labels)

    cfg = SEMConfig.from_timm(**timm_args, num_classes=K, channels_last=False)
    _, x_mix = ref.mix_images(images, draw, cfg)
    torch.testing.assert_close(x_mix, timm_images, **TOL)
    targets = soft_targets(labels, draw, K, cfg.label_smoothing)
    torch.testing.assert_close(targets, timm_targets, **TOL)
    expected = timm_mixup.mixup_target(labels, K, draw.lam.view(-1, 1), cfg.label_smoothing)  # timm's function alone
    torch.testing.assert_close(targets, expected, **TOL)


@pytest.mark.parametrize("seed", range(4))
def test_fused_cross_entropy_equals_timm_soft_target_cross_entropy(seed):
    """A timm user's loss on timm's targets is our mixed cross-entropy (fused op, 'auto' backend)."""
    from timm.loss import SoftTargetCrossEntropy

    images, labels = _batch(seed)
    timm_args = {"mixup_alpha": 0.8, "cutmix_alpha": 1.0, "mode": "elem", "label_smoothing": 0.1}
    mixer = timm_mixup.Mixup(**timm_args, num_classes=K)
    draw = _timm_draw(mixer, images, seed)
    np.random.seed(seed)
    _, timm_targets = mixer(images.clone(), labels)
    g = torch.Generator().manual_seed(seed)
    logits, z = torch.randn(B, K, generator=g), torch.randn(B, 5, generator=g)
    cfg = SEMConfig.from_timm(**timm_args, num_classes=K)
    _, ce, _ = sem_loss(logits, z, z, labels, draw, cfg)
    torch.testing.assert_close(ce, SoftTargetCrossEntropy()(logits, timm_targets), **TOL)


def _torchvision_draw(params: dict, n: int) -> MixDraw:
    """torchvision v2's pairing (partner ``b - 1``: ``roll(1)``) with its ``make_params`` draw."""
    partner = torch.roll(torch.arange(n), 1)
    if "box" not in params:  # MixUp
        return MixDraw(partner, torch.full((n,), params["lam"]), torch.zeros(n, 4, dtype=torch.int32),
                       torch.zeros(n, dtype=torch.bool))  # fmt: skip
    x1, y1, x2, y2 = params["box"]
    box = torch.tensor([[y1, y2, x1, x2]] * n, dtype=torch.int32)
    return MixDraw(partner, torch.full((n,), params["lam_adjusted"]), box, torch.ones(n, dtype=torch.bool))


@pytest.mark.parametrize("transform", ["MixUp", "CutMix"])
@pytest.mark.parametrize("seed", range(4))
def test_images_and_soft_targets_equal_torchvision_v2_on_the_same_draw(transform, seed):
    images, labels = _batch(seed)
    mixer = getattr(v2, transform)(alpha=1.0, num_classes=K)
    torch.manual_seed(seed)
    draw = _torchvision_draw(mixer.make_params([images]), B)
    torch.manual_seed(seed)
    tv_images, tv_targets = mixer(images.clone(), labels)

    _, x_mix = ref.mix_images(images, draw, SEMConfig(channels_last=False))
    torch.testing.assert_close(x_mix, tv_images, **TOL)
    torch.testing.assert_close(soft_targets(labels, draw, K), tv_targets, **TOL)


def test_from_timm_config_samples_timm_partners_and_one_lambda_per_batch():
    cfg = SEMConfig.from_timm(mixup_alpha=0.8, cutmix_alpha=1.0, mode="batch")
    draw = sample_draw(B, H, W, cfg, device=torch.device("cpu"), generator=torch.Generator().manual_seed(0))
    assert torch.equal(draw.perm, torch.arange(B - 1, -1, -1))
    assert torch.equal(draw.lam, draw.lam[:1].expand(B))


def test_soft_targets_by_hand_rows_sum_to_one():
    labels = torch.tensor([0, 2, 1])
    draw = MixDraw(torch.tensor([1, 2, 0]), torch.tensor([1.0, 0.25, 0.5]), torch.zeros(3, 4, dtype=torch.int32),
                   torch.zeros(3, dtype=torch.bool))  # fmt: skip
    # K = 4, smoothing 0.2: off-class 0.05, own class 0.85.
    expected = torch.tensor([
        [0.85, 0.05, 0.05, 0.05],  # lam 1: sample 0 unmixed
        [0.05, 0.05 + 0.8 * 0.75, 0.05 + 0.8 * 0.25, 0.05],  # own class 2 (0.25), partner 2 has class 1 (0.75)
        [0.05 + 0.8 * 0.5, 0.05 + 0.8 * 0.5, 0.05, 0.05],  # own class 1 (0.5), partner 0 has class 0 (0.5)
    ])  # fmt: skip
    t = soft_targets(labels, draw, 4, 0.2)
    torch.testing.assert_close(t, expected, **TOL)
    torch.testing.assert_close(t.sum(1), torch.ones(3), **TOL)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"labels": torch.tensor([0.0, 1.0])}, TypeError, "labels must be int64 or int32"),
        ({"labels": [0, 1]}, TypeError, "labels must be a torch.Tensor"),
        ({"labels": torch.tensor([0, 3])}, ValueError, r"labels must lie in \[0, 3\)"),
        ({"num_classes": 0}, ValueError, "num_classes must be a positive int"),
        ({"label_smoothing": 1.0}, ValueError, r"label_smoothing must lie in \[0, 1\)"),
        ({"draw": MixDraw(torch.tensor([0, 0]), torch.ones(2), torch.zeros(2, 4, dtype=torch.int32),
                           torch.zeros(2, dtype=torch.bool))}, ValueError, "draw.perm must be a permutation"),
    ],
)  # fmt: skip
def test_soft_targets_refuses_bad_input_by_name(kwargs, error, message):
    args = {"labels": torch.tensor([0, 1]), "num_classes": 3, "label_smoothing": 0.0,
                "draw": MixDraw(torch.tensor([1, 0]), torch.full((2,), 0.5), torch.zeros(2, 4, dtype=torch.int32),
                             torch.zeros(2, dtype=torch.bool))}  # fmt: skip
    with pytest.raises(error, match=message):
        soft_targets(**{**args, **kwargs})
