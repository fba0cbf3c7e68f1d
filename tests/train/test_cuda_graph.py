"""``--cuda-graph``: the whole training step replayed as one CUDA graph (`sem_fast.train.cuda_graph`).

On a CPU there is no graph: `GraphedStep` runs the function it would capture eagerly on its
static buffers, so the trainer's captured step is tested here against the ordinary step; the
capture, the replays and the RNG across them need CUDA (the `cuda`-marked tests)."""

import pytest
import torch

from sem_fast.train import loop, train
from sem_fast.train.build import build_optimizer
from sem_fast.train.checkpoint import load_checkpoint
from sem_fast.train.cuda_graph import WARMUP_STEPS, GraphedStep, check_graph_support
from tests.train.test_loop import _numbers
from tests.utils import train_interrupted_then_resumed

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.fixture
def graph_config(tiny_config):
    """Two epochs of 6 steps (mixup + SEM with crop/flip, then the early-stop phase), cosine lr."""
    return tiny_config.replace(epochs=2, es_epochs=1, max_steps_per_epoch=6, schedule="cosine")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present")
def test_cuda_graph_is_refused_without_cuda(graph_config):
    message = "--cuda-graph cannot be used here: .* needs a CUDA device; this run is on cpu"
    with pytest.raises(ValueError, match=message):
        train(graph_config.replace(cuda_graph=True))


@pytest.mark.parametrize(
    "changes, distributed, message",
    [
        (dict(amp="fp16"), False, "GradScaler reads its inf check on the host"),
        (dict(schedule="onecycle"), False, "OneCycleLR changes the SGD momentum"),
        ({}, True, "DDP's gradient all-reduce"),
    ],
)
def test_cuda_graph_names_what_it_cannot_capture(graph_config, changes, distributed, message):
    config = graph_config.replace(cuda_graph=True, **changes)
    check_graph_support(config.replace(schedule="step", amp="bf16"), torch.device("cuda"), False)
    with pytest.raises(ValueError, match=message):
        check_graph_support(config, torch.device("cuda"), distributed)


def test_captured_step_run_eagerly_on_cpu_equals_the_ordinary_step(graph_config, monkeypatch):
    """The trainer's step through `GraphedStep` (static buffers, device lr scalars; a new graph
    step for the early-stop phase) ends bit for bit where the ordinary loop with the same fused
    SGD ends: same history, weights and generator state; and within rounding of the default SGD."""
    calls = []
    real_call = GraphedStep.__call__
    monkeypatch.setattr(GraphedStep, "__call__", lambda self, *args: calls.append(id(self)) or real_call(self, *args))
    monkeypatch.setattr(loop, "check_graph_support", lambda *args: None)  # lets the CPU take the graph path
    graphed = graph_config.replace(cuda_graph=True, out=graph_config.out + "-graph")
    train(graphed)
    assert len(calls) == 12 and len(set(calls)) == 2  # one GraphedStep per phase

    default = graph_config.replace(out=graph_config.out + "-default")
    train(default)
    fused = lambda config, model: build_optimizer(config.replace(cuda_graph=True), model)
    monkeypatch.setattr(loop, "build_optimizer", fused)
    train(graph_config)

    got, same_optimizer, plain = (load_checkpoint(c.run_dir) for c in (graphed, graph_config, default))
    assert _numbers(got["history"]) == _numbers(same_optimizer["history"])
    assert torch.equal(got["rng"]["generator"], plain["rng"]["generator"])
    for name, tensor in same_optimizer["model"].items():
        assert torch.equal(got["model"][name], tensor), name
        torch.testing.assert_close(got["model"][name], plain["model"][name], rtol=1e-4, atol=1e-5, msg=name)


def test_graphed_step_takes_one_batch_shape_and_lends_the_step_device_lrs():
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.25, fused=True)
    seen = []

    def step(images, labels):
        lr = optimizer.param_groups[0]["lr"]
        seen.append((isinstance(lr, torch.Tensor) and float(lr), images.data_ptr()))
        model(images).sum().backward()
        optimizer.step()

    graphed = GraphedStep(step, torch.zeros(4, 3), torch.zeros(4), optimizer, torch.Generator())
    graphed(torch.ones(4, 3), torch.zeros(4))
    optimizer.param_groups[0]["lr"] = 0.5
    graphed(torch.ones(4, 3), torch.zeros(4))
    assert [lr for lr, _ in seen] == [0.25, 0.5]  # device scalars holding the groups' lr
    assert {ptr for _, ptr in seen} == {graphed.images.data_ptr()}  # the static buffer, every call
    assert optimizer.param_groups[0]["lr"] == 0.5  # the float is back for the lr scheduler
    with pytest.raises(ValueError, match=r"batches of one shape, \(4, 3\) images"):
        graphed(torch.ones(5, 3), torch.zeros(5))


@pytest.mark.cuda
@needs_cuda
def test_graph_replays_draw_and_train_like_eager_steps_on_cuda(graph_config):
    """The k-th replay draws what the k-th eager step draws (the generator's Philox offset
    advances the same way), so both runs end with the same generator state and close weights."""
    base = graph_config.replace(device="cuda", amp="bf16", compile=False, max_steps_per_epoch=2 * WARMUP_STEPS + 2)
    eager, graphed = base.replace(out=base.out + "-eager"), base.replace(out=base.out + "-graph", cuda_graph=True)
    train(eager)
    train(graphed)
    a, b = load_checkpoint(eager.run_dir), load_checkpoint(graphed.run_dir)
    assert torch.equal(a["rng"]["generator"], b["rng"]["generator"])
    for name, tensor in a["model"].items():
        torch.testing.assert_close(b["model"][name], tensor, rtol=2e-2, atol=2e-3, msg=name)


@pytest.mark.cuda
@needs_cuda
def test_resumed_graph_run_continues_the_same_draws_on_cuda(graph_config):
    config = graph_config.replace(device="cuda", amp="bf16", compile=False, cuda_graph=True,
                                  max_steps_per_epoch=2 * WARMUP_STEPS + 2)  # fmt: skip
    full = config.replace(out=config.out + "-full")
    train(full)
    train_interrupted_then_resumed(config)
    expected, got = load_checkpoint(full.run_dir), load_checkpoint(config.run_dir)
    assert torch.equal(got["rng"]["generator"], expected["rng"]["generator"])
    assert [r["mix"] for r in got["history"]] == [r["mix"] for r in expected["history"]]
    for name, tensor in expected["model"].items():
        torch.testing.assert_close(got["model"][name], tensor, rtol=2e-2, atol=2e-3, msg=name)
