"""The ``sem-fast`` command: ``train``, ``eval``, ``recipes`` and ``sweep``.

    sem-fast train --recipe demo
    sem-fast train --recipe prn18-c10-mixup-sem --data-root ~/data --gamma 0.5 --out runs/x
    sem-fast train --resume --out runs/x
    torchrun --nproc_per_node=4 -m sem_fast.train train --recipe wrn28-10-c100-mixup-sem --out runs/w
    sem-fast eval runs/x/checkpoint.pt
    sem-fast recipes
    sem-fast sweep examples/sweeps/demo_gamma_alpha.toml --out sweeps/demo --parallel 2

Every `TrainConfig` field is a ``train`` flag (``batch_size`` -> ``--batch-size``); a flag
overrides the recipe's value. ``python -m sem_fast`` and ``python -m sem_fast.train`` run the same
command (the latter for ``torchrun -m``).

Errors print one line (``sem-fast train: error: ...``) and, for a bad command line, a hint where
to look, never the whole usage. SIGTERM stops a command as Ctrl-C does (a run keeps the
checkpoint of its last finished epoch and says how to continue).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
import typing
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any, NoReturn

import torch

from sem_fast.data import DatasetFormatError, DatasetNotFoundError
from sem_fast.eval.corruptions import CORRUPTIONS, SEVERITIES
from sem_fast.eval.evaluate import NOISE_IMAGES, evaluate_checkpoint, to_markdown
from sem_fast.info import add_info_parser, run_info
from sem_fast.sweep.local import die_with_parent
from sem_fast.sweep.ray_backend import RayOptions, import_tune
from sem_fast.sweep.runner import SWEEP_BACKENDS, run_sweep
from sem_fast.sweep.spec import SweepSpecError, apply_flags, expand, parse_spec, read_spec_file
from sem_fast.sweep.trials import trial_state
from sem_fast.train.checkpoint import load_checkpoint
from sem_fast.train.config import TrainConfig
from sem_fast.train.distributed import ranks_from_environment
from sem_fast.train.loop import NonFiniteLossError, train
from sem_fast.train.progress import format_duration
from sem_fast.train.recipes import get_recipe, recipe_table
from sem_fast.train.run_files import CHECKPOINT_NAME, CONFIG_NAME, SUMMARY_METRICS, SUMMARY_NAME
from sem_fast.train.run_lock import DirectoryInUseError

#: Exit status of errors that are not argument errors (argparse uses 2 for those).
EXIT_FAILURE = 1
EXIT_INTERRUPTED = 130


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C's KeyboardInterrupt would be, so both stop a command alike."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line and a hint, not the usage of every option."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n{self.prog}: hint: `{self.prog} --help` lists the options\n")


def _comma_list(kind: type) -> Any:
    def parse(text: str) -> tuple:
        try:
            return tuple(kind(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__}s, got {text!r}") from None

    parse.__name__ = f"list of {kind.__name__}"
    return parse


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per `TrainConfig` field, defaulting to 'not given' so the recipe's value stays."""
    hints = typing.get_type_hints(TrainConfig)
    defaults = TrainConfig()
    group = parser.add_argument_group(
        "run settings", "override the recipe; the defaults shown are TrainConfig's, which a recipe may change"
    )
    for f in fields(TrainConfig):
        if f.name == "recipe":
            continue
        flag = "--" + f.name.replace("_", "-")
        hint, default = hints[f.name], getattr(defaults, f.name)
        help_text = f"{f.metadata['help']} [default: {default!r}]"
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text}
        if hint in (bool, bool | None):
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(hint) is tuple:
            kwargs.update(type=_comma_list(typing.get_args(hint)[0]), metavar="A,B,...")
        elif f.metadata["choices"]:
            kwargs["choices"] = f.metadata["choices"]
        else:
            kwargs.update(type=hint, metavar=hint.__name__.upper())
        group.add_argument(flag, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sem-fast", description="Train and evaluate with Semantic Equivariant Mixup (fused SEM steps).")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{train,eval,recipes,sweep,info}")

    train = commands.add_parser("train", help="train a recipe", description="Train a recipe; flags override it.")
    train.add_argument("--recipe", help="recipe name (see `sem-fast recipes`); default: the TrainConfig defaults")
    train.add_argument("--resume", action="store_true",
                       help="continue the run in --out from its checkpoint (same recipe and flags, or none)")
    train.add_argument("--overwrite", action="store_true",
                       help="start over in --out, deleting the earlier run there (checkpoint, metrics, curves, eval/)")
    _add_config_flags(train)
    train.set_defaults(subparser=train)

    ev = commands.add_parser("eval", help="evaluate a checkpoint", description="Evaluate a trained checkpoint.")
    ev.add_argument("checkpoint", help=f"a {CHECKPOINT_NAME}, or the run directory holding it")
    ev.add_argument("--data-root", help="where the test and OOD sets are (default: the run's --data-root)")
    ev.add_argument("--out", help="output folder for eval.json, eval.md, embedding.png (default: <run>/eval)")
    ev.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    ev.add_argument("--amp", default="auto", choices=("auto", "bf16", "fp16", "off"), help="mixed precision")
    ev.add_argument("--batch-size", type=int, default=500, help="evaluation batch size")
    ev.add_argument("--corruptions", type=_comma_list(str), default=CORRUPTIONS, metavar="A,B,...",
                    help=f"on-the-fly corruptions ('' for none); default all: {','.join(CORRUPTIONS)}")
    ev.add_argument("--severities", type=_comma_list(int), default=SEVERITIES, metavar="1,2,...",
                    help="severities of the on-the-fly corruptions (1-5)")
    ev.add_argument("--ood-folder", action="append", default=[], metavar="NAME=DIR",
                    help="extra OOD image folder: DIR's subfolders hold the images (repeatable)")
    ev.add_argument("--noise-images", type=int, default=NOISE_IMAGES, help="images per synthetic-noise OOD set (0: none)")
    ev.add_argument("--no-embedding", dest="embedding", action="store_false", help="skip the embedding figure")
    ev.add_argument("--max-images", type=int, default=0, help="cap on images per evaluated set (0: all)")
    ev.add_argument("--seed", type=int, default=0, help="seed of the corruption and noise draws")
    ev.add_argument("--overwrite", action="store_true",
                    help="replace an evaluation with other settings (or of another checkpoint) in the output folder")
    ev.add_argument("--no-progress", dest="progress", action="store_false", help="no progress lines on stderr")
    ev.set_defaults(subparser=ev)

    commands.add_parser("recipes", help="list the recipes as a Markdown table")
    _add_sweep_parser(commands)
    add_info_parser(commands)
    return parser


