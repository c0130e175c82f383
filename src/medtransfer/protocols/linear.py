"""Linear evaluation: L2 logistic regression on frozen features, C chosen on a hold-out split.

The original (docs/original-study.md#linear): for each C of a 45-point grid, in order of
descending C, fit ``LogisticRegression(solver='lbfgs', warm_start=True)`` (max_iter 100,
tol 1e-4) on the train features and score the val features with the dataset metric; the
chosen C is the first whose score is STRICTLY greater than the running best, which starts
at 0 (ties go to the larger C). Then refit at that C on trainval (train + val) and report
the test metric. With ``--C`` the validation is skipped.

Here the same procedure runs on cached features with either solver:

* ``solver="sklearn"``: the original's procedure literally (one estimator reused along the
  grid and for the refit), with ConvergenceWarnings counted instead of silenced
  (docs/original-study.md#defect-e14).
* ``solver="sklearn-legacy"``: the same procedure with scikit-learn < 1.4's lbfgs (the
  version the 2022 runs had), emulated (:mod:`medtransfer.protocols.sklearn_legacy`):
  scikit-learn 1.4 rescaled the objective and changed the optimiser's stopping settings,
  so an installed scikit-learn >= 1.4 stops its unconverged fits elsewhere.
* ``solver="torch"``: :func:`fit_logreg_path`, the same objective and tolerance, warm
  started along the grid, by default with up to 1000 iterations so that every fit
  converges (the original stopped at 100 and hid the warnings).

Refit start (``refit_init``): the original's estimator still held the last grid point's
coefficients (C = 1e-5, fitted on train), so its refit started there (``"last"``, the
default for both scikit-learn solvers). The torch default starts from the chosen C's train
solution (``"chosen"``), which is closer to the refit's optimum; ``"zeros"`` is a cold
start. A converged refit reaches the same optimum from any start; only unconverged ones
differ. With ``fixed_C`` the refit starts from zeros, as the original's fresh estimator did.

Two-class datasets (``binary``): the original passed ``multi_class='multinomial'``, so its
two-class fits minimised a two-vector softmax objective, which equals scikit-learn >= 1.5's
binomial objective at 2C (:mod:`medtransfer.protocols.logreg`). The default
``binary="multinomial"`` keeps the original's meaning of C for both solvers (scikit-learn
is then fitted at 2C); ``binary="binomial"`` uses today's scikit-learn meaning.
``solver="sklearn-legacy"`` always fits the original's two-vector objective itself.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from medtransfer.errors import ProtocolError
from medtransfer.protocols.logreg import (
    BinaryMode,
    LogRegModel,
    fit_logreg_path,
    fit_sklearn_path,
)
from medtransfer.protocols.metrics import (
    ACCURACY,
    METRICS,
    classification_metrics,
    dataset_metric,
)
from medtransfer.protocols.sklearn_legacy import fit_legacy_path

Solver = Literal["torch", "sklearn", "sklearn-legacy"]
SOLVERS: tuple[str, ...] = ("torch", "sklearn", "sklearn-legacy")
#: The scikit-learn solvers: the original's procedure, max_iter 100, refit from the last C.
SKLEARN_SOLVERS: tuple[str, ...] = ("sklearn", "sklearn-legacy")
RefitInit = Literal["last", "chosen", "zeros"]


def c_grid(points: int) -> tuple[float, ...]:
    """``C = 1 / w`` for ``w`` in ``torch.logspace(-6, 5, points)``, in that order: the
    original's grid of ``points`` values (its -w), float32 grid, reciprocal in float64."""
    return tuple(1.0 / w for w in torch.logspace(-6, 5, points).tolist())


# The original's 45 values 10^(k/4), k = 24, 23, ..., -20, i.e. 1e6 down to 1e-5 (the
# readme's "1e-6 to 1e5" is the range of wd, docs/original-study.md#defect-e15).
C_GRID: tuple[float, ...] = c_grid(45)


