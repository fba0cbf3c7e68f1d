"""What a run's numbers depend on: our fused CPU kernels give the same bits at any thread count
(rows are split across threads, each row summed in a fixed order), so a difference between runs
at 1 and 2 threads comes from PyTorch's convolution and BatchNorm reductions, which is why the
thread count is recorded with every run (summary.json, the checkpoint, trials.csv)."""

from __future__ import annotations

import pytest
import torch

from sem_fast import SEMConfig, available_backends
from sem_fast.ops.functional import mix_images, sem_loss
from sem_fast.sampling import sample_augment, sample_draw

#: Sizes at which every kernel splits its rows between 2 threads: the kernels give each task
#: about 32,768 elements (csrc/cpu/cpu_utils.h, kGrainSize), i.e. 32 rows of K = 1000 logits,
#: 8 rows of D = 4096 features, 341 image rows of 32 pixels x 3 channels.
B, H, K, D = 64, 32, 1000, 4096


@pytest.mark.skipif(available_backends("cpu")["native"] is not None, reason="the compiled extension is not built")
def test_the_native_cpu_kernels_give_the_same_bits_at_one_and_two_threads():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (B, H, H, 3), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, K, (B,), generator=g)
    logits, z_mix, z_clean = (torch.randn(B, n, generator=g) for n in (K, D, D))
    cfg = SEMConfig(mix="mixup", backend="native", crop_padding=4, hflip=True)
    draw = sample_draw(B, H, H, cfg, device="cpu", generator=g)
    augment = sample_augment(B, cfg, device="cpu", generator=g)

    def outputs() -> list[torch.Tensor]:
        leaves = [t.clone().requires_grad_() for t in (logits, z_mix)]
        loss = sem_loss(*leaves, z_clean, labels, draw, cfg)
        loss[0].backward()
        return [*mix_images(images, draw, cfg, augment=augment), *loss, *(t.grad for t in leaves)]

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = outputs()
        torch.set_num_threads(2)
        two = outputs()
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(one, two, strict=True))
