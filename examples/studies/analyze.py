"""Read a SEM study (examples/studies/sem_c10_5k.toml) as a scientist would.

The study directory holds one sweep per method, each with its ``trials.csv`` (written by
``sem-fast sweep``): ``mixup/`` (mixup with SEM weight gamma in a grid, gamma = 0 is plain
mixup) and ``erm/`` (no mixing). Trials of the same seed share the training subset, the
validation split, the initialization, the data order and the mixing draws, so methods are
compared per seed (paired):

1. mean ± std over seeds of validation and test accuracy, per configuration;
2. gamma is chosen on the **validation** accuracy (mean over seeds, among gamma > 0);
3. the test accuracy of the chosen gamma minus plain mixup's, per seed: mean and a 95 %
   Student-t interval ``mean ± t(0.975, n-1) · sd / sqrt(n)``; the same for mixup minus ERM,
   and, for the record only, every other gamma (those were not chosen in advance).

    python examples/studies/analyze.py studies/sem_c10_5k            # prints the report (Markdown)
    python examples/studies/analyze.py studies/sem_c10_5k --out report.md
    python examples/studies/analyze.py studies/sem_c10_5k --mixup mixup40 --erm erm40   # other sweeps
    python examples/studies/analyze.py studies/sem_c10_5k --mixup mixup mixup_wide      # a wider grid
    python examples/studies/analyze.py studies/sem_c10_5k --plot accuracy_vs_gamma   # + the figure
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sem_fast.sweep.results import Cell

#: The paper's Table 1 (PreActResNet18, CIFAR-10): mixup 95.77 %, mixup + SEM 96.45 %.
PAPER_GAIN = 96.45 - 95.77


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile (0.5 < p < 1) of Student's t with ``df`` degrees of freedom: the CDF is
    the density integrated by Simpson's rule (accurate to ~1e-9 here), inverted by bisection."""
    if not 0.5 < p < 1 or df < 1:
        raise ValueError(f"t_quantile needs 0.5 < p < 1 and df >= 1, got p={p}, df={df}")
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def cdf(t: float, steps: int = 4000) -> float:
        h = t / steps
        f = [math.exp(log_c - (df + 1) / 2 * math.log1p((i * h) ** 2 / df)) for i in range(steps + 1)]
        return 0.5 + h / 3 * (f[0] + f[-1] + 4 * sum(f[1:-1:2]) + 2 * sum(f[2:-1:2]))

    lo, hi = 0.0, 1.0
    while cdf(hi) < p:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < p else (lo, mid)
    return (lo + hi) / 2


@dataclass(frozen=True)
class Paired:
    """A per-seed difference ``a - b``: its values, mean, sample std and 95 % t-interval."""

    diffs: tuple[float, ...]
    mean: float
    sd: float
    lo: float
    hi: float

    def verdict(self) -> str:
        if self.lo > 0:
            return "a > b (the 95 % interval excludes 0)"
        if self.hi < 0:
            return "a < b (the 95 % interval excludes 0)"
        return "cannot tell (the 95 % interval contains 0)"


def paired(a: dict[int, float], b: dict[int, float]) -> Paired:
    """Per-seed differences ``a[s] - b[s]`` over the seeds both have (at least 2)."""
    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        raise ValueError(f"a paired interval needs at least 2 common seeds, got {seeds}")
    diffs = tuple(a[s] - b[s] for s in seeds)
    mean, sd = statistics.fmean(diffs), statistics.stdev(diffs)
    half = t_quantile(0.975, len(diffs) - 1) * sd / math.sqrt(len(diffs))
    return Paired(diffs, mean, sd, mean - half, mean + half)


