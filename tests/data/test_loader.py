"""The Loader interface: argument checks, epoch counting and the resume state."""

from __future__ import annotations

import pytest
import torch

from sem_fast.data import make_loader
from sem_fast.data.loader import resolve_device
from tests.utils import epoch_batches


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"batch_size": 0}, "batch_size must be a positive int"),
        ({"num_shards": 0}, "num_shards must be a positive int"),
        ({"shard_id": 2, "num_shards": 2}, r"shard_id must be an int in \[0, num_shards=2\)"),
        ({"shard_id": -1}, "shard_id must be an int"),
        ({"seed": -3}, "seed must be a non-negative int"),
        ({"batch_size": 1001, "drop_last": True}, "gets no full batch of 1001 from 1000 samples"),
    ],
)
def test_bad_policy_arguments_raise_naming_the_argument(kwargs, message):
    args = {"batch_size": 10, **kwargs}
    with pytest.raises(ValueError, match=message):
        make_loader("cifar10-bundled", None, "test", device="cpu", backend="cpu", **args)


def test_non_bool_shuffle_raises_type_error():
    with pytest.raises(TypeError, match="shuffle must be a bool"):
        make_loader("cifar10-bundled", None, "test", 10, "cpu", "cpu", shuffle=1)


def test_cuda_device_without_cuda_raises_clearly():
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda")


def test_unknown_device_string_raises_value_error():
    with pytest.raises(ValueError, match="device must be"):
        resolve_device("gpu7")


def test_each_iteration_is_the_next_epoch_and_state_dict_resumes_it():
    loader = make_loader("cifar10-bundled", None, "test", 300, "cpu", "cpu", shuffle=True, seed=4)
    epochs = [epoch_batches(loader) for _ in range(3)]
    assert loader.state_dict() == {"epoch": 3}
    assert not torch.equal(epochs[1][0][1], epochs[2][0][1])
    resumed = make_loader("cifar10-bundled", None, "test", 300, "cpu", "cpu", shuffle=True, seed=4)
    resumed.load_state_dict({"epoch": 2})
    for (x, y), (x2, y2) in zip(epochs[2], epoch_batches(resumed), strict=True):
        assert torch.equal(x, x2) and torch.equal(y, y2)


def test_load_state_dict_rejects_a_bad_epoch():
    loader = make_loader("cifar10-bundled", None, "test", 100, "cpu", "cpu")
    with pytest.raises(ValueError, match="state\\['epoch'\\] must be a non-negative int"):
        loader.load_state_dict({"epoch": -1})
