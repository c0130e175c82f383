"""Every catalog dataset read from a tree typed here by hand from its published layout
(docs/datasets/<name>.md, docs/original-study.md#datasets): a few files and index rows
written literally, never by the project's own ``datasets synth`` writers, so a
misunderstanding of the layout shared by a reader and its writer shows up here.

Each test names the facts it checks: where the index sits and how its columns read, which
file each row points at, the label rule, the patient key, the original split where the
layout fixes it, and the decoded pixels where the format is unusual.
"""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medtransfer.data.catalog import CATALOG, resolve_dataset
from medtransfer.data.manifest import Manifest, build_manifest
from medtransfer.data.sources.base import LabelOptions


def _write(root: Path, files: dict[str, str | bytes | Image.Image]) -> Path:
    """Write ``files`` (relative path -> text, bytes or a Pillow image) under ``root``."""
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Image.Image):
            content.save(path)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root


def _gray(value: int = 128) -> Image.Image:
    return Image.new("L", (6, 5), value)


def _rgb() -> Image.Image:
    return Image.new("RGB", (6, 5), (200, 60, 40))


def _manifest(name: str, data: Path, **kwargs: object) -> Manifest:
    return build_manifest(resolve_dataset(name, data), **kwargs)


def _rows(manifest: Manifest) -> list[tuple[str, str, str]]:
    """(path, class name, patient) per row, in row order."""
    table = manifest.table
    return list(zip(table["path"], table["class_name"], table["patient"], strict=True))


# --- the tuberculosis chest X-ray sets -------------------------------------------------------


def test_shenzhen_kaggle_export(tmp_path: Path) -> None:
    """shenzhen_metadata.csv (study_id,sex,age,findings) beside ChinaSet_AllFiles/CXR_png;
    exact "normal" is class 0, anything else tuberculosis; 8-bit palette PNGs."""
    palette = Image.new("P", (6, 5), 1)
    palette.putpalette([0, 0, 0, 90, 90, 90] + [0] * 762)
    data = tmp_path / "data"
    _write(
        data / "shenzhencxr",
        {
            "shenzhen_metadata.csv": (
                "study_id,sex,age,findings\n"
                "CHNCXR_0001_0.png,Male,45yrs,normal\n"
                "CHNCXR_0002_0.png,Male,63yrs,normal\n"
                "CHNCXR_0327_1.png,Male,28yrs,PTB in the left upper field\n"
                'CHNCXR_0328_1.png,Female,35yrs,"STB,ATB"\n'
            ),
            "ChinaSet_AllFiles/CXR_png/CHNCXR_0001_0.png": palette,
            "ChinaSet_AllFiles/CXR_png/CHNCXR_0002_0.png": palette,
            "ChinaSet_AllFiles/CXR_png/CHNCXR_0327_1.png": palette,
            "ChinaSet_AllFiles/CXR_png/CHNCXR_0328_1.png": palette,
        },
    )
    manifest = _manifest("shenzhen", data)
    assert manifest.class_names == ("normal", "tuberculosis")
    assert _rows(manifest) == [
        ("ChinaSet_AllFiles/CXR_png/CHNCXR_0001_0.png", "normal", "CHNCXR_0001"),
        ("ChinaSet_AllFiles/CXR_png/CHNCXR_0002_0.png", "normal", "CHNCXR_0002"),
        ("ChinaSet_AllFiles/CXR_png/CHNCXR_0327_1.png", "tuberculosis", "CHNCXR_0327"),
        ("ChinaSet_AllFiles/CXR_png/CHNCXR_0328_1.png", "tuberculosis", "CHNCXR_0328"),
    ]
    assert manifest.problems == ()
    pixels = np.asarray(manifest.loader(manifest.root / manifest.table["path"][0]))
    assert pixels.shape == (5, 6, 3) and (pixels == 90).all()  # the palette colour


