"""Few-shot evaluation with prototypical networks over cached features.

The original study (docs/original-study.md#few-shot) drew ``iter_num`` episodes; in each
it picked ``n_way`` classes, drew ``n_support + n_query`` distinct images per class,
embedded them, took each class's mean support embedding as its prototype and classified
each query by the nearest prototype in squared Euclidean distance. It reported the mean
episode accuracy and ``1.96 * std / sqrt(episodes)`` (population std) in percent.

Here the same computation runs on features extracted once. Episodes are drawn from a
dedicated ``numpy.random.Generator`` seeded by ``seed`` and depend only on the labels, so
one seed gives the same episodes whatever the backbone (in the original they shifted with
the architecture, docs/original-study.md#defect-d34). Episode indices are sampled up front
and the prototype scoring is vectorised over episodes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from medtransfer.errors import ProtocolError


@dataclass(frozen=True)
class Episodes:
    """Indices into the feature array.

    ``classes``: (E, W) class index per episode slot; ``support``: (E, W, S) and
    ``query``: (E, W, Q) row indices; slot ``w`` of an episode holds class ``classes[e, w]``
    and its queries' target is ``w``.
    """

    classes: np.ndarray
    support: np.ndarray
    query: np.ndarray

    @property
    def n_episodes(self) -> int:
        return int(self.classes.shape[0])


def sample_episodes(
    labels: np.ndarray,
    *,
    n_way: int,
    n_support: int,
    n_query: int,
    n_episodes: int,
    seed: int,
    class_names: tuple[str, ...] | None = None,
) -> Episodes:
    """Draw episodes from ``labels`` (N,) int.

    Each episode picks ``n_way`` distinct classes uniformly, then ``n_support + n_query``
    distinct images of each class uniformly without replacement; the first ``n_support``
    are the support set. Raises :class:`ProtocolError` when a class has too few images or
    the dataset has fewer than ``n_way`` classes (the original crashed or silently ran
    fewer ways).
    """
    if min(n_way, n_support, n_query, n_episodes) < 1:
        raise ProtocolError("--n-way, --n-support, --n-query and --iter-num must all be >= 1.")
    classes = np.unique(labels)
    if len(classes) < n_way:
        raise ProtocolError(
            f"--n-way {n_way} needs {n_way} classes but the data has {len(classes)}; lower --n-way."
        )
    per_episode = n_support + n_query
    members = {int(c): np.flatnonzero(labels == c) for c in classes}
    small = {c: len(m) for c, m in members.items() if len(m) < per_episode}
    if small:
        names = ", ".join(
            f"{class_names[c] if class_names else c}: {n}" for c, n in sorted(small.items())
        )
        raise ProtocolError(
            f"Each episode needs n_support + n_query = {per_episode} images of a class, but some "
            f"classes have fewer ({names}). Lower --n-support/--n-query or add images."
        )
    rng = np.random.default_rng(seed)
    chosen = np.empty((n_episodes, n_way), dtype=np.int64)
    drawn = np.empty((n_episodes, n_way, per_episode), dtype=np.int64)
    for e in range(n_episodes):
        chosen[e] = classes[rng.permutation(len(classes))[:n_way]]
        for w, c in enumerate(chosen[e]):
            pool = members[int(c)]
            drawn[e, w] = pool[rng.choice(len(pool), size=per_episode, replace=False)]
    return Episodes(chosen, drawn[:, :, :n_support], drawn[:, :, n_support:])


def episode_accuracies(
    features: np.ndarray | torch.Tensor,
    episodes: Episodes,
    *,
    device: str = "cpu",
    max_chunk_bytes: int = 64 << 20,
) -> np.ndarray:
    """Prototypical-network accuracy of every episode, shape (E,), fractions in [0, 1].

    ``features``: (N, D). Prototypes are class means of the support features; each query
    goes to the prototype at the smallest squared Euclidean distance (the argmax of
    ``log_softmax(-d)`` in the original). Computed in float64 from explicit differences (no
    ``|q|^2 - 2qp + |p|^2`` shortcut, which loses precision), in chunks of episodes whose
    (e, W*Q, W, D) difference tensor stays under ``max_chunk_bytes``.
    """
    # one writable float32 copy in memory (the store hands out read-only memory maps);
    # gathered rows are promoted to float64 chunk by chunk
    table = torch.from_numpy(np.array(features, dtype=np.float32, copy=True)).to(device)
    n_way = episodes.classes.shape[1]
    n_query = episodes.query.shape[2]
    target = torch.arange(n_way, device=device).repeat_interleave(n_query)  # (W*Q,)
    per_episode_bytes = n_way * n_query * n_way * int(table.shape[1]) * 8
    chunk = max(1, max_chunk_bytes // max(per_episode_bytes, 1))
    out = []
    for start in range(0, episodes.n_episodes, chunk):
        support = torch.as_tensor(episodes.support[start : start + chunk], device=device)
        query = torch.as_tensor(episodes.query[start : start + chunk], device=device)
        prototypes = table[support].double().mean(dim=2)  # (e, W, D)
        queries = table[query].double().flatten(1, 2)  # (e, W*Q, D)
        distances = ((queries[:, :, None, :] - prototypes[:, None, :, :]) ** 2).sum(-1)
        predictions = distances.argmin(dim=-1)  # (e, W*Q)
        out.append((predictions == target).double().mean(dim=1).cpu().numpy())
    return np.concatenate(out)


@dataclass(frozen=True)
class FewShotSummary:
    """Mean episode accuracy and its 95% interval half-width, both in percent."""

    accuracy: float
    ci95: float
    std: float
    episodes: int

    def line(self) -> str:
        """The original's result line."""
        return f"Test Acc = {self.accuracy:4.2f}% +- {self.ci95:4.2f}%"


def summarize(accuracies: np.ndarray) -> FewShotSummary:
    """Mean and ``1.96 * std / sqrt(E)`` (population std) of episode accuracies, in percent."""
    percent = np.asarray(accuracies, dtype=np.float64) * 100
    std = float(np.std(percent))
    return FewShotSummary(
        accuracy=float(np.mean(percent)),
        ci95=1.96 * std / math.sqrt(len(percent)),
        std=std,
        episodes=len(percent),
    )
