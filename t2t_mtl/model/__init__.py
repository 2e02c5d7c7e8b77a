"""Models: a transformers T5 encoder-decoder built from a hub name, a local path or dimensions."""
from t2t_mtl.model.t5 import (MOE_STATS, ModelBuildError, accepts_task_ids, build_model, count_parameters,
                              enable_activation_checkpointing, model_config, moe_stats, moe_stats_dict,
                              special_ids_of, t5_config_from_dims)

__all__ = ["MOE_STATS", "ModelBuildError", "accepts_task_ids", "build_model", "count_parameters",
           "enable_activation_checkpointing", "model_config", "moe_stats", "moe_stats_dict", "special_ids_of",
           "t5_config_from_dims"]