def test_montgomery_kaggle_export(tmp_path: Path) -> None:
    """montgomery_metadata.csv beside MontgomerySet/CXR_png; a near-miss "Normal " is
    tuberculosis under the original's rule, and reported; 16-bit PNGs are range-scaled."""
    depth = np.array([[0, 1000, 2000], [3000, 4000, 4095]], dtype=np.uint16)
    data = tmp_path / "data"
    _write(
        data / "montgomerycxr",
        {
            "montgomery_metadata.csv": (
                "study_id,sex,age,findings\n"
                "MCUCXR_0001_0.png,Female,040Y,normal\n"
                "MCUCXR_0002_0.png,Female,032Y,Normal \n"
                "MCUCXR_0104_1.png,Male,047Y,right upper lobe infiltrate\n"
            ),
            "MontgomerySet/CXR_png/MCUCXR_0001_0.png": Image.fromarray(depth),
            "MontgomerySet/CXR_png/MCUCXR_0002_0.png": _gray(),
            "MontgomerySet/CXR_png/MCUCXR_0104_1.png": _gray(),
        },
    )
    manifest = _manifest("montgomerycxr", data)
    assert [label for _, label, _ in _rows(manifest)] == ["normal", "tuberculosis", "tuberculosis"]
    assert manifest.table["patient"].tolist() == ["MCUCXR_0001", "MCUCXR_0002", "MCUCXR_0104"]
    kinds = sorted((p.kind, p.file) for p in manifest.problems)
    assert kinds == [
        ("label-mismatch", "montgomery_metadata.csv row 3 (MCUCXR_0002_0.png)"),
        ("unknown-label", "montgomery_metadata.csv row 3 (MCUCXR_0002_0.png)"),
    ]
    pixels = np.asarray(manifest.loader(manifest.root / manifest.table["path"][0]))[..., 0]
    assert pixels[0, 0] == 0 and pixels[1, 2] == 255  # min..max, not clipped at 255


# --- CheXpert and ChestX-ray14 ---------------------------------------------------------------

CHEXPERT_HEADER = (
    "Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,"
    "Lung Opacity,Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,"
    "Pleural Effusion,Pleural Other,Fracture,Support Devices\n"
)


def test_chexpert_train_csv(tmp_path: Path) -> None:
    """train.csv (official header, Path relative to the dataset folder) beside
    CheXpert-v1.0/; only Pleural Effusion counts (1.0 yes, -1.0 uncertain, 0.0 or blank no);
    the patient is the patientNNNNN folder."""
    top = "CheXpert-v1.0/train"
    rows = [  # (image under top, the other 18 columns as train.csv has them)
        ("patient00001/study1/view1_frontal.jpg", "Female,68,Frontal,AP,1.0,,,,,,,,,0.0,,,,1.0"),
        (
            "patient00002/study2/view1_frontal.jpg",
            "Female,87,Frontal,AP,,,-1.0,1.0,,-1.0,-1.0,,-1.0,,-1.0,,1.0,",
        ),
        ("patient00002/study1/view1_frontal.jpg", "Female,83,Frontal,AP,,,,1.0,,,-1.0,,,,,,1.0,"),
        ("patient00002/study1/view2_lateral.jpg", "Female,83,Lateral,,,,,1.0,,,-1.0,,,,,,1.0,"),
        ("patient00003/study1/view1_frontal.jpg", "Male,41,Frontal,AP,,,1.0,,,1.0,,,,0.0,1.0,,,"),
        ("patient00004/study1/view1_frontal.jpg", "Female,20,Frontal,PA,,,,,,,,,,,0.0,,,"),
    ]
    data = tmp_path / "data"
    _write(
        data / "chexpert",
        {
            "train.csv": CHEXPERT_HEADER + "".join(f"{top}/{p},{rest}\n" for p, rest in rows),
            **{f"{top}/{p}": _gray() for p, _ in rows},
        },
    )
    manifest = _manifest("chexpert", data)
    assert manifest.class_names == ("no_effusion", "effusion")
    assert manifest.table["path"].str.startswith(f"{top}/patient0000").all()
    assert manifest.labels.tolist() == [0, 1, 0, 0, 1, 0]  # uncertain -> positive (U-Ones)
    assert manifest.table["patient"].tolist() == [
        "patient00001",
        "patient00002",
        "patient00002",
        "patient00002",
        "patient00003",
        "patient00004",
    ]
    negative = _manifest("chexpert", data, labels=LabelOptions(uncertain="negative"))
    assert negative.labels.tolist() == [0, 0, 0, 0, 1, 0]
    ignored = _manifest("chexpert", data, labels=LabelOptions(uncertain="ignore"))
    assert len(ignored) == 5 and "patient00002/study2" not in " ".join(ignored.table["path"])


CHESTX_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,"
    "View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],\n"
)


