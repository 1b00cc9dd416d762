"""jaxdistill.stats against references written differently: seed summaries by hand, the paired
bootstrap against a per-resample loop over per-seed accuracies, and cases whose interval is
known exactly."""

import math

import numpy as np
import pytest

from jaxdistill import stats


def correct(rng, n_seeds, n, p):
  """[n_seeds, n] 0/1: each seed right on each example with probability p (per example)."""
  return (rng.random((n_seeds, n)) < p).astype(np.int8)


def reference_ci(a, b, n_boot, seed, alpha):
  """The definition, literally: per resample, draw example indices, score every seed of A
  and of B on them, pair seed i with seed i, average over seeds; percentiles of the list."""
  rng = np.random.default_rng(seed)
  n = a.shape[1]
  boots = []
  for _ in range(n_boot):
    idx = rng.integers(0, n, size=n)
    acc_a = [a[i, idx].sum() / n for i in range(a.shape[0])]
    acc_b = [b[i, idx].sum() / n for i in range(b.shape[0])]
    boots.append(sum(x - y for x, y in zip(acc_a, acc_b)) / a.shape[0])
  diff = sum(a[i].mean() - b[i].mean() for i in range(a.shape[0])) / a.shape[0]
  boots = np.sort(boots)
  # Linear interpolation between order statistics (numpy's default percentile), by hand.
  def q(p):
    h = (n_boot - 1) * p
    lo = math.floor(h)
    return boots[lo] + (h - lo) * (boots[min(lo + 1, n_boot - 1)] - boots[lo])
  return diff, q(alpha / 2), q(1 - alpha / 2)


def test_summary_by_hand():
  s = stats.summary([0.80, 0.82, 0.87])
  assert s["n"] == 3
  assert s["mean"] == pytest.approx(2.49 / 3)
  m = 2.49 / 3
  assert s["std"] == pytest.approx(math.sqrt(((0.80 - m) ** 2 + (0.82 - m) ** 2 + (0.87 - m) ** 2) / 2))
  assert s["median"] == pytest.approx(0.82)
  assert stats.summary([0.1, 0.4])["median"] == pytest.approx(0.25)
  one = stats.summary([0.5])
  assert one["n"] == 1 and one["mean"] == 0.5 and math.isnan(one["std"])
  with pytest.raises(ValueError, match="no values"):
    stats.summary([])


@pytest.mark.parametrize("n_seeds, alpha", [(1, 0.05), (3, 0.05), (2, 0.1)])
def test_matches_the_reference_loop(n_seeds, alpha):
  rng = np.random.default_rng(n_seeds)
  a, b = correct(rng, n_seeds, 300, 0.8), correct(rng, n_seeds, 300, 0.78)
  n_boot = 2300  # crosses the implementation's chunk boundaries
  got = stats.paired_bootstrap_ci(a, b, n_boot=n_boot, seed=7, alpha=alpha)
  want = reference_ci(a, b, n_boot, 7, alpha)
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
  assert got[1] <= got[0] <= got[2]


def test_identical_methods_give_exactly_zero():
  a = correct(np.random.default_rng(0), 3, 500, 0.8)
  assert stats.paired_bootstrap_ci(a, a.copy(), n_boot=500) == (0.0, 0.0, 0.0)
  assert not stats.excludes_zero(0.0, 0.0)


def test_a_large_effect_excludes_zero_and_a_null_one_does_not():
  rng = np.random.default_rng(1)
  b = correct(rng, 3, 1280, 0.70)
  a = np.maximum(b, correct(rng, 3, 1280, 0.33))  # ~+10 points: B's errors fixed a third of the time
  diff, lo, hi = stats.paired_bootstrap_ci(a, b, n_boot=2000)
  assert diff == pytest.approx((a.mean(1) - b.mean(1)).mean())
  assert 0.07 < diff < 0.13 and lo > 0 and stats.excludes_zero(lo, hi)
  null = correct(rng, 3, 1280, 0.70)  # independent draws at the same accuracy
  _, lo0, hi0 = stats.paired_bootstrap_ci(null, b, n_boot=2000)
  assert lo0 < 0 < hi0 and not stats.excludes_zero(lo0, hi0)
  assert stats.excludes_zero(-0.3, -0.1) and not stats.excludes_zero(-0.1, 0.2)


def test_the_interval_shrinks_as_one_over_sqrt_n():
  rng = np.random.default_rng(2)
  widths = {}
  for n in (400, 1600, 6400):
    b = correct(rng, 2, n, 0.75)
    a = np.where(rng.random((2, n)) < 0.2, 1 - b, b)  # flips a fifth: discordant pairs
    _, lo, hi = stats.paired_bootstrap_ci(a, b, n_boot=3000)
    widths[n] = hi - lo
  assert widths[400] / widths[1600] == pytest.approx(2.0, rel=0.15)
  assert widths[1600] / widths[6400] == pytest.approx(2.0, rel=0.15)


def test_tiny_case_by_hand():
  """Two examples, one seed: A right on the first only, B on neither. A resample of two
  indices has mean difference 0 (both the second), 1/2 (one of each) or 1 (both the first),
  with probabilities 1/4, 1/2, 1/4; the 2.5% and 97.5% points are then 0 and 1."""
  a, b = np.array([[1, 0]]), np.array([[0, 0]])
  boots = stats.bootstrap_diffs(a, b, n_boot=20000, seed=3)
  freq = {v: np.mean(boots == v) for v in (0.0, 0.5, 1.0)}
  assert sum(freq.values()) == 1.0
  for v, p in ((0.0, 0.25), (0.5, 0.5), (1.0, 0.25)):
    assert abs(freq[v] - p) < 5 * math.sqrt(p * (1 - p) / 20000), freq
  assert stats.paired_bootstrap_ci(a, b, n_boot=20000, seed=3) == (0.5, 0.0, 1.0)
  # All right against all wrong: every resample is +1, on every seed.
  assert stats.paired_bootstrap_ci(np.ones((2, 5)), np.zeros((2, 5)), n_boot=100) == (1.0, 1.0, 1.0)


def test_pairing_is_by_seed_and_example():
  """Seed effects shared by A and B cancel: A = B plus one fixed example on every seed gives
  exactly +1/n whatever each seed's own accuracy is."""
  rng = np.random.default_rng(4)
  b = np.stack([correct(rng, 1, 50, p)[0] for p in (0.3, 0.6, 0.9)])
  b[:, 0] = 0
  a = b.copy()
  a[:, 0] = 1
  diff, lo, hi = stats.paired_bootstrap_ci(a, b, n_boot=4000)
  assert diff == pytest.approx(1 / 50)
  assert lo == 0.0 and hi > 0  # resamples without example 0 give exactly 0


def test_bad_inputs_are_one_line_errors():
  with pytest.raises(ValueError, match=r"differ; pass the same seeds") as e:
    stats.paired_bootstrap_ci(np.ones((2, 5)), np.ones((3, 5)))
  assert "\n" not in str(e.value)
  with pytest.raises(ValueError, match="0/1"):
    stats.paired_bootstrap_ci(np.full((1, 4), 0.5), np.ones((1, 4)))
  with pytest.raises(ValueError, match="alpha"):
    stats.paired_bootstrap_ci(np.ones((1, 4)), np.ones((1, 4)), alpha=0)
  with pytest.raises(ValueError, match="n_examples"):
    stats.paired_bootstrap_ci(np.ones((1, 0)), np.ones((1, 0)))
