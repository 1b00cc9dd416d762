"""Metrics against hand-worked confusion matrices, scipy.stats, and independent formulas."""

import math
import warnings

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings, strategies as st

from jaxdistill import metrics as M


def from_confusion(cm):
  """(predictions, labels) realising the confusion matrix cm[true, pred]."""
  labels, preds = [], []
  for t, row in enumerate(cm):
    for p, n in enumerate(row):
      labels += [t] * n
      preds += [p] * n
  return np.array(preds), np.array(labels)


# ---- hand-worked cases -------------------------------------------------------------------------

def test_binary_hand_worked():
  # TN=3 FP=1 / FN=2 TP=6 (rows: true 0, 1).
  # accuracy = (6+3)/12 = 0.75
  # F1 = 2TP / (2TP+FP+FN) = 12/15 = 0.8
  # MCC = (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (18-2)/sqrt(7*8*4*5) = 16/sqrt(1120)
  p, y = from_confusion([[3, 1], [2, 6]])
  assert M.accuracy(p, y) == pytest.approx(0.75)
  assert M.f1(p, y) == pytest.approx(0.8)
  assert M.matthews_corrcoef(p, y) == pytest.approx(16 / math.sqrt(1120))  # 0.478091...
  np.testing.assert_array_equal(M.confusion_matrix(p, y), [[3, 1], [2, 6]])


def test_multiclass_hand_worked():
  # cm = [[3,1,0],[0,2,1],[1,0,2]]: s=10, trace c=7, true totals t=(4,3,3), predicted p=(4,3,3).
  # R_K = (c*s - t.p) / sqrt((s^2 - p.p)(s^2 - t.t)) = (70-34)/sqrt(66*66) = 36/66.
  # Per-class F1 = 2tp/(2tp+fp+fn): class 0: 6/8, class 1: 4/6, class 2: 4/6.
  p, y = from_confusion([[3, 1, 0], [0, 2, 1], [1, 0, 2]])
  assert M.matthews_corrcoef(p, y) == pytest.approx(36 / 66)
  assert M.macro_f1(p, y) == pytest.approx((6 / 8 + 4 / 6 + 4 / 6) / 3)
  assert M.accuracy(p, y) == pytest.approx(0.7)


def test_perfect_and_inverted():
  y = np.array([0, 1, 1, 0, 1])
  for fn in (M.accuracy, M.f1, M.macro_f1, M.matthews_corrcoef):
    assert fn(y, y) == pytest.approx(1.0)
  assert M.matthews_corrcoef(1 - y, y) == pytest.approx(-1.0)
  assert M.pearson(-y.astype(float), y) == pytest.approx(-1.0)
  assert M.spearman(np.exp(y), y) == pytest.approx(1.0)


def test_logits_equal_class_ids():
  rng = np.random.default_rng(0)
  logits, y = rng.normal(size=(50, 3)), rng.integers(0, 3, 50)
  for kind in ("classification", "mcc"):
    assert M.compute_metrics(kind, logits, y) == M.compute_metrics(kind, logits.argmax(-1), y)


# ---- independent references ------------------------------------------------------------------

def mcc_onehot_covariance(p, y, k):
  """Gorodkin's definition: R_K = cov(X, Y) / sqrt(cov(X, X) cov(Y, Y)) over one-hot matrices."""
  x, yy = np.eye(k)[p], np.eye(k)[y]
  x, yy = x - x.mean(0), yy - yy.mean(0)
  return np.sum(x * yy) / math.sqrt(np.sum(x * x) * np.sum(yy * yy))


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 5), st.integers(0, 2**32 - 1))
def test_mcc_matches_covariance_definition(k, seed):
  rng = np.random.default_rng(seed)
  p, y = rng.integers(0, k, 40), rng.integers(0, k, 40)
  if len(set(p)) < 2 or len(set(y)) < 2:
    assert M.matthews_corrcoef(p, y) == 0.0
  else:
    assert M.matthews_corrcoef(p, y) == pytest.approx(mcc_onehot_covariance(p, y, k), abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(3, 60), st.integers(2, 20))
def test_pearson_spearman_match_scipy(seed, n, levels):
  # Few distinct levels -> many ties, which is where rank averaging matters.
  rng = np.random.default_rng(seed)
  x, y = rng.integers(0, levels, n).astype(float), rng.normal(size=n) + rng.integers(0, levels, n)
  if np.ptp(x) == 0:
    return
  assert M.pearson(x, y) == pytest.approx(scipy.stats.pearsonr(x, y)[0], abs=1e-10)
  assert M.spearman(x, y) == pytest.approx(scipy.stats.spearmanr(x, y)[0], abs=1e-10)


def test_spearman_ties_known_value():
  # Average ranks: x = [1, 2, 2, 3] -> [1, 2.5, 2.5, 4]; y is already ranked [1, 2, 3, 4].
  x, y = np.array([1.0, 2, 2, 3]), np.array([10.0, 20, 30, 40])
  rx, ry = np.array([1, 2.5, 2.5, 4]), np.array([1, 2, 3, 4])
  assert M.spearman(x, y) == pytest.approx(np.corrcoef(rx, ry)[0, 1])


