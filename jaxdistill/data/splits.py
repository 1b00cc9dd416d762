"""The fixed splits of the built-in sentence tasks (Rotten Tomatoes, Amazon fine foods):
stratified by label, with rows of one key (a duplicated text) never straddling two splits."""

from __future__ import annotations

import numpy as np


def grouped_stratified_split(keys: list, labels: np.ndarray, num_labels: int, *, seed: int,
                             dev_fraction: float, test_fraction: float) -> dict[str, np.ndarray]:
  """Row indices of train/dev/test. Per label, whole key groups (in a seeded order) fill test,
  then dev, up to their fractions of that label's rows; the rest is train. A group's label is
  its first row's (the callers' corpora have agreeing duplicates; their tests check it)."""
  rng = np.random.default_rng(seed)
  groups: dict = {}
  for i, key in enumerate(keys):
    groups.setdefault(key, []).append(i)
  members = list(groups.values())
  assigned = {"train": [], "dev": [], "test": []}
  for label in range(num_labels):
    label_groups = [g for g in members if labels[g[0]] == label]
    n_rows = sum(len(g) for g in label_groups)
    targets = {"test": round(test_fraction * n_rows), "dev": round(dev_fraction * n_rows)}
    counts = {"test": 0, "dev": 0}
    for k in rng.permutation(len(label_groups)):
      group = label_groups[k]
      split = next((s for s in ("test", "dev") if counts[s] < targets[s]), "train")
      if split != "train":
        counts[split] += len(group)
      assigned[split].extend(group)
  # Shuffle within each split so labels interleave (and max_examples heads are mixed).
  return {s: np.asarray(idx, np.int64)[rng.permutation(len(idx))] for s, idx in assigned.items()}
