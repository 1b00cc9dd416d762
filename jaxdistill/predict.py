"""Inference with an exported student (or any HF BERT sequence classifier): texts in, labels out.

    from jaxdistill.predict import Classifier
    clf = Classifier.load("runs/demo/export")
    clf(["a gorgeous, witty film", "two hours I will never get back"])
    # [{'label': 'fresh', 'score': 0.98}, {'label': 'rotten', 'score': 0.79}]  (a KD student)
    clf.probabilities(texts)        # np.ndarray [N, C] (regression: the values, [N])

    python -m jaxdistill.predict runs/demo/export "a gorgeous, witty film" "dull"

Any export jaxdistill writes loads here: BERT, MobileBERT and BiLSTM students (their
architectures register when jaxdistill.methods is imported). Texts are tokenized with the
export's own tokenizer, padded to a bucket of lengths so a stream of calls compiles a few
programs, not one per length. Text pairs: pass (text, text_pair) tuples.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import jaxdistill.methods  # noqa: F401  (registers the MobileBERT and BiLSTM student loaders)
from jaxdistill.models.hub import load_pretrained, load_tokenizer

Text = Union[str, tuple]
_BUCKETS = (16, 32, 64, 128, 256, 512)


class Classifier:
  """A loaded sequence classifier; call it on a list of texts."""

  def __init__(self, model, tokenizer, max_length: int = 128, batch_size: int = 64):
    cfg = model.config
    if cfg is not None and getattr(cfg, "head", "sequence") != "sequence":
      raise ValueError(f"this checkpoint has a {cfg.head!r} head; Classifier serves sequence "
                       "classifiers (reload with head='sequence' for a fresh one)")
    self.cfg, self.tokenizer = cfg, tokenizer
    self.max_length, self.batch_size = max_length, batch_size
    names = tuple(getattr(cfg, "label_names", ()) or ())
    self.regression = getattr(cfg, "problem_type", "") == "regression"
    self.label_names = names or tuple(str(i) for i in range(getattr(cfg, "num_labels", 2)))
    graph, params = nnx.split(model)
    self._params = params
    self._forward = jax.jit(lambda p, ids, mask, types: nnx.merge(graph, p)(ids, mask, types).logits)

  @classmethod
  def load(cls, source: str, **kwargs) -> "Classifier":
    """`source`: an export directory (`<workdir>/export`) or a HF model id / directory."""
    model, fresh = load_pretrained(source)
    if any(f.startswith("classifier") for f in fresh):
      raise ValueError(f"{source} has no trained classifier head (it would predict at random); "
                       "load a fine-tuned export, e.g. runs/demo/export")
    return cls(model, load_tokenizer(source), **kwargs)

  def _encode(self, texts: Sequence[Text]) -> dict:
    pairs = [t if isinstance(t, tuple) else (t, None) for t in texts]
    first, second = [a for a, _ in pairs], [b for _, b in pairs]
    enc = self.tokenizer(first, second if any(s is not None for s in second) else None,
                         truncation=True, max_length=self.max_length, padding="longest",
                         return_tensors="np", return_token_type_ids=True)
    width = enc["input_ids"].shape[1]
    target = next((b for b in _BUCKETS if b >= width), width)
    pad = lambda a, v: np.pad(a, ((0, 0), (0, target - width)), constant_values=v).astype(np.int32)
    return {"input_ids": pad(enc["input_ids"], self.tokenizer.pad_token_id or 0),
            "attention_mask": pad(enc["attention_mask"], 0),
            "token_type_ids": pad(enc["token_type_ids"], 0)}

  def logits(self, texts: Sequence[Text]) -> np.ndarray:
    """[N, C] float32 logits ([N, 1] for regression)."""
    if isinstance(texts, (str, tuple)):
      raise TypeError("pass a list of texts, e.g. clf(['a text'])")
    out = []
    for i in range(0, len(texts), self.batch_size):
      b = self._encode(texts[i:i + self.batch_size])
      out.append(np.asarray(self._forward(self._params, jnp.asarray(b["input_ids"]),
                                          jnp.asarray(b["attention_mask"]),
                                          jnp.asarray(b["token_type_ids"])), np.float32))
    return np.concatenate(out) if out else np.zeros((0, len(self.label_names)), np.float32)

  def probabilities(self, texts: Sequence[Text]) -> np.ndarray:
    """[N, C] softmax probabilities; for a regression model, the predicted values [N]."""
    z = self.logits(texts)
    if self.regression:
      return z[:, 0]
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)

  def __call__(self, texts: Sequence[Text]) -> list[dict]:
    p = self.probabilities(texts)
    if self.regression:
      return [{"value": float(v)} for v in p]
    best = p.argmax(axis=1)
    return [{"label": self.label_names[k], "score": float(p[i, k])} for i, k in enumerate(best)]


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(prog="python -m jaxdistill.predict", description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("model", help="an export directory (e.g. runs/demo/export) or HF model")
  ap.add_argument("texts", nargs="*", help="texts to classify (none: one per line on stdin)")
  ap.add_argument("--max_length", type=int, default=128)
  args = ap.parse_args(argv)
  texts = args.texts or [line.rstrip("\n") for line in sys.stdin if line.strip()]
  try:
    clf = Classifier.load(args.model, max_length=args.max_length)
  except (ValueError, FileNotFoundError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  for text, pred in zip(texts, clf(texts)):
    print(json.dumps({"text": text, **pred}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
