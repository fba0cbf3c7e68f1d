"""`evaluate_checkpoint`: the paper's evaluation of a trained model, as a Markdown table and JSON.

- clean test accuracy, cross-entropy and ECE;
- natural shift: CIFAR-10.1, CIFAR-10.2 (when their files are found);
- corruptions: CIFAR-10-C / CIFAR-100-C files (mean over the 15 corruptions x 5 severities
  present), and the on-the-fly subset of `sem_fast.eval.corruptions` (always);
- OOD detection with the max-softmax-probability score (AUROC, FPR at 95% TPR; in-distribution =
  the clean test set): SVHN and image folders such as LSUN when found, the held-out classes of a
  model trained on a class subset (``--classes``), and synthetic uniform / Gaussian noise;
- the 2-D embedding figure of mixed and clean features (`sem_fast.eval.embedding`).

Where a data set is not found, the report says where it was looked for.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
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
from sem_fast.eval.embedding import equivariance_gap, mixed_features, save_embedding_png
from sem_fast.eval.metrics import accuracy, auroc, expected_calibration_error, fpr_at_tpr, max_softmax
from sem_fast.train.build import autocast_dtype, build_model, pick_device
from sem_fast.train.checkpoint import load_checkpoint
from sem_fast.train.config import TrainConfig
from sem_fast.train.inference import BatchTransform, Predictions, predict
from sem_fast.train.metrics_log import json_safe
from sem_fast.train.run_files import CHECKPOINT_NAME
from sem_fast.train.train_sets import open_loader

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]

#: Synthetic OOD images: per-pixel uniform 0..255, and Gaussian N(mean, std) in 0..1 units,
#: clipped (ours; Hendrycks et al. 2019 use similar noise sets).
GAUSSIAN_NOISE_MEAN, GAUSSIAN_NOISE_STD = 0.5, 0.25
#: Pairs in the embedding figure: 100 pairs x 5 ratios keep the 1,000 markers readable.
EMBEDDING_PAIRS = 100
#: Images per synthetic-noise OOD set (ours): the standard error of an AUROC near 90% is then
#: about 0.5 points.
NOISE_IMAGES = 2000


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

    def predict(self, batches: Batches, transform: BatchTransform | None = None) -> Predictions:
        """Logits over ``batches``, capped at ``max_images``."""
        return predict(self.model, _take(batches, self.max_images), self.cfg, amp_dtype=self.amp_dtype,
                       transform=transform)  # fmt: skip

    def arrays(self, dataset: ArrayDataset) -> Loader:
        """Unshuffled batches of an in-memory dataset on the device."""
        return loader_from_dataset(dataset, self.batch_size, self.device, shuffle=False)

    def test_loader(self, data_root: Path, classes: tuple[int, ...]) -> Batches:
        """The run's test split restricted to ``classes`` (all when empty), read by the default backend."""
        ts = self.config.train_set
        return open_loader(ts, data_root, ts.test_split, self.batch_size, self.device, "auto", classes=classes,
                           train=False, seed=0)  # fmt: skip


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
) -> dict[str, Any]:
    """Evaluate ``checkpoint`` (a ``checkpoint.pt`` or its run directory); write ``eval.json``,
    ``eval.md`` and ``embedding.png`` to ``out`` (default ``<run dir>/eval``) and return the report.

    ``data_root`` (default: the run's) is searched for the optional sets: ``CIFAR-10-C/`` or
    ``CIFAR-100-C/``, the CIFAR-10.1 ``.npy`` pair, ``cifar102_test.npz``, SVHN's
    ``test_32x32.mat`` (also under ``svhn/``), and ``LSUN/`` / ``LSUN_resize/`` image folders;
    ``ood_folders`` adds named image folders (``name -> folder whose subfolders hold the images``).
    ``max_images`` caps every evaluated set (0: no cap), for quick looks.
    """
    checkpoint = Path(checkpoint)
    run_dir = checkpoint if checkpoint.is_dir() else checkpoint.parent
    ev = Evaluator(checkpoint, device=device, amp=amp, batch_size=batch_size, max_images=max_images, seed=seed)
    config = ev.config
    root = Path(data_root if data_root is not None else config.data_root)
    out_dir = Path(out) if out is not None else run_dir / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "checkpoint": str(checkpoint if checkpoint.is_file() else checkpoint / CHECKPOINT_NAME),
        "recipe": config.recipe, "dataset": config.dataset, "epochs_trained": ev.epoch, "data_root": str(root),
        "skipped": {},
    }  # fmt: skip
    clean = ev.predict(ev.test_loader(root, config.classes))
    report["clean"] = _classification(clean)
    report["shift"] = _shift_sets(ev, root, report["skipped"])
    report["corruption_files"] = _corruption_files(ev, root, report["skipped"])
    report["corruptions"] = _on_the_fly(ev, root, corruptions, severities)
    id_scores = max_softmax(clean.logits)
    report["ood"] = _ood(ev, root, id_scores, ood_folders or {}, noise_images, report["skipped"])
    if embedding:
        report["embedding"] = _embedding(ev, root, out_dir, report["skipped"])
    report = json_safe(report)
    (out_dir / "eval.json").write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    (out_dir / "eval.md").write_text(to_markdown(report))
    return report


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


