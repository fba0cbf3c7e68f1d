"""A small mix + loss forward and backward on both fast backends, on CUDA, checked against the
reference: the program `scripts/gpu_check.sh` runs under ``compute-sanitizer --tool memcheck``
(``--device cpu`` runs it on the CPU, Triton in its interpreter: how CI checks this script).

Every mix kernel path is launched once at a tiny size (uint8 -> bf16 channels-last without
augment, with zero and reflect padding; float input -> fp32 with its gradient; a shape with
partial runs), then the loss forward and backward. Exit status 0 when every output is within
1e-2 of the reference, 1 otherwise (the sanitizer reports memory errors itself).

    python scripts/gpu_smoke.py [--device cuda|cpu]
"""

from __future__ import annotations

import argparse
import sys

import torch

from sem_fast import SEMConfig, available_backends, mix_images, reference, sample_augment, sample_draw, sem_loss

#: bf16 outputs round at 2**-8 relative; values are O(1) after normalization.
TOL = 1e-2


def _mix_cases(device: torch.device) -> list[tuple[str, torch.Tensor, SEMConfig, bool]]:
    gen = torch.Generator().manual_seed(0)
    uint8 = torch.randint(0, 256, (4, 16, 24, 3), dtype=torch.uint8, generator=gen)
    odd = torch.randint(0, 256, (3, 7, 9, 3), dtype=torch.uint8, generator=gen)
    floats = torch.randn(4, 3, 16, 24, generator=gen)
    base = SEMConfig(mix="switch", lam_mode="elem", out_dtype=torch.bfloat16)
    cases = [
        ("uint8 dense", uint8, base, False),
        ("uint8 zero pad", uint8, base.replace(crop_padding=4, hflip=True), False),
        ("uint8 reflect", uint8, base.replace(crop_padding=4, padding_mode="reflect", hflip=True), False),
        ("uint8 partial runs", odd, base.replace(crop_padding=2, hflip=True), False),
        ("float + grad", floats, base.replace(out_dtype=None, crop_padding=2, padding_mode="reflect"), True),
        ("float nchw + grad", floats, base.replace(out_dtype=None, channels_last=False), True),
    ]
    return [(name, x.to(device), cfg, grad) for name, x, cfg, grad in cases]


def _close(name: str, got: torch.Tensor, expected: torch.Tensor) -> bool:
    err = (got.float() - expected.float()).abs().max().item()
    ok = err <= TOL
    print(f"  {name}: max |fast - reference| = {err:.2e} {'ok' if ok else 'FAIL'}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    device = torch.device(parser.parse_args(argv).device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_smoke: FAIL: no CUDA device", file=sys.stderr)
        return 1
    ok = True
    for backend in ("triton", "native"):
        print(f"backend={backend}")
        why = available_backends(device)[backend]
        if why is not None:
            print(f"  FAIL: backend {backend!r} cannot run on {device}: {why}")
            ok = False
            continue
        for name, x, cfg, grad in _mix_cases(device):
            B, H, W = x.shape[0], *(x.shape[1:3] if x.dtype == torch.uint8 else x.shape[2:])
            gen = torch.Generator(device=device).manual_seed(1)
            draw = sample_draw(B, H, W, cfg, device=device, generator=gen)
            augment = sample_augment(B, cfg, device=device, generator=gen) if cfg.augments else None
            leaf = x.detach().requires_grad_(grad)
            out = mix_images(leaf, draw, cfg.replace(backend=backend), augment=augment)
            expected = reference.mix_images(x, draw, cfg, augment=augment)
            for part, got, exp in zip(("x_clean", "x_mix"), out, expected):
                ok &= _close(f"{name} {part}", got, exp)
            if grad:
                (g,) = torch.autograd.grad(out[0].float().sum() + 2 * out[1].float().sum(), leaf)
                leaf_ref = x.detach().requires_grad_(True)
                ref_out = reference.mix_images(leaf_ref, draw, cfg, augment=augment)
                (g_ref,) = torch.autograd.grad(ref_out[0].sum() + 2 * ref_out[1].sum(), leaf_ref)
                ok &= _close(f"{name} d images", g, g_ref)
        gen = torch.Generator(device=device).manual_seed(2)
        cfg = SEMConfig(lam_mode="elem", label_smoothing=0.1, detach_target=False)
        draw = sample_draw(8, 16, 16, cfg, device=device, generator=gen)
        logits, z_mix, z_clean = (torch.randn(8, n, device=device, generator=gen) for n in (10, 32, 32))
        labels = torch.randint(0, 10, (8,), device=device, generator=gen)
        leaves = [t.detach().requires_grad_(True) for t in (logits, z_mix, z_clean)]
        results = []
        for impl, c in ((sem_loss, cfg.replace(backend=backend)), (reference.sem_loss, cfg)):
            inputs = [t.detach().requires_grad_(True) for t in leaves]
            loss = impl(*inputs, labels, draw, c)[0]
            results.append((loss, *torch.autograd.grad(loss, inputs)))
        for part, got, exp in zip(("loss", "d logits", "d z_mix", "d z_clean"), *results):
            ok &= _close(f"sem_loss {part}", got, exp)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