def test_chestx_data_entry_csv(tmp_path: Path) -> None:
    """Data_Entry_2017.csv (header with a trailing comma) beside images/; a row counts
    only with exactly one of the 7 findings; No Finding, Hernia and multi-label rows go;
    the patient is the Patient ID column (zero-padded to the file name's 8 digits)."""
    rows = (
        "00000001_000.png,Cardiomegaly,0,1,58,M,PA,2682,2749,0.143,0.143,\n"
        "00000001_001.png,Cardiomegaly|Emphysema,1,1,58,M,PA,2894,2729,0.143,0.143,\n"
        "00000002_000.png,No Finding,0,2,81,M,PA,2500,2048,0.171,0.171,\n"
        "00000003_000.png,Hernia,0,3,81,F,PA,2582,2991,0.143,0.143,\n"
        "00000005_006.png,Infiltration,6,5,70,F,PA,2048,2500,0.168,0.168,\n"
        "00000011_000.png,Effusion,0,11,75,M,PA,2500,2048,0.168,0.168,\n"
        "00000013_005.png,Mass,5,13,60,M,AP,3056,2544,0.139,0.139,\n"
        "00000013_010.png,Pneumothorax,10,13,60,M,AP,3056,2544,0.139,0.139,\n"
        "00000030_001.png,Atelectasis,1,30,79,M,PA,2992,2991,0.143,0.143,\n"
        "00000032_012.png,Nodule,12,32,55,F,AP,2500,2048,0.168,0.168,\n"
        "00000032_013.png,Pneumonia,13,32,55,F,AP,2500,2048,0.168,0.168,\n"
    )
    names = [line.split(",", 1)[0] for line in rows.splitlines()]
    data = tmp_path / "data"
    _write(
        data / "chestx",
        {"Data_Entry_2017.csv": CHESTX_HEADER + rows, **{f"images/{n}": _gray() for n in names}},
    )
    manifest = _manifest("chestx", data)
    assert _rows(manifest) == [
        ("images/00000001_000.png", "cardiomegaly", "00000001"),
        ("images/00000005_006.png", "infiltration", "00000005"),
        ("images/00000011_000.png", "effusion", "00000011"),
        ("images/00000013_005.png", "mass", "00000013"),
        ("images/00000013_010.png", "pneumothorax", "00000013"),
        ("images/00000030_001.png", "atelectasis", "00000030"),
        ("images/00000032_012.png", "nodule", "00000032"),
    ]
    assert manifest.problems == ()


# --- EyePACS, iChallenge ---------------------------------------------------------------------


def test_eyepacs_kaggle_labels(tmp_path: Path) -> None:
    """trainLabels.csv (image,level) with train/<image>.jpeg and testLabels.csv
    (image,level,Usage) with test/<image>.jpeg; the level is the class; the patient is the
    number before _left/_right; the original split is the official one."""
    train = ["10_left,0", "10_right,0", "15_left,1", "15_right,2", "16_left,4", "16_right,4"]
    train += ["19_left,3", "19_right,3"]
    test = ["1_left,0,Private", "1_right,0,Private", "3_left,2,Public", "3_right,2,Public"]
    data = tmp_path / "data"
    _write(
        data / "diabetic_retinopathy",
        {
            "trainLabels.csv": "image,level\n" + "\n".join(train) + "\n",
            "testLabels.csv": "image,level,Usage\n" + "\n".join(test) + "\n",
            **{f"train/{row.split(',')[0]}.jpeg": _rgb() for row in train},
            **{f"test/{row.split(',')[0]}.jpeg": _rgb() for row in test},
        },
    )
    manifest = _manifest("eyepacs", data, split_policy="original")
    table = manifest.table.set_index("path")
    assert table.loc["train/15_right.jpeg", "class_name"] == "moderate"
    assert table.loc["train/16_left.jpeg", "class_name"] == "proliferative"
    assert table.loc["train/19_left.jpeg", "class_name"] == "severe"
    assert table.loc["test/3_left.jpeg", "class_name"] == "moderate"
    assert table.loc["train/15_right.jpeg", "patient"] == "15"
    assert set(table.loc[[f"test/{r.split(',')[0]}.jpeg" for r in test], "split"]) == {"test"}
    trained = table.loc[[f"train/{r.split(',')[0]}.jpeg" for r in train], "split"]
    assert set(trained) <= {"train", "val"}


