"""Helpers shared by the tests: seeding, comparisons, launch counters, the host-sync recorder, tiny
models, data helpers, subprocesses for the kill, lock and orphan tests."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Self

import numpy as np
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from sem_fast.models.linear_head import LinearHeadNet


def set_seed(seed: int = 0) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, *, atol: float, rtol: float, name: str = "") -> None:
    """``torch.testing.assert_close`` in float32 with a message naming the compared quantity."""
    torch.testing.assert_close(
        actual.float(), expected.float(), atol=atol, rtol=rtol, msg=lambda m: f"{name}: {m}" if name else m
    )


def assert_low_precision_close(
    fast: torch.Tensor, truth: torch.Tensor, plain: torch.Tensor, *, atol: float, name: str = ""
) -> None:
    """flash-attention's rule for bf16/fp16: ``max|fast - truth| <= 2 * max|plain - truth| + atol``,
    with ``truth`` the float32 reference on the same (rounded) inputs and ``plain`` the same
    computation done by plain PyTorch in the low precision. NaN anywhere fails."""
    assert fast.shape == truth.shape, f"{name}: shape {tuple(fast.shape)} != {tuple(truth.shape)}"
    err = (fast.float() - truth.float()).abs().max().item()
    plain_err = (plain.float() - truth.float()).abs().max().item()
    assert err <= 2 * plain_err + atol, (
        f"{name}: fast-path error {err:.3g} > 2 x plain low-precision error {plain_err:.3g} + {atol:g}"
    )


@contextlib.contextmanager
def triton_launches() -> Iterator[Counter]:
    """Count the Triton kernel launches (``kernel[grid](...)``) inside the block, by kernel name,
    in Triton's CPU interpreter as on a GPU: ``with triton_launches() as launches: ...``."""
    from triton.runtime.jit import KernelInterface

    launches: Counter = Counter()
    original = KernelInterface.__getitem__

    def counted_getitem(kernel, grid):
        launcher = original(kernel, grid)

        def counted(*args, **kwargs):
            launches[kernel.fn.__name__] += 1
            return launcher(*args, **kwargs)

        return counted

    KernelInterface.__getitem__ = counted_getitem
    try:
        yield launches
    finally:
        KernelInterface.__getitem__ = original


def cuda_launches(fn) -> Counter:
    """Run ``fn()`` once under the profiler and count the CUDA kernels, memsets and copies it put
    on the GPU, by name (needs a GPU)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return Counter(e.name for e in prof.events() if e.device_type == DeviceType.CUDA)


def assert_bitwise_equal(actual: torch.Tensor, expected: torch.Tensor, *, name: str = "") -> None:
    """Same dtype, shape and bits (NaN payloads and signed zeros included); reports the count and
    the first index of the differing elements."""
    assert actual.dtype == expected.dtype and actual.shape == expected.shape, (
        f"{name}: {actual.dtype} {tuple(actual.shape)} != {expected.dtype} {tuple(expected.shape)}"
    )
    as_int = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[actual.element_size()]
    differ = actual.contiguous().view(as_int) != expected.contiguous().view(as_int)
    if differ.any():
        first = tuple(differ.nonzero()[0].tolist())
        raise AssertionError(
            f"{name}: {int(differ.sum())} of {differ.numel()} elements differ, first at {first}: "
            f"{actual[first].item()} != {expected[first].item()}"
        )


# --- host syncs: ops that read device values on the host, tensors made from Python data ---------------

_aten = torch.ops.aten
#: aten ops that need a value on the host (a device -> host copy and a wait on CUDA) or whose output
#: shape depends on the data.
SYNC_OPS = {
    _aten._local_scalar_dense.default, _aten.is_nonzero.default, _aten.item.default, _aten.equal.default,
    _aten.nonzero.default, _aten.masked_select.default, _aten._unique2.default, _aten.unique_dim.default,
    _aten.unique_consecutive.default, _aten.repeat_interleave.Tensor, _aten.allclose.default,
}  # fmt: skip
#: Tensor methods that copy values to the host (on CUDA a sync; on the CPU the same code would sync on a GPU).
SYNC_METHODS = {
    torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.numpy, torch.Tensor.cpu, torch.Tensor.__bool__,
    torch.Tensor.__int__, torch.Tensor.__float__, torch.Tensor.__index__,
}  # fmt: skip
#: Functions that build a tensor from Python or numpy data (a pageable host -> device copy on CUDA).
PYTHON_DATA_FUNCTIONS = {torch.tensor, torch.as_tensor, torch.asarray, torch.from_numpy, torch.Tensor.new_tensor}
_PYTHON_DATA_OPS = {_aten.lift_fresh.default, _aten.lift_fresh_copy.default}


class _FunctionRecorder(TorchFunctionMode):
    def __init__(self, syncs: list[str], created: list[str]) -> None:
        super().__init__()
        self.syncs, self.created = syncs, created

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in SYNC_METHODS:
            self.syncs.append(f"Tensor.{func.__name__}")
        elif func is torch.Tensor.to and _to_host(args, kwargs):
            self.syncs.append("Tensor.to(cpu)")
        elif func in PYTHON_DATA_FUNCTIONS:
            self.created.append(func.__name__)
        return func(*args, **kwargs)


def _to_host(args, kwargs) -> bool:
    target = kwargs.get("device", args[1] if len(args) > 1 and isinstance(args[1], (str, torch.device)) else None)
    return target is not None and torch.device(target).type == "cpu"


class _DispatchRecorder(TorchDispatchMode):
    def __init__(self, syncs: list[str], created: list[str]) -> None:
        super().__init__()
        self.syncs, self.created = syncs, created

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in SYNC_OPS or (func in (_aten.index.Tensor, _aten.index_put_.default) and _bool_index(args)):
            self.syncs.append(str(func))
        elif func in _PYTHON_DATA_OPS:
            self.created.append(str(func))
        return func(*args, **(kwargs or {}))


def _bool_index(args) -> bool:
    """A boolean mask index (its result's shape depends on the data)."""
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1] if i is not None)


