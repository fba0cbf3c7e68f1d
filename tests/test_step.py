"""fused_sem_step: wiring of mix, clean pass, mixed pass and loss; bad input, checked before any
forward pass; the value-check switch; a lambda that requires grad; determinism."""

import copy

import pytest
import torch

from sem_fast import (
    MixDraw,
    SEMConfig,
    StepOutput,
    available_backends,
    fused_sem_step,
    mix_images,
    sample_draw,
    sem_loss,
)
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


_OFFSET_5 = AugmentDraw(torch.full((8, 2), 5, dtype=torch.int32), torch.zeros(8, dtype=torch.bool))
_ALL_CUTMIX = torch.ones(8, dtype=torch.bool)
_CUTMIX_BOX_33 = _bad_draw(box=torch.tensor([[0, 33, 0, 4]] * 8, dtype=torch.int32), is_cutmix=_ALL_CUTMIX)
_MIXUP_BOX_ONES = _bad_draw(box=torch.ones(8, 4, dtype=torch.int32))

#: name -> (arguments, error, message): bad values, which only a value check (reading tensor
#: contents, a host sync on CUDA) finds.
VALUE_ERRORS = {
    "label_K": (dict(labels=LABELS + 10), ValueError, r"labels must lie in \[0, 10\)"),
    "label_negative": (dict(labels=torch.full_like(LABELS, -1)), ValueError, "found -1"),
    "perm_not_a_permutation": (
        dict(draw=_bad_draw(perm=torch.zeros(8, dtype=torch.int64))), ValueError, "draw.perm must be a permutation"
    ),
    "lam_above_one": (dict(draw=_bad_draw(lam=torch.full((8,), 1.5))), ValueError, r"draw.lam must lie in \[0, 1\]"),
    "box_past_the_image": (dict(draw=_CUTMIX_BOX_33), ValueError, r"draw.box\[0\] = \[0, 33, 0, 4\] is not a"),
    "box_of_a_mixup_sample": (dict(draw=_MIXUP_BOX_ONES), ValueError, "all zeros for samples with draw.is_cutmix"),
    "crop_offset_past_2p": (
        dict(cfg=CFG.replace(crop_padding=2), augment=_OFFSET_5),
        ValueError,
        r"augment.offset must lie in \[0, 2 \* cfg.crop_padding\] = \[0, 4\]",
    ),
}
#: ... and bad types, dtypes, shapes, devices and configurations, which every call checks.
METADATA_ERRORS = {
    "images_int32": (dict(images=IMAGES.int()), TypeError, "images must be uint8"),
    "images_3d": (dict(images=IMAGES[0]), ValueError, "images must be 4-D"),
    "images_empty": (dict(images=IMAGES[:0], labels=LABELS[:0]), ValueError, "images must be non-empty"),
    "channels_differ_from_mean": (dict(images=IMAGES[..., :1]), ValueError, "images have 1 channels but cfg.mean"),
    "labels_float": (dict(labels=LABELS.float()), TypeError, "labels must be int64 or int32"),
    "labels_short": (dict(labels=LABELS[:4]), ValueError, r"labels must have shape \(8,\)"),
    "labels_on_meta": (dict(labels=LABELS.to("meta")), ValueError, "labels is on meta but images is on cpu"),
    "perm_int32": (dict(draw=_bad_draw(perm=torch.arange(8, dtype=torch.int32))), TypeError, "draw.perm must be"),
    "lam_short": (dict(draw=_bad_draw(lam=torch.ones(4))), ValueError, r"draw.lam must have shape \(8,\)"),
    "draw_a_tuple": (dict(draw=(1, 2, 3, 4)), TypeError, "draw must be a MixDraw"),
    "cfg_a_dict": (dict(cfg={"mix": "mixup"}), TypeError, "cfg must be a SEMConfig"),
    "model_unsplit": (
        dict(model=torch.nn.Linear(3, 3)),
        TypeError,
        r"model must have an encode\(\) method; wrap it with sem_fast.models.split",
    ),
    "augment_without_augmentation": (
        dict(augment=AugmentDraw(torch.zeros(8, 2, dtype=torch.int32), torch.zeros(8, dtype=torch.bool))),
        ValueError,
        "augment was given but cfg has no augmentation",
    ),
    "reflect_padding_too_wide": (
        dict(cfg=CFG.replace(crop_padding=32, padding_mode="reflect")),
        ValueError,
        "must be smaller than the image size",
    ),
}


def _step(check_values=True, **kwargs):
    """``fused_sem_step`` with ``kwargs`` replacing the arguments of a clean batch and fixed draw."""
    args = dict(model=_model(), images=IMAGES, labels=LABELS, cfg=CFG, draw=_bad_draw()) | kwargs
    extra = {k: args.pop(k) for k in ("draw", "augment") if k in args}
    return fused_sem_step(args["model"], args["images"], args["labels"], args["cfg"], check_values=check_values, **extra)


@pytest.mark.parametrize(
    "kwargs, error, message", [*VALUE_ERRORS.values(), *METADATA_ERRORS.values()], ids=[*VALUE_ERRORS, *METADATA_ERRORS]
)
def test_bad_input_raises_a_clear_error_before_any_forward_pass(kwargs, error, message):
    model = kwargs.get("model", _model())
    with pytest.raises(error, match=message):
        _step(**(kwargs | dict(model=model)))
    assert getattr(model, "calls", []) == []


