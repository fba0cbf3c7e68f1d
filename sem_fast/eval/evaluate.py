"""`evaluate_checkpoint`: the paper's evaluation of a trained model, as a Markdown table and JSON.

- clean test accuracy, cross-entropy and ECE;
- natural shift: CIFAR-10.1, CIFAR-10.2 (when their files are found);
- corruptions: CIFAR-10-C / CIFAR-100-C files (mean over the 15 corruptions x 5 severities
  present), and the on-the-fly subset of `sem_fast.eval.corruptions` (always);
- OOD detection with the max-softmax-probability score (AUROC, FPR at 95% TPR; in-distribution =
  the clean test set): SVHN and image folders such as LSUN when found, the held-out classes of a
  model trained on a class subset (``--classes``), and synthetic uniform / Gaussian noise;
- the 2-D embedding figure of mixed and clean features (`sem_fast.eval.embedding`).

Where a data set is not found, the report says where it was looked for. An evaluation is written
whole at its end (an interrupted one leaves the earlier files as they were), with its settings
and the checkpoint's SHA-256 in ``eval.json``: an output folder holding an evaluation with other
settings, or of another checkpoint, is refused (`EvaluationExistsError`) unless ``overwrite``.
A progress line per stage (corruption and severity, OOD set, ...) with an ETA goes to stderr.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sem_fast.config import SEMConfig
from sem_fast.data import (
    ArrayDataset, DatasetNotFoundError, Loader, cifar_c_corruptions, loader_from_dataset, make_loader, read_cifar_c,
)  # fmt: skip
from sem_fast.eval.corruptions import CORRUPTIONS, SEVERITIES, corrupt
from sem_fast.eval.embedding import equivariance_gap, mixed_features, save_embedding_figure
from sem_fast.eval.metrics import accuracy, auroc, expected_calibration_error, fpr_at_tpr, max_softmax
from sem_fast.extras import require
from sem_fast.figure import FORMATS
from sem_fast.train.build import autocast_dtype, build_model, pick_device
from sem_fast.train.checkpoint import load_checkpoint
from sem_fast.train.config import TrainConfig
from sem_fast.train.inference import BatchTransform, Predictions, predict
from sem_fast.train.metrics_log import json_safe
from sem_fast.train.progress import StageProgress
from sem_fast.train.run_files import CHECKPOINT_NAME, EVAL_DIR
from sem_fast.train.train_sets import Dataset, open_loader, read_split

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]

#: Synthetic OOD images: per-pixel uniform 0..255, and Gaussian N(mean, std) in 0..1 units,
#: clipped (ours; Hendrycks et al. 2019 use similar noise sets).
GAUSSIAN_NOISE_MEAN, GAUSSIAN_NOISE_STD = 0.5, 0.25
#: Pairs in the embedding figure: 100 pairs x 5 ratios keep the 1,000 markers readable.
EMBEDDING_PAIRS = 100
#: Images per synthetic-noise OOD set (ours): the standard error of an AUROC near 90% is then
#: about 0.5 points.
NOISE_IMAGES = 2000
#: The files of one evaluation in its output folder.
REPORT_NAME, MARKDOWN_NAME, EMBEDDING_STEM = "eval.json", "eval.md", "embedding"
EVAL_FILES = (REPORT_NAME, MARKDOWN_NAME, *(f"{EMBEDDING_STEM}.{fmt}" for fmt in FORMATS))
#: A stage of the evaluation: what it computes (for the progress line) and the function doing it.
Stage = tuple[str, Callable[[], None]]


class EvaluationExistsError(FileExistsError):
    """The output folder holds an evaluation with other settings (or of another checkpoint)."""


class Evaluator:
    """A trained model plus what is needed to score it on any batch source."""

    def __init__(self, checkpoint: str | Path, *, device: str = "auto", amp: str = "auto", batch_size: int = 500,
                 max_images: int = 0, seed: int = 0) -> None:  # fmt: skip
        state = load_checkpoint(checkpoint)
        self.config = TrainConfig.from_dict(state["config"])
        self.epoch = state["epoch"]
        self.device = pick_device(device)
        self.amp_dtype = autocast_dtype(amp, self.device)
        self.model: nn.Module = build_model(self.config)
        self.model.load_state_dict(state["model"])
        self.model.to(self.device)
        if self.config.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.model.eval()
        self.cfg: SEMConfig = self.config.sem_config(mixing=False)
        self.batch_size, self.max_images = batch_size, max_images
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self._test_sets: dict[tuple[int, ...], Dataset] = {}

    def predict(self, batches: Batches, transform: BatchTransform | None = None) -> Predictions:
        """Logits over ``batches``, capped at ``max_images``."""
        return predict(self.model, _take(batches, self.max_images), self.cfg, amp_dtype=self.amp_dtype,
                       transform=transform)  # fmt: skip

    def arrays(self, dataset: ArrayDataset) -> Loader:
        """Unshuffled batches of an in-memory dataset on the device."""
        return loader_from_dataset(dataset, self.batch_size, self.device, shuffle=False)

    def test_loader(self, data_root: Path, classes: tuple[int, ...]) -> Batches:
        """The run's test split restricted to ``classes`` (all when empty), read once, by the
        default backend."""
        if classes not in self._test_sets:
            ts = self.config.train_set
            self._test_sets[classes] = read_split(ts, data_root, ts.test_split, classes)
        return open_loader(self._test_sets[classes], self.batch_size, self.device, "auto", train=False, seed=0)


def evaluate_checkpoint(
    checkpoint: str | Path,
    *,
    data_root: str | Path | None = None,
    out: str | Path | None = None,
    device: str = "auto",
    amp: str = "auto",
    batch_size: int = 500,
    corruptions: tuple[str, ...] = CORRUPTIONS,
    severities: tuple[int, ...] = SEVERITIES,
    ood_folders: dict[str, str | Path] | None = None,
    noise_images: int = NOISE_IMAGES,
    embedding: bool = True,
    max_images: int = 0,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate ``checkpoint`` (a ``checkpoint.pt`` or its run directory); write ``eval.json``,
    ``eval.md`` and ``embedding.png``/``.svg`` to ``out`` (default ``<run dir>/eval``) and return
    the report.

    ``data_root`` (default: the run's) is searched for the optional sets: ``CIFAR-10-C/`` or
    ``CIFAR-100-C/``, the CIFAR-10.1 ``.npy`` pair, ``cifar102_test.npz``, SVHN's
    ``test_32x32.mat`` (also under ``svhn/``), and ``LSUN/`` / ``LSUN_resize/`` image folders;
    ``ood_folders`` adds named image folders (``name -> folder whose subfolders hold the images``).
    ``max_images`` caps every evaluated set (0: no cap), for quick looks. ``overwrite``: replace
    an evaluation with other settings found in ``out`` (else `EvaluationExistsError`).
    ``progress``: a line per stage on stderr. ``embedding`` needs matplotlib (extra ``plots``).
    """
    checkpoint = Path(checkpoint)
    run_dir = checkpoint if checkpoint.is_dir() else checkpoint.parent
    checkpoint_file = checkpoint / CHECKPOINT_NAME if checkpoint.is_dir() else checkpoint
    if embedding:
        require("matplotlib", "the embedding figure (--no-embedding: none)")
    ev = Evaluator(checkpoint, device=device, amp=amp, batch_size=batch_size, max_images=max_images, seed=seed)
    config = ev.config
    root = Path(data_root if data_root is not None else config.data_root).expanduser().resolve()
    out_dir = Path(out) if out is not None else run_dir / EVAL_DIR
    settings = {
        "checkpoint_sha256": _sha256(checkpoint_file), "data_root": str(root), "amp": amp,
        "corruptions": list(corruptions), "severities": list(severities),
        "ood_folders": {k: str(Path(v).resolve()) for k, v in (ood_folders or {}).items()},
        "noise_images": noise_images, "embedding": embedding, "max_images": max_images, "seed": seed,
    }  # fmt: skip
    _check_earlier(out_dir, settings, overwrite)
    report: dict[str, Any] = {
        "checkpoint": str(checkpoint_file), "recipe": config.recipe, "dataset": config.dataset,
        "epochs_trained": ev.epoch, "data_root": str(root), "settings": settings, "skipped": {},
    }  # fmt: skip
    tmp = out_dir / f".eval-{os.getpid()}.tmp"
    stages: list[Stage] = []
    clean: dict[str, Predictions] = {}

    def clean_pass() -> None:
        clean["test"] = ev.predict(ev.test_loader(root, config.classes))
        report["clean"] = _classification(clean["test"])

    stages.append(("clean test set", clean_pass))
    report["shift"] = _shift_sets(ev, root, report["skipped"], stages)
    report["corruption_files"] = _corruption_files(ev, root, report["skipped"], stages)
    report["corruptions"] = _on_the_fly(ev, root, corruptions, severities, stages)
    report["ood"] = _ood(ev, root, lambda: max_softmax(clean["test"].logits), ood_folders or {}, noise_images,
                         report["skipped"], stages)  # fmt: skip
    if embedding:
        report["embedding"] = {}
        stages.append(("embedding", lambda: report["embedding"].update(_embedding(ev, root, tmp, out_dir,
                                                                                  report["skipped"]))))
    shown = StageProgress("sem-fast eval", len(stages), enabled=progress)
    try:
        for what, run in stages:
            shown.step(what)
            run()
        report = json_safe(report)
        tmp.mkdir(parents=True, exist_ok=True)
        (tmp / REPORT_NAME).write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
        (tmp / MARKDOWN_NAME).write_text(to_markdown(report))
        for name in EVAL_FILES:  # the new evaluation replaces the whole earlier one
            if (tmp / name).exists():
                os.replace(tmp / name, out_dir / name)
            else:
                (out_dir / name).unlink(missing_ok=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_earlier(out_dir: Path, settings: dict[str, Any], overwrite: bool) -> None:
    """Refuse to replace an evaluation with other settings in ``out_dir`` unless ``overwrite``."""
    path = out_dir / REPORT_NAME
    if overwrite or not path.is_file():
        return
    try:
        earlier = json.loads(path.read_text()).get("settings", {})
    except ValueError:
        earlier = {}
    differ = [k for k in settings if earlier.get(k) != settings[k]]
    if differ:
        what = "of another checkpoint" if "checkpoint_sha256" in differ else "with other settings"
        if not earlier:
            what, differ = "written without its settings (by an earlier sem_fast)", []
        diffs = ", ".join(f"{k}: {earlier.get(k)!r} there, {settings[k]!r} now" for k in differ
                          if k != "checkpoint_sha256")  # fmt: skip
        raise EvaluationExistsError(
            f"{out_dir} holds an evaluation {what}{f' ({diffs})' if diffs else ''}: replace it with --overwrite, "
            f"or write this one elsewhere with --out"
        )


def _take(batches: Batches, limit: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``batches`` cut after ``limit`` images in total (0: all)."""
    left = limit or math.inf
    for images, labels in batches:
        if left <= 0:
            return
        n = int(min(left, images.shape[0]))
        yield images[:n], labels[:n]
        left -= n


def _classification(pred: Predictions) -> dict[str, float]:
    return {
        "accuracy": accuracy(pred.logits, pred.labels),
        "nll": float(F.cross_entropy(pred.logits, pred.labels)),
        "ece": expected_calibration_error(pred.logits, pred.labels),
        "images": pred.labels.numel(),
    }


def _first_dir(root: Path, candidates: tuple[str, ...], marker: str) -> Path | None:
    """The first of ``root/<candidate>`` holding ``marker``."""
    for name in candidates:
        if (root / name / marker).exists():
            return root / name
    return None


def _shift_sets(ev: Evaluator, root: Path, skipped: dict[str, str], stages: list[Stage]) -> dict[str, Any]:
    """The natural-shift sets found, each a stage filling the returned dict."""
    if ev.config.train_set.num_classes != 10 or ev.config.classes:
        return {}
    results: dict[str, Any] = {}
    for name, marker, looked_for in (
        ("cifar10.1", "cifar10.1_v6_data.npy", "cifar10.1_v6_data.npy + cifar10.1_v6_labels.npy"),
        ("cifar10.2", "cifar102_test.npz", "cifar102_test.npz"),
    ):
        folder = _first_dir(root, (".", name, name.upper().replace("CIFAR", "CIFAR-")), marker)
        if folder is None:
            skipped[name] = f"{looked_for} not found in {root} or {root}/{name}"
            continue

        def run(name: str = name, folder: Path = folder) -> None:
            loader = make_loader(name, folder, "test", ev.batch_size, ev.device, shuffle=False)
            results[name] = _classification(ev.predict(loader))

        stages.append((name, run))
    return results


def _corruption_files(ev: Evaluator, root: Path, skipped: dict[str, str], stages: list[Stage]) -> dict[str, Any]:
    """CIFAR-10-C / CIFAR-100-C: a stage per corruption file and severity."""
    k = ev.config.train_set.num_classes
    if ev.config.classes or k not in (10, 100):
        return {}
    name = "CIFAR-10-C" if k == 10 else "CIFAR-100-C"
    folder = _first_dir(root, (name, name.lower()), "labels.npy")
    if folder is None:
        skipped[name] = f"{name}/labels.npy not found in {root}"
        return {}
    found = cifar_c_corruptions(folder)
    if not found:
        return {}
    per: dict[str, list[float]] = {c: [] for c in found}
    results: dict[str, Any] = {}
    for corruption in found:
        for severity in range(1, 6):

            def run(corruption: str = corruption, severity: int = severity) -> None:
                data = read_cifar_c(folder, corruption, severity, k)
                per[corruption].append(accuracy(*ev.predict(ev.arrays(data))[:2]))
                if len(per[corruption]) == 5 and corruption == found[-1]:
                    results[name] = _corruption_summary(per)

            stages.append((f"{name}: {corruption} severity {severity}", run))
    return results


def _corruption_summary(per: dict[str, list[float]]) -> dict[str, Any]:
    """``{'mean': over every corruption and severity, 'corruptions': count, 'per_corruption':
    {name: {'mean', 'accuracy_by_severity'}}, 'severities': [1, ..., 5]}``."""
    values = [v for accs in per.values() for v in accs]
    return {
        "mean": sum(values) / len(values),
        "corruptions": len(per),
        "per_corruption": {c: {"mean": sum(a) / len(a), "accuracy_by_severity": a} for c, a in per.items()},
        "severities": list(SEVERITIES),
    }


def _on_the_fly(
    ev: Evaluator, root: Path, corruptions: tuple[str, ...], severities: tuple[int, ...], stages: list[Stage]
) -> dict[str, Any]:
    """The on-the-fly corruptions: a stage per corruption and severity."""
    if not corruptions:
        return {}
    per: dict[str, list[float]] = {c: [] for c in corruptions}
    results: dict[str, Any] = {}
    for name in corruptions:
        for s in severities:

            def run(name: str = name, s: int = s) -> None:
                loader = ev.test_loader(root, ev.config.classes)
                pred = ev.predict(loader, transform=lambda x: corrupt(x, name, s, ev.generator))
                per[name].append(accuracy(pred.logits, pred.labels))
                if name == corruptions[-1] and s == severities[-1]:
                    results.update(_corruption_summary(per), severities=list(severities))

            stages.append((f"on the fly: {name} severity {s}", run))
    return results


def _ood(
    ev: Evaluator,
    root: Path,
    id_scores: Callable[[], torch.Tensor],
    folders: dict[str, str | Path],
    noise_images: int,
    skipped: dict[str, str],
    stages: list[Stage],
) -> dict[str, Any]:
    """The OOD sets found, a stage each; ``id_scores`` gives the clean test set's scores (computed
    by an earlier stage)."""
    sources: dict[str, Callable[[], Batches]] = {}
    svhn = _first_dir(root, (".", "svhn", "SVHN"), "test_32x32.mat")
    if svhn is None:
        skipped["svhn"] = f"test_32x32.mat not found in {root} or {root}/svhn"
    else:
        sources["svhn"] = lambda: make_loader("svhn", svhn, "test", ev.batch_size, ev.device, shuffle=False)
    found = {n: root / d for n, d in (("lsun", "LSUN"), ("lsun-resize", "LSUN_resize")) if (root / d).is_dir()}
    if not found:
        skipped["lsun"] = f"no LSUN/ or LSUN_resize/ image folder in {root}"
    for name, folder in {**found, **{n: Path(f) for n, f in folders.items()}}.items():

        def folder_loader(name: str = name, folder: Path = folder) -> Batches:
            try:
                return make_loader("imagefolder", folder.parent, folder.name, ev.batch_size, ev.device,
                                   shuffle=False, image_size=ev.config.train_set.image_size)  # fmt: skip
            except DatasetNotFoundError as err:
                raise DatasetNotFoundError(name, folder, ["<subfolder>/<image>.jpg|.png"], hint=str(err)) from err

        sources[name] = folder_loader
    held_out = tuple(c for c in range(ev.config.train_set.num_classes) if c not in ev.config.classes)
    if ev.config.classes:
        sources["held-out classes"] = lambda: ev.test_loader(root, held_out)
    sources.update(_noise_sets(ev, noise_images))
    results: dict[str, Any] = {}
    for name, batches in sources.items():

        def run(name: str = name, batches: Callable[[], Batches] = batches) -> None:
            scores = max_softmax(ev.predict(batches()).logits)
            reference = id_scores()
            results[name] = {"auroc": auroc(reference, scores), "fpr95": fpr_at_tpr(reference, scores),
                             "images": scores.numel()}  # fmt: skip
            if name == "held-out classes":
                results[name]["classes"] = list(held_out)

        stages.append((f"OOD: {name}", run))
    return results


def _noise_sets(ev: Evaluator, n: int) -> dict[str, Callable[[], Batches]]:
    """The synthetic-noise OOD sets, each drawn from the evaluation's generator when its stage runs."""
    if n <= 0:
        return {}
    side, g, dev, k = ev.config.train_set.image_size, ev.generator, ev.device, ev.config.num_classes
    shape = (n, side, side, 3)

    def uniform() -> torch.Tensor:
        return torch.randint(0, 256, shape, dtype=torch.uint8, device=dev, generator=g)

    def gaussian() -> torch.Tensor:
        noise = torch.randn(shape, device=dev, generator=g) * GAUSSIAN_NOISE_STD + GAUSSIAN_NOISE_MEAN
        return (noise.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)

    def loader(name: str, draw: Callable[[], torch.Tensor]) -> Callable[[], Batches]:
        return lambda: ev.arrays(ArrayDataset(name, draw().cpu(), torch.zeros(n, dtype=torch.int64), k))

    return {"uniform noise": loader("uniform-noise", uniform), "gaussian noise": loader("gaussian-noise", gaussian)}


def _embedding(ev: Evaluator, root: Path, tmp: Path, out_dir: Path, skipped: dict[str, str]) -> dict[str, Any]:
    """Fig. 3 for the model's classes 0 and 1: pairs of their first test images, drawn into
    ``tmp`` (moved to ``out_dir`` with the rest of the evaluation)."""
    loader = ev.test_loader(root, ev.config.classes)
    images, labels = (torch.cat(t) for t in zip(*_take(loader, ev.max_images)))
    n = min(int((labels == 0).sum()), int((labels == 1).sum()), EMBEDDING_PAIRS)
    if n < 2:
        skipped["embedding"] = "fewer than 2 test images in class 0 or 1"
        return {}
    feats = mixed_features(ev.model, images[labels == 0][:n], images[labels == 1][:n], ev.cfg, amp_dtype=ev.amp_dtype)
    classes = ev.config.classes[:2] or (0, 1)
    known = ev.config.train_set.class_names
    names = tuple(known[c] if known else f"class {c}" for c in classes)
    tmp.mkdir(parents=True, exist_ok=True)
    method = save_embedding_figure(feats, tmp / EMBEDDING_STEM, names, f"{ev.config.recipe}: {names[0]} / {names[1]}")
    return {"png": str(out_dir / f"{EMBEDDING_STEM}.png"), "method": method, "pairs": n, "classes": list(classes),
            "class_names": list(names),
            "equivariance_gap": {str(k): v for k, v in equivariance_gap(feats).items()}}  # fmt: skip


def to_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: one table per section, accuracies and AUROCs in %."""
    lines = [f"# Evaluation of `{report['checkpoint']}`", "",
             f"recipe `{report['recipe']}`, data `{report['dataset']}`, {report['epochs_trained']} epochs trained", "",
             "| test set | accuracy % | NLL | ECE % | images |", "|---|---|---|---|---|"]  # fmt: skip
    for name, r in {"clean": report["clean"], **report["shift"]}.items():
        lines.append(f"| {name} | {r['accuracy']:.2f} | {r['nll']:.4f} | {r['ece']:.2f} | {r['images']} |")
    corruption_sets = dict(report["corruption_files"])
    if report["corruptions"]:
        corruption_sets["on the fly"] = report["corruptions"]
    if corruption_sets:
        lines += ["", "| corruptions | mean accuracy % | corruptions | " + " | ".join(f"sev {s}" for s in SEVERITIES) + " |",
                  "|---|---|---|" + "---|" * len(SEVERITIES)]  # fmt: skip
        for name, r in corruption_sets.items():
            per_sev = [v["accuracy_by_severity"] for v in r["per_corruption"].values()]
            sev_means = dict(zip(r["severities"], (sum(col) / len(col) for col in zip(*per_sev))))
            cells = " | ".join(f"{sev_means[s]:.2f}" if s in sev_means else "" for s in SEVERITIES)
            lines.append(f"| {name} | {r['mean']:.2f} | {r['corruptions']} | {cells} |")
        lines += ["", "| corruption | set | mean accuracy % |", "|---|---|---|"]
        for name, r in corruption_sets.items():
            lines += [f"| {c} | {name} | {v['mean']:.2f} |" for c, v in r["per_corruption"].items()]
    if report["ood"]:
        lines += ["", "| OOD set (MSP score) | AUROC % | FPR@95%TPR % | images |", "|---|---|---|---|"]
        lines += [f"| {n} | {r['auroc']:.2f} | {r['fpr95']:.2f} | {r['images']} |" for n, r in report["ood"].items()]
    emb = report.get("embedding")
    if emb:
        gaps = ", ".join(f"lam={k}: {v:.3f}" for k, v in emb["equivariance_gap"].items())
        names = " and ".join(emb.get("class_names", map(str, emb["classes"])))
        caption = f"Embedding ({emb['method']}, {emb['pairs']} pairs of {names}): `{emb['png']}`"
        lines += ["", f"{caption}; equivariance gap {gaps}"]
    if report["skipped"]:
        lines += ["", "Not evaluated:"] + [f"- {k}: {v}" for k, v in report["skipped"].items()]
    return "\n".join(lines) + "\n"
