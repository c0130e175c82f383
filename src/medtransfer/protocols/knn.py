"""k-nearest-neighbour classification over cached features (cosine, temperature-weighted).

The protocol every modern SSL benchmark reports (e.g. DINO's): features are L2-normalised,
each test feature takes its ``k`` most cosine-similar train features, and each neighbour
votes for its class with weight ``exp(similarity / temperature)``. All requested ``k``
come from one similarity pass (the top ``max(ks)`` neighbours, cumulated).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from medtransfer.errors import ProtocolError


@dataclass(frozen=True)
class KnnVotes:
    """Class scores of every test row for one ``k``: ``scores`` (M, K), rows sum to 1."""

    k: int
    scores: np.ndarray

    @property
    def predictions(self) -> np.ndarray:
        """Predicted class per test row, (M,)."""
        return self.scores.argmax(axis=1)


def knn_votes(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    *,
    ks: Sequence[int] = (10, 20, 100, 200),
    temperature: float = 0.07,
    n_classes: int | None = None,
    device: str = "cpu",
    chunk: int = 1024,
) -> list[KnnVotes]:
    """Temperature-weighted cosine kNN votes for every ``k`` in ``ks``.

    ``train_features``: (N, D); ``train_labels``: (N,) int; ``test_features``: (M, D).
    A ``k`` larger than N uses all N neighbours. Returns one :class:`KnnVotes` per k.
    """
    if not ks or min(ks) < 1:
        raise ProtocolError("--k values must be positive integers.")
    if temperature <= 0:
        raise ProtocolError("--temperature must be positive.")
    n_classes = int(n_classes or int(np.max(train_labels)) + 1)
    train = torch.nn.functional.normalize(
        torch.as_tensor(np.asarray(train_features, dtype=np.float32), device=device), dim=1
    )
    labels = torch.as_tensor(np.asarray(train_labels, dtype=np.int64), device=device)
    top = min(max(ks), train.shape[0])
    outputs: dict[int, list[np.ndarray]] = {k: [] for k in ks}
    for start in range(0, len(test_features), chunk):
        block = torch.as_tensor(
            np.asarray(test_features[start : start + chunk], dtype=np.float32), device=device
        )
        similarity = torch.nn.functional.normalize(block, dim=1) @ train.T  # (m, N)
        values, index = similarity.topk(top, dim=1)  # sorted, most similar first
        weights = (values / temperature).exp()  # (m, top)
        onehot = torch.nn.functional.one_hot(labels[index], n_classes).to(weights.dtype)
        cumulative = (weights.unsqueeze(-1) * onehot).cumsum(dim=1)  # (m, top, K)
        for k in ks:
            votes = cumulative[:, min(k, top) - 1, :]
            outputs[k].append((votes / votes.sum(dim=1, keepdim=True)).cpu().numpy())
    return [KnnVotes(k, np.concatenate(outputs[k])) for k in ks]
