"""CIFAR readers on tiny files written here in the published formats (and on the shared arrays
when the shared data folder is beside the repo)."""

from __future__ import annotations

import io
import lzma
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from sem_fast.data import DatasetFormatError, DatasetNotFoundError, make_loader
from sem_fast.data.cifar import read_cifar10_1, read_cifar10_2, read_cifar10_npz, read_cifar_torchvision, read_npz_xz
from tests.utils import shared_data_dir

PER_BATCH = 3  # images per pickled batch in the fake torchvision layout (real: 10,000)


def write_batch(path: Path, data: np.ndarray, labels: list[int], label_key: bytes = b"labels") -> None:
    """A batch pickle as CIFAR's python version has it: bytes keys, ``data`` uint8 (n, 3072)."""
    path.write_bytes(pickle.dumps({b"batch_label": b"fake", label_key: labels, b"data": data}, protocol=2))


def fake_cifar10(root: Path) -> tuple[np.ndarray, list[int]]:
    """``root/cifar-10-batches-py`` with 5 train batches and a test batch; returns the train rows."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = rng.integers(0, 256, (5 * PER_BATCH, 3072), dtype=np.uint8)
    labels = rng.integers(0, 10, 5 * PER_BATCH).tolist()
    for i in range(5):
        part = slice(i * PER_BATCH, (i + 1) * PER_BATCH)
        write_batch(folder / f"data_batch_{i + 1}", rows[part], labels[part])
    write_batch(folder / "test_batch", rows[:2], labels[:2])
    return rows, labels


def test_torchvision_cifar10_rows_become_nhwc_images_in_batch_order(tmp_path):
    rows, labels = fake_cifar10(tmp_path)
    data = read_cifar_torchvision(tmp_path, "cifar10", "train")
    assert data.images.shape == (15, 32, 32, 3) and data.num_classes == 10
    n, h, w, c = 7, 5, 30, 2
    assert data.images[n, h, w, c] == rows[n, c * 1024 + h * 32 + w]  # CHW rows: channel planes of 32x32
    assert data.labels.tolist() == labels
    assert torch.equal(read_cifar_torchvision(tmp_path / "cifar-10-batches-py", "cifar10", "test").images,
                       data.images[:2])


def test_torchvision_cifar100_uses_the_fine_labels(tmp_path):
    (tmp_path / "cifar-100-python").mkdir()
    rows = np.arange(2 * 3072, dtype=np.uint64).astype(np.uint8).reshape(2, 3072)
    write_batch(tmp_path / "cifar-100-python" / "test", rows, [99, 42], label_key=b"fine_labels")
    data = read_cifar_torchvision(tmp_path, "cifar100", "test")
    assert data.labels.tolist() == [99, 42] and data.num_classes == 100


def test_missing_batch_names_every_expected_file(tmp_path):
    fake_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(DatasetNotFoundError, match="missing: data_batch_4") as info:
        read_cifar_torchvision(tmp_path, "cifar10", "train")
    assert all(f"cifar-10-batches-py/data_batch_{i}" in str(info.value) for i in range(1, 6))


def test_truncated_batch_raises_naming_the_file(tmp_path):
    fake_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(DatasetFormatError, match="data_batch_2: not a readable CIFAR batch pickle"):
        read_cifar_torchvision(tmp_path, "cifar10", "train")


class _RunsCode:
    def __reduce__(self):
        return (Path.touch, (Path("/nonexistent-dir/never"),))


def test_batch_pickle_that_references_other_code_is_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(pickle.dumps({"data": _RunsCode(), "labels": [0]}))
    with pytest.raises(DatasetFormatError, match="global pathlib.Path.touch is not allowed"):
        read_cifar_torchvision(tmp_path, "cifar10", "test")


def test_batch_with_wrong_row_length_raises(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    write_batch(folder / "test_batch", np.zeros((2, 3000), np.uint8), [0, 1])
    with pytest.raises(DatasetFormatError, match=r"'data' must be a uint8 \(n, 3072\) array"):
        read_cifar_torchvision(tmp_path, "cifar10", "test")


def write_npz_xz(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    """The shared folder's format: an uncompressed .npz, xz-compressed with delta(96) + LZMA2."""
    buffer = io.BytesIO()
    np.savez(buffer, x=x, y=y)
    filters = [{"id": lzma.FILTER_DELTA, "dist": 96}, {"id": lzma.FILTER_LZMA2, "preset": 1}]
    path.write_bytes(lzma.compress(buffer.getvalue(), format=lzma.FORMAT_XZ, filters=filters))


def test_npz_shards_are_concatenated_in_numeric_order(tmp_path):
    for k in range(11):  # 11 shards: ".10" must come after ".9", not after ".1"
        write_npz_xz(tmp_path / f"part.{k}.npz.xz", np.full((2, 4, 4, 3), k, np.uint8), np.array([k % 10] * 2))
    data = read_npz_xz(tmp_path, "part", "toy", 10, side=(4, 4))
    assert data.images[:, 0, 0, 0].tolist() == [k for k in range(11) for _ in range(2)]
    assert data.labels.dtype == torch.int64