def test_ichallenge_amd_training400(tmp_path: Path) -> None:
    """Training400/AMD/A*.jpg is 1, Training400/Non-AMD/N*.jpg is 0; without the optional
    amd_labels.csv the rows are the sorted file names; with it, its order and labels."""
    data = tmp_path / "data"
    root = _write(
        data / "ichallenge_amd",
        {
            "Training400/AMD/A0001.jpg": _rgb(),
            "Training400/AMD/A0002.jpg": _rgb(),
            "Training400/Non-AMD/N0001.jpg": _rgb(),
            "Training400/Non-AMD/N0002.jpg": _rgb(),
            "Training400/Non-AMD/N0003.jpg": _rgb(),
        },
    )
    assert _rows(_manifest("amd", data)) == [
        ("Training400/AMD/A0001.jpg", "amd", ""),
        ("Training400/AMD/A0002.jpg", "amd", ""),
        ("Training400/Non-AMD/N0001.jpg", "non_amd", ""),
        ("Training400/Non-AMD/N0002.jpg", "non_amd", ""),
        ("Training400/Non-AMD/N0003.jpg", "non_amd", ""),
    ]
    _write(root, {"amd_labels.csv": "imgName,Label\nN0002,0\nA0001,1\nN0001,0\nA0002,1\nN0003,0\n"})
    listed = _manifest("amd", data)
    assert listed.table["path"].tolist()[:2] == [
        "Training400/Non-AMD/N0002.jpg",
        "Training400/AMD/A0001.jpg",
    ]
    assert listed.problems == ()


def test_ichallenge_pm_palm_training400(tmp_path: Path) -> None:
    """PALM-Training400/PALM-Training400/<name>.jpg (the folder twice); the prefix is the
    class: P positive by default (--pm-positive P), H and P with --pm-positive HP."""
    folder = "PALM-Training400/PALM-Training400"
    data = tmp_path / "data"
    _write(
        data / "ichallenge_pm",
        {f"{folder}/{name}.jpg": _rgb() for name in ("H0001", "N0001", "N0002", "P0001")},
    )
    default = _manifest("palm", data)
    assert _rows(default) == [
        (f"{folder}/H0001.jpg", "non_pm", ""),
        (f"{folder}/N0001.jpg", "non_pm", ""),
        (f"{folder}/N0002.jpg", "non_pm", ""),
        (f"{folder}/P0001.jpg", "pm", ""),
    ]
    merged = _manifest("palm", data, labels=LabelOptions(pm_positive="HP"))
    assert merged.table["class_name"].tolist() == ["pm", "non_pm", "non_pm", "pm"]


# --- BACH, STOIC -----------------------------------------------------------------------------


def test_bach_header_less_ground_truth(tmp_path: Path) -> None:
    """Photos/microscopy_ground_truth.csv has no header: file name, class string; the image
    is Photos/<class string>/<file name>; Normal 0, Benign 1, InSitu 2, Invasive 3."""
    photos = "ICIAR2018_BACH_Challenge/Photos"
    tiff = Image.new("RGB", (8, 6), (230, 150, 200))
    data = tmp_path / "data"
    _write(
        data / "bach",
        {
            f"{photos}/microscopy_ground_truth.csv": (
                "b001.tif,Benign\nis001.tif,InSitu\niv001.tif,Invasive\nn001.tif,Normal\n"
            ),
            f"{photos}/Benign/b001.tif": tiff,
            f"{photos}/InSitu/is001.tif": tiff,
            f"{photos}/Invasive/iv001.tif": tiff,
            f"{photos}/Normal/n001.tif": tiff,
        },
    )
    manifest = _manifest("iciar2018", data)
    assert _rows(manifest) == [
        (f"{photos}/Benign/b001.tif", "benign", ""),
        (f"{photos}/InSitu/is001.tif", "in_situ", ""),
        (f"{photos}/Invasive/iv001.tif", "invasive", ""),
        (f"{photos}/Normal/n001.tif", "normal", ""),
    ]
    assert manifest.labels.tolist() == [1, 2, 3, 0]
    assert manifest.problems == ()


