"""One registry, one selector, named RNG streams, schedules.

- config_lib reads the method catalog from source (no JAX); it must agree with what the
  imported modules register.
- `config.method` alone chooses the method, and only that method's section is in the config.
- A term's parameter init and prepare draws depend on (seed, step, its name) only: turning
  hard_ce (or any other term) on or off changes neither the PKD projection nor DistilBERT's
  masks.
"""

from __future__ import annotations

import importlib
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdistill import catalog, config_lib, methods
from jaxdistill.core import rng
from jaxdistill.core.errors import ConfigError
from jaxdistill.methods import distilbert
from jaxdistill.methods.base import RunInfo
from jaxdistill.methods.schedules import Schedule
from jaxdistill.models import tiny_config


def test_catalog_read_from_source_matches_the_registries():
  # the package's own (a test may have registered a user's module in this process)
  ours = lambda reg: {k for k, v in reg.items() if v.__module__.startswith("jaxdistill.methods")}
  assert set(catalog.method_names()) == ours(methods.METHODS)
  assert sorted(catalog.term_names()) == sorted(ours(methods.TERMS))
  assert set(catalog.stage_kinds()) == {"train", *methods.STAGE_KINDS}
  for decl in catalog.catalog():
    module = importlib.import_module(f"jaxdistill.methods.{decl.section}")
    assert decl.config == dict(getattr(module, "CONFIG", {})), decl.section


def test_the_method_selects_its_own_section_only():
  kd = config_lib.base_config("kd")
  assert "theseus" not in kd and "multi_teacher" not in kd
  th = config_lib.base_config("theseus")
  assert th.theseus.rate == 0.5 and "multi_teacher" not in th
  with th.unlocked():
    th.method = "multi_teacher_kd"
  config_lib.select_method(th)
  assert "theseus" not in th and th.multi_teacher.combine == "probs"
  assert isinstance(methods.get(config_lib.load_config("configs/theseus.py:tiny")),
                    methods.theseus.Theseus)
  assert type(methods.get(kd)) is methods.distill.Distill


def test_an_unknown_method_names_the_registered_ones():
  c = config_lib.base_config()
  with c.unlocked():
    c.method = "theseos"
  with pytest.raises(ConfigError, match=r"did you mean theseus.*registered: .*kd"):
    config_lib.select_method(c)


def test_method_overrides_apply_before_the_keys_they_create():
  c = config_lib.base_config("kd")
  config_lib.apply_overrides(c, [("theseus.rate", "0.25"), ("method", "theseus")])
  assert c.method == "theseus" and c.theseus.rate == 0.25


def _pkd_aux(hard_ce: float, kd: float):
  c = config_lib.base_config("pkd")
  c.losses.hard_ce, c.losses.kd, c.losses.pkd = hard_ce, kd, 1.0
  m = methods.get(c)
  s, t = tiny_config(hidden_size=16, num_layers=2), tiny_config(hidden_size=32, num_layers=4)
  m.setup(RunInfo(s, (t,), total_steps=10))
  return m.init_params(c.seed)["pkd"]["kernel"]


def test_turning_hard_ce_off_keeps_the_pkd_projection():
  with_ce, without_ce, with_kd_off = _pkd_aux(1.0, 0.5), _pkd_aux(0.0, 0.5), _pkd_aux(1.0, 0.0)
  np.testing.assert_array_equal(with_ce, without_ce)
  np.testing.assert_array_equal(with_ce, with_kd_off)
  assert with_ce.shape == (16, 32) and float(jnp.std(with_ce)) > 0
  # the stream is the named one: fold_in(key(seed), crc32("init/term/pkd"))
  expected = jax.random.normal(rng.init_key(0, "term", "pkd"), (16, 32)) / jnp.sqrt(16.0)
  np.testing.assert_allclose(with_ce, expected, rtol=1e-6)


def _masked_ids(**weights):
  c = config_lib.base_config("distilbert")
  c.student.source, c.teacher.source = "", ""  # no tokenizer to check the ids against
  for k in c.losses:
    c.losses[k] = 0.0
  for k, w in weights.items():
    c.losses[k] = w
  m = methods.get(c)
  cfg = tiny_config(vocab_size=200)
  m.setup(RunInfo(cfg, (cfg,), total_steps=10))
  ids = np.random.default_rng(0).integers(104, 200, (4, 24)).astype(np.int32)
  batch = {"input_ids": jnp.asarray(ids), "attention_mask": jnp.ones_like(ids)}
  out = m.prepare_batch(batch, rng.step_key(0, 7))
  return np.asarray(out["input_ids"]), np.asarray(out["mlm_labels"])


