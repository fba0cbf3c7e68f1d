"""The Triton backend in the registry and in `fused_sem_step`, eager and under
``torch.compile(fullgraph=True)`` (on CPU through Triton's interpreter, see the root
``conftest.py``), its int64 indexing path, and its registration: on CUDA, torch.compile traces the
ops into their Triton kernels (checked here without a GPU, on fake CUDA tensors in a child
process; on a GPU through Inductor), on CPU it keeps them whole. Its ops against the reference:
``test_mix.py`` and ``test_sem_loss.py``, shared with the other backends."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import triton
import triton.language as tl
from torch._functorch.aot_autograd import aot_function
from torch._subclasses.functional_tensor import FunctionalTensorMode

import sem_fast.ops.triton as triton_backend
import sem_fast.ops.triton.mix as triton_mix
from sem_fast import SEMConfig, available_backends, fused_sem_step, mix_images, sample_draw
from sem_fast.data import load_bundled
from sem_fast.ops.registry import get_backend
from sem_fast.ops.schema import SCHEMAS
from sem_fast.ops.triton import utils as triton_utils
from sem_fast.ops.triton.utils import cast_to
from sem_fast.sampling import sample_augment
from tests.ops.cases import elem_draw, images, mix_op_args, problem, switch_draw, to_device
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


# --- registration: what torch.compile sees --------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]


def _graphs_of(fn, *args, **aot_options) -> list[torch.fx.GraphModule]:
    """The graphs AOTAutograd makes of ``fn(*args)`` (inference: no input requires grad)."""
    graphs = []

    def keep(gm, _inputs):
        graphs.append(gm)
        return gm

    aot_function(fn, fw_compiler=keep, **aot_options)(*args)
    return graphs


def _loss_op_args():
    gen = torch.Generator().manual_seed(20)
    logits, z_mix, z_clean, labels = problem(5, 7, 3, torch.float32, gen)
    draw = elem_draw(5, gen)
    return logits, z_mix, z_clean, labels, draw.perm, draw.lam


def test_every_op_has_a_functional_mode_rule_that_keeps_it_whole_on_cpu():
    """The rule is registered for every op; in the interpreter (CPU tensors) AOTAutograd keeps the
    op as one node, run by its eager kernel."""
    from torch._library.simple_registry import singleton

    for name in SCHEMAS:
        assert singleton.find(f"sem_fast_triton::{name}").torch_dispatch_rules.find(FunctionalTensorMode) is not None
    args = _loss_op_args()
    (graph,) = _graphs_of(lambda *a: torch.ops.sem_fast_triton.sem_loss(*a, 0.5, 0.1, True), *args)
    targets = [str(n.target) for n in graph.graph.nodes if n.op == "call_function"]
    assert targets == ["sem_fast_triton.sem_loss.default"] + ["<built-in function getitem>"] * 5
    expected = torch.ops.sem_fast_triton.sem_loss(*args, 0.5, 0.1, True)
    for got, exp in zip(graph(*args), expected):
        assert torch.equal(got, exp) or got.isnan().all()


def traced_kernels() -> dict[str, list[tuple[str, list[str], list[str]]]]:
    """Run without TRITON_INTERPRET, on fake CUDA tensors with a stand-in Triton driver for an H100
    (Inductor's mutation analysis compiles each kernel to TTIR for it): per traced op, the graph's
    ``call_function`` targets and, per kernel node, its kernel's name, the tensors it writes, and
    which of them are graph inputs."""
    import triton
    from torch._dynamo.source import ConstantSource
    from torch._higher_order_ops.triton_kernel_wrap import kernel_side_table
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import ShapeEnv
    from triton.backends.compiler import GPUTarget

    class H100Driver:
        def get_current_target(self):
            return GPUTarget("cuda", 90, 32)

    triton.runtime.driver.set_active(H100Driver())
    import sem_fast.ops.triton.loss as triton_loss

    triton_loss._sm_count = lambda device: 132
    ops = torch.ops.sem_fast_triton
    found = {}

    def trace(name, fn, *args, **aot_options):
        (graph,) = _graphs_of(fn, *args, **aot_options)
        inputs = {n.name for n in graph.graph.nodes if n.op == "placeholder"}
        kernels, others = [], []
        for node in graph.graph.nodes:
            if node.op != "call_function" or "getitem" in str(node.target):
                continue
            if "triton_kernel_wrapper" not in str(node.target):
                others.append(str(node.target).removeprefix("aten."))
                continue
            written = node.kwargs["tensors_to_clone"]
            tensors = node.kwargs["kwargs"]
            kernel = kernel_side_table.get_kernel(node.kwargs["kernel_idx"]).fn.__name__
            kernels.append((kernel, written, [k for k in written if tensors[k].name in inputs]))
        found[name] = {"kernels": kernels, "others": others}

    def fake_cuda(*tensors, batch=None):
        """Inside FakeTensorMode: a fake CUDA tensor like each of ``tensors``, its first size
        ``batch`` if given (a symbolic size)."""
        return [torch.empty((batch or t.shape[0], *t.shape[1:]), dtype=t.dtype, device="cuda") for t in tensors]

    gen = torch.Generator().manual_seed(21)
    cfg = SEMConfig(crop_padding=2, hflip=True)
    x = images("uint8", 4, 3, 8, 8, torch.float32, gen)
    augment = sample_augment(4, cfg, device="cpu", generator=gen)
    mix_args = mix_op_args(x, switch_draw(4, 8, 8, gen), cfg, augment)
    loss_args = _loss_op_args()
    with FakeTensorMode():
        loss_args = fake_cuda(*loss_args)
        trace("sem_loss", lambda *a: ops.sem_loss(*a, 0.5, 0.1, True), *loss_args)
        row_stats, inv_perm = torch.empty(5, 2, device="cuda"), torch.empty(5, dtype=torch.int64, device="cuda")
        g = torch.empty((), device="cuda")
        trace(
            "sem_loss_backward",
            lambda *a: ops.sem_loss_backward(g, None, g, *a, 0.5, 0.1, True, True, True, True),
            *loss_args, row_stats, inv_perm,
        )  # fmt: skip
        tensors = fake_cuda(*mix_args[:7])
        trace("mix_images", lambda *t: ops.mix_images(*t, *mix_args[7:]), *tensors)
        grad = torch.empty(4, 3, 8, 8, device="cuda")
        trace(
            "mix_images_backward",
            lambda *t: ops.mix_images_backward(*t, 2, False, torch.float32, False), grad, grad, *tensors[1:],
        )  # fmt: skip
    shape_env = ShapeEnv()
    batch = shape_env.create_symintnode(shape_env.create_symbol(5, ConstantSource("B")), hint=5)
    with FakeTensorMode(shape_env=shape_env):
        dynamic_args = fake_cuda(*_loss_op_args(), batch=batch)
        trace("sem_loss_dynamic", lambda *a: ops.sem_loss(*a, 0.5, 0.1, True), *dynamic_args)
    return found


def test_on_cuda_every_op_traces_into_its_kernels_writing_only_its_outputs():
    """What Inductor gets on CUDA: one Triton kernel node per launch and no opaque op, each
    kernel writing only buffers allocated in the graph (a written graph input would cost a copy
    per call); symbolic shapes keep the op whole (the launchers pick block sizes from sizes)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    code = "from tests.ops.test_triton_backend import traced_kernels; print(repr(traced_kernels()))"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]
    found = eval(result.stdout.strip().splitlines()[-1])
    kernels = {name: [k[0] for k in graph["kernels"]] for name, graph in found.items()}
    assert kernels == {
        "sem_loss": ["_sem_loss_forward_kernel"],
        "sem_loss_dynamic": [],
        "sem_loss_backward": ["_sem_loss_backward_kernel"],
        "mix_images": ["_mix_forward_kernel"],
        "mix_images_backward": ["_inverse_permutation_kernel", "_mix_backward_kernel"],
    }
    assert found["sem_loss_dynamic"]["others"] == ["sem_fast_triton.sem_loss.default"]
    for name, graph in found.items():
        assert all(not written_inputs for _, _, written_inputs in graph["kernels"]), (name, graph["kernels"])
        if name != "sem_loss_dynamic":
            assert not any(other.startswith("sem_fast_triton") for other in graph["others"]), (name, graph["others"])
    # The forward's election counter is a zeros node of the graph (its only non-allocation op
    # besides the constant mean/std of the mix).
    assert found["sem_loss"]["others"].count("zeros.default") == 1
    assert "counter_ptr" in found["sem_loss"]["kernels"][0][1]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_the_election_counter_is_cached_per_stream_and_fresh_while_capturing():
    device = torch.device("cuda")
    first = triton_utils.election_counter(device)
    assert first is triton_utils.election_counter(device) and first.item() == 0
    with torch.cuda.stream(torch.cuda.Stream()):
        assert triton_utils.election_counter(device) is not first
    graph, stream = torch.cuda.CUDAGraph(), torch.cuda.Stream()
    with torch.cuda.stream(stream):
        cached = triton_utils.election_counter(device)
        with torch.cuda.graph(graph, stream=stream):
            captured = triton_utils.election_counter(device)
    assert captured is not cached


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_inductor_launches_the_loss_kernels_itself_and_cuda_graphs_replay_them():
    """fullgraph Inductor: the generated forward and backward launch our kernels (no call of the
    opaque op), values and gradients match eager, and so do CUDA-graph replays
    (mode='reduce-overhead')."""
    from torch._inductor.utils import run_and_get_code

    logits, z_mix, z_clean, labels, perm, lam = to_device("cuda", *_loss_op_args())

    def loss_fn(logits, z_mix, z_clean):
        return torch.ops.sem_fast_triton.sem_loss(logits, z_mix, z_clean, labels, perm, lam, 0.5, 0.1, True)[0]

    def run(fn):
        leaves = [t.clone().requires_grad_(True) for t in (logits, z_mix, z_clean)]
        loss = fn(*leaves)
        loss.backward()
        return [loss.detach(), *(t.grad for t in leaves)]

    expected = run(loss_fn)
    torch._dynamo.reset()
    got, code = run_and_get_code(run, torch.compile(loss_fn, fullgraph=True))
    source = "\n".join(code)
    assert "_sem_loss_forward_kernel" in source and "_sem_loss_backward_kernel" in source
    assert "sem_fast_triton.sem_loss" not in source
    graphed = torch.compile(loss_fn, fullgraph=True, mode="reduce-overhead")
    replays = [run(graphed) for _ in range(3)]  # warm-up, record, replay
    for results in (got, *replays):
        for g, e in zip(results, expected):
            assert_close(g, e, **TOL32)


