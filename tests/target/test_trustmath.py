"""The TrustMath power iteration on small graphs whose scores are checked by hand."""
from __future__ import annotations

import pytest

from aura_target.trustmath import compute_trust


def test_empty_graph_gives_no_scores():
    result = compute_trust([])
    assert result.scores == {} and result.converged and result.nodes == 0


def test_symmetric_pair_splits_trust_evenly():
    result = compute_trust([("a", "b", 1.0), ("b", "a", 1.0)])
    assert result.scores == pytest.approx({"a": 0.5, "b": 0.5})


def test_cycle_is_uniform():
    result = compute_trust([("a", "b", 2.0), ("b", "c", 5.0), ("c", "a", 0.1)])
    assert result.scores == pytest.approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})


def test_star_with_dangling_centre_matches_closed_form():
    # a -> c, b -> c, c trusts nobody (dangling): its mass goes back to the uniform pre-trust p.
    # Stationary: x = (1-alpha) y/3 + alpha/3 for a and b, y = 1 - 2x for c.
    # alpha = 0.15: y = 0.9 / (1 + 2 * 0.85 / 3) = 0.574468..., x = 0.212765...
    result = compute_trust([("a", "c", 1.0), ("b", "c", 1.0)], alpha=0.15, tolerance=1e-12)
    assert result.converged
    assert result.scores["c"] == pytest.approx(0.9 / (1 + 2 * 0.85 / 3), abs=1e-9)
    assert result.scores["a"] == pytest.approx(result.scores["b"])
    assert sum(result.scores.values()) == pytest.approx(1.0)


def test_outgoing_trust_is_normalised_per_node():
    # a gives 3 to b and 1 to c; b and c trust a back; alpha = 0.15, p uniform. By hand:
    #   t_b + t_c = (1-alpha) t_a + 2 alpha/3  and  t_a = (1-alpha)(t_b + t_c) + alpha/3
    #   => t_a = alpha/3 (2(1-alpha) + 1) / (1 - (1-alpha)^2) = 0.135 / 0.2775
    #   t_b = (1-alpha) 3/4 t_a + alpha/3,  t_c = (1-alpha) 1/4 t_a + alpha/3
    events = [("a", "b", 3.0), ("a", "c", 1.0), ("b", "a", 1.0), ("c", "a", 1.0)]
    t_a = 0.135 / 0.2775
    expected = {"a": t_a, "b": 0.85 * 0.75 * t_a + 0.05, "c": 0.85 * 0.25 * t_a + 0.05}
    result = compute_trust(events, alpha=0.15, tolerance=1e-13, max_iterations=1000)
    assert result.converged and result.scores == pytest.approx(expected, abs=1e-9)
    # Only the proportions of a's outgoing trust matter, not their scale.
    scaled = [(s, t, w * 100) for s, t, w in events]
    assert compute_trust(scaled, alpha=0.15, tolerance=1e-13, max_iterations=1000).scores == \
        pytest.approx(expected, abs=1e-9)


def test_repeated_events_add_up_and_negative_or_self_trust_is_ignored():
    # a->b twice (2 in all) and a->c once: like a->b 2, a->c 1. a->d sums to -1: ignored (d dangling).
    events = [("a", "b", 1.0), ("a", "b", 1.0), ("a", "c", 1.0), ("a", "a", 9.0),
              ("a", "d", 1.0), ("a", "d", -2.0), ("b", "a", 1.0), ("c", "a", 1.0)]
    result = compute_trust(events, alpha=0.15, tolerance=1e-13, max_iterations=1000)
    assert result.edges == 4  # a->b, a->c, b->a, c->a
    # d gets only the pre-trust share that every peer gets (its own dangling mass and alpha, via p);
    # above that share, b receives exactly twice what c does.
    t = result.scores
    assert t["b"] - t["d"] == pytest.approx(2 * (t["c"] - t["d"]), rel=1e-9)


def test_pre_trusted_peers_receive_the_damping_mass():
    events = [("a", "b", 1.0), ("b", "c", 1.0), ("c", "b", 1.0)]
    plain = compute_trust(events, alpha=0.5)
    pre = compute_trust(events, alpha=0.5, pre_trusted=["a"])
    assert pre.scores["a"] > plain.scores["a"]
    assert pre.scores["a"] == pytest.approx(0.5)  # only p gives a anything: alpha * 1 + 0.5 * 0
    unknown = compute_trust(events, alpha=0.5, pre_trusted=["zzz"])  # absent pre-trusted: uniform
    assert unknown.scores == pytest.approx(plain.scores)


def test_stops_at_max_iterations_when_not_converging():
    # Without damping, a 2-cycle started from pre-trust on one peer oscillates forever.
    result = compute_trust([("a", "b", 1.0), ("b", "a", 1.0)], alpha=0.0, pre_trusted=["a"],
                           max_iterations=7)
    assert result.iterations == 7 and not result.converged and result.delta == pytest.approx(2.0)


def test_converges_within_tolerance():
    events = [(f"n{i}", f"n{(i * 7 + 3) % 20}", 1.0 + i % 3) for i in range(20)]
    events += [(f"n{i}", f"n{(i + 1) % 20}", 1.0) for i in range(20)]
    result = compute_trust(events, tolerance=1e-10, max_iterations=500)
    assert result.converged and result.delta < 1e-10 and result.iterations > 1
    assert sum(result.scores.values()) == pytest.approx(1.0)


@pytest.mark.parametrize("kwargs", [{"alpha": 1.5}, {"alpha": -0.1}, {"max_iterations": 0}])
def test_rejects_bad_parameters(kwargs):
    with pytest.raises(ValueError):
        compute_trust([("a", "b", 1.0)], **kwargs)
