"""Reading untrusted array files and checking them against what a dataset declares.

Every reader of `sem_fast.data` goes through here, so that any corruption of a file (truncation,
flipped bits, another layout, another dtype, labels out of range) raises `DatasetFormatError`
naming the file and the field, never a bare numpy/pickle error and never a silent wrong answer:

- `read_npy` / `read_npz`: ``.npy`` files and ``.npz`` archives (also in memory); the header
  (dtype, shape, order) is checked against the file's size *before* any data is read, so a
  corrupt shape cannot ask for terabytes, and object arrays (pickles) are refused unread;
- `check_images`: uint8 ``(N, H, W, C)`` with the declared side and channel count;
- `check_labels`: one integer label per image in the declared range.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import BinaryIO

import numpy as np

from sem_fast.data.errors import DatasetFormatError

#: ``.npy`` header versions numpy writes (3.0 only for structured dtypes with non-latin1 names).
_NPY_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def _npy_header(f: BinaryIO, where: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """``(shape, fortran_order, dtype)`` from the header of the ``.npy`` stream ``f`` (left at the data)."""
    try:
        version = np.lib.format.read_magic(f)
        reader = _NPY_HEADER_READERS.get(version)
        if reader is None:
            raise DatasetFormatError(where, f"unsupported .npy format version {version[0]}.{version[1]}")
        shape, fortran, dtype = reader(f)
    except DatasetFormatError:
        raise
    except Exception as err:  # noqa: BLE001 - numpy raises ValueError, SyntaxError, ... on a corrupt header
        raise DatasetFormatError(where, f"not a readable .npy array (truncated or corrupt header): {err}") from None
    if dtype.hasobject:
        raise DatasetFormatError(where, "holds Python objects (an object array); sem_fast never unpickles data files, "
                                        "the array must be numeric")  # fmt: skip
    return shape, fortran, dtype


def _data_size(shape: tuple[int, ...], dtype: np.dtype, where: str) -> int:
    if any(d < 0 for d in shape):
        raise DatasetFormatError(where, f"negative dimension in shape {shape}")
    return int(np.prod(shape, dtype=object)) * dtype.itemsize  # Python ints: no overflow


def read_npy(path: Path, field: str, *, mmap: bool = False) -> np.ndarray:
    """The array in the ``.npy`` file ``path`` (``field`` names it in errors); memory-mapped
    read-only with ``mmap`` (only the parts used are read)."""
    where = f"{path} ({field})"
    try:
        with path.open("rb") as f:
            shape, fortran, dtype = _npy_header(f, where)
            offset = f.tell()
    except OSError as err:
        raise DatasetFormatError(where, f"cannot read: {err}") from None
    expected, actual = offset + _data_size(shape, dtype, where), path.stat().st_size
    if actual != expected:
        raise DatasetFormatError(where, f"the header declares {dtype} {shape} ({expected} bytes with the header) "
                                        f"but the file has {actual} bytes (truncated or corrupt?)")  # fmt: skip
    try:
        if mmap:
            return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")
        return np.load(path, allow_pickle=False)
    except Exception as err:  # noqa: BLE001 - whatever numpy raises, the file is malformed
        raise DatasetFormatError(where, f"not a readable .npy array: {err}") from None


def read_npz(source: Path | bytes, fields: tuple[str, ...], *, name: Path | str | None = None) -> dict[str, np.ndarray]:
    """Arrays ``fields`` of the ``.npz`` archive ``source`` (a path, or its bytes with ``name``
    naming it in errors). Each member's header is checked against its size before its data is read."""
    where = str(name if name is not None else source)
    try:
        archive = zipfile.ZipFile(io.BytesIO(source) if isinstance(source, bytes) else source)
    except Exception as err:  # noqa: BLE001 - BadZipFile, NotImplementedError ("zip file version 17.3"), ...
        raise DatasetFormatError(where, f"not a readable .npz archive (truncated or corrupt?): {err}") from None
    out = {}
    with archive:
        members = {info.filename: info for info in archive.infolist()}
        for field in fields:
            info = members.get(f"{field}.npy")
            if info is None:
                raise DatasetFormatError(where, f"the archive needs arrays {list(fields)}; it holds "
                                                f"{sorted(m.removesuffix('.npy') for m in members)}")  # fmt: skip
            out[field] = _npz_member(archive, info, f"{where} ({field})")
    return out


