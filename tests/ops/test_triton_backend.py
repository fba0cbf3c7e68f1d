"""The Triton backend in the registry and in `fused_sem_step`, eager and under
``torch.compile(fullgraph=True)`` (on CPU through Triton's interpreter, see the root
``conftest.py``), and its int64 indexing path. Its ops against the reference: ``test_mix.py`` and
``test_sem_loss.py``, shared with the other backends."""

import pytest
import torch

import sem_fast.ops.triton as triton_backend
import sem_fast.ops.triton.mix as triton_mix
from sem_fast import SEMConfig, available_backends, fused_sem_step, mix_images, sample_draw
from sem_fast.ops.registry import get_backend
from sem_fast.data import load_bundled
from sem_fast.sampling import sample_augment
from tests.ops.cases import images, switch_draw, to_device
from tests.utils import TinyNet, assert_close, set_seed

IMAGES, LABELS = (t[:6] for t in load_bundled("train"))
#: fp32 step outputs and parameter gradients: within 1e-5 relative of the reference step (the
#: atol covers gradient entries that cancel to ~0).
TOL32 = dict(rtol=1e-5, atol=1e-6)


def _model():
    set_seed(0)
    return TinyNet()


def test_registry_offers_triton_on_cuda_and_on_cpu_only_in_the_interpreter(monkeypatch):
    assert available_backends("cpu")["triton"] is None
    backend = get_backend("triton", "cpu")
    assert backend.mix_images is triton_backend.mix_images and backend.sem_loss is triton_backend.sem_loss
    assert get_backend("auto", "cpu").name != "triton"  # the interpreter is for tests, never picked
    assert available_backends("cuda")["triton"] is None
    assert "no mps support" in available_backends("mps")["triton"]
    monkeypatch.delenv("TRITON_INTERPRET")
    assert "TRITON_INTERPRET=1" in available_backends("cpu")["triton"]
    with pytest.raises(ValueError, match="backend='triton' cannot run on cpu"):
        get_backend("triton", "cpu")


@pytest.mark.parametrize(
    "changes",
    [
        dict(mix="mixup"),
        dict(mix="switch", detach_target=False, crop_padding=4, hflip=True),
        dict(mix="cutmix", padding_mode="reflect", crop_padding=2, label_smoothing=0.1, sem_reduction="sum"),
        dict(mix="none"),
    ],
    ids=["mixup", "switch_through_target_zero_pad", "cutmix_reflect_sum", "no_mixing"],
)
def test_step_on_the_triton_backend_equals_the_reference_step(changes):
    cfg = SEMConfig(gamma=0.5, lam_mode="elem", **changes)
    gen = torch.Generator().manual_seed(1)
    draw = sample_draw(6, 32, 32, cfg, device="cpu", generator=gen)
    augment = sample_augment(6, cfg, device="cpu", generator=gen) if cfg.augments else None
    results = []
    for backend in ("triton", "reference"):
        model = _model()
        out = fused_sem_step(model, IMAGES, LABELS, cfg.replace(backend=backend), draw=draw, augment=augment)
        out.loss.backward()
        results.append((out.loss, out.ce, out.sem, *(p.grad for p in model.parameters())))
    for got, expected in zip(*results):
        assert_close(got, expected, **TOL32)


@pytest.mark.slow
def test_compiled_step_has_no_graph_break_matches_eager_and_turns_bad_labels_into_nan():
    """fullgraph=True fails on any graph break; value checks are skipped while compiling, so
    out-of-range labels must come out as a NaN loss, not a crash."""
    cfg = SEMConfig(backend="triton", mix="switch", lam_mode="elem", detach_target=False, crop_padding=4, hflip=True)
    gen = torch.Generator().manual_seed(2)
    draw = sample_draw(6, 32, 32, cfg, device="cpu", generator=gen)
    augment = sample_augment(6, cfg, device="cpu", generator=gen)
    eager_model, compiled_model = _model(), _model()
    eager = fused_sem_step(eager_model, IMAGES, LABELS, cfg, draw=draw, augment=augment)
    eager.loss.backward()
    step = torch.compile(fused_sem_step, fullgraph=True)
    compiled = step(compiled_model, IMAGES, LABELS, cfg, draw=draw, augment=augment)
    compiled.loss.backward()
    for got, expected in zip(
        (compiled.loss, compiled.ce, compiled.sem, *(p.grad for p in compiled_model.parameters())),
        (eager.loss, eager.ce, eager.sem, *(p.grad for p in eager_model.parameters())),
    ):
        assert_close(got, expected, **TOL32)
    assert step(compiled_model, IMAGES, LABELS + 10, cfg, draw=draw, augment=augment).loss.isnan()


