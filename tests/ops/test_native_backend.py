"""The native backend's own checks: its raw ops (``torch.ops.sem_fast_native.*``) check their
metadata themselves when called directly, so a bad call raises instead of reading out of bounds
(uint8 images have at most 16 channels: the per-channel mean/std live in a fixed-size kernel
argument; ``'auto'`` then takes the reference), and each op compiles with
``torch.compile(fullgraph=True)`` (the Triton backend's counterpart: ``test_triton_backend.py``,
through a whole compiled step). Its ops against the reference: ``test_mix.py`` and
``test_sem_loss.py``, shared with the other backends.

Its CPU kernels give the same bits whatever the thread count and the instruction set they run
with (``test_mix_results_do_not_depend_on_*``).

Tolerance: compiled and eager calls run the same kernels; fp32 within 1e-5 relative (``TOL32``).
"""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import sem_fast.ops.native as native
from sem_fast import SEMConfig, mix_images
from sem_fast.draws import AugmentDraw
from sem_fast.sampling import sample_augment
from tests.ops.cases import elem_draw, images, mix_cfg, mix_op_args, problem, switch_draw
from tests.utils import assert_bitwise_equal, assert_close

pytestmark = pytest.mark.skipif(native.probe("cpu") is not None, reason=f"{native.probe('cpu')}")

TOL32 = dict(rtol=1e-5, atol=1e-6)

MIX_CALL_ERRORS = {
    # name: (argument index in mix_op_args, replacement, message)
    "perm_int32": (1, torch.arange(4, dtype=torch.int32), "perm must be Long"),
    "lam_short": (2, torch.ones(3), r"lam must have shape \[4\]"),
    "box_three_columns": (3, torch.zeros(4, 3, dtype=torch.int32), r"box must have shape \[4, 4\]"),
    "images_int16": (0, torch.zeros(4, 7, 9, 3, dtype=torch.int16), "images must be uint8"),
    "offset_without_flip": (6, None, "offset and flip must be given together"),
    "twenty_uint8_channels": (0, torch.zeros(4, 7, 9, 20, dtype=torch.uint8), "channels but mean/std have"),
}


@pytest.mark.parametrize("case", MIX_CALL_ERRORS.values(), ids=MIX_CALL_ERRORS.keys())
def test_direct_mix_op_call_with_bad_metadata_raises_instead_of_reading_out_of_bounds(case):
    index, value, message = case
    gen = torch.Generator().manual_seed(12)
    cfg = mix_cfg(3, crop_padding=1, hflip=True)
    x, draw = images("uint8", 4, 3, 7, 9, torch.float32, gen), switch_draw(4, 7, 9, gen)
    args = list(mix_op_args(x, draw, cfg, sample_augment(4, cfg, device="cpu", generator=gen)))
    args[index] = value
    with pytest.raises(RuntimeError, match=message):
        torch.ops.sem_fast_native.mix_images(*args)


def test_uint8_images_with_more_than_16_channels_raise_by_name_and_auto_takes_the_reference():
    """The reference takes any channel count; the native limit surfaces as an error naming it when
    the backend is asked for by name (directly, too), and 'auto' falls back to the reference."""
    gen = torch.Generator().manual_seed(13)
    x, draw, cfg = images("uint8", 2, 17, 5, 6, torch.float32, gen), switch_draw(2, 5, 6, gen), mix_cfg(17)
    with pytest.raises(ValueError, match="backend='native' cannot take this input: .* at most 16 channels, got 17"):
        mix_images(x, draw, cfg.replace(backend="native"))
    with pytest.raises(ValueError, match="uint8 images may have at most 16 channels, got 17"):
        torch.ops.sem_fast_native.mix_images(*mix_op_args(x, draw, cfg, None))
    for got, expected in zip(mix_images(x, draw, cfg), mix_images(x, draw, cfg.replace(backend="reference"))):
        assert torch.equal(got, expected)


