"""Multi-view pairs read from identifiers, never from row order
(docs/original-study.md#defect-e44): CheXpert lateral with the frontal image of its study,
EyePACS left with right eye of the same patient and grade."""

from __future__ import annotations

import pandas as pd

from medtransfer.data.catalog import get_dataset_spec
from medtransfer.data.sources.chexpert import lateral_frontal_pairs
from medtransfer.data.sources.eyepacs import left_right_pairs


def rows(pairs, table: pd.DataFrame) -> list[tuple[str, str]]:
    return [
        (table["path"].iat[a], table["path"].iat[b])
        for a, b in zip(pairs.first, pairs.second, strict=True)
    ]


def test_chexpert_pairs_each_lateral_with_a_frontal_of_its_study() -> None:
    root = "CheXpert-v1.0/train"
    table = pd.DataFrame(
        {
            "path": [
                f"{root}/patient00002/study1/view2_lateral.jpg",  # listed before its frontal
                f"{root}/patient00001/study1/view1_frontal.jpg",
                f"{root}/patient00002/study1/view1_frontal.jpg",
                f"{root}/patient00003/study2/view1_lateral.jpg",  # no frontal in the study
                f"{root}/patient00003/study1/view1_frontal.jpg",
                f"{root}/patient00004/study1/view3_lateral.jpg",
                f"{root}/patient00004/study1/view2_frontal.jpg",  # no view1_frontal here
            ],
            "label": [0, 1, 0, 1, 1, 0, 0],
        }
    )
    pairs = lateral_frontal_pairs(table)
    assert rows(pairs, table) == [
        (
            f"{root}/patient00002/study1/view2_lateral.jpg",
            f"{root}/patient00002/study1/view1_frontal.jpg",
        ),
        (
            f"{root}/patient00004/study1/view3_lateral.jpg",
            f"{root}/patient00004/study1/view2_frontal.jpg",
        ),
    ]
    assert pairs.views == ("lateral", "frontal")
    assert pairs.unpaired == {"lateral without a frontal image in its study": 1}


def test_eyepacs_pairs_left_and_right_eye_of_one_patient_with_one_grade() -> None:
    table = pd.DataFrame(
        {
            "path": [
                "train/10_right.jpeg",  # right before left: row order does not matter
                "train/13_left.jpeg",
                "train/10_left.jpeg",
                "train/15_left.jpeg",  # no right eye
                "train/13_right.jpeg",  # another grade than its left eye
                "test/10_right.jpeg",  # another folder: another patient
                "train/16_right.jpeg",  # no left eye
            ],
            "label": [2, 0, 2, 1, 3, 4, 0],
        }
    )
    pairs = left_right_pairs(table)
    assert rows(pairs, table) == [("train/10_left.jpeg", "train/10_right.jpeg")]
    assert pairs.unpaired == {
        "left eye without a right eye": 1,
        "right eye without a left eye": 2,
        "left and right eye of different levels": 1,
    }


def test_the_catalog_knows_which_datasets_have_two_views() -> None:
    assert get_dataset_spec("chexpert").view_pairs is lateral_frontal_pairs
    assert get_dataset_spec("eyepacs").view_pairs is left_right_pairs
    assert get_dataset_spec("shenzhencxr").view_pairs is None