def _add_sweep_parser(commands: Any) -> None:
    sweep = commands.add_parser(
        "sweep", help="run a grid / random search of trainings and tabulate it",
        description="Run every trial of a sweep (skipping finished trials, resuming interrupted ones), then write "
        "results.md/.csv (mean ± std over seeds; rows = methods, columns = dataset / network), trials.csv and "
        "plot_<field>.png/.svg. Flags add to the spec file or replace its keys.",
    )  # fmt: skip
    sweep.add_argument("spec", nargs="?", help="sweep spec, .toml or .yaml (see examples/sweeps/); optional with flags")
    sweep.add_argument("--out", required=True, help="sweep directory (trials/, results, plots)")
    spec = sweep.add_argument_group("spec", "the spec's keys as flags (KEY: a TrainConfig field, e.g. gamma)")
    spec.add_argument("--recipe", help="base recipe of every trial")
    spec.add_argument("--seeds", type=_comma_list(int), metavar="0,1,...", help="seeds of every configuration")
    spec.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="fixed value (repeatable)")
    spec.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                      help="grid axis (repeatable; tuple fields: values separated by ';')")
    spec.add_argument("--random", action="append", default=[], metavar="KEY=DIST:A,B",
                      help="random axis, DIST uniform, log_uniform, int_uniform or choice (repeatable)")
    spec.add_argument("--samples", type=int, help="random draws (each combined with every grid point)")
    spec.add_argument("--random-seed", type=int, help="seed of the random draws")
    spec.add_argument("--metric", choices=SUMMARY_METRICS, help=f"what the table shows [default: {SUMMARY_METRICS[0]}]")
    spec.add_argument("--plot", type=_comma_list(str), metavar="gamma,alpha", help="fields to plot the metric against")
    run = sweep.add_argument_group("running")
    run.add_argument("--backend", choices=SWEEP_BACKENDS, default="local", help="local processes, or Ray Tune")
    run.add_argument("--parallel", type=int, default=1,
                     help="trials at once on this device (local: subprocesses; ray: trials per GPU) [default: 1]")
    run.add_argument("--threads", type=int,
                     help="CPU threads of each trial [default: all cores one by one, cores / --parallel packed]; "
                     "CPU results are bit-identical only at equal thread counts")
    run.add_argument("--overwrite", action="store_true",
                     help="replace another sweep's results in --out (its trials this spec lacks are deleted)")
    run.add_argument("--dry-run", action="store_true", help="list the trials and their state, run nothing")
    ray = sweep.add_argument_group("ray backend")
    ray.add_argument("--ray-address", help="address of a running Ray cluster (default: start a local one)")
    ray.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs per trial [default: 1]")
    ray.add_argument("--gpus-per-trial", type=float,
                     help="GPU share per trial [default: 1 / --parallel with CUDA, else 0]")
    ray.add_argument("--asha", action="store_true", help="stop weak trials early (ASHA on test accuracy)")
    ray.add_argument("--asha-grace-period", type=int, default=1, help="epochs before ASHA may stop a trial")
    ray.add_argument("--asha-reduction-factor", type=int, default=4, help="ASHA keeps 1/this at each rung")
    sweep.set_defaults(subparser=sweep)


