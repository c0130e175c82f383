"""Write ``legacy_sklearn.json``: the original's linear procedure run by a real scikit-learn
before 1.4 (docs/original-study.md#linear), the reference that
``tests/protocols/test_sklearn_legacy.py`` holds medtransfer's emulation to.

Run it in an environment with scikit-learn < 1.4 (it refuses a newer one), e.g.::

    python -m venv /tmp/sk13 && /tmp/sk13/bin/pip install "scikit-learn==1.3.2" "numpy<2"
    /tmp/sk13/bin/python tests/protocols/data/make_legacy_sklearn_fixture.py

It imports nothing from medtransfer. Each problem is small, ill-conditioned features (a
non-negative, offset, unevenly scaled mix like pooled CNN features) where most fits of the
grid stop at ``max_iter=100`` unconverged, which is where the pre-1.4 objective matters.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import scipy
import sklearn
from scipy import optimize
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

OUT = Path(__file__).with_name("legacy_sklearn.json")
# 1 / wd for wd = 10 ** linspace(-6, 5, 9): nine points of the original's grid's range
CS = [float(1.0 / w) for w in np.logspace(-6, 5, 9)]


def features(rng: np.random.Generator, means: np.ndarray, n: int) -> tuple:
    """(n, d) features rounded to 6 decimals and (n,) balanced labels around ``means``."""
    n_classes, d = means.shape
    labels = np.arange(n) % n_classes
    rng.shuffle(labels)
    scales = 1.0 / np.sqrt(np.arange(1, d + 1))
    raw = (means[labels] + rng.normal(0, 1, (n, d))) * scales * 30 + 10.0
    return np.maximum(raw, 0).round(6), labels


def procedure(splits: dict, perm: np.ndarray) -> dict:
    """The original's linear.py over ``splits``: the warm-started grid, the strict-greater
    selection from 0, the refit on train+val from the last grid point, the test score.

    The features' columns are taken in the order ``perm`` (the same problem, summed in
    another order); coefficients are reported in the original column order."""
    clf = LogisticRegression(solver="lbfgs", multi_class="multinomial", warm_start=True)
    grid, best_score, best_C = [], 0.0, None

    def coef() -> list:
        out = np.empty_like(clf.coef_)
        out[:, perm] = clf.coef_
        return out.tolist()

    X_train, y_train = np.array(splits["X_train"])[:, perm], np.array(splits["y_train"])
    X_val, y_val = np.array(splits["X_val"])[:, perm], np.array(splits["y_val"])
    for C in CS:
        clf.set_params(C=C)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            clf.fit(X_train, y_train)
        score = 100 * clf.score(X_val, y_val)
        grid.append(
            {
                "C": C,
                "coef": coef(),
                "intercept": clf.intercept_.tolist(),
                "n_iter": int(np.max(clf.n_iter_)),
                "converged": not any(w.category is ConvergenceWarning for w in caught),
                "val_accuracy": score,
            }
        )
        if score > best_score:
            best_score, best_C = score, C
    X_trainval = np.concatenate([X_train, X_val])
    y_trainval = np.concatenate([y_train, y_val])
    clf.set_params(C=best_C)
    clf.fit(X_trainval, y_trainval)
    X_test, y_test = np.array(splits["X_test"])[:, perm], np.array(splits["y_test"])
    return {
        "grid": grid,
        "chosen_C": best_C,
        "refit": {
            "coef": coef(),
            "intercept": clf.intercept_.tolist(),
            "n_iter": int(np.max(clf.n_iter_)),
        },
        "test_predictions": clf.predict(X_test).tolist(),
        "test_accuracy": 100 * clf.score(X_test, y_test),
    }


def rosenbrock(x: np.ndarray) -> tuple[float, np.ndarray]:
    """The scaled Rosenbrock function ``sum 10 (x[i+1] - x[i]^2)^2 + (1 - x[i])^2``."""
    head, tail = x[:-1], x[1:]
    value = float(np.sum(10 * (tail - head**2) ** 2 + (1 - head) ** 2))
    grad = np.zeros_like(x)
    grad[:-1] = -40 * head * (tail - head**2) - 2 * (1 - head)
    grad[1:] += 20 * (tail - head**2)
    return value, grad


def lbfgsb_runs() -> list[dict]:
    """The Fortran L-BFGS-B 3.0 of scipy < 1.15 on Rosenbrock problems: the reference the
    installed scipy's L-BFGS-B (a C translation since scipy 1.15) is held to, because the
    emulation runs on it."""
    if tuple(int(p) for p in scipy.__version__.split(".")[:2]) >= (1, 15):
        sys.exit(f"needs scipy < 1.15 (the Fortran L-BFGS-B); found {scipy.__version__}")
    runs = []
    for x0, options in (
        ([-1.0, 1.0], {"ftol": 0.0}),
        ([-1.2, 1.0], {}),
        ([0.0] * 10, {"maxiter": 30}),
        ([-0.5, 2.0, -1.5, 0.5, 1.0, -2.0], {"gtol": 1e-8, "maxls": 5}),
    ):
        result = optimize.minimize(
            rosenbrock, np.array(x0), jac=True, method="L-BFGS-B", options=options
        )
        runs.append(
            {
                "x0": x0,
                "options": options,
                "x": result.x.tolist(),
                "fun": float(result.fun),
                "nit": int(result.nit),
                "nfev": int(result.nfev),
                "status": int(result.status),
            }
        )
    return runs


def main() -> None:
    major, minor = (int(p) for p in sklearn.__version__.split(".")[:2])
    if (major, minor) >= (1, 4):
        sys.exit(f"needs scikit-learn < 1.4 (the pre-1.4 objective); found {sklearn.__version__}")
    problems = {}
    for name, n_classes, dim, seed in (("binary", 2, 96, 0), ("three_classes", 3, 16, 1)):
        rng = np.random.default_rng(seed)
        means, splits = rng.normal(0, 0.5, (n_classes, dim)), {}
        for split, n in (("train", 80), ("val", 20), ("test", 40)):
            X, y = features(rng, means, n)
            splits[f"X_{split}"], splits[f"y_{split}"] = X.tolist(), y.tolist()
        identity, shuffled = np.arange(dim), np.random.default_rng(seed + 10).permutation(dim)
        problems[name] = {
            "inputs": splits,
            "expected": procedure(splits, identity),
            # the same run with the feature columns permuted: how far scikit-learn 1.3 lands
            # from itself when only the rounding changes (the envelope a faithful emulation
            # must stay in)
            "permuted": procedure(splits, shuffled),
        }
    versions = {"scikit-learn": sklearn.__version__, "scipy": scipy.__version__}
    fixture = {"versions": versions, "Cs": CS, "problems": problems, "lbfgsb": lbfgsb_runs()}
    OUT.write_text(json.dumps(fixture) + "\n")
    print(f"wrote {OUT} with scikit-learn {sklearn.__version__}, scipy {scipy.__version__}")


if __name__ == "__main__":
    main()
