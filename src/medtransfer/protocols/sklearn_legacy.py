r"""scikit-learn's lbfgs logistic regression as it was before 1.4, the version the 2022 runs had.

The original's linear probe (docs/original-study.md#linear) fitted
``LogisticRegression(solver='lbfgs', multi_class='multinomial', warm_start=True)`` with the
defaults ``max_iter=100`` and ``tol=1e-4``, and many of its fits stopped at 100 iterations
unconverged. Where a fit stops depends on the exact objective and optimiser settings, and
scikit-learn changed both after the study:

=====================  ======================================  ===============================
\                      scikit-learn < 1.4 (emulated here)      scikit-learn >= 1.4
=====================  ======================================  ===============================
objective              ``sum_i loss_i + ||W||^2 / (2 C)``      the same divided by N (a mean)
``tol`` bounds         ``max |grad|`` of the sum               ``max |grad|`` of the mean
scipy ``ftol``         2.2e-9 (scipy's default, factr 1e7)     ``64 * eps`` (1.4e-14)
scipy ``maxls``        20 (scipy's default)                    50
two classes            a softmax over TWO weight vectors,      one weight vector, binomial
                       both penalised (``multinomial``)        (``multi_class`` removed)
two-class warm start   from ``[-w1, w1]``, ``w1 = coef_``      from ``coef_``
=====================  ======================================  ===============================

The optimum of a converged fit is the same in both versions (for two classes at 2C, see
:mod:`medtransfer.protocols.logreg`); an unconverged one is not. This module minimises the
pre-1.4 objective, in float64 (scikit-learn's lbfgs converted features to float64), with
``scipy.optimize.minimize(method='L-BFGS-B')`` and the pre-1.4 options, and scikit-learn's
warm start, so each fit follows the trajectory the 2022 estimator followed, up to rounding.

What still differs, and by how much:

* rounding: an unconverged 100-iteration fit is chaotic in it; scikit-learn 1.3.2 itself,
  given the same features with their columns merely permuted, lands percents away in its
  coefficients and can score one validation image differently. The 2022 runs cannot be
  replayed more closely than that on any machine;
* the optimiser: scipy 1.15 replaced the Fortran L-BFGS-B 3.0 that the 2022 runs used with
  a C translation. It reproduces the Fortran iterates on smooth problems with exact
  gradients (a test holds it to Fortran runs on Rosenbrock problems) but is known to stop
  elsewhere on some others (scipy issue 23161).

``tests/protocols/test_sklearn_legacy.py`` holds this emulation to a real scikit-learn 1.3.2
(``tests/protocols/data/legacy_sklearn.json``) within the rounding envelope, and shows that
today's scikit-learn lands far outside it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence

import numpy as np
from scipy import optimize
from scipy.special import logsumexp
from threadpoolctl import threadpool_limits

from medtransfer.errors import ProtocolError
from medtransfer.protocols.logreg import LogRegModel

#: scipy's default ``ftol`` for L-BFGS-B (``factr = 1e7`` times machine epsilon), which
#: scikit-learn < 1.4 did not override.
LEGACY_FTOL = 1e7 * np.finfo(float).eps
#: scipy's default number of line-search steps, which scikit-learn < 1.4 did not override.
LEGACY_MAXLS = 20
#: Below this many feature values (N * D) the fits run on one BLAS thread: the optimiser's
#: own vector operations are tiny, and threads only add synchronisation to them.
SINGLE_THREAD_BELOW = 1 << 22


def _objective(w: np.ndarray, X: np.ndarray, Y: np.ndarray, lam: float) -> tuple[float, np.ndarray]:
    """The pre-1.4 multinomial objective and its gradient at ``w`` (K * (D + 1),).

    ``w`` holds the (K, D + 1) matrix ``[W | b]`` row by row; ``X``: (N, D); ``Y``: (N, K)
    one-hot; ``lam = 1 / C``. Value ``sum_i (logsumexp(z_i) - z_i[y_i]) + lam/2 ||W||^2``
    with ``z_i = W x_i + b``, the intercept not penalised.
    """
    K, D = Y.shape[1], X.shape[1]
    params = w.reshape(K, D + 1)
    coef, intercept = params[:, :-1], params[:, -1]
    logits = X @ coef.T + intercept
    lse = logsumexp(logits, axis=1)
    value = float(lse.sum() - np.sum(logits * Y)) + 0.5 * lam * float(np.sum(coef * coef))
    residual = np.exp(logits - lse[:, None]) - Y
    grad = np.empty_like(params)
    grad[:, :-1] = residual.T @ X + lam * coef
    grad[:, -1] = residual.sum(axis=0)
    return value, grad.ravel()


def _start(init: LogRegModel | None, classes: np.ndarray, dim: int) -> np.ndarray:
    """The (K, D + 1) start: zeros, or scikit-learn < 1.4's warm start from ``init``.

    ``init`` is in this package's binomial meaning for two classes (``coef_`` = ``u``, twice
    the old ``coef_``); the old estimator kept ``w1 = u / 2`` and restarted from
    ``[-w1, w1]``.
    """
    K = len(classes)
    if init is None:
        return np.zeros((K, dim + 1))
    if not np.array_equal(init.classes_, classes):
        raise ProtocolError(
            f"Warm start from a model with classes {init.classes_.tolist()} but the data has "
            f"classes {classes.tolist()}."
        )
    previous = np.concatenate(
        [np.asarray(init.coef_, dtype=np.float64), np.asarray(init.intercept_).reshape(-1, 1)],
        axis=1,
    )
    if K == 2:
        half = previous[0] / 2
        return np.stack([-half, half])
    return previous.copy()


def fit_legacy_path(
    X: np.ndarray,
    y: np.ndarray,
    Cs: Sequence[float],
    *,
    max_iter: int = 100,
    tol: float = 1e-4,
    init: LogRegModel | None = None,
) -> list[LogRegModel]:
    """One pre-1.4 ``LogisticRegression(solver='lbfgs', multi_class='multinomial',
    warm_start=True)`` refitted at each C of ``Cs`` in order (the original's grid).

    ``X``: (N, D) features; ``y``: (N,) labels (two or more classes). The first fit starts
    from ``init`` (a model from this function or any solver of this package, e.g. the last
    grid point for the original's refit), else zeros; each later fit from the previous one,
    as the reused estimator did. ``converged`` is False where scikit-learn raised its
    ConvergenceWarning (scipy's status not 0); ``n_iter`` is scipy's ``nit`` capped at
    ``max_iter``. Two-class models are reported in the binomial meaning (``coef_`` (1, D)
    = ``w1 - w0``, twice the old ``coef_``), so predictions and probabilities are the old
    estimator's. ``objective`` is the pre-1.4 (summed) objective; ``grad_max`` its
    ``max |grad|``. Fits use the pre-1.4 optimiser settings (scipy's defaults then:
    ``ftol`` :data:`LEGACY_FTOL`, :data:`LEGACY_MAXLS` line-search steps, 10 pairs).
    """
    if len(Cs) == 0:
        raise ProtocolError("The list of C values is empty.")
    if any(not (c > 0) for c in Cs):
        raise ProtocolError(f"C values must be positive; got {list(Cs)}.")
    X = np.asarray(X, dtype=np.float64)
    labels = np.asarray(y).reshape(-1)
    classes, codes = np.unique(labels, return_inverse=True)
    if len(classes) < 2:
        raise ProtocolError(f"Logistic regression needs two classes; y has {len(classes)}.")
    if X.ndim != 2 or X.shape[0] != len(labels):
        raise ProtocolError(f"X must be (N, D) with N = len(y) = {len(labels)}; got {X.shape}.")
    Y = np.eye(len(classes))[codes]
    params = _start(init, classes, X.shape[1])
    models = []
    small = X.size < SINGLE_THREAD_BELOW
    with threadpool_limits(limits=1) if small else contextlib.nullcontext():
        for C in Cs:
            params = _fit_one(X, Y, classes, float(C), params, models, max_iter, tol)
    return models


def _fit_one(
    X: np.ndarray,
    Y: np.ndarray,
    classes: np.ndarray,
    C: float,
    params: np.ndarray,
    models: list[LogRegModel],
    max_iter: int,
    tol: float,
) -> np.ndarray:
    """Fit at ``C`` from ``params`` (K, D + 1), append the model to ``models``, and return
    where the next fit starts (the old estimator's warm start)."""
    start = time.perf_counter()
    result = optimize.minimize(
        _objective,
        params.ravel(),
        args=(X, Y, 1.0 / float(C)),
        method="L-BFGS-B",
        jac=True,
        options={"maxiter": max_iter, "gtol": tol, "ftol": LEGACY_FTOL, "maxls": LEGACY_MAXLS},
    )
    params = result.x.reshape(len(classes), -1)
    n_iter = min(int(result.nit), max_iter)
    stop = "tol" if result.status == 0 else "max_iter" if n_iter >= max_iter else "warning"
    models.append(_model(params, classes, float(C), n_iter, stop, result, start))
    if len(classes) == 2:  # the estimator kept only w1 and restarts from [-w1, w1]
        return np.stack([-params[1], params[1]])
    return params


def _model(
    params: np.ndarray,
    classes: np.ndarray,
    C: float,
    n_iter: int,
    stop: str,
    result: optimize.OptimizeResult,
    started: float,
) -> LogRegModel:
    """A :class:`LogRegModel` of the fitted (K, D + 1) ``params``; ``stop``: ``"tol"``
    (converged), ``"max_iter"`` or ``"warning"``; ``started``: when the fit began."""
    if len(classes) == 2:  # the old coef_ is w1; u = w1 - (-w1) in the binomial meaning
        coef, intercept = 2 * params[1:, :-1], 2 * params[1:, -1]
    else:
        coef, intercept = params[:, :-1].copy(), params[:, -1].copy()
    return LogRegModel(
        coef_=coef,
        intercept_=intercept,
        classes_=classes,
        C=C,
        n_iter=n_iter,
        converged=stop == "tol",
        stop=stop,
        objective=float(result.fun),
        grad_max=float(np.max(np.abs(result.jac))),
        seconds=time.perf_counter() - started,
    )
