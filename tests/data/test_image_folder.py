"""Listing ImageFolder and Tiny-ImageNet trees, and the Pillow decoder with its random-resized-crop."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from sem_fast.data import DatasetFormatError, DatasetNotFoundError
from sem_fast.data.image_folder import (
    RRC_RATIO, RRC_SCALE, _random_resized_crop_box, decode_image, list_image_folder, list_tiny_imagenet,
)  # fmt: skip
from tests.utils import write_image_folder


def blank(h: int = 4, w: int = 4, value: int = 0) -> np.ndarray:
    return np.full((h, w, 3), value, np.uint8)


def test_image_folder_lists_sorted_files_with_sorted_class_labels(tmp_path):
    write_image_folder(tmp_path / "train", {"b": [blank()] * 2, "a": [blank()]})
    (tmp_path / "train" / "b" / "nested").mkdir()
    Image.fromarray(blank()).save(tmp_path / "train" / "b" / "nested" / "x.PNG")
    (tmp_path / "train" / "a" / "notes.txt").write_text("not an image")
    data = list_image_folder(tmp_path, "train")
    assert data.classes == ("a", "b")
    assert [f.split("/train/")[1] for f in data.files] == ["a/0.png", "b/0.png", "b/1.png", "b/nested/x.PNG"]
    assert data.labels.tolist() == [0, 1, 1, 1]


def test_other_splits_use_the_training_class_indices(tmp_path):
    write_image_folder(tmp_path / "train", {"a": [blank()], "b": [blank()], "c": [blank()]})
    write_image_folder(tmp_path / "val", {"c": [blank()]})
    assert list_image_folder(tmp_path, "val").labels.tolist() == [2]
    write_image_folder(tmp_path / "val", {"zebra": [blank()]})
    with pytest.raises(DatasetFormatError, match=r"class folders \['zebra'\] are not in"):
        list_image_folder(tmp_path, "val")


def test_empty_class_folder_and_missing_split_raise(tmp_path):
    write_image_folder(tmp_path / "train", {"a": [blank()]})
    (tmp_path / "train" / "empty").mkdir()
    with pytest.raises(DatasetFormatError, match="empty: class folder holds no"):
        list_image_folder(tmp_path, "train")
    with pytest.raises(DatasetNotFoundError, match="test/<class>/<image>.jpg"):
        list_image_folder(tmp_path, "test")


def write_tiny_imagenet(root, wnids=("n02", "n01", "n03")) -> None:
    base = root / "tiny-imagenet-200"
    base.mkdir()
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    for k, wnid in enumerate(wnids):
        write_image_folder(base / "train" / wnid, {"images": [blank(64, 64, k)] * 2}, ext=".JPEG")
    write_image_folder(base / "val", {"images": [blank(64, 64, 9)] * 3}, ext=".JPEG")
    (base / "val" / "val_annotations.txt").write_text(
        "0.JPEG\tn03\t0\t0\t10\t10\n1.JPEG\tn01\t1\t1\t5\t5\n2.JPEG\tn02\t2\t2\t9\t9\n")


def test_tiny_imagenet_labels_follow_sorted_wnids_in_both_splits(tmp_path):
    write_tiny_imagenet(tmp_path)
    train = list_tiny_imagenet(tmp_path, "train")
    assert train.classes == ("n01", "n02", "n03")
    assert [(f.split("/train/")[1], y) for f, y in zip(train.files, train.labels.tolist())][:3] == [
        ("n01/images/0.JPEG", 0), ("n01/images/1.JPEG", 0), ("n02/images/0.JPEG", 1)]
    val = list_tiny_imagenet(tmp_path / "tiny-imagenet-200", "val")
    assert val.labels.tolist() == [2, 0, 1]


def test_tiny_imagenet_broken_annotations_raise(tmp_path):
    write_tiny_imagenet(tmp_path)
    annotations = tmp_path / "tiny-imagenet-200" / "val" / "val_annotations.txt"
    annotations.write_text("0.JPEG n03\n")
    with pytest.raises(DatasetFormatError, match="line 1 must be 'file<TAB>wnid<TAB>...'"):
        list_tiny_imagenet(tmp_path, "val")
    annotations.write_text("7.JPEG\tn03\n")
    with pytest.raises(DatasetNotFoundError, match="val/images/7.JPEG"):
        list_tiny_imagenet(tmp_path, "val")
    annotations.write_text("0.JPEG\tn99\n")
    with pytest.raises(DatasetFormatError, match="class 'n99' is not listed in"):
        list_tiny_imagenet(tmp_path, "val")


def test_tiny_imagenet_test_split_is_refused(tmp_path):
    with pytest.raises(ValueError, match="split must be 'train' or 'val' for tiny-imagenet"):
        list_tiny_imagenet(tmp_path, "test")


def test_png_decodes_exactly_and_grayscale_becomes_rgb(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    gray = rgb[..., 0]
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(gray).save(tmp_path / "gray.png")
    assert np.array_equal(decode_image(str(tmp_path / "rgb.png"), None), rgb)
    assert np.array_equal(decode_image(str(tmp_path / "gray.png"), None), np.repeat(gray[..., None], 3, 2))
    assert decode_image(str(tmp_path / "rgb.png"), 4).shape == (4, 4, 3)


def test_truncated_jpeg_raises_naming_the_file(tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "a.jpg")
    data = (tmp_path / "a.jpg").read_bytes()
    (tmp_path / "a.jpg").write_bytes(data[: len(data) // 3])
    with pytest.raises(DatasetFormatError, match="a.jpg: cannot decode image"):
        decode_image(str(tmp_path / "a.jpg"), None)


@pytest.mark.parametrize("width,height", [(64, 64), (37, 20), (300, 2)])
def test_random_resized_crop_box_stays_inside_with_area_and_ratio_in_range(width, height):
    rng = np.random.default_rng(0)
    for _ in range(200):
        left, top, right, bottom = _random_resized_crop_box(width, height, rng)
        assert 0 <= left < right <= width and 0 <= top < bottom <= height
        w, h = right - left, bottom - top
        if (w, h) != (width, height) and min(width, height) >= 20:  # not the fallback crop; rounding is small
            assert RRC_SCALE[0] * 0.8 <= w * h / (width * height) <= RRC_SCALE[1]
            assert math.log(RRC_RATIO[0]) - 0.2 <= math.log(w / h) <= math.log(RRC_RATIO[1]) + 0.2


def test_random_resized_crop_falls_back_to_a_central_crop_of_clamped_ratio():
    left, top, right, bottom = _random_resized_crop_box(300, 2, np.random.default_rng(0))
    assert (bottom - top, right - left) == (2, 3) and left == (300 - 3) // 2  # ratio clamped to 4/3
