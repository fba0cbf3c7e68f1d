"""The ``sem-fast`` command: ``train``, ``eval`` and ``recipes``.

    sem-fast train --recipe demo
    sem-fast train --recipe prn18-c10-mixup-sem --data-root ~/data --gamma 0.5 --out runs/x
    sem-fast train --resume --out runs/x
    sem-fast eval runs/x/checkpoint.pt
    sem-fast recipes

Every `TrainConfig` field is a ``train`` flag (``batch_size`` -> ``--batch-size``); a flag
overrides the recipe's value.
"""

from __future__ import annotations

import argparse
import sys
import typing
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from sem_fast.data import DatasetFormatError, DatasetNotFoundError
from sem_fast.train.checkpoint import load_checkpoint
from sem_fast.train.config import TrainConfig
from sem_fast.train.corruptions import CORRUPTIONS, SEVERITIES
from sem_fast.train.evaluate import NOISE_IMAGES, evaluate_checkpoint, to_markdown
from sem_fast.train.loop import NonFiniteLossError, train
from sem_fast.train.progress import format_duration
from sem_fast.train.recipes import get_recipe, recipe_table

#: Exit status of errors that are not argument errors (argparse uses 2 for those).
EXIT_FAILURE = 1
EXIT_INTERRUPTED = 130


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
    parser = argparse.ArgumentParser(
        prog="sem-fast", description="Train and evaluate with Semantic Equivariant Mixup (fused SEM steps)."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{train,eval,recipes}")

    train = commands.add_parser("train", help="train a recipe", description="Train a recipe; flags override it.")
    train.add_argument("--recipe", help="recipe name (see `sem-fast recipes`); default: the TrainConfig defaults")
    train.add_argument("--resume", action="store_true",
                       help="continue the run in --out from its checkpoint (same recipe and flags, or none)")
    train.add_argument("--overwrite", action="store_true", help="start over in --out, deleting its checkpoint")
    _add_config_flags(train)
    train.set_defaults(subparser=train)

    ev = commands.add_parser("eval", help="evaluate a checkpoint", description="Evaluate a trained checkpoint.")
    ev.add_argument("checkpoint", help="a checkpoint.pt, or the run directory holding it")
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
    ev.set_defaults(subparser=ev)

    commands.add_parser("recipes", help="list the recipes as a Markdown table")
    return parser


def _train_config(args: argparse.Namespace, parser: argparse.ArgumentParser) -> TrainConfig:
    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if f.name != "recipe" and hasattr(args, f.name)}
    if args.recipe is not None:
        base = get_recipe(args.recipe)
    elif args.resume:
        if "out" not in given:
            parser.error("--resume without --recipe needs --out, the run directory to continue")
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
    print(f"sem-fast train: recipe {config.recipe}, run directory {config.run_dir}", file=sys.stderr)
    try:
        summary = train(config, resume=args.resume, overwrite=args.overwrite)
    except NonFiniteLossError as err:
        print(f"sem-fast train: error: {err}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print(f"\nsem-fast train: interrupted; continue with: sem-fast train --resume --out {config.run_dir}",
              file=sys.stderr)  # fmt: skip
        return EXIT_INTERRUPTED
    final = summary["final"]
    print(
        f"final test accuracy {summary['final_test_acc']:.2f}% (best {summary['best_test_acc']:.2f}% at epoch "
        f"{summary['best_epoch']}), train loss {final['train_loss']:.4f}, {summary['img_per_s']:.0f} img/s, "
        f"{summary['epochs']} epochs in {format_duration(summary['elapsed_s'])}\n"
        f"run directory {config.run_dir}: summary.json, metrics.jsonl, metrics.csv, checkpoint.pt\n"
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
    report = evaluate_checkpoint(
        args.checkpoint, data_root=args.data_root, out=args.out, device=args.device, amp=args.amp,
        batch_size=args.batch_size, corruptions=args.corruptions, severities=args.severities, ood_folders=folders,
        noise_images=args.noise_images, embedding=args.embedding, max_images=args.max_images, seed=args.seed,
    )  # fmt: skip
    print(to_markdown(report))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "recipes":
        print(recipe_table())
        return 0
    try:
        return _run_train(args, args.subparser) if args.command == "train" else _run_eval(args, args.subparser)
    except (DatasetNotFoundError, DatasetFormatError, FileNotFoundError, FileExistsError, ValueError) as err:
        print(f"sem-fast {args.command}: error: {err}", file=sys.stderr)
        return EXIT_FAILURE
