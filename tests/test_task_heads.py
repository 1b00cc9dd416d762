"""The span (extractive QA) and token-classification heads, against transformers.

The references are independent of our code: transformers' own `BertForQuestionAnswering` /
`BertForTokenClassification` (eager attention, fp32), built by its own loader from the real
all-MiniLM-L6-v2 weights or a tiny random config, with a seeded random head; exports are judged
by `AutoModelFor...`'s loader and its missing/unexpected-key report. Only inputs are shared.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx
from safetensors.numpy import load_file

from jaxdistill.models import BertConfig, BertModel, hub, span_logits, tiny_config

TOL = 1e-4
KINDS = ("span", "token")
HF_CLASS = {"span": transformers.BertForQuestionAnswering,
            "token": transformers.BertForTokenClassification}
AUTO_CLASS = {"span": transformers.AutoModelForQuestionAnswering,
              "token": transformers.AutoModelForTokenClassification}
LABELS = {"span": 2, "token": 5}
SENTENCES = [
    "Hello world.",
    "A considerably longer sentence, which has quite a few more word pieces than the first one.",
    "Tokenisation of unusual words: photosynthesis, antidisestablishmentarianism!",
]
# tiny_config()'s shapes in config.json terms (as conftest.TINY_HF_CONFIG, without the labels).
TINY_HF = dict(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
               intermediate_size=64, max_position_embeddings=64, type_vocab_size=2)


def max_diff(a, b, where=None) -> float:
  d = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))
  return float(d[where].max() if where is not None else d.max())


def torch_logits(ref, batch: dict) -> np.ndarray:
  """The reference's logits in our layout: [B, S, 2] (start, end) or [B, S, C]."""
  with torch.no_grad():
    out = ref.eval()(**{k: torch.from_numpy(np.asarray(v)).long() for k, v in batch.items()})
  if isinstance(ref, transformers.BertForQuestionAnswering):
    return np.stack([out.start_logits.numpy(), out.end_logits.numpy()], -1)
  return out.logits.numpy()


def ours_logits(model: BertModel, batch: dict, **kw):
  with jax.default_matmul_precision("highest"):  # no TF32 should this run on a GPU
    return model(*(jnp.asarray(batch[k]) for k in ("input_ids", "attention_mask", "token_type_ids")),
                 **kw)


def seeded_head(ref, seed: int):
  """HF draws the fresh head's kernel N(0, 0.02) from torch's global seed and zeros its bias;
  the bias is drawn too here, so a dropped or misplaced bias shows."""
  layer = ref.qa_outputs if isinstance(ref, transformers.BertForQuestionAnswering) else ref.classifier
  with torch.no_grad():
    layer.bias.copy_(0.1 * torch.randn(layer.bias.shape, generator=torch.Generator().manual_seed(seed)))
  return ref


