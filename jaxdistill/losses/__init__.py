"""Distillation loss zoo: pure, jit-able functions of arrays, plus layer maps.

See docs/losses.md for the table of formulas and papers.  Reduction convention
(``reduction="mean" | "sum" | "none"``, ``example_weight`` [B]) is described in
:mod:`jaxdistill.losses._common`.
"""

from ._common import NEG_LARGE, REDUCTIONS, reduce_loss, sum_over_layer_pairs
from .hidden import (cosine_embedding_loss, mlm_cross_entropy_loss, mobilebert_feature_map_loss,
                     mobilebert_mean_loss, mobilebert_variance_loss, pkd_loss,
                     tinybert_attention_loss, tinybert_embedding_loss, tinybert_hidden_loss)
from .layer_maps import (LAYER_MAP_KINDS, distilbert_init_layer_map, distilbert_init_layers,
                         explicit_layer_map, last_layer_map, make_layer_map, skip_layer_map,
                         uniform_layer_map, validate_layer_map)
from .relations import (attention_kl_loss, minilm_attention_loss, minilm_v2_loss,
                        minilm_v2_relation_loss, minilm_value_relation_loss,
                        mobilebert_attention_loss)
from .soft_targets import (cross_entropy_loss, kd_kl_loss, logit_mse_loss, regression_mse_loss,
                           soft_cross_entropy_loss, tinybert_prediction_loss)

__all__ = [
    "NEG_LARGE",
    # soft targets / outputs
    "kd_kl_loss", "soft_cross_entropy_loss", "cross_entropy_loss", "logit_mse_loss",
    "regression_mse_loss", "tinybert_prediction_loss",
    # hidden states
    "pkd_loss", "cosine_embedding_loss", "mlm_cross_entropy_loss", "tinybert_embedding_loss",
    "tinybert_hidden_loss", "tinybert_attention_loss", "mobilebert_feature_map_loss",
    "mobilebert_mean_loss", "mobilebert_variance_loss",
    # attention / relations
    "attention_kl_loss", "mobilebert_attention_loss", "minilm_attention_loss",
    "minilm_value_relation_loss", "minilm_v2_relation_loss", "minilm_v2_loss",
    # layer maps
    "LAYER_MAP_KINDS", "make_layer_map", "uniform_layer_map", "skip_layer_map", "last_layer_map",
    "explicit_layer_map", "distilbert_init_layers", "distilbert_init_layer_map",
    "validate_layer_map",
    # helpers
    "REDUCTIONS", "reduce_loss", "sum_over_layer_pairs",
]