def _npz_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, where: str) -> np.ndarray:
    try:
        with archive.open(info) as f:
            shape, fortran, dtype = _npy_header(f, where)
            size = _data_size(shape, dtype, where)
            if info.file_size - f.tell() != size:
                raise DatasetFormatError(where, f"the header declares {dtype} {shape} ({size} bytes of data) but the "
                                                f"member holds {info.file_size - f.tell()} (truncated or corrupt?)")
            data = np.empty(size, np.uint8)
            if f.readinto(data) != size:
                raise DatasetFormatError(where, "the member ends before its data (truncated?)")
        array = data.view(dtype)
        return array.reshape(shape[::-1]).T if fortran else array.reshape(shape)
    except DatasetFormatError:
        raise
    except Exception as err:  # noqa: BLE001 - zip CRC errors, short reads, ...: the archive is malformed
        raise DatasetFormatError(where, f"not a readable array (truncated or corrupt?): {err}") from None


def check_images(
    images: object, where: str, field: str, *, side: tuple[int, int] | None, channels: int = 3
) -> np.ndarray:
    """``images`` must be a non-empty uint8 ``(N, H, W, channels)`` array with ``(H, W) == side``
    (any size when None); `DatasetFormatError` naming ``where`` and ``field`` otherwise."""
    if not isinstance(images, np.ndarray):
        raise DatasetFormatError(where, f"{field} must be an array, got {type(images).__name__}")
    declared = f"uint8 (N, {'H, W' if side is None else f'{side[0]}, {side[1]}'}, {channels})"
    got = f"{images.dtype} {images.shape}"
    if images.dtype != np.uint8 or images.ndim != 4:
        raise DatasetFormatError(where, f"{field} must be {declared} images, got {got}")
    if images.shape[3] != channels:
        layout = " (channels first? the images must be NHWC)" if images.shape[1] == channels else ""
        raise DatasetFormatError(where, f"{field} must have {channels} channels, {declared}, got {got}{layout}")
    if side is not None and images.shape[1:3] != side:
        raise DatasetFormatError(where, f"{field} must be {declared} images as the dataset declares, got {got}")
    if images.shape[0] == 0:
        raise DatasetFormatError(where, f"{field} holds no images")
    return images


def check_labels(
    labels: object, where: str, field: str, *, count: int, num_classes: int, first: int = 0, floats: bool = False
) -> np.ndarray:
    """``labels`` (an array or a list, numpy integer scalars included) must hold ``count`` integers
    in ``[first, first + num_classes)``; returned as an int64 ``(count,)`` array. ``floats``:
    whole numbers stored as floats are accepted too (MATLAB's doubles)."""
    try:
        array = np.asarray(labels)
    except Exception as err:  # noqa: BLE001 - e.g. ints beyond int64, ragged lists
        raise DatasetFormatError(where, f"{field} must be {count} integer labels: {err}") from None
    whole = np.issubdtype(array.dtype, np.integer) or (
        floats and np.issubdtype(array.dtype, np.floating) and bool(np.all(array == np.round(array)))
    )  # NaN and inf fail ``x == round(x)`` or the range check below
    if not whole or array.size != count or array.ndim > 2:
        raise DatasetFormatError(where, f"{field} must be {count} integer labels (one per image), got "
                                        f"{array.dtype} {array.shape}")  # fmt: skip
    array = array.reshape(-1)
    if array.size:
        lo, hi = array.min(), array.max()
        if not (lo >= first and hi < first + num_classes):
            raise DatasetFormatError(where, f"{field} must lie in [{first}, {first + num_classes - 1}] "
                                            f"({num_classes} classes), found {lo if not lo >= first else hi}")
    return array.astype(np.int64)
