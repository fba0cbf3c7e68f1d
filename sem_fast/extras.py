"""The optional features of sem_fast, each named once: its pip extra, what it installs, what needs it.

``setup.py`` reads `EXTRAS` (this module imports only the standard library at module level, so
``setup.py`` can run it without torch) to declare ``pip install "sem_fast[plots,yaml]"``; code that
needs an optional package calls `require`, whose ``ImportError`` names the extra to install (never a
silent ``None``); ``sem-fast info`` (`sem_fast.info`) lists which extras are present.

    plots = require("matplotlib", "the learning-curve and sweep figures")
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sys
import warnings
from types import ModuleType
from typing import NamedTuple


class Extra(NamedTuple):
    """One pip extra of sem_fast.

    Attributes:
        requirements: what ``pip install "sem_fast[<name>]"`` installs (PEP 508 strings).
        modules: the import names it provides (what `require` and `sem_fast.info` look for).
        needed_by: what in sem_fast uses it (shown by ``sem-fast info`` and in errors).
    """

    requirements: tuple[str, ...]
    modules: tuple[str, ...]
    needed_by: str


#: Every optional feature. torch is a hard requirement (kept, never replaced: see README,
#: "Install"); CUDA torch pins its own triton (2.11: ==3.6.0, 2.12: ==3.7.0, 2.13: ==3.7.1,
#: 2.14: ~=3.8.0, 2.15: ~=3.9.0 on Linux), so Triton is no extra: only the CPU interpreter of the
#: test suite installs it separately (``test``).
EXTRAS: dict[str, Extra] = {
    "plots": Extra(("matplotlib>=3.7",), ("matplotlib",), "figures: learning curves, sweep plots, the embedding"),
    "yaml": Extra(("pyyaml",), ("yaml",), "sweep specs written in YAML (.yaml/.yml)"),
    "images": Extra(("pillow",), ("PIL",), "decoding image files (imagefolder, tiny-imagenet) on the cpu loader"),
    "bench": Extra(("pytest", "pytest-benchmark"), ("pytest", "pytest_benchmark"), "pytest benchmarks"),
    "torchvision": Extra(("torchvision",), ("torchvision",), "examples/own_training_loop.py, torchvision peers"),
    "timm": Extra(("timm>=1.0",), ("timm",), "split() of timm models, timm peers in the benchmarks"),
    "dali": Extra(("nvidia-dali-cuda130",), ("nvidia.dali",), "make_loader(backend='dali') (CUDA 13 wheel)"),
    "dali-cuda120": Extra(("nvidia-dali-cuda120",), ("nvidia.dali",), "make_loader(backend='dali') (CUDA 12 wheel)"),
    "ray": Extra(("ray[tune]",), ("ray.tune",), "sem-fast sweep --backend ray"),
}

#: ``sem_fast[all]``: every extra except the CUDA 12 build of DALI (the CUDA 13 one is in).
ALL = tuple(name for name in EXTRAS if name != "dali-cuda120")
#: ``sem_fast[test]``: what the test suite needs on top of ``all``: hypothesis, and Triton for its
#: CPU interpreter (CPU torch does not depend on triton).
TEST_ONLY = ("hypothesis", "triton")


def extras_require() -> dict[str, list[str]]:
    """``setup(extras_require=...)``: every extra, plus ``all`` and ``test``."""
    table = {name: list(extra.requirements) for name, extra in EXTRAS.items()}
    table["all"] = sorted({req for name in ALL for req in EXTRAS[name].requirements})
    table["test"] = [*table["all"], *TEST_ONLY]
    return table


class MissingExtraError(ImportError):
    """An optional package is not installed; the message names the sem_fast extra to install."""


def install_hint(extra: str) -> str:
    """How to install ``extra`` into a clone's or an installed sem_fast's environment."""
    reqs = " ".join(f'"{r}"' if "[" in r or ">" in r else r for r in EXTRAS[extra].requirements)
    return f'pip install "sem_fast[{extra}]" (from a clone: pip install -e ".[{extra}]"; or pip install {reqs})'


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` (one of an extra's `Extra.modules`) or raise `MissingExtraError` saying
    that ``purpose`` needs it and which extra installs it."""
    extra = next(name for name, e in EXTRAS.items() if module in e.modules)
    try:
        __import__(module)  # the builtin import statement's path (tests replace it to hide a package)
    except ImportError as err:
        raise MissingExtraError(
            f"{purpose} needs {module}, which cannot be imported ({err}): {install_hint(extra)}"
        ) from err
    return sys.modules[module]


def installed_version(distribution: str) -> str | None:
    """The installed version of a distribution (pip name), or None."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def module_present(module: str) -> bool:
    """Whether ``module`` could be imported (found on the path; nothing is imported)."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a missing parent package (``nvidia`` of ``nvidia.dali``)
        return False


#: Why torchvision's compiled ops are missing, once the schemas below had to be defined.
TORCHVISION_OPS_MISSING: list[str] = []
_TORCHVISION_SCHEMAS: list = []  # the torch.library.Library that holds them (kept alive)


def import_torchvision(purpose: str) -> ModuleType:
    """Import torchvision (extra ``torchvision``) for ``purpose``, also where its compiled ops cannot load.

    torchvision's Linux wheels on PyPI are CUDA builds: next to a CPU build of torch their
    ``_C`` library does not load, and ``import torchvision`` then fails registering fake kernels
    for ``torchvision::nms``. Its Python parts (models, ``transforms.v2``) need none of those ops,
    so in that one case the schemas of ``nms``/``qnms`` are defined (without kernels: calling
    ``torchvision.ops.nms`` raises) and a ``RuntimeWarning`` says so; a torchvision that imports is
    left alone. The CPU wheels of https://download.pytorch.org/whl/cpu have working ops.
    """
    if not module_present("torchvision"):
        require("torchvision", purpose)  # raises MissingExtraError naming the extra
    try:
        import torchvision
    except (RuntimeError, ImportError) as err:
        if "torchvision::" not in str(err) or TORCHVISION_OPS_MISSING:
            raise
        _define_torchvision_schemas(err)
        import torchvision
    return torchvision


def _define_torchvision_schemas(error: Exception) -> None:
    import torch

    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor")
    _TORCHVISION_SCHEMAS.append(lib)
    reason = f"torchvision's compiled ops do not load with this torch ({error})"
    TORCHVISION_OPS_MISSING.append(reason)
    warnings.warn(
        f"{reason}: its models and transforms work, its compiled ops (nms, roi_align, image decoding) do not; "
        "for those install the torchvision build that matches torch (CPU torch: the wheels of "
        "https://download.pytorch.org/whl/cpu)",
        RuntimeWarning,
        stacklevel=3,
    )