def _train_config(args: argparse.Namespace, parser: argparse.ArgumentParser) -> TrainConfig:
    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if f.name != "recipe" and hasattr(args, f.name)}
    if args.recipe is not None:
        base = get_recipe(args.recipe)
    elif args.resume:
        if "out" not in given:
            parser.error("--resume without --recipe needs --out, the run directory to continue")
        recorded = Path(given["out"]) / CONFIG_NAME  # the run's own configuration, which its checkpoint must match
        if recorded.is_file():
            base = TrainConfig.from_dict(json.loads(recorded.read_text()))
        else:
            base = TrainConfig.from_dict(load_checkpoint(Path(given["out"]))["config"])
    else:
        base = TrainConfig()
    return base.replace(**given)


def _run_train(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.resume and args.overwrite:
        parser.error("--resume and --overwrite exclude each other: continue the run, or start it over")
    try:
        config = _train_config(args, parser)
    except ValueError as err:
        parser.error(str(err))
    main_rank = ranks_from_environment().is_main  # under torchrun only rank 0 talks
    if main_rank:
        print(f"sem-fast train: recipe {config.recipe}, run directory {config.run_dir}", file=sys.stderr)
    try:
        summary = train(config, resume=args.resume, overwrite=args.overwrite)
    except NonFiniteLossError as err:
        print(f"sem-fast train: error: {err}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt as err:
        if (Path(config.run_dir) / CHECKPOINT_NAME).is_file():
            hint = f"continue with: sem-fast train --resume --out {config.run_dir}"
        else:
            hint = "no epoch had finished, so nothing was saved: run the same command again to start over"
        print(f"\nsem-fast train: {_stopped(err)}; {hint}", file=sys.stderr)
        return EXIT_INTERRUPTED
    if not main_rank:
        return 0
    final = summary["final"]
    print(
        f"final test accuracy {summary['final_test_acc']:.2f}% (best {summary['best_test_acc']:.2f}% at epoch "
        f"{summary['best_epoch']}), train loss {final['train_loss']:.4f}, {summary['img_per_s']:.0f} img/s, "
        f"{summary['epochs']} epochs in {format_duration(summary['elapsed_s'])}\n"
        f"run directory {config.run_dir}: {SUMMARY_NAME}, metrics.jsonl, metrics.csv, {CHECKPOINT_NAME}"
        f"{', curves.png, curves.svg' if config.plots else ''}\n"
        f"evaluate with: sem-fast eval {summary['checkpoint']}"
    )
    return 0


def _run_eval(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    folders = {}
    for item in args.ood_folder:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            parser.error(f"--ood-folder expects NAME=DIR, got {item!r}")
        folders[name] = folder
    unknown = [c for c in args.corruptions if c not in CORRUPTIONS]
    if unknown:
        parser.error(f"--corruptions: unknown {unknown}; choose from {','.join(CORRUPTIONS)}")
    bad = [s for s in args.severities if s not in SEVERITIES]
    if bad or not args.severities:
        parser.error(f"--severities must be values in 1..5, got {list(args.severities)}")
    for name, low in (("batch_size", 1), ("noise_images", 0), ("max_images", 0)):
        if getattr(args, name) < low:
            parser.error(f"--{name.replace('_', '-')} must be >= {low}, got {getattr(args, name)}")
    try:
        report = evaluate_checkpoint(
            args.checkpoint, data_root=args.data_root, out=args.out, device=args.device, amp=args.amp,
            batch_size=args.batch_size, corruptions=args.corruptions, severities=args.severities, ood_folders=folders,
            noise_images=args.noise_images, embedding=args.embedding, max_images=args.max_images, seed=args.seed,
            overwrite=args.overwrite, progress=args.progress,
        )  # fmt: skip
    except KeyboardInterrupt as err:
        print(f"\nsem-fast eval: {_stopped(err)}; nothing was written (run the command again)", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(to_markdown(report))
    return 0


def _run_sweep(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    for name in ("parallel", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name} must be >= 1, got {value}")
    source = args.spec or "command line"
    try:
        data = apply_flags(
            read_spec_file(args.spec) if args.spec else {}, recipe=args.recipe, seeds=args.seeds, sets=args.set,
            grid=args.grid, random_axes=args.random, samples=args.samples, random_seed=args.random_seed,
            metric=args.metric, plot=args.plot,
        )  # fmt: skip
        spec = parse_spec(data, source)
        trials = expand(spec, args.out)
        ray_options = _ray_options(args) if args.backend == "ray" else None
    except (SweepSpecError, ValueError, ImportError) as err:
        parser.error(str(err))
    if args.dry_run:
        for trial in trials:
            print(f"{trial_state(trial):<12} {trial.name}")
        print(f"{len(trials)} trials under {Path(args.out) / 'trials'}")
        return 0
    try:
        report = run_sweep(spec, args.out, backend=args.backend, parallel=args.parallel, threads=args.threads,
                           ray_options=ray_options, overwrite=args.overwrite)  # fmt: skip
    except KeyboardInterrupt as err:  # while the results were written: the trials are checkpointed
        print(f"\nsem-fast sweep: {_stopped(err)}; run the same command again to continue", file=sys.stderr)
        return EXIT_INTERRUPTED
    print((Path(args.out) / "results.md").read_text(), end="")
    print("written: " + ", ".join(str(p) for p in report.files))
    if report.outcomes.interrupted:
        print(f"sem-fast sweep: interrupted; run the same command again to continue ({report.pending} trials left)",
              file=sys.stderr)  # fmt: skip
        return EXIT_INTERRUPTED
    return EXIT_FAILURE if report.outcomes.failed else 0


def _ray_options(args: argparse.Namespace) -> RayOptions:
    import_tune()  # fails here, before any trial, when Ray Tune is not installed
    gpus = args.gpus_per_trial
    if gpus is None:
        gpus = 1.0 / args.parallel if torch.cuda.is_available() else 0.0
    return RayOptions(address=args.ray_address, cpus_per_trial=args.cpus_per_trial, gpus_per_trial=gpus,
                      asha=args.asha, grace_period=args.asha_grace_period,
                      reduction_factor=args.asha_reduction_factor)  # fmt: skip


def _stopped(err: KeyboardInterrupt) -> str:
    return "stopped by SIGTERM" if isinstance(err, Terminated) else "interrupted"


def _terminate(signum: int, frame: object) -> NoReturn:
    raise Terminated


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises `Terminated` (a KeyboardInterrupt) in the main thread while the command runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    die_with_parent()  # a trial process of a sweep ends with the sweep
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # named by the subcommand, whose --help lists what it takes
        getattr(args, "subparser", parser).error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "recipes":
        print(recipe_table())
        return 0
    run = {"train": _run_train, "eval": _run_eval, "sweep": _run_sweep, "info": run_info}[args.command]

    def show_warning(message: Warning | str, *rest: object, **kwargs: object) -> None:
        print(f"sem-fast {args.command}: warning: {message}", file=sys.stderr)

    try:
        with _sigterm_as_interrupt(), warnings.catch_warnings():
            warnings.showwarning = show_warning
            return run(args, args.subparser)
    except (DatasetNotFoundError, DatasetFormatError, FileNotFoundError, FileExistsError, ValueError,
            DirectoryInUseError, ImportError) as err:  # fmt: skip
        print(f"sem-fast {args.command}: error: {err}", file=sys.stderr)
        return EXIT_FAILURE