def test_direct_loss_op_call_with_bad_metadata_raises_instead_of_reading_out_of_bounds():
    gen = torch.Generator().manual_seed(9)
    logits, z_mix, z_clean, labels = problem(4, 5, 3, torch.float32, gen)
    draw = elem_draw(4, gen)
    op = torch.ops.sem_fast_native.sem_loss
    with pytest.raises(RuntimeError, match=r"z_clean must have the shape of z_mix"):
        op(logits, z_mix, z_clean[:, :2], labels, draw.perm, draw.lam, 1.0, 0.0, True)
    with pytest.raises(RuntimeError, match=r"logits must have shape \(4, N\)"):
        op(logits[:3], z_mix, z_clean, labels, draw.perm, draw.lam, 1.0, 0.0, True)
    with pytest.raises(RuntimeError, match=r"lam must have shape \[4\]"):
        op(logits, z_mix, z_clean, labels, draw.perm, draw.lam[:3], 1.0, 0.0, True)
    with pytest.raises(RuntimeError, match=r"labels must be int64 or int32"):
        op(logits, z_mix, z_clean, labels.float(), draw.perm, draw.lam, 1.0, 0.0, True)
    row_stats, inv_perm = op(logits, z_mix, z_clean, labels, draw.perm, draw.lam, 1.0, 0.0, True)[3:]
    backward = torch.ops.sem_fast_native.sem_loss_backward
    with pytest.raises(RuntimeError, match=r"row_stats must have shape \[4, 2\]"):
        backward(None, None, None, logits, z_mix, z_clean, labels, draw.perm, draw.lam, row_stats[:3], inv_perm,
                 1.0, 0.0, True, True, True, True)  # fmt: skip
    with pytest.raises(RuntimeError, match=r"inv_perm must be Long"):
        backward(None, None, None, logits, z_mix, z_clean, labels, draw.perm, draw.lam, row_stats, inv_perm.int(),
                 1.0, 0.0, True, True, True, True)  # fmt: skip
    with pytest.raises(RuntimeError, match=r"z_mix_grad and z_clean_grad need z_clean"):
        backward(None, None, None, logits, z_mix, None, labels, draw.perm, draw.lam, row_stats, inv_perm,
                 1.0, 0.0, True, True, True, False)  # fmt: skip


def test_mix_compiled_with_fullgraph_matches_eager():
    """The fake kernels and registered autograd let torch.compile trace the op without a break."""
    gen = torch.Generator().manual_seed(13)
    cfg = mix_cfg(3, crop_padding=2, hflip=True)
    x = images("float", 3, 3, 7, 9, torch.float32, gen).requires_grad_(True)
    draw, augment = switch_draw(3, 7, 9, gen), sample_augment(3, cfg, device="cpu", generator=gen)

    def step(x):
        clean, mixed = native.mix_images(x, draw, cfg, augment)
        return (clean * clean).sum() + mixed.sum()

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    got, expected = compiled(x), step(x)
    assert_close(got, expected, name="value", **TOL32)
    (d_got,), (d_expected,) = torch.autograd.grad(got, x), torch.autograd.grad(expected, x)
    assert_close(d_got, d_expected, name="d images", **TOL32)


def test_loss_compiled_with_fullgraph_matches_eager():
    """The fake kernels and registered autograd let torch.compile trace the op without a break."""
    gen = torch.Generator().manual_seed(10)
    leaves = [t.requires_grad_(True) for t in problem(5, 7, 9, torch.float32, gen)[:3]]
    labels = torch.randint(0, 7, (5,), generator=gen)
    draw, cfg = elem_draw(5, gen), SEMConfig(detach_target=False, label_smoothing=0.1)

    def loss_fn(logits, z_mix, z_clean):
        return native.sem_loss(logits, z_mix, z_clean, labels, draw, cfg)[0]

    compiled = torch.compile(loss_fn, fullgraph=True, backend="aot_eager")
    got, expected = compiled(*leaves), loss_fn(*leaves)
    assert_close(got, expected, name="loss", **TOL32)
    got_grads, expected_grads = torch.autograd.grad(got, leaves), torch.autograd.grad(expected, leaves)
    for name, g, e in zip(("d logits", "d z_mix", "d z_clean"), got_grads, expected_grads):
        assert_close(g, e, name=name, **TOL32)


#: Batches for the invariance tests: (images kind, B, C, H, W, dtype, config changes). Each has
#: more B * H rows than one task takes (~32,768 elements: csrc/cpu/cpu_utils.h, kGrainSize), so 2
#: and 3 threads split it, inside samples and CutMix boxes.
INVARIANCE_BATCHES = [
    ("uint8", 31, 3, 33, 35, torch.bfloat16, dict(crop_padding=4, hflip=True)),
    ("uint8_strided", 23, 3, 29, 45, torch.float32, dict(crop_padding=5, padding_mode="reflect", hflip=True)),
    ("uint8", 9, 1, 40, 97, torch.float16, dict(channels_last=False, crop_padding=3, hflip=True)),
    ("float", 12, 3, 33, 37, torch.float32, dict(crop_padding=4, padding_mode="reflect", hflip=True)),
    ("float_channels_last", 12, 3, 31, 41, torch.bfloat16, {}),
]