def _mha(size: tuple[int, int, int], voxels: np.ndarray) -> bytes:
    """A MetaImage file typed from the MetaIO format: a text header, then raw int16 voxels
    in x-fastest order (``voxels`` is indexed [z, y, x])."""
    x, y, z = size
    header = (
        "ObjectType = Image\n"
        "NDims = 3\n"
        "BinaryData = True\n"
        "BinaryDataByteOrderMSB = False\n"
        "CompressedData = False\n"
        "TransformMatrix = 1 0 0 0 1 0 0 0 1\n"
        "Offset = 0 0 0\n"
        "ElementSpacing = 0.7 0.7 2\n"
        f"DimSize = {x} {y} {z}\n"
        "ElementType = MET_SHORT\n"
        "ElementDataFile = LOCAL\n"
    )
    assert voxels.shape == (z, y, x)
    return header.encode("ascii") + voxels.astype("<i2").tobytes()


def test_stoic_reference_csv_and_mha_volumes(tmp_path: Path) -> None:
    """metadata/reference.csv (PatientID,probCOVID,probSevere) and data/mha/<id>.mha; the
    label is probCOVID; the image is the middle axial slice (z = floor(Z / 2)), HU clipped
    to [-1000, 250] and scaled to 8 bits by truncation, width x, height y."""
    volume = np.full((3, 2, 4), -1000, dtype=np.int16)  # z, y, x
    volume[1, 0, 1] = 250  # -> 255
    volume[1, 1, 2] = -1  # 999 / 1250 * 255 = 203.8 -> 203 (truncated)
    volume[0, 1, 2] = 250  # another slice: must not show
    data = tmp_path / "data"
    _write(
        data / "stoic",
        {
            "metadata/reference.csv": "PatientID,probCOVID,probSevere\n3,1,0\n5,0,0\n7,1,1\n",
            "data/mha/3.mha": _mha((4, 2, 3), volume),
            "data/mha/5.mha": _mha((4, 2, 3), volume),
            "data/mha/7.mha": _mha((4, 2, 3), volume),
        },
    )
    manifest = _manifest("stoic", data)
    assert _rows(manifest) == [
        ("data/mha/3.mha", "covid_positive", "3"),
        ("data/mha/5.mha", "covid_negative", "5"),
        ("data/mha/7.mha", "covid_positive", "7"),
    ]
    pixels = np.asarray(manifest.loader(manifest.root / "data/mha/3.mha"))
    assert pixels.shape == (2, 4, 3)
    expected = np.zeros((2, 4), dtype=np.uint8)
    expected[0, 1], expected[1, 2] = 255, 203
    assert (pixels[..., 0] == expected).all()


# --- CIFAR -----------------------------------------------------------------------------------


def _batch(labels_key: str, labels: list[int], planes: list[tuple[int, int, int]]) -> bytes:
    """A python-version batch as the format describes it: a protocol-2 pickle of a dict
    whose ``data`` is an (n, 3072) uint8 array, each row the R, G and B planes of a
    32 x 32 image (row-major), and whose ``labels_key`` holds the labels."""
    data = np.zeros((len(labels), 3072), dtype=np.uint8)
    for row, (red, green, blue) in enumerate(planes):
        data[row, :1024], data[row, 1024:2048], data[row, 2048:] = red, green, blue
        data[row, 1] = 7  # R of the pixel at row 0, column 1
    entry = {
        "batch_label": "training batch",
        labels_key: labels,
        "data": data,
        "filenames": [f"image_{i}.png" for i in range(len(labels))],
    }
    return pickle.dumps(entry, protocol=2)


CIFAR10_TEXT = "airplane automobile bird cat deer dog frog horse ship truck"
CIFAR10_NAMES = CIFAR10_TEXT.split()


