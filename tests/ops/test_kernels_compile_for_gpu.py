"""Every Triton kernel compiles for an NVIDIA GPU (sm_90, H100), without a GPU.

The CPU interpreter runs kernels as Python and accepts code the GPU compiler rejects (e.g. a loop
variable whose block shape changes between loops), so CPU-only CI would not see such a bug. Here
the kernel variants the launchers pick for typical shapes on a 132-SM GPU go through Triton's
whole compiler (TTIR -> PTX -> ptxas, which ships with the triton wheel). It runs in a
subprocess because the kernels of this process were created in interpreter mode.
"""

import itertools
import os
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]


def compile_variants() -> int:
    """Compile the variants for sm_90 and return how many (run without TRITON_INTERPRET)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    import sem_fast.ops.triton.loss as sl
    import sem_fast.ops.triton.mix as mix
    from sem_fast.ops.triton import utils as _utils

    mix.interpreted = sl.interpreted = lambda device: False
    sl._sm_count = lambda device: 132  # an H100's SM count
    gpu = torch.device("cuda", 0)
    count = 0

    def compile_(fn, pointers, scalars, constexprs, num_warps):
        nonlocal count
        signature = {
            p: "constexpr" if p in constexprs else pointers.get(p) or scalars.get(p, "i32") for p in fn.arg_names
        }
        index = {(fn.arg_names.index(k),): v for k, v in constexprs.items()}
        target = GPUTarget("cuda", 90, 32)
        triton.compile(ASTSource(fn, signature, index), target=target, options={"num_warps": num_warps})
        count += 1

    draw = dict(perm_ptr="*i64", lam_ptr="*fp32", box_ptr="*i32", cutmix_ptr="*i1", offset_ptr="*i32", flip_ptr="*i1")
    for (x, out), channels_last, padding, mixes, int64 in (
        (("*u8", "*bf16"), True, "reflect", True, False),
        (("*u8", "*fp32"), False, None, True, True),
        (("*fp16", "*fp16"), True, "zeros", False, False),
    ):
        block, warps = mix._block(3 * 32 * 32, gpu)
        flags = dict(CHANNELS_LAST=channels_last, AUGMENT=padding is not None, REFLECT=padding == "reflect")
        flags.update(INT64=int64, BLOCK=block)
        pointers = dict(x_ptr=x, clean_ptr=out, mix_ptr=out, stats_ptr="*fp32", **draw)
        compile_(mix._mix_forward_kernel, pointers, {}, dict(NORMALIZE=x == "*u8", MIX=mixes, **flags), warps)
        pointers = dict(gc_ptr=out, gm_ptr=out, dx_ptr=x if x != "*u8" else out, inv_ptr="*i64", **draw)
        compile_(mix._mix_backward_kernel, pointers, {}, dict(HAS_GC=channels_last, HAS_GM=mixes, **flags), warps)

    floats = dict(smoothing="fp32", inv_B="fp32", sem_scale="fp32", gamma="fp32", sem_count="fp32")
    for (B, K, D), dtype, has_sem in (
        ((512, 100, 640), "*bf16", True),  # K and D blocks of different widths
        ((64, 32768, 17), "*fp32", True),
        ((512, 10, 512), "*fp16", False),
    ):
        bb, bk, bd, warps = sl._geometry(B, K, D, gpu)
        blocks = dict(BLOCK_B=bb, BLOCK_K=bk, BLOCK_D=bd)
        inputs = dict(logits_ptr=dtype, zm_ptr=dtype, zc_ptr=dtype, labels_ptr="*i64", perm_ptr="*i64", lam_ptr="*fp32")
        pointers = dict(ce_rows_ptr="*fp32", sem_rows_ptr="*fp32", stats_ptr="*fp32", inv_ptr="*i64",
                        counter_ptr="*i32", loss_ptr="*fp32", ce_ptr="*fp32", sem_ptr="*fp32", **inputs)  # fmt: skip
        reduce_block = sl._reduce_block(B, warps, gpu)
        constexprs = dict(HAS_SEM=has_sem, ONE_K_BLOCK=K <= bk, REDUCE_BLOCK=reduce_block, **blocks)
        compile_(sl._sem_loss_forward_kernel, pointers, floats, constexprs, warps)
        pointers = dict(
            g_loss_ptr="*fp32", g_ce_ptr="*fp32", g_sem_ptr="*fp32", stats_ptr="*fp32", inv_ptr="*i64",
            dlogits_ptr=dtype, dz_mix_ptr=dtype, dz_clean_ptr=dtype, **inputs,
        )
        for flags in itertools.product([True, False], repeat=3):
            names = ("HAS_G_LOSS", "HAS_G_CE", "HAS_G_SEM")
            outputs = dict(LOGITS=True, Z_MIX=has_sem, Z_CLEAN=has_sem and flags[0])
            constexprs = dict(zip(names, flags), **outputs, **blocks)
            compile_(sl._sem_loss_backward_kernel, pointers, floats, constexprs, warps)
    compile_(_utils._inverse_permutation_kernel, dict(perm_ptr="*i64", inv_ptr="*i64"), {}, dict(BLOCK=1024), 4)
    return count


def test_every_kernel_compiles_for_an_sm90_gpu():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    code = "from tests.ops.test_kernels_compile_for_gpu import compile_variants; print(compile_variants())"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]
    assert int(result.stdout.split()[-1]) == 34  # 6 mix + 27 loss + inverse permutation
