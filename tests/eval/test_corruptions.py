"""On-the-fly CIFAR-10-C corruptions against the published definitions (Pillow, colorsys, numpy)."""

import colorsys

import numpy as np
import pytest
import torch

from sem_fast.data import load_bundled
from sem_fast.eval.corruptions import CORRUPTIONS, SEVERITIES, corrupt

# uint8 outputs: the published functions run in float64, ours in float32, then both truncate
# to uint8, so a value on the edge of an integer can land one level apart.
UINT8_TOL = 1


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return load_bundled("test")[0][:24]


@pytest.mark.parametrize("severity", SEVERITIES)
def test_pixelate_equals_pillow_box_resize_down_and_up(images, severity):
    from PIL import Image

    factor = (0.95, 0.9, 0.85, 0.75, 0.65)[severity - 1]
    small = int(32 * factor)
    expected = np.stack([
        np.asarray(Image.fromarray(x).resize((small, small), Image.BOX).resize((32, 32), Image.BOX))
        for x in images.numpy()
    ])  # fmt: skip
    assert np.array_equal(corrupt(images, "pixelate", severity).numpy(), expected)


@pytest.mark.parametrize("severity", SEVERITIES)
def test_brightness_equals_hsv_value_shift(images, severity):
    shift = (0.05, 0.1, 0.15, 0.2, 0.3)[severity - 1]
    x = images[:3].numpy() / 255.0
    expected = np.empty_like(x)
    for idx in np.ndindex(x.shape[:3]):
        h, s, v = colorsys.rgb_to_hsv(*x[idx])
        expected[idx] = colorsys.hsv_to_rgb(h, s, min(v + shift, 1.0))
    expected = (np.clip(expected, 0, 1) * 255).astype(np.uint8)
    got = corrupt(images[:3], "brightness", severity).numpy()
    assert np.abs(got.astype(int) - expected).max() <= UINT8_TOL


def test_brightness_turns_black_pixels_grey():
    black = torch.zeros(1, 2, 2, 3, dtype=torch.uint8)
    assert corrupt(black, "brightness", 5).unique().tolist() == [int(0.3 * 255)]


@pytest.mark.parametrize("severity", SEVERITIES)
def test_contrast_scales_around_the_channel_means(images, severity):
    c = (0.75, 0.5, 0.4, 0.3, 0.15)[severity - 1]
    x = images.numpy() / 255.0
    means = x.mean(axis=(1, 2), keepdims=True)
    expected = (np.clip((x - means) * c + means, 0, 1) * 255).astype(np.uint8)
    got = corrupt(images, "contrast", severity).numpy()
    assert np.abs(got.astype(int) - expected).max() <= UINT8_TOL


@pytest.mark.parametrize("name", ["defocus_blur", "zoom_blur", "contrast", "pixelate"])
def test_smoothing_corruptions_keep_a_constant_image(name):
    flat = torch.full((2, 32, 32, 3), 200, dtype=torch.uint8)
    for severity in SEVERITIES:
        # Pixelate averages exactly; the blurs' float sums may fall one level short of 200.
        assert (corrupt(flat, name, severity).int() - 200).abs().max() <= UINT8_TOL


@pytest.mark.parametrize("name", ["gaussian_noise", "shot_noise", "impulse_noise"])
def test_noise_is_reproducible_from_the_generator_and_grows_with_severity(images, name):
    def change(severity, seed):
        out = corrupt(images, name, severity, torch.Generator().manual_seed(seed))
        return out, (out.float() - images.float()).abs().mean().item()

    first, _ = change(3, seed=1)
    again, _ = change(3, seed=1)
    assert torch.equal(first, again)
    changes = [change(s, seed=1)[1] for s in SEVERITIES]
    assert changes == sorted(changes) and changes[0] > 0


def test_impulse_noise_sets_about_the_amount_of_values_to_0_or_255():
    grey = torch.full((64, 32, 32, 3), 128, dtype=torch.uint8)
    out = corrupt(grey, "impulse_noise", 5, torch.Generator().manual_seed(0))
    flipped = (out != 128).float().mean().item()
    assert set(out.unique().tolist()) == {0, 128, 255}
    assert abs(flipped - 0.07) < 0.005  # severity 5 flips 7% of values; 196k draws


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_every_corruption_keeps_shape_and_dtype_on_odd_sizes(name):
    x = torch.randint(0, 256, (3, 17, 23, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    out = corrupt(x, name, 4, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.uint8


def test_corrupt_rejects_unknown_names_severities_and_float_images(images):
    with pytest.raises(ValueError, match="corruption must be one of"):
        corrupt(images, "fog", 1)
    with pytest.raises(ValueError, match="severity must be one of"):
        corrupt(images, "contrast", 6)
    with pytest.raises(ValueError, match="uint8"):
        corrupt(images.float(), "contrast", 1)
