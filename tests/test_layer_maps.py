"""Layer maps: exact pairs for the papers' settings, general properties, clear errors."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxdistill.losses import (LAYER_MAP_KINDS, distilbert_init_layer_map, distilbert_init_layers,
                               explicit_layer_map, last_layer_map, make_layer_map, skip_layer_map,
                               uniform_layer_map, validate_layer_map)


def test_uniform_examples():
  assert uniform_layer_map(4, 12) == [(1, 3), (2, 6), (3, 9), (4, 12)]  # TinyBERT-4: g(m) = 3m
  assert uniform_layer_map(6, 12) == [(1, 2), (2, 4), (3, 6), (4, 8), (5, 10), (6, 12)]
  assert uniform_layer_map(3, 3) == [(1, 1), (2, 2), (3, 3)]
  assert uniform_layer_map(5, 12) == [(1, 2), (2, 4), (3, 7), (4, 9), (5, 12)]  # floor(i*12/5)
  assert uniform_layer_map(2, 4, include_embeddings=True) == [(0, 0), (1, 2), (2, 4)]


def test_pkd_skip_and_last_match_paper():
  # Sun et al. 2019, 6-layer student of BERT-base: I_pt = {2,4,6,8,10} (skip), {7,8,9,10,11} (last)
  assert skip_layer_map(6, 12) == [(1, 2), (2, 4), (3, 6), (4, 8), (5, 10)]
  assert last_layer_map(6, 12) == [(1, 7), (2, 8), (3, 9), (4, 10), (5, 11)]
  assert skip_layer_map(3, 12) == [(1, 4), (2, 8)]
  assert last_layer_map(3, 12) == [(1, 10), (2, 11)]
  assert skip_layer_map(3, 12, k=2) == [(1, 2), (2, 4)]
  assert skip_layer_map(1, 12) == [] and last_layer_map(1, 12) == []


def test_distilbert_init_layers():
  assert distilbert_init_layers(6, 12) == [0, 2, 4, 6, 8, 10]  # one layer out of two
  assert distilbert_init_layers(4, 12) == [0, 3, 6, 9]
  assert distilbert_init_layers(3, 24) == [0, 8, 16]
  assert distilbert_init_layers(6, 12, include_last=True) == [0, 2, 4, 7, 9, 11]  # HF script
  assert distilbert_init_layers(1, 12, include_last=True) == [0]
  assert distilbert_init_layer_map(6, 12) == [(1, 1), (2, 3), (3, 5), (4, 7), (5, 9), (6, 11)]


def test_explicit_and_dispatcher():
  assert explicit_layer_map([(0, 0), (2, 5), [3, 6]], 3, 6) == [(0, 0), (2, 5), (3, 6)]
  assert make_layer_map("explicit", 3, 6, pairs=[(1, 1)]) == [(1, 1)]
  assert make_layer_map("uniform", 3, 6) == uniform_layer_map(3, 6)
  assert make_layer_map("skip", 6, 12) == skip_layer_map(6, 12)
  assert make_layer_map("last", 6, 12) == last_layer_map(6, 12)
  assert make_layer_map("distilbert_init", 6, 12) == distilbert_init_layer_map(6, 12)
  assert set(LAYER_MAP_KINDS) == {"uniform", "skip", "last", "explicit", "distilbert_init"}


def test_range_errors_name_the_allowed_range():
  with pytest.raises(ValueError, match=r"layer_map pair \(4, 9\): teacher layer 9 is out of range 0\.\.6"):
    explicit_layer_map([(1, 1), (4, 9)], 4, 6)
  with pytest.raises(ValueError, match=r"layer_map pair \(5, 2\): student layer 5 is out of range 0\.\.4"):
    make_layer_map("explicit", 4, 6, pairs=[(5, 2)])
  with pytest.raises(ValueError, match=r"teacher layer -1 is out of range"):
    explicit_layer_map([(1, -1)], 4, 6)
  with pytest.raises(ValueError, match=r"student layer 0 is out of range 1\.\.4"):
    validate_layer_map([(0, 1)], 4, 6, allow_embeddings=False)
  with pytest.raises(ValueError, match=r"layer_map pair \(3, 15\): teacher layer 15 is out of range 1\.\.12"):
    skip_layer_map(4, 12, k=5)
  with pytest.raises(ValueError, match="expected a \\(student_layer, teacher_layer\\) pair of ints"):
    explicit_layer_map([(1, 2, 3)], 4, 6)
  with pytest.raises(ValueError, match="pair of ints"):
    explicit_layer_map([(1.0, 2)], 4, 6)


def test_depth_and_kind_errors():
  with pytest.raises(ValueError, match="uniform layer map needs student_layers <= teacher_layers; got 8 > 6"):
    uniform_layer_map(8, 6)
  with pytest.raises(ValueError, match="student_layers must be a positive int; got 0"):
    make_layer_map("last", 0, 6)
  with pytest.raises(ValueError, match="teacher_layers must be a positive int"):
    distilbert_init_layers(2, True)
  with pytest.raises(ValueError, match=(r"unknown layer map kind 'pkd'; valid kinds: 'uniform', "
                                        r"'skip', 'last', 'explicit', 'distilbert_init'")):
    make_layer_map("pkd", 6, 12)
  with pytest.raises(ValueError, match="needs pairs"):
    make_layer_map("explicit", 6, 12)
  with pytest.raises(ValueError, match="pairs is only used with kind='explicit'"):
    make_layer_map("uniform", 6, 12, pairs=[(1, 1)])


@settings(max_examples=200, deadline=None)
@given(s=st.integers(1, 24), t=st.integers(1, 48),
       kind=st.sampled_from(["uniform", "skip", "last", "distilbert_init"]))
def test_generated_maps_are_valid_and_monotone(s, t, kind):
  if s > t:
    with pytest.raises(ValueError, match="needs student_layers <= teacher_layers"):
      make_layer_map(kind, s, t)
    return
  pairs = make_layer_map(kind, s, t)
  assert validate_layer_map(pairs, s, t, allow_embeddings=False) == pairs
  studs = [p[0] for p in pairs]
  teach = [p[1] for p in pairs]
  assert studs == list(range(1, len(pairs) + 1))  # every student layer once, in order
  assert all(a < b for a, b in zip(teach, teach[1:]))  # teacher layers strictly increasing
  if kind in ("uniform", "distilbert_init"):
    assert len(pairs) == s
  else:
    assert len(pairs) == s - 1 and all(x < t for x in teach)  # PKD leaves the top layer out
  if kind == "uniform":
    assert pairs[-1] == (s, t)
    if t % s == 0:
      assert teach == [i * (t // s) for i in range(1, s + 1)]
  if kind == "last" and pairs:
    assert teach == list(range(t - s + 1, t))
  if kind == "distilbert_init":
    assert teach[0] == 1
    layers = distilbert_init_layers(s, t, include_last=True)
    assert layers[0] == 0 and (s == 1 or layers[-1] == t - 1)
    assert all(a < b for a, b in zip(layers, layers[1:]))
