"""The Triton sampler of a step's draws (`sem_fast.ops.triton.sampling`): the permutation's exact
uniformity when keys tie, launches per draw, and its variants compiled for an H100 (sm_90a).

Its distributions are tested with the torch sampler's in `tests/test_sampling.py`."""

import collections
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
import triton
import triton.language as tl
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes

from sem_fast import SEMConfig
from sem_fast.ops.triton import sampling

REPO = Path(__file__).resolve().parents[2]
_aten = torch.ops.aten
#: aten ops that allocate or re-view memory without launching a kernel on CUDA.
NO_LAUNCH = {
    _aten.empty.memory_format, _aten.empty_strided.default, _aten.view.default, _aten._unsafe_view.default,
    _aten.as_strided.default, _aten.expand.default, _aten.detach.default, _aten.alias.default,
    _aten.unsqueeze.default, _aten.squeeze.dim, _aten.select.int, _aten.slice.Tensor, _aten.unbind.int,
}  # fmt: skip


@triton.jit
def _permutations(seeds_ptr, out_ptr, B, T, PERM_BLOCK: tl.constexpr, KEY_BITS: tl.constexpr):
    """``T`` permutations of ``B``, row ``t`` from key ``seeds[t]`` (one program)."""
    for t in range(T):
        sampling._permutation(tl.load(seeds_ptr + t), out_ptr + t * B, B, PERM_BLOCK, KEY_BITS)


def test_permutation_stays_exactly_uniform_when_keys_tie():
    """With 2-bit keys, 3 samples tie in 5 rounds of 8: breaking ties by index would give the
    identity 31% of the time (and the reversal 6%); redrawing every tied round keeps each of
    the 6 permutations at 1/6."""
    T = 180
    seeds = torch.randint(0, 2**62, (T,), generator=torch.Generator().manual_seed(0))
    out = torch.empty(T, 3, dtype=torch.int64)
    _permutations[(1,)](seeds, out, 3, T, PERM_BLOCK=4, KEY_BITS=2)
    counts = collections.Counter(map(tuple, out.tolist()))
    assert len(counts) == 6 and all(sorted(p) == [0, 1, 2] for p in counts)
    chi2 = sum((c - T / 6) ** 2 / (T / 6) for c in counts.values())
    assert chi2 < 20.5, counts  # chi2(5): p = 1e-3; tie-breaking by index gives about 47