def invariance_inputs() -> list[tuple]:
    """(images, draw, cfg, augment, output weights or None) per INVARIANCE_BATCHES batch, from fixed
    seeds. Bad crop offsets and partners in some samples make NaN rows. Made once and passed on:
    sampling runs ATen kernels whose rounding may depend on the instruction set."""
    inputs = []
    for seed, (kind, B, C, H, W, dtype, changes) in enumerate(INVARIANCE_BATCHES):
        gen = torch.Generator().manual_seed(seed)
        cfg = mix_cfg(C, out_dtype=dtype if kind.startswith("uint8") else None).replace(**changes)
        x = images(kind, B, C, H, W, dtype, gen)
        draw = switch_draw(B, H, W, gen)._replace(perm=torch.randperm(B, generator=gen))
        draw.perm[0] = B  # not a permutation: x_mix[0] (and the gradient of sample 0's partner) is NaN
        augment = sample_augment(B, cfg, device="cpu", generator=gen) if cfg.augments else None
        if augment is not None:
            offset = augment.offset.clone()
            offset[1, 1] = 2 * cfg.crop_padding + 1  # a bad crop offset: sample 1 is NaN
            augment = AugmentDraw(offset, augment.flip)
        out_dtype = cfg.resolve_out_dtype(x)
        weights = None
        if x.dtype != torch.uint8:
            weights = [torch.randn(B, C, H, W, generator=gen).to(out_dtype) for _ in range(2)]
        inputs.append((x, draw, cfg, augment, weights))
    return inputs


def mix_results(inputs: list[tuple], threads: int | None = None) -> list[torch.Tensor]:
    """x_clean, x_mix (and, for float input, the input gradient of a weighted sum of both) of each
    batch of `inputs` through the native op, with `threads` threads (None: as set)."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    results = []
    try:
        for x, draw, cfg, augment, weights in inputs:
            x = x.detach().requires_grad_(weights is not None)
            clean, mixed = native.mix_images(x, draw, cfg, augment)
            results += [clean, mixed]
            if weights is not None:
                loss = (clean.float() * weights[0]).sum() + (mixed.float() * weights[1]).sum()
                results += list(torch.autograd.grad(loss, x))
    finally:
        torch.set_num_threads(previous)
    return [t.detach() for t in results]


def test_mix_results_do_not_depend_on_the_thread_count():
    """Every element is computed by the same operations whatever task holds it: 1, 2 and 3
    threads split the rows differently and agree bit for bit, NaN included."""
    inputs = invariance_inputs()
    expected = mix_results(inputs, threads=1)
    assert any(t.isnan().any() for t in expected) and all(t.isfinite().any() for t in expected)
    for threads in (2, 3):
        for k, (got, want) in enumerate(zip(mix_results(inputs, threads), expected)):
            assert_bitwise_equal(got, want, name=f"{threads} threads, result {k}")


def test_mix_results_do_not_depend_on_the_instruction_set(tmp_path):
    """The kernels are compiled once per instruction set (csrc/cpu/mix_rows.inc) and pick one at
    run time as ATen does (ATEN_CPU_CAPABILITY lowers it): every set the CPU has gives the same
    bits on the same inputs (no FMA contraction; vector and scalar tails compute alike)."""
    torch.save(invariance_inputs(), tmp_path / "inputs.pt")
    script = (
        "import sys, torch\n"
        "from tests.ops.test_native_backend import mix_results\n"
        "inputs = torch.load(sys.argv[1], weights_only=False)\n"
        "torch.save((torch.backends.cpu.get_cpu_capability(), mix_results(inputs)), sys.argv[2])\n"
    )
    repo = Path(__file__).resolve().parents[2]
    results = {}
    for capability in ("default", "avx2", "avx512"):
        path = tmp_path / f"{capability}.pt"
        env = {"ATEN_CPU_CAPABILITY": capability, "PATH": "", "PYTHONPATH": str(repo)}
        command = [sys.executable, "-c", script, str(tmp_path / "inputs.pt"), str(path)]
        done = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-4000:]
        used, outputs = torch.load(path)
        results.setdefault(used, outputs)
    if len(results) < 2:
        pytest.skip(f"this CPU offers one instruction set only ({list(results)})")
    (first, expected), *others = results.items()
    for name, outputs in others:
        for k, (got, want) in enumerate(zip(outputs, expected)):
            assert_bitwise_equal(got, want, name=f"{name} vs {first}, result {k}")
