"""One train step for 1..N devices: tiny KD and BERT-of-Theseus runs on 8 forced host devices
(mesh data=8, and data=4 x fsdp=2 with sharded params and optimizer state) follow the
1-device loss curve and end at its params; a resumed FSDP run ends exactly where an
uninterrupted one does; the Theseus module mask is the same on every device.

The device count is fixed when JAX starts, so the 8-device runs happen in a subprocess
(this file run as a script with XLA_FLAGS=--xla_force_host_platform_device_count=8).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
N = 8


def run_config(name: str, ckpts: dict, cache: str, data: int = -1, fsdp: int = 1):
  from jaxdistill.config_lib import load_config
  c = load_config(f"{ROOT}/configs/{name}.py:tiny")
  c.teacher.source, c.teacher.finetune = ckpts["teacher"], False
  if name == "kd":
    c.student.source, c.student.init, c.student.layers = ckpts["student"], "pretrained", ()
  else:  # successor i starts as predecessor layer 1 - i, so the drawn modules matter
    c.student.layers, c.theseus.finetune_epochs = (1, 0), 0
    c.theseus.scheduler, c.theseus.rate = "constant", 0.5
  c.train.epochs, c.train.log_every, c.optim.lr = 2, 1, 1e-3
  c.report.export = c.report.compression = False
  c.cache_dir = cache
  c.mesh.data, c.mesh.fsdp = data, fsdp
  return c


def loss_curve(workdir) -> list[float]:
  lines = [json.loads(l) for l in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]
  return [l["train/loss"] for l in lines if "train/loss" in l]


def save_params(state, path) -> None:
  import jax
  leaves = jax.tree_util.tree_leaves_with_path(state.trainable)
  np.savez(path, **{jax.tree_util.keystr(p): np.asarray(x) for p, x in leaves})


def _specs(tree) -> dict:
  import jax
  return {jax.tree_util.keystr(p): list(x.sharding.spec)
          for p, x in jax.tree_util.tree_leaves_with_path(tree)}


def _subprocess_main(spec_file: str) -> None:
  """In the 8-device subprocess: the runs `spec_file` lists, plus probes; writes results."""
  import jax
  import jax.numpy as jnp
  from jax.sharding import NamedSharding

  from jaxdistill.methods import theseus
  from jaxdistill.train import sharding
  from jaxdistill.pipeline import run as train_and_evaluate

  spec = json.loads(Path(spec_file).read_text())
  out = {"devices": jax.device_count(), "runs": {}}
  for run in spec["runs"]:
    c = run_config(run["name"], spec["ckpts"], spec["cache"], run["data"], run["fsdp"])
    if run.get("stop_after"):
      c.train.stop_after = run["stop_after"]
    res = train_and_evaluate(c, run["workdir"])
    save_params(res["state"], run["workdir"] + ".npz")
    out["runs"][run["key"]] = {"trainable": _specs(res["state"].trainable),
                               "opt_state": _specs(res["state"].opt_state)}
  c = run_config("kd", spec["ckpts"], spec["cache"])
  c.train.batch_size = 12
  try:
    sharding.make_mesh(c)
  except ValueError as e:
    out["batch_error"] = str(e)
  # The Theseus draw inside a jitted SPMD program: each device writes its own row.
  mesh = sharding.make_mesh(run_config("theseus", spec["ckpts"], spec["cache"], data=N))
  draw = jax.jit(lambda key: jnp.broadcast_to(theseus.module_mask(key, 0.5, 6), (N, 6)),
                 out_shardings=NamedSharding(mesh, sharding.BATCH))
  rows = draw(jax.random.fold_in(jax.random.key(0), 3))
  out["mask_rows"] = [np.asarray(s.data).astype(int).tolist() for s in rows.addressable_shards]
  Path(spec["out"]).write_text(json.dumps(out))


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
  from jaxdistill.testing import tiny_checkpoint
  d = tmp_path_factory.mktemp("ckpts")
  return {"teacher": str(tiny_checkpoint(d / "teacher", num_layers=2, label_names=("rotten", "fresh"),
                                         seed=1)),
          "student": str(tiny_checkpoint(d / "student", num_layers=1, seed=2))}


def run_on_8_devices(tmp: Path, ckpts: dict, runs: list[dict]) -> dict:
  spec = {"ckpts": ckpts, "cache": str(tmp / "cache"), "out": str(tmp / "out.json"),
          "runs": [{**r, "workdir": str(tmp / r["key"])} for r in runs]}
  (tmp / "spec.json").write_text(json.dumps(spec))
  # PYTHONPATH: the subprocess runs this file as a script (tests/ first on its path), so
  # without it `import jaxdistill` could find another checkout's code than the parent's.
  env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={N}",
         "JAX_PLATFORMS": "cpu",
         "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
  proc = subprocess.run([sys.executable, __file__, str(tmp / "spec.json")], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return json.loads((tmp / "out.json").read_text())


def reference(name: str, ckpts: dict, tmp: Path):
  """The 1-device run in this process: (loss curve, final params)."""
  from jaxdistill.pipeline import run as train_and_evaluate
  res = train_and_evaluate(run_config(name, ckpts, str(tmp / "cache"), data=1), tmp / f"{name}_1")
  save_params(res["state"], tmp / f"{name}_1.npz")
  return loss_curve(tmp / f"{name}_1"), np.load(tmp / f"{name}_1.npz")


def assert_same_run(tmp: Path, key: str, ref) -> float:
  curve, params = loss_curve(tmp / key), np.load(tmp / f"{key}.npz")
  assert len(curve) == len(ref[0]) == 12
  np.testing.assert_allclose(curve, ref[0], rtol=1e-4)
  assert set(params) == set(ref[1])
  for k in params:
    np.testing.assert_allclose(params[k], ref[1][k], atol=2e-5, err_msg=k)
  return float(np.max(np.abs(np.array(curve) - ref[0])))


def test_kd_on_8_devices_matches_1_device(ckpts, tmp_path):
  out = run_on_8_devices(tmp_path, ckpts, [
      {"key": "kd_8", "name": "kd", "data": 8, "fsdp": 1},
      {"key": "kd_4x2", "name": "kd", "data": 4, "fsdp": 2},
      {"key": "kd_4x2_resumed", "name": "kd", "data": 4, "fsdp": 2, "stop_after": 5},
      {"key": "kd_4x2_resumed", "name": "kd", "data": 4, "fsdp": 2}])
  assert out["devices"] == N
  ref = reference("kd", ckpts, tmp_path)
  diffs = {key: assert_same_run(tmp_path, key, ref) for key in ("kd_8", "kd_4x2")}
  print("max |loss(8 devices) - loss(1 device)|:", diffs)
  # FSDP really shards: the word embedding [30522, 32] and its Adam moments over fsdp.
  specs = out["runs"]["kd_4x2"]
  word = [k for k in specs["trainable"] if "'word'" in k]
  assert [specs["trainable"][k] for k in word] == [["fsdp", None]]
  mu = [v for k, v in specs["opt_state"].items() if "mu" in k and "'word'" in k]
  assert mu == [["fsdp", None]]
  assert [] in specs["trainable"].values()  # biases and norms replicated
  assert all(v == [] for v in out["runs"]["kd_8"]["trainable"].values())
  # Stopped at step 5 and resumed into the sharded layout: exactly the uninterrupted run.
  a, b = np.load(tmp_path / "kd_4x2.npz"), np.load(tmp_path / "kd_4x2_resumed.npz")
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  assert out["batch_error"] == ("train.batch_size=12 is not divisible by the 8 data-parallel devices "
                                "(mesh.data=8 x mesh.fsdp=1); use a multiple of 8")


def test_theseus_on_8_devices_matches_1_device(ckpts, tmp_path):
  import jax

  from jaxdistill.methods import theseus
  out = run_on_8_devices(tmp_path, ckpts, [
      {"key": "theseus_8", "name": "theseus", "data": 8, "fsdp": 1},
      {"key": "theseus_4x2", "name": "theseus", "data": 4, "fsdp": 2}])
  ref = reference("theseus", ckpts, tmp_path)
  diffs = {key: assert_same_run(tmp_path, key, ref) for key in ("theseus_8", "theseus_4x2")}
  print("max |loss(8 devices) - loss(1 device)|:", diffs)
  # The per-step draw is one replicated value: every device holds the same mask, the one a
  # single device draws.
  expected = np.asarray(theseus.module_mask(jax.random.fold_in(jax.random.key(0), 3), 0.5, 6))
  assert out["mask_rows"] == [[expected.astype(int).tolist()]] * N


def test_param_spec_rules():
  from jax.sharding import PartitionSpec as P

  from jaxdistill.train.sharding import param_spec
  sizes = {"data": 4, "fsdp": 2}
  assert param_spec("student/embeddings/word/embedding", (30522, 32), sizes) == P("fsdp", None)
  assert param_spec("student/layers/0/attention/query/kernel", (32, 4, 8), sizes) == P("fsdp", None, None)
  assert param_spec("student/layers/0/norm/scale", (32,), sizes) == P()
  assert param_spec("student/classifier/kernel", (33, 3), sizes) == P()  # nothing divides
  assert param_spec("student/embeddings/word/embedding", (30522, 32), {"data": 8, "fsdp": 1}) == P()
  rules = ((r"embeddings/word", (None, "fsdp")), (r"intermediate/kernel", ()))
  assert param_spec("teacher/embeddings/word/embedding", (30522, 32), sizes, rules) == P(None, "fsdp")
  assert param_spec("student/layers/1/intermediate/kernel", (32, 64), sizes, rules) == P()
  with pytest.raises(ValueError, match="mesh.rules: 'word' shards student/embeddings/word/embedding"):
    param_spec("student/embeddings/word/embedding", (30523, 32), sizes, (("word", ("fsdp",)),))
  # From the command line: a Python literal.
  from jaxdistill.config_lib import apply_override, load_config
  from jaxdistill.train.sharding import rules_of
  c = load_config(f"{ROOT}/configs/kd.py:tiny")
  apply_override(c, "mesh.rules", "(('embeddings/word', (None, 'fsdp')), ('intermediate/kernel', ()))")
  assert rules_of(c) == rules


def test_mesh_errors_on_one_device():
  from jaxdistill.config_lib import load_config
  from jaxdistill.train.sharding import make_mesh
  c = load_config(f"{ROOT}/configs/kd.py:tiny")
  c.mesh.data, c.mesh.fsdp = 1, 2
  with pytest.raises(ValueError, match=r"mesh.data=1 x mesh.fsdp=2 needs 2 devices but only 1 are visible"):
    make_mesh(c)
  c.mesh.data, c.mesh.fsdp = -1, 0
  with pytest.raises(ValueError, match="mesh.fsdp=0 must be >= 1"):
    make_mesh(c)
  c.mesh.fsdp = 1
  assert dict(make_mesh(c).shape) == {"data": 1, "fsdp": 1}


if __name__ == "__main__":
  _subprocess_main(sys.argv[1])