class _Launches(TorchDispatchMode):
    """Counts the aten ops that launch a kernel on CUDA (`NO_LAUNCH` excluded), by name."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func not in NO_LAUNCH:
            self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


class _CountedKernel:
    """Stands in for a Triton kernel and counts its launches; the CPU interpreter's own tensor
    copies inside a launch are hidden from the dispatch modes (a GPU launch makes none)."""

    def __init__(self, kernel) -> None:
        self.kernel, self.launches = kernel, 0

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.launches += 1
            with _disable_current_modes():
                return self.kernel[grid](*args, **kwargs)

        return launch


@pytest.mark.parametrize(
    "changes, launches",
    [
        (dict(mix="mixup"), 2),
        (dict(mix="cutmix", lam_mode="elem", crop_padding=4, hflip=True), 2),
        (dict(mix="switch", lam_mode="elem", mix_prob=0.5, pairing="flip", hflip=True), 2),
        (dict(mix="none", crop_padding=4), 2),
        (dict(mix="none"), 1),
    ],
    ids=["mixup", "cutmix_elem_augment", "switch_flip", "augment_only", "nothing_random"],
)
def test_the_draws_of_a_step_take_at_most_two_launches(monkeypatch, changes, launches):
    """The key's ``random_`` (when anything is random) and the kernel: on CUDA these are the
    only launches (the rest are allocations), against 95-99 aten ops (about 80 launches) on the torch sampler."""
    cfg = SEMConfig(backend="triton", **changes)
    kernel = _CountedKernel(sampling._sample_step_kernel)
    monkeypatch.setattr(sampling, "_sample_step_kernel", kernel)
    with _Launches() as ops:
        draw, augment = sampling.sample_step_draws(
            64, 32, 32, cfg, device=torch.device("cpu"), generator=None, draw=True, augment=cfg.augments
        )
    assert kernel.launches == 1 and len(ops.ops) + kernel.launches == launches, ops.ops
    assert torch.equal(draw.perm.sort().values, torch.arange(64))


def test_batches_above_the_sort_limit_take_torch_randperm():
    cfg = SEMConfig(backend="triton")
    B = sampling.PERM_MAX + 1
    with _Launches() as ops:
        draw, _ = sampling.sample_step_draws(B, 8, 8, cfg, device=torch.device("cpu"), generator=None,
                                             draw=True, augment=False)  # fmt: skip
    assert "aten.randperm.generator" in ops.ops or "aten.randperm.default" in ops.ops
    assert torch.equal(draw.perm.sort().values, torch.arange(B))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_draws_of_a_step_take_two_kernels_on_cuda():
    cfg = SEMConfig(mix="switch", lam_mode="elem", crop_padding=4, hflip=True)
    g = torch.Generator(device="cuda").manual_seed(0)
    args = (128, 32, 32, cfg)
    kwargs = dict(device=torch.device("cuda"), generator=g, draw=True, augment=True)
    sampling.sample_step_draws(*args, **kwargs)  # compiles the kernel
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        sampling.sample_step_draws(*args, **kwargs)
        torch.cuda.synchronize()
    kernels = [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    assert len(kernels) == 2, kernels


def _compile_variants() -> list[str]:
    """Compile the kernel variants the launcher picks for sm_90a and return ptxas -v's register
    and spill lines, one per variant (run without TRITON_INTERPRET)."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = sampling._sample_step_kernel
    pointers = dict(seed_ptr="*i64", perm_ptr="*i64", lam_ptr="*fp32", box_ptr="*i32", cutmix_ptr="*i1",
                    offset_ptr="*i32", flip_ptr="*i1")  # fmt: skip
    floats = dict(alpha="fp32", cutmix_alpha="fp32", switch_prob="fp32", mix_prob="fp32")
    ptxas = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
    lines = []
    for B, mix, elem, augment in ((128, 1, False, False), (512, 3, True, True), (sampling.PERM_MAX, 2, True, True),
                                  (256, 0, False, True)):  # fmt: skip
        pairing = 1 if mix else 0
        constexprs = dict(DRAW=True, MIX=mix, PAIRING=pairing, ELEM=elem, CORRECT_LAM=True, AUGMENT=augment,
                          CROP=augment, HFLIP=augment, RANDOM=bool(mix) or augment, LANES=min(256, B),
                          PERM_BLOCK=B if pairing else 1, KEY_BITS=sampling.KEY_BITS)  # fmt: skip
        signature = {
            p: "constexpr" if p in constexprs else pointers.get(p) or floats.get(p, "i32") for p in fn.arg_names
        }
        index = {(fn.arg_names.index(k),): v for k, v in constexprs.items()}
        kernel = triton.compile(ASTSource(fn, signature, index), target=GPUTarget("cuda", 90, 32),
                                options={"num_warps": sampling._NUM_WARPS})  # fmt: skip
        with tempfile.NamedTemporaryFile("w", suffix=".ptx") as ptx:
            ptx.write(kernel.asm["ptx"])
            ptx.flush()
            out = subprocess.run([str(ptxas), "-v", "--gpu-name", "sm_90a", ptx.name, "-o", os.devnull],
                                 capture_output=True, text=True, check=True)  # fmt: skip
        found = re.findall(r"\d+ bytes spill stores|Used \d+ registers", out.stderr)
        lines.append(f"B={B} MIX={mix}: " + " ".join(found))
    return lines


@pytest.mark.slow
def test_the_kernel_compiles_for_sm90_without_spills():
    """The interpreter accepts code the GPU compiler rejects; Triton's compiler and ptxas (in the
    triton wheel) check the kernel for an H100 without one, in a fresh process."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    script = "from tests.ops.test_sampling_kernel import _compile_variants\nprint('\\n'.join(_compile_variants()))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 4 and all("0 bytes spill stores" in line for line in lines), lines
    print("\n".join(lines))