@pytest.mark.parametrize("kwargs, error, message", METADATA_ERRORS.values(), ids=METADATA_ERRORS.keys())
def test_without_value_checks_metadata_is_still_checked(kwargs, error, message):
    with pytest.raises(error, match=message):
        _step(check_values=False, **kwargs)


def test_without_value_checks_bad_values_give_nan_or_their_documented_meaning():
    """``check_values=False``: no value check runs; labels, partners and crop offsets out of range
    give a NaN loss, a box is clipped to the image and ignored for mixup samples, lambda is used
    as given (`sem_fast.reference`)."""
    for case in ("label_K", "label_negative", "perm_not_a_permutation", "crop_offset_past_2p"):
        assert _step(check_values=False, **VALUE_ERRORS[case][0]).loss.isnan(), case
    clipped = _bad_draw(box=torch.tensor([[0, 32, 0, 4]] * 8, dtype=torch.int32), is_cutmix=_ALL_CUTMIX)
    assert torch.equal(_step(check_values=False, draw=_CUTMIX_BOX_33).loss, _step(draw=clipped).loss)
    assert torch.equal(_step(check_values=False, draw=_MIXUP_BOX_ONES).loss, _step().loss)
    assert _step(check_values=False, **VALUE_ERRORS["lam_above_one"][0]).loss.isfinite()


def test_without_value_checks_the_step_reads_no_tensor_value():
    """On the meta device tensors have no values: a step (draws sampled, backward included) that
    runs there read none, so on CUDA it makes no host sync; the value checks do read."""
    cfg = CFG.replace(mix="switch", lam_mode="elem", crop_padding=4, hflip=True, detach_target=False)
    model, images, labels = _model().to("meta"), IMAGES.to("meta"), LABELS.to("meta")
    out = fused_sem_step(model, images, labels, cfg, check_values=False)
    out.loss.backward()
    assert out.loss.device.type == "meta" and all(p.grad is not None for p in model.parameters())
    with pytest.raises(RuntimeError, match="meta tensors"):
        fused_sem_step(model, images, labels, cfg)


def test_a_batch_rejected_for_a_bad_label_leaves_batchnorm_statistics_and_parameters_untouched():
    model = _model()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\)"):
        fused_sem_step(model, IMAGES, LABELS + 10, CFG)
    assert model.calls == [] and all(torch.equal(t, before[k]) for k, t in model.state_dict().items())
    fused_sem_step(model, IMAGES, LABELS, CFG)  # a good batch does move them
    assert not torch.equal(model.bn.running_mean, before["bn.running_mean"])


class _WithoutClassCount(torch.nn.Module):
    """``encode`` and ``classify`` of a TinyNet, without ``num_classes``."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def encode(self, x):
        return self.net.encode(x)

    def classify(self, z):
        return self.net.classify(z)


def test_without_num_classes_the_labels_are_checked_against_the_logits_after_the_forward():
    model = _model()
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\)"):
        fused_sem_step(_WithoutClassCount(model), IMAGES, LABELS + 10, CFG)
    assert model.calls == [False, True]


def test_num_classes_that_disagrees_with_the_logits_is_reported():
    class Miscounted(TinyNet):
        num_classes = 12

    with pytest.raises(ValueError, match="model.classify returned 10 logits per sample but model.num_classes is 12"):
        fused_sem_step(Miscounted(), IMAGES, LABELS, CFG)


FAST = [name for name in ("triton", "native") if available_backends("cpu")[name] is None]


def test_a_lambda_that_requires_grad_is_differentiated_by_auto_through_the_reference():
    draw = _bad_draw()
    lam = draw.lam.clone().requires_grad_(True)
    grads = []
    for backend in ("auto", "reference"):
        out = fused_sem_step(_model(), IMAGES, LABELS, CFG.replace(backend=backend), draw=draw._replace(lam=lam))
        grads.append(torch.autograd.grad(out.loss, lam)[0])
    assert grads[0].abs().sum() > 0 and torch.equal(grads[0], grads[1])


@pytest.mark.parametrize("name", FAST)
def test_a_lambda_that_requires_grad_is_refused_by_the_fast_backends_naming_it(name):
    cfg = CFG.replace(backend=name)
    draw = _bad_draw()
    draw = draw._replace(lam=draw.lam.clone().requires_grad_(True))
    message = rf"backend='{name}' cannot take this input: draw.lam requires grad.*'reference'"
    model = _model()
    with pytest.raises(ValueError, match=message):
        fused_sem_step(model, IMAGES, LABELS, cfg, draw=draw)
    assert model.calls == []
    with pytest.raises(ValueError, match=message):
        mix_images(IMAGES, draw, cfg)
    logits, z = torch.zeros(8, 10), torch.zeros(8, 4)
    with pytest.raises(ValueError, match=message):
        sem_loss(logits, z, z, LABELS, draw, cfg)
    assert sem_loss(logits, z, z, LABELS, draw._replace(lam=draw.lam.detach()), cfg)[0].isfinite()


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
