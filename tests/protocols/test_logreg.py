"""Torch logistic regression against scikit-learn: same objective, same solution."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from medtransfer.errors import ProtocolError
from medtransfer.protocols.logreg import fit_logreg_path, fit_sklearn_path


def _blobs(n_classes: int, n: int = 600, dim: int = 64, seed: int = 0, spread: float = 0.35):
    """Overlapping Gaussian blobs with an offset (so the intercept matters), float32."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0, spread, size=(n_classes, dim))
    y = rng.integers(0, n_classes, size=n)
    X = means[y] + rng.normal(size=(n, dim)) + 0.5
    return X.astype(np.float32), y


def sklearn_objective(
    X: np.ndarray, y: np.ndarray, coef: np.ndarray, intercept: np.ndarray, C: float
) -> float:
    """scikit-learn's objective (see medtransfer.protocols.logreg) in float64 for
    (coef, intercept) of scikit-learn's shapes ((1, D) and (1,) for two classes, else (K, D)
    and (K,))."""
    X = np.asarray(X, dtype=np.float64)
    classes, codes = np.unique(np.asarray(y), return_inverse=True)
    coef = np.asarray(coef, dtype=np.float64)
    scores = X @ coef.T + np.asarray(intercept, dtype=np.float64)
    if len(classes) == 2:
        z = scores[:, 0]
        losses = np.logaddexp(0.0, z) - codes * z
    else:
        shifted = scores - scores.max(axis=1, keepdims=True)
        lse = np.log(np.exp(shifted).sum(axis=1))
        losses = lse - shifted[np.arange(len(codes)), codes]
    return float(losses.mean() + 0.5 / (C * len(codes)) * np.sum(coef * coef))


def _sklearn(X: np.ndarray, y: np.ndarray, C: float) -> LogisticRegression:
    return LogisticRegression(C=C, tol=1e-10, max_iter=10_000).fit(X.astype(np.float64), y)


@pytest.mark.parametrize("n_classes", [3, 2])
@pytest.mark.parametrize("C", [0.01, 1.0])
def test_float64_reaches_sklearns_optimum(n_classes: int, C: float) -> None:
    X, y = _blobs(n_classes)
    reference = _sklearn(X, y, C)
    model = fit_logreg_path(X, y, [C], dtype=torch.float64, tol=1e-8, max_iter=5000)[0]
    assert model.converged
    assert model.coef_.shape == reference.coef_.shape  # (1, D) for two classes, as sklearn
    f_ref = sklearn_objective(X, y, reference.coef_, reference.intercept_, C)
    assert model.objective == pytest.approx(f_ref, rel=1e-9)
    scale = np.abs(reference.coef_).max()
    np.testing.assert_allclose(model.coef_, reference.coef_, atol=1e-4 * scale)
    np.testing.assert_allclose(model.intercept_, reference.intercept_, atol=1e-4 * scale)
    np.testing.assert_allclose(model.predict_proba(X), reference.predict_proba(X), atol=1e-6)
    np.testing.assert_array_equal(model.predict(X), reference.predict(X))


@pytest.mark.parametrize("n_classes", [3, 2])
def test_float32_default_tolerance_matches_objective_and_coefficients(n_classes: int) -> None:
    X, y = _blobs(n_classes, seed=1)
    C = 1.0
    reference = _sklearn(X, y, C)
    model = fit_logreg_path(X, y, [C], max_iter=1000)[0]  # float32, tol 1e-4 as sklearn
    assert model.coef_.dtype == np.float32
    f_ref = sklearn_objective(X, y, reference.coef_, reference.intercept_, C)
    f_torch = sklearn_objective(X, y, model.coef_, model.intercept_, C)
    assert f_torch == pytest.approx(f_ref, rel=1e-4)
    assert model.objective == pytest.approx(f_torch, rel=1e-5)  # the solver's own value
    scale = np.abs(reference.coef_).max()
    np.testing.assert_allclose(model.coef_, reference.coef_, atol=2e-2 * scale)
    agree = np.mean(model.predict(X) == reference.predict(X))
    assert agree > 0.99


