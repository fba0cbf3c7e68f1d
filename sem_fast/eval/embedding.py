"""The paper's Fig. 3: penultimate features of clean and mixed samples of two classes, in 2-D.

Pairs ``(x_i, x_j)`` with ``x_i`` from class ``a`` and ``x_j`` from class ``b`` are mixed by
mixup at several ratios ``lam`` (``lam = 1``: the clean ``x_i``, ``lam = 0``: the clean
``x_j``). A semantically equivariant encoder maps ``mix(x_i, x_j, lam)`` near
``lam * g(x_i) + (1 - lam) * g(x_j)``; `equivariance_gap` measures the distance to that target
and the figure shows both. The 2-D projection is UMAP when ``umap-learn`` is installed, else
PCA; the PNG is drawn with Pillow (`sem_fast.figure`, no matplotlib needed).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from sem_fast.config import SEMConfig
from sem_fast.figure import Figure
from sem_fast.train.inference import prepare

#: Mixing ratios of the figure (``lam`` = weight of class ``a``'s image).
LAMBDAS = (0.0, 0.25, 0.5, 0.75, 1.0)
# Marker colours from class b (lam = 0, blue) to class a (lam = 1, red).
_COLOURS = ((31, 119, 180), (23, 190, 207), (140, 140, 140), (255, 127, 14), (214, 39, 40))


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


def save_embedding_png(features: MixedFeatures, path: str | Path, title: str) -> str:
    """Draw the 2-D projection of mixed features (filled dots) and their equivariant targets
    (rings) to ``path``; returns the projection method. Needs Pillow."""
    L, P, _ = features.mixed.shape
    flat = torch.cat([features.mixed.reshape(L * P, -1), features.targets.reshape(L * P, -1)])
    xy, method = project_2d(flat)
    lo, hi = xy.min(0).values.tolist(), xy.max(0).values.tolist()
    legend = [(f"lam={lam:g}", _COLOURS[i % len(_COLOURS)]) for i, lam in enumerate(features.lambdas.tolist())]
    figure = Figure(f"{title} ({method.upper()}; dots: g(mix), rings: lam*g(a)+(1-lam)*g(b))",
                    xlim=(lo[0], hi[0]), ylim=(lo[1], hi[1]), legend=legend)  # fmt: skip
    for k in range(L * P):
        colour = _COLOURS[k // P % len(_COLOURS)]
        figure.dot(*xy[k].tolist(), colour)
        if 0 < features.lambdas[k // P] < 1:
            figure.ring(*xy[L * P + k].tolist(), colour)
    figure.save(path)
    return method
