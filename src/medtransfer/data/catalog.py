"""Dataset catalog: name -> spec (aliases, classes, metric, layout reader).

Adding a dataset means one source module under ``data/sources/`` plus one entry here (and,
for ``medtransfer datasets synth``, one writer under ``data/synth/`` plus its entry in
``data/synth/writers.py``).
Besides the catalog names, ``imagefolder:PATH`` and ``csv:PATH`` name the user's own data
everywhere a dataset name is accepted.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from medtransfer.data.sources import (
    bach,
    chestx,
    chexpert,
    cifar,
    eyepacs,
    ichallenge_amd,
    ichallenge_pm,
    stoic,
    tb_cxr,
)
from medtransfer.data.sources.base import LabelOptions, SourceTable
from medtransfer.data.sources.user import read_user_csv, scan_imagefolder
from medtransfer.data.spec import ACCURACY, DatasetSpec, ResolvedDataset
from medtransfer.errors import DatasetError

# One entry per source module; each module defines its datasets' specs as ``SPECS``.
CATALOG: tuple[DatasetSpec, ...] = (
    *tb_cxr.SPECS,
    *chexpert.SPECS,
    *chestx.SPECS,
    *eyepacs.SPECS,
    *ichallenge_amd.SPECS,
    *ichallenge_pm.SPECS,
    *bach.SPECS,
    *stoic.SPECS,
    *cifar.SPECS,
)


def _normalise(name: str) -> str:
    return name.strip().lower().replace(" ", "")


def get_dataset_spec(name: str) -> DatasetSpec:
    """The catalog entry for ``name`` or one of its aliases (case-insensitive)."""
    key = _normalise(name)
    for spec in CATALOG:
        if key == spec.name or key in spec.aliases:
            return spec
    known = ", ".join(spec.name for spec in CATALOG)
    raise DatasetError(
        f"Unknown dataset {name!r}. Known datasets: {known}; or your own data as "
        "imagefolder:PATH or csv:PATH. `medtransfer datasets list` shows them all."
    )


def downloaded_folder(cache_root: Path, spec: DatasetSpec) -> Path:
    """Where ``datasets download`` keeps a dataset (in the cache, never the data root)."""
    return cache_root / "datasets" / spec.folder


def resolve_dataset(name: str, data_root: Path, cache_root: Path | None = None) -> ResolvedDataset:
    """Bind a dataset name (catalog name, alias, ``imagefolder:`` or ``csv:``) to its folder.

    A catalog dataset is read from ``<data_root>/<folder>``; when that is missing and
    ``datasets download`` put a copy in the cache, the copy is read.
    """
    if name.startswith("imagefolder:"):
        root = Path(name.split(":", 1)[1]).expanduser().resolve()
        classes, source = scan_imagefolder(root)
        spec = _user_spec(name, root.name, classes, lambda _root, _labels: source)
        return ResolvedDataset(spec, root)
    if name.startswith("csv:"):
        csv_path = Path(name.split(":", 1)[1]).expanduser().resolve()
        root, classes, source = read_user_csv(csv_path)
        has_patients = bool((source.table["patient"] != "").any())
        spec = _user_spec(name, csv_path.stem, classes, lambda _root, _labels: source, has_patients)
        return ResolvedDataset(spec, root)
    spec = get_dataset_spec(name)
    folder = data_root / spec.folder
    if not folder.is_dir() and cache_root is not None:
        downloaded = downloaded_folder(cache_root, spec)
        if downloaded.is_dir():
            return ResolvedDataset(spec, downloaded)
    return ResolvedDataset(spec, folder)


def _user_spec(
    name: str,
    title: str,
    classes: tuple[str, ...],
    read: Callable[[Path, LabelOptions], SourceTable],
    has_patients: bool = False,
) -> DatasetSpec:
    return DatasetSpec(
        name=name,
        title=f"user data {title}",
        aliases=(),
        folder="",
        class_names=classes,
        metric=ACCURACY,
        patients="the CSV's patient column" if has_patients else "",
        few_shot_resize="shorter",
        read=read,
    )


def dataset_key(spec: DatasetSpec) -> str:
    """A file-system-safe name for a dataset (used for cache and results folders)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in spec.name.replace(":", "-"))
    return safe.strip("_") or "dataset"