def _shift_sets(ev: Evaluator, root: Path, skipped: dict[str, str]) -> dict[str, Any]:
    if ev.config.train_set.num_classes != 10 or ev.config.classes:
        return {}
    results = {}
    folder = _first_dir(root, (".", "cifar10.1", "CIFAR-10.1"), "cifar10.1_v6_data.npy")
    if folder is None:
        skipped["cifar10.1"] = f"cifar10.1_v6_data.npy + cifar10.1_v6_labels.npy not found in {root} or {root}/cifar10.1"
    else:
        loader = make_loader("cifar10.1", folder, "test", ev.batch_size, ev.device, shuffle=False)
        results["cifar10.1"] = _classification(ev.predict(loader))
    folder = _first_dir(root, (".", "cifar10.2", "CIFAR-10.2"), "cifar102_test.npz")
    if folder is None:
        skipped["cifar10.2"] = f"cifar102_test.npz not found in {root} or {root}/cifar10.2"
    else:
        loader = make_loader("cifar10.2", folder, "test", ev.batch_size, ev.device, shuffle=False)
        results["cifar10.2"] = _classification(ev.predict(loader))
    return results


def _corruption_files(ev: Evaluator, root: Path, skipped: dict[str, str]) -> dict[str, Any]:
    k = ev.config.train_set.num_classes
    if ev.config.classes or k not in (10, 100):
        return {}
    name = "CIFAR-10-C" if k == 10 else "CIFAR-100-C"
    folder = _first_dir(root, (name, name.lower()), "labels.npy")
    if folder is None:
        skipped[name] = f"{name}/labels.npy not found in {root}"
        return {}
    per = {}
    for corruption in cifar_c_corruptions(folder):
        per[corruption] = [
            accuracy(*ev.predict(ev.arrays(read_cifar_c(folder, corruption, s, k)))[:2]) for s in range(1, 6)
        ]
    return {name: _corruption_summary(per)} if per else {}


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


def _on_the_fly(ev: Evaluator, root: Path, corruptions: tuple[str, ...], severities: tuple[int, ...]) -> dict[str, Any]:
    if not corruptions:
        return {}
    loader = ev.test_loader(root, ev.config.classes)
    per = {}
    for name in corruptions:
        per[name] = []
        for s in severities:
            pred = ev.predict(loader, transform=lambda x, n=name, s=s: corrupt(x, n, s, ev.generator))
            per[name].append(accuracy(pred.logits, pred.labels))
    return {**_corruption_summary(per), "severities": list(severities)}


