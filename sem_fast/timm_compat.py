"""timm's ``Mixup`` arguments in sem_fast terms: the mapping behind `SEMConfig.from_timm`.

A leaf module (no sem_fast imports, so `sem_fast.config` can use it). Each argument of
``timm.data.Mixup`` (timm 1.0.x) is mapped to `SEMConfig` fields or refused by name:

| timm ``Mixup`` argument | SEMConfig |
| --- | --- |
| ``mixup_alpha``, ``cutmix_alpha`` (0 = off) | ``mix`` (``'switch'`` with both on), ``alpha``, ``cutmix_alpha`` |
| ``prob`` | ``mix_prob`` |
| ``switch_prob`` | ``switch_prob`` (with both on) |
| ``mode`` ``'batch'``/``'elem'`` | ``lam_mode``; partners as timm's: ``pairing='flip'`` (sample ``b`` with ``B-1-b``) |
| ``mode='pair'`` | refused: one lambda per pair with both samples mixed is not a sem_fast draw |
| ``correct_lam`` | ``correct_lam`` |
| ``label_smoothing`` | ``label_smoothing`` (timm's default 0.1 included) |
| ``num_classes`` | checked, not stored: sem_fast takes K from the logits (`soft_targets` takes it) |
| ``cutmix_minmax`` | refused unless None: sem_fast's boxes follow the CutMix paper (timm's default) |
| ``multi_label`` | refused unless False: the SEM loss is single-label cross-entropy |
"""

from __future__ import annotations

import numbers
from typing import Any

#: ``timm.data.Mixup``'s arguments and their defaults (timm 1.0.x).
TIMM_MIXUP_DEFAULTS: dict[str, Any] = {
    "mixup_alpha": 1.0, "cutmix_alpha": 0.0, "cutmix_minmax": None, "prob": 1.0, "switch_prob": 0.5,
    "mode": "batch", "correct_lam": True, "label_smoothing": 0.1, "num_classes": 1000, "multi_label": False,
}  # fmt: skip

#: SEMConfig fields that timm's arguments decide: ``from_timm`` takes the timm argument instead.
FIELDS_SET_BY_TIMM: tuple[str, ...] = (
    "mix", "alpha", "cutmix_alpha", "switch_prob", "mix_prob", "lam_mode", "correct_lam", "label_smoothing",
)  # fmt: skip


def _real(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"timm Mixup argument {name} must be a number, got {value!r}")
    return float(value)


def timm_mixup_fields(**timm_kwargs: Any) -> dict[str, Any]:
    """SEMConfig fields that draw and mix as ``timm.data.Mixup(**timm_kwargs)`` does.

    Arguments not given take timm's defaults. Raises ``TypeError`` for a name that is not a timm
    ``Mixup`` argument, ``ValueError`` naming the argument for a value sem_fast cannot honour
    (``mode='pair'``, ``cutmix_minmax``, ``multi_label=True``, negative alphas, both alphas 0).
    """
    unknown = sorted(set(timm_kwargs) - set(TIMM_MIXUP_DEFAULTS))
    if unknown:
        raise TypeError(f"{unknown} are not arguments of timm's Mixup (those are {list(TIMM_MIXUP_DEFAULTS)})")
    args = {**TIMM_MIXUP_DEFAULTS, **timm_kwargs}
    if args["multi_label"] is not False:
        raise ValueError(
            f"multi_label={args['multi_label']!r} is not supported: the SEM loss is a single-label cross-entropy"
        )
    if args["cutmix_minmax"] is not None:
        raise ValueError(
            f"cutmix_minmax={args['cutmix_minmax']!r} is not supported: sem_fast draws CutMix boxes as the CutMix "
            "paper does (side sqrt(1 - lam) of the image, lam ~ Beta(cutmix_alpha)), timm's default with "
            "cutmix_minmax=None; timm's min/max boxes (uniform sides, lam from the area) have no sem_fast draw"
        )
    if args["mode"] == "pair":
        raise ValueError(
            "mode='pair' is not supported: it draws one lambda per pair (b, B-1-b) and mixes both samples of the "
            "pair with it; use mode='elem' (one lambda per sample, the same partners) or mode='batch'"
        )
    if args["mode"] not in ("batch", "elem"):
        raise ValueError(f"mode must be 'batch', 'elem' (or timm's 'pair', refused), got {args['mode']!r}")
    mixup_alpha, cutmix_alpha = _real("mixup_alpha", args["mixup_alpha"]), _real("cutmix_alpha", args["cutmix_alpha"])
    for name, value in (("mixup_alpha", mixup_alpha), ("cutmix_alpha", cutmix_alpha)):
        if value < 0:
            raise ValueError(f"{name} must be >= 0 (0 turns it off, as in timm), got {value}")
    if mixup_alpha == 0 and cutmix_alpha == 0:
        raise ValueError(
            "mixup_alpha=0 and cutmix_alpha=0 turn both mixings off (timm's Mixup then fails on its first batch); "
            "for training without mixing use SEMConfig(mix='none')"
        )
    num_classes = args["num_classes"]
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be an int >= 1, got {num_classes!r}")
    if not isinstance(args["correct_lam"], bool):
        raise TypeError(f"correct_lam must be a bool, got {args['correct_lam']!r}")
    fields: dict[str, Any] = {
        "mix_prob": _real("prob", args["prob"]),
        "lam_mode": args["mode"],
        "pairing": "flip",
        "correct_lam": args["correct_lam"],
        "label_smoothing": _real("label_smoothing", args["label_smoothing"]),
    }
    if mixup_alpha > 0 and cutmix_alpha > 0:
        fields.update(mix="switch", alpha=mixup_alpha, cutmix_alpha=cutmix_alpha,
                      switch_prob=_real("switch_prob", args["switch_prob"]))  # fmt: skip
    elif mixup_alpha > 0:
        fields.update(mix="mixup", alpha=mixup_alpha)
    else:
        fields.update(mix="cutmix", cutmix_alpha=cutmix_alpha)
    return fields
