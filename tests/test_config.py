"""SEMConfig: defaults, validation naming the bad field, replace()."""

import numpy as np
import pytest
import torch

from sem_fast import SEMConfig


def test_defaults_are_valid_and_hashable():
    cfg = SEMConfig()
    assert (cfg.mix, cfg.alpha, cfg.gamma, cfg.sem_reduction, cfg.detach_target) == ("mixup", 1.0, 1.0, "mean", True)
    assert hash(cfg) == hash(SEMConfig())
    assert cfg.mixes and cfg.uses_clean_pass and not cfg.augments


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("mix", "manifold", "SEMConfig.mix must be one of"),
        ("alpha", 0.0, r"SEMConfig.alpha must be a finite number in \(0.0"),
        ("alpha", -1.0, "SEMConfig.alpha"),
        ("cutmix_alpha", float("nan"), "SEMConfig.cutmix_alpha"),
        ("switch_prob", 1.5, r"SEMConfig.switch_prob must be a finite number in \[0.0, 1.0\]"),
        ("mix_prob", -0.1, "SEMConfig.mix_prob"),
        ("lam_mode", "sample", "SEMConfig.lam_mode"),
        ("pairing", "random", "SEMConfig.pairing"),
        ("correct_lam", 1, "SEMConfig.correct_lam must be a bool"),
        ("gamma", -0.5, r"SEMConfig.gamma must be a finite number in \[0.0, inf\)"),
        ("gamma", float("inf"), "SEMConfig.gamma"),
        ("sem_reduction", "none", "SEMConfig.sem_reduction"),
        ("label_smoothing", 1.0, r"SEMConfig.label_smoothing must be a finite number in \[0.0, 1.0\)"),
        ("std", (0.2, 0.0, 0.2), "SEMConfig.std must be a non-empty sequence of positive"),
        ("mean", "abc", "SEMConfig.mean must be a sequence of numbers"),
        ("mean", (0.5, 0.5), "one value per channel"),
        ("out_dtype", torch.float64, "SEMConfig.out_dtype must be None or one of"),
        ("backend", "cudnn", "SEMConfig.backend"),
        ("crop_padding", -1, "SEMConfig.crop_padding must be an int >= 0"),
        ("crop_padding", 4.0, "SEMConfig.crop_padding must be an int >= 0"),
        ("crop_padding", True, "SEMConfig.crop_padding must be an int >= 0"),
        ("gamma", True, "SEMConfig.gamma must be a finite number"),
        ("gamma", np.bool_(True), "SEMConfig.gamma must be a finite number"),
        ("gamma", "1.0", "SEMConfig.gamma must be a finite number"),
        ("alpha", np.float32("nan"), "SEMConfig.alpha must be a finite number"),
        ("switch_prob", np.float64(1.5), r"SEMConfig.switch_prob must be a finite number in \[0.0, 1.0\]"),
        ("padding_mode", "edge", "SEMConfig.padding_mode"),
    ],
)
def test_bad_value_raises_value_error_naming_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        SEMConfig(**{field: value})


def test_gamma_zero_or_no_mixing_skips_the_clean_pass():
    assert not SEMConfig(gamma=0.0).uses_clean_pass
    assert not SEMConfig(mix="none").uses_clean_pass
    assert not SEMConfig(mix_prob=0.0).mixes


def test_replace_validates_and_rejects_unknown_fields():
    cfg = SEMConfig().replace(mix="cutmix", gamma=0.5)
    assert (cfg.mix, cfg.gamma) == ("cutmix", 0.5)
    with pytest.raises(ValueError, match="SEMConfig.alpha"):
        SEMConfig().replace(alpha=0)
    with pytest.raises(ValueError, match="no field"):
        SEMConfig().replace(lamda=0.5)


def test_mean_and_std_lists_become_tuples():
    cfg = SEMConfig(mean=[0.5], std=[0.25])
    assert cfg.mean == (0.5,) and cfg.std == (0.25,)


def test_resolve_out_dtype_follows_config_autocast_and_input():
    u8 = torch.zeros(1, 4, 4, 3, dtype=torch.uint8)
    half = torch.zeros(1, 3, 4, 4, dtype=torch.float16)
    assert SEMConfig().resolve_out_dtype(u8) == torch.float32
    assert SEMConfig().resolve_out_dtype(half) == torch.float16
    assert SEMConfig(out_dtype=torch.bfloat16).resolve_out_dtype(u8) == torch.bfloat16
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert SEMConfig().resolve_out_dtype(u8) == torch.bfloat16


def test_numpy_scalars_are_accepted_and_stored_as_python_numbers():
    cfg = SEMConfig(
        alpha=np.float32(0.4), cutmix_alpha=np.int64(2), switch_prob=np.float16(0.5), mix_prob=np.float64(1.0),
        gamma=np.int32(3), label_smoothing=np.float32(0.1), crop_padding=np.int64(4),
    )  # fmt: skip
    names = ("alpha", "cutmix_alpha", "switch_prob", "mix_prob", "gamma", "label_smoothing")
    numbers = {name: getattr(cfg, name) for name in names}
    assert all(type(v) is float for v in numbers.values()), numbers
    assert numbers["alpha"] == float(np.float32(0.4)) and numbers["gamma"] == 3.0
    assert type(cfg.crop_padding) is int and cfg.crop_padding == 4
    as_python = dict(alpha=float(np.float32(0.4)), cutmix_alpha=2.0, gamma=3.0, label_smoothing=float(np.float32(0.1)))
    assert cfg == SEMConfig(**as_python, crop_padding=4)
    assert type(SEMConfig(gamma=2).gamma) is float
