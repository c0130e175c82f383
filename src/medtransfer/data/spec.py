"""What a dataset is to the toolkit: :class:`DatasetSpec` (data, not code paths).

Each source module in ``data/sources/`` defines its dataset's spec next to its reader;
``data/catalog.py`` lists them. The synthetic writers live in ``data/synth/`` and are
found by dataset name (``data/synth/writers.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from PIL import Image

from medtransfer.data.images import load_image
from medtransfer.data.sources.base import LabelOptions, SourceTable, ViewPairs
from medtransfer.protocols.metrics import ACCURACY as ACCURACY
from medtransfer.protocols.metrics import MEAN_PER_CLASS_ACCURACY as MEAN_PER_CLASS_ACCURACY


@dataclass(frozen=True)
class DatasetSpec:
    """What the toolkit knows about one dataset.

    ``folder`` is its folder under the data root (the original's ``./data/<folder>``);
    ``patients`` says where patient ids come from ("" when the data has none);
    ``few_shot_resize`` is the resize geometry the original's few-shot used for it
    (``square``: ``Resize([257, 257])`` then centre crop; ``shorter``: shorter side).
    ``read(root, labels)`` reads the published layout; ``load(path)`` decodes one item to
    an RGB image (files by default; a volume slice or an array inside a batch file for
    datasets that need it);
    ``label_options`` names the :class:`LabelOptions` fields the dataset uses;
    ``check_original(root)`` raises when the original's split cannot be made from the data
    at ``root`` (CheXpert's literal cut needs more than 134,049 rows);
    ``download(folder, progress)`` fetches the dataset into ``folder`` (a cache folder) for
    datasets that can be downloaded without a login; ``source_url`` says where to get it;
    ``orientations`` names the item decoders of a dataset that can be shown more than one
    way (STOIC: ``radiological``, the default and first, and ``original``, the original's
    transposed slice), picked by ``--stoic-orientation``; ``view_pairs(table)`` pairs the
    rows of a manifest table that show one subject in two views (CheXpert: lateral and
    frontal of a study; EyePACS: left and right eye), for the multi-view invariance.
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
    load: Callable[[Path], Image.Image] = load_image
    label_options: tuple[str, ...] = ()
    check_original: Callable[[Path], None] | None = None
    download: Callable[[Path, bool], Path] | None = None
    source_url: str = ""
    description: str = ""
    orientations: Mapping[str, Callable[[Path], Image.Image]] = field(default_factory=dict)
    view_pairs: Callable[[pd.DataFrame], ViewPairs] | None = None


@dataclass(frozen=True)
class ResolvedDataset:
    """A spec bound to the folder it is read from."""

    spec: DatasetSpec
    root: Path
