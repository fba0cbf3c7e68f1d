"""Put `fused_sem_step` into your own training loop: a torchvision ResNet-18 through `split()`.

The step only computes the loss, so everything else stays yours: optimizer, AMP, compile,
DDP, gradient accumulation. On CUDA this runs bf16 autocast, channels-last and
`torch.compile`; on CPU it runs in fp32 eager mode.

    python examples/own_training_loop.py --steps 200
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch
from torch import nn

from sem_fast import SEMConfig, fused_sem_step, sample_draw
from sem_fast.data import load_bundled
from sem_fast.extras import import_torchvision
from sem_fast.models import split
from sem_fast.sampling import sample_augment


def cifar_resnet18(num_classes: int = 10) -> nn.Module:
    """torchvision's ResNet-18 with the usual CIFAR stem (3x3 stride-1 conv, no max-pool)."""
    # `import torchvision`, also with a CPU torch next to torchvision's PyPI wheel (a CUDA build whose
    # compiled ops cannot load there; the model needs none of them): see sem_fast.extras.
    torchvision = import_torchvision("examples/own_training_loop.py")
    net = torchvision.models.resnet18(num_classes=num_classes)
    net.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    return net


def main(argv: list[str] | None = None) -> float:
    """Train for ``--steps`` steps and return the mean loss of the last 10."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--gamma", type=float, default=1.0)
    args = parser.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    on_cuda = device.type == "cuda"
    images, labels = (t.to(device) for t in load_bundled("train"))  # uint8 NHWC, int64

    model = split(cifar_resnet18()).to(device, memory_format=torch.channels_last)
    cfg = SEMConfig(mix="mixup", alpha=1.0, gamma=args.gamma, crop_padding=4, hflip=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    # The draws are sampled outside the compiled step: a generator inside it would break the graph.
    step = torch.compile(fused_sem_step, fullgraph=True) if on_cuda else fused_sem_step
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if on_cuda else contextlib.nullcontext()
    generator = torch.Generator(device=device).manual_seed(0)

    losses = []
    start = time.perf_counter()
    for i in range(args.steps):
        idx = torch.randint(0, len(images), (args.batch_size,), device=device, generator=generator)
        draw = sample_draw(args.batch_size, 32, 32, cfg, device=device, generator=generator)
        augment = sample_augment(args.batch_size, cfg, device=device, generator=generator)
        with autocast:
            out = step(model, images[idx], labels[idx], cfg, draw=draw, augment=augment)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.detach())
        if (i + 1) % 20 == 0 or i + 1 == args.steps:
            recent = torch.stack(losses[-20:]).mean().item()
            rate = (i + 1) * args.batch_size / (time.perf_counter() - start)
            print(f"step {i + 1}/{args.steps}  loss {recent:.3f}  ce {out.ce.item():.3f}  "
                  f"sem {out.sem.item():.4f}  {rate:.0f} img/s")
    return torch.stack(losses[-10:]).mean().item()


if __name__ == "__main__":
    main()
