"""fused_sem_step: wiring of mix, clean pass, mixed pass and loss; bad input; determinism."""

import pytest
import torch

from sem_fast import MixDraw, SEMConfig, StepOutput, fused_sem_step, mix_images, sample_draw, sem_loss
from sem_fast import reference as ref
from sem_fast.data import load_bundled
from sem_fast.draws import AugmentDraw
from tests.utils import TinyNet, set_seed

IMAGES, LABELS = (t[:8] for t in load_bundled("train"))
CFG = SEMConfig(backend="reference")


def _model():
    set_seed(0)
    return TinyNet()


@pytest.mark.parametrize("mix", ["mixup", "cutmix", "switch"])
@pytest.mark.parametrize("detach", [True, False])
def test_step_equals_the_reference_equations_on_real_images(mix, detach):
    cfg = CFG.replace(mix=mix, detach_target=detach, gamma=2.0, lam_mode="elem")
    draw = sample_draw(8, 32, 32, cfg, device="cpu", generator=torch.Generator().manual_seed(1))
    model = _model()
    out = fused_sem_step(model, IMAGES, LABELS, cfg, draw=draw)
    x_clean, x_mix = ref.mix_images(IMAGES, draw, cfg)
    model2 = _model()
    z_clean = model2.encode(x_clean)
    z_mix = model2.encode(x_mix)
    loss, ce, sem = ref.sem_loss(model2.classify(z_mix), z_mix, z_clean, LABELS, draw, cfg)
    torch.testing.assert_close(out.loss, loss)
    torch.testing.assert_close(out.ce, ce)
    torch.testing.assert_close(out.sem, sem)
    assert sem > 0 and isinstance(out, StepOutput) and out.logits.shape == (8, 10)
    assert model.calls == [not detach, True]  # clean pass under no_grad iff detach_target


@pytest.mark.parametrize("cfg", [CFG.replace(gamma=0.0), CFG.replace(mix="none"), CFG.replace(mix_prob=0.0)])
def test_without_a_sem_term_the_clean_pass_is_skipped_and_loss_is_ce(cfg):
    model = _model()
    out = fused_sem_step(model, IMAGES, LABELS, cfg, generator=torch.Generator().manual_seed(0))
    assert model.calls == [True]
    assert out.sem.item() == 0.0 and out.loss.item() == out.ce.item()


def test_gamma_zero_reproduces_plain_mixup_exactly():
    draw = sample_draw(8, 32, 32, CFG, device="cpu", generator=torch.Generator().manual_seed(2))
    model = _model()
    out = fused_sem_step(model, IMAGES, LABELS, CFG.replace(gamma=0.0), draw=draw)
    _, x_mix = ref.mix_images(IMAGES, draw, CFG)
    model2 = _model()
    assert torch.equal(out.loss, ref.mixed_cross_entropy(model2(x_mix), LABELS, draw, CFG))


def test_backward_reaches_every_parameter():
    model = _model()
    fused_sem_step(model, IMAGES, LABELS, CFG, generator=torch.Generator().manual_seed(0)).loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_same_generator_seed_gives_the_same_step_and_the_draw_replays_it():
    cfg = CFG.replace(mix="switch", crop_padding=4, hflip=True)
    a = fused_sem_step(_model(), IMAGES, LABELS, cfg, generator=torch.Generator().manual_seed(5))
    b = fused_sem_step(_model(), IMAGES, LABELS, cfg, generator=torch.Generator().manual_seed(5))
    c = fused_sem_step(_model(), IMAGES, LABELS, cfg, draw=a.draw, augment=a.augment)
    assert isinstance(a.augment, AugmentDraw)
    assert torch.equal(a.loss, b.loss) and torch.equal(a.loss, c.loss)