@dataclass(frozen=True)
class LinearResult:
    """A finished linear evaluation.

    ``val_curve``: ((C, val score), ...) in grid order, empty with ``fixed_C``;
    ``metrics``: :func:`~medtransfer.protocols.metrics.classification_metrics` of the test
    probabilities (the test metric under its record key, ``accuracy``,
    ``balanced_accuracy`` and, for two classes, ``auc``; all in percent);
    ``test_predictions``: (N_test,) labels; ``test_probabilities``: (N_test, K), columns
    ordered as ``classes``; ``n_iter``/``converged``: per grid fit, then the refit;
    ``unconverged``: how many of those fits stopped unconverged (for scikit-learn, the
    ConvergenceWarnings captured); ``timings``: seconds for ``validation``, ``refit``,
    ``total``.
    """

    chosen_C: float
    val_curve: tuple[tuple[float, float], ...]
    metric: str
    metrics: dict[str, float]
    test_predictions: np.ndarray
    test_probabilities: np.ndarray
    classes: np.ndarray
    n_iter: tuple[int, ...]
    converged: tuple[bool, ...]
    unconverged: int
    solver: str
    timings: dict[str, float]


def select_C(curve: Sequence[tuple[float, float]]) -> float:
    """The original's rule over ``curve`` ((C, score), ...) in grid order: the first C whose
    score is strictly greater than the running best, starting from 0 (so ties keep the
    earlier, larger C). If no score exceeds 0 (the original then crashed on an unset C),
    the first C."""
    if not curve:
        raise ProtocolError("Cannot select C from an empty validation curve.")
    best_score, best_C = 0.0, curve[0][0]
    for C, score in curve:
        if score > best_score:
            best_score, best_C = score, C
    return best_C


class _Fitter:
    """One solver with its settings; ``path`` fits a list of Cs with warm starts."""

    def __init__(
        self,
        solver: Solver,
        *,
        max_iter: int,
        tol: float,
        binary: BinaryMode,
        device: str | torch.device,
        dtype: torch.dtype,
    ) -> None:
        if solver not in SOLVERS:
            raise ProtocolError(f"solver must be one of {', '.join(SOLVERS)}, not {solver!r}.")
        if solver == "sklearn-legacy" and binary != "multinomial":
            raise ProtocolError(
                "solver 'sklearn-legacy' fits the original's two-class multinomial objective; "
                "binary='binomial' needs solver 'sklearn' or 'torch'."
            )
        self.solver, self.max_iter, self.tol, self.binary = solver, max_iter, tol, binary
        self.device, self.dtype = device, dtype
        self.estimator = None  # the reused scikit-learn estimator

    def path(
        self,
        X: np.ndarray,
        y: np.ndarray,
        Cs: Sequence[float],
        init: LogRegModel | None,
        keep_estimator: bool,
    ) -> list[LogRegModel]:
        """Fit (N, D) ``X`` and (N,) ``y`` at each C in order; torch and the legacy
        emulation start from ``init``, scikit-learn from its previous estimator when
        ``keep_estimator``."""
        if self.solver == "sklearn-legacy":
            return fit_legacy_path(X, y, Cs, max_iter=self.max_iter, tol=self.tol, init=init)
        if self.solver == "sklearn":
            estimator = self.estimator if keep_estimator else None
            models, self.estimator = fit_sklearn_path(
                X, y, Cs, max_iter=self.max_iter, tol=self.tol, binary=self.binary,
                estimator=estimator,
            )  # fmt: skip
            return models
        return fit_logreg_path(
            X, y, Cs, device=self.device, dtype=self.dtype, max_iter=self.max_iter,
            tol=self.tol, init=init, binary=self.binary,
        )  # fmt: skip


def _validate(
    fitter: _Fitter,
    metric: str,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    Cs: Sequence[float],
) -> tuple[list[LogRegModel], tuple[tuple[float, float], ...]]:
    """Fit the grid on ``train``, score each model on ``val``: (models, val curve)."""
    models = fitter.path(*train, Cs, init=None, keep_estimator=False)
    curve = tuple((m.C, dataset_metric(metric, val[1], m.predict(val[0]))) for m in models)
    return models, curve


