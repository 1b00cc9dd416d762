"""Multi-process runs through jax.distributed: when a process connects (config, environment,
SLURM), and two processes on localhost training one tiny KD run together (FSDP across them:
each holds half of the sharded params) that matches the single-process run: the same loss
curve, the same exported params, logs and exports written once."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxdistill.config_lib import load_config
from jaxdistill.distributed import plan

ROOT = Path(__file__).resolve().parent.parent
SLURM = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "node[1-2]", "SLURM_NTASKS": "2",
         "SLURM_PROCID": "1", "SLURM_LOCALID": "0"}


def test_plan_from_config_and_environment():
  c = load_config(f"{ROOT}/configs/kd.py:tiny")
  assert plan(c, {}) is None  # a plain single-process run
  env = {"JAXDISTILL_COORDINATOR": "10.0.0.1:1234", "JAXDISTILL_NUM_PROCESSES": "4",
         "JAXDISTILL_PROCESS_ID": "3"}
  assert plan(c, env) == dict(coordinator_address="10.0.0.1:1234", num_processes=4, process_id=3,
                              initialization_timeout=300)
  c.distributed.coordinator, c.distributed.num_processes, c.distributed.process_id = "h:1", 2, 0
  assert plan(c, env)["coordinator_address"] == "h:1"  # the config wins over the environment
  assert plan(c, {})["num_processes"] == 2
  c.distributed.initialize = "never"
  assert plan(c, env) is None


def test_plan_detects_slurm_and_always():
  c = load_config(f"{ROOT}/configs/kd.py:tiny")
  assert plan(c, SLURM) == dict(initialization_timeout=300)  # JAX reads SLURM's variables
  assert plan(c, {**SLURM, "SLURM_NTASKS": "1"}) is None  # a single-task job stays single
  c.distributed.initialize = "always"  # TPU pods: jax.distributed.initialize() finds the rest
  assert plan(c, {}) == dict(initialization_timeout=300)


def test_plan_errors():
  c = load_config(f"{ROOT}/configs/kd.py:tiny")
  with pytest.raises(ValueError, match=r"needs distributed.num_processes >= 1 .*got 0 and -1"):
    plan(c, {"JAXDISTILL_COORDINATOR": "h:1"})
  with pytest.raises(ValueError, match="got 2 and 2"):
    plan(c, {"JAXDISTILL_COORDINATOR": "h:1", "JAXDISTILL_NUM_PROCESSES": "2",
             "JAXDISTILL_PROCESS_ID": "2"})
  with pytest.raises(ValueError, match="JAXDISTILL_PROCESS_ID='one' is not an integer"):
    plan(c, {"JAXDISTILL_COORDINATOR": "h:1", "JAXDISTILL_NUM_PROCESSES": "2",
             "JAXDISTILL_PROCESS_ID": "one"})
  c.distributed.initialize = "sometimes"
  with pytest.raises(ValueError, match="distributed.initialize='sometimes'; use one of auto, always, never"):
    plan(c, {})


def test_cli_distributed_error_is_one_line(tmp_path, capsys):
  from jaxdistill.train.__main__ import main
  code = main(["--config", "configs/kd.py:tiny", "--workdir", str(tmp_path / "w"),
               "--config.distributed.coordinator=127.0.0.1:1"])
  err = capsys.readouterr().err.strip()
  assert code == 2 and err.startswith("error: coordinator 127.0.0.1:1 needs") and "\n" not in err


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _args(ckpts, tmp_path, workdir, *extra):
  return ["--config", "configs/kd.py:tiny", "--workdir", str(workdir),
          f"--config.teacher.source={ckpts['teacher']}", "--config.teacher.finetune=false",
          f"--config.student.source={ckpts['student']}", "--config.student.init=pretrained",
          "--config.student.layers=", "--config.train.epochs=2", "--config.train.log_every=1",
          "--config.optim.lr=1e-3", "--config.report.compression=false",
          f"--config.cache_dir={tmp_path / 'cache'}", *extra]


def _curve(workdir):
  lines = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  return lines, [l["train/loss"] for l in lines if "train/loss" in l]


def test_two_processes_train_one_run(tmp_path, capsys):
  from safetensors.numpy import load_file

  from jaxdistill.testing import tiny_checkpoint
  from jaxdistill.train.__main__ import main
  ckpts = {"teacher": tiny_checkpoint(tmp_path / "teacher", num_layers=2, seed=1,
                                      label_names=("rotten", "fresh")),
           "student": tiny_checkpoint(tmp_path / "student", num_layers=1, seed=2)}
  # The single-process reference, in this process (one device).
  assert main(_args(ckpts, tmp_path, tmp_path / "single")) == 0
  # Two processes with one CPU device each: mesh data=1 x fsdp=2 shards every large param
  # across the processes; each reads its half of every batch.
  port, procs = _free_port(), []
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  for pid in range(2):
    penv = {**env, "JAX_PLATFORMS": "cpu", "JAXDISTILL_COORDINATOR": f"127.0.0.1:{port}",
            "JAXDISTILL_NUM_PROCESSES": "2", "JAXDISTILL_PROCESS_ID": str(pid)}
    procs.append(subprocess.Popen(
        [sys.executable, "-m", "jaxdistill.train",
         *_args(ckpts, tmp_path, tmp_path / "multi", "--config.mesh.data=1", "--config.mesh.fsdp=2",
                "--config.distributed.timeout_s=120")],
        cwd=ROOT, env=penv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
  outs = []
  try:
    for p in procs:
      outs.append(p.communicate(timeout=300))
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-4000:]
  # Process 0 prints and writes; process 1 only trains.
  assert "kd_tiny: dev accuracy" in outs[0][0] and "kd_tiny: dev accuracy" not in outs[1][0]
  single, multi = _curve(tmp_path / "single"), _curve(tmp_path / "multi")
  assert len(multi[1]) == len(single[1]) == 12  # each step logged once, not once per process
  np.testing.assert_allclose(multi[1], single[1], rtol=1e-4)
  print("max |loss(2 processes) - loss(1 process)|:", np.max(np.abs(np.subtract(multi[1], single[1]))))
  final = [{k: v for line in lines for k, v in line.items() if k.startswith("final/")}
           for lines in (single[0], multi[0])]
  assert final[0] == final[1]  # identical dev/test metrics (predictions gathered to all)
  a = load_file(str(tmp_path / "single" / "export" / "model.safetensors"))
  b = load_file(str(tmp_path / "multi" / "export" / "model.safetensors"))
  assert set(a) == set(b)
  for k in a:
    np.testing.assert_allclose(b[k], a[k], atol=2e-5, err_msg=k)
  assert (tmp_path / "multi" / "export" / "DONE").exists()
