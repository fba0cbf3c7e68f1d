"""`run_sweep`: run a spec's trials (skipping finished ones, resuming interrupted ones) with a
backend, then write the results table and plots.

Layout of the sweep directory ``out``:

- ``sweep.json``: the spec's source, its seeds, metric and plots, and every trial (name, swept
  values, seed): what the directory holds, checked by every later run of a sweep into it;
- ``trials/<name>/``: each trial's run directory (``summary.json``, ``metrics.*``, ``checkpoint.pt``);
- ``results.md``, ``results.csv``, ``trials.csv`` (`sem_fast.sweep.results`);
- ``plot_<field>.png`` / ``.svg`` for each plotted field (`sem_fast.sweep.plot`).

A sweep directory holds one sweep: a sweep whose trials, metric or plots differ from its
``sweep.json`` is refused (`SweepExistsError`) unless ``overwrite``, which deletes the earlier
sweep's results and the trials this spec does not have (trials both have are the same runs, by
name, and are kept). One sweep process at a time holds the directory's lock.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sem_fast.extras import require
from sem_fast.figure import FORMATS
from sem_fast.sweep.local import Log, Pending, TrialOutcomes, run_parallel, run_sequential
from sem_fast.sweep.plot import plot_metric
from sem_fast.sweep.ray_backend import RayOptions, run_ray
from sem_fast.sweep.results import build_table, to_markdown, varying_fields, write_table_csv, write_trials_csv
from sem_fast.sweep.spec import PLOT_FIELDS, SweepSpec, Trial, expand, format_value
from sem_fast.sweep.trials import read_summary, trial_state
from sem_fast.train.run_lock import hold_lock

#: Where the trials run: processes on this machine, or Ray Tune (`sem_fast.sweep.ray_backend`).
SWEEP_BACKENDS = ("local", "ray")
MANIFEST_NAME = "sweep.json"
#: The sweep's own files in ``out`` (besides `MANIFEST_NAME`, the plots and ``trials/``).
RESULT_NAMES = ("results.md", "results.csv", "trials.csv")
TRIALS_DIR = "trials"
#: Ray Tune's files (`sem_fast.sweep.ray_backend`).
RAY_DIR = "ray"


class SweepExistsError(FileExistsError):
    """The sweep directory holds another sweep's results; the message says how they differ."""


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
    threads: int | None = None,
    ray_options: RayOptions | None = None,
    overwrite: bool = False,
    log: Log | None = None,
) -> SweepReport:
    """Run every trial of ``spec`` under ``out`` and write the results (also after a failure or
    Ctrl-C, from the trials finished so far).

    ``backend='local'``: ``parallel == 1`` trains the trials one after another in this process;
    ``parallel > 1`` runs that many ``sem-fast train`` subprocesses at once on the same device;
    ``threads``: CPU threads of each trial (default: all cores one by one, cores / ``parallel``
    packed). ``backend='ray'``: Ray Tune (`sem_fast.sweep.ray_backend`) with ``ray_options``.
    ``overwrite``: replace another sweep in ``out`` (see the module docstring); without it that
    raises `SweepExistsError`. ``log`` gets one line per trial started (default: stderr).
    """
    if backend not in SWEEP_BACKENDS:
        raise ValueError(f"backend must be one of {SWEEP_BACKENDS}, got {backend!r}")
    for name, value in (("parallel", parallel), ("threads", 1 if threads is None else threads)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    out = Path(out)
    trials = expand(spec, out)
    if plot_fields(spec, trials):
        require("matplotlib", "the sweep's plots (--plot '' for none)")
    out.mkdir(parents=True, exist_ok=True)
    with hold_lock(out):
        manifest = _manifest(spec, trials)
        _claim(out, manifest, trials, overwrite)
        (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
        report = SweepReport(len(trials))
        pending = plan(trials, report)
        log(f"sweep {spec.source}: {len(trials)} trials, {len(report.skipped)} finished before, "
            f"{sum(r for _, r in pending)} to resume, {sum(not r for _, r in pending)} to start")  # fmt: skip
        try:
            if backend == "ray":
                run_ray(pending, ray_options or RayOptions(), out, report.outcomes, report.stopped, log)
            elif parallel > 1:
                run_parallel(pending, parallel, report.outcomes, log, threads)
            else:
                run_sequential(pending, report.outcomes, log, threads)
        finally:
            report.files = write_results(spec, trials, out, report.outcomes.failed)
    return report


def _manifest(spec: SweepSpec, trials: list[Trial]) -> dict[str, Any]:
    """``sweep.json``: what the sweep runs, for people and scripts reading the directory."""
    return {
        "source": spec.source, "seeds": list(spec.seeds), "metric": spec.metric,
        "plot": None if spec.plot is None else list(spec.plot),
        "trials": [{"name": t.name, "group": t.group, "seed": t.config.seed,
                    "axes": {k: format_value(v) for k, v in t.axes.items()}} for t in trials],
    }  # fmt: skip


def _claim(out: Path, manifest: dict[str, Any], trials: list[Trial], overwrite: bool) -> None:
    """Make ``out`` this sweep's: refuse (`SweepExistsError`) or, with ``overwrite``, clear the
    results of another sweep found there."""
    path = out / MANIFEST_NAME
    ours = [n for n in (*RESULT_NAMES, TRIALS_DIR, RAY_DIR) if (out / n).exists()] + [p.name for p in _plots(out)]
    if path.is_file():
        try:
            before = json.loads(path.read_text())
        except ValueError:
            before = {"trials": []}
        names = [t["name"] for t in before.get("trials", [])]
        if (names == [t["name"] for t in manifest["trials"]] and before.get("metric") == manifest["metric"]
                and before.get("plot", manifest["plot"]) == manifest["plot"]):  # fmt: skip
            return
        now = {t["name"] for t in manifest["trials"]}
        differ = (f"{len(names)} trials there, {len(now)} in this spec ({len(now - set(names))} new, "
                  f"{len(set(names) - now)} not in it); metric {before.get('metric')!r} there, "
                  f"{manifest['metric']!r} here")  # fmt: skip
    elif ours:
        differ = f"it holds {', '.join(sorted(ours))} but no {MANIFEST_NAME}"
    else:
        return
    if not overwrite:
        raise SweepExistsError(
            f"{out} holds another sweep ({differ}): run this one with --overwrite to replace its results (the "
            f"trials this spec does not have are deleted, the ones it shares are kept), or choose another --out"
        )
    keep = {t.dir.name for t in trials}
    for name in RESULT_NAMES:
        (out / name).unlink(missing_ok=True)
    for plot in _plots(out):
        plot.unlink()
    shutil.rmtree(out / RAY_DIR, ignore_errors=True)
    if (out / TRIALS_DIR).is_dir():
        for folder in (out / TRIALS_DIR).iterdir():
            if folder.name not in keep:
                shutil.rmtree(folder) if folder.is_dir() else folder.unlink()


def _plots(out: Path) -> list[Path]:
    return [p for fmt in FORMATS for p in out.glob(f"plot_*.{fmt}")]


def plot_fields(spec: SweepSpec, trials: list[Trial]) -> list[str]:
    """The fields the sweep plots its metric against: the spec's ``plot``, or by default those of
    `PLOT_FIELDS` that the trials vary."""
    if spec.plot is not None:
        return list(spec.plot)
    varying = varying_fields(trials)
    return [f for f in PLOT_FIELDS if f in varying]


def write_results(spec: SweepSpec, trials: list[Trial], out: Path, failed: dict[str, str]) -> list[Path]:
    """Write ``results.md``, ``results.csv``, ``trials.csv`` and the plots (an earlier plot that is
    not drawn again, for lack of finished trials, is removed); returns their paths."""
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
    drawn = [p for name in plot_fields(spec, trials) for p in plot_metric(trials, summaries, spec.metric, name,
                                                                          out / f"plot_{name}")]  # fmt: skip
    for stale in set(_plots(out)) - set(drawn):
        stale.unlink()
    return files + drawn
