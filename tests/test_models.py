"""Bundled networks (shapes, parameter counts) and split() adapting torchvision / timm models."""

import pytest
import torch
from torch import nn

from sem_fast.extras import import_torchvision
from sem_fast.models import PreActResNet18, SplitModel, TimmSplit, WideResNet, split


def _count(model):
    return sum(p.numel() for p in model.parameters())


def test_preact_resnet18_shapes_and_parameter_count():
    model = PreActResNet18(num_classes=10)
    assert _count(model) == pytest.approx(11.17e6, rel=0.01)
    z = model.encode(torch.randn(2, 3, 32, 32))
    assert z.shape == (2, 512) and model.classify(z).shape == (2, 10) and model.num_classes == 10
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 10)  # Tiny-ImageNet size pools the same


def test_wide_resnet_28_10_shapes_and_parameter_count():
    model = WideResNet(28, 10, num_classes=100)
    assert _count(model) == pytest.approx(36.5e6 + 640 * 90, rel=0.01)  # 36.5 M at 10 classes
    assert _count(WideResNet(28, 10, num_classes=10)) == pytest.approx(36.5e6, rel=0.005)
    small = WideResNet(10, 1, num_classes=7)
    z = small.encode(torch.randn(3, 3, 32, 32))
    assert z.shape == (3, 64) and small.classify(z).shape == (3, 7) and small.num_classes == 7


def test_forward_is_classify_of_encode_and_head_is_linear():
    model = PreActResNet18(num_classes=5, width=8).eval()
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(model(x), model.classify(model.encode(x)))
    assert isinstance(model.head, nn.Linear)


def test_wide_resnet_rejects_bad_depth():
    with pytest.raises(ValueError, match="depth must be 6n \\+ 4"):
        WideResNet(depth=27)


def test_split_torchvision_resnet_moves_the_fc_layer_to_the_head():
    tv = import_torchvision("the torchvision split() test")
    net = tv.models.resnet18(num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    expected = net(x)
    model = split(net)
    assert isinstance(model, SplitModel) and model.head.out_features == model.num_classes == 10
    z = model.encode(x)
    assert z.shape == (2, 512)
    torch.testing.assert_close(model.classify(z), expected)
    torch.testing.assert_close(model(x), expected)


def test_split_takes_the_last_linear_of_a_sequential_classifier():
    tv = import_torchvision("the torchvision split() test")
    net = tv.models.mobilenet_v3_small(num_classes=4).eval()
    x = torch.randn(1, 3, 32, 32)
    expected = net(x)
    model = split(net)
    assert model.encode(x).shape == (1, 1024)
    torch.testing.assert_close(model(x), expected)


def test_split_timm_model_uses_pre_logits_features():
    timm = pytest.importorskip("timm")
    net = timm.create_model("resnet18", num_classes=3, pretrained=False).eval()
    x = torch.randn(2, 3, 32, 32)
    model = split(net)
    assert isinstance(model, TimmSplit) and model.num_classes == 3
    assert model.encode(x).shape == (2, net.num_features)
    torch.testing.assert_close(model(x), net(x))


def test_split_returns_models_that_are_already_split_and_rejects_headless_ones():
    prn = PreActResNet18(width=4)
    assert split(prn) is prn
    with pytest.raises(TypeError, match="cannot find the final nn.Linear of Conv2d"):
        split(nn.Conv2d(3, 3, 1))
