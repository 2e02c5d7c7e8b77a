"""Loss weighting: combine per-task losses into the step's loss (`build_weighting(config, tasks, sizes)`)."""
from t2t_mtl.weighting.base import LossWeighting
from t2t_mtl.weighting.errors import UnknownWeightingError, UnknownWeightingParameterError, WeightingError
from t2t_mtl.weighting.factory import METHODS, build_weighting
from t2t_mtl.weighting.methods import (CurriculumWeighting, DynamicTaskPrioritization, EqualWeighting,
                                       SizeWeighting, TchebycheffWeighting, UncertaintyWeighting)

__all__ = ["LossWeighting", "build_weighting", "METHODS", "WeightingError", "UnknownWeightingError",
           "UnknownWeightingParameterError", "EqualWeighting", "SizeWeighting", "UncertaintyWeighting",
           "DynamicTaskPrioritization", "TchebycheffWeighting", "CurriculumWeighting"]
