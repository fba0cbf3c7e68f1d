"""Short SEM training demo on the CIFAR-10 subset bundled with sem_fast (CPU: about 2 minutes).

Trains a narrow PreActResNet18 with mixup + SEM through `fused_sem_step` and reports the test
accuracy on the 1,000 bundled test images after every epoch.

    python examples/demo_sem_cifar.py [--epochs 6] [--width 16] [--gamma 1.0]
"""

from __future__ import annotations

import argparse
import time

import torch

from sem_fast import SEMConfig, fused_sem_step
from sem_fast.data import load_bundled
from sem_fast.models import PreActResNet18
from sem_fast.reference import normalize


def evaluate(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, cfg: SEMConfig) -> float:
    """Top-1 accuracy (%) of ``model`` on uint8 NHWC ``images``."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(images), 500):
            x = normalize(images[start : start + 500], cfg).contiguous(memory_format=torch.channels_last)
            correct += int((model(x).argmax(1) == labels[start : start + 500]).sum())
    model.train()
    return 100.0 * correct / len(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--width", type=int, default=16, help="channels of the first stage (paper: 64)")
    parser.add_argument("--gamma", type=float, default=1.0, help="SEM weight (0 = plain mixup)")
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    x_train, y_train = load_bundled("train")
    x_test, y_test = load_bundled("test")
    cfg = SEMConfig(mix="mixup", alpha=args.alpha, gamma=args.gamma)
    model = PreActResNet18(num_classes=10, width=args.width).to(memory_format=torch.channels_last)
    steps_per_epoch = len(x_train) // args.batch_size
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=args.epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(args.seed)
    print(f"SEM demo: PreActResNet18(width={args.width}) on {len(x_train)} CIFAR-10 images, "
          f"{args.epochs} epochs of {steps_per_epoch} steps, {cfg.mix} alpha={cfg.alpha} gamma={cfg.gamma}")
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        order = torch.randperm(len(x_train), generator=generator)
        sums = torch.zeros(3)
        t0 = time.perf_counter()
        for step in range(steps_per_epoch):
            idx = order[step * args.batch_size : (step + 1) * args.batch_size]
            out = fused_sem_step(model, x_train[idx], y_train[idx], cfg, generator=generator)
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            opt.step()
            sched.step()
            sums += torch.stack([out.loss.detach(), out.ce.detach(), out.sem.detach()])
            if (step + 1) % 10 == 0 or step + 1 == steps_per_epoch:
                rate = (step + 1) * args.batch_size / (time.perf_counter() - t0)
                loss, ce, sem = (sums / (step + 1)).tolist()
                print(f"\repoch {epoch}/{args.epochs} step {step + 1}/{steps_per_epoch} "
                      f"loss {loss:.3f} ce {ce:.3f} sem {sem:.4f} {rate:.0f} img/s", end="", flush=True)
        print(f"  test acc {evaluate(model, x_test, y_test, cfg):.1f}%")
    print(f"done in {time.perf_counter() - start:.0f} s; final test accuracy "
          f"{evaluate(model, x_test, y_test, cfg):.1f}% on {len(x_test)} images (chance 10%)")


if __name__ == "__main__":
    main()
