"""The teacher cache (jaxdistill/train/teacher_cache.py): a run that computes the teacher
outputs once ends where a run that calls the teacher every step ends (loss at every logged
step, final params); it keeps only what the losses read; over budget it falls back with one
warning; a cache file left half-written by a killed run is rebuilt, a complete one reused; and
methods whose teacher inputs change per step opt out."""

from __future__ import annotations

import copy
import json
import logging

import jax
import numpy as np
import pytest

from jaxdistill import losses, methods
from jaxdistill.config_lib import base_config, load_config, rotten_tomatoes, tiny
from jaxdistill.testing import tiny_checkpoint
from jaxdistill.train import teacher_cache
from jaxdistill.train.loop import train_stage

TEACHER_LAYERS = 4


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
  d = tmp_path_factory.mktemp("ckpts")
  return {"teacher": str(tiny_checkpoint(d / "teacher", num_layers=TEACHER_LAYERS, seed=1,
                                         label_names=("rotten", "fresh"))),
          "student": str(tiny_checkpoint(d / "student", num_layers=2, seed=2)),
          "cache": str(d / "data_cache")}


def _config(name: str, ckpts):
  """A one-stage tiny run of `name` (pkd, minilm, lad) from the tiny checkpoints, with two
  sequence buckets so the cache is cut to more than one batch length."""
  if name == "minilm":  # configs/minilm.py is two stages; its distillation stage alone
    c = tiny(rotten_tomatoes(base_config("minilm")))
    c.losses.hard_ce, c.losses.minilm_attention, c.losses.minilm_value = 0.0, 1.0, 1.0
  else:
    c = load_config(f"configs/{name}.py:tiny")
  c.teacher.source, c.teacher.finetune = ckpts["teacher"], False
  c.student.source, c.student.init, c.student.layers = ckpts["student"], "pretrained", ()
  c.cache_dir = ckpts["cache"]
  c.report.compression = c.report.export = False
  c.train.select_best = False
  c.data.max_length, c.train.bucket_multiple = 32, 16
  c.train.max_steps, c.train.log_every, c.train.checkpoint_every = 4, 1, 2
  return c


CONFIGS: dict = {}


def config(name, ckpts, **train):
  """The same config for every run of a test (loaded once: a config file edited meanwhile
  cannot make two runs differ), with train.<key> overrides."""
  if name not in CONFIGS:
    CONFIGS[name] = _config(name, ckpts)
  c = copy.deepcopy(CONFIGS[name])
  for k, v in train.items():
    c.train[k] = v
  return c


def curves(workdir) -> dict:
  """Every logged train/loss* value, by step."""
  lines = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  return {l["step"]: {k: v for k, v in l.items() if k.startswith("train/loss")}
          for l in lines if "train/loss" in l}


def run(c, workdir):
  out = train_stage(c, workdir)
  return {"curves": curves(workdir), "params": [np.asarray(x) for x in jax.tree.leaves(out["state"].trainable)],
          "step": int(out["state"].step)}


def assert_same_run(a, b):
  assert a["step"] == b["step"] and sorted(a["curves"]) == sorted(b["curves"])
  for step in a["curves"]:
    for k in a["curves"][step]:
      np.testing.assert_allclose(a["curves"][step][k], b["curves"][step][k], atol=1e-5, rtol=1e-5,
                                 err_msg=f"{k} at step {step}")
  for x, y in zip(a["params"], b["params"], strict=True):
    np.testing.assert_allclose(x, y, atol=1e-5)


UNCACHED: dict = {}


def uncached(name, ckpts, tmp_path_factory):
  """The reference: the same run with the teacher in every step (computed once per module)."""
  if name not in UNCACHED:
    UNCACHED[name] = run(config(name, ckpts, cache_teacher=False), tmp_path_factory.mktemp(f"{name}_uncached"))
  return UNCACHED[name]


def spy_build(monkeypatch) -> list:
  """Records every cache train_stage builds (None when it fell back)."""
  built, real = [], teacher_cache.build
  monkeypatch.setattr(teacher_cache, "build", lambda *a, **k: built.append(real(*a, **k)) or built[-1])
  return built


def expected_reads(name, c) -> set[str]:
  """What each method's losses read of the teacher, from the layer maps and terms' docs."""
  last = TEACHER_LAYERS - 1
  if name == "pkd":  # KD's logits and the skip map's teacher layers (hidden_states indices)
    pairs = losses.make_layer_map(c.pkd.layer_map, 2, TEACHER_LAYERS)
    return {"t0/logits"} | {f"t0/hidden_states/{t}" for _, t in pairs}
  if name == "minilm":  # the last layer's scores and values (minilm.teacher_layer = -1)
    return {f"t0/attention_scores/{last}", f"t0/values/{last}"}
  if name == "lad":  # KD's logits and every layer's output (not the embeddings)
    return {"t0/logits"} | {f"t0/hidden_states/{i}" for i in range(1, TEACHER_LAYERS + 1)}
  raise KeyError(name)


@pytest.mark.parametrize("name", ["pkd", "minilm", "lad"])
def test_cached_run_equals_running_the_teacher(name, ckpts, tmp_path, tmp_path_factory, monkeypatch):
  built = spy_build(monkeypatch)
  cached = run(config(name, ckpts), tmp_path / "cached")
  assert len(built) == 1 and built[0] is not None, "the cache was not built"
  cache = built[0]
  assert {leaf.name for leaf in cache.leaves if leaf.read} == expected_reads(name, CONFIGS[name])
  assert set(cache.arrays) == expected_reads(name, CONFIGS[name])  # nothing else is stored
  assert_same_run(cached, uncached(name, ckpts, tmp_path_factory))


