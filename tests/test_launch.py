"""launch/: each script is valid bash, refuses bad arguments with a usage message, and (with
DRY_RUN=1) prints exactly the command it would run, overrides passed through intact."""

import shlex
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ["single_host_gpus.sh", "tpu_pod.sh", "slurm.sbatch"]
TRAIN = ["-m", "jaxdistill.train", "--config", "configs/kd.py", "--workdir", "/shared/runs/kd"]
ARGS = ["--config", "configs/kd.py", "--workdir", "/shared/runs/kd", "--config.mesh.fsdp=2",
        "--config.data.text_column", "my text"]
PASSED = ["--config.mesh.fsdp=2", "--config.data.text_column", "my text"]


def launch(script: str, *args, **env):
  base = {"PATH": "/usr/bin:/bin", "DRY_RUN": "1"}
  return subprocess.run(["bash", f"launch/{script}", *args], cwd=ROOT, env={**base, **env},
                        capture_output=True, text=True, timeout=30)


def dry_run(script: str, *args, **env) -> list[str]:
  proc = launch(script, *args, **env)
  assert proc.returncode == 0, proc.stderr
  return shlex.split(proc.stdout)


@pytest.mark.parametrize("script", SCRIPTS + ["common.sh"])
def test_bash_syntax(script):
  subprocess.run(["bash", "-n", f"launch/{script}"], cwd=ROOT, check=True)


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("args,message", [
    ([], "--config is required"),
    (["--config", "configs/kd.py"], "--workdir is required"),
    (["--config", "configs/kd.py", "--workdir", "w", "extra"], "unexpected argument 'extra'"),
    (["--config", "configs/kd.py", "--workdir"], "--workdir needs a value"),
])
def test_usage_errors(script, args, message):
  proc = launch(script, *args, TPU_NAME="t", ZONE="z")
  assert proc.returncode == 2 and proc.stdout == ""
  err = proc.stderr.splitlines()
  assert err[0].startswith("error: ") and message in err[0]
  assert err[1].startswith("usage: ") and "--config configs/<method>.py --workdir" in err[1]


@pytest.mark.parametrize("script", SCRIPTS)
def test_help(script):
  proc = launch(script, "--help")
  assert proc.returncode == 0 and proc.stdout.startswith("usage: ")


def test_single_host_gpus():
  assert dry_run("single_host_gpus.sh", *ARGS) == [
      "env", "python", *TRAIN, *PASSED, "--config.distributed.initialize=never"]
  assert dry_run("single_host_gpus.sh", "--config=configs/kd.py", "--workdir=/shared/runs/kd",
                 GPUS="0,1", PYTHON=".venv/bin/python") == [
      "env", "CUDA_VISIBLE_DEVICES=0,1", ".venv/bin/python", *TRAIN,
      "--config.distributed.initialize=never"]


def test_tpu_pod():
  cmd = dry_run("tpu_pod.sh", *ARGS, TPU_NAME="pod", ZONE="us-central2-b", PROJECT="p")
  assert cmd[:9] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "pod", "--zone=us-central2-b",
                     "--worker=all", "--project=p"]
  assert cmd[9].startswith("--command=") and len(cmd) == 10
  remote = shlex.split(cmd[9][len("--command="):])  # what each worker's shell runs
  assert remote == ["cd", "jaxdistill", "&&", "python3", *TRAIN, *PASSED,
                    "--config.distributed.initialize=always"]
  for missing, message in (("TPU_NAME", "set TPU_NAME"), ("ZONE", "set ZONE")):
    env = {"TPU_NAME": "pod", "ZONE": "z"}
    del env[missing]
    proc = launch("tpu_pod.sh", *ARGS, **env)
    assert proc.returncode == 2 and proc.stderr.startswith(f"error: {message}")


def test_slurm():
  text = (ROOT / "launch" / "slurm.sbatch").read_text()
  assert "#SBATCH --ntasks-per-node=8" in text and "#SBATCH --gpus-per-node=8" in text
  # One task per GPU: JAX reads SLURM_* (coordinator, process count and id, local GPU) itself.
  assert dry_run("slurm.sbatch", *ARGS) == [
      "srun", "--kill-on-bad-exit=1", "python", *TRAIN, *PASSED,
      "--config.distributed.initialize=always"]
  # One task per node driving all of its GPUs.
  assert dry_run("slurm.sbatch", *ARGS, PER_NODE="1", SLURM_GPUS_ON_NODE="4",
                 SLURM_JOB_NUM_NODES="3") == [
      "srun", "--kill-on-bad-exit=1", "--nodes=3", "--ntasks=3", "--ntasks-per-node=1",
      "--export=ALL,JAX_LOCAL_DEVICE_IDS=0,1,2,3", "python", *TRAIN, *PASSED,
      "--config.distributed.initialize=always"]
  proc = launch("slurm.sbatch", *ARGS, PER_NODE="1")
  assert proc.returncode == 2 and "PER_NODE=1 needs GPUS_PER_NODE" in proc.stderr


def test_the_overrides_reach_the_trainer():
  """What the scripts pass on is what `python -m jaxdistill.train` parses."""
  from jaxdistill.config_lib import parse_overrides
  cmd = dry_run("single_host_gpus.sh", *ARGS)
  assert parse_overrides(cmd[len(TRAIN) + 2:]) == [
      ("mesh.fsdp", "2"), ("data.text_column", "my text"), ("distributed.initialize", "never")]
