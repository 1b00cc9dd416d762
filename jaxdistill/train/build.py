"""Building the student and teacher a config asks for, as (BertConfig, params) pairs.

Initialising a student from chosen layers of another checkpoint is a pure function on param
dicts (`select_layers`): no model is edited in place.
"""

from __future__ import annotations

import logging
from typing import NamedTuple, Optional

import jax
from flax import nnx

from jaxdistill.methods.base import STUDENT_ARCHS, Method
from jaxdistill.models import BertConfig, BertModel, registry
from jaxdistill.models.hub import load_pretrained, load_tokenizer, params_of, resolve_model_dir

log = logging.getLogger(__name__)


class Built(NamedTuple):
  cfg: BertConfig
  params: dict
  fresh: list[str]   # parameters that were freshly initialised (not from a checkpoint)


def head_overrides(task) -> dict:
  if task.is_regression:
    return dict(problem_type="regression")
  if task.kind == "span":
    return dict(head="span", num_labels=2, label_names=())
  if task.kind == "token":
    return dict(head="token", num_labels=task.num_labels, label_names=tuple(task.label_names))
  if not task.label_names:  # text without labels (an MLM stage): keep the source's head
    return {}
  return dict(num_labels=task.num_labels, label_names=tuple(task.label_names or ()))


def select_layers(cfg: BertConfig, params: dict, layers: tuple[int, ...]) -> tuple[BertConfig, dict]:
  """A shallower model made of `layers` (0-based) of `params`; everything else is kept."""
  bad = [i for i in layers if not 0 <= i < cfg.num_layers]
  if bad or not layers:
    raise ValueError(f"student.layers={tuple(layers)}: each must be in 0..{cfg.num_layers - 1} "
                     f"(the source has {cfg.num_layers} layers)")
  new = dict(params)
  new["layers"] = {j: params["layers"][i] for j, i in enumerate(layers)}
  return cfg.replace(num_layers=len(layers)), new


def build_student(config, task, teacher_source: Optional[str], method: Method) -> Built:
  s = config.student
  source = s.source or teacher_source
  if not source:
    raise ValueError("student.source is empty and there is no teacher to copy; set "
                     "--config.student.source to a checkpoint directory or 'all-MiniLM-L6-v2'")
  numerics = dict(dtype=config.train.dtype)
  if s.mlm_head or method.needs_mlm_head()[0]:  # e.g. DistilBERT's MLM loss
    numerics["mlm_head"] = True
  if s.arch != "bert":  # MobileBERT, BiLSTM: built by their methods/ modules
    if s.arch not in STUDENT_ARCHS:
      raise ValueError(f"student.arch={s.arch!r}; use one of {', '.join(('bert', *STUDENT_ARCHS))}")
    if task.kind != "sequence":
      raise ValueError(f"student.arch={s.arch} has only a sequence head but {task.name} needs a "
                       f"{task.kind} head; use student.arch=bert")
    cfg, params, fresh = STUDENT_ARCHS[s.arch](config, task, source, head_overrides(task))
    return Built(cfg, params, fresh)
  if s.init == "random":
    model, _ = load_pretrained(source, seed=config.seed, **head_overrides(task), **numerics)
    arch = {k: s[k] for k in ("hidden_size", "num_layers", "num_heads", "intermediate_size") if s[k]}
    cfg = model.config.replace(**arch)
    model = BertModel(cfg, rngs=nnx.Rngs(config.seed))
    return Built(cfg, params_of(model), ["all"])
  if s.init not in ("pretrained", "layers"):
    raise ValueError(f"student.init={s.init!r}; use pretrained, layers or random")
  model, fresh = load_pretrained(source, seed=config.seed, **head_overrides(task), **numerics)
  cfg, params = model.config, params_of(model)
  if s.init == "layers":
    cfg, params = select_layers(cfg, params, tuple(s.layers))
  return Built(cfg, params, fresh)


def teacher_head_used(config, task, method: Method) -> bool:
  """Whether the run reads the teacher's task head: a loss on its logits, a method whose
  student forward runs the teacher's modules (module replacing: the predecessor's classifier
  is the model's) or the compression report on a labelled task (its accuracy). Terms on its encoder or MLM head alone (DistilBERT's general distillation) do
  not, so a checkpoint whose classifier never trained (an MLM-head-only stage's export) may
  teach them."""
  labelled = task.is_regression or bool(task.label_names)
  return method.reads_teacher_logits() or (bool(config.report.compression) and labelled)


