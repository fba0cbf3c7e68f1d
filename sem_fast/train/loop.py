"""`train`: the training loop of the recipes (fused SEM step, AMP, compile, DDP, logs, checkpoints)."""

from __future__ import annotations

import functools
import itertools
import json
import platform
import random
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, TextIO

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import sem_fast
from sem_fast import SEMConfig, StepOutput, fused_sem_step
from sem_fast.draws import AugmentDraw, MixDraw
from sem_fast.extras import require
from sem_fast.sampling import sample_step_draws
from sem_fast.train.build import autocast_dtype, build_model, build_optimizer, build_scheduler, pick_device
from sem_fast.train.checkpoint import FORMAT, capture_rng, load_checkpoint, restore_rng, save_checkpoint
from sem_fast.train.config import TrainConfig
from sem_fast.train.cuda_graph import GraphedStep, check_graph_support
from sem_fast.train.curves import LearningCurves
from sem_fast.train.distributed import (
    Ranks,
    gather_objects,
    generator_seed,
    init_process_group,
    mean_over_ranks,
    rank_device,
    ranks_from_environment,
    wrap_step_module,
)
from sem_fast.train.inference import predict
from sem_fast.train.metrics_log import MetricsLog, json_safe
from sem_fast.train.progress import ProgressLine
from sem_fast.train.run_dir import check_resume, open_run_directory
from sem_fast.train.run_files import CHECKPOINT_NAME, CONFIG_NAME, SUMMARY_NAME
from sem_fast.train.train_sets import open_loader, read_split, subset_and_validation

#: Seconds between host reads of the running statistics (progress line and non-finite check);
#: on CUDA each read is a sync, so reading at most twice a second keeps the GPU queue full.
SYNC_INTERVAL_S = 0.5
#: Batch size of the per-epoch test evaluation (no gradients are kept, so it can be a few times
#: the training batch; 500 divides the CIFAR test sets).
EVAL_BATCH_SIZE = 500

#: The evaluation's fields of an epoch record (None on epochs without evaluation or validation split).
SCORES = ("test_loss", "test_acc", "val_loss", "val_acc")
#: ``(step_module, images, labels, cfg, draw, augment) -> (loss, ce, sem, hits)``, see `make_batch_forward`.
BatchForward = Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]


class StepModule(nn.Module):
    """`fused_sem_step` of ``model`` as one module call, the unit DDP wraps (see
    `sem_fast.train.distributed.wrap_step_module`): ``(images, labels, cfg, draw, augment) -> StepOutput``.
    Without the checks that read values (``check_values=False``): the draws come from the
    sampler and the loader's labels were checked when the dataset was read, and on CUDA each
    such check is a host sync per step."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, images: torch.Tensor, labels: torch.Tensor, cfg: SEMConfig, draw: MixDraw, augment: AugmentDraw | None
    ) -> StepOutput:
        return fused_sem_step(self.model, images, labels, cfg, draw=draw, augment=augment, check_values=False)


class StepTotals(NamedTuple):
    """An epoch's running statistics on the device, updated in place by every step (no host
    sync; also inside a CUDA graph) and read with the progress line.

    Attributes:
        sums: ``(4,) float32``, the sums of loss, CE, SEM and lambda-weighted hits over the steps.
        first_bad: ``() int64``, the 0-based batch of the first non-finite loss term, -1 if none.
        bad_values: ``(3,) float32``, that batch's loss, CE and SEM.
        batch_index: ``() int64``, the batches run this epoch.
    """

    sums: torch.Tensor
    first_bad: torch.Tensor
    bad_values: torch.Tensor
    batch_index: torch.Tensor

    @classmethod
    def new(cls, device: torch.device) -> StepTotals:
        totals = cls(
            torch.empty(4, device=device), torch.empty((), dtype=torch.int64, device=device),
            torch.empty(3, device=device), torch.empty((), dtype=torch.int64, device=device),
        )  # fmt: skip
        totals.reset()
        return totals

    def reset(self) -> None:
        """Zero the sums and counters (the start of an epoch)."""
        self.sums.zero_()
        self.first_bad.fill_(-1)
        self.bad_values.zero_()
        self.batch_index.zero_()

    def add(self, loss: torch.Tensor, ce: torch.Tensor, sem: torch.Tensor, hits: torch.Tensor) -> None:
        """Add one step's loss terms and hits; remember the first non-finite step."""
        values = torch.stack([loss, ce, sem]).detach().float()
        self.sums.add_(torch.cat([values, hits.detach().float().view(1)]))
        newly_bad = (self.first_bad < 0) & ~torch.isfinite(values).all()
        self.first_bad.copy_(torch.where(newly_bad, self.batch_index, self.first_bad))
        self.bad_values.copy_(torch.where(newly_bad, values, self.bad_values))
        self.batch_index.add_(1)


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; names the epoch, batch and global step, and
    ``saved_epoch``, the epoch of the run's checkpoint (0: none was written)."""

    def __init__(
        self, epoch: int, batch: int, batches: int, step: int, values: dict[str, float], *, saved_epoch: int
    ) -> None:
        self.epoch, self.batch, self.step, self.saved_epoch = epoch, batch, step, saved_epoch
        terms = ", ".join(f"{k}={v:.4g}" for k, v in values.items())
        saved = (f"The checkpoint holds epoch {saved_epoch}, the last finished one" if saved_epoch
                 else "No epoch finished, so no checkpoint was written")  # fmt: skip
        super().__init__(
            f"non-finite loss at epoch {epoch}, batch {batch} of {batches} (optimizer step {step}): {terms}. "
            f"{saved}; lower --lr, or use --amp off or bf16."
        )