def test_two_class_multinomial_mode_is_the_old_softmax_objective() -> None:
    """``binary="multinomial"`` minimises the original's two-vector softmax objective, which
    equals the binomial one at 2C; coef_ keeps the binomial meaning."""
    X, y = _blobs(2, seed=2)
    C = 0.1
    model = fit_logreg_path(X, y, [C], dtype=torch.float64, tol=1e-9, binary="multinomial")[0]
    at_2c = _sklearn(X, y, 2 * C)
    np.testing.assert_allclose(model.coef_, at_2c.coef_, atol=1e-5)
    # the softmax objective with w1 = -w0 = u / 2, evaluated directly
    u, c = model.coef_[0].astype(np.float64), float(model.intercept_[0])
    W = np.stack([-u / 2, u / 2])
    b = np.array([-c / 2, c / 2])
    assert model.objective == pytest.approx(sklearn_objective_multi(X, y, W, b, C), rel=1e-10)
    # and it is the minimum: the binomial solution at C is worse under this objective
    at_c = _sklearn(X, y, C)
    w_c = np.stack([-at_c.coef_[0] / 2, at_c.coef_[0] / 2])
    b_c = np.array([-at_c.intercept_[0] / 2, at_c.intercept_[0] / 2])
    assert sklearn_objective_multi(X, y, w_c, b_c, C) > model.objective


def sklearn_objective_multi(X, y, W, b, C) -> float:
    """Softmax cross-entropy + ||W||^2 / (2 C N), any number of classes (float64)."""
    scores = X.astype(np.float64) @ W.T + b
    scores -= scores.max(axis=1, keepdims=True)
    lse = np.log(np.exp(scores).sum(axis=1))
    losses = lse - scores[np.arange(len(y)), y]
    return float(losses.mean() + 0.5 / (C * len(y)) * np.sum(W * W))


def test_warm_started_path_equals_cold_fits_at_convergence() -> None:
    X, y = _blobs(3, seed=3)
    Cs = [1.0, 0.1, 0.01]
    path = fit_logreg_path(X, y, Cs, dtype=torch.float64, tol=1e-8, max_iter=5000)
    cold_iterations = 0
    for C, warm in zip(Cs, path, strict=True):
        cold = fit_logreg_path(X, y, [C], dtype=torch.float64, tol=1e-8, max_iter=5000)[0]
        assert warm.C == C and warm.converged and cold.converged
        scale = np.abs(cold.coef_).max()
        np.testing.assert_allclose(warm.coef_, cold.coef_, atol=1e-5 * scale)
        cold_iterations += cold.n_iter
    assert sum(m.n_iter for m in path) < cold_iterations


def test_a_start_that_already_meets_tol_takes_no_iteration() -> None:
    X, y = _blobs(3, seed=4)
    first, again = fit_logreg_path(X, y, [1.0, 1.0])
    assert first.n_iter > 0 and first.stop in ("tol", "ftol")
    assert again.n_iter == 0
    restarted = fit_logreg_path(X, y, [1.0], init=first)[0]
    assert restarted.n_iter == 0
    np.testing.assert_array_equal(restarted.coef_, first.coef_)


def test_max_iter_stops_unconverged_and_labels_come_from_classes() -> None:
    X, y = _blobs(3, seed=5)
    labels = np.array(["benign", "malignant", "normal"])[y]
    model = fit_logreg_path(X, labels, [100.0], max_iter=3)[0]
    assert (model.n_iter, model.converged, model.stop) == (3, False, "max_iter")
    assert set(model.predict(X)) <= set(labels)
    np.testing.assert_array_equal(model.classes_, ["benign", "malignant", "normal"])
    np.testing.assert_allclose(model.predict_proba(X).sum(axis=1), 1.0, atol=1e-9)


def test_sklearn_path_counts_convergence_warnings_and_warm_starts() -> None:
    X, y = _blobs(3, seed=6)
    models, estimator = fit_sklearn_path(X, y, [1e4, 1e-2], max_iter=2)
    assert [m.converged for m in models] == [False, False]
    assert models[0].stop == "max_iter"
    more, _ = fit_sklearn_path(X, y, [1e-2], max_iter=2, estimator=estimator)
    assert more[0].n_iter <= 2
    with pytest.warns(ConvergenceWarning):
        reference = LogisticRegression(C=1e-2, max_iter=2).fit(X, y)
    assert not np.allclose(more[0].coef_, reference.coef_)  # it did start from the path


def test_bad_inputs_raise_protocol_errors() -> None:
    X, y = _blobs(3)
    with pytest.raises(ProtocolError, match="two classes"):
        fit_logreg_path(X, np.zeros(len(X), dtype=int), [1.0])
    with pytest.raises(ProtocolError, match="positive"):
        fit_logreg_path(X, y, [0.0])
    with pytest.raises(ProtocolError, match="shape"):
        fit_logreg_path(X, y, [1.0], init=(np.zeros((2, 64)), np.zeros(2)))
    two = fit_logreg_path(X[y < 2], y[y < 2], [1.0])[0]
    with pytest.raises(ProtocolError, match="classes"):
        fit_logreg_path(X, y, [1.0], init=two)


def test_read_only_features_are_used_without_warnings_or_copies() -> None:
    X, y = _blobs(3)
    X.flags.writeable = False  # as the feature store's memory maps
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = fit_logreg_path(X, y, [1.0])[0]
    assert model.converged
