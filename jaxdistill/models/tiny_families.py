"""Tiny random RoBERTa checkpoints, with a real byte-level BPE tokenizer, built offline.

No RoBERTa checkpoint ships with jaxdistill or its offline assets (only MiniLM, a BERT), so
smoke runs of the RoBERTa path (configs/roberta_kd.py:tiny) make their own: a byte-level BPE
trained in milliseconds on a few sentences by the `tokenizers` library (its 256-byte alphabet
means any text tokenises), with RoBERTa's special ids (<s> 0, <pad> 1, </s> 2), and a random
`BertModel(family="roberta")` saved in RobertaForSequenceClassification's format.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from flax import nnx

from jaxdistill.models.bert import BertModel
from jaxdistill.models.config import BertConfig
from jaxdistill.models.hub import params_of, save_pretrained

SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")  # RoBERTa's ids 0..4, in this order
CORPUS = (
    "the movie was a delight, funny and warm, with a cast that clearly enjoyed itself.",
    "a dull, lifeless film with nothing to say and two hours to say it in.",
    "the performances are strong but the script never finds its footing.",
    "an unexpectedly moving story about family, loss and second chances.",
    "it's not a great film, but it is a very good time at the movies.",
)


def bpe_tokenizer(out_dir: Path, vocab_size: int = 512) -> int:
  """Writes a RoBERTa tokenizer (vocab.json, merges.txt, tokenizer.json, ...) to `out_dir`;
  returns its vocabulary size."""
  from tokenizers import ByteLevelBPETokenizer
  from transformers import RobertaTokenizer

  bpe = ByteLevelBPETokenizer()
  bpe.train_from_iterator(list(CORPUS) * 4, vocab_size=vocab_size, min_frequency=1,
                          special_tokens=list(SPECIALS), show_progress=False)
  bpe.save_model(str(out_dir))
  vocab = json.loads((out_dir / "vocab.json").read_text())
  assert [vocab[s] for s in SPECIALS] == list(range(len(SPECIALS))), "special ids moved"
  merges = [tuple(line.split(" ")) for line in
            (out_dir / "merges.txt").read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.startswith("#version")]
  # transformers v5's RobertaTokenizer takes the vocab and merges themselves, not file paths.
  tok = RobertaTokenizer(vocab=vocab, merges=merges)
  tok.save_pretrained(str(out_dir))
  return len(tok)


def tiny_roberta_checkpoint(out_dir, *, num_layers: int = 2, hidden_size: int = 32,
                            num_heads: int = 4, intermediate_size: int = 64, max_length: int = 128,
                            num_labels: int = 2, seed: int = 0) -> Path:
  """A random tiny RoBERTa sequence classifier and its tokenizer in `out_dir` (returned).
  Reuses a complete one already there; written to a temporary sibling and renamed into place,
  so concurrent callers never see half a checkpoint."""
  out = Path(out_dir)
  if (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file():
    return out
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
  vocab_size = bpe_tokenizer(tmp)
  cfg = BertConfig(family="roberta", vocab_size=vocab_size, hidden_size=hidden_size,
                   num_layers=num_layers, num_heads=num_heads, intermediate_size=intermediate_size,
                   # positions start after <pad> (id 1): max_length needs max_length + 2 rows
                   max_position_embeddings=max_length + 2, type_vocab_size=1, pad_token_id=1,
                   layer_norm_eps=1e-5, num_labels=num_labels)
  model = BertModel(cfg, rngs=nnx.Rngs(seed))
  save_pretrained(cfg, params_of(model), tmp)
  try:
    os.replace(tmp, out)
  except OSError:  # another process won the race: keep its copy
    shutil.rmtree(tmp, ignore_errors=True)
  return out
