"""jaxdistill.stats against references written differently: seed summaries by hand, the paired
bootstraps (accuracy, per-example scores, entity micro F1 from counts) against per-resample
loops over per-seed metrics, and cases whose interval is known exactly."""

import math

import numpy as np
import pytest

from jaxdistill import stats
from jaxdistill.data import ner


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
  return (diff, *percentiles(boots, alpha))


def percentiles(boots, alpha):
  """Linear interpolation between order statistics (numpy's default percentile), by hand."""
  boots, n_boot = sorted(boots), len(boots)

  def q(p):
    h = (n_boot - 1) * p
    lo = math.floor(h)
    return boots[lo] + (h - lo) * (boots[min(lo + 1, n_boot - 1)] - boots[lo])
  return q(alpha / 2), q(1 - alpha / 2)


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


# ---- Per-example scores in [0, 1] (SQuAD's per-question F1 and EM) ----------------------------
def test_scores_match_the_reference_loop_and_the_0_1_version():
  rng = np.random.default_rng(5)
  # F1-like scores: many exact 0s and 1s, the rest in between, rounded as the result files keep them.
  def scores(p):
    return np.where(rng.random((3, 400)) < p, 1.0, np.round(rng.random((3, 400)) * rng.integers(0, 2, (3, 400)), 4))
  a, b = scores(0.5), scores(0.4)
  rng_ref = np.random.default_rng(11)
  boots = []
  for _ in range(2300):
    idx = rng_ref.integers(0, 400, size=400)
    boots.append(np.mean([a[s, idx].mean() - b[s, idx].mean() for s in range(3)]))
  want = (np.mean([a[s].mean() - b[s].mean() for s in range(3)]), *percentiles(boots, 0.05))
  got = stats.paired_bootstrap_ci_scores(a, b, n_boot=2300, seed=11)
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
  assert got[1] < got[0] < got[2] and got[0] > 0
  # On 0/1 scores it is the accuracy bootstrap, to the bit.
  c, d = correct(rng, 2, 300, 0.7), correct(rng, 2, 300, 0.6)
  assert stats.paired_bootstrap_ci_scores(c, d, n_boot=1500, seed=2) == stats.paired_bootstrap_ci(c, d, n_boot=1500, seed=2)
  with pytest.raises(ValueError, match=r"\[0, 1\].*not in points"):
    stats.paired_bootstrap_ci_scores(100 * a, b)
  with pytest.raises(ValueError, match=r"\[0, 1\]"):
    stats.paired_bootstrap_ci_scores(np.full((1, 3), np.nan), np.zeros((1, 3)))
  with pytest.raises(ValueError, match="differ; pass the same seeds"):
    stats.paired_bootstrap_ci_scores(a, b[:2])


# ---- Entity-level micro F1 from per-sentence counts -------------------------------------------
TAGS = ("O", "O", "O", "B-person", "I-person", "B-loc", "I-loc")


def random_tags(rng, lengths):
  return [[TAGS[k] for k in rng.integers(0, len(TAGS), n)] for n in lengths]


def counts_of(gold, pred):
  """[n_sentences, 3] (tp, predicted, gold) entities per sentence, from ner.entities."""
  rows = []
  for g, p in zip(gold, pred):
    gs, ps = set(ner.entities(g)), set(ner.entities(p))
    rows.append((len(gs & ps), len(ps), len(gs)))
  return np.array(rows)


def noisy(rng, gold, flip):
  """Predictions: each tag of `gold` replaced by a random one with probability `flip`."""
  return [[TAGS[rng.integers(len(TAGS))] if rng.random() < flip else t for t in s] for s in gold]


def test_f1_point_estimate_is_ner_metrics_on_the_full_set():
  rng = np.random.default_rng(6)
  gold = random_tags(rng, rng.integers(1, 12, 120))
  pred_a = [noisy(rng, gold, 0.2) for _ in range(3)]
  pred_b = [noisy(rng, gold, 0.4) for _ in range(3)]
  ca = np.stack([counts_of(gold, p) for p in pred_a])
  cb = np.stack([counts_of(gold, p) for p in pred_b])
  want = np.mean([ner.ner_metrics(gold, pa)["f1"] - ner.ner_metrics(gold, pb)["f1"]
                  for pa, pb in zip(pred_a, pred_b)])
  diff, lo, hi = stats.paired_bootstrap_ci_f1(ca, cb, n_boot=2000)
  assert diff == pytest.approx(want, abs=1e-12) and 0 < lo < diff < hi
  np.testing.assert_allclose(stats.micro_f1(ca.sum(1)), [ner.ner_metrics(gold, p)["f1"] for p in pred_a],
                             rtol=0, atol=1e-12)