@triton.jit
def _cast_kernel(x_ptr, y_ptr, N: tl.constexpr):
    offsets = tl.arange(0, N)
    tl.store(y_ptr + offsets, cast_to(tl.load(x_ptr + offsets), y_ptr.dtype.element_ty))


def test_bf16_cast_rounds_to_nearest_even_and_keeps_every_nan():
    """`cast_to` (every bf16 store of the Triton kernels): round to nearest even like PyTorch on
    finite values and infinities, NaN for every NaN payload, the canonical 0x7FFFFFFF included."""
    nan_bits = torch.tensor([0x7FFFFFFF, -1, 0x7FFF8000, 0x7FFFC000, 0x7F800001, 0x7FC00000], dtype=torch.int32)
    finite = torch.tensor([1.0 + 3 / 256, 1.0 + 1 / 256, 1.0 + 2**-8 + 2**-20, -3.3, 1e-40, 3.4e38, float("inf")])
    x = torch.cat([finite, nan_bits.view(torch.float32), torch.zeros(3)])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    y = torch.empty(16, dtype=torch.bfloat16, device=device)
    _cast_kernel[(1,)](x.to(device), y, 16)
    y = y.cpu()
    assert y[7:13].isnan().all(), y[7:13].view(torch.int16)
    finite_too = torch.cat([finite, torch.zeros(3)])
    assert torch.equal(torch.cat([y[:7], y[13:]]).view(torch.int16), finite_too.to(torch.bfloat16).view(torch.int16))


def test_magic_number_division_is_exact_for_every_31_bit_numerator():
    """`_magic` (and the CUDA kernels' FastDiv, the same numbers): ``(umulhi(n, m) + n) >> s``
    equals ``n // d`` for 0 <= n < 2**31, checked on small, random and extreme n and d."""
    gen = torch.Generator().manual_seed(0)
    n = torch.cat([torch.arange(5000), torch.randint(0, 2**31, (20000,), generator=gen), torch.tensor([2**31 - 1])])
    for d in [*range(1, 300), 1000, 4095, 4096, 4097, 2**20 + 7, 2**30 + 1, 2**31 - 1]:
        m, s = triton_mix._magic(d)
        quotient = (((n * (m & 0xFFFFFFFF)) >> 32) + n) >> s
        assert torch.equal(quotient, n // d), d