def read_trials(path: Path) -> list[dict[str, str]]:
    """The finished trials of a ``trials.csv``; ``ValueError`` naming the file if any is not."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    unfinished = [r["trial"] for r in rows if r["state"] != "finished"]
    if unfinished:
        raise ValueError(f"{path}: trials not finished: {unfinished} (run the sweep again to finish them)")
    return rows


def by_seed(rows: list[dict[str, str]], metric: str, **match: str) -> dict[int, float]:
    """``{seed: metric}`` of the rows whose columns equal ``match``."""
    return {int(r["seed"]): float(r[metric]) for r in rows if all(r.get(k) == v for k, v in match.items())}


def _mean_std(values: dict[int, float]) -> str:
    cell = Cell(tuple(values.values()))
    return f"{cell.mean:.2f} ± {cell.std:.2f}" if cell.std is not None else f"{cell.mean:.2f}"


def _row(name: str, p: Paired) -> str:
    diffs = ", ".join(f"{d:+.2f}" for d in p.diffs)
    return f"| {name} | {diffs} | {p.mean:+.2f} | {p.sd:.2f} | [{p.lo:+.2f}, {p.hi:+.2f}] |"


def read_sweeps(paths: list[Path]) -> list[dict[str, str]]:
    """The finished trials of several sweeps of one grid (e.g. a wider gamma grid run later), as
    one list; ``ValueError`` if two sweeps hold the same (gamma, seed)."""
    rows, seen = [], {}
    for path in paths:
        for row in read_trials(path):
            key = (float(row["gamma"]), int(row["seed"]))
            if key in seen:
                raise ValueError(f"{path}: gamma = {row['gamma']}, seed = {row['seed']} is also in {seen[key]}")
            seen[key] = path
            rows.append(row)
    return rows


def read_study(
    study: Path, mixup_dir: str | list[str], erm_dir: str
) -> tuple[list[dict[str, str]], list[dict[str, str]], list[str]]:
    """The trials of the sweeps ``<mixup_dir>/trials.csv`` (gamma grid, 0 included; several folders
    are read as one grid) and ``<erm_dir>/trials.csv`` in ``study``, and the mixup grid's gammas."""
    mixup_dirs = [mixup_dir] if isinstance(mixup_dir, str) else mixup_dir
    mixup = read_sweeps([study / d / "trials.csv" for d in mixup_dirs])
    erm = read_trials(study / erm_dir / "trials.csv")
    return mixup, erm, sorted({r["gamma"] for r in mixup}, key=float)


def report(study: Path, mixup_dir: str | list[str] = "mixup", erm_dir: str = "erm") -> str:
    """The Markdown report of the study in ``study`` (`read_study`)."""
    mixup, erm, gammas = read_study(study, mixup_dir, erm_dir)
    val = {g: by_seed(mixup, "final_val_acc", gamma=g) for g in gammas}
    test = {g: by_seed(mixup, "final_test_acc", gamma=g) for g in gammas}
    erm_val, erm_test = by_seed(erm, "final_val_acc"), by_seed(erm, "final_test_acc")
    n = len(erm_test)
    plain = next((g for g in gammas if float(g) == 0), None)
    sem_gammas = [g for g in gammas if float(g) > 0]
    if plain is None or not sem_gammas:
        raise ValueError(f"{study}/{mixup_dir}: needs gamma = 0 (plain mixup) and a gamma > 0, got {gammas}")
    chosen = max(sem_gammas, key=lambda g: statistics.fmean(val[g].values()))

    lines = [f"### Accuracy (%), mean ± std over {n} seeds", "",
             "| method | validation (chooses gamma) | test |", "|---|---|---|",
             f"| ERM | {_mean_std(erm_val)} | {_mean_std(erm_test)} |"]  # fmt: skip
    for g in gammas:
        name = "mixup" if float(g) == 0 else f"mixup + SEM, gamma = {g}" + (" (chosen)" if g == chosen else "")
        lines.append(f"| {name} | {_mean_std(val[g])} | {_mean_std(test[g])} |")
    t = t_quantile(0.975, n - 1)
    sem_vs_mixup = paired(test[chosen], test[plain])
    lines += ["", f"### Paired differences of test accuracy (points), per seed; 95 % interval = mean ± {t:.3f} · sd / √{n}", "",
              "| comparison | per seed | mean | sd | 95 % interval |", "|---|---|---|---|---|",
              _row(f"mixup + SEM (gamma = {chosen}, chosen on validation) − mixup", sem_vs_mixup),
              _row("mixup − ERM", paired(test[plain], erm_test)),
              _row(f"mixup + SEM (gamma = {chosen}) − ERM", paired(test[chosen], erm_test))]  # fmt: skip
    lines += [
        _row(f"for the record, not chosen in advance: gamma = {g} − mixup", paired(test[g], test[plain]))
        for g in sem_gammas
        if g != chosen
    ]
    verdict = f"SEM (gamma = {chosen}) − mixup on the test set: {sem_vs_mixup.verdict()}"
    lines += ["", f"{verdict}; the paper's gain at full scale is {PAPER_GAIN:+.2f} points."]
    return "\n".join(lines) + "\n"