def test_mix_with_int64_offsets_gives_the_same_result(monkeypatch):
    """Batches past 2**31 elements index in int64; force that path on a small batch."""
    gen = torch.Generator().manual_seed(8)
    cfg = SEMConfig(backend="triton", crop_padding=2, padding_mode="reflect", hflip=True)
    x = images("float_strided", 3, 3, 7, 9, torch.float32, gen)
    draw, augment = switch_draw(3, 7, 9, gen), sample_augment(3, cfg, device="cpu", generator=gen)
    x, draw, augment = to_device("cuda" if torch.cuda.is_available() else "cpu", x, draw, augment)
    x.requires_grad_(True)

    def run():
        clean, mixed = mix_images(x, draw, cfg, augment=augment)
        return clean, mixed, torch.autograd.grad((clean * 2).sum() + (mixed * mixed).sum(), x)[0]

    expected = run()
    monkeypatch.setattr(triton_mix, "_INT32_SPAN", 1)
    assert triton_mix._needs_int64(x)
    for got, exp in zip(run(), expected):
        assert torch.equal(got, exp)


@pytest.mark.parametrize(
    "field, value, error, message",
    [
        ("perm", torch.arange(4, dtype=torch.int32), TypeError, "draw.perm must be torch.int64"),
        ("lam", torch.ones(2), ValueError, r"draw.lam must have shape \(4,\)"),
        ("box", torch.zeros(4, 3, dtype=torch.int32), ValueError, r"draw.box must have shape \(4, 4\)"),
        ("flip", None, ValueError, "offset and flip must be given together"),
        ("offset", torch.zeros(4, 2, dtype=torch.int64), TypeError, "augment.offset must be torch.int32"),
        ("mean", [0.5], ValueError, r"mean and std must have one value per channel \(3\)"),
    ],
)
def test_raw_mix_op_checks_metadata_instead_of_reading_out_of_bounds(field, value, error, message):
    cfg = SEMConfig(crop_padding=2, hflip=True)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (4, 5, 6, 3), dtype=torch.uint8, generator=g)
    draw = sample_draw(4, 5, 6, cfg, device="cpu", generator=g)
    aug = sample_augment(4, cfg, device="cpu", generator=g)
    args = dict(images=images, perm=draw.perm, lam=draw.lam, box=draw.box, is_cutmix=draw.is_cutmix,
                offset=aug.offset, flip=aug.flip, mean=list(cfg.mean), std=list(cfg.std), crop_padding=2,
                reflect=False, out_dtype=torch.float32, channels_last=True, mixes=True)  # fmt: skip
    args[field] = value
    with pytest.raises(error, match=message):
        torch.ops.sem_fast_triton.mix_images(*args.values())


@pytest.mark.parametrize(
    "field, value, error, message",
    [
        ("labels", torch.zeros(4, 1, dtype=torch.int64), ValueError, r"labels must have shape \(B,\)"),
        ("labels", torch.zeros(4), TypeError, "labels must be int64 or int32"),
        ("z_mix", torch.zeros(3, 5), ValueError, r"z_mix must have shape \(4, N\)"),
        ("z_clean", torch.zeros(4, 6), ValueError, "z_clean must have the shape of z_mix"),
        ("perm", torch.arange(3), ValueError, r"draw.perm must have shape \(4,\)"),
        ("lam", torch.ones(4, dtype=torch.float64), TypeError, "draw.lam must be torch.float32"),
    ],
)
def test_raw_loss_op_checks_metadata_instead_of_reading_out_of_bounds(field, value, error, message):
    args = dict(logits=torch.zeros(4, 10), z_mix=torch.zeros(4, 5), z_clean=torch.zeros(4, 5),
                labels=torch.zeros(4, dtype=torch.int64), perm=torch.arange(4), lam=torch.ones(4),
                gamma=1.0, label_smoothing=0.0, sem_mean=True)  # fmt: skip
    args[field] = value
    with pytest.raises(error, match=message):
        torch.ops.sem_fast_triton.sem_loss(*args.values())
