"""Dataset catalog: name -> spec (aliases, classes, metric, layout reader, synthetic writer).

Adding a dataset means one source module under ``data/sources/`` plus one entry here.
Besides the catalog names, ``imagefolder:PATH`` and ``csv:PATH`` name the user's own data
everywhere a dataset name is accepted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from medtransfer.data.images import load_image
from medtransfer.data.sources.base import LabelOptions, SourceTable
from medtransfer.data.sources.tb_cxr import CLASS_NAMES as TB_CLASSES
from medtransfer.data.sources.tb_cxr import (
    read_montgomery,
    read_shenzhen,
    synth_montgomery,
    synth_shenzhen,
)
from medtransfer.data.sources.user import read_user_csv, scan_imagefolder
from medtransfer.data.synthetic import SynthOptions
from medtransfer.errors import DatasetError

ACCURACY = "accuracy"
MEAN_PER_CLASS_ACCURACY = "mean per-class accuracy"


@dataclass(frozen=True)
class DatasetSpec:
    """What the toolkit knows about one dataset.

    ``folder`` is its folder under the data root (the original's ``./data/<folder>``);
    ``patients`` says where patient ids come from ("" when the data has none);
    ``few_shot_resize`` is the resize geometry the original's few-shot used for it
    (``square``: ``Resize([257, 257])`` then centre crop; ``shorter``: shorter side).
    ``read(root, labels)`` reads the published layout; ``synth(root, options)`` writes a
    small tree in it; ``load(path)`` decodes one item to an RGB image (files by default;
    a volume slice or an array inside a batch file for datasets that need it);
    ``label_options`` names the :class:`LabelOptions` fields the dataset uses.
    """

    name: str
    title: str
    aliases: tuple[str, ...]
    folder: str
    class_names: tuple[str, ...]
    metric: str
    patients: str
    few_shot_resize: str
    read: Callable[[Path, LabelOptions], SourceTable]
    synth: Callable[[Path, SynthOptions], None] | None = None
    load: Callable[[Path], Image.Image] = load_image
    label_options: tuple[str, ...] = ()
    description: str = ""


@dataclass(frozen=True)
class ResolvedDataset:
    """A spec bound to the folder it is read from."""

    spec: DatasetSpec
    root: Path


CATALOG: tuple[DatasetSpec, ...] = (
    DatasetSpec(
        name="shenzhencxr",
        title="Shenzhen chest X-ray (tuberculosis)",
        aliases=("shenzhen", "shenzhen-cxr", "shenzhen_cxr"),
        folder="shenzhencxr",
        class_names=TB_CLASSES,
        metric=ACCURACY,
        patients="one image per patient (file name CHNCXR_NNNN)",
        few_shot_resize="square",
        read=read_shenzhen,
        synth=synth_shenzhen,
        description="662 frontal CXRs from Shenzhen No.3 People's Hospital; normal vs TB.",
    ),
    DatasetSpec(
        name="montgomerycxr",
        title="Montgomery County chest X-ray (tuberculosis)",
        aliases=("montgomery", "montgomery-cxr", "montgomery_cxr"),
        folder="montgomerycxr",
        class_names=TB_CLASSES,
        metric=ACCURACY,
        patients="one image per patient (file name MCUCXR_NNNN)",
        few_shot_resize="square",
        read=read_montgomery,
        synth=synth_montgomery,
        description="138 frontal CXRs from Montgomery County, Maryland; normal vs TB.",
    ),
)

USER_PREFIXES = ("imagefolder:", "csv:")


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


def resolve_dataset(name: str, data_root: Path) -> ResolvedDataset:
    """Bind a dataset name (catalog name, alias, ``imagefolder:`` or ``csv:``) to its folder."""
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
    return ResolvedDataset(spec, data_root / spec.folder)


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