def test_npz_shard_gap_raises(tmp_path):
    for k in (0, 2):
        write_npz_xz(tmp_path / f"part.{k}.npz.xz", np.zeros((1, 4, 4, 3), np.uint8), np.zeros(1, np.uint8))
    with pytest.raises(DatasetFormatError, match=r"numbered 0\.\.1 consecutively, found \[0, 2\]"):
        read_npz_xz(tmp_path, "part", "toy", 10)


def test_truncated_npz_xz_raises_naming_the_file(tmp_path):
    write_npz_xz(tmp_path / "part.npz.xz", np.arange(96 * 8, dtype=np.uint8).reshape(8, 4, 8, 3), np.zeros(8))
    data = (tmp_path / "part.npz.xz").read_bytes()
    (tmp_path / "part.npz.xz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetFormatError, match="part.npz.xz: not a readable xz-compressed .npz"):
        read_npz_xz(tmp_path, "part", "toy", 10)


def test_cifar10_npz_with_a_missing_shard_is_refused_not_read_partially(tmp_path):
    write_npz_xz(tmp_path / "cifar10_test.0.npz.xz", np.zeros((5, 32, 32, 3), np.uint8), np.zeros(5, np.uint8))
    with pytest.raises(DatasetFormatError, match="expected 10000 images for the test split, found 5"):
        read_cifar10_npz(tmp_path, "test")


def test_cifar10_1_reads_the_npy_pair(tmp_path):
    x = np.random.default_rng(1).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    np.save(tmp_path / "cifar10.1_v6_data.npy", x)
    np.save(tmp_path / "cifar10.1_v6_labels.npy", np.array([0, 9, 3, 3, 1]))
    batches = list(make_loader("cifar10.1", tmp_path, "test", 2, "cpu", "cpu"))
    assert torch.equal(torch.cat([b[0] for b in batches]), torch.from_numpy(x))
    assert torch.cat([b[1] for b in batches]).tolist() == [0, 9, 3, 3, 1]


def test_cifar10_1_truncated_or_mismatched_files_raise(tmp_path):
    np.save(tmp_path / "cifar10.1_v4_data.npy", np.zeros((5, 32, 32, 3), np.uint8))
    np.save(tmp_path / "cifar10.1_v4_labels.npy", np.zeros(4, np.int64))
    with pytest.raises(DatasetFormatError, match="labels must be 5 integer labels"):
        read_cifar10_1(tmp_path, version="v4")
    data = (tmp_path / "cifar10.1_v4_data.npy").read_bytes()
    (tmp_path / "cifar10.1_v4_data.npy").write_bytes(data[:1000])
    with pytest.raises(DatasetFormatError, match=r"cifar10.1_v4_data.npy \(images\): the header declares uint8"):
        read_cifar10_1(tmp_path, version="v4")
    with pytest.raises(DatasetNotFoundError, match="cifar10.1_v6_labels.npy"):
        read_cifar10_1(tmp_path)


def test_cifar10_2_reads_the_published_npz(tmp_path):
    x = np.random.default_rng(2).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / "cifar102_test.npz", images=x, labels=np.array([7, 0, 2]))
    batches = list(make_loader("cifar10.2", tmp_path, "test", 2, "cpu", "cpu"))
    assert torch.equal(torch.cat([b[0] for b in batches]), torch.from_numpy(x))
    assert torch.cat([b[1] for b in batches]).tolist() == [7, 0, 2]


def test_cifar10_2_missing_or_malformed_archive_raises_naming_it(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="cifar102_test.npz"):
        read_cifar10_2(tmp_path)
    np.savez(tmp_path / "cifar102_test.npz", images=np.zeros((3, 32, 32, 3), np.uint8), labels=np.zeros(2, np.int64))
    with pytest.raises(DatasetFormatError, match="labels must be 3 integer labels"):
        read_cifar10_2(tmp_path)
    np.savez(tmp_path / "cifar102_test.npz", data=np.zeros(3))
    with pytest.raises(DatasetFormatError, match=r"the archive needs arrays \['images', 'labels'\]; it holds \['data'\]"):
        read_cifar10_2(tmp_path)
    with pytest.raises(ValueError, match="split must be one of"):
        read_cifar10_2(tmp_path, "train")


@pytest.mark.skipif(shared_data_dir() is None, reason="the project's shared data folder is not beside the repo")
def test_shared_npz_test_split_matches_the_shared_folders_own_loader():
    import importlib.util

    spec = importlib.util.spec_from_file_location("shared_data", shared_data_dir() / "load.py")
    shared = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(shared)
    x, y = shared.load("cifar10_test")
    data = read_cifar10_npz(shared_data_dir(), "test")
    assert np.array_equal(data.images.numpy(), x) and np.array_equal(data.labels.numpy(), y)