def test_over_budget_falls_back_with_one_warning(ckpts, tmp_path, tmp_path_factory, monkeypatch, caplog):
  built = spy_build(monkeypatch)
  with caplog.at_level(logging.WARNING, logger="jaxdistill.train.teacher_cache"):
    small = run(config("pkd", ckpts, teacher_cache_mib=0), tmp_path / "small")
  assert built == [None]
  warnings = [r.getMessage() for r in caplog.records if r.name == "jaxdistill.train.teacher_cache"]
  assert len(warnings) == 1 and "train.teacher_cache_mib" in warnings[0], warnings
  assert_same_run(small, uncached("pkd", ckpts, tmp_path_factory))


def test_half_written_cache_is_rebuilt_and_a_complete_one_reused(ckpts, tmp_path, tmp_path_factory,
                                                                  monkeypatch, caplog):
  monkeypatch.setattr(teacher_cache, "IN_MEMORY_MIB", 0)  # on disk, as a large cache is
  workdir, real_store = tmp_path / "run", teacher_cache.store
  calls = []

  def killed(*args):  # the process dies after the first batch's rows are written
    if calls:
      raise KeyboardInterrupt("killed while writing the teacher cache")
    calls.append(1)
    real_store(*args)

  monkeypatch.setattr(teacher_cache, "store", killed)
  with pytest.raises(KeyboardInterrupt):
    run(config("pkd", ckpts), workdir)
  directory = workdir / "teacher_cache"
  partial = sorted(p.name for p in directory.iterdir())
  assert partial and all(n.endswith(".partial") for n in partial), partial  # no manifest
  # As if the kill came later, between renaming a file and writing the manifest: a leaf file
  # under its final name, full of garbage.
  (directory / partial[0].removesuffix(".partial")).write_bytes(b"\x93NUMPY garbage" * 50)

  monkeypatch.setattr(teacher_cache, "store", real_store)
  real_release, released = teacher_cache.release, []
  monkeypatch.setattr(teacher_cache, "release", lambda w: released.append(str(w)))  # kept to inspect
  with caplog.at_level(logging.INFO, logger="jaxdistill.train.teacher_cache"):
    stopped = run(config("pkd", ckpts, stop_after=2), workdir)  # rebuilds, then stops at step 2
    resumed = run(config("pkd", ckpts), workdir)  # resumes: the cache on disk is reused
  assert stopped["step"] == 2
  built = [r.getMessage() for r in caplog.records if r.getMessage().startswith("teacher cache:")]
  assert len(built) == 2 and built[0].startswith("teacher cache: computed") and \
      built[1].startswith("teacher cache: reused"), built
  assert not any(p.name.endswith(".partial") for p in directory.iterdir())
  assert_same_run(resumed, uncached("pkd", ckpts, tmp_path_factory))

  # A complete cache whose file no longer matches its manifest is not read either.
  manifest = json.loads((directory / teacher_cache.MANIFEST).read_text())
  read = [teacher_cache.Leaf(0, name, tuple(shape), dtype, (), True) for name, (shape, dtype) in
          manifest["leaves"].items()]
  rows = 48  # the tiny split
  assert teacher_cache.load(directory, manifest["key"], rows, read) is not None
  assert teacher_cache.load(directory, "another-teacher", rows, read) is None
  victim = directory / (read[0].name.replace("/", ".") + ".npy")
  victim.write_bytes(victim.read_bytes()[:-64])
  assert teacher_cache.load(directory, manifest["key"], rows, read) is None
  # The finished run (not the stopped one) released its cache: GBs at full length.
  assert released == [str(workdir)]
  real_release(workdir)
  assert not directory.exists()


def _method(config_name: str, **losses_set):
  c = load_config(config_name)
  for k, v in losses_set.items():
    c.losses[k] = v
  return methods.get(c)


def test_methods_whose_teacher_inputs_change_per_step_opt_out():
  # BERT-of-Theseus: the predecessor's params feed the student forward, a new mask per step.
  assert not _method("configs/theseus.py:tiny").teacher_cacheable()
  # DistilBERT's general distillation masks the batch inside the step (its terms' prepare).
  general = dict(hard_ce=0.0, distil_soft_ce=5.0, mlm=2.0, cosine=1.0)
  assert not _method("configs/distilbert.py:tiny", **general).teacher_cacheable()
  assert not _method("configs/distilbert.py:tiny", hard_ce=1.0, mlm=1.0).teacher_cacheable()
  # ... while its cosine term alone reads fixed inputs, as KD, PKD, LAD and MiniLM do.
  assert _method("configs/distilbert.py:tiny", hard_ce=0.0, cosine=1.0).teacher_cacheable()
  for name in ("kd", "pkd", "lad", "mobilebert", "tinybert"):
    assert _method(f"configs/{name}.py:tiny").teacher_cacheable(), name
  # No teacher in the step: nothing to cache.
  assert not _method("configs/student_finetune.py:tiny").teacher_cacheable()


def test_bad_budget_is_a_config_error():
  from jaxdistill.core.errors import ConfigError
  with pytest.raises(ConfigError, match="teacher_cache_mib"):
    teacher_cache.check_budget(-1)
