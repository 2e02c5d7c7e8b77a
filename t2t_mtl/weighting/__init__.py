"""Loss weighting: combine per-task losses into the step's loss (`build_weighting(config, tasks, sizes)`); methods:
see `METHODS`, `register_weighting` adds one's own."""
from t2t_mtl.weighting.base import LossWeighting
from t2t_mtl.weighting.errors import (UnknownWeightingError, UnknownWeightingParameterError, WeightingError,
                                      WeightingRegistrationError)
from t2t_mtl.weighting.factory import build_weighting
from t2t_mtl.weighting.methods import (CurriculumWeighting, DynamicTaskPrioritization, EqualWeighting,
                                       SizeWeighting, TchebycheffWeighting, UncertaintyWeighting)
from t2t_mtl.weighting.registry import METHODS, register_weighting

__all__ = ["LossWeighting", "build_weighting", "METHODS", "register_weighting", "WeightingError",
           "UnknownWeightingError", "UnknownWeightingParameterError", "WeightingRegistrationError", "EqualWeighting",
           "SizeWeighting", "UncertaintyWeighting", "DynamicTaskPrioritization", "TchebycheffWeighting",
           "CurriculumWeighting"]
