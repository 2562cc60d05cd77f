"""Gradient-boosted decision trees over RFNet's descriptor: fitted in NumPy, evaluated in torch.

RFNet's descriptor (:mod:`rfnet.aux`) is about a hundred hand measurements of very different
kinds: box fractions, contrasts, counts, ratios with heavy tails, near-binary flags. A network
reads them through a standardisation and a small MLP, which draws smooth boundaries; what tells
two defects apart is more often a threshold on one measurement within a range of another, the
kind of rule trees find. On our held-out sets, boosted trees on the descriptor alone beat the same
descriptor through an MLP by 0.04-0.12 macro F1 (5-fold CV, docs/rfnet.md), and the trees'
class probabilities mixed with the network's beat either.

:func:`fit_trees` is a second-order multiclass booster in the style of XGBoost/LightGBM
(histograms over at most ``bins`` quantile bins per feature, depth-wise trees, L2 leaf
regularisation, row and feature subsampling, shrinkage). It takes seconds on a few thousand
examples. The result, :class:`TreeEnsemble`, is a set of complete binary trees of fixed depth held
as tensors, so :meth:`TreeEnsemble.logits` runs on any device inside the model's forward pass,
batched over samples and trees (``depth`` gathers). A node that does not split sends every
sample left (threshold ``+inf``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class TreeParams:
    """How the ensemble is grown (defaults: the ``small`` preset's)."""

    rounds: int = 300  # boosting rounds (one tree per class per round)
    depth: int = 4  # every tree is complete to this depth (2**depth leaves)
    learning_rate: float = 0.05  # shrinkage of every leaf value
    l2: float = 1.0  # L2 regularisation of leaf values (lambda)
    min_leaf: int = 10  # fewest training rows on each side of a split
    feature_fraction: float = 0.5  # features each tree may split on (drawn per tree)
    row_fraction: float = 0.8  # rows each round grows its trees on (drawn per round)
    bins: int = 64  # quantile bins per feature
    seed: int = 0


class TreeEnsemble:
    """Multiclass boosted trees as tensors: ``feature``/``threshold`` ``(T, 2**depth - 1)`` per inner
    node in breadth-first order, ``leaf`` ``(T, 2**depth)``, ``base`` ``(K,)``; tree ``t`` adds
    to class ``t % K``."""

    def __init__(
        self, feature: torch.Tensor, threshold: torch.Tensor, leaf: torch.Tensor, base: torch.Tensor
    ):
        self.feature, self.threshold, self.leaf, self.base = feature, threshold, leaf, base

    @property
    def depth(self) -> int:
        return int(self.leaf.shape[1]).bit_length() - 1

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, K)`` class scores (log-odds up to a constant) of ``(N, F)`` features."""
        return tree_logits(x, self.feature, self.threshold, self.leaf, self.base)


def tree_logits(
    x: torch.Tensor, feature: torch.Tensor, threshold: torch.Tensor, leaf: torch.Tensor, base: torch.Tensor
) -> torch.Tensor:
    """The ensemble's ``(N, K)`` scores of ``x (N, F)``; see :class:`TreeEnsemble` for the layout.
    Non-finite features are read as 0 (the fit replaced them the same way)."""
    n, k = x.shape[0], base.shape[0]
    trees, inner = feature.shape
    x = torch.nan_to_num(x.float(), nan=0.0, posinf=0.0, neginf=0.0)
    node = torch.zeros(n, trees, dtype=torch.long, device=x.device)
    offset = torch.arange(trees, device=x.device) * inner
    flat_feature, flat_threshold = feature.reshape(-1).long(), threshold.reshape(-1).float()
    for _ in range((inner + 1).bit_length() - 1):  # depth steps, from the root to the leaves
        at = offset + node
        value = torch.gather(x, 1, flat_feature[at])
        node = 2 * node + 1 + (value > flat_threshold[at]).long()
    leaves = leaf.shape[1]
    values = leaf.float().reshape(-1)[torch.arange(trees, device=x.device) * leaves + (node - inner)]
    return base.float() + values.view(n, trees // k, k).sum(dim=1)


def _bin_edges(x: np.ndarray, bins: int) -> list[np.ndarray]:
    """Per feature, the sorted distinct cut points between quantile bins (at most ``bins - 1``)."""
    qs = np.linspace(0.0, 1.0, bins + 1)[1:-1]
    edges = []
    for col in x.T:
        cuts = np.unique(np.quantile(col, qs, method="lower"))
        edges.append(cuts[cuts < col.max()] if len(cuts) else cuts)
    return edges


def fit_trees(
    x: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    params: TreeParams = TreeParams(),
    weight: np.ndarray | None = None,
) -> TreeEnsemble:
    """Boost ``params.rounds`` rounds of ``num_classes`` trees on features ``x (N, F)`` and labels
    ``y (N,)`` under the softmax cross-entropy, each row's loss scaled by ``weight`` (default 1)."""
    x = np.nan_to_num(np.asarray(x, np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    y = np.asarray(y, np.int64)
    n, f = x.shape
    if n == 0 or len(y) != n:
        raise ValueError(f"fit_trees needs rows with one label each, got x {x.shape} and y {y.shape}")
    if y.min() < 0 or y.max() >= num_classes:
        raise ValueError(f"labels must be in [0, {num_classes}), got {y.min()}..{y.max()}")
    p, k = params, num_classes
    w = np.ones(n) if weight is None else np.asarray(weight, np.float64)
    rng = np.random.default_rng(p.seed)
    edges = _bin_edges(x, p.bins)
    nb = max(2, max(len(e) for e in edges) + 1)
    binned = np.stack([np.searchsorted(e, x[:, j], side="left") for j, e in enumerate(edges)], axis=1)
    flat_bins = binned + np.arange(f) * nb  # (N, F) index into one node's (F * nb) histogram
    onehot = np.eye(k)[y]
    prior = (onehot * w[:, None]).sum(0) / w.sum()
    base = np.log(np.clip(prior, 1e-6, None))
    base -= base.mean()
    score = np.tile(base, (n, 1))
    inner, leaves = 2**p.depth - 1, 2**p.depth
    trees = p.rounds * k
    feature = np.zeros((trees, inner), np.int64)
    threshold = np.full((trees, inner), np.inf)
    leaf = np.zeros((trees, leaves))
    n_feat = max(1, round(p.feature_fraction * f))
    min_leaf = max(1, p.min_leaf)  # a split must leave rows on both sides
    for r in range(p.rounds):
        prob = np.exp(score - score.max(1, keepdims=True))
        prob /= prob.sum(1, keepdims=True)
        grad = (prob - onehot) * w[:, None]
        hess = np.maximum(prob * (1.0 - prob), 1e-6) * w[:, None]
        rows = np.flatnonzero(rng.random(n) < p.row_fraction) if p.row_fraction < 1.0 else np.arange(n)
        for c in range(k):
            t = r * k + c
            allowed = np.zeros(f, bool)
            allowed[rng.choice(f, n_feat, replace=False)] = True
            node = np.zeros(n, np.int64)  # every row's node at the current level (0-based in the level)
            for level in range(p.depth):
                width = 2**level
                first = width - 1  # breadth-first index of the level's first node
                nr = node[rows]
                idx = (nr[:, None] * (f * nb) + flat_bins[rows]).ravel()
                size = width * f * nb
                g_hist = np.bincount(idx, np.repeat(grad[rows, c], f), size).reshape(width, f, nb)
                h_hist = np.bincount(idx, np.repeat(hess[rows, c], f), size).reshape(width, f, nb)
                n_hist = np.bincount(idx, None, size).reshape(width, f, nb)
                gl, hl, nl = (np.cumsum(a, axis=2)[:, :, :-1] for a in (g_hist, h_hist, n_hist))
                gt, ht, nt = g_hist.sum(2)[:, :, None], h_hist.sum(2)[:, :, None], n_hist.sum(2)[:, :, None]
                gain = gl**2 / (hl + p.l2) + (gt - gl) ** 2 / (ht - hl + p.l2) - gt**2 / (ht + p.l2)
                valid = (nl >= min_leaf) & (nt - nl >= min_leaf) & allowed[None, :, None]
                gain = np.where(valid, gain, -np.inf).reshape(width, -1)
                best = gain.argmax(1)
                go_right = np.zeros(n, bool)
                for j in range(width):
                    if not np.isfinite(gain[j, best[j]]) or gain[j, best[j]] <= 1e-12:
                        continue  # no split: threshold stays +inf, every row goes left
                    feat, b = divmod(int(best[j]), nb - 1)
                    feature[t, first + j] = feat
                    threshold[t, first + j] = edges[feat][b]
                    here = node == j
                    go_right |= here & (binned[:, feat] > b)
                node = 2 * node + go_right
            g_leaf = np.bincount(node[rows], grad[rows, c], leaves)
            h_leaf = np.bincount(node[rows], hess[rows, c], leaves)
            leaf[t] = -p.learning_rate * g_leaf / (h_leaf + p.l2)
            score[:, c] += leaf[t][node]
    return TreeEnsemble(
        torch.from_numpy(feature),
        torch.from_numpy(threshold).float(),
        torch.from_numpy(leaf).float(),
        torch.from_numpy(base).float(),
    )
