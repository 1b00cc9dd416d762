"""Every config in configs/ loads; the command line overrides keys with type checks; unknown
keys and bad values are one-line errors naming the fix."""

import subprocess
import sys
from pathlib import Path

import pytest

from jaxdistill.config_lib import ConfigError, apply_override, load_config, parse_overrides
from jaxdistill import methods

CONFIGS = sorted(Path(__file__).parent.parent.glob("configs/*.py"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
@pytest.mark.parametrize("variant", ["", ":tiny"])
def test_every_config_loads(path, variant):
  c = load_config(f"{path}{variant}")
  assert c.name.startswith(path.stem)
  method = methods.get(c)  # every weighted term exists and at least one is on
  assert method.terms
  if method.teacher_use() != "none":
    assert c.teacher.source, "a distillation config must name its teacher"
  assert "python -m jaxdistill.train --config configs/" in Path(path).read_text(), \
      "each config's docstring holds the command that runs it"
  if variant:
    assert c.data.max_examples and c.data.max_examples <= 64


def test_overrides_keep_types():
  c = load_config("configs/kd.py")
  for key, val in parse_overrides(["--config.optim.lr=3e-5", "--config.train.epochs", "2",
                                   "--config.student.layers=0,3", "--config.kd.t2_scaling=false",
                                   "--config.losses.kd=1"]):
    apply_override(c, key, val)
  assert c.optim.lr == 3e-5 and c.train.epochs == 2 and c.student.layers == (0, 3)
  assert c.kd.t2_scaling is False and c.losses.kd == 1.0 and isinstance(c.losses.kd, float)


def test_unknown_key_names_the_nearest():
  c = load_config("configs/kd.py")
  with pytest.raises(ConfigError, match=r"unknown config key 'optim.lrr'; did you mean optim.lr"):
    apply_override(c, "optim.lrr", "1e-4")
  with pytest.raises(ConfigError, match="unknown config key 'losses.kdd'"):
    apply_override(c, "losses.kdd", "1")


def test_bad_value_is_a_clear_error():
  c = load_config("configs/kd.py")
  with pytest.raises(ConfigError, match=r"--config.train.epochs: cannot read 'three' as int"):
    apply_override(c, "train.epochs", "three")


def test_missing_config_file():
  with pytest.raises(ConfigError, match="does not exist"):
    load_config("configs/nope.py")


def test_unknown_key_in_a_config_file(tmp_path):
  p = tmp_path / "bad.py"
  p.write_text("from jaxdistill.config_lib import base_config\n"
               "def get_config():\n  c = base_config()\n  c.optim.learning_rate = 1.0\n  return c\n")
  with pytest.raises(ConfigError, match="learning_rate"):
    load_config(str(p))


def test_cli_prints_one_line_error_for_unknown_key():
  r = subprocess.run([sys.executable, "-m", "jaxdistill.train", "--config", "configs/kd.py",
                      "--config.optim.lrr=1"], capture_output=True, text=True, timeout=120)
  assert r.returncode == 2
  assert r.stderr.strip().splitlines() == [
      "error: unknown config key 'optim.lrr'; did you mean optim.lr, optim.eps, optim.b1?"] or \
      r.stderr.strip().startswith("error: unknown config key 'optim.lrr'; did you mean optim.lr")
  assert "Traceback" not in r.stderr
