"""Whole training steps of the real trainer neither wait for the device nor copy Python data.

Every op between the end of an epoch's first step(s) and the epoch's one progress read -- the
loader's next batch, the draws, the step, backward, optimizer, lr schedule, running sums -- runs
under `tests.utils.HostSyncRecorder` (on a CPU the ops that would sync on a GPU), and on CUDA
also under ``torch.cuda.set_sync_debug_mode("error")``.
"""

import math

import pytest
import torch

from sem_fast.ops import native
from sem_fast.train import loop, train
from sem_fast.train.cuda_graph import WARMUP_STEPS
from tests.utils import HostSyncRecorder

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
needs_ext = pytest.mark.skipif(native.probe("cpu") is not None, reason=str(native.probe("cpu")))


class _Windows:
    """Records each epoch from the end of its first ``skip`` steps to its progress read (with
    `loop.SYNC_INTERVAL_S` infinite, the read after the last step)."""

    def __init__(self, monkeypatch, skip: int, sync_debug: bool) -> None:
        self.skip, self.sync_debug = skip, sync_debug
        self.recorders: list[HostSyncRecorder] = []
        self.steps: list[int] = []  # steps run inside each window
        self._open: HostSyncRecorder | None = None
        self._epoch_steps = 0
        real_step, real_read = loop._Run.train_step, loop._Run._raise_if_bad

        def train_step(run, images, labels, cfg):
            real_step(run, images, labels, cfg)
            self._epoch_steps += 1
            if self._open is not None:
                self.steps[-1] += 1
            elif self._epoch_steps == self.skip:
                self._start()

        def raise_if_bad(run, first_bad, bad_values):
            self._stop()
            return real_read(run, first_bad, bad_values)

        monkeypatch.setattr(loop, "SYNC_INTERVAL_S", math.inf)
        monkeypatch.setattr(loop._Run, "train_step", train_step)
        monkeypatch.setattr(loop._Run, "_raise_if_bad", raise_if_bad)

    def _start(self) -> None:
        self._open = HostSyncRecorder().__enter__()
        self.recorders.append(self._open)
        self.steps.append(0)
        if self.sync_debug:
            torch.cuda.set_sync_debug_mode("error")

    def _stop(self) -> None:
        if self.sync_debug:
            torch.cuda.set_sync_debug_mode("default")
        if self._open is not None:
            self._open.__exit__(None, None, None)
        self._open, self._epoch_steps = None, 0


@pytest.mark.parametrize(
    "device, backend, cuda_graph",
    [
        pytest.param("cpu", "reference", False),
        pytest.param("cpu", "native", False, marks=needs_ext),
        pytest.param("cuda", "triton", False, marks=[pytest.mark.cuda, needs_cuda]),
        pytest.param("cuda", "native", False, marks=[pytest.mark.cuda, needs_cuda]),
        pytest.param("cuda", "triton", True, marks=[pytest.mark.cuda, needs_cuda]),
    ],
)
def test_training_steps_neither_sync_with_the_host_nor_copy_python_data(
    tiny_config, monkeypatch, device, backend, cuda_graph
):
    """Two epochs (mixup + SEM with crop/flip, then the early-stop phase without mixing), 6
    steps each; the first step of an epoch (lazy set-up), or with --cuda-graph its warm-up and
    capture steps, are not recorded."""
    skip = WARMUP_STEPS + 1 if cuda_graph else 1
    windows = _Windows(monkeypatch, skip, sync_debug=device == "cuda")
    config = tiny_config.replace(device=device, backend=backend, cuda_graph=cuda_graph, epochs=2, es_epochs=1,
                                 max_steps_per_epoch=6, schedule="cosine", compile=False)  # fmt: skip
    train(config)
    assert windows.steps == [6 - skip] * 2
    assert [r.syncs for r in windows.recorders] == [[], []]
    assert [r.created for r in windows.recorders] == [[], []]


def test_the_recorder_sees_the_syncs_of_the_value_checks(tiny_config, monkeypatch):
    """The same harness with the step's value checks on (as an eager user call has them):
    label range, permutation, boxes and crop offsets are read on the host every step."""
    windows = _Windows(monkeypatch, 1, sync_debug=False)
    real = loop.fused_sem_step
    monkeypatch.setattr(loop, "fused_sem_step", lambda *args, **kwargs: real(*args, **{**kwargs, "check_values": True}))
    train(tiny_config.replace(epochs=1, es_epochs=0))
    assert windows.steps == [2]
    syncs = windows.recorders[0].syncs
    assert syncs.count("aten.equal.default") == 2  # draw.perm against arange(B), each step
    assert syncs.count("Tensor.__int__") == 2 * 2  # the label range: int() of aminmax's two values
