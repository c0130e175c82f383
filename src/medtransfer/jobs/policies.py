"""The policies in force in a run, in words: printed before its result and recorded under
``policies`` in its record, so that a number never depends on a choice nobody was told of.

Each function returns one sentence (no trailing full stop) for one policy: how labels were
made, which resize geometry fed the backbone (and why another protocol extracts again),
where the pixels came from, which rows few-shot episodes were drawn from. This module
imports no torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medtransfer.data.sources.ichallenge_amd import AMD_CSV
from medtransfer.data.sources.ichallenge_pm import PM_CSV
from medtransfer.data.spec import DatasetSpec

_UNCERTAIN = {
    "positive": "count as positive (U-Ones: the original's few-shot and finetune_auc.py)",
    "negative": "count as negative (U-Zeros: what the original's linear and fine-tuning did)",
    "ignore": "are left out",
}
_PM_POSITIVE = {
    "P": "pathological myopia (P) is positive, high myopia (H) negative",
    "HP": "high (H) and pathological (P) myopia are positive",
}


def label_policy(spec: DatasetSpec, label_policy: dict[str, Any]) -> str | None:
    """How the labels of ``spec`` were made under the manifest's ``label_policy``
    (``{"uncertain": ...}``, ``{"pm_positive": ...}``); None for a dataset without choices."""
    parts = []
    if "uncertain" in label_policy:
        value = label_policy["uncertain"]
        parts.append(f"uncertain (-1) findings {_UNCERTAIN[value]} (--uncertain {value})")
    if "pm_positive" in label_policy:
        value = label_policy["pm_positive"]
        parts.append(f"{_PM_POSITIVE[value]} (--pm-positive {value})")
    return "; ".join(parts) or None


def resize_policy(
    spec: DatasetSpec, image_size: int, resize: str, side: int, *, protocol: str
) -> str:
    """The geometry images were resized with, and why another protocol extracts again."""
    if resize == "square":
        how = f"square: {side}x{side} bilinear (aspect not kept), centre crop {image_size}"
    else:
        how = f"shorter side to {side} bicubic (aspect kept), centre crop {image_size}"
    if protocol == "few-shot":
        source = (
            f"the original's few-shot geometry for {spec.name}"
            if resize == spec.few_shot_resize
            else f"given (the original's few-shot used {spec.few_shot_resize} here)"
        )
        other = (
            "; linear, kNN and fine-tuning resize by the shorter side, so their features "
            "are extracted separately"
            if resize == "square"
            else ""
        )
    else:
        source = "the original's linear and fine-tuning geometry"
        other = (
            f"; few-shot on {spec.name} resizes square (the original's few-shot geometry), so "
            "its features are a separate extraction"
            if spec.few_shot_resize == "square"
            else ""
        )
    return f"{how} ({source}){other}"


def pixels_policy(pixels: dict[str, Any], folder: str = "") -> str:
    """Where the images were decoded from (``pixels``: a pixel source's ``describe``)."""
    if pixels.get("pixels") != "prepared":
        reason = pixels.get("reason")
        return "the original files" + (f" ({reason})" if reason else "")
    where = f" in {folder}" if folder else ""
    return (
        f"pre-resized copies (`datasets prepare`, shorter side {pixels['size']} px){where}, "
        "NOT the original files; --no-prepared reads the originals"
    )


#: The custom CSVs whose row order the original's split followed
#: (docs/original-study.md#dataset-ichallenge-amd, #dataset-ichallenge-pm).
ORDER_FILES = {"ichallenge_amd": AMD_CSV, "ichallenge_pm": PM_CSV}


def row_order_policy(spec: DatasetSpec, root: Path) -> str | None:
    """Whose row order the original split of an iChallenge set follows; None elsewhere."""
    name = ORDER_FILES.get(spec.name)
    if name is None:
        return None
    if (root / name).is_file():
        return f"the order of {name}, as the original read it"
    return (
        f"sorted file names: {name} (the original's custom CSV) is absent, so --split-policy "
        "original applies the original's rule to other rows than the original's"
    )


def orientation_policy(orientation: str) -> str:
    """STOIC's slice orientation."""
    if orientation == "original":
        return "the original's transposed medpy slice (rows = x; docs/original-study.md#defect-d27)"
    return "radiological (anterior up, the patient's right on the image's left)"


def notes(policies: dict[str, str]) -> list[str]:
    """The printed lines of ``policies`` (name -> sentence), in order."""
    return [f"{name}: {sentence}" for name, sentence in policies.items()]
