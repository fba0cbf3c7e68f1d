"""`run_sweep`: run a spec's trials (skipping finished ones, resuming interrupted ones) with a
backend, then write the results table and plots.

Layout of the sweep directory ``out``:

- ``sweep.json``: the spec's source, its seeds and metric, and every trial (name, swept values, seed);
- ``trials/<name>/``: each trial's run directory (``summary.json``, ``metrics.*``, ``checkpoint.pt``);
- ``results.md``, ``results.csv``, ``trials.csv`` (`sem_fast.sweep.results`);
- ``plot_<field>.png`` for each plotted field (`sem_fast.sweep.plot`).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from sem_fast.sweep.local import Log, Pending, TrialOutcomes, run_parallel, run_sequential
from sem_fast.sweep.plot import plot_metric
from sem_fast.sweep.ray_backend import RayOptions, run_ray
from sem_fast.sweep.results import build_table, to_markdown, varying_fields, write_table_csv, write_trials_csv
from sem_fast.sweep.spec import PLOT_FIELDS, SweepSpec, Trial, expand, format_value
from sem_fast.sweep.trials import read_summary, trial_state

#: Where the trials run: processes on this machine, or Ray Tune (`sem_fast.sweep.ray_backend`).
SWEEP_BACKENDS = ("local", "ray")


@dataclass
class SweepReport:
    """The sweep after this run: trial names by state, and the files written."""

    trials: int
    skipped: list[str] = field(default_factory=list)
    outcomes: TrialOutcomes = field(default_factory=TrialOutcomes)
    stopped: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    @property
    def pending(self) -> int:
        """Trials neither finished, stopped early nor failed (not run yet, or interrupted)."""
        done = len(self.skipped) + len(self.outcomes.finished) + len(self.stopped) + len(self.outcomes.failed)
        return self.trials - done


def plan(trials: list[Trial], report: SweepReport) -> Pending:
    """The trials still to run, with whether each resumes; finished and stopped ones are noted in ``report``."""
    pending = []
    for trial in trials:
        state = trial_state(trial)
        if state == "finished":
            report.skipped.append(trial.name)
        elif state == "stopped":
            report.stopped.append(trial.name)
        else:
            pending.append((trial, state == "interrupted"))
    return pending


def run_sweep(
    spec: SweepSpec,
    out: str | Path,
    *,
    backend: str = "local",
    parallel: int = 1,
    ray_options: RayOptions | None = None,
    log: Log | None = None,
) -> SweepReport:
    """Run every trial of ``spec`` under ``out`` and write the results (also after a failure or
    Ctrl-C, from the trials finished so far).

    ``backend='local'``: ``parallel == 1`` trains the trials one after another in this process;
    ``parallel > 1`` runs that many ``sem-fast train`` subprocesses at once on the same device.
    ``backend='ray'``: Ray Tune (`sem_fast.sweep.ray_backend`) with ``ray_options``.
    ``log`` gets one line per trial started (default: stderr).
    """
    if backend not in SWEEP_BACKENDS:
        raise ValueError(f"backend must be one of {SWEEP_BACKENDS}, got {backend!r}")
    if not isinstance(parallel, int) or parallel < 1:
        raise ValueError(f"parallel must be an integer >= 1, got {parallel!r}")
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    out = Path(out)
    trials = expand(spec, out)
    out.mkdir(parents=True, exist_ok=True)
    write_manifest(spec, trials, out / "sweep.json")
    report = SweepReport(len(trials))
    pending = plan(trials, report)
    log(f"sweep {spec.source}: {len(trials)} trials, {len(report.skipped)} finished before, "
        f"{sum(r for _, r in pending)} to resume, {sum(not r for _, r in pending)} to start")  # fmt: skip
    try:
        if backend == "ray":
            run_ray(pending, ray_options or RayOptions(), out, report.outcomes, report.stopped, log)
        elif parallel > 1:
            run_parallel(pending, parallel, report.outcomes, log)
        else:
            run_sequential(pending, report.outcomes, log)
    finally:
        report.files = write_results(spec, trials, out, report.outcomes.failed, log)
    return report


def write_manifest(spec: SweepSpec, trials: list[Trial], path: Path) -> None:
    """``sweep.json``: what the sweep runs, for people and scripts reading the directory."""
    manifest = {
        "source": spec.source, "seeds": list(spec.seeds), "metric": spec.metric,
        "trials": [{"name": t.name, "group": t.group, "seed": t.config.seed,
                    "axes": {k: format_value(v) for k, v in t.axes.items()}} for t in trials],
    }  # fmt: skip
    path.write_text(json.dumps(manifest, indent=2) + "\n")


def write_results(spec: SweepSpec, trials: list[Trial], out: Path, failed: dict[str, str], log: Log) -> list[Path]:
    """Write ``results.md``, ``results.csv``, ``trials.csv`` and the plots (skipped, with a line
    to ``log``, without Pillow); returns their paths."""
    summaries = {t.name: s for t in trials if (s := read_summary(t)) is not None}
    states = {t.name: "failed" if t.name in failed else trial_state(t) for t in trials}
    table = build_table(trials, summaries, spec.metric, len(spec.seeds))
    counts = {state: sum(s == state for s in states.values()) for state in ("finished", "stopped", "failed")}
    unfinished = len(trials) - sum(counts.values())
    notes = [
        (
            f"{counts['finished']} of {len(trials)} trials finished; {counts['stopped']} stopped early (ASHA), "
            f"{counts['failed']} failed, {unfinished} not run or interrupted (re-run the sweep to continue). "
            "std: sample standard deviation over seeds. Per-trial values: trials.csv."
        )
    ]
    notes += [f"- failed: `{name}`: {message}" for name, message in failed.items()]
    files = [out / "results.md", out / "results.csv", out / "trials.csv"]
    files[0].write_text(to_markdown(table, notes))
    write_table_csv(table, files[1])
    write_trials_csv(trials, states, summaries, files[2])
    varying = varying_fields(trials)
    for name in spec.plot if spec.plot is not None else [f for f in PLOT_FIELDS if f in varying]:
        path = out / f"plot_{name}.png"
        try:
            if plot_metric(trials, summaries, spec.metric, name, path):
                files.append(path)
        except ImportError:
            log(f"no {path.name}: drawing the plots needs Pillow (pip install pillow)")
            break
    return files