def gamma_figure(study: Path, mixup_dir: str | list[str] = "mixup", erm_dir: str = "erm") -> Any:
    """Validation and test accuracy against gamma (mean ± std over seeds; each seed's test accuracy
    as a thin line, since seeds are paired) with ERM's test accuracy as a band: a matplotlib Figure."""
    from sem_fast.figure import new_figure

    mixup, erm_trials, gammas = read_study(study, mixup_dir, erm_dir)
    fig = new_figure(6.4, 4.4)
    ax = fig.add_subplot()
    xs = range(len(gammas))  # gamma on an even scale: 0 and a doubling grid
    test = [by_seed(mixup, "final_test_acc", gamma=g) for g in gammas]
    for seed in sorted(test[0]):
        ax.plot(xs, [t.get(seed, math.nan) for t in test], color="0.8", linewidth=0.8, zorder=1)
    for metric, label, shift, color in (("final_test_acc", "test (10,000 images)", 0.06, "C0"),
                                        ("final_val_acc", "validation (500 images: chooses gamma)", -0.06, "C1")):  # fmt: skip
        cells = [Cell(tuple(by_seed(mixup, metric, gamma=g).values())) for g in gammas]
        ax.errorbar([x + shift for x in xs], [c.mean for c in cells], yerr=[c.std or 0.0 for c in cells], marker="o",
                    markersize=4, capsize=4, linewidth=1.5, color=color, label=label, zorder=2)  # fmt: skip
    erm = Cell(tuple(by_seed(erm_trials, "final_test_acc").values()))
    sd = erm.std or 0.0
    ax.axhspan(erm.mean - sd, erm.mean + sd, color="0.6", alpha=0.2, label=f"ERM test: {erm.mean:.2f} ± {sd:.2f}")
    ax.set_xticks(list(xs), [f"{float(g):g}" for g in gammas])
    ax.set_xlabel("SEM weight gamma (0: plain mixup)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"Mixup + SEM against gamma: mean ± std over {len(test[0])} seeds (thin lines: each seed's test)",
                 fontsize=9)  # fmt: skip
    ax.grid(True, color="0.92")
    ax.legend(fontsize=8)
    return fig


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", type=Path, help="folder holding the mixup/ and erm/ sweeps")
    parser.add_argument("--mixup", nargs="+", default=["mixup"],
                        help="the mixup sweep's folder in the study; several are read as one gamma grid [mixup]")  # fmt: skip
    parser.add_argument("--erm", default="erm", help="the ERM sweep's folder in the study [erm]")
    parser.add_argument("--out", type=Path, help="write the report here too")
    parser.add_argument("--plot", type=Path, help="write the accuracy-vs-gamma figure to PLOT.png and PLOT.svg")
    args = parser.parse_args(argv)
    text = report(args.study, args.mixup, args.erm)
    print(text, end="")
    if args.out:
        args.out.write_text(text)
    if args.plot:
        from sem_fast.figure import save_figure

        save_figure(gamma_figure(args.study, args.mixup, args.erm), args.plot)
    return text


if __name__ == "__main__":
    main()