def build_teacher(source: str, config, task, method: Method) -> Built:
  extra = {"mlm_head": True} if method.needs_mlm_head()[1] else {}
  model, fresh = load_pretrained(source, seed=config.seed, dtype=config.train.dtype, **extra)
  cfg = model.config
  if extra and any(f.startswith("mlm_") for f in fresh):  # a random MLM head teaches noise
    raise ValueError(f"teacher {source} has no MLM head but a loss reads its MLM logits; fit one "
                     "first (the teacher_mlm stage of configs/distilbert.py)")
  if not teacher_head_used(config, task, method):
    return Built(cfg, params_of(model), fresh)
  head = getattr(cfg, "head", "sequence")
  if head != task.kind:
    raise ValueError(f"teacher {source} has a {head} head but the task {task.name!r} needs a "
                     f"{task.kind} head; fine-tune the teacher on this task first (teacher.finetune=True)")
  if task.is_regression != (cfg.problem_type == "regression") or (
      not task.is_regression and cfg.num_labels != task.num_labels):
    raise ValueError(f"teacher {source} has a {cfg.problem_type} head with {cfg.num_labels} "
                     f"outputs but the task {task.name!r} needs "
                     f"{'regression' if task.is_regression else f'{task.num_labels} classes'}; "
                     "fine-tune the teacher on this task first (teacher.finetune=True)")
  if cfg.label_names and task.label_names and tuple(cfg.label_names) != tuple(task.label_names):
    raise ValueError(f"teacher labels {cfg.label_names} differ from the task's {tuple(task.label_names)}; "
                     "the label order would silently flip")
  if any(f.startswith("classifier") for f in fresh):
    raise ValueError(f"teacher {source} has no trained classifier; fine-tune it first "
                     "(teacher.finetune=True) or point teacher.source at a fine-tuned checkpoint")
  return Built(cfg, params_of(model), fresh)


def check_pair(student: BertConfig, teacher: BertConfig) -> None:
  """Student and teacher must read the same token ids."""
  if student.vocab_size != teacher.vocab_size:
    raise ValueError(f"student vocab {student.vocab_size} != teacher vocab {teacher.vocab_size}: "
                     "they must share one tokenizer; initialise the student from the teacher's family")


def check_max_length(max_length: int, cfg, role: str, source: str) -> None:
  """Positions past the embedding table must never be read (a gather out of range does not fail)."""
  # RoBERTa's table holds 2 positions fewer than its rows (max_sequence_length); a BiLSTM has none.
  limit = getattr(cfg, "max_sequence_length", getattr(cfg, "max_position_embeddings", None))
  if limit is not None and max_length > limit:
    raise ValueError(f"data.max_length={max_length} exceeds the {role}'s position table ({limit} "
                     f"tokens, {source}); set --config.data.max_length to at most {limit}")


# Text whose ids reveal a different normaliser (case, accents, unicode) or word-piece split.
TOKENIZER_PROBE = ("Hello, WORLD! Naïve café façade — ÜBER straße 1234.5", "🎬 東京 e-mail@x.org")


def check_tokenizers(student_source: str, teacher_source: str, student_tok=None) -> None:
  """The teacher must read the ids the student's tokenizer wrote. Equal vocab sizes are not
  enough (a cased and an uncased vocab can be the same size), so the token -> id maps and the
  ids of probe texts must be identical."""
  if resolve_model_dir(student_source).resolve() == resolve_model_dir(teacher_source).resolve():
    return
  try:
    s_tok = student_tok or load_tokenizer(student_source)
    t_tok = load_tokenizer(teacher_source)
  except (OSError, ValueError) as e:  # a checkpoint without tokenizer files: nothing to compare
    log.warning("could not compare the student's and teacher's tokenizers (%s)", str(e).splitlines()[0])
    return
  s_vocab, t_vocab = s_tok.get_vocab(), t_tok.get_vocab()
  diff = sorted(t for t in s_vocab.keys() | t_vocab.keys() if s_vocab.get(t) != t_vocab.get(t))
  what = f"{len(diff)} tokens have other ids or are missing (e.g. {diff[0]!r})" if diff else ""
  for text in () if diff else TOKENIZER_PROBE:
    if s_tok(text)["input_ids"] != t_tok(text)["input_ids"]:
      what = f"they split {text!r} differently (casing or normalisation)"
      break
  if what:
    raise ValueError(f"the student's tokenizer ({student_source}) and the teacher's ({teacher_source}) "
                     f"differ: {what}; the teacher would read wrong ids, so give the student the "
                     "teacher's tokenizer (initialise it from the teacher's family)")


def as_dtype(params: dict, dtype) -> dict:
  return jax.tree_util.tree_map(lambda x: x.astype(dtype), params)
