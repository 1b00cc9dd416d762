"""Layer maps: which student layer learns from which teacher layer.

A layer map is a list of ``(student_layer, teacher_layer)`` pairs of *1-based* transformer
layer numbers, which are also ``hidden_states`` indices (index 0 = embedding output,
index i = output of layer i).  Layer 0 (embeddings) only appears when asked for
(``include_embeddings=True`` or an explicit pair).  For per-layer tuples without an
embedding entry (attention scores/probs, Q/K/V: index i-1 = layer i) subtract 1.

Kinds (S = student_layers, T = teacher_layers):

=================  ==========================================================  ================
kind               pairs                                                       12 -> 6 example
=================  ==========================================================  ================
uniform            (i, floor(i*T/S)) for i = 1..S  (k = T/S when it divides)   (1,2)...(6,12)
skip (PKD-Skip)    (i, i*k) for i = 1..S-1, k = T // S; the top layer is left  (1,2)...(5,10)
                   to the prediction loss (Sun et al. 2019)
last (PKD-Last)    (i, T-S+i) for i = 1..S-1: the teacher's last S-1 layers     (1,7)...(5,11)
                   below its top layer (Sun et al. 2019)
explicit           the given pairs, validated                                   --
distilbert_init    (i+1, l_i+1) for l_i in distilbert_init_layers(S, T)         (1,1),(2,3)...(6,11)
=================  ==========================================================  ================
"""

from __future__ import annotations

import math
from typing import Iterable, Optional, Sequence

LAYER_MAP_KINDS = ("uniform", "skip", "last", "explicit", "distilbert_init")

LayerMap = list[tuple[int, int]]


def _is_int(x) -> bool:
  return isinstance(x, int) and not isinstance(x, bool)


def _check_depths(student_layers, teacher_layers, kind: str, student_le_teacher: bool = True):
  for name, v in (("student_layers", student_layers), ("teacher_layers", teacher_layers)):
    if not _is_int(v) or v < 1:
      raise ValueError(f"{name} must be a positive int; got {v!r}")
  if student_le_teacher and student_layers > teacher_layers:
    raise ValueError(f"{kind} layer map needs student_layers <= teacher_layers; got "
                     f"{student_layers} > {teacher_layers}")


def validate_layer_map(pairs: Iterable[Sequence[int]], student_layers: int, teacher_layers: int,
                       *, allow_embeddings: bool = True) -> LayerMap:
  """Check every (student_layer, teacher_layer) pair against both depths; return a list of tuples.

  Valid layers are 1..L (0..L with ``allow_embeddings``, 0 = embedding output).
  """
  _check_depths(student_layers, teacher_layers, "explicit", student_le_teacher=False)
  lo = 0 if allow_embeddings else 1
  note = " (0 = embeddings)" if allow_embeddings else ""
  out = []
  for pair in pairs:
    if (not isinstance(pair, (tuple, list)) or len(pair) != 2
        or not all(_is_int(v) for v in pair)):
      raise ValueError(f"layer_map pair {pair!r}: expected a (student_layer, teacher_layer) "
                       f"pair of ints")
    s, t = pair
    if not lo <= s <= student_layers:
      raise ValueError(f"layer_map pair ({s}, {t}): student layer {s} is out of range "
                       f"{lo}..{student_layers}{note}")
    if not lo <= t <= teacher_layers:
      raise ValueError(f"layer_map pair ({s}, {t}): teacher layer {t} is out of range "
                       f"{lo}..{teacher_layers}{note}")
    out.append((s, t))
  return out


