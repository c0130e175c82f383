"""``--preset original`` against the original's algorithm, written here as a plain reference
from docs/original-study.md (#few-shot, #linear, #splits, #preprocessing) and run on the same
images with the same weights.

The reference decodes each image with PIL, transforms it with torchvision as the original
did, runs a plain torchvision ResNet-18 holding the backbone's weights, splits with pandas'
``sample(frac=1, random_state=42)`` and the seed-0 hold-out, draws episodes from the
global torch RNG, and runs the linear grid as the original's reused estimator did: scipy's
L-BFGS-B on the summed objective at scikit-learn's old defaults, each fit from the
previous one. The preset runs must reproduce its features and splits, its few-shot
accuracy within the two 95% intervals, and, where its fits converged, its chosen C and its
accuracy within one test image. (How closely the emulated scikit-learn follows a real
scikit-learn 1.3.2 is tests/protocols/test_sklearn_legacy.py's subject.)
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
from PIL import Image
from scipy import optimize
from scipy.special import logsumexp
from threadpoolctl import threadpool_limits
from torch import nn
from torchvision import transforms

from medtransfer.cli import main
from medtransfer.config import Roots, resolve_roots
from medtransfer.jobs.base import JobResult
from medtransfer.jobs.options import ModelOptions
from medtransfer.jobs.registry import get_job

SIZE = 64
IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
COMPUTE = {"device": "cpu", "progress": False, "batch_size": 20}


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> Roots:
    """A synthetic Shenzhen tree of 40 images (palette PNGs, which PIL's ``convert('RGB')``
    decodes exactly as medtransfer does)."""
    base = tmp_path_factory.mktemp("reference")
    args = ["datasets", "synth", "-d", "shenzhencxr", "--out", str(base / "data")]
    assert main([*args, "--per-class", "20", "--size", "72", "--seed", "3"]) == 0
    return resolve_roots(base / "data", base / "cache", base / "results")


def run_preset(job_name: str, roots: Roots, **given: object) -> JobResult:
    job = get_job(job_name)
    options = job.resolve(
        {"dataset": "shenzhencxr", "model": "random_r18", **COMPUTE, **given}, "original"
    )
    return job.run(roots, *options)


# ----------------------------------------------------------------------------- reference


def original_rows(roots: Roots) -> pd.DataFrame:
    """The metadata CSV in the original's order: shuffled with seed 42, the first 80% train,
    of which the seed-0 hold-out's first 20% are val (docs/original-study.md#splits)."""
    folder = roots.data / "shenzhencxr"
    table = pd.read_csv(folder / "shenzhen_metadata.csv")
    table = table.sample(frac=1, random_state=42).reset_index(drop=True)
    table["path"] = [str(folder / "ChinaSet_AllFiles" / "CXR_png" / n) for n in table.iloc[:, 0]]
    table["label"] = (table.iloc[:, 3] != "normal").astype(int)
    n_train = math.floor(0.8 * len(table))
    table["split"] = ["train"] * n_train + ["test"] * (len(table) - n_train)
    indices = list(range(n_train))
    np.random.seed(0)
    np.random.shuffle(indices)
    table.loc[indices[: math.floor(0.2 * n_train)], "split"] = "val"
    return table


def reference_trunk(roots: Roots) -> nn.Module:
    """torchvision's ResNet-18 without its head, holding random_r18's weights."""
    trunk = torchvision.models.resnet18()
    trunk.fc = nn.Identity()
    trunk.load_state_dict(ModelOptions("random_r18").load(roots, progress=False).trunk.state_dict())
    return trunk.eval()


def reference_features(paths: list[str], transform: transforms.Compose, trunk: nn.Module):
    with torch.no_grad():
        batch = torch.stack([transform(Image.open(p).convert("RGB")) for p in paths])
        return trunk(batch).numpy()


