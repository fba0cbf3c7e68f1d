"""Install sem_fast, and build its optional compiled backend (``csrc/`` -> ``sem_fast._C``).

Install with ``pip install --no-build-isolation -e .`` into an environment that already has
torch: the extension is compiled against the torch it runs with, and an isolated build (plain
``pip install .``) has no torch to compile against, so it installs the pure-Python package
(``sem-fast info`` shows which backends run where). The optional features are pip extras named
once in `sem_fast.extras` (``pip install -e ".[plots,yaml]"``, or ``".[all]"``).

The extension holds the ``backend='native'`` ops: C++ CPU kernels always, CUDA kernels too when
torch is a CUDA build and ``nvcc`` is found (``CUDA_HOME``). Environment switches:

- ``SEM_FAST_NO_EXT=1``: skip the extension (pure-Python install).
- ``SEM_FAST_NO_CUDA=1``: build only the CPU kernels even where CUDA is available.
- ``SEM_FAST_REQUIRE_EXT=1``: a failed extension build fails the install. Without it a failed
  build prints a warning and the pure-Python package is installed (``backend='native'`` then
  reports why it is unavailable).
"""

from __future__ import annotations

import glob
import os
import runpy
import sys

from setuptools import find_packages, setup


def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


def _extension_build() -> tuple[list, dict]:
    """``(ext_modules, cmdclass)`` for the compiled backend, or empty when it is skipped."""
    if _flag("SEM_FAST_NO_EXT"):
        return [], {}
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError:
        print("sem_fast: torch is not importable at build time; skipping the compiled backend", file=sys.stderr)
        return [], {}

    sources = ["csrc/ops.cpp", *sorted(glob.glob("csrc/cpu/*.cpp"))]
    # -fopenmp: at::parallel_for splits work across threads only when compiled with OpenMP (and
    # `#pragma omp simd` marks the loops to vectorize). -fno-trapping-math: lets the compiler turn
    # float selects into vector blends, which made the CPU loss loops vectorize (3-5x faster
    # measured); the kernels never read floating-point exception flags, NaN/inf semantics are
    # unchanged.
    cxx_flags = ["-O3", "-fopenmp", "-fno-trapping-math"]
    kwargs = {"extra_link_args": ["-fopenmp"]}
    with_cuda = torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None and not _flag("SEM_FAST_NO_CUDA")
    if with_cuda:
        sources += ["csrc/cuda/ops_cuda.cpp", *sorted(glob.glob("csrc/cuda/*.cu"))]
        ext = cpp_extension.CUDAExtension(
            "sem_fast._C",
            sources,
            extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "-lineinfo"]},
            **kwargs,
        )
    else:
        ext = cpp_extension.CppExtension("sem_fast._C", sources, extra_compile_args={"cxx": cxx_flags}, **kwargs)

    class OptionalBuildExtension(cpp_extension.BuildExtension):
        """Builds the extension; on failure warns and goes on unless SEM_FAST_REQUIRE_EXT=1."""

        def run(self) -> None:
            try:
                super().run()
            except Exception as error:  # noqa: BLE001 - any compiler/toolchain failure
                if _flag("SEM_FAST_REQUIRE_EXT"):
                    raise
                print(
                    f"sem_fast: WARNING: building the compiled backend failed ({error}); installing the "
                    "pure-Python package. backend='native' will be unavailable. Set SEM_FAST_REQUIRE_EXT=1 "
                    "to make this an error.",
                    file=sys.stderr,
                )
                self.extensions = []

    return [ext], {"build_ext": OptionalBuildExtension}


ext_modules, cmdclass = _extension_build()
# The extras are declared in sem_fast/extras.py (standard library only: runs without torch).
extras = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "sem_fast", "extras.py"))

setup(
    name="sem_fast",
    version="0.1.0",
    description="Fast Semantic Equivariant Mixup (SEM) training: fused Triton/CUDA mix and loss ops",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["sem_fast", "sem_fast.*"]),
    package_data={"sem_fast.data": ["bundled/*.npz.xz", "bundled/*.md"]},
    entry_points={"console_scripts": ["sem-fast=sem_fast.cli:main"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    install_requires=["torch>=2.11,<2.16", "numpy"],
    extras_require=extras["extras_require"](),
)