@pytest.mark.parametrize("n_seeds", [1, 3])
def test_f1_matches_the_reference_loop(n_seeds):
  rng = np.random.default_rng(7 + n_seeds)
  n = 90
  gold = rng.integers(0, 3, (n_seeds, n))
  ca = np.stack([np.minimum(rng.integers(0, 3, (n_seeds, n)), gold), rng.integers(0, 4, (n_seeds, n)), gold], -1)
  ca[..., 1] = np.maximum(ca[..., 1], ca[..., 0])
  cb = np.stack([np.minimum(rng.integers(0, 2, (n_seeds, n)), gold), rng.integers(0, 4, (n_seeds, n)), gold], -1)
  cb[..., 1] = np.maximum(cb[..., 1], cb[..., 0])
  n_boot, rng_ref, boots = 2300, np.random.default_rng(13), []
  for _ in range(n_boot):  # one draw of sentence indices per resample, shared by A, B and the seeds
    idx = rng_ref.integers(0, n, size=n)
    per_seed = []
    for s in range(n_seeds):
      f = []
      for c in (ca, cb):
        tp, p, g = (sum(int(c[s, i, k]) for i in idx) for k in range(3))
        f.append(2 * tp / (p + g) if p + g else 0.0)
      per_seed.append(f[0] - f[1])
    boots.append(sum(per_seed) / n_seeds)
  full = [2 * c[s, :, 0].sum() / (c[s, :, 1].sum() + c[s, :, 2].sum()) for s in range(n_seeds) for c in (ca, cb)]
  want = (np.mean(full[0::2]) - np.mean(full[1::2]), *percentiles(boots, 0.1))
  got = stats.paired_bootstrap_ci_f1(ca, cb, n_boot=n_boot, seed=13, alpha=0.1)
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
  np.testing.assert_allclose(stats.bootstrap_f1_diffs(ca, cb, n_boot, 13), boots, rtol=0, atol=1e-12)


def test_f1_exact_cases():
  """Identical runs give exactly 0; a resample with no entity at all scores F1 = 0; A right
  where B found nothing is +1 on every resample holding an entity."""
  c = np.array([[[1, 2, 1], [0, 1, 2], [2, 2, 2]]])
  assert stats.paired_bootstrap_ci_f1(c, c.copy(), n_boot=300) == (0.0, 0.0, 0.0)
  assert stats.micro_f1([0, 0, 0]) == 0.0 and stats.micro_f1([[1, 1, 1], [0, 3, 1]]).tolist() == [1.0, 0.0]
  a = np.array([[[1, 1, 1], [0, 0, 0]]])  # sentence 1 has no entities in gold or prediction
  b = np.array([[[0, 0, 1], [0, 0, 0]]])
  boots = stats.bootstrap_f1_diffs(a, b, n_boot=4000, seed=1)
  assert set(np.unique(boots)) == {0.0, 1.0}  # 0: both draws were sentence 1 (nothing to find)
  assert abs(np.mean(boots == 0.0) - 0.25) < 0.03
  assert stats.paired_bootstrap_ci_f1(a, b, n_boot=4000, seed=1) == (1.0, 0.0, 1.0)


def test_f1_bad_counts_are_one_line_errors():
  good = np.ones((2, 4, 3))
  for bad, match in ((np.ones((2, 4, 2)), r"\[n_seeds, n_examples, 3\]"), (-good, "counts"),
                     (np.concatenate([2 * good[..., :1], good[..., 1:]], -1), "true positives <="),
                     (good + 0.5, "counts")):
    with pytest.raises(ValueError, match=match) as e:
      stats.paired_bootstrap_ci_f1(bad, good)
    assert "\n" not in str(e.value)
  with pytest.raises(ValueError, match="differ"):
    stats.paired_bootstrap_ci_f1(good, good[:1])