# ---- weights ---------------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 4))
def test_integer_weights_equal_repeated_rows(seed, k):
  rng = np.random.default_rng(seed)
  n = 30
  w = rng.integers(0, 4, n)
  w[0] = max(w[0], 1)
  p, y = rng.integers(0, k, n), rng.integers(0, k, n)
  for kind in ("classification", "binary", "mcc"):
    got = M.compute_metrics(kind, p, y, w)
    want = M.compute_metrics(kind, np.repeat(p, w), np.repeat(y, w))
    assert got == pytest.approx(want, abs=1e-12)
  xf, yf = rng.integers(0, 5, n).astype(float), rng.normal(size=n)
  got = M.compute_metrics("regression", xf, yf, w)
  assert got == pytest.approx(M.compute_metrics("regression", np.repeat(xf, w), np.repeat(yf, w)), abs=1e-12)


def test_zero_weight_padding_rows_ignored_even_if_invalid():
  p, y = np.array([1, 0, 1, 7]), np.array([1, 0, 0, -1])  # last row: padding with UNLABELLED
  w = np.array([1, 1, 1, 0])
  assert M.accuracy(p, y, w) == pytest.approx(2 / 3)
  assert M.pearson([1.0, 2, 3, 0], [1.0, 2, 4, np.nan], w) == pytest.approx(np.corrcoef([1, 2, 3], [1, 2, 4])[0, 1])


# ---- edge cases --------------------------------------------------------------------------------

def test_degenerate_cases_return_zero_without_warnings():
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    y = np.array([0, 1, 1, 0])
    assert M.matthews_corrcoef(np.ones(4, int), y) == 0.0
    assert M.matthews_corrcoef(y, np.zeros(4, int)) == 0.0
    assert M.f1(np.zeros(4, int), np.zeros(4, int)) == 0.0  # no positives anywhere
    assert M.pearson(np.full(3, 0.1), [1.0, 2, 3]) == 0.0  # 0.1*3/3 != 0.1 in float
    assert M.spearman([1.0, 2, 3], np.full(3, 5.0)) == 0.0


def test_nan_regression_predictions_give_nan():
  assert math.isnan(M.pearson([1.0, np.nan, 3], [1.0, 2, 3]))
  assert math.isnan(M.spearman([1.0, np.inf, np.nan], [1.0, 2, 3]))


@pytest.mark.parametrize("call", [
    lambda: M.accuracy([1, 0], [1, 0], [0, 0]),  # all weights zero
    lambda: M.accuracy([], []),  # no examples
    lambda: M.accuracy([1, 0], [1, -1]),  # unlabelled
    lambda: M.accuracy([0.5, 1.0], [1, 0]),  # regression outputs as class ids
    lambda: M.accuracy([1, 0, 1], [1, 0]),  # length mismatch
    lambda: M.accuracy([1, 0], [1, 0], [1, -1]),  # negative weight
    lambda: M.pearson([1.0, 2.0], [1.0, np.nan]),  # unlabelled regression
    lambda: M.accuracy(np.zeros((2, 1)), [1, 0]),  # single-logit "classification"
    lambda: M.compute_metrics("squad", [1], [1]),
    lambda: M.primary_metric("files"),
])
def test_invalid_inputs_raise(call):
  with pytest.raises(ValueError):
    call()


# ---- task dispatch -----------------------------------------------------------------------------

@pytest.mark.parametrize("task,keys,primary", [
    ("sst2", {"accuracy", "f1"}, "accuracy"),
    ("glue/sst2", {"accuracy", "f1"}, "accuracy"),
    ("rotten_tomatoes", {"accuracy", "f1"}, "accuracy"),
    ("MRPC", {"accuracy", "f1"}, "f1"),
    ("qqp", {"accuracy", "f1"}, "f1"),
    ("cola", {"mcc", "accuracy"}, "mcc"),
    ("STS-B", {"pearson", "spearman"}, "pearson"),
    ("glue/mnli", {"accuracy"}, "accuracy"),
    ("mnli_mismatched", {"accuracy"}, "accuracy"),
    ("qnli", {"accuracy"}, "accuracy"),
    ("rte", {"accuracy"}, "accuracy"),
    ("wnli", {"accuracy"}, "accuracy"),
    ("classification", {"accuracy", "macro_f1"}, "accuracy"),
    ("binary", {"accuracy", "f1"}, "accuracy"),
    ("regression", {"pearson", "spearman"}, "pearson"),
    ("mcc", {"mcc", "accuracy"}, "mcc"),
])
def test_compute_metrics_per_task(task, keys, primary):
  rng = np.random.default_rng(1)
  y = rng.integers(0, 2, 20)
  preds = rng.normal(size=20) + y if primary in ("pearson",) else rng.normal(size=(20, 2))
  out = M.compute_metrics(task, preds, y)
  assert set(out) == keys and next(iter(out)) == primary
  assert all(type(v) is float for v in out.values())
  assert M.primary_metric(task) == primary


def test_task_kind_for_custom_datasets():
  assert M.task_kind("glue/cola") == "glue/cola"
  assert M.task_kind("files", is_regression=True) == "regression"
  assert M.task_kind("files", num_labels=2) == "binary"
  assert M.task_kind("files", num_labels=5) == "classification"
  assert M.primary_metric(M.task_kind("files", num_labels=3)) == "accuracy"