def strict_load(cls, path):
  model, info = cls.from_pretrained(str(path), attn_implementation="eager", output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
  return model.eval()


def torch_state(ref) -> dict[str, np.ndarray]:
  return {k: v.numpy() for k, v in ref.state_dict().items() if not k.endswith("position_ids")}


# ---- the real MiniLM ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def batch(minilm_dir):
  b = hub.load_tokenizer(minilm_dir)(SENTENCES, padding=True, return_tensors="np")
  assert b["attention_mask"].min() == 0  # there is padding
  return {k: v.astype(np.int32) for k, v in b.items()}


@pytest.fixture(scope="module", params=KINDS)
def minilm_case(request, minilm_dir, batch, tmp_path_factory):
  """MiniLM under transformers' head class with a seeded random head, saved by its own
  `save_pretrained`, and ours loaded from that folder; both sides' logits."""
  kind = request.param
  seed = KINDS.index(kind)  # not one seed for both: their heads' first two rows would coincide
  torch.manual_seed(seed)
  ref = HF_CLASS[kind].from_pretrained(str(minilm_dir), num_labels=LABELS[kind],
                                       attn_implementation="eager")
  ref = seeded_head(ref.eval(), seed + 10)
  hf_dir = tmp_path_factory.mktemp(f"minilm_{kind}")
  ref.save_pretrained(hf_dir)
  model, fresh = hub.load_pretrained(hf_dir)
  return kind, ref, hf_dir, model, fresh, torch_logits(ref, batch), ours_logits(model, batch).logits


@pytest.mark.slow
def test_minilm_head_logits_match_pytorch(minilm_case, batch):
  kind, _, _, model, fresh, ref, ours = minilm_case
  assert fresh == [] and model.config.head == kind and "pooler" not in hub.params_of(model)
  assert ours.shape == ref.shape == (*batch["input_ids"].shape, LABELS[kind])
  real = batch["attention_mask"].astype(bool)
  err = max_diff(ours, ref, real)
  print(f"{kind}: max |ours - torch| at real tokens {err:.2e}, everywhere {max_diff(ours, ref):.2e}")
  assert err < TOL
  # Pad positions are fp32-ill-conditioned in the encoder (tests/test_hf_parity_minilm.py),
  # so everywhere gets that file's 2x margin.
  assert max_diff(ours, ref) < 2 * TOL
  if kind == "span":
    start, end = span_logits(ours)
    assert start.shape == end.shape == batch["input_ids"].shape
    np.testing.assert_array_equal(start, np.asarray(ours)[..., 0])


@pytest.mark.slow
def test_minilm_export_loads_in_auto_class_and_round_trips(minilm_case, batch, tmp_path):
  kind, ref, hf_dir, model, _, _, ours = minilm_case
  hub.save_pretrained(model.config, hub.params_of(model), tmp_path)
  arch = {"span": "BertForQuestionAnswering", "token": "BertForTokenClassification"}[kind]
  assert json.loads((tmp_path / "config.json").read_text())["architectures"] == [arch]
  auto = strict_load(AUTO_CLASS[kind], tmp_path)
  assert type(auto) is HF_CLASS[kind]
  assert max_diff(torch_logits(auto, batch), ours, batch["attention_mask"].astype(bool)) < TOL
  # HF -> ours -> HF: the very tensors transformers saved, bit for bit, and nothing else.
  exported, orig = load_file(str(tmp_path / "model.safetensors")), torch_state(ref)
  assert set(exported) == set(orig)
  for k in orig:
    assert np.array_equal(exported[k], orig[k]), k


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_bare_minilm_gets_a_fresh_head_and_its_encoder(minilm_dir, kind):
  base, _ = hub.load_pretrained(minilm_dir)
  model, fresh = hub.load_pretrained(minilm_dir, head=kind, num_labels=LABELS[kind], seed=4)
  assert sorted(fresh) == ["classifier.bias", "classifier.kernel"]  # as BertModel has no head
  a, b = hub.params_of(base), hub.params_of(model)
  assert set(b) == {"embeddings", "layers", "classifier"}  # MiniLM's pooler is not used
  for x, y in zip(jax.tree.leaves((a["embeddings"], a["layers"])),
                  jax.tree.leaves((b["embeddings"], b["layers"]))):
    assert np.array_equal(np.asarray(x), np.asarray(y))
  assert b["classifier"]["kernel"].shape == (384, LABELS[kind])
  assert np.all(np.asarray(b["classifier"]["bias"]) == 0)
  assert 0.015 < float(np.std(b["classifier"]["kernel"])) < 0.025


# ---- tiny random configs -----------------------------------------------------------------------

def tiny_model(seed: int = 0, **overrides) -> BertModel:
  """A tiny BertModel with every parameter random (LayerNorm scales 1 + N(0, 0.1), all else
  N(0, 0.1)), built abstractly and filled from NumPy."""
  abstract = nnx.eval_shape(lambda: BertModel(tiny_config(**overrides), rngs=nnx.Rngs(seed)))
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    return ((1.0 if path[-1].key == "scale" else 0.0) + rng.normal(0, 0.1, leaf.shape)).astype(leaf.dtype)

  return hub.with_params(abstract, jax.tree_util.tree_map_with_path(fill, hub.params_of(abstract)))


def tiny_hf(kind: str, seed: int = 0):
  """transformers' head class on tiny_config's shapes, every weight perturbed off its init."""
  cfg = transformers.BertConfig(**TINY_HF, num_labels=LABELS[kind])
  cfg._attn_implementation = "eager"
  torch.manual_seed(seed)
  model = HF_CLASS[kind](cfg).eval()
  gen = torch.Generator().manual_seed(seed + 1)
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.05 * torch.randn(p.shape, generator=gen))
  return model