class HostSyncRecorder:
    """Records, while entered, every op that would make the host wait for a CUDA device
    (``.item()``, ``bool(t)``, ``nonzero``, ``torch.equal``, copies to the CPU, boolean-mask
    indexing, ...) in ``syncs``, and every tensor built from Python or numpy data
    (``torch.tensor``, ``as_tensor``, ``from_numpy``) in ``created``.

    It watches both levels: the torch-function level (methods such as ``Tensor.tolist``, which
    dispatch nothing on a CPU tensor) and the dispatcher (aten ops reached from C++).
    """

    def __init__(self) -> None:
        self.syncs: list[str] = []
        self.created: list[str] = []
        self._modes = (_FunctionRecorder(self.syncs, self.created), _DispatchRecorder(self.syncs, self.created))

    def __enter__(self) -> Self:
        for mode in self._modes:
            mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        for mode in reversed(self._modes):
            mode.__exit__(*exc)


def train_interrupted_then_resumed(config) -> dict:
    """Train ``config`` (a `sem_fast.train.TrainConfig`), stop it after its first epoch's
    checkpoint as a crash would, resume it to the end and return the resumed run's summary."""
    from sem_fast.train import train

    class Interrupted(Exception):
        pass

    def stop_after_first_epoch(record):
        if record["epoch"] == 1:
            raise Interrupted

    try:
        train(config, on_epoch_end=stop_after_first_epoch)
    except Interrupted:
        return train(config, resume=True)
    raise AssertionError(f"{config.run_dir} ran to the end: it has a single epoch")


