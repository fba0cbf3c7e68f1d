"""The numpy-only MAT v5 reader against files written by scipy.io.savemat (fixtures/README.md)
and a big-endian file built here byte by byte."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from sem_fast.data import DatasetFormatError
from sem_fast.data.matlab import load_mat
from tests.utils import mat_fixture_images

FIXTURES = Path(__file__).parent / "fixtures"


def test_compressed_variables_read_with_matlab_shape_and_class():
    arrays = load_mat(FIXTURES / "svhn_compressed.mat")
    assert sorted(arrays) == ["X", "y"]
    assert arrays["X"].dtype == np.uint8 and np.array_equal(arrays["X"], mat_fixture_images())
    assert arrays["y"].shape == (7, 1) and arrays["y"].ravel().tolist() == [1, 10, 3, 10, 5, 9, 2]


def test_plain_variables_keep_column_major_layout_and_skip_non_numeric():
    arrays = load_mat(FIXTURES / "svhn_plain.mat")
    assert sorted(arrays) == ["B", "M", "X", "y"]  # 'note' is a char array: skipped
    assert arrays["y"].dtype == np.float64
    assert arrays["M"].dtype == np.int16 and arrays["M"].tolist() == [[0, 1, 2], [3, 4, 5]]
    assert arrays["B"].dtype == bool and arrays["B"].tolist() == [[True, False, True]]
    assert np.array_equal(arrays["X"], mat_fixture_images())


def big_endian_double_stored_as_uint8() -> bytes:
    """A big-endian MAT v5 file with one 2x2 double ``v`` stored as miUINT8 (as MATLAB narrows
    integer-valued doubles) and its name in the small-element format."""
    header = b"MATLAB 5.0 MAT-file, built by a test".ljust(116, b" ") + bytes(8) + b"\x01\x00" + b"MI"
    flags = struct.pack(">II", 6, 8) + struct.pack(">II", 6, 0)  # miUINT32; class mxDOUBLE
    dims = struct.pack(">II", 5, 8) + struct.pack(">ii", 2, 2)  # miINT32 dims 2x2
    name = struct.pack(">HH", 1, 1) + b"v\x00\x00\x00"  # small element: 1 byte of miINT8
    real = struct.pack(">II", 2, 4) + bytes([1, 2, 3, 250]) + bytes(4)  # miUINT8, padded to 8
    payload = flags + dims + name + real
    return header + struct.pack(">II", 14, len(payload)) + payload


def test_big_endian_file_with_narrowed_storage_reads_as_its_class(tmp_path):
    (tmp_path / "v.mat").write_bytes(big_endian_double_stored_as_uint8())
    v = load_mat(tmp_path / "v.mat")["v"]
    assert v.dtype == np.float64 and v.tolist() == [[1.0, 3.0], [2.0, 250.0]]


@pytest.mark.parametrize("fixture", ["svhn_plain.mat", "svhn_compressed.mat"])
def test_every_truncation_raises_or_reads_only_whole_variables(fixture, tmp_path):
    data = (FIXTURES / fixture).read_bytes()
    full = load_mat(FIXTURES / fixture)
    path = tmp_path / fixture
    for cut in range(len(data)):
        path.write_bytes(data[:cut])
        try:
            arrays = load_mat(path)
        except DatasetFormatError:
            continue
        assert set(arrays) < set(full) and all(np.array_equal(arrays[k], full[k]) for k in arrays), cut


def test_missing_requested_variable_names_what_was_found():
    with pytest.raises(DatasetFormatError, match=r"missing numeric variable\(s\) \['X_test'\]; found \['X', 'y'\]"):
        load_mat(FIXTURES / "svhn_compressed.mat", names=("X_test",))


def test_complex_variable_raises():
    with pytest.raises(DatasetFormatError, match="variable 'Z' is complex"):
        load_mat(FIXTURES / "complex.mat")


@pytest.mark.parametrize(
    "header,message",
    [
        (b"MATLAB 7.3 MAT-file".ljust(124, b" ") + b"\x00\x02IM", "v7.3 MAT-files are HDF5"),
        (bytes(200), "not a MATLAB v5 MAT-file"),
        (b"tiny", "shorter than the 128-byte header"),
    ],
)
def test_files_that_are_not_v5_mat_files_raise(header, message, tmp_path):
    (tmp_path / "x.mat").write_bytes(header)
    with pytest.raises(DatasetFormatError, match=message):
        load_mat(tmp_path / "x.mat")
