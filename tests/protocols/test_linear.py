"""Linear protocol: the original's grid, selection rule, refit and metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medtransfer.data.spec import ACCURACY, MEAN_PER_CLASS_ACCURACY
from medtransfer.errors import ProtocolError
from medtransfer.protocols.linear import C_GRID, linear_evaluation, select_C
from medtransfer.protocols.logreg import fit_logreg_path
from medtransfer.protocols.metrics import binary_auc, mean_per_class_accuracy


def _splits(n_classes: int, seed: int = 0, dim: int = 32, weights=None):
    """Train 480 / val 120 / test 300 from one Gaussian-blob distribution, float32."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 0.3, size=(n_classes, dim))

    def draw(n: int):
        y = rng.choice(n_classes, size=n, p=weights)
        return (means[y] + rng.normal(size=(n, dim)) + 0.5).astype(np.float32), y

    return (*draw(480), *draw(120), *draw(300))


def test_grid_is_the_originals() -> None:
    assert len(C_GRID) == 45
    assert C_GRID[0] == pytest.approx(1e6) and C_GRID[-1] == pytest.approx(1e-5)
    assert np.all(np.diff(C_GRID) < 0)  # descending
    np.testing.assert_allclose(C_GRID, 10 ** (np.arange(24, -21, -1) / 4), rtol=1e-6)
    # 1. / wd.item() of the float32 grid, as the readme's "C: 5623.413" shows
    assert C_GRID[9] == 1.0 / torch.logspace(-6, 5, 45)[9].item()
    assert f"{C_GRID[9]:.3f}" == "5623.413"


def test_selection_is_strictly_greater_so_ties_keep_the_larger_C() -> None:
    assert select_C([(100.0, 50.0), (10.0, 60.0), (1.0, 60.0), (0.1, 59.0)]) == 10.0
    assert select_C([(100.0, 0.0), (10.0, 0.0)]) == 100.0  # nothing beats 0
    assert select_C([(100.0, 10.0), (10.0, 9.0), (1.0, 10.0)]) == 100.0
    with pytest.raises(ProtocolError):
        select_C([])


@pytest.mark.parametrize("n_classes", [3, 2])
def test_torch_and_sklearn_choose_the_same_C_and_agree_on_test(n_classes: int) -> None:
    data = _splits(n_classes)
    Cs = C_GRID
    kwargs = dict(Cs=Cs, max_iter=1000)
    torch_run = linear_evaluation(*data, solver="torch", **kwargs)
    sk_run = linear_evaluation(*data, solver="sklearn", refit_init="last", **kwargs)
    assert torch_run.chosen_C == sk_run.chosen_C
    assert abs(torch_run.metrics["accuracy"] - sk_run.metrics["accuracy"]) < 0.5
    np.testing.assert_allclose(
        [s for _, s in torch_run.val_curve], [s for _, s in sk_run.val_curve], atol=1.0
    )
    assert torch_run.unconverged == 0 and sk_run.unconverged == 0
    assert len(torch_run.n_iter) == len(Cs) + 1
    assert set(torch_run.timings) == {"validation", "refit", "total"}


def test_fixed_C_skips_validation() -> None:
    data = _splits(3, seed=1)
    result = linear_evaluation(*data, fixed_C=0.05)
    assert result.chosen_C == 0.05 and result.val_curve == ()
    assert len(result.n_iter) == 1
    X_trainval = np.concatenate([data[0], data[2]])
    y_trainval = np.concatenate([data[1], data[3]])
    direct = fit_logreg_path(X_trainval, y_trainval, [0.05], max_iter=1000)[0]
    np.testing.assert_allclose(result.test_probabilities, direct.predict_proba(data[4]))


def test_mean_per_class_metric_drives_selection_and_report() -> None:
    data = _splits(3, seed=2, weights=[0.7, 0.2, 0.1])
    Cs = C_GRID[20:36]
    result = linear_evaluation(*data, metric=MEAN_PER_CLASS_ACCURACY, Cs=Cs)
    grid = fit_logreg_path(data[0], data[1], Cs, max_iter=1000)
    expected = [mean_per_class_accuracy(data[3], m.predict(data[2])) for m in grid]
    np.testing.assert_allclose([s for _, s in result.val_curve], expected)
    y_test = data[5]
    assert result.metrics["mean_per_class_accuracy"] == pytest.approx(
        mean_per_class_accuracy(y_test, result.test_predictions)
    )
    assert "auc" not in result.metrics
    assert result.metrics["mean_per_class_accuracy"] != result.metrics["accuracy"]


def test_binary_auc_comes_from_probabilities() -> None:
    data = _splits(2, seed=3)
    result = linear_evaluation(*data, Cs=C_GRID[24:36])
    y_test = data[5]
    assert result.test_probabilities.shape == (len(y_test), 2)
    np.testing.assert_allclose(result.test_probabilities.sum(axis=1), 1.0)
    assert result.metrics["auc"] == pytest.approx(
        binary_auc(y_test, result.test_probabilities[:, 1])
    )
    hard = binary_auc(y_test, result.test_predictions)
    assert result.metrics["auc"] != pytest.approx(hard)  # not from argmax labels


def test_labels_need_not_be_class_indices() -> None:
    X_tr, y_tr, X_va, y_va, X_te, y_te = _splits(2, seed=6)
    names = np.array(["effusion", "normal"])
    result = linear_evaluation(
        X_tr, names[y_tr], X_va, names[y_va], X_te, names[y_te], Cs=C_GRID[26:32]
    )
    np.testing.assert_array_equal(result.classes, names)
    assert set(result.test_predictions) <= set(names)
    expected = binary_auc((names[y_te] == "normal").astype(int), result.test_probabilities[:, 1])
    assert result.metrics["auc"] == pytest.approx(expected)


def test_sklearn_solver_counts_unconverged_fits() -> None:
    data = _splits(3, seed=4)
    result = linear_evaluation(*data, Cs=C_GRID[30:33], solver="sklearn", max_iter=1)
    assert result.unconverged == 4  # three grid fits and the refit, warnings captured
    assert result.converged == (False,) * 4


def test_refit_start_does_not_matter_once_converged() -> None:
    data = _splits(3, seed=5)
    Cs = C_GRID[24:34]
    runs = [
        linear_evaluation(*data, Cs=Cs, refit_init=start, dtype=torch.float64, tol=1e-7)
        for start in ("last", "chosen", "zeros")
    ]
    for run in runs[1:]:
        assert run.chosen_C == runs[0].chosen_C
        np.testing.assert_allclose(run.test_probabilities, runs[0].test_probabilities, atol=1e-5)


def test_bad_options_raise() -> None:
    data = _splits(3)
    with pytest.raises(ProtocolError, match="metric"):
        linear_evaluation(*data, metric="f1")
    with pytest.raises(ProtocolError, match="torch"):
        linear_evaluation(*data, solver="sklearn", refit_init="chosen")
    with pytest.raises(ProtocolError, match="positive"):
        linear_evaluation(*data, fixed_C=0.0)
    assert ACCURACY == "accuracy"