def reference_few_shot(
    features: np.ndarray, labels: np.ndarray, n_way: int, n_support: int, n_query: int, iters: int
) -> tuple[float, float]:
    """The original's episodes (docs/original-study.md#few-shot): ``torch.randperm`` picks
    the classes, each class a uniform draw of n_support + n_query images, one
    ``randperm`` splits support from query; nearest prototype in squared Euclidean
    distance. Mean accuracy and 1.96 std / sqrt(episodes), in percent."""
    torch.manual_seed(0)
    members = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    z = torch.from_numpy(features)
    accuracies = []
    for _ in range(iters):
        chosen = torch.randperm(len(members))[:n_way]
        drawn = [
            members[c][torch.randperm(len(members[c]))[: n_support + n_query].numpy()]
            for c in chosen
        ]
        perm = torch.randperm(n_support + n_query).numpy()
        support = [z[rows[perm[:n_support]]] for rows in drawn]
        query = torch.cat([z[rows[perm[n_support:]]] for rows in drawn])
        prototypes = torch.stack([s.mean(0) for s in support])
        distances = ((query[:, None, :] - prototypes[None]) ** 2).sum(-1)
        predicted = torch.log_softmax(-distances, dim=1).argmax(1)
        target = torch.arange(n_way).repeat_interleave(n_query)
        accuracies.append((predicted == target).float().mean().item())
    percent = np.array(accuracies) * 100
    return float(percent.mean()), float(1.96 * percent.std() / math.sqrt(iters))


class ReferenceEstimator:
    """``LogisticRegression(solver='lbfgs', multi_class='multinomial', warm_start=True)`` as
    scikit-learn < 1.4 fitted it (docs/original-study.md#linear): a softmax over one weight
    vector per class, all penalised, ``sum_i loss_i + ||W||^2 / (2 C)``, minimised by
    scipy's L-BFGS-B with ``gtol=1e-4``, ``maxiter=100`` and scipy's other defaults, each
    fit starting from the last one's coefficients (for two classes the estimator kept
    ``w1`` only and restarted from ``(-w1, w1)``)."""

    def __init__(self) -> None:
        self.params: np.ndarray | None = None
        self.converged = True

    def fit(self, X: np.ndarray, y: np.ndarray, C: float) -> ReferenceEstimator:
        Y = (y[:, None] == np.unique(y)[None]).astype(float)
        K, D = Y.shape[1], X.shape[1]

        def objective(w: np.ndarray) -> tuple[float, np.ndarray]:
            params = w.reshape(K, D + 1)
            logits = X @ params[:, :D].T + params[:, D]
            lse = logsumexp(logits, axis=1)
            residual = np.exp(logits - lse[:, None]) - Y
            grad = np.concatenate([residual.T @ X + params[:, :D] / C, residual.sum(0)[:, None]], 1)
            value = lse.sum() - (logits * Y).sum() + (params[:, :D] ** 2).sum() / (2 * C)
            return value, grad.ravel()

        start = np.zeros((K, D + 1)) if self.params is None else self.params
        with threadpool_limits(limits=1):  # tiny vectors: threads only cost time
            fit = optimize.minimize(
                objective, start.ravel(), jac=True, method="L-BFGS-B",
                options={"maxiter": 100, "gtol": 1e-4},
            )  # fmt: skip
        params = fit.x.reshape(K, D + 1)
        self.params = np.stack([-params[1], params[1]]) if K == 2 else params
        self.converged = fit.status == 0
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        assert self.params is not None
        return (X @ self.params[:, :-1].T + self.params[:, -1]).argmax(1)


def stored_features(roots: Roots, result: JobResult) -> tuple[np.ndarray, list[str]]:
    """The features the run read, (N, D), and the absolute path of each row."""
    record = result.record
    folder = roots.cache / "features" / "random_r18" / "shenzhencxr" / record["feature_key"][:16]
    rows = pd.read_csv(folder / "rows.csv")
    paths = [str(roots.data / "shenzhencxr" / p) for p in rows["path"]]
    return np.load(folder / "features.npy"), paths


# ----------------------------------------------------------------------------- tests


