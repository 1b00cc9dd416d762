"""jaxdistill.models: the Flax NNX BERT encoder, its config and HF checkpoint conversion."""

from jaxdistill.models.bert import (BertModel, BertOutput, Collect, count_params, dropout,
                                    span_logits)
from jaxdistill.models.config import BertConfig, tiny_config

__all__ = ["BertConfig", "BertModel", "BertOutput", "Collect", "count_params", "dropout",
           "span_logits", "tiny_config"]