@pytest.fixture(scope="module")
def tiny_batch():
  """[3, 8] ids / mask / token types with rows of 8, 5 and 2 real tokens."""
  rng = np.random.default_rng(0)
  mask = (np.arange(8)[None] < np.array([[8], [5], [2]])).astype(np.int32)
  ids = np.where(mask == 1, rng.integers(1, 128, (3, 8)), 0).astype(np.int32)
  types = (rng.integers(0, 2, (3, 8)) * mask).astype(np.int32)
  return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


@pytest.mark.parametrize("kind, labels, shape", [
    ("sequence", 3, (3, 3)), ("span", 2, (3, 8, 2)), ("token", 5, (3, 8, 5))])
def test_head_shapes_and_params_match_pytorch(tiny_batch, kind, labels, shape):
  model = tiny_model(head=kind, num_labels=labels)
  out = ours_logits(model, tiny_batch)
  assert out.logits.shape == shape and out.logits.dtype == jnp.float32
  assert out.last_hidden.shape == (3, 8, 32)
  assert (out.pooled is None) == (kind != "sequence")
  params = hub.params_of(model)
  assert set(params) == {"embeddings", "layers", "classifier"} | ({"pooler"} if kind == "sequence" else set())
  cls = HF_CLASS.get(kind, transformers.BertForSequenceClassification)
  hf = cls(transformers.BertConfig(**TINY_HF, num_labels=labels))
  assert sum(int(x.size) for x in jax.tree.leaves(params)) == sum(p.numel() for p in hf.parameters())


@pytest.mark.parametrize("kind", KINDS)
def test_tiny_import_and_export_match_pytorch(tiny_batch, tmp_path, kind):
  ref = tiny_hf(kind)
  ref.save_pretrained(tmp_path / "hf")
  model, fresh = hub.load_pretrained(tmp_path / "hf")
  assert fresh == [] and model.config.head == kind and model.config.num_labels == LABELS[kind]
  ours = ours_logits(model, tiny_batch).logits
  assert max_diff(ours, torch_logits(ref, tiny_batch)) < TOL  # every position, pads included
  hub.save_pretrained(model.config, hub.params_of(model), tmp_path / "ours")
  auto = strict_load(AUTO_CLASS[kind], tmp_path / "ours")
  assert max_diff(torch_logits(auto, tiny_batch), ours) < TOL
  exported, orig = load_file(str(tmp_path / "ours" / "model.safetensors")), torch_state(ref)
  assert set(exported) == set(orig) and all(np.array_equal(exported[k], orig[k]) for k in orig)
  again, fresh = hub.load_pretrained(tmp_path / "ours")
  assert fresh == [] and again.config == model.config


def test_our_export_reimports_bitwise(tmp_path):
  model = tiny_model(head="token", num_labels=3, label_names=("O", "B-PER", "I-PER"), mlm_head=True)
  hub.save_pretrained(model.config, hub.params_of(model), tmp_path)
  d = json.loads((tmp_path / "config.json").read_text())
  assert d["architectures"] == ["BertForTokenClassification", "BertForMaskedLM"]
  assert transformers.AutoConfig.from_pretrained(str(tmp_path)).id2label == {0: "O", 1: "B-PER", 2: "I-PER"}
  again, fresh = hub.load_pretrained(tmp_path, mlm_head=True)
  assert fresh == [] and again.config == model.config
  for x, y in zip(jax.tree.leaves(hub.params_of(model)), jax.tree.leaves(hub.params_of(again))):
    assert np.array_equal(np.asarray(x), np.asarray(y))


