"""The native backend as a build artefact: the CUDA sources compile (where nvcc exists, even
without a GPU or a CUDA torch), the package works without the extension and says how to build
it, the backend registry reports it, and a whole `fused_sem_step` on it matches the reference.
"""

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch

import sem_fast.ops.native as native
from sem_fast import SEMConfig, available_backends, fused_sem_step, sample_draw
from sem_fast.sampling import sample_augment
from tests.utils import TinyNet, assert_close

CSRC = Path(__file__).resolve().parents[2] / "csrc"
NVCC = shutil.which("nvcc")
CXX = shutil.which(os.environ.get("CXX", "c++"))
#: What torch's CUDAExtension passes to nvcc: no implicit half/bfloat16 conversions or operators.
TORCH_NVCC_DEFINES = [
    "-D__CUDA_NO_HALF_OPERATORS__",
    "-D__CUDA_NO_HALF_CONVERSIONS__",
    "-D__CUDA_NO_BFLOAT16_CONVERSIONS__",
    "-D__CUDA_NO_HALF2_OPERATORS__",
]
#: sm_80 (A100): the oldest architecture with native bf16, compiled for in CI as a representative.
ARCH = "-arch=sm_80"
TOL32 = dict(rtol=1e-5, atol=1e-6)
needs_ext = pytest.mark.skipif(native.probe("cpu") is not None, reason=f"{native.probe('cpu')}")


@pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH")
def test_cuda_kernels_compile_with_nvcc_alone(tmp_path):
    """The .cu files include no torch header: nvcc compiles them without torch's include paths."""
    sources = sorted(CSRC.glob("cuda/*.cu"))
    assert sources
    jobs = [
        subprocess.Popen(
            [NVCC, "-std=c++17", "-O3", ARCH, *TORCH_NVCC_DEFINES, "-c", str(src), "-o", tmp_path / f"{src.stem}.o"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for src in sources
    ]
    for src, job in zip(sources, jobs):
        output, _ = job.communicate()
        assert job.returncode == 0, f"nvcc failed on {src.name}:\n{output}"
        assert (tmp_path / f"{src.stem}.o").stat().st_size > 0


@pytest.mark.skipif(NVCC is None or CXX is None, reason="needs nvcc (for the CUDA headers) and a C++ compiler")
def test_cuda_binding_compiles_against_the_torch_headers(tmp_path):
    """Syntax check of csrc/cuda/ops_cuda.cpp (the only CUDA file with torch headers). A CPU
    torch wheel lacks the one CMake-generated c10/cuda header; a stand-in provides it."""
    from torch.utils.cpp_extension import include_paths

    includes = [f"-I{p}" for p in include_paths()]
    if not any(Path(p, "c10/cuda/impl/cuda_cmake_macros.h").exists() for p in include_paths()):
        stub = tmp_path / "c10" / "cuda" / "impl" / "cuda_cmake_macros.h"
        stub.parent.mkdir(parents=True)
        stub.write_text("#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n")
        includes.append(f"-I{tmp_path}")
    cuda_include = _cuda_include_dir()
    python_include = sysconfig.get_paths()["include"]
    cmd = [CXX, "-std=c++20", "-fsyntax-only", *includes, f"-I{cuda_include}", f"-I{python_include}",
           str(CSRC / "cuda" / "ops_cuda.cpp")]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]


def _cuda_include_dir() -> Path:
    """The CUDA toolkit's include folder: $CUDA_HOME, $CUDA_PATH, beside nvcc, or /usr/local/cuda
    (nvcc may be a wrapper script elsewhere on PATH)."""
    env = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    for root in filter(None, [*env, Path(NVCC).resolve().parents[1], "/usr/local/cuda"]):
        if (Path(root) / "include" / "cuda_runtime.h").is_file():
            return Path(root) / "include"
    pytest.skip("no CUDA toolkit include folder with cuda_runtime.h found")


def test_without_the_extension_the_package_runs_and_backend_native_says_how_to_build_it():
    """A fresh interpreter in which `sem_fast._C` cannot be imported (as after SEM_FAST_NO_EXT=1)."""
    script = """
import sys
sys.modules["sem_fast._C"] = None  # makes `import sem_fast._C` raise ImportError
import torch
from sem_fast import SEMConfig, available_backends, fused_sem_step, sample_draw
from sem_fast.ops.registry import get_backend
from tests.utils import TinyNet
reason = available_backends("cpu")["native"]
assert "pip install --no-deps --no-build-isolation -e ." in reason, reason
assert get_backend("auto", "cpu").name == "reference"
images, labels = torch.zeros(2, 8, 8, 3, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64)
assert fused_sem_step(TinyNet(), images, labels, SEMConfig()).loss.isfinite()
try:
    fused_sem_step(TinyNet(), images, labels, SEMConfig(backend="native"))
except ValueError as error:
    assert "backend='native' cannot run on cpu" in str(error) and "pip install" in str(error), error
else:
    raise AssertionError("backend='native' ran without the extension")
"""
    repo = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=repo)
    assert result.returncode == 0, result.stderr[-4000:]


@needs_ext
def test_registry_reports_the_backend_and_why_it_cannot_run_elsewhere():
    assert available_backends("cpu")["native"] is None
    assert "cpu and cuda only" in native.probe("mps")
    if not torch._C._dispatch_has_kernel_for_dispatch_key("sem_fast_native::mix_images", "CUDA"):
        assert "built without CUDA kernels" in available_backends("cuda")["native"]


@needs_ext
@pytest.mark.parametrize("detach_target", [True, False])
def test_fused_step_on_the_native_backend_matches_the_reference(detach_target):
    """Loss and parameter gradients of a whole step (uint8 images, crop/flip, CutMix or mixup per
    sample) with backend='native' against backend='reference' on the same draws."""
    gen = torch.Generator().manual_seed(0)
    B, H, W = 6, 9, 7
    images = torch.randint(0, 256, (B, H, W, 3), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 10, (B,), generator=gen)
    cfg = SEMConfig(mix="switch", lam_mode="elem", crop_padding=2, hflip=True, label_smoothing=0.1,
                    detach_target=detach_target)  # fmt: skip
    draw = sample_draw(B, H, W, cfg, device="cpu", generator=gen)
    augment = sample_augment(B, cfg, device="cpu", generator=gen)
    results = []
    for backend in ("native", "reference"):
        torch.manual_seed(1)
        model = TinyNet()
        out = fused_sem_step(model, images, labels, cfg.replace(backend=backend), draw=draw, augment=augment)
        out.loss.backward()
        results.append((out, [p.grad for p in model.parameters()]))
    (fast, fast_grads), (expected, expected_grads) = results
    for name in ("loss", "ce", "sem", "logits"):
        assert_close(getattr(fast, name), getattr(expected, name), name=name, **TOL32)
    for k, (g, e) in enumerate(zip(fast_grads, expected_grads)):
        assert_close(g, e, name=f"parameter {k} gradient", **TOL32)