def uniform_layer_map(student_layers: int, teacher_layers: int, *,
                      include_embeddings: bool = False) -> LayerMap:
  """Student layer i <- teacher layer floor(i*T/S), i = 1..S (i*k for k = T/S; TinyBERT's g(m) = m*k).

  The student's top layer always maps to the teacher's top layer.  With
  ``include_embeddings`` the pair (0, 0) is prepended (TinyBERT's embedding loss).
  """
  _check_depths(student_layers, teacher_layers, "uniform")
  pairs = [(i, (i * teacher_layers) // student_layers) for i in range(1, student_layers + 1)]
  if include_embeddings:
    pairs.insert(0, (0, 0))
  return validate_layer_map(pairs, student_layers, teacher_layers)


def skip_layer_map(student_layers: int, teacher_layers: int, k: Optional[int] = None) -> LayerMap:
  """PKD-Skip: student layer i <- teacher layer i*k for i = 1..S-1 (k = T // S by default) -- Sun et al. 2019.

  12 -> 6 gives [(1, 2), (2, 4), (3, 6), (4, 8), (5, 10)]; the top layers are excluded
  (their [CLS] is covered by the prediction-layer loss).  A 1-layer student gives [].
  """
  _check_depths(student_layers, teacher_layers, "skip")
  if k is None:
    k = teacher_layers // student_layers
  if not _is_int(k) or k < 1:
    raise ValueError(f"skip k must be a positive int; got {k!r}")
  return validate_layer_map([(i, i * k) for i in range(1, student_layers)],
                            student_layers, teacher_layers, allow_embeddings=False)


def last_layer_map(student_layers: int, teacher_layers: int) -> LayerMap:
  """PKD-Last: student layer i <- teacher layer T-S+i for i = 1..S-1 -- Sun et al. 2019.

  12 -> 6 gives [(1, 7), (2, 8), (3, 9), (4, 10), (5, 11)]: the teacher's last S-1 layers
  below its top layer.  A 1-layer student gives [].
  """
  _check_depths(student_layers, teacher_layers, "last")
  return validate_layer_map([(i, teacher_layers - student_layers + i)
                             for i in range(1, student_layers)],
                            student_layers, teacher_layers, allow_embeddings=False)


def explicit_layer_map(pairs: Iterable[Sequence[int]], student_layers: int,
                       teacher_layers: int) -> LayerMap:
  """The given (student_layer, teacher_layer) pairs, validated (0 = embeddings allowed)."""
  return validate_layer_map(pairs, student_layers, teacher_layers, allow_embeddings=True)


def distilbert_init_layers(student_layers: int, teacher_layers: int, *,
                           include_last: bool = False) -> list[int]:
  """0-based teacher layers that initialise student layers 0..S-1 -- DistilBERT, Sanh et al. 2019.

  Default: every k-th layer from the bottom, floor(i*T/S) for i = 0..S-1 ("one layer out
  of two": 12 -> 6 gives [0, 2, 4, 6, 8, 10]).  ``include_last=True`` spreads S layers
  evenly over 0..T-1, round(i*(T-1)/(S-1)), keeping the teacher's top layer; for 12 -> 6
  that is [0, 2, 4, 7, 9, 11], the list in HuggingFace's extract_distilbert.py script.
  """
  _check_depths(student_layers, teacher_layers, "distilbert_init")
  if include_last and student_layers > 1:
    span = teacher_layers - 1
    return [int(math.floor(i * span / (student_layers - 1) + 0.5)) for i in range(student_layers)]
  return [(i * teacher_layers) // student_layers for i in range(student_layers)]


def distilbert_init_layer_map(student_layers: int, teacher_layers: int, *,
                              include_last: bool = False) -> LayerMap:
  """distilbert_init_layers as 1-based (student_layer, teacher_layer) pairs."""
  layers = distilbert_init_layers(student_layers, teacher_layers, include_last=include_last)
  return validate_layer_map([(i + 1, l + 1) for i, l in enumerate(layers)],
                            student_layers, teacher_layers, allow_embeddings=False)


def make_layer_map(kind: str, student_layers: int, teacher_layers: int,
                   pairs: Optional[Iterable[Sequence[int]]] = None) -> LayerMap:
  """Dispatch to the layer map named ``kind`` (one of LAYER_MAP_KINDS); ``pairs`` only for 'explicit'."""
  if kind not in LAYER_MAP_KINDS:
    raise ValueError(f"unknown layer map kind {kind!r}; valid kinds: "
                     f"{', '.join(repr(k) for k in LAYER_MAP_KINDS)}")
  if kind == "explicit":
    if pairs is None:
      raise ValueError("layer map kind 'explicit' needs pairs=[(student_layer, teacher_layer), ...]")
    return explicit_layer_map(pairs, student_layers, teacher_layers)
  if pairs is not None:
    raise ValueError(f"pairs is only used with kind='explicit' (got kind={kind!r})")
  if kind == "uniform":
    return uniform_layer_map(student_layers, teacher_layers)
  if kind == "skip":
    return skip_layer_map(student_layers, teacher_layers)
  if kind == "last":
    return last_layer_map(student_layers, teacher_layers)
  return distilbert_init_layer_map(student_layers, teacher_layers)