def test_a_head_change_on_load_starts_the_head_fresh(tiny_hf_dir, tmp_path):
  seq, _ = hub.load_pretrained(tiny_hf_dir)  # BertForSequenceClassification, 3 labels
  # Same [H, 3] shape, but a sentence classifier is no token classifier.
  token, fresh = hub.load_pretrained(tiny_hf_dir, head="token", num_labels=3)
  assert sorted(fresh) == ["classifier.bias", "classifier.kernel"] and token.config.num_labels == 3
  assert not np.array_equal(np.asarray(token.classifier.kernel[...]), np.asarray(seq.classifier.kernel[...]))
  # Nor are the old head's labels the new one's: without num_labels it starts with two.
  named = tiny_model(num_labels=3, label_names=("negative", "neutral", "positive"))
  hub.save_pretrained(named.config, hub.params_of(named), tmp_path / "named")
  for kind in KINDS:
    model, fresh = hub.load_pretrained(tmp_path / "named", head=kind)
    assert sorted(fresh) == ["classifier.bias", "classifier.kernel"]
    assert (model.config.num_labels, model.config.label_names) == (2, ())
  tiny_hf("span").save_pretrained(tmp_path / "qa")
  back, fresh = hub.load_pretrained(tmp_path / "qa", head="sequence")
  assert sorted(fresh) == ["classifier.bias", "classifier.kernel", "pooler.bias", "pooler.kernel"]


def test_config_round_trips_through_hf_dict_for_each_head():
  for cfg in (tiny_config(head="span"), tiny_config(head="token", num_labels=4, label_names=tuple("abcd"))):
    d = cfg.to_hf_dict()
    assert BertConfig.from_hf_dict(d) == cfg
    assert BertConfig.from_hf_dict(transformers.BertConfig(**d).to_dict()) == cfg
  assert BertConfig.from_hf_dict(tiny_config().to_hf_dict()).head == "sequence"


@pytest.mark.parametrize("make, match", [
    (lambda: tiny_config(head="spans"),
     r"head 'spans' is not supported; use one of \('sequence', 'span', 'token'\)"),
    (lambda: tiny_config(head="span", num_labels=3), r"span head has num_labels=2 .*set num_labels=2"),
    (lambda: tiny_config(head="token", problem_type="regression", num_labels=1),
     r"problem_type='regression' needs head='sequence'"),
])
def test_heads_a_config_cannot_serve_fail_in_one_line(make, match):
  with pytest.raises(ValueError, match=match) as e:
    make()
  assert "\n" not in str(e.value)


def test_span_checkpoint_with_another_label_count_or_arch_fails_in_one_line(tmp_path):
  tiny_hf("span").save_pretrained(tmp_path / "qa")
  with pytest.raises(ValueError, match=r"span head has num_labels=2 .*, not 3; .*head='token'"):
    hub.load_pretrained(tmp_path / "qa", num_labels=3)
  (tmp_path / "mb").mkdir()
  (tmp_path / "mb" / "config.json").write_text(json.dumps({"jaxdistill_arch": "mobilebert"}))
  with pytest.raises(ValueError, match=r"head='span' needs a BERT checkpoint.*only the sequence head"):
    hub.load_pretrained(tmp_path / "mb", head="span")


@pytest.mark.parametrize("kind", KINDS)
def test_jit_and_gradients_reach_every_head_parameter(tiny_batch, kind):
  model = tiny_model(head=kind, num_labels=LABELS[kind])
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  args = [jnp.asarray(tiny_batch[k]) for k in ("input_ids", "attention_mask", "token_type_ids")]

  def loss(params, key):
    logits = nnx.merge(graphdef, params, rest)(*args, dropout_key=key).logits  # [B, S, C]
    return -(jax.nn.log_softmax(logits, -1)[..., 1] * args[1]).mean()

  jitted = jax.jit(lambda p: nnx.merge(graphdef, p, rest)(*args).logits)(params)
  np.testing.assert_allclose(jitted, ours_logits(model, tiny_batch).logits, atol=1e-5)
  grads = nnx.to_pure_dict(jax.jit(jax.grad(loss))(params, jax.random.key(0)))
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    if "position" not in jax.tree_util.keystr(path):  # rows past S get none
      assert np.all(np.isfinite(g)) and np.any(np.asarray(g) != 0), jax.tree_util.keystr(path)
  # The token head's dropout draws from the head's key; the span head has none (as in HF).
  h = ours_logits(model, tiny_batch).last_hidden
  plain, dropped = model.head(h)[1], model.head(h, dropout_key=jax.random.key(1))[1]
  assert (float(jnp.abs(plain - dropped).max()) > 1e-3) == (kind == "token")
