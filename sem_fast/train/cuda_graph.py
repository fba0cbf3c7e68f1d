"""The whole training step as one CUDA graph (``sem-fast train --cuda-graph``).

`GraphedStep` runs a training step function ``step(images, labels)`` -- draw sampling, mix,
clean and mixed passes, loss, backward, optimizer update and the epoch's running sums -- on static
input buffers: a few eager warm-up steps on a side stream, then one capture, then one
``graph.replay()`` per step. What the graph holds and what is checkpointed:

- In the graph: every kernel of the step, reading the static image/label buffers, the model's
  parameters, BatchNorm statistics, momentum buffers and the learning rates (device scalars that
  each call fills from the optimizer's param groups, so the lr schedule keeps working), and
  writing them in place.
- Randomness: the step draws one 63-bit key per step from the run's generator (``random_``, a
  Philox op that PyTorch captures graph-safely once the generator is registered with the graph)
  and the Triton sampler derives the whole draw from it. Each replay advances the generator's
  Philox offset by the same amount an eager step does, so the k-th replay draws exactly what the
  k-th eager step would, and ``generator.get_state()`` -- in every checkpoint -- is the whole RNG
  state: a resumed run (which warms up eagerly, then captures again) continues the same sequence.
- Not in the graph: copying the batch into the static buffers, filling the lr scalars, the lr
  schedule, the progress line and the checkpoints.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch

from sem_fast.train.config import TrainConfig

#: Eager steps before the capture, on a side stream (as in PyTorch's whole-network capture
#: example): they compile the Triton kernels (and Inductor's, under --compile), let cuDNN choose
#: its algorithms and create the optimizer's momentum buffers, none of which may happen while
#: capturing. They are real training steps, on the same static buffers as the replays.
WARMUP_STEPS = 3


def check_graph_support(config: TrainConfig, device: torch.device, distributed: bool) -> None:
    """Raise ``ValueError`` saying why ``config`` cannot run its step as a CUDA graph on ``device``."""
    why = None
    if device.type != "cuda":
        why = f"it captures the step in a CUDA graph and needs a CUDA device; this run is on {device.type}"
    elif distributed:
        why = "DDP's gradient all-reduce (torchrun with several processes) is not captured; run one process"
    elif config.amp == "fp16":
        why = "the fp16 GradScaler reads its inf check on the host every step; use --amp bf16 or off"
    elif config.schedule == "onecycle":
        why = (
            "OneCycleLR changes the SGD momentum every step, and the graph holds it fixed; "
            "use --schedule step, cosine or constant"
        )
    if why is not None:
        raise ValueError(f"--cuda-graph cannot be used here: {why}")


class GraphedStep:
    """``step(images, labels)`` replayed from one CUDA graph, on static input buffers.

    ``step`` must read only its two arguments and state that lives on the device (modules,
    ``optimizer``, ``generator``), write only that state, and return nothing. Each call copies
    the batch into the static buffers and fills the learning-rate scalars from
    ``optimizer.param_groups``; the first `WARMUP_STEPS` calls run ``step`` eagerly on a side
    stream, the next captures it (``generator`` registered with the graph) and every call from
    then on replays it. On a CPU, where no graph exists, every call runs ``step`` eagerly on the
    same buffers (the function that is captured on CUDA; tests).

    ``optimizer`` must accept tensor learning rates without reading them on the host
    (``torch.optim.SGD(fused=True)``): while ``step`` runs or is captured, each param group's
    ``lr`` is its device scalar; in between it is the float the lr scheduler sets.
    """

    def __init__(
        self,
        step: Callable[[torch.Tensor, torch.Tensor], None],
        images: torch.Tensor,
        labels: torch.Tensor,
        optimizer: torch.optim.Optimizer,
        generator: torch.Generator,
    ) -> None:
        self.step, self.optimizer, self.generator = step, optimizer, generator
        self.images, self.labels = torch.empty_like(images), torch.empty_like(labels)
        self.lrs = [torch.zeros((), dtype=torch.float32, device=images.device) for _ in optimizer.param_groups]
        self.graph: torch.cuda.CUDAGraph | None = None
        self.calls = 0

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if images.shape != self.images.shape or labels.shape != self.labels.shape:
            raise ValueError(
                f"a CUDA-graph step takes batches of one shape, {tuple(self.images.shape)} images and "
                f"{tuple(self.labels.shape)} labels; got {tuple(images.shape)} and {tuple(labels.shape)}"
            )
        for lr, group in zip(self.lrs, self.optimizer.param_groups):
            lr.fill_(group["lr"])
        self.images.copy_(images)
        self.labels.copy_(labels)
        self.calls += 1
        if self.graph is None:
            with self._tensor_lrs():
                if not self.images.is_cuda:
                    self.step(self.images, self.labels)
                elif self.calls <= WARMUP_STEPS:
                    self._warm_up()
                else:
                    self._capture()
        if self.graph is not None:
            self.graph.replay()

    @contextlib.contextmanager
    def _tensor_lrs(self) -> Iterator[None]:
        groups = self.optimizer.param_groups
        floats = [group["lr"] for group in groups]
        for group, lr in zip(groups, self.lrs):
            group["lr"] = lr
        try:
            yield
        finally:
            for group, value in zip(groups, floats):
                group["lr"] = value

    def _warm_up(self) -> None:
        current = torch.cuda.current_stream(self.images.device)
        side = torch.cuda.Stream(self.images.device)
        side.wait_stream(current)
        with torch.cuda.stream(side):
            self.step(self.images, self.labels)
        current.wait_stream(side)

    def _capture(self) -> None:
        graph = torch.cuda.CUDAGraph()
        index = self.images.device.index
        default = torch.cuda.default_generators[torch.cuda.current_device() if index is None else index]
        if self.generator is not default:
            graph.register_generator_state(self.generator)
        with torch.cuda.graph(graph):
            self.step(self.images, self.labels)
        self.graph = graph
