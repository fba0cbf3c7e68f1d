"""Data-parallel training on the CPU with gloo: two ranks spawned by ``torch.multiprocessing``.

What is checked: the DDP step (the whole `StepModule` wrapped, so the two ``encode`` calls and the
``classify`` call are one DDP forward) all-reduces the gradients: both ranks end with equal
weights, and those equal one process that averages the losses of the two per-rank sub-batches
(per-rank BatchNorm statistics and in-rank mixing partners, the documented choice); and a
``torchrun``-style run (environment variables) writes its files from rank 0 only, checkpoints
every rank's generator and resumes exactly.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sem_fast import SEMConfig, fused_sem_step, sample_draw
from sem_fast.models import PreActResNet18
from sem_fast.train import get_recipe, train
from sem_fast.train.checkpoint import load_checkpoint
from sem_fast.train.distributed import ranks_from_environment, wrap_step_module
from sem_fast.train.loop import StepModule
from tests.utils import assert_close, set_seed, train_interrupted_then_resumed

WORLD = 2
#: Per-rank batch: odd, so no power-of-two shortcut hides a bug.
B = 5
STEPS = 2
#: fp32: the all-reduce sums the two gradients in another order than autograd does in one process.
ATOL, RTOL = 1e-6, 1e-5
CONFIGS = {
    "detached target": SEMConfig(mix="mixup", gamma=1.0, crop_padding=0, hflip=False),
    "target with gradient": SEMConfig(mix="cutmix", gamma=0.5, detach_target=False, crop_padding=0, hflip=False),
}


def _model() -> torch.nn.Module:
    set_seed(0)
    return PreActResNet18(num_classes=10, width=4)


def _batches(step: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The two ranks' sub-batches of step ``step``: uint8 (B, 32, 32, 3) images, (B,) labels."""
    g = torch.Generator().manual_seed(step)
    images = torch.randint(0, 256, (WORLD * B, 32, 32, 3), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (WORLD * B,), generator=g)
    return [(images[r * B : (r + 1) * B], labels[r * B : (r + 1) * B]) for r in range(WORLD)]


def _draw(cfg: SEMConfig, step: int, rank: int):
    return sample_draw(B, 32, 32, cfg, device="cpu", generator=torch.Generator().manual_seed(100 * step + rank))


def _ddp_steps_worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        ranks = ranks_from_environment()
        for name, cfg in CONFIGS.items():
            model = _model()
            step = wrap_step_module(StepModule(model), ranks)
            optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
            for s in range(STEPS):
                images, labels = _batches(s)[rank]
                out = step(images, labels, cfg, _draw(cfg, s, rank), None)
                optimizer.zero_grad(set_to_none=True)
                out.loss.backward()
                optimizer.step()
            torch.save(dict(model.named_parameters()), Path(out_dir, f"{name}-rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _one_process_reference(cfg: SEMConfig) -> dict[str, torch.Tensor]:
    """One process: the mean of the per-rank losses, each sub-batch normalized on its own."""
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for s in range(STEPS):
        losses = [fused_sem_step(model, x, y, cfg, draw=_draw(cfg, s, r)).loss for r, (x, y) in enumerate(_batches(s))]
        optimizer.zero_grad(set_to_none=True)
        torch.stack(losses).mean().backward()
        optimizer.step()
    return dict(model.named_parameters())


def test_ddp_steps_leave_equal_weights_on_both_ranks_equal_to_one_process_averaging_the_sub_batches(tmp_path):
    mp.spawn(_ddp_steps_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD)
    for name, cfg in CONFIGS.items():
        rank0, rank1 = (torch.load(tmp_path / f"{name}-rank{r}.pt") for r in range(WORLD))
        expected = _one_process_reference(cfg)
        start = dict(_model().named_parameters())
        for key, value in expected.items():
            assert torch.equal(rank0[key], rank1[key]), f"{name}: {key} differs between the ranks"
            assert_close(rank0[key], value, atol=ATOL, rtol=RTOL, name=f"{name}: {key}")
        assert not torch.equal(rank0["head.weight"], start["head.weight"])  # the steps did train


def _numbers(history):
    """The epoch records without their timings (which differ between two runs)."""
    timing = ("epoch_time_s", "img_per_s", "elapsed_s")
    return [{k: v for k, v in r.items() if k not in timing} for r in history]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun_worker(rank: int, port: int, root: str) -> None:
    """What ``torchrun --nproc_per_node=2 -m sem_fast.train train ...`` runs on each rank: a full
    run, then the same run interrupted after epoch 1 and resumed."""
    import os

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(WORLD))  # fmt: skip
    config = _tiny(root)
    summaries = {"full": train(config.replace(out=f"{root}/full"))}
    summaries["resumed"] = train_interrupted_then_resumed(config)
    Path(root, f"summaries-rank{rank}.json").write_text(json.dumps(summaries))


def _tiny(root: str):
    return get_recipe("demo").replace(
        out=f"{root}/resumed", width=4, epochs=3, es_epochs=0, batch_size=2 * 8, max_steps_per_epoch=2, eval_every=3,
        progress=False,
    )  # fmt: skip


def test_torchrun_style_run_writes_from_rank_0_and_resumes_exactly(tmp_path):
    mp.spawn(_torchrun_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD)
    full, resumed = load_checkpoint(tmp_path / "full"), load_checkpoint(tmp_path / "resumed")
    assert _numbers(resumed["history"]) == _numbers(full["history"]) and len(full["history"]) == 3
    for name, tensor in full["model"].items():
        assert torch.equal(resumed["model"][name], tensor), name
    assert resumed["world_size"] == 2 and len(resumed["rank_generators"]) == 2
    assert not torch.equal(*resumed["rank_generators"])  # each rank draws its own mixing coefficients
    assert all(torch.equal(a, b) for a, b in zip(resumed["rank_generators"], full["rank_generators"]))
    lines = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]  # one writer
    summary = json.loads((tmp_path / "resumed" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 6
    per_rank = [json.loads((tmp_path / f"summaries-rank{r}.json").read_text()) for r in range(WORLD)]
    # the logged train loss is the mean over the ranks, the same on both
    assert per_rank[0]["resumed"]["final"]["train_loss"] == per_rank[1]["resumed"]["final"]["train_loss"]


def test_resuming_a_ddp_checkpoint_with_another_process_count_names_both(tmp_path):
    config = _tiny(str(tmp_path)).replace(epochs=1)
    train(config)
    path = Path(config.run_dir, "checkpoint.pt")
    state = torch.load(path, weights_only=True)
    state["world_size"] = 2  # as a 2-process DDP run writes it
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"written by a run of 2 process\(es\).*not 1"):
        train(config, resume=True)


def test_global_batch_not_divisible_by_the_ranks_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ValueError, match=r"batch_size \(--batch-size\) is the global batch of the 2 DDP processes"):
        train(_tiny(str(tmp_path)).replace(batch_size=15))
