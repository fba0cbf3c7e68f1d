"""Mix op throughput: uint8 NHWC batch -> normalized, augmented, clean + mixed batch.

Providers: every sem_fast backend that runs on the device, the reference path, a plain device
copy of the same number of bytes (the bandwidth roofline), an empty kernel launch (the latency
floor at 32x32, where a batch is a few MB and every op is launch-bound), and what users would
pick instead: timm ``Mixup`` (batch and elem modes) and torchvision v2 ``MixUp``/``CutMix``,
each fed the same uint8 batch (normalize + keep a clean copy + mix, as SEM needs both).
Peers draw no per-sample crop/flip, so they run only in the cases without augmentation.

Bytes moved per call (GB/s): the batch read once, the partner pixels read again (the whole image
of a mixup sample, the pasted box of a CutMix sample, none of an unmixed one: the draw's exact
count) and the clean and mixed batches written; the copy moves the same number of bytes. On CUDA
the 224x224 case has B = 512 (a 77 MB uint8 batch, larger than the 50 MB L2 of an H100/H200).

    pytest benchmarks/bench_mix.py --benchmark-only
"""

from __future__ import annotations

import pytest
import torch

from benchmarks.harness import assert_matches, device, fast_backends, measure, skip_if_untimeable
from sem_fast import SEMConfig, sample_draw
from sem_fast import reference as ref
from sem_fast.extras import import_torchvision
from sem_fast.ops.registry import get_backend
from sem_fast.sampling import sample_augment

DEV = device()
# (batch, side): 32x32 is CIFAR (launch-bound: report µs per call); 224x224 at B = 512 is
# ImageNet-size, 77 MB of uint8 input (not L2-resident), where bandwidth against the copy
# roofline is meaningful.
SHAPES = [(512, 32), (512, 224)] if DEV.type == "cuda" else [(128, 32), (512, 32)]
DTYPES = [torch.bfloat16, torch.float32] if DEV.type == "cuda" else [torch.float32]
MIXES = ["mixup", "cutmix"]
AUGMENTS = [False, True]
CASES = [(b, s, dt, mix, aug) for b, s in SHAPES for dt in DTYPES for mix in MIXES for aug in AUGMENTS]


def _case_id(case) -> str:
    b, s, dt, mix, aug = case
    return f"B{b}-{s}x{s}-{str(dt).removeprefix('torch.')}-{mix}{'-aug' if aug else ''}"


def _setup(case):
    B, S, dtype, mix, aug = case
    cfg = SEMConfig(mix=mix, out_dtype=dtype, crop_padding=4 if aug else 0, hflip=aug, backend="reference")
    g = torch.Generator(device=DEV).manual_seed(0)
    images = torch.randint(0, 256, (B, S, S, 3), dtype=torch.uint8, device=DEV, generator=g)
    draw = sample_draw(B, S, S, cfg, device=DEV, generator=g)
    augment = sample_augment(B, cfg, device=DEV, generator=g) if aug else None
    return cfg, images, draw, augment, bytes_moved(images, draw, dtype)


def bytes_moved(images: torch.Tensor, draw, dtype: torch.dtype) -> int:
    """uint8 ``(B, S, S, C)`` read once + the partner pixels each mixed sample reads + the clean
    and mixed batches written in ``dtype``."""
    _, H, W, C = images.shape
    y0, y1, x0, x1 = draw.box.long().unbind(1)
    partner_pixels = torch.where(draw.is_cutmix, (y1 - y0) * (x1 - x0), torch.where(draw.lam < 1, H * W, 0))
    return images.numel() + int(partner_pixels.sum()) * C + 2 * images.numel() * dtype.itemsize


def _meta(case):
    return dict(dev=DEV, group="mix", case=_case_id(case), items=case[0])


@pytest.mark.parametrize("case", CASES, ids=_case_id)
@pytest.mark.parametrize("backend", ["reference", *fast_backends(DEV)])
def test_mix_backend(benchmark, case, backend):
    skip_if_untimeable(benchmark, backend, DEV, smallest=case[0] == SHAPES[0][0])
    cfg, images, draw, augment, nbytes = _setup(case)
    op = get_backend(backend, DEV).mix_images
    expected = ref.mix_images(images, draw, cfg, augment=augment)
    for name, got, want in zip(("x_clean", "x_mix"), op(images, draw, cfg, augment), expected):
        assert_matches(got, want, f"{backend} {name}")
    measure(benchmark, lambda: op(images, draw, cfg, augment), provider=backend, bytes_moved=nbytes, **_meta(case))


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_mix_copy_roofline(benchmark, case):
    *_, nbytes = _setup(case)
    src = torch.empty(nbytes // 2, dtype=torch.uint8, device=DEV)
    dst = torch.empty_like(src)
    measure(benchmark, lambda: dst.copy_(src), provider="copy (roofline)", bytes_moved=nbytes, **_meta(case))


@pytest.mark.skipif(DEV.type != "cuda", reason="launch latency is a GPU notion")
def test_empty_launch(benchmark):
    x = torch.zeros(1, device=DEV)
    measure(benchmark, lambda: x.add_(0), dev=DEV, group="mix", case="empty launch", provider="1-element add_")


def _normalizer(cfg: SEMConfig):
    """What a user writes without sem_fast: uint8 NHWC -> normalized channels-last batch, with the
    mean and std put on the device once (not copied from the host on every call)."""
    mean = torch.tensor(cfg.mean, device=DEV).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std, device=DEV).view(1, 3, 1, 1)

    def normalized(images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).float().div_(255).sub_(mean).div_(std)
        return x.to(dtype=cfg.out_dtype, memory_format=torch.channels_last)

    return normalized


def _peer(name: str, mix: str):
    """``(x, labels) -> (x_mixed, soft_labels)`` of the peer library ``name`` for ``mix``."""
    import_torchvision("the torchvision and timm peers")  # timm imports torchvision too
    if name.startswith("timm"):
        Mixup = pytest.importorskip("timm.data").Mixup
        a = (1.0, 0.0) if mix == "mixup" else (0.0, 1.0)
        return Mixup(mixup_alpha=a[0], cutmix_alpha=a[1], mode=name.split("-")[1], num_classes=10)
    import torchvision.transforms.v2 as v2

    return v2.MixUp(alpha=1.0, num_classes=10) if mix == "mixup" else v2.CutMix(alpha=1.0, num_classes=10)


@pytest.mark.parametrize("case", [c for c in CASES if not c[4]], ids=_case_id)
@pytest.mark.parametrize("peer", ["timm-batch", "timm-elem", "torchvision-v2"])
def test_mix_peer(benchmark, case, peer):
    """A peer's GB/s counts the bytes of sem_fast's draw in this case (the same for mixup; for
    CutMix its own boxes differ)."""
    cfg, images, *_ , nbytes = _setup(case)
    mixer = _peer(peer, case[3])
    labels = torch.zeros(case[0], dtype=torch.int64, device=DEV)
    normalized = _normalizer(cfg)

    def run():
        x_clean = normalized(images)
        x_mix, soft = mixer(x_clean.clone(), labels)
        return x_clean, x_mix, soft

    x_clean, x_mix, soft = run()
    assert x_mix.shape == x_clean.shape and soft.shape == (case[0], 10)
    assert_matches(x_clean, ref.normalize(images, cfg), f"{peer} normalization")
    # timm's elem mode copies its per-sample lambdas from the host on every call (torch.tensor of a
    # numpy array): a host sync by its design, not held against it.
    measure(benchmark, run, provider=peer, bytes_moved=nbytes, host_syncs=peer == "timm-elem", **_meta(case))