def test_cifar10_python_batches(tmp_path: Path) -> None:
    """cifar-10-batches-py/ under CIFAR10/: data_batch_1..5 and test_batch with ``labels``,
    batches.meta with ``label_names``; item k of a batch is <batch>#k; the official split."""
    folder = "CIFAR10/cifar-10-batches-py"
    files: dict[str, str | bytes | Image.Image] = {
        f"{folder}/batches.meta": pickle.dumps({"label_names": CIFAR10_NAMES}, protocol=2)
    }
    for k in range(1, 6):
        labels = [2 * k - 2, 2 * k - 1]
        files[f"{folder}/data_batch_{k}"] = _batch("labels", labels, [(10 * k, 20, 30)] * 2)
    files[f"{folder}/test_batch"] = _batch("labels", [9, 0], [(1, 2, 3), (4, 5, 6)])
    data = tmp_path / "data"
    _write(data, files)
    manifest = _manifest("cifar-10", data, split_policy="original")
    assert manifest.class_names == tuple(CIFAR10_NAMES)
    table = manifest.table.set_index("path")
    assert table.loc["cifar-10-batches-py/data_batch_3#1", "class_name"] == "dog"
    assert table.loc["cifar-10-batches-py/test_batch#0", "class_name"] == "truck"
    assert table.loc["cifar-10-batches-py/test_batch#0", "split"] == "test"
    assert set(table["split"][table.index.str.contains("data_batch")]) <= {"train", "val"}
    pixels = np.asarray(manifest.loader(manifest.root / "cifar-10-batches-py/test_batch#1"))
    assert pixels.shape == (32, 32, 3)
    assert tuple(pixels[5, 5]) == (4, 5, 6) and tuple(pixels[0, 1]) == (7, 5, 6)


def test_cifar100_python_files(tmp_path: Path) -> None:
    """cifar-100-python/ under CIFAR100/: train and test with ``fine_labels`` (and
    ``coarse_labels``), meta with the 100 ``fine_label_names`` in alphabetical order."""
    text = (
        "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge "
        "bus butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud "
        "cockroach couch crab crocodile cup dinosaur dolphin elephant flatfish forest fox "
        "girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster "
        "man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter "
        "palm_tree pear pickup_truck pine_tree plain plate poppy porcupine possum rabbit "
        "raccoon ray road rocket rose sea seal shark shrew skunk skyscraper snail snake "
        "spider squirrel streetcar sunflower sweet_pepper table tank telephone television "
        "tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm"
    )
    fine = text.split()
    assert len(fine) == 100
    folder = "CIFAR100/cifar-100-python"
    labels = list(range(100))
    train = pickle.loads(_batch("fine_labels", labels, [(0, 0, 0)] * 100))
    train["coarse_labels"] = [label // 5 for label in labels]
    data = tmp_path / "data"
    _write(
        data,
        {
            f"{folder}/meta": pickle.dumps(
                {"fine_label_names": fine, "coarse_label_names": ["x"] * 20}, protocol=2
            ),
            f"{folder}/train": pickle.dumps(train, protocol=2),
            f"{folder}/test": _batch("fine_labels", [99, 3], [(1, 1, 1), (2, 2, 2)]),
        },
    )
    manifest = _manifest("cifar_100", data, split_policy="original")
    assert manifest.class_names == tuple(fine)
    assert manifest.problems == ()
    table = manifest.table.set_index("path")
    assert table.loc["cifar-100-python/train#41", "class_name"] == "lawn_mower"
    assert table.loc["cifar-100-python/test#0", "class_name"] == "worm"
    assert table.loc["cifar-100-python/test#0", "split"] == "test"


# --- every dataset is covered --------------------------------------------------------------

HAND_WRITTEN = {
    "shenzhencxr": test_shenzhen_kaggle_export,
    "montgomerycxr": test_montgomery_kaggle_export,
    "chexpert": test_chexpert_train_csv,
    "chestx": test_chestx_data_entry_csv,
    "diabetic_retinopathy": test_eyepacs_kaggle_labels,
    "ichallenge_amd": test_ichallenge_amd_training400,
    "ichallenge_pm": test_ichallenge_pm_palm_training400,
    "bach": test_bach_header_less_ground_truth,
    "stoic": test_stoic_reference_csv_and_mha_volumes,
    "cifar10": test_cifar10_python_batches,
    "cifar100": test_cifar100_python_files,
}


@pytest.mark.parametrize("spec", CATALOG, ids=lambda spec: spec.name)
def test_every_catalog_dataset_has_a_hand_written_tree(spec: object) -> None:
    assert getattr(spec, "name") in HAND_WRITTEN  # noqa: B009


def test_the_mha_writer_follows_the_format() -> None:
    """The typed header is what MetaIO readers expect: DimSize x y z, x fastest."""
    raw = _mha((2, 1, 1), np.array([[[1, -2]]], dtype=np.int16))
    header, _, body = raw.partition(b"ElementDataFile = LOCAL\n")
    assert b"DimSize = 2 1 1" in header and struct.unpack("<2h", body) == (1, -2)
