"""Methods and loss terms, one registry each (methods/base.py).

- `base`: the `Method` hooks, the `Term` type, `register` / `register_term` /
  `register_stage_kind` / `register_student_arch`, and `get(config)`.
- `distill`: the composite method, a config-weighted sum of terms ("kd", "pkd", "finetune",
  ... are its labels).
- term families: `kd` (hard_ce, kd, soft_ce, logit_mse), `pkd`, `lad`, `tinybert`, `minilm`,
  `distilbert`, `mobilebert` (and its student), `bilstm` (its student and augmentation).
- methods with hooks of their own: `theseus` (module replacing), `multi_teacher` (several
  teachers' soft targets).
- `schedules`: constant / linear / cosine loss-weight and temperature schedules.

Importing this package registers all of them. A file outside the package registers its own
through `config.method_module` (base.load_method_module).
"""

import importlib
import pkgutil

# Every module of this package, imported so that it registers itself: a new method is a new
# file here and nothing else.
for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
  importlib.import_module(f"{__name__}.{_info.name}")
from jaxdistill.methods.base import (METHODS, STAGE_KINDS, STUDENT_ARCHS, TERMS, Inputs, Method,  # noqa: F401
                                     Models, RunInfo, StepOutputs, Term, get, register,
                                     register_stage_kind, register_student_arch, register_term)
