"""Cell keys: what changes a result changes the key, and nothing else does."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from medtransfer.jobs.base import Job
from medtransfer.jobs.flags import option
from medtransfer.jobs.knn import KnnOptions
from medtransfer.jobs.options import DataOptions, ModelOptions, RunOptions
from medtransfer.jobs.registry import JOBS, get_job
from medtransfer.sweep.hashing import FEATURE_FIELDS, cell_key, reuse_key

BASE = {"dataset": "bach", "model": "random_r18"}


def key(job: Job, preset: str = "none", **given: Any) -> str:
    fields = {f.name for cls in job.options for f in dataclasses.fields(cls)}
    base = {name: value for name, value in BASE.items() if name in fields}
    return cell_key(job, job.resolve({**base, **given}, preset))


def output_only_values(job: Job) -> dict[str, Any]:
    """A non-default value for every output-only option the job's result ignores."""
    values = {"device": "cpu", "workers": 3, "batch_size": 7, "progress": False}
    fields = {f.name: f for cls in job.options for f in dataclasses.fields(cls)}
    chosen = {
        name: value
        for name, value in values.items()
        if name in fields and fields[name].metadata.get("output_only")
    }
    return {k: v for k, v in chosen.items() if k not in job.result_options}


@pytest.mark.parametrize("job", JOBS, ids=lambda job: job.name)
def test_output_only_options_never_change_the_key(job: Job) -> None:
    changed = output_only_values(job)
    assert changed, "every job has output-only options"
    assert key(job, **changed) == key(job)
    if "model" in {f.name for cls in job.options for f in dataclasses.fields(cls)}:
        assert key(job, precision="bf16") != key(job)  # precision changes the numbers


def test_the_training_batch_of_fine_tuning_is_part_of_its_key() -> None:
    finetune, knn = get_job("finetune"), get_job("knn")
    assert finetune.result_options == ("batch_size",)
    assert key(finetune, batch_size=32) != key(finetune)
    assert key(knn, batch_size=32) == key(knn)


def test_defaults_written_out_and_left_out_give_one_key() -> None:
    knn = get_job("knn")
    assert key(knn, temperature=0.07, ks=(10, 20, 100, 200)) == key(knn)
    assert key(knn, temperature=0.1) != key(knn) != key(knn, ks=(10,))
    assert key(knn, dataset="shenzhencxr") != key(knn)


def test_a_preset_and_the_values_it_sets_give_one_key() -> None:
    knn = dataclasses.replace(get_job("knn"), presets={"original": {"temperature": 0.5}})
    assert key(knn, "original") == key(knn, temperature=0.5) != key(knn)


@dataclasses.dataclass(frozen=True)
class NewKnnOptions(KnnOptions):
    """kNN options as a later release might have them, with one new option."""

    weighting: str = option("temperature", "a later release's new option")


def run_new_knn(
    roots: Any, data: DataOptions, model: ModelOptions, options: NewKnnOptions, run: RunOptions
) -> Any:
    raise NotImplementedError


def test_a_new_option_with_a_backward_compatible_default_keeps_every_key() -> None:
    newer = Job("knn", run_new_knn, "kNN.")
    assert key(newer) == key(get_job("knn"))
    assert key(newer, weighting="uniform") != key(get_job("knn"))


def test_cells_reading_the_same_features_share_a_reuse_key() -> None:
    few = get_job("few-shot")

    def reuse(**given: Any) -> str | None:
        return reuse_key(few.resolve({**BASE, **given}))

    assert reuse(seed=1, n_way=3) == reuse() == reuse(device="cpu")
    assert reuse(image_size=64) != reuse() != reuse(dataset="shenzhencxr")
    assert reuse(no_norm=True) != reuse() != reuse(precision="bf16")
    # kNN resizes the shorter side without an option: few-shot doing so shares its features
    knn = get_job("knn").resolve(BASE)
    assert reuse_key(knn) == reuse(resize="shorter") == reuse()


def test_the_feature_fields_cover_the_preprocessing() -> None:
    from medtransfer.data.transforms import Preprocessing

    names = {f.name for f in dataclasses.fields(Preprocessing)}
    assert names - set(FEATURE_FIELDS) == {"resize"}  # left out on purpose (FEATURE_FIELDS)
