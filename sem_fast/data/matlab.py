"""A reader for numeric arrays in MATLAB v5 MAT-files (``.mat``), e.g. SVHN's ``*_32x32.mat``.

Pure numpy + zlib (scipy is not needed). Supported: version 5 files (also written by MATLAB
``-v6``/``-v7`` and by ``scipy.io.savemat``), either byte order, compressed (``miCOMPRESSED``) or
plain variables, real numeric and logical matrices of any rank, and storage types narrower than
the class (MATLAB stores a ``double`` array of small integers as ``miUINT8``). Cell, struct,
char, sparse and object variables are skipped; complex matrices raise. v7.3 files are HDF5 and
raise an error saying so. Layout: MATLAB element tags, array flags and dimensions as in "MAT-File
Format" (MathWorks, R2024a), section "MAT-File Level 5 Format".
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from sem_fast.data.errors import DatasetFormatError

HEADER_BYTES = 128  # 116 text + 8 subsystem offset + 2 version + 2 endian indicator
MI_INT32, MI_UINT32, MI_MATRIX, MI_COMPRESSED = 5, 6, 14, 15
# Storage (element) types -> numpy dtype, without byte order.
STORAGE_TYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 9: "f8", 12: "i8", 13: "u8"}
# Numeric array classes (mxDOUBLE_CLASS = 6 ... mxUINT64_CLASS = 15) -> numpy dtype of the result.
NUMERIC_CLASSES = {6: "f8", 7: "f4", 8: "i1", 9: "u1", 10: "i2", 11: "u2", 12: "i4", 13: "u4", 14: "i8", 15: "u8"}
FLAG_COMPLEX, FLAG_LOGICAL = 0x08, 0x02  # bits of the array-flags byte above the class byte


class _Cursor:
    """Reads tagged data elements from a byte buffer; running past its end is a truncated file."""

    def __init__(self, buf: memoryview, order: str, path: Path) -> None:
        self.buf, self.order, self.path, self.pos = buf, order, path, 0

    def done(self) -> bool:
        return self.pos >= len(self.buf)

    def take(self, n: int) -> memoryview:
        if self.pos + n > len(self.buf):
            raise DatasetFormatError(self.path, f"truncated MAT-file: needs {n} bytes at offset {self.pos}, "
                                                f"{len(self.buf) - self.pos} left")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def element(self) -> tuple[int, memoryview]:
        """The next element ``(type, payload)``; skips the padding to the next 8-byte boundary."""
        first, second = np.frombuffer(self.take(8), dtype=f"{self.order}u4")
        if first >> 16:  # small data element: 2-byte size, 2-byte type, payload in the 4 bytes that follow
            return int(first & 0xFFFF), self.buf[self.pos - 4 : self.pos - 4 + int(first >> 16)]
        kind, size = int(first), int(second)
        payload = self.take(size)
        if kind != MI_COMPRESSED:
            self.take(-size % 8)
        return kind, payload


def load_mat(path: str | Path, names: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """The numeric variables of a MAT v5 file as numpy arrays with MATLAB's shape (column-major
    data reshaped with ``order='F'``) and class dtype (``double`` -> float64, ``uint8`` -> uint8,
    logical -> bool). ``names``: variables that must be present (others are still returned)."""
    path = Path(path)
    try:
        return _load_mat(path, path.read_bytes(), names)
    except DatasetFormatError:
        raise
    except Exception as err:  # noqa: BLE001 - a corrupt file makes numpy/zlib raise almost any type
        raise DatasetFormatError(path, f"malformed MAT-file (truncated or corrupt?): {type(err).__name__}: {err}") from None


def _load_mat(path: Path, data: bytes, names: tuple[str, ...] | None) -> dict[str, np.ndarray]:
    if len(data) < HEADER_BYTES:
        raise DatasetFormatError(path, f"not a MAT-file: {len(data)} bytes, shorter than the 128-byte header")
    order = {b"IM": "<", b"MI": ">"}.get(data[126:128])
    if order is None:
        raise DatasetFormatError(path, "not a MATLAB v5 MAT-file (no 'MI' endian indicator at byte 126; v4 file?)")
    version = int(np.frombuffer(data[124:126], dtype=f"{order}u2")[0])
    if version == 0x0200:
        raise DatasetFormatError(path, "MATLAB v7.3 MAT-files are HDF5 and not supported; re-save with -v7")
    if version != 0x0100:
        raise DatasetFormatError(path, f"unknown MAT-file version 0x{version:04x} (expected 0x0100)")
    cursor = _Cursor(memoryview(data)[HEADER_BYTES:], order, path)
    out: dict[str, np.ndarray] = {}
    while not cursor.done():
        kind, payload = cursor.element()
        if kind == MI_COMPRESSED:
            try:
                payload = memoryview(zlib.decompress(payload))
            except zlib.error as err:
                raise DatasetFormatError(path, f"corrupt compressed variable: {err}") from err
            kind, payload = _Cursor(payload, order, path).element()
        if kind == MI_MATRIX and len(payload):
            item = _matrix(_Cursor(payload, order, path))
            if item is not None:
                out[item[0]] = item[1]
    missing = [n for n in names or () if n not in out]
    if missing:
        raise DatasetFormatError(path, f"missing numeric variable(s) {missing}; found {sorted(out)}")
    return out


def _matrix(cursor: _Cursor) -> tuple[str, np.ndarray] | None:
    """Name and array of one ``miMATRIX`` element, or None for a non-numeric class."""
    flags_type, flags = cursor.element()
    if flags_type != MI_UINT32 or len(flags) != 8:
        raise DatasetFormatError(cursor.path, "malformed array flags in a matrix element")
    word = int(np.frombuffer(flags, dtype=f"{cursor.order}u4")[0])
    array_class, flag_bits = word & 0xFF, (word >> 8) & 0xFF
    dims_type, dims = cursor.element()
    if dims_type != MI_INT32:
        raise DatasetFormatError(cursor.path, "malformed dimensions in a matrix element")
    shape = tuple(int(d) for d in np.frombuffer(dims, dtype=f"{cursor.order}i4"))
    _, name = cursor.element()
    name = bytes(name).decode("ascii", errors="replace")
    if array_class not in NUMERIC_CLASSES:
        return None
    if flag_bits & FLAG_COMPLEX:
        raise DatasetFormatError(cursor.path, f"variable {name!r} is complex; only real arrays are supported")
    storage, real = cursor.element()
    if storage not in STORAGE_TYPES:
        raise DatasetFormatError(cursor.path, f"variable {name!r} has unknown storage type {storage}")
    values = np.frombuffer(real, dtype=f"{cursor.order}{STORAGE_TYPES[storage]}")
    if values.size != int(np.prod(shape)):
        raise DatasetFormatError(cursor.path, f"variable {name!r}: {values.size} values for shape {shape}")
    result = bool if flag_bits & FLAG_LOGICAL else np.dtype(NUMERIC_CLASSES[array_class]).newbyteorder("=")
    return name, values.astype(result, copy=False).reshape(shape, order="F")