class TinyNet(LinearHeadNet):
    """A small conv net with the ``encode``/``classify`` split, counting its encode calls.

    ``encode``: conv3x3(C -> width) - BN - ReLU - global average pool -> ``(B, width)``;
    ``classify``: the linear head ``width -> num_classes`` (`LinearHeadNet`, as the models of
    `sem_fast.models`). ``calls`` records, per ``encode`` call, whether grad mode was on.
    """

    def __init__(self, in_channels: int = 3, width: int = 8, num_classes: int = 10) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(in_channels, width, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(width)
        self.head = torch.nn.Linear(width, num_classes)
        self.calls: list[bool] = []

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(torch.is_grad_enabled())
        return torch.relu(self.bn(self.conv(x))).mean((2, 3))


# --- data loaders: sample identity, tiny image trees, the shared real data -----------------------


def sample_multiset(images: torch.Tensor, labels: torch.Tensor) -> Counter:
    """The multiset of ``(sha1 of one image's bytes, label)`` pairs: ``images (N, H, W, C)`` uint8 and
    ``labels (N,)`` on any device. Two epochs that visit the same samples with the same labels,
    in any order, have equal multisets."""
    images, labels = images.cpu().contiguous(), labels.cpu().tolist()
    return Counter((hashlib.sha1(image.numpy().tobytes()).digest(), label) for image, label in zip(images, labels))


def epoch_batches(loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of ``loader`` as a list of ``(images, labels)`` moved to the CPU."""
    return [(x.cpu(), y.cpu()) for x, y in loader]


def write_image_folder(root: Path, images: dict[str, list[np.ndarray]], ext: str = ".png") -> None:
    """Write ``images[class]`` (uint8 ``(H, W, 3)`` or ``(H, W)``) as ``root/<class>/<k><ext>`` with
    Pillow; JPEGs at Pillow's default quality (75)."""
    from PIL import Image

    for name, arrays in images.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for k, array in enumerate(arrays):
            Image.fromarray(array).save(root / name / f"{k}{ext}")


def mat_fixture_images() -> np.ndarray:
    """``X`` of the .mat fixtures in ``tests/data/fixtures``: uint8 ``(6, 5, 3, 7)`` (SVHN's
    ``(H, W, 3, N)`` layout) with ``X[h, w, c, n] = (31h + 17w + 5c + 3n) mod 256``."""
    h, w, c, n = np.meshgrid(np.arange(6), np.arange(5), np.arange(3), np.arange(7), indexing="ij")
    return ((h * 31 + w * 17 + c * 5 + n * 3) % 256).astype(np.uint8)


def shared_data_dir() -> Path | None:
    """The project's shared real-data folder (``<repo>/../shared/data``) when present, else None."""
    path = Path(__file__).resolve().parents[2] / "shared" / "data"
    return path if (path / "README.md").is_file() else None


#: MATLAB class and storage type of the numpy dtypes `mat_v5` writes: (mxCLASS, miTYPE).
_MAT_TYPES = {np.dtype(np.uint8): (9, 2), np.dtype(np.float64): (6, 9)}


def mat_v5(variables: dict[str, np.ndarray], *, compressed: bool) -> bytes:
    """A little-endian MATLAB v5 MAT-file holding ``variables`` (uint8 or float64 arrays), laid
    out as "MAT-File Format" (MathWorks) describes it; each variable zlib-compressed when
    ``compressed``. Independent of the reader in `sem_fast.data.matlab`, which it feeds."""
    import struct
    import zlib

    def element(kind: int, payload: bytes) -> bytes:
        return struct.pack("<II", kind, len(payload)) + payload + bytes(-len(payload) % 8)

    out = b"MATLAB 5.0 MAT-file, written by tests/utils.py".ljust(116, b" ") + bytes(8) + b"\x00\x01" + b"IM"
    for name, array in variables.items():
        mx_class, mi_type = _MAT_TYPES[array.dtype]
        matrix = (element(6, struct.pack("<II", mx_class, 0)) + element(5, struct.pack(f"<{array.ndim}i", *array.shape))
                  + element(1, name.encode()) + element(mi_type, np.asfortranarray(array).tobytes(order="F")))
        whole = element(14, matrix)
        out += struct.pack("<II", 15, len(packed := zlib.compress(whole))) + packed if compressed else whole
    return out


def write_svhn_mat(path: Path, images: np.ndarray, labels: list[int], *, compressed: bool = True) -> None:
    """An SVHN file: ``images (N, H, W, 3)`` uint8 stored as ``X (H, W, 3, N)``, ``labels`` 0-9
    stored as ``y (N, 1)`` doubles with digit 0 as 10, as published."""
    y = np.array([[label or 10] for label in labels], dtype=np.float64)
    path.write_bytes(mat_v5({"X": images.transpose(1, 2, 3, 0), "y": y}, compressed=compressed))


# --- processes: the kill, lock and orphan tests ------------------------------------------------

#: Bound on every wait: a ``sem-fast`` subprocess needs ~10 s to import torch and start on the
#: busy 2-core CI machine; nothing here should take a tenth of this bound.
TIMEOUT_S = 120.0
#: One CPU thread per process: on a busy 2-core host each op's thread barrier costs more than the
#: op (tests/run_fixtures.py), and the trainers started here run side by side.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
#: A run that trains until it is stopped: the tiny demo (2 steps of 16 images per epoch, 0.1 s),
#: a constant lr and no early stop, so that it can be resumed with a shorter --epochs.
ENDLESS_TRAIN = ["--recipe", "demo", "--width", "4", "--batch-size", "16", "--max-steps-per-epoch", "2",
                 "--eval-every", "100000", "--no-progress", "--no-plots", "--schedule", "constant",
                 "--es-fraction", "0", "--epochs", "100000"]  # fmt: skip


def start_sem_fast(*args: str, log: Path) -> subprocess.Popen:
    """``python -m sem_fast ARGS`` in the background, its output to ``log``."""
    with log.open("w") as f:
        return subprocess.Popen([sys.executable, "-m", "sem_fast", *args], stdout=f, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=ENV)  # fmt: skip


def wait_for(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT_S) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def children(pid: int) -> list[int]:
    """The pids of ``pid``'s child processes (Linux ``/proc``)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended while listed
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def gone(pid: int) -> bool:
    """Whether process ``pid`` has ended (a zombie waiting for its reaper counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"
