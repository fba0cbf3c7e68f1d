"""The backend registry and the shared op definitions: one schema per op for every fast backend,
``'auto'`` falling through to the next backend when one cannot take an input, the deprecated
``'cuda'`` name, and float64 (reference only)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sem_fast import SEMConfig, fused_sem_step, mix_images, sample_draw, sem_loss
from sem_fast import reference as ref
from sem_fast.ops import schema
from sem_fast.ops.registry import NAMES, available_backends, get_backend
from tests.ops.cases import elem_draw, images, mix_cfg, problem, switch_draw
from tests.utils import TinyNet, assert_close

FAST = [name for name in schema.NAMESPACES if available_backends("cpu")[name] is None]
#: float64 through the reference: the same computation as float32, so within float32's rounding.
TOL32 = dict(rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op", sorted(schema.SCHEMAS))
def test_every_fast_backend_registers_the_op_with_the_one_shared_schema(op):
    """Argument names, order, types and outputs are defined once (`sem_fast.ops.schema`)."""
    for name in FAST:
        get_backend(name, "cpu")  # loads the backend, which registers its kernels
    shapes = set()
    for namespace in schema.NAMESPACES.values():
        declared = getattr(getattr(torch.ops, namespace), op).default._schema
        assert declared.name == f"{namespace}::{op}"
        shapes.add(str(declared).removeprefix(f"{namespace}::{op}"))
    assert shapes == {schema.SCHEMAS[op]}


@pytest.mark.parametrize("name", FAST)
def test_loss_op_arguments_by_name_mean_the_same_on_every_backend(name):
    """A swapped gamma / label_smoothing in one backend would show here: the op is called with
    keyword arguments and compared with the reference."""
    gen = torch.Generator().manual_seed(3)
    logits, z_mix, z_clean, labels = problem(6, 7, 5, torch.float32, gen)
    draw = elem_draw(6, gen)
    get_backend(name, "cpu")
    op = getattr(torch.ops, schema.NAMESPACES[name]).sem_loss
    got = op(
        logits=logits, z_mix=z_mix, z_clean=z_clean, labels=labels, perm=draw.perm, lam=draw.lam,
        gamma=0.7, label_smoothing=0.2, sem_mean=False,
    )  # fmt: skip
    cfg = SEMConfig(gamma=0.7, label_smoothing=0.2, sem_reduction="sum")
    for g, expected in zip(got[:3], ref.sem_loss(logits, z_mix, z_clean, labels, draw, cfg)):
        assert_close(g, expected, **TOL32)


def test_backend_names_and_the_deprecated_cuda_alias():
    assert NAMES == ("reference", "triton", "native", "auto")
    with pytest.warns(DeprecationWarning, match="backend='cuda' is deprecated.*use backend='native'"):
        cfg = SEMConfig(backend="cuda")
    assert cfg.backend == "native"
    with pytest.warns(DeprecationWarning, match="backend='cuda' is deprecated"):
        assert get_backend("cuda", "cpu").name == "native"
    with pytest.raises(ValueError, match="backend must be one of"):
        get_backend("cudnn", "cpu")
    with pytest.raises(ValueError, match=r"SEMConfig.backend must be one of \('auto', 'triton', 'native', 'reference'\)"):
        SEMConfig(backend="gpu")


def test_auto_takes_the_first_backend_that_runs_on_the_device_and_takes_the_input():
    uint8 = torch.zeros(2, 4, 4, 3, dtype=torch.uint8)
    assert get_backend("auto", "cpu", uint8).name == "native"
    assert get_backend("auto", "cpu", torch.zeros(2, 4, 4, 17, dtype=torch.uint8)).name == "reference"
    assert get_backend("auto", "cpu", torch.zeros(2, 3, 4, 4, dtype=torch.float64)).name == "reference"
    assert get_backend("auto", "meta", uint8).name == "reference"


@pytest.mark.parametrize("name", FAST)
def test_float64_runs_on_the_reference_through_auto_and_is_refused_by_name(name):
    gen = torch.Generator().manual_seed(4)
    x = images("float", 3, 3, 5, 6, torch.float64, gen)
    draw = switch_draw(3, 5, 6, gen)
    cfg = mix_cfg(3)
    clean, mixed = mix_images(x, draw, cfg)
    assert clean.dtype == mixed.dtype == torch.float64
    expected = ref.mix_images(x, draw, cfg)
    assert torch.equal(clean, expected[0]) and torch.equal(mixed, expected[1])
    with pytest.raises(ValueError, match=rf"backend='{name}' cannot take this input: .*not float64.*'reference'"):
        mix_images(x, draw, cfg.replace(backend=name))
    logits, z_mix, z_clean, labels = problem(3, 4, 5, torch.float64, gen)
    loss = sem_loss(logits, z_mix, z_clean, labels, draw, cfg)[0]
    assert loss.dtype == torch.float64
    with pytest.raises(ValueError, match=rf"backend='{name}' cannot take this input"):
        sem_loss(logits, z_mix, z_clean, labels, draw, cfg.replace(backend=name))


def test_a_float64_model_trains_on_auto_through_the_reference():
    """uint8 images take the fast mix (float32 out), a float64 model's features take the reference loss."""
    torch.manual_seed(0)
    model = TinyNet().double()
    images_ = torch.randint(0, 256, (4, 8, 8, 3), dtype=torch.uint8)
    labels = torch.randint(0, 10, (4,))
    cfg = SEMConfig(out_dtype=None)
    draw = sample_draw(4, 8, 8, cfg, device="cpu", generator=torch.Generator().manual_seed(1))

    class Float64Input(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def encode(self, x):
            return self.net.encode(x.double())

        def classify(self, z):
            return self.net.classify(z)

    out = fused_sem_step(Float64Input(model), images_, labels, cfg, draw=draw)
    assert out.loss.dtype == torch.float64 and out.loss.isfinite()


@pytest.mark.slow
@pytest.mark.parametrize("name", FAST)
def test_a_step_compiled_before_any_eager_call_loads_its_backend(name):
    """In a fresh interpreter the backend module is first imported while torch.compile traces the
    step (fullgraph): the registry's loader must be traceable."""
    script = f"""
import torch
from sem_fast import SEMConfig, fused_sem_step, sample_draw
from tests.utils import TinyNet
cfg = SEMConfig(backend={name!r})
images, labels = torch.randint(0, 256, (4, 8, 8, 3), dtype=torch.uint8), torch.arange(4)
draw = sample_draw(4, 8, 8, cfg, device="cpu")
step = torch.compile(fused_sem_step, fullgraph=True)
assert step(TinyNet(), images, labels, cfg, draw=draw, check_values=False).loss.isfinite()
"""
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo), "TRITON_INTERPRET": "1"}
    result = subprocess.run([sys.executable, "-c", script], cwd=repo, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]
