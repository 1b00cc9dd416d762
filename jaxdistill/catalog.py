"""The method catalog, read from the source of jaxdistill/methods/*.py (and a user's
`method_module` file) with `ast`, never by importing them, so that configs are parsed
without JAX. The declarations it reads:

- `@register("name", ...)` on a class: a method defined in the file (its `CONFIG` section
  enters a run's config only when `config.method` is one of its names);
- `register("name")(Distill)`: a label of a method defined elsewhere;
- `@register_term("name")`: a loss term (`config.losses.<name>`);
- `register_stage_kind("name")`, `register_student_arch("name")`;
- a module-level `CONFIG = dict(...)` literal: the defaults of `config.<file stem>`;
- a module-level `READS = ("kd", ...)` literal: other modules' sections its terms read.

Which sections a run's config holds (`needed_sections`): a module's section enters when
`config.method` is one of its methods, `student.arch` one of its student architectures, or
one of its terms has a nonzero weight; READS pull in the sections they name. So a KD run's
config.json holds kd and nothing of PKD, LAD or BiLSTM.

tests/test_method_registry.py checks the catalog agrees with the imported registries.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
from pathlib import Path

from jaxdistill.core.errors import ConfigError

METHODS_DIR = Path(__file__).resolve().parent / "methods"
_NOT_METHOD_FILES = ("__init__", "base")


# ---- The method catalog, read from source ----------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ModuleDecl:
  """What one method module declares."""
  path: str
  section: str          # the config section its CONFIG fills (the file's stem)
  config: dict          # CONFIG's defaults ({} if none)
  own_methods: tuple    # names of Method classes defined here (@register on a class)
  aliases: tuple        # names registered for a class defined elsewhere (register(...)(Distill))
  terms: tuple
  stage_kinds: tuple
  student_archs: tuple
  reads: tuple = ()     # READS: other sections its terms read


def _literal(node: ast.AST, path: str):
  if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" \
      and not node.args:
    return {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords}
  try:
    return ast.literal_eval(node)
  except ValueError:
    raise ConfigError(f"{path}: CONFIG must be a literal dict (dict(k=v, ...) or {{...}}) so "
                      "configs can be read without importing the module") from None


def _call_names(call: ast.Call, fn: str) -> tuple:
  f = call.func
  name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
  if name != fn:
    return ()
  return tuple(a.value for a in call.args if isinstance(a, ast.Constant) and isinstance(a.value, str))


def scan_module(path: str) -> ModuleDecl:
  """The declarations of one method module, from its source."""
  try:
    tree = ast.parse(Path(path).read_text(encoding="utf-8"), filename=str(path))
  except (OSError, SyntaxError) as e:
    raise ConfigError(f"cannot read method module {path}: {e}") from None
  config, own, aliases, terms, kinds, archs, reads = {}, [], [], [], [], [], ()
  for node in tree.body:
    if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "READS"
                                            for t in node.targets):
      reads = tuple(_literal(node.value, path))
    if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "CONFIG"
                                            for t in node.targets):
      config = dict(_literal(node.value, path))
    if isinstance(node, ast.ClassDef):
      for d in node.decorator_list:
        if isinstance(d, ast.Call):
          own += _call_names(d, "register")
          terms += _call_names(d, "register_term")
  for node in ast.walk(tree):
    if isinstance(node, ast.Call):
      kinds += _call_names(node, "register_stage_kind")
      archs += _call_names(node, "register_student_arch")
      if isinstance(node.func, ast.Call):  # register("x")(Distill): an alias
        aliases += _call_names(node.func, "register")
  return ModuleDecl(str(path), Path(path).stem, config, tuple(own), tuple(aliases),
                    tuple(terms), tuple(kinds), tuple(archs), reads)


@functools.lru_cache(maxsize=8)
def catalog(method_module: str = "") -> tuple[ModuleDecl, ...]:
  paths = sorted(p for p in METHODS_DIR.glob("*.py") if p.stem not in _NOT_METHOD_FILES)
  decls = [scan_module(str(p)) for p in paths]
  if method_module:
    if not Path(method_module).is_file():
      raise ConfigError(f"method_module {method_module!r} does not exist; give the path of a .py file")
    decls.append(scan_module(method_module))
  return tuple(decls)


def method_names(method_module: str = "") -> list[str]:
  return sorted({n for d in catalog(method_module) for n in d.own_methods + d.aliases})


def term_names(method_module: str = "") -> list[str]:
  return [t for d in catalog(method_module) for t in d.terms]


def stage_kinds(method_module: str = "") -> list[str]:
  return ["train"] + [k for d in catalog(method_module) for k in d.stage_kinds]


def sections(method: str, method_module: str) -> tuple[dict, dict]:
  """(sections every run has: the term families', sections of `method` only)."""
  always, owned = {}, {}
  for d in catalog(method_module):
    if not d.config:
      continue
    if d.own_methods:
      if method in d.own_methods:
        owned[d.section] = d.config
    else:
      always[d.section] = d.config
  return always, owned


def method_owned_sections(method_module: str = "") -> set[str]:
  return {d.section for d in catalog(method_module) if d.own_methods and d.config}


def needed_sections(method: str, arch: str, active_terms, method_module: str = "") -> set[str]:
  """The module sections a run with this method, student arch and active terms reads."""
  active = set(active_terms)
  need: set[str] = set()
  for d in catalog(method_module):
    if d.config and (method in d.own_methods + d.aliases or arch in d.student_archs
                     or active & set(d.terms)):
      need.add(d.section)
      need.update(d.reads)
  return need


def module_sections(method_module: str = "") -> set[str]:
  return {d.section for d in catalog(method_module) if d.config}
