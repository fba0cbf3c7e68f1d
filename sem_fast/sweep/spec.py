"""Sweep specs: a grid and/or a random search over `TrainConfig` fields, times seeds.

A spec is a TOML or YAML file (or the same keys given as ``sem-fast sweep`` flags):

.. code-block:: toml

    recipe = "demo"               # base recipe of every trial (default: TrainConfig's defaults)
    seeds = [0, 1, 2]             # each configuration runs once per seed (default [0])
    metric = "final_test_acc"     # or "best_test_acc": what the results table shows
    plot = ["gamma", "alpha"]     # accuracy-vs-x PNGs (default: gamma/alpha/cutmix_alpha when swept)

    [fixed]                       # set in every trial
    epochs = 30

    [grid]                        # every combination (a list of recipes may be swept too)
    gamma = [0.0, 0.5, 1.0]
    alpha = [0.2, 1.0]

    [random]                      # `samples` draws, each combined with every grid point
    samples = 4
    seed = 0
    lr = { log_uniform = [0.02, 0.2] }
    label_smoothing = { uniform = [0.0, 0.1] }

Keys are `TrainConfig` fields (``batch_size``, not ``--batch-size``). `parse_spec` checks the
keys and types, `expand` every trial's values through `TrainConfig` (the CLI does both before
anything runs); errors name the file and the key (``grid.gama``, ``grid.gamma = -1``).
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import math
import random
import typing
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from sem_fast.extras import install_hint
from sem_fast.train import TrainConfig, get_recipe
from sem_fast.train.config import RESUMABLE_CHANGES
from sem_fast.train.run_files import SUMMARY_METRICS

#: Top-level keys of a spec.
SPEC_KEYS = ("recipe", "seeds", "metric", "plot", "fixed", "grid", "random")
#: Fields an accuracy-vs-x plot is drawn for by default, when the sweep varies them.
PLOT_FIELDS = ("gamma", "alpha", "cutmix_alpha")
#: Random-search distributions and the arguments each takes.
DISTRIBUTIONS = {
    "uniform": "[low, high]",
    "log_uniform": "[low, high], low > 0",
    "int_uniform": "[low, high], integers, both included",
    "choice": "[value, ...]",
}
#: Fields a spec may not set, and why.
RESERVED = {
    "out": "the sweep sets each trial's run directory (under --out)",
    "seed": "list the seeds in `seeds = [...]`",
    "recipe": "set the base recipe with the top-level `recipe = ...` (or sweep it: grid.recipe = [...])",
}
_FIELDS = {f.name for f in fields(TrainConfig)}
_HINTS = typing.get_type_hints(TrainConfig)
#: Characters longer than this in a trial's readable name are cut (the hash keeps it unique).
_MAX_SLUG = 96


class SweepSpecError(ValueError):
    """A malformed spec; the message names the file (or 'flags') and the key."""


@dataclass(frozen=True)
class Distribution:
    """One random-search axis: ``kind`` in `DISTRIBUTIONS` over ``args``."""

    kind: str
    args: tuple[Any, ...]

    def sample(self, rng: random.Random) -> Any:
        if self.kind == "uniform":
            return rng.uniform(*self.args)
        if self.kind == "log_uniform":
            low, high = self.args
            return math.exp(rng.uniform(math.log(low), math.log(high)))
        if self.kind == "int_uniform":
            return rng.randint(*self.args)
        return self.args[rng.randrange(len(self.args))]


@dataclass(frozen=True)
class SweepSpec:
    """A validated spec. ``grid`` keeps the file's order (it orders the trials and the table's
    rows); ``grid['recipe']`` sweeps over recipes."""

    source: str
    recipe: str | None
    seeds: tuple[int, ...]
    fixed: dict[str, Any]
    grid: dict[str, tuple[Any, ...]]
    random: dict[str, Distribution]
    samples: int
    random_seed: int
    metric: str
    plot: tuple[str, ...] | None


@dataclass(frozen=True)
class Trial:
    """One run of a sweep.

    Attributes:
        name: its directory under ``<out>/trials``: the swept values, the seed and a hash of
            the whole configuration (so a changed spec never reuses another trial's run).
        group: id of its configuration without the seed (trials of one group are its seeds).
        config: the run's `TrainConfig` (``out`` is the trial directory, absolute).
        axes: the swept values of the trial (grid and random keys), without the seed.
    """

    name: str
    group: str
    config: TrainConfig
    axes: dict[str, Any]

    @property
    def dir(self) -> Path:
        return Path(self.config.out)


def read_spec_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a ``.toml``, ``.yaml`` or ``.yml`` file; `SweepSpecError` naming the file
    when it is missing, unreadable or not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise SweepSpecError(f"{path}: no such sweep spec file")
    text = path.read_text()
    suffix = path.suffix.lower()
    if suffix == ".toml":
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            try:
                import tomli as tomllib
            except ModuleNotFoundError:
                raise SweepSpecError(f"{path}: reading TOML needs Python 3.11+ or `pip install tomli`") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise SweepSpecError(f"{path}: not valid TOML: {err}") from None
    elif suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ModuleNotFoundError:
            raise SweepSpecError(f"{path}: reading YAML needs PyYAML: {install_hint('yaml')}; or write TOML") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise SweepSpecError(f"{path}: not valid YAML: {err}") from None
    else:
        raise SweepSpecError(f"{path}: a sweep spec must be a .toml, .yaml or .yml file")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SweepSpecError(f"{path}: a sweep spec must be a mapping of keys {SPEC_KEYS}, got {type(data).__name__}")
    return data


def parse_spec(data: Mapping[str, Any], source: str) -> SweepSpec:
    """Validate the mapping of a spec file (or of flags) read from ``source``."""
    _known(data, SPEC_KEYS, source, "")
    for section in ("fixed", "grid", "random"):
        if not isinstance(data.get(section, {}), dict):
            raise SweepSpecError(f"{source}: {section} must be a table/mapping of TrainConfig fields")
    recipe = data.get("recipe")
    if recipe is not None:
        _recipe(recipe, source, "recipe")
    fixed = {
        k: _coerce(k, v, source, f"fixed.{k}") for k, v in data.get("fixed", {}).items() if _field(k, source, "fixed")
    }
    grid = _grid(data.get("grid", {}), source)
    samples, random_seed, distributions = _random(data.get("random", {}), source)
    overlap = sorted((set(fixed) & set(grid)) | (set(fixed) & set(distributions)) | (set(grid) & set(distributions)))
    if overlap:
        raise SweepSpecError(f"{source}: {overlap} set in more than one of fixed, grid and random: keep one")
    if recipe is not None and "recipe" in grid:
        raise SweepSpecError(f"{source}: recipe is both set and swept (grid.recipe): keep one")
    seeds = data.get("seeds", [0])
    if (
        not isinstance(seeds, list) or not seeds or len(set(seeds)) != len(seeds)
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)
    ):  # fmt: skip
        raise SweepSpecError(f"{source}: seeds must be a non-empty list of distinct integers >= 0, got {seeds!r}")
    metric = data.get("metric", SUMMARY_METRICS[0])
    if metric not in SUMMARY_METRICS:
        raise SweepSpecError(f"{source}: metric must be one of {SUMMARY_METRICS}, got {metric!r}")
    plot = data.get("plot")
    if plot is not None:
        if not isinstance(plot, list) or not all(isinstance(p, str) for p in plot):
            raise SweepSpecError(f"{source}: plot must be a list of TrainConfig fields, got {plot!r}")
        for name in plot:
            _field(name, source, "plot")
            if _HINTS[name] not in (int, float):
                raise SweepSpecError(f"{source}: plot.{name}: only numeric fields can be an x axis")
        plot = tuple(plot)
    return SweepSpec(source, recipe, tuple(seeds), fixed, grid, distributions, samples, random_seed, metric, plot)


def load_spec(path: str | Path) -> SweepSpec:
    """`parse_spec` of a TOML/YAML file."""
    return parse_spec(read_spec_file(path), str(path))


def expand(spec: SweepSpec, out: str | Path) -> list[Trial]:
    """The trials of ``spec`` with run directories under ``<out>/trials``: grid points (in the
    spec's order) x random draws x seeds. The random draws come from ``random.seed``, so the same
    spec always gives the same trials."""
    rng = random.Random(spec.random_seed)
    draws = [{k: d.sample(rng) for k, d in spec.random.items()} for _ in range(spec.samples)] if spec.random else [{}]
    trials_dir = Path(out).resolve() / "trials"
    trials = []
    for point in itertools.product(*spec.grid.values()):
        for draw in draws:
            axes = {**dict(zip(spec.grid, point)), **draw}
            base = _base(axes.get("recipe", spec.recipe))
            values = {**spec.fixed, **{k: v for k, v in axes.items() if k != "recipe"}}
            for seed in spec.seeds:
                try:
                    config = base.replace(**values, seed=seed)
                except ValueError as err:
                    raise SweepSpecError(f"{spec.source}: {_culprit(spec, axes, str(err))}: {err}") from None
                config = config.replace(data_root=str(Path(config.data_root).expanduser().resolve()))
                name = f"{_slug({**axes, 'seed': seed})}-{_digest(config, with_seed=True)}"
                group = _digest(config, with_seed=False)
                trials.append(Trial(name, group, config.replace(out=str(trials_dir / name)), axes))
    return list({t.name: t for t in reversed(trials)}.values())[::-1]  # a repeated random draw runs once


def parse_value(name: str, text: str) -> Any:
    """A flag's text as the value of field ``name`` (``int``, ``float``, ``bool``, ``str``, or a
    comma-separated tuple); ``ValueError`` when it does not parse."""
    hint = _HINTS[name]
    if typing.get_origin(hint) is tuple:
        kind = typing.get_args(hint)[0]
        return [kind(v) for v in text.split(",") if v.strip()]
    if hint in (bool, bool | None):
        lowered = text.strip().lower()
        if hint == bool | None and lowered == "none":
            return None
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise ValueError(f"expected true or false, got {text!r}")
    return hint(text)


def identity(config: TrainConfig, *, with_seed: bool) -> dict[str, Any]:
    """The fields that make a trial's numbers: all but `RESUMABLE_CHANGES` (and the seed unless
    ``with_seed``). Two trials with equal identities are the same run."""
    skip = set(RESUMABLE_CHANGES) | (set() if with_seed else {"seed"})
    return {k: v for k, v in config.to_dict().items() if k not in skip}


def _digest(config: TrainConfig, *, with_seed: bool) -> str:
    """8 hex digits of the SHA-1 of the identity's canonical JSON."""
    text = json.dumps(identity(config, with_seed=with_seed), sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def _slug(axes: dict[str, Any]) -> str:
    """``gamma=0.5_alpha=1_seed=0``: the values in a file-name-safe form."""
    parts = [f"{k}={format_value(v)}" for k, v in axes.items()]
    text = "_".join(parts).replace("/", "-").replace(" ", "")
    return "".join(c if c.isalnum() or c in "=._,-" else "-" for c in text)[:_MAX_SLUG]


def format_value(value: Any) -> str:
    """A swept value for names, labels and tables: floats to 4 significant digits."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ",".join(format_value(v) for v in value)
    return str(value)


def _culprit(spec: SweepSpec, axes: dict[str, Any], message: str) -> str:
    """Where a `TrainConfig` error comes from: ``grid.gamma = -1`` when the message names a
    swept or fixed key (as its flag ``(--gamma)`` or as ``SEMConfig.gamma``), else the trial's
    swept values."""
    for key, value in {**spec.fixed, **axes}.items():
        if f"(--{key.replace('_', '-')})" in message or f"SEMConfig.{key} " in message:
            section = "fixed" if key in spec.fixed else "grid" if key in spec.grid else "random"
            return f"{section}.{key} = {format_value(value)}"
    described = " ".join(f"{k}={format_value(v)}" for k, v in axes.items())
    return f"the trial {described}" if described else "the base configuration"


def _base(recipe: str | None) -> TrainConfig:
    return get_recipe(recipe) if recipe is not None else TrainConfig()


def _known(data: Mapping[str, Any], allowed: tuple[str, ...], source: str, prefix: str) -> None:
    for key in data:
        if key not in allowed:
            hint = _suggest(key, allowed)
            raise SweepSpecError(f"{source}: unknown key {prefix}{key!r}{hint}; allowed: {list(allowed)}")


def _suggest(key: object, known: object) -> str:
    close = difflib.get_close_matches(str(key), list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _field(name: str, source: str, section: str) -> bool:
    """Check that ``name`` (in ``section``: a spec table or a flag) names a settable `TrainConfig` field."""
    where = f"{section} {name}" if section.startswith("--") else f"{section}.{name}"
    if name in RESERVED:
        raise SweepSpecError(f"{source}: {where} cannot be set: {RESERVED[name]}")
    if name in RESUMABLE_CHANGES and section in ("grid", "random", "--grid", "--random"):
        raise SweepSpecError(f"{source}: {where} cannot be swept: it does not change a trial's numbers (use fixed)")
    if name not in _FIELDS:
        raise SweepSpecError(f"{source}: {where} is not a TrainConfig field{_suggest(name, _FIELDS)}")
    return True


def _recipe(name: object, source: str, where: str) -> None:
    if not isinstance(name, str):
        raise SweepSpecError(f"{source}: {where} must be a recipe name (a string), got {name!r}")
    try:
        get_recipe(name)
    except ValueError as err:
        raise SweepSpecError(f"{source}: {where}: {err}") from None


def _coerce(name: str, value: Any, source: str, where: str) -> Any:
    """``value`` as field ``name``'s type (ints for float fields become floats, lists for tuple
    fields tuples); `SweepSpecError` naming ``where`` when it has the wrong type."""
    hint = _HINTS[name]
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is float and number:
        return float(value)
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint in (bool, bool | None) and (isinstance(value, bool) or (value is None and hint == bool | None)):
        return value
    if hint is str and isinstance(value, str):
        return value
    if typing.get_origin(hint) is tuple and isinstance(value, (list, tuple)):
        kind = typing.get_args(hint)[0]
        return tuple(_coerce_item(kind, v, source, where) for v in value)
    expected = {float: "a number", int: "an integer", bool: "true or false", str: "a string"}.get(hint, str(hint))
    raise SweepSpecError(f"{source}: {where} must be {expected}, got {value!r}")


def _coerce_item(kind: type, value: Any, source: str, where: str) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        raise SweepSpecError(f"{source}: {where} must be a list of {kind.__name__}s, got item {value!r}")
    return kind(value)


def _grid(grid: dict[str, Any], source: str) -> dict[str, tuple[Any, ...]]:
    out = {}
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise SweepSpecError(f"{source}: grid.{key} must be a non-empty list of values, got {values!r}")
        if key == "recipe":
            for name in values:
                _recipe(name, source, "grid.recipe")
            coerced = tuple(values)
        else:
            _field(key, source, "grid")
            coerced = tuple(_coerce(key, v, source, f"grid.{key}") for v in values)
        if len(set(coerced)) != len(coerced):
            raise SweepSpecError(f"{source}: grid.{key} lists a value twice: {values!r}")
        out[key] = coerced
    return out


def _random(section: dict[str, Any], source: str) -> tuple[int, int, dict[str, Distribution]]:
    """``(samples, seed, distributions)`` of the ``random`` section."""
    samples, seed = section.get("samples", 1), section.get("seed", 0)
    for key, value, low in (("samples", samples, 1), ("seed", seed, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise SweepSpecError(f"{source}: random.{key} must be an integer >= {low}, got {value!r}")
    distributions = {}
    for key, spec in section.items():
        if key in ("samples", "seed"):
            continue
        _field(key, source, "random")
        where = f"random.{key}"
        if not isinstance(spec, dict) or len(spec) != 1:
            kinds = ", ".join(DISTRIBUTIONS)
            raise SweepSpecError(f"{source}: {where} must be one of {{{kinds}}} = [...], got {spec!r}")
        ((kind, args),) = spec.items()
        if kind not in DISTRIBUTIONS:
            raise SweepSpecError(f"{source}: {where}: unknown distribution {kind!r}{_suggest(kind, DISTRIBUTIONS)}; "
                                 f"known: {list(DISTRIBUTIONS)}")  # fmt: skip
        distributions[key] = _distribution(key, kind, args, source, where)
    return samples, seed, distributions


def _distribution(key: str, kind: str, args: Any, source: str, where: str) -> Distribution:
    bad = SweepSpecError(f"{source}: {where}: {kind} takes {DISTRIBUTIONS[kind]}, got {args!r}")
    if not isinstance(args, list) or not args:
        raise bad
    if kind == "choice":
        return Distribution(kind, tuple(_coerce(key, v, source, where) for v in args))
    if len(args) != 2 or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
        raise bad
    low, high = args
    if low >= high if kind != "int_uniform" else low > high:
        raise bad
    if kind == "log_uniform" and low <= 0:
        raise bad
    if kind == "int_uniform":
        if not all(isinstance(a, int) for a in args) or _HINTS[key] is not int:
            raise SweepSpecError(f"{source}: {where}: int_uniform needs an integer field and bounds, got {args}")
    elif _HINTS[key] is not float:
        raise SweepSpecError(f"{source}: {where}: {kind} draws numbers; {key} is not a float field (use choice)")
    return Distribution(kind, (low, high))


def apply_flags(
    data: dict[str, Any],
    *,
    recipe: str | None = None,
    seeds: tuple[int, ...] | None = None,
    sets: list[str] = (),
    grid: list[str] = (),
    random_axes: list[str] = (),
    samples: int | None = None,
    random_seed: int | None = None,
    metric: str | None = None,
    plot: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """``data`` (a spec mapping) with ``sem-fast sweep`` flags laid over it: ``--set KEY=VALUE``,
    ``--grid KEY=V1,V2,...`` (values of tuple fields separated by ``;``), ``--random
    KEY=DIST:A,B,...`` and the top-level keys. A flag replaces the same key of the file."""
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for key, value in (("recipe", recipe), ("seeds", seeds), ("metric", metric), ("plot", plot)):
        if value is not None:
            data[key] = list(value) if isinstance(value, tuple) else value
    flags = (("--set", sets, "fixed"), ("--grid", grid, "grid"), ("--random", random_axes, "random"))
    for flag, items, section in flags:
        for item in items:
            key, sep, text = item.partition("=")
            if not sep or not key or not text:
                raise SweepSpecError(f"command line: {flag} expects KEY=VALUE, got {item!r}")
            if not (section == "grid" and key == "recipe"):
                _field(key, "command line", flag)
            for other in ("fixed", "grid", "random"):
                data.get(other, {}).pop(key, None)
            try:
                value = _flag_value(section, key, text)
            except ValueError as err:
                raise SweepSpecError(f"command line: {flag} {item}: {err}") from None
            data.setdefault(section, {})[key] = value
    for key, value in (("samples", samples), ("seed", random_seed)):
        if value is not None:
            data.setdefault("random", {})[key] = value
    return data


def _flag_value(section: str, key: str, text: str) -> Any:
    if section == "fixed":
        return parse_value(key, text)
    if section == "grid":
        if key == "recipe":
            return text.split(",")
        separator = ";" if typing.get_origin(_HINTS[key]) is tuple else ","
        return [parse_value(key, v) for v in text.split(separator)]
    kind, sep, args = text.partition(":")
    if not sep:
        raise ValueError(f"expected DIST:A,B,... with DIST one of {list(DISTRIBUTIONS)}")
    if kind == "choice":
        return {kind: [parse_value(key, v) for v in args.split(",")]}
    number = int if kind == "int_uniform" else float
    return {kind: [number(v) for v in args.split(",")]}