def make_batch_forward(
    amp_dtype: torch.dtype | None, compile_forward: bool, *, graphed: bool = False
) -> BatchForward:
    """The per-batch forward: ``(step_module, images, labels, cfg, draw, augment) -> (loss, ce, sem,
    hits)``, ``step_module`` a `StepModule` (or its DDP wrapper), compiled when ``compile_forward``;
    ``graphed``: captured in a CUDA graph, which needs autocast's weight-cast cache off (as
    ``torch.cuda.make_graphed_callables`` requires).

    ``hits`` is the lambda-weighted count of mixed samples whose prediction is their own label
    (weight ``lam``) or their partner's (``1 - lam``). The mixing draws are sampled outside, so the
    compiled graph holds no generator and traces without graph breaks.
    """

    def batch_forward(
        step_module: nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor,
        cfg: SEMConfig,
        draw: MixDraw,
        augment: AugmentDraw | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        device_type = images.device.type
        enabled, dtype = amp_dtype is not None, amp_dtype or torch.bfloat16
        with torch.autocast(device_type, dtype=dtype, enabled=enabled, cache_enabled=not graphed):
            out = step_module(images, labels, cfg, draw, augment)
        pred = out.logits.argmax(1)
        hits = draw.lam * (pred == labels) + (1.0 - draw.lam) * (pred == labels[draw.perm])
        return out.loss, out.ce, out.sem, hits.sum()

    return torch.compile(batch_forward) if compile_forward else batch_forward


class _Run:
    """The state of one run (of this rank): model, optimizer, schedule, scaler, loaders, generator, history."""

    def __init__(self, config: TrainConfig, ranks: Ranks, device: torch.device, resume: bool) -> None:
        self.config, self.ranks, self.device = config, ranks, device
        self.dir = Path(config.run_dir)
        self.checkpoint_path = self.dir / CHECKPOINT_NAME
        checkpoint = self._check_resume(resume)
        self.amp_dtype = autocast_dtype(config.amp, self.device)
        _seed_everything(config.seed)
        self.model = build_model(config).to(self.device)
        if config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        ts = config.train_set
        data_seed = config.seed if config.data_seed < 0 else config.data_seed
        train_data, val_data = subset_and_validation(read_split(ts, config.data_root, ts.train_split, config.classes),
                                                     config.train_subset, config.val_split, data_seed)  # fmt: skip
        test_data = read_split(ts, config.data_root, ts.test_split, config.classes)
        self.images = {"train": len(train_data), "val": len(val_data) if val_data else 0, "test": len(test_data)}
        self.train_loader = open_loader(train_data, config.batch_size // ranks.world_size, self.device, config.loader,
                                        train=True, seed=config.seed, shard_id=ranks.rank, num_shards=ranks.world_size)
        self.test_loader = open_loader(test_data, EVAL_BATCH_SIZE, self.device, config.loader, train=False,
                                       seed=config.seed)  # fmt: skip
        self.val_loader = None if val_data is None else open_loader(val_data, EVAL_BATCH_SIZE, self.device,
                                                                    config.loader, train=False, seed=config.seed)
        cap = config.max_steps_per_epoch
        self.steps_per_epoch = min(len(self.train_loader), cap) if cap else len(self.train_loader)
        self.optimizer = build_optimizer(config, self.model)
        self.scheduler = build_scheduler(config, self.optimizer, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.generator = torch.Generator(device=self.device).manual_seed(generator_seed(config.seed, ranks))
        if config.cuda_graph:
            check_graph_support(config, self.device, ranks.distributed)
        self.totals = StepTotals.new(self.device)
        self.graphed: GraphedStep | None = None  # the CUDA-graph step of `graphed_cfg` (--cuda-graph)
        self.graphed_cfg: SEMConfig | None = None
        self.epoch, self.optimizer_steps, self.history = 0, 0, []
        if checkpoint is not None:
            self._load(checkpoint)
        self.step_module = wrap_step_module(StepModule(self.model), ranks)
        compile_forward = config.compile if config.compile is not None else self.device.type == "cuda"
        self.batch_forward = make_batch_forward(self.amp_dtype, compile_forward, graphed=config.cuda_graph)

    def _check_resume(self, resume: bool) -> dict[str, Any] | None:
        if not resume:
            return None
        checkpoint = load_checkpoint(self.checkpoint_path)
        check_resume(self.config, checkpoint, self.dir, self.ranks.world_size)
        return checkpoint

    def _load(self, checkpoint: dict[str, Any]) -> None:
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.scaler.load_state_dict(checkpoint["scaler"])
        self.train_loader.load_state_dict(checkpoint["train_loader"])
        restore_rng(checkpoint["rng"], self.generator)
        if self.ranks.distributed:
            self.generator.set_state(checkpoint["rank_generators"][self.ranks.rank])
        self.epoch, self.optimizer_steps, self.history = checkpoint["epoch"], checkpoint["step"], checkpoint["history"]

    def save(self) -> None:
        """Write the checkpoint (rank 0; every rank must call it: the ranks' generators are gathered)."""
        generators = gather_objects(self.generator.get_state(), self.ranks)
        if not self.ranks.is_main:
            return
        state = {
            "format": FORMAT, "config": self.config.to_dict(), "epoch": self.epoch, "step": self.optimizer_steps,
            "history": self.history, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "train_loader": self.train_loader.state_dict(), "rng": capture_rng(self.generator),
            "world_size": self.ranks.world_size, "threads": torch.get_num_threads(),
        }  # fmt: skip
        if self.ranks.distributed:
            state["rank_generators"] = generators
        save_checkpoint(self.checkpoint_path, state)

    def train_epoch(self, progress: ProgressLine) -> dict[str, float]:
        """One epoch of optimizer steps; returns the epoch's mean loss terms and train accuracy."""
        config = self.config
        cfg = config.sem_config(mixing=config.mixing_epoch(self.epoch))
        self.model.train()
        totals = self.totals
        totals.reset()
        images_seen, last_sync = 0, time.perf_counter()
        progress.start_epoch(self.epoch + 1)
        for batch, (images, labels) in enumerate(itertools.islice(self.train_loader, self.steps_per_epoch), 1):
            lr = self.optimizer.param_groups[0]["lr"]  # the step's lr, before the schedule moves on
            self.train_step(images, labels, cfg)
            self.scheduler.step()
            self.optimizer_steps += 1
            images_seen += images.shape[0]
            now = time.perf_counter()
            if now - last_sync >= SYNC_INTERVAL_S or batch == self.steps_per_epoch:
                last_sync = now  # the only host reads of the epoch: at most one per SYNC_INTERVAL_S
                self._raise_if_bad(totals.first_bad, totals.bad_values)
                progress.update(batch, images_seen, self._running(totals.sums, batch, lr))
        sums = mean_over_ranks(totals.sums, self.ranks)  # every rank ran the same steps on as many images
        stats = self._running(sums, self.steps_per_epoch, lr)
        stats["train_acc"] = 100.0 * float(sums[3]) / images_seen
        return stats

    def train_step(self, images: torch.Tensor, labels: torch.Tensor, cfg: SEMConfig) -> None:
        """One optimizer step on a batch, added to `totals`, without a host sync: eagerly, or
        replayed from a CUDA graph (``config.cuda_graph``; one graph per ``cfg``: mixing, then ES)."""
        if not self.config.cuda_graph:
            self._step(images, labels, cfg)
            return
        if self.graphed is None or self.graphed_cfg != cfg:
            step = functools.partial(self._step, cfg=cfg)
            self.graphed, self.graphed_cfg = GraphedStep(step, images, labels, self.optimizer, self.generator), cfg
        self.graphed(images, labels)

    def _step(self, images: torch.Tensor, labels: torch.Tensor, cfg: SEMConfig) -> None:
        """The step a CUDA graph captures: sample the draws, forward, backward, optimizer, totals."""
        B, H, W = images.shape[:3]
        draw, augment = sample_step_draws(B, H, W, cfg, device=images.device, generator=self.generator)
        loss, ce, sem, hits = self.batch_forward(self.step_module, images, labels, cfg, draw, augment)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.totals.add(loss, ce, sem, hits)

    @staticmethod
    def _running(sums: torch.Tensor, batches: int, lr: float) -> dict[str, float]:
        loss, ce, sem, _ = (sums / batches).tolist()
        return {"loss": loss, "ce": ce, "sem": sem, "lr": lr}

    def _raise_if_bad(self, first_bad: torch.Tensor, bad_values: torch.Tensor) -> None:
        batch = int(first_bad)
        if batch >= 0:
            loss, ce, sem = bad_values.tolist()
            step = self.epoch * self.steps_per_epoch + batch + 1
            raise NonFiniteLossError(self.epoch + 1, batch + 1, self.steps_per_epoch, step,
                                     {"loss": loss, "ce": ce, "sem": sem}, saved_epoch=self.epoch)

    def evaluate(self) -> dict[str, float | None]:
        """Clean ``test_loss`` / ``val_loss`` (cross-entropy) and ``test_acc`` / ``val_acc`` (top-1 %);
        the validation values are None without a validation split."""
        scores: dict[str, float | None] = dict.fromkeys(SCORES)
        for part, loader in (("test", self.test_loader), ("val", self.val_loader)):
            if loader is not None:
                out = predict(self.model, loader, self.config.sem_config(mixing=False), amp_dtype=self.amp_dtype)
                scores[f"{part}_loss"] = float(F.cross_entropy(out.logits, out.labels))
                scores[f"{part}_acc"] = 100.0 * int((out.logits.argmax(1) == out.labels).sum()) / out.labels.numel()
        return scores


def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
    stream: TextIO | None = None,
) -> dict[str, Any]:
    """Train ``config`` to the end and return its summary (also written to ``<run dir>/summary.json``).

    Writes ``config.json`` (``data_root`` resolved to an absolute path), ``metrics.jsonl``/
    ``metrics.csv`` (one record per epoch, see `sem_fast.train.metrics_log.COLUMNS`), the
    learning curves ``curves.png``/``.svg`` (with ``config.plots``), TensorBoard events when
    installed, and ``checkpoint.pt`` after every epoch, holding the directory's lock throughout
    (`sem_fast.train.run_dir`). ``resume`` continues from that checkpoint and ends with the same
    numbers as an uninterrupted run; ``overwrite`` starts over, removing everything the earlier
    run and its evaluation wrote. ``on_epoch_end`` is called with each epoch's record after its
    checkpoint is written. ``stream`` receives the progress line (default stderr).

    Under ``torchrun`` (``WORLD_SIZE > 1``) or in an initialized process group the run is data
    parallel (`sem_fast.train.distributed`): every rank calls `train` with the same arguments,
    ``config.batch_size`` is the global batch, rank 0 writes the files, and every rank returns
    the summary of its own model copy (equal weights; rank 0's BatchNorm statistics are saved).
    The process group is joined on the first call and kept for later calls until exit.

    Raises `NonFiniteLossError` when the loss becomes NaN/inf, ``FileExistsError`` when the run
    directory already holds a run and neither ``resume`` nor ``overwrite`` is set,
    `DirectoryInUseError` when another process trains in it, ``ImportError`` naming the extra
    when ``config.plots`` is set without matplotlib.
    """
    if resume and overwrite:
        raise ValueError("resume and overwrite exclude each other: continue the run, or start it over")
    ranks = ranks_from_environment()
    if config.batch_size % ranks.world_size:
        raise ValueError(
            f"batch_size (--batch-size) is the global batch of the {ranks.world_size} DDP processes and must be "
            f"divisible by {ranks.world_size}, got {config.batch_size}"
        )
    config = config.replace(data_root=str(Path(config.data_root).expanduser().resolve()))
    if ranks.is_main:
        if config.plots:
            require("matplotlib", "the learning curves (--no-plots: none)")
        if (early_stop := config.early_stop_warning()) is not None:
            warnings.warn(early_stop, stacklevel=2)
    device = pick_device(rank_device(config.device, ranks))
    init_process_group(ranks, device)
    with open_run_directory(Path(config.run_dir), ranks, resume=resume, overwrite=overwrite):
        return _train(config, ranks, device, resume, on_epoch_end, stream)


def _train(
    config: TrainConfig,
    ranks: Ranks,
    device: torch.device,
    resume: bool,
    on_epoch_end: Callable[[dict[str, Any]], None] | None,
    stream: TextIO | None,
) -> dict[str, Any]:
    run = _Run(config, ranks, device, resume)
    if ranks.is_main:
        (run.dir / CONFIG_NAME).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    log = MetricsLog(run.dir, run.history) if ranks.is_main else None
    progress = ProgressLine(config.epochs, run.steps_per_epoch, stream=stream, first_epoch=run.epoch,
                            enabled=config.progress and ranks.is_main)  # fmt: skip
    curves = LearningCurves(config, run.dir) if ranks.is_main and config.plots else None
    elapsed = run.history[-1]["elapsed_s"] if run.history else 0.0
    try:
        while run.epoch < config.epochs:
            started = time.perf_counter()
            stats = run.train_epoch(progress)
            train_time = time.perf_counter() - started
            last = run.epoch + 1 == config.epochs
            scores = dict.fromkeys(SCORES)
            if (run.epoch + 1) % config.eval_every == 0 or last:
                scores = run.evaluate()
            elapsed += time.perf_counter() - started
            images = run.steps_per_epoch * config.batch_size
            shown = {k: stats[k] for k in ("loss", "ce", "sem", "lr")}
            suffix = "  ".join(f"{part} acc {scores[f'{part}_acc']:.2f}%" for part in ("test", "val")
                               if scores[f"{part}_acc"] is not None)  # fmt: skip
            progress.finish_epoch(run.steps_per_epoch, images, train_time, shown, suffix=suffix)
            record = {
                "epoch": run.epoch + 1, "step": run.optimizer_steps,
                "mix": config.mix if config.mixing_epoch(run.epoch) else "none", "lr": stats["lr"],
                "train_loss": stats["loss"], "train_ce": stats["ce"], "train_sem": stats["sem"],
                "train_acc": stats["train_acc"], **scores,
                "epoch_time_s": train_time, "img_per_s": images / train_time, "elapsed_s": elapsed,
            }  # fmt: skip
            run.epoch += 1
            run.history.append(record)
            if log is not None:
                log.append(record)
            run.save()
            if curves is not None:
                curves.after_epoch(run.history)
            if on_epoch_end is not None:
                on_epoch_end(record)
    finally:
        if log is not None:
            log.close()
    summary = _summary(run)
    if ranks.is_main:
        (run.dir / SUMMARY_NAME).write_text(json.dumps(json_safe(summary), indent=2, allow_nan=False) + "\n")
    return summary


def _summary(run: _Run) -> dict[str, Any]:
    final = run.history[-1]
    tested = [r for r in run.history if r["test_acc"] is not None]
    best = max(tested, key=lambda r: r["test_acc"])
    train_time = sum(r["epoch_time_s"] for r in run.history)
    return {
        "recipe": run.config.recipe,
        "config": run.config.to_dict(),
        "epochs": final["epoch"],
        "steps": final["step"],
        "final": final,
        "final_test_acc": final["test_acc"],
        "best_test_acc": best["test_acc"],
        "best_epoch": best["epoch"],
        "final_val_acc": final.get("val_acc"),
        "images": run.images,
        "train_time_s": train_time,
        "img_per_s": sum(r["epoch_time_s"] * r["img_per_s"] for r in run.history) / train_time,
        "elapsed_s": final["elapsed_s"],
        "checkpoint": str(run.checkpoint_path),
        "world_size": run.ranks.world_size,
        "device": torch.cuda.get_device_name(run.device) if run.device.type == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "amp": str(run.amp_dtype).replace("torch.", "") if run.amp_dtype else "off",
        "versions": {"sem_fast": sem_fast.__version__, "torch": torch.__version__, "python": platform.python_version()},
    }


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)