def _ood(
    ev: Evaluator,
    root: Path,
    id_scores: torch.Tensor,
    folders: dict[str, str | Path],
    noise_images: int,
    skipped: dict[str, str],
) -> dict[str, Any]:
    sources: dict[str, Batches] = {}
    svhn = _first_dir(root, (".", "svhn", "SVHN"), "test_32x32.mat")
    if svhn is None:
        skipped["svhn"] = f"test_32x32.mat not found in {root} or {root}/svhn"
    else:
        sources["svhn"] = make_loader("svhn", svhn, "test", ev.batch_size, ev.device, shuffle=False)
    found = {n: root / d for n, d in (("lsun", "LSUN"), ("lsun-resize", "LSUN_resize")) if (root / d).is_dir()}
    if not found:
        skipped["lsun"] = f"no LSUN/ or LSUN_resize/ image folder in {root}"
    for name, folder in {**found, **{n: Path(f) for n, f in folders.items()}}.items():
        try:
            sources[name] = make_loader("imagefolder", folder.parent, folder.name, ev.batch_size, ev.device,
                                        shuffle=False, image_size=ev.config.train_set.image_size)  # fmt: skip
        except DatasetNotFoundError as err:
            raise DatasetNotFoundError(name, folder, ["<subfolder>/<image>.jpg|.png"], hint=str(err)) from err
    held_out = tuple(c for c in range(ev.config.train_set.num_classes) if c not in ev.config.classes)
    if ev.config.classes:
        sources["held-out classes"] = ev.test_loader(root, held_out)
    sources.update(_noise_sets(ev, noise_images))
    results = {}
    for name, batches in sources.items():
        scores = max_softmax(ev.predict(batches).logits)
        results[name] = {"auroc": auroc(id_scores, scores), "fpr95": fpr_at_tpr(id_scores, scores),
                         "images": scores.numel()}  # fmt: skip
    if ev.config.classes:
        results["held-out classes"]["classes"] = list(held_out)
    return results


def _noise_sets(ev: Evaluator, n: int) -> dict[str, Batches]:
    if n <= 0:
        return {}
    side, g, dev = ev.config.train_set.image_size, ev.generator, ev.device
    shape = (n, side, side, 3)
    uniform = torch.randint(0, 256, shape, dtype=torch.uint8, device=dev, generator=g)
    gaussian = torch.randn(shape, device=dev, generator=g) * GAUSSIAN_NOISE_STD + GAUSSIAN_NOISE_MEAN
    gaussian = (gaussian.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    labels = torch.zeros(n, dtype=torch.int64)
    k = ev.config.num_classes
    return {
        "uniform noise": ev.arrays(ArrayDataset("uniform-noise", uniform.cpu(), labels, k)),
        "gaussian noise": ev.arrays(ArrayDataset("gaussian-noise", gaussian.cpu(), labels, k)),
    }


def _embedding(ev: Evaluator, root: Path, out_dir: Path, skipped: dict[str, str]) -> dict[str, Any]:
    """Fig. 3 for the model's classes 0 and 1: pairs of their first test images."""
    loader = ev.test_loader(root, ev.config.classes)
    images, labels = (torch.cat(t) for t in zip(*_take(loader, ev.max_images)))
    n = min(int((labels == 0).sum()), int((labels == 1).sum()), EMBEDDING_PAIRS)
    if n < 2:
        skipped["embedding"] = "fewer than 2 test images in class 0 or 1"
        return {}
    feats = mixed_features(ev.model, images[labels == 0][:n], images[labels == 1][:n], ev.cfg, amp_dtype=ev.amp_dtype)
    names = ev.config.classes[:2] or (0, 1)
    path = out_dir / "embedding.png"
    try:
        method = save_embedding_png(feats, path, f"{ev.config.recipe}: classes {names[0]} and {names[1]}")
    except ImportError:
        skipped["embedding.png"] = "Pillow is not installed (pip install pillow)"
        path, method = None, None
    return {"png": str(path) if path else None, "method": method, "pairs": n, "classes": list(names),
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
        caption = f"Embedding ({emb['method']}, {emb['pairs']} pairs of classes {emb['classes']}): `{emb['png']}`"
        lines += ["", f"{caption}; equivariance gap {gaps}"]
    if report["skipped"]:
        lines += ["", "Not evaluated:"] + [f"- {k}: {v}" for k, v in report["skipped"].items()]
    return "\n".join(lines) + "\n"