def test_turning_terms_on_or_off_keeps_the_distilbert_masks():
  ref_ids, ref_labels = _masked_ids(mlm=1.0)
  assert (ref_labels >= 0).sum() > 0
  for weights in ({"mlm": 1.0, "hard_ce": 1.0}, {"distil_soft_ce": 5.0},
                  {"mlm": 2.0, "distil_soft_ce": 5.0, "cosine": 1.0}):
    ids, labels = _masked_ids(**weights)
    np.testing.assert_array_equal(ids, ref_ids, err_msg=str(weights))
    np.testing.assert_array_equal(labels, ref_labels, err_msg=str(weights))


def test_stream_names_never_collide_with_the_models_dropout_indices():
  names = [f"init/term/{t}" for t in methods.TERMS] + ["prepare/mlm_mask", "theseus/mask",
                                                       "theseus/predecessor"]
  tags = [rng.tag(n) for n in names]
  assert len(set(tags)) == len(tags)
  assert all(t > 10_000 for t in tags)  # the models fold 0..L and 10_000 into the step key


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_schedules_follow_their_formula(kind):
  s = Schedule.parse(4.0, f"{kind}:1", key="kd.temperature_schedule")
  for p in (0.0, 0.25, 0.5, 1.0, 1.5):
    frac = min(p, 1.0) if kind == "linear" else 0.5 * (1 - math.cos(math.pi * min(p, 1.0)))
    assert float(s(p)) == pytest.approx(4.0 + (1.0 - 4.0) * frac, rel=1e-6)


def test_a_constant_schedule_is_the_number_itself():
  s = Schedule.parse(2.0, "", key="kd.temperature_schedule")
  assert s(jnp.float32(0.7)) == 2.0 and isinstance(s(0.3), float)
  with pytest.raises(ConfigError, match="linear:END"):
    Schedule.parse(1.0, "linear", key="loss_schedules.kd")
  with pytest.raises(ConfigError, match="linear:END"):
    Schedule.parse(1.0, "exp:0", key="loss_schedules.kd")


def test_a_weight_schedule_moves_the_loss_weight():
  """The composite's loss at progress p is sum_t w_t(p) * term_t: checked against the parts."""
  c = config_lib.base_config("kd")
  c.losses.hard_ce, c.losses.kd = 1.0, 2.0
  c.loss_schedules.kd = "linear:0"
  m = methods.get(c)
  cfg = tiny_config()
  m.setup(RunInfo(cfg, (cfg,), total_steps=100))
  logits = jnp.asarray(np.random.default_rng(0).normal(size=(4, 2)), jnp.float32)
  out = methods.base.BertOutput(logits=logits)
  t_out = methods.base.BertOutput(logits=logits[::-1])
  batch = {"labels": jnp.asarray([0, 1, 1, 0]), "example_weight": jnp.ones((4,))}
  trainable = {"student": {}, "aux": {}}
  for step in (0, 50, 100):
    total, parts = m.loss(methods.StepOutputs(out, (t_out,), batch, trainable, None, jnp.int32(step)))
    w = 2.0 * (1 - step / 100)
    assert float(total) == pytest.approx(float(parts["hard_ce"]) + w * float(parts["kd"]), rel=1e-5)


# ---- Only the sections a run reads enter its config ------------------------------------------
def _stage_configs(spec, overrides=()):
  from jaxdistill import config_lib, pipeline
  c = config_lib.load_config(spec)
  config_lib.apply_overrides(c, list(overrides))
  return [pipeline.stage_config(c, st, {s.name: "x" for s in pipeline.plan(c, "/tmp/w")}, "/tmp/w")
          for st in pipeline.plan(c, "/tmp/w")]


def test_a_kd_run_config_holds_only_the_sections_it_reads():
  (c,) = _stage_configs("configs/kd.py:tiny")
  assert "kd" in c and not {"pkd", "lad", "bilstm", "mobilebert", "tinybert", "theseus"} & set(c)
  (c,) = _stage_configs("configs/kd.py:tiny", [("losses.pkd", "1.0"), ("pkd.layer_map", "last")])
  assert c.pkd.layer_map == "last" and "lad" not in c   # a weighted term brings its section
  (c,) = _stage_configs("configs/kd.py:tiny", [("student.arch", "bilstm")])
  assert "bilstm" in c


def test_a_setting_in_a_section_nothing_reads_is_refused():
  from jaxdistill import config_lib
  with pytest.raises(config_lib.ConfigError, match=r"pkd.layer_map=.last. is set .*losses.pkd=1.0"):
    _stage_configs("configs/kd.py:tiny", [("pkd.layer_map", "last")])


def test_each_stage_config_holds_its_own_sections():
  first, last = _stage_configs("configs/tinybert.py:tiny")[0], _stage_configs("configs/tinybert.py:tiny")[-1]
  assert "tinybert" in first and "tinybert" in last and "pkd" not in last
