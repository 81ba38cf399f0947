"""Group face embeddings by person without labels, on cosine similarity.

Two registered methods (`register_cluster_method`, `list_cluster_methods`), both stopping at a
similarity threshold instead of a number of clusters (defaults per method in the recognizer's
model card, jobs `cluster-average` and `cluster-chinese-whispers`, stricter than the
verification threshold):

- `average_linkage`: agglomerative clustering that keeps merging the two most similar
  clusters while their average pairwise similarity reaches the threshold (nearest-neighbour
  chain algorithm, O(N^2) time and memory). One chance match between two people's photos does
  not join them, so it suits embeddings whose impostor similarities come near the threshold.
- `chinese_whispers`: faces are nodes, joined when their similarity reaches the threshold;
  every node starts in its own class and repeatedly takes the class of the largest total edge
  weight among its neighbours. Linear in the number of edges, but a few impostor edges can
  chain people together.

Also: pairwise precision/recall/F of a clustering against true labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facesphere.cards import ModelCard
from facesphere.errors import ConfigError
from facesphere.registry import Registry

CLUSTER_METHODS: Registry = Registry("cluster method")
register_cluster_method = CLUSTER_METHODS.register
list_cluster_methods = CLUSTER_METHODS.names

# Rows of the similarity matrix computed at a time (bounds memory at block x N floats).
_BLOCK = 2048


def similarity_graph(
    embeddings: np.ndarray, threshold: float
) -> list[tuple[np.ndarray, np.ndarray]]:
    """For each face, (neighbour indices, similarities) of the other faces at or above
    `threshold`."""
    vectors = np.asarray(embeddings, dtype=np.float32)
    if vectors.ndim != 2:
        raise ValueError(f"embeddings must be (N, D), got shape {vectors.shape}")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors = vectors / np.maximum(norms, 1e-12)
    graph: list[tuple[np.ndarray, np.ndarray]] = []
    for start in range(0, len(vectors), _BLOCK):
        block = vectors[start : start + _BLOCK] @ vectors.T
        for row, sims in enumerate(block):
            sims[start + row] = -np.inf  # no self-loops
            neighbours = np.flatnonzero(sims >= threshold)
            graph.append((neighbours, sims[neighbours].astype(np.float64)))
    return graph


@register_cluster_method("chinese-whispers")
def chinese_whispers(
    embeddings: np.ndarray,
    threshold: float,
    iterations: int = 30,
    seed: int = 0,
) -> np.ndarray:
    """Cluster labels (N,) of `embeddings`: 0 is the largest cluster, then by size (ties by
    first member); a face with no neighbour over `threshold` is a cluster of its own."""
    graph = similarity_graph(embeddings, threshold)
    count = len(graph)
    labels = np.arange(count)
    rng = np.random.default_rng(seed)
    for _ in range(iterations):
        changed = 0
        for node in rng.permutation(count):
            neighbours, weights = graph[node]
            if len(neighbours) == 0:
                continue
            classes, where = np.unique(labels[neighbours], return_inverse=True)
            best = classes[int(np.argmax(np.bincount(where, weights=weights)))]
            if best != labels[node]:
                labels[node] = best
                changed += 1
        if changed == 0:
            break
    return relabel_by_size(labels)


@register_cluster_method("average")
def average_linkage(embeddings: np.ndarray, threshold: float) -> np.ndarray:
    """Cluster labels (N,) by average-linkage agglomeration down to `threshold`: clusters
    are merged while the mean cosine similarity of their members' pairs reaches it. Labels are
    numbered by decreasing cluster size."""
    vectors = np.asarray(embeddings, dtype=np.float32)
    if vectors.ndim != 2:
        raise ValueError(f"embeddings must be (N, D), got shape {vectors.shape}")
    count = len(vectors)
    if count == 0:
        return np.zeros(0, np.int64)
    vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    sim = vectors @ vectors.T
    np.fill_diagonal(sim, -np.inf)
    size = np.ones(count)
    owner = np.arange(count)  # cluster (row) each face belongs to
    open_rows = count
    alive = np.ones(count, bool)
    chain: list[int] = []

    def close(row: int) -> None:
        sim[row, :] = -np.inf
        sim[:, row] = -np.inf
        alive[row] = False

    while open_rows:
        if not chain:
            chain.append(int(np.flatnonzero(alive)[0]))
        top = chain[-1]
        row = sim[top]
        nearest = int(np.argmax(row))
        best = row[nearest]
        if len(chain) > 1 and row[chain[-2]] >= best:
            nearest = chain[-2]  # prefer the previous link on ties, so the chain ends
        if best < threshold:
            # No cluster reaches the threshold with `top`; merging others can only average
            # their similarities to it, never raise them, so `top` is final.
            close(top)
            open_rows -= 1
            chain.pop()
            continue
        if len(chain) > 1 and nearest == chain[-2]:
            chain.pop()
            chain.pop()
            merged = (size[top] * sim[top] + size[nearest] * sim[nearest]) / (
                size[top] + size[nearest]
            )
            close(top)
            open_rows -= 1
            merged[~alive] = -np.inf
            merged[nearest] = -np.inf
            sim[nearest, :] = merged
            sim[:, nearest] = merged
            size[nearest] += size[top]
            owner[owner == top] = nearest
        else:
            chain.append(nearest)
    return relabel_by_size(owner)


def cluster_embeddings(
    embeddings: np.ndarray,
    threshold: float | None = None,
    method: str = "average",
    card: ModelCard | None = None,
) -> np.ndarray:
    """Cluster labels of `embeddings` by `method` ("average" or "chinese-whispers") at
    `threshold` (default: the method's threshold in the model `card` that made them)."""
    return CLUSTER_METHODS.create(
        method, embeddings=embeddings, threshold=cluster_threshold(method, threshold, card)
    )


def cluster_threshold(
    method: str, threshold: float | None = None, card: ModelCard | None = None
) -> float:
    """`threshold`, or when it is None the `card`'s calibrated threshold for `method`."""
    CLUSTER_METHODS.factory(method)
    if threshold is not None:
        return float(threshold)
    if card is None:
        raise ConfigError("clustering needs a threshold or the model card of the embeddings")
    return card.threshold(f"cluster-{method}").value


def relabel_by_size(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered 0.. by decreasing cluster size, ties by first occurrence."""
    labels = np.asarray(labels)
    if labels.size == 0:
        return labels.astype(np.int64)
    classes, first, inverse, sizes = np.unique(
        labels, return_index=True, return_inverse=True, return_counts=True
    )
    order = np.lexsort((first, -sizes))
    rank = np.empty(len(classes), np.int64)
    rank[order] = np.arange(len(classes))
    return rank[inverse.reshape(-1)]


@dataclass
class PairScores:
    """Pairwise clustering quality: of the face pairs put together, the fraction that are the
    same person (precision), and of the same-person pairs, the fraction put together (recall)."""

    precision: float
    recall: float
    f1: float
    predicted_pairs: int
    true_pairs: int
    clusters: int
    people: int

    def to_dict(self) -> dict[str, float | int]:
        return {
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "predicted_pairs": self.predicted_pairs,
            "true_pairs": self.true_pairs,
            "clusters": self.clusters,
            "people": self.people,
        }


def _pairs(counts: np.ndarray) -> int:
    counts = np.asarray(counts, dtype=np.int64)
    return int((counts * (counts - 1) // 2).sum())


def pairwise_scores(truth: np.ndarray, labels: np.ndarray) -> PairScores:
    """Pairwise precision, recall and F1 of cluster `labels` against identities `truth`."""
    truth = np.asarray(truth)
    labels = np.asarray(labels)
    if truth.shape != labels.shape or truth.ndim != 1:
        raise ValueError(f"truth {truth.shape} and labels {labels.shape} must be equal 1-d")
    _, t = np.unique(truth, return_inverse=True)
    _, c = np.unique(labels, return_inverse=True)
    t, c = t.reshape(-1), c.reshape(-1)
    joint = np.unique(t.astype(np.int64) * (c.max(initial=0) + 1) + c, return_counts=True)[1]
    together = _pairs(joint)
    predicted = _pairs(np.bincount(c))
    actual = _pairs(np.bincount(t))
    precision = together / predicted if predicted else 1.0
    recall = together / actual if actual else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return PairScores(
        precision,
        recall,
        f1,
        predicted,
        actual,
        len(np.unique(c)),
        len(np.unique(t)),
    )


def cluster_sizes(labels: np.ndarray) -> list[int]:
    """Sizes of the clusters, by label."""
    labels = np.asarray(labels)
    return [int(v) for v in np.bincount(labels)] if labels.size else []
