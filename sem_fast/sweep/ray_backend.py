"""Ray Tune backend (``sem-fast sweep --backend ray``; needs ``pip install "ray[tune]"``).

Ray schedules the trials the spec expanded to (one Tune trial each, ``tune.grid_search`` over
their names) on a Ray cluster, or on a local instance started here: each trial gets
``cpus_per_trial`` CPUs and ``gpus_per_trial`` of a GPU (0.25: four trials share one GPU) and
runs the same `train` as the local backend, into the same run directory, so the results table,
resuming and skipping work alike. The trainer reports every evaluated epoch (``epoch``,
``test_acc``) to Tune; with ``asha`` an `ASHAScheduler` stops the weaker trials at its rungs
(``grace_period`` epochs, then x ``reduction_factor``), compared on ``test_acc``; a stopped
trial keeps its checkpoint and gets a ``stopped.json``, so later runs of the sweep skip it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sem_fast.extras import require
from sem_fast.sweep.local import Log, Pending, TrialOutcomes
from sem_fast.sweep.trials import STOPPED_NAME
from sem_fast.train import TrainConfig, train
from sem_fast.train.run_files import SUMMARY_NAME

#: What ASHA compares trials on, and its time axis (1-based epochs).
ASHA_METRIC, ASHA_TIME_ATTR = "test_acc", "epoch"


@dataclass(frozen=True)
class RayOptions:
    """How the trials are placed and stopped.

    Attributes:
        address: a running cluster's address for ``ray.init`` (None: the one Ray is already
            initialized with, else ``RAY_ADDRESS``, else a new local instance).
        cpus_per_trial, gpus_per_trial: Ray resources of one trial (fractions of a GPU share it).
        asha: stop weak trials early with ASHA.
        grace_period: epochs every trial runs before ASHA may stop it.
        reduction_factor: ASHA keeps 1 / reduction_factor of the trials at each rung.
    """

    address: str | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    asha: bool = False
    grace_period: int = 1
    reduction_factor: int = 4

    def __post_init__(self) -> None:
        if not self.cpus_per_trial > 0 or not self.gpus_per_trial >= 0:
            raise ValueError(
                f"cpus_per_trial must be > 0 and gpus_per_trial >= 0, got {self.cpus_per_trial}, {self.gpus_per_trial}"
            )
        if self.grace_period < 1 or self.reduction_factor < 2:
            raise ValueError(
                f"ASHA needs grace_period >= 1 and reduction_factor >= 2, "
                f"got {self.grace_period}, {self.reduction_factor}"
            )


def import_tune() -> Any:
    """``ray.tune``; ``ImportError`` saying how to install it."""
    return require("ray.tune", "--backend ray (Ray Tune)")


def run_ray(
    pending: Pending, options: RayOptions, out: Path, outcomes: TrialOutcomes, stopped: list[str], log: Log
) -> None:
    """Run ``pending`` as Ray Tune trials; record them in ``outcomes`` / ``stopped``. Tune's own
    files go to ``<out>/ray``."""
    tune = import_tune()
    import ray

    if not pending:
        return
    by_name = {trial.name: (trial, resume) for trial, resume in pending}
    payload = {t.name: (t.config.replace(progress=False).to_dict(), resume) for t, resume in pending}
    scheduler = _recording_asha(options, max(t.config.epochs for t, _ in pending)) if options.asha else None
    own_ray = not ray.is_initialized()
    if own_ray:
        ray.init(address=options.address, include_dashboard=False)
    try:
        trainable = tune.with_resources(
            tune.with_parameters(_train_trial, trials=payload, threads=max(1, int(options.cpus_per_trial))),
            {"cpu": options.cpus_per_trial, "gpu": options.gpus_per_trial},
        )
        tuner = tune.Tuner(
            trainable,
            param_space={"trial": tune.grid_search(list(by_name))},
            tune_config=tune.TuneConfig(scheduler=scheduler),
            run_config=tune.RunConfig(storage_path=str(out.resolve() / "ray"), name="tune", verbose=1),
        )
        log(f"ray: {len(pending)} trials, {options.cpus_per_trial:g} CPU + {options.gpus_per_trial:g} GPU each"
            + (f", ASHA (grace {options.grace_period}, reduction {options.reduction_factor})" if options.asha else ""))
        try:
            results = tuner.fit()
        except KeyboardInterrupt:
            outcomes.interrupted = True
            return
        for result in results:
            name = result.config["trial"]
            trial, resume = by_name[name]
            if (trial.dir / SUMMARY_NAME).is_file():
                outcomes.done(trial, resume)
            elif result.error is not None:
                outcomes.failed[name] = f"{type(result.error).__name__}: {result.error}"
            elif scheduler is not None and name in scheduler.stopped:
                (trial.dir / STOPPED_NAME).write_text(json.dumps(scheduler.stopped[name]) + "\n")
                stopped.append(name)
            else:  # ended by Ctrl-C: its checkpoint is resumed by the next run of the sweep
                outcomes.interrupted = True
    finally:
        if own_ray:
            ray.shutdown()


def _train_trial(params: dict[str, Any], trials: dict[str, tuple[dict[str, Any], bool]], threads: int) -> None:
    """The Tune function trainable: train one trial, reporting each evaluated epoch."""
    from ray import tune

    config, resume = trials[params["trial"]]
    torch.set_num_threads(threads)

    def report(record: dict[str, Any]) -> None:
        if record["test_acc"] is not None:
            tune.report({ASHA_TIME_ATTR: record["epoch"], ASHA_METRIC: record["test_acc"],
                         "train_loss": record["train_loss"]})  # fmt: skip

    train(TrainConfig.from_dict(config), resume=resume, on_epoch_end=report)


def _recording_asha(options: RayOptions, epochs: int) -> Any:
    """An ``ASHAScheduler`` that also remembers the trials it stopped early (``.stopped``: name ->
    last result), so the sweep can tell them from trials ended by Ctrl-C."""
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    class RecordingASHA(ASHAScheduler):
        def __init__(self) -> None:
            # max_t past the last epoch: ASHA also answers STOP at max_t, which would not be an
            # early stop (the trial ends there anyway).
            super().__init__(time_attr=ASHA_TIME_ATTR, metric=ASHA_METRIC, mode="max", max_t=epochs + 1,
                             grace_period=options.grace_period, reduction_factor=options.reduction_factor)  # fmt: skip
            self.stopped: dict[str, dict[str, Any]] = {}

        def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
            decision = super().on_trial_result(tune_controller, trial, result)
            if decision == TrialScheduler.STOP:
                last = {ASHA_TIME_ATTR: result[ASHA_TIME_ATTR], ASHA_METRIC: result[ASHA_METRIC]}
                self.stopped[trial.config["trial"]] = last
            return decision

    return RecordingASHA()
