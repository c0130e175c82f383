"""Which writer draws which catalog dataset, and :func:`synthesize`, the one entry point.

Adding a dataset's synthetic tree means one writer module in this package plus one entry
in :data:`WRITERS`, keyed by the dataset's catalog name.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from medtransfer.data.catalog import get_dataset_spec
from medtransfer.data.synth.bach import synth_bach
from medtransfer.data.synth.chestx import synth_chestx
from medtransfer.data.synth.chexpert import synth_chexpert
from medtransfer.data.synth.cifar import synth_cifar10, synth_cifar100
from medtransfer.data.synth.eyepacs import synth_diabetic_retinopathy
from medtransfer.data.synth.ichallenge_amd import synth_ichallenge_amd
from medtransfer.data.synth.ichallenge_pm import synth_ichallenge_pm
from medtransfer.data.synth.primitives import SynthOptions
from medtransfer.data.synth.stoic import synth_stoic
from medtransfer.data.synth.tb_cxr import synth_montgomery, synth_shenzhen
from medtransfer.errors import DatasetError

Writer = Callable[[Path, SynthOptions], None]

#: Catalog name -> writer of a small tree in that dataset's published layout.
WRITERS: dict[str, Writer] = {
    "shenzhencxr": synth_shenzhen,
    "montgomerycxr": synth_montgomery,
    "chexpert": synth_chexpert,
    "chestx": synth_chestx,
    "diabetic_retinopathy": synth_diabetic_retinopathy,
    "ichallenge_amd": synth_ichallenge_amd,
    "ichallenge_pm": synth_ichallenge_pm,
    "bach": synth_bach,
    "stoic": synth_stoic,
    "cifar10": synth_cifar10,
    "cifar100": synth_cifar100,
}


def synthesize(dataset: str, out_dir: Path, options: SynthOptions | None = None) -> Path:
    """Write a synthetic tree for ``dataset`` (name or alias) under ``out_dir/<folder>``.

    Returns that folder.

    Raises:
        DatasetError: an unknown dataset, or one without a writer.
    """
    spec = get_dataset_spec(dataset)
    writer = WRITERS.get(spec.name)
    if writer is None:
        available = ", ".join(WRITERS)
        raise DatasetError(f"No synthetic layout for {spec.name} yet; available: {available}.")
    root = Path(out_dir) / spec.folder
    writer(root, options or SynthOptions())
    return root
