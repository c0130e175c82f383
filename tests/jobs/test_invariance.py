"""The invariance job: clean features from the feature store, one record per transform with
its curve and pictures, clear errors for impossible k, and the original's algorithm
reproduced under --preset original (docs/original-study.md#invariance)."""

from __future__ import annotations

import copy
import dataclasses
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as FT
from PIL import Image
from scipy.spatial.distance import mahalanobis
from torch.utils.data import DataLoader
from torchvision import transforms

from medtransfer.config import Roots
from medtransfer.data.transforms import Preprocessing
from medtransfer.errors import ConfigError
from medtransfer.jobs.common import StoreRequest, prepare_features
from medtransfer.jobs.invariance import InvarianceOptions, _pool, run_invariance
from medtransfer.jobs.options import DataOptions
from medtransfer.jobs.registry import get_job
from medtransfer.models.loader import load_backbone
from tests.jobs.conftest import MODEL, RUN

pytestmark = pytest.mark.usefixtures("single_thread")


def test_a_transform_record_with_its_curve_and_no_extra_clean_passes(
    job_roots: Roots, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = DataOptions("shenzhencxr")
    opened = data.open(job_roots)
    prepare_features(
        job_roots, StoreRequest("invariance", opened, MODEL, Preprocessing(32, "ratio"), RUN)
    )

    def no_extraction(*args, **kwargs):
        raise AssertionError("the clean features are in the store already")

    monkeypatch.setattr("medtransfer.features.store.extract", no_extraction)
    options = InvarianceOptions(transform="rotation", k=4, images=3, image_size=32, bootstrap=50)
    result = run_invariance(job_roots, data, MODEL, options, RUN)
    record = result.record
    assert record["protocol"] == "invariance" and record["features_extracted"] is False
    assert record["params"]["k"] == 4 and record["params"]["cov"] == "ledoit-wolf"
    assert record["params"]["metric"] == "similarity"  # the results table's main metric
    curve = record["curve"]
    assert curve["parameters"] == [0.0, 90.0, 180.0, 270.0] and curve["identity_index"] == 0
    assert curve["similarity"][0] == pytest.approx(1.0, abs=1e-9)  # the identity view is clean
    assert curve["distance"][0] == pytest.approx(0.0, abs=1e-6)
    assert record["metrics"]["similarity"] == pytest.approx(np.mean(curve["similarity"][1:]))
    assert record["metrics"]["parameter_values"] == 3
    assert record["statistics"]["n_samples"] == 24 and record["statistics"]["shrinkage"] > 0
    low, high = record["metrics"]["similarity_ci"]
    assert low <= high
    folder = result.record_path.with_suffix("")
    assert np.load(folder / "similarity.npy").shape == (3, 4)
    with Image.open(folder / "curve.png") as png:
        assert png.size[0] > 100
    assert result.lines[:2] == [
        "random_r18 on rotation with dataset shenzhencxr:",
        f"\t distance {record['metrics']['distance']:.6f} and similarity "
        f"{record['metrics']['similarity']:.6f}",
    ]
    assert "left out of the mean" in result.lines[-1]


def test_all_transforms_write_one_record_each(job_roots: Roots) -> None:
    options = InvarianceOptions(transform="all", k=16, images=1, image_size=32, bootstrap=0)
    result = run_invariance(job_roots, DataOptions("montgomerycxr"), MODEL, options, RUN)
    records = [line for line in result.lines if line.startswith("record: ")]
    assert len(records) == 17  # the last record is the result itself
    assert result.record["params"]["transform"] == "posterize"
    assert result.record["params"]["k"] == 7
    assert any("k = 2: --k 16 does not fit h_flip" in line for line in result.lines)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"transform": "translation", "k": 20}, "--k 20 does not fit --transform translation"),
        ({"transform": "rotation", "k": 1}, "only the identity view"),
        ({"numerics": "original"}, "use --cov sample"),
        ({"sampling": "original", "images": 0}, "give --images N"),
    ],
)
def test_impossible_settings_fail_before_any_work(
    job_roots: Roots, resolutions: list[str], change: dict, message: str
) -> None:
    options = dataclasses.replace(InvarianceOptions(image_size=32), **change)
    with pytest.raises(ConfigError, match=message):
        run_invariance(job_roots, DataOptions("shenzhencxr"), MODEL, options, RUN)
    assert resolutions == []  # the data was not even read