def test_few_shot_preset_matches_the_original_within_both_intervals(roots: Roots) -> None:
    shape = {"n_support": 5, "n_query": 5, "iter_num": 300}
    result = run_preset("few-shot", roots, image_size=SIZE, **shape)
    params = result.record["params"]
    assert params["n_way"] == 2 and params["pool"] == "original"  # the published 2-way
    assert params["preprocessing"]["resize"] == "square" and params["normalization"] == "imagenet"
    ours, paths = stored_features(roots, result)
    square = transforms.Compose(
        [
            transforms.Resize([int(SIZE * 1.15)] * 2),
            transforms.CenterCrop(SIZE),
            transforms.ToTensor(),
            transforms.Normalize(*IMAGENET),
        ]
    )
    theirs = reference_features(paths, square, reference_trunk(roots))
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)
    labels = np.array([int(Path(p).stem.endswith("_1")) for p in paths])
    accuracy, ci95 = reference_few_shot(theirs, labels, 2, 5, 5, 300)
    assert abs(result.metrics["accuracy"] - accuracy) <= result.metrics["accuracy_ci95"] + ci95


def test_linear_preset_matches_the_original_where_its_fits_converged(roots: Roots) -> None:
    result = run_preset("linear", roots, image_size=SIZE, bootstrap=0)
    record, params = result.record, result.record["params"]
    assert params["solver"] == "sklearn-legacy" and params["normalization"] == "none"
    assert params["split_policy"] == "original"
    ours, paths = stored_features(roots, result)
    shorter = transforms.Compose(
        [
            transforms.Resize(SIZE, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(SIZE),
            transforms.ToTensor(),
        ]
    )
    theirs = reference_features(paths, shorter, reference_trunk(roots))
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)

    table = original_rows(roots).set_index("path").loc[paths]  # our row order
    X, y, split = theirs, table["label"].to_numpy(), table["split"].to_numpy()
    assert record["sizes"] == {s: int((split == s).sum()) for s in ("train", "val", "test")}
    train, val, test = split == "train", split == "val", split == "test"
    grid = [1 / w for w in torch.logspace(-6, 5, 45).tolist()]  # C = 1/wd, descending
    assert [C for C, _ in record["val_curve"]] == grid
    estimator, curve, converged = ReferenceEstimator(), [], []
    for C in grid:
        estimator.fit(X[train], y[train], C)
        curve.append(100 * np.mean(estimator.predict(X[val]) == y[val]))
        converged.append(estimator.converged)
    best, chosen = 0.0, grid[0]
    for C, score in zip(grid, curve, strict=True):  # the first strictly greater score from 0
        if score > best:
            best, chosen = score, C
    estimator.fit(X[train | val], y[train | val], chosen)  # refit from the last grid point
    converged.append(estimator.converged)
    assert all(converged)  # so the original's numbers are the reference's
    assert record["chosen_C"] == chosen
    one_val_image = 100 / val.sum() + 1e-9
    assert [s for _, s in record["val_curve"]] == pytest.approx(curve, abs=one_val_image)
    expected = 100 * np.mean(estimator.predict(X[test]) == y[test])
    assert abs(result.metrics["accuracy"] - expected) <= 100 / test.sum() + 1e-9


def test_linear_preset_at_a_fixed_C_is_the_original_within_one_test_image(roots: Roots) -> None:
    result = run_preset("linear", roots, image_size=SIZE, bootstrap=0, C=0.01)
    assert result.record["converged"] == [True]
    features, paths = stored_features(roots, result)
    table = original_rows(roots).set_index("path").loc[paths]
    y, split = table["label"].to_numpy(), table["split"].to_numpy()
    fit = ReferenceEstimator().fit(features[split != "test"], y[split != "test"], 0.01)
    test = split == "test"
    expected = 100 * np.mean(fit.predict(features[test]) == y[test])
    assert abs(result.metrics["accuracy"] - expected) <= 100 / test.sum() + 1e-9