def linear_evaluation(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
    X_test: np.ndarray,
    y_test: np.ndarray,
    *,
    metric: str = ACCURACY,
    Cs: Sequence[float] = C_GRID,
    fixed_C: float | None = None,
    solver: Solver = "torch",
    refit_init: RefitInit | None = None,
    max_iter: int | None = None,
    tol: float = 1e-4,
    binary: BinaryMode = "multinomial",
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> LinearResult:
    """The original's linear protocol over features (module docstring).

    ``X_*``: (N_*, D) float features; ``y_*``: (N_*,) labels. trainval is train followed by
    val. ``metric``: the dataset's metric name (``accuracy`` or ``mean per-class
    accuracy``), used for selection and reported on test. ``fixed_C`` skips validation
    (the original's ``--C``). ``refit_init`` defaults to ``"last"`` for the scikit-learn
    solvers (the original) and ``"chosen"`` for torch. ``max_iter`` defaults to 100 for the
    scikit-learn solvers (the original) and 1000 for torch; ``tol`` is scikit-learn's
    gradient tolerance for all. ``binary``: the two-class objective (module docstring).
    ``device`` and ``dtype``: see :func:`fit_logreg_path` (torch only).
    """
    if metric not in METRICS:
        raise ProtocolError(f"Unknown metric {metric!r}; known: {', '.join(METRICS)}.")
    if max_iter is None:
        max_iter = 100 if solver in SKLEARN_SOLVERS else 1000
    if refit_init is None:
        refit_init = "last" if solver in SKLEARN_SOLVERS else "chosen"
    if refit_init not in ("last", "chosen", "zeros"):
        raise ProtocolError(f"refit_init must be last, chosen or zeros, not {refit_init!r}.")
    if solver == "sklearn" and refit_init == "chosen":
        raise ProtocolError("refit_init='chosen' needs solver='torch'.")
    if fixed_C is not None and not fixed_C > 0:
        raise ProtocolError(f"--C must be positive; got {fixed_C}.")
    fitter = _Fitter(solver, max_iter=max_iter, tol=tol, binary=binary, device=device, dtype=dtype)
    start = time.perf_counter()
    fits: list[LogRegModel] = []
    curve: tuple[tuple[float, float], ...] = ()
    init = None
    if fixed_C is None:
        fits, curve = _validate(fitter, metric, (X_train, y_train), (X_val, y_val), Cs)
        chosen = select_C(curve)
        if refit_init == "last":
            init = fits[-1]
        elif refit_init == "chosen":
            init = fits[[m.C for m in fits].index(chosen)]
    else:
        chosen = float(fixed_C)
    validated = time.perf_counter()

    X_trainval = np.concatenate([np.asarray(X_train), np.asarray(X_val)])
    y_trainval = np.concatenate([np.asarray(y_train), np.asarray(y_val)])
    if init is not None and not np.array_equal(init.classes_, np.unique(y_trainval)):
        init = None  # val holds a class that train lacks: the shapes differ, start cold
    # scikit-learn's warm start is its reused estimator, which holds the last grid point
    keep_estimator = solver == "sklearn" and init is not None
    final = fitter.path(X_trainval, y_trainval, [chosen], init, keep_estimator)[0]
    finished = time.perf_counter()

    probabilities = final.predict_proba(X_test)
    predictions = final.predict(X_test)
    all_fits = [*fits, final]
    return LinearResult(
        chosen_C=chosen,
        val_curve=curve,
        metric=metric,
        metrics=classification_metrics(
            np.asarray(y_test), probabilities, metric, classes=final.classes_
        ),
        test_predictions=predictions,
        test_probabilities=probabilities,
        classes=final.classes_,
        n_iter=tuple(m.n_iter for m in all_fits),
        converged=tuple(m.converged for m in all_fits),
        unconverged=sum(not m.converged for m in all_fits),
        solver=solver,
        timings={
            "validation": validated - start,
            "refit": finished - validated,
            "total": finished - start,
        },
    )
