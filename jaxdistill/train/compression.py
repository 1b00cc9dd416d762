"""The compression report at the end of a distillation run: quality, size and speed of the
student against its teacher, measured here, written to the workdir and printed."""

from __future__ import annotations

import jax
import numpy as np

from jaxdistill import distributed
from jaxdistill.models import count_params
from jaxdistill.report import CompressionReport, compare_latency, format_report, write_report
from jaxdistill.train import sharding
from jaxdistill.train.evaluate import evaluate, task_metric
from jaxdistill.train.step import make_predict


def _non_embedding_params(params: dict) -> int:
  return count_params({k: v for k, v in params.items() if k != "embeddings"})


def compression_report(config, task, mesh, batch_sharding, teacher, s_predict,
                       student_params: dict, student_results: dict, workdir, train_seconds: float,
                       train_stages: dict | None = None):
  """`teacher.params` and `student_params` are placed as the train step places them;
  `s_predict` is the run's own jitted student forward (`step.make_predict`)."""
  t_predict = make_predict(mesh, teacher.cfg, sharding.rules_of(config), role="teacher")
  teacher_results = {split: evaluate(t_predict, teacher.params, task, split, config, batch_sharding)
                     for split in student_results}
  # Latency at one fixed batch shape for both models: [latency_batch, max_length], the batch
  # rounded up to a multiple of the devices it is split over.
  shape = (-(-config.report.latency_batch // mesh.size) * mesh.size, config.data.max_length)
  ids = np.random.default_rng(0).integers(1000, 2000, size=shape).astype(np.int32)
  batch = sharding.put({"input_ids": ids, "attention_mask": np.ones_like(ids),
                        "token_type_ids": np.zeros_like(ids)}, batch_sharding)
  latency = compare_latency(lambda: t_predict(teacher.params, batch),
                            lambda: s_predict(student_params, batch),
                            iters=config.report.latency_iters)
  report = CompressionReport.build(
      name=config.name, method=config.report.label or config.method, task=task.name, metric=task_metric(task),
      teacher_metrics=teacher_results, student_metrics=student_results,
      teacher_params=count_params(teacher.params), student_params=count_params(student_params),
      teacher_params_no_embed=_non_embedding_params(teacher.params),
      student_params_no_embed=_non_embedding_params(student_params),
      latency=latency, batch_shape=shape, device=str(jax.devices()[0].device_kind),
      train_seconds=train_seconds, train_stages=train_stages, config=config.to_dict())
  if distributed.is_main():
    write_report(report, workdir)
    print(format_report(report))
  return report
