"""The paper's Fig. 3: penultimate features of clean and mixed samples of two classes, in 2-D.

Pairs ``(x_i, x_j)`` with ``x_i`` from class ``a`` and ``x_j`` from class ``b`` are mixed by
mixup at several ratios ``lam`` (``lam = 1``: the clean ``x_i``, ``lam = 0``: the clean
``x_j``). A semantically equivariant encoder maps ``mix(x_i, x_j, lam)`` near
``lam * g(x_i) + (1 - lam) * g(x_j)``; `equivariance_gap` measures the distance to that target
and the figure shows both. The 2-D projection is UMAP when ``umap-learn`` is installed, else
PCA; the figure (PNG + SVG) is drawn with matplotlib (`sem_fast.figure`, extra ``plots``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from sem_fast.config import SEMConfig
from sem_fast.figure import new_figure, save_figure
from sem_fast.train.inference import prepare

#: Mixing ratios of the figure (``lam`` = weight of class ``a``'s image).
LAMBDAS = (0.0, 0.25, 0.5, 0.75, 1.0)
#: Colours of lam from 0 (class b, blue) to 1 (class a, red), at equal steps (the ratios of
#: `LAMBDAS` get one each) and blended in between: distinct hues that all show on white (a plain
#: blue-red blend made the mixtures three similar purples, coolwarm's middle is near-white).
COLOURS = ("tab:blue", "tab:cyan", "tab:purple", "tab:orange", "tab:red")


class MixedFeatures(NamedTuple):
    """Features of the mixed pairs.

    Attributes:
        lambdas: the ratios, ``(L,)`` float32.
        mixed: ``(L, P, D) float32``: ``g(lam * x_i + (1 - lam) * x_j)`` for ``P`` pairs.
        targets: ``(L, P, D) float32``: ``lam * g(x_i) + (1 - lam) * g(x_j)``.
    """

    lambdas: torch.Tensor
    mixed: torch.Tensor
    targets: torch.Tensor


@torch.no_grad()
def mixed_features(
    model: nn.Module,
    images_a: torch.Tensor,
    images_b: torch.Tensor,
    cfg: SEMConfig,
    lambdas: tuple[float, ...] = LAMBDAS,
    amp_dtype: torch.dtype | None = None,
) -> MixedFeatures:
    """Features of mixup pairs of ``images_a`` and ``images_b`` (both ``(P, H, W, C) uint8``)."""
    if images_a.shape != images_b.shape:
        raise ValueError(f"images_a and images_b must pair up, got {tuple(images_a.shape)} and {tuple(images_b.shape)}")
    was_training = model.training
    model.eval()
    try:
        x_a, x_b = prepare(images_a, cfg), prepare(images_b, cfg)
        mixed = []
        for lam in lambdas:
            with torch.autocast(x_a.device.type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
                mixed.append(model.encode(lam * x_a + (1.0 - lam) * x_b).float())
    finally:
        model.train(was_training)
    lam_t = torch.tensor(lambdas, device=x_a.device)
    mixed_t = torch.stack(mixed)
    g_a, g_b = mixed_t[lambdas.index(1.0)], mixed_t[lambdas.index(0.0)]
    targets = lam_t.view(-1, 1, 1) * g_a + (1.0 - lam_t.view(-1, 1, 1)) * g_b
    return MixedFeatures(lam_t, mixed_t, targets)


def equivariance_gap(features: MixedFeatures) -> dict[float, float]:
    """Per ``lam``: ``mean ||g(x~) - target||^2 / mean ||g(x_i) - g(x_j)||^2`` (0 = equivariant;
    0 at ``lam`` in {0, 1} by construction)."""
    scale = (features.mixed[-1] - features.mixed[0]).pow(2).sum(1).mean().clamp_min(1e-12)
    gaps = (features.mixed - features.targets).pow(2).sum(2).mean(1) / scale
    return {round(float(lam), 4): float(gap) for lam, gap in zip(features.lambdas, gaps)}


def project_2d(points: torch.Tensor) -> tuple[torch.Tensor, str]:
    """``(N, D)`` -> ``((N, 2) float32 on the CPU, method)``, method ``'umap'`` or ``'pca'``."""
    x = points.detach().float().cpu()
    try:
        import umap
    except ImportError:
        centred = x - x.mean(0)
        _, _, vh = torch.linalg.svd(centred, full_matrices=False)
        return centred @ vh[:2].T, "pca"
    return torch.from_numpy(umap.UMAP(n_components=2, random_state=0).fit_transform(x.numpy())).float(), "umap"


def save_embedding_figure(features: MixedFeatures, stem: Path, class_names: tuple[str, str], title: str) -> str:
    """Draw `embedding_figure` to ``<stem>.png`` / ``.svg``; returns the projection method."""
    fig, method = embedding_figure(features, class_names, title)
    save_figure(fig, stem)
    return method


def embedding_figure(features: MixedFeatures, class_names: tuple[str, str], title: str) -> tuple[Any, str]:
    """``(figure, projection method)``: the 2-D projection of the mixed features (filled dots)
    and of their equivariant targets (rings, for 0 < lam < 1), coloured by ``lam``, with a thin
    line from each mixed feature to its target (its length is the equivariance gap of that pair
    in the projection); ``class_names``: classes a (lam = 1) and b (lam = 0). Needs matplotlib
    (extra ``plots``)."""
    L, P, _ = features.mixed.shape
    flat = torch.cat([features.mixed.reshape(L * P, -1), features.targets.reshape(L * P, -1)])
    xy, method = project_2d(flat)
    mixed, targets = xy[: L * P].reshape(L, P, 2), xy[L * P :].reshape(L, P, 2)
    lambdas = features.lambdas.tolist()
    fig = new_figure(7.5, 6.0)
    ax = fig.add_subplot()
    from matplotlib.colors import LinearSegmentedColormap

    cmap = LinearSegmentedColormap.from_list("lambda", COLOURS)
    for i, lam in enumerate(lambdas):
        colour = cmap(lam)
        if 0 < lam < 1:
            for (x0, y0), (x1, y1) in zip(mixed[i].tolist(), targets[i].tolist()):
                ax.plot([x0, x1], [y0, y1], color=colour, linewidth=0.4, alpha=0.35)
            ax.scatter(targets[i, :, 0], targets[i, :, 1], s=22, facecolors="none", edgecolors=[colour], linewidths=0.9)
        ax.scatter(mixed[i, :, 0], mixed[i, :, 1], s=10, color=colour, label=_lambda_label(lam, class_names))
    ax.scatter([], [], s=10, color="0.4", label="dot: g(λ·a + (1−λ)·b), features of the mixed image")
    ax.scatter([], [], s=22, facecolors="none", edgecolors="0.4",
               label="ring: λ·g(a) + (1−λ)·g(b), its equivariant target")  # fmt: skip
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncols=2, frameon=False)
    axis = "UMAP" if method == "umap" else "PC"
    ax.set_xlabel(f"{axis} 1")
    ax.set_ylabel(f"{axis} 2")
    ax.set_title(f"{title}\n{method.upper()} of the penultimate features of {P} pairs", fontsize=10)
    return fig, method


def _lambda_label(lam: float, names: tuple[str, str]) -> str:
    if lam == 1:
        return f"λ = 1: clean {names[0]}"
    if lam == 0:
        return f"λ = 0: clean {names[1]}"
    return f"λ = {lam:g}: {lam:g}·{names[0]} + {1 - lam:g}·{names[1]}"