def test_multiview_needs_a_dataset_with_two_views(job_roots: Roots) -> None:
    options = InvarianceOptions(multiview=True, image_size=32)
    with pytest.raises(ConfigError, match="defined for chexpert"):
        run_invariance(job_roots, DataOptions("shenzhencxr"), MODEL, options, RUN)


def original_invariance(roots: Roots, data: DataOptions, k: int, num_images: int, batch: int):
    """The original's invariances.py for --transform rotation on identical inputs: the same
    pool of images in the same order, the same weights, k, number of images and batch size."""
    opened = data.open(roots)
    manifest = opened.manifest
    paths = manifest.absolute_paths()
    pool = [manifest.loader(paths[int(r)]) for r in _pool(opened)]
    backbone = load_backbone("random_r18", roots)
    model = copy.deepcopy(backbone.trunk).train()  # the original never called .eval()
    normalise_dict = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    resize, crop_size = 73, 64
    clean = transforms.Compose(
        [
            transforms.Resize(resize),
            transforms.CenterCrop(crop_size),
            transforms.ToTensor(),
            transforms.Normalize(**normalise_dict),
        ]
    )
    clean_dataset = [clean(image) for image in pool]
    angles = torch.linspace(0, 360, k + 1)[:k].to(torch.float32).tolist()

    def manual_transform(image: Image.Image) -> torch.Tensor:
        views = []
        for angle in angles:
            view = FT.rotate(image, angle)
            view = FT.center_crop(FT.resize(view, resize), crop_size)
            view = FT.pil_to_tensor(view).to(torch.float32)
            views.append(FT.normalize(view / 255.0, *normalise_dict.values()))
        return torch.stack(views)

    np.random.seed(0)
    torch.manual_seed(0)
    clean_dataloader = DataLoader(clean_dataset, batch_size=batch)
    with torch.no_grad():
        all_features = torch.cat([model(data).detach().cpu() for data in clean_dataloader])
    mean_feature = all_features.mean(dim=0)
    cov_matrix = np.cov(all_features, rowvar=False)
    cov_matrix = cov_matrix + 1e-6 * np.eye(cov_matrix.shape[0])
    inv_cov_matrix = np.linalg.inv(cov_matrix)
    cholesky_matrix = torch.linalg.cholesky(torch.from_numpy(inv_cov_matrix).to(torch.float32))
    L, S = torch.zeros((num_images, k)), torch.zeros((num_images, k))
    sampler = np.random.choice(np.arange(len(pool)), num_images)
    with torch.no_grad():
        for i, index in enumerate(sampler):
            clean_feature = model(clean_dataset[index].unsqueeze(0)).detach().cpu()
            features = model(manual_transform(pool[index])).detach().cpu()
            a = (mean_feature - clean_feature) @ cholesky_matrix
            for j in range(features.shape[0]):
                b = (mean_feature - features[j]) @ cholesky_matrix
                S[i, j] = F.cosine_similarity(a, b, dim=-1).mean()
                L[i, j] = mahalanobis(clean_feature[0].numpy(), features[j].numpy(), inv_cov_matrix)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanmean(L.numpy(), axis=0).mean()), float(
            np.nanmean(S.numpy(), axis=0).mean()
        )


def test_preset_original_reproduces_the_original_algorithm(job_roots: Roots) -> None:
    job = get_job("invariance")
    given = {"dataset": "shenzhencxr", "model": "random_r18", "transform": "rotation", "k": 4}
    given |= {"images": 6, "image_size": 64, "batch_size": 8, "device": "cpu", "progress": False}
    data, model, options, run = job.resolve(given, "original")
    assert (
        options.keep_identity and options.sampling == "original" and data.split_policy == "original"
    )
    state = np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        distance, similarity = original_invariance(job_roots, data, 4, 6, 8)
    np.random.set_state(state)
    result = run_invariance(job_roots, data, model, options, run)
    assert result.record["params"]["preset"] == "original"
    assert result.metrics["similarity"] == pytest.approx(similarity, rel=0.01)
    assert result.metrics["distance"] == pytest.approx(distance, rel=0.01)
    assert len(set(result.record["items"])) <= 6  # drawn with replacement, as the original