def test_float_images_are_taken_as_normalized_and_differentiated():
    x = ref.normalize(IMAGES, CFG).requires_grad_(True)
    out = fused_sem_step(_model(), x, LABELS, CFG, generator=torch.Generator().manual_seed(0))
    out.loss.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def _bad_draw(**fields):
    d = sample_draw(8, 32, 32, CFG, device="cpu", generator=torch.Generator().manual_seed(0))
    return d._replace(**fields)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(images=IMAGES.int()), TypeError, "images must be uint8"),
        (dict(images=IMAGES[0]), ValueError, "images must be 4-D"),
        (dict(images=IMAGES[:0], labels=LABELS[:0]), ValueError, "images must be non-empty"),
        (dict(images=IMAGES[..., :1]), ValueError, "images have 1 channels but cfg.mean"),
        (dict(labels=LABELS.float()), TypeError, "labels must be int64 or int32"),
        (dict(labels=LABELS[:4]), ValueError, r"labels must have shape \(8,\)"),
        (dict(labels=LABELS.to("meta")), ValueError, "labels is on meta but images is on cpu"),
        (dict(labels=LABELS + 10), ValueError, r"labels must lie in \[0, 10\)"),
        (dict(labels=torch.full_like(LABELS, -1)), ValueError, "found -1"),
        (dict(draw=_bad_draw(perm=torch.zeros(8, dtype=torch.int64))), ValueError, "draw.perm must be a permutation"),
        (dict(draw=_bad_draw(perm=torch.arange(8, dtype=torch.int32))), TypeError, "draw.perm must be torch.int64"),
        (dict(draw=_bad_draw(lam=torch.ones(4))), ValueError, r"draw.lam must have shape \(8,\)"),
        (dict(draw=_bad_draw(lam=torch.full((8,), 1.5))), ValueError, r"draw.lam must lie in \[0, 1\]"),
        (
            dict(draw=_bad_draw(box=torch.tensor([[0, 33, 0, 4]] * 8, dtype=torch.int32), is_cutmix=torch.ones(8, dtype=torch.bool))),
            ValueError,
            r"draw.box\[0\] = \[0, 33, 0, 4\] is not a half-open",
        ),
        (dict(draw=_bad_draw(box=torch.ones(8, 4, dtype=torch.int32))), ValueError, "all zeros for samples with draw.is_cutmix False"),
        (dict(draw=(1, 2, 3, 4)), TypeError, "draw must be a MixDraw"),
        (dict(cfg={"mix": "mixup"}), TypeError, "cfg must be a SEMConfig"),
        (dict(model=torch.nn.Linear(3, 3)), TypeError, r"model must have an encode\(\) method; wrap it with sem_fast.models.split"),
        (
            dict(augment=AugmentDraw(torch.zeros(8, 2, dtype=torch.int32), torch.zeros(8, dtype=torch.bool))),
            ValueError,
            "augment was given but cfg has no augmentation",
        ),
        (
            dict(cfg=CFG.replace(crop_padding=2), augment=AugmentDraw(torch.full((8, 2), 5, dtype=torch.int32), torch.zeros(8, dtype=torch.bool))),
            ValueError,
            r"augment.offset must lie in \[0, 2 \* cfg.crop_padding\] = \[0, 4\]",
        ),
        (dict(cfg=CFG.replace(crop_padding=32, padding_mode="reflect")), ValueError, "must be smaller than the image size"),
    ],
)
def test_bad_input_raises_a_clear_error(kwargs, error, message):
    args = dict(model=_model(), images=IMAGES, labels=LABELS, cfg=CFG) | kwargs
    extra = {k: args.pop(k) for k in ("draw", "augment") if k in args}
    with pytest.raises(error, match=message):
        fused_sem_step(args["model"], args["images"], args["labels"], args["cfg"], **extra)


def test_bad_features_from_the_model_are_reported():
    class WrongHead(TinyNet):
        def classify(self, z):
            return super().classify(z)[:4]

    with pytest.raises(ValueError, match=r"logits must have shape \(8, N\)"):
        fused_sem_step(WrongHead(), IMAGES, LABELS, CFG)


def test_public_ops_check_their_arguments_on_the_reference_backend_too():
    draw, cfg = _bad_draw(), CFG.replace(backend="reference")
    with pytest.raises(ValueError, match="z_clean must have the shape of z_mix"):
        sem_loss(torch.zeros(8, 10), torch.zeros(8, 4), torch.zeros(8, 5), LABELS, draw, cfg)
    with pytest.raises(TypeError, match="logits must be float32/bfloat16/float16/float64"):
        sem_loss(torch.zeros(8, 10, dtype=torch.int64), torch.zeros(8, 4), None, LABELS, draw, cfg)
    with pytest.raises(ValueError, match="draw.perm must have shape"):
        mix_images(IMAGES[:4], draw, cfg)
    assert isinstance(draw, MixDraw)
