"""The interface every loader backend implements (`Loader`) and the checks of its arguments."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator

import torch

from sem_fast._checks import check_positive_int
from sem_fast.data.epochs import batch_spans, shard_span

Batch = tuple[torch.Tensor, torch.Tensor]


def resolve_device(device: str | torch.device) -> torch.device:
    """``device`` as a `torch.device` with an index on CUDA; raises if CUDA is asked for but absent."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device must be a torch.device or a string like 'cpu' or 'cuda:0', got {device!r}") from err
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device is {device} but CUDA is not available (torch.cuda.is_available() is False)")
        return torch.device("cuda", torch.cuda.current_device() if device.index is None else device.index)
    if device.type != "cpu":
        raise ValueError(f"device must be a CPU or CUDA device, got {device}")
    return device


class Loader(ABC):
    """Epoch-exact batches ``(images (b, H, W, C) uint8, labels (b,) int64)``, both on ``device``.

    ``iter(loader)`` runs the next epoch (``loader.epoch``, then incremented); ``len(loader)`` is
    the number of batches per epoch of this shard; ``b`` is ``batch_size`` except for a short
    last batch when ``drop_last`` is False. Set ``loader.epoch`` (or `load_state_dict`) to
    resume: epoch ``e`` always yields the same batches for the same seed. The sharding and
    last-batch policy are documented in `sem_fast.data.epochs`.
    """

    backend: str

    def __init__(
        self,
        dataset_size: int,
        num_classes: int,
        batch_size: int,
        device: torch.device,
        *,
        shuffle: bool,
        seed: int,
        drop_last: bool,
        shard_id: int,
        num_shards: int,
    ) -> None:
        check_positive_int("batch_size", batch_size)
        check_positive_int("num_shards", num_shards)
        if not isinstance(shard_id, int) or isinstance(shard_id, bool) or not 0 <= shard_id < num_shards:
            raise ValueError(f"shard_id must be an int in [0, num_shards={num_shards}), got {shard_id!r}")
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        for name, flag in (("shuffle", shuffle), ("drop_last", drop_last)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be a bool, got {flag!r}")
        self.dataset_size, self.num_classes, self.batch_size = dataset_size, num_classes, batch_size
        self.device, self.shuffle, self.seed, self.drop_last = device, shuffle, seed, drop_last
        self.shard_id, self.num_shards = shard_id, num_shards
        self.start, self.stop = shard_span(dataset_size, batch_size, drop_last, shard_id, num_shards)
        if self.stop == self.start:
            full, remedy = ("full ", " or set drop_last=False") if drop_last else ("", "")
            raise ValueError(f"shard {shard_id} of {num_shards} gets no {full}batch of {batch_size} from "
                             f"{dataset_size} samples; lower batch_size or num_shards{remedy}")
        self.epoch = 0

    @property
    def num_samples(self) -> int:
        """Samples this shard yields per epoch."""
        return self.stop - self.start

    def __len__(self) -> int:
        return len(batch_spans(self.start, self.stop, self.batch_size))

    def state_dict(self) -> dict[str, int]:
        """The loader position: the next epoch to run (epoch-granular; checkpoint between epochs)."""
        return {"epoch": self.epoch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        epoch = state.get("epoch")
        if not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"state['epoch'] must be a non-negative int, got {epoch!r}")
        self.epoch = epoch

    def __iter__(self) -> Iterator[Batch]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        return self._epoch_batches(epoch)

    @abstractmethod
    def _epoch_batches(self, epoch: int) -> Iterator[Batch]:
        """The batches of epoch ``epoch`` for this shard, in order."""

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(backend={self.backend!r}, samples={self.num_samples}/{self.dataset_size}, "
                f"batch_size={self.batch_size}, batches={len(self)}, device={self.device}, shuffle={self.shuffle}, "
                f"drop_last={self.drop_last}, shard={self.shard_id}/{self.num_shards}, epoch={self.epoch})")
