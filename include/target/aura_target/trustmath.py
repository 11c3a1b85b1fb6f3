"""TrustMath: EigenTrust-style global trust from the trust graph, as a pure function.

Local trust s_ij is the sum of i's positive trust events towards j (negative sums count as 0, as in
EigenTrust's max(s_ij, 0); self-trust is ignored). Row-normalised, c_ij = s_ij / sum_j s_ij. Then

    t_{k+1} = (1 - alpha) * (C^T t_k + d_k * p) + alpha * p,     t_0 = p

where p is the pre-trust vector (uniform over the pre-trusted peers present in the graph, else over
all peers) and d_k is the trust mass held by dangling peers (no positive outgoing trust), which is
handed to p instead of vanishing. Scores stay a probability vector (they sum to 1).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class TrustResult:
    scores: dict[str, float] = field(default_factory=dict)
    iterations: int = 0
    converged: bool = True
    delta: float = 0.0  # L1 change of the last iteration
    nodes: int = 0
    edges: int = 0      # distinct positive, non-self edges used


def compute_trust(events: Iterable[tuple[str, str, float]], *, alpha: float = 0.15,
                  pre_trusted: Iterable[str] = (), tolerance: float = 1e-9,
                  max_iterations: int = 200) -> TrustResult:
    """Global trust scores from (from_address, to_address, trust_score) events."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    if max_iterations < 1:
        raise ValueError(f"max_iterations must be >= 1, got {max_iterations}")

    local: dict[tuple[str, str], float] = {}
    peers: dict[str, int] = {}
    for source, target, score in events:
        for peer in (source, target):
            peers.setdefault(peer, len(peers))
        if source != target:
            local[(source, target)] = local.get((source, target), 0.0) + float(score)
    if not peers:
        return TrustResult()

    positive = [(peers[s], peers[t], w) for (s, t), w in local.items() if w > 0]
    n = len(peers)
    src = np.array([e[0] for e in positive], dtype=np.int64)
    dst = np.array([e[1] for e in positive], dtype=np.int64)
    weight = np.array([e[2] for e in positive], dtype=np.float64)
    out_sum = np.bincount(src, weights=weight, minlength=n)
    normalised = weight / out_sum[src] if len(positive) else weight
    dangling = out_sum == 0

    pre = [peers[p] for p in pre_trusted if p in peers]
    p = np.zeros(n)
    if pre:
        p[pre] = 1.0 / len(pre)
    else:
        p[:] = 1.0 / n

    t = p.copy()
    delta = float("inf")
    iterations = 0
    while iterations < max_iterations:
        iterations += 1
        propagated = np.bincount(dst, weights=normalised * t[src], minlength=n)
        nxt = (1.0 - alpha) * (propagated + t[dangling].sum() * p) + alpha * p
        delta = float(np.abs(nxt - t).sum())
        t = nxt
        if delta < tolerance:
            break
    names = list(peers)
    return TrustResult(scores={names[i]: float(t[i]) for i in range(n)}, iterations=iterations,
                       converged=delta < tolerance, delta=delta, nodes=n, edges=len(positive))
