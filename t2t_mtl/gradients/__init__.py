"""Gradient surgery in Gram space: methods that see per-task gradients only through G = g gᵀ and return task
weights (pcgrad, gradvac, cagrad, mgda, nashmtl, sum, mean), their textbook full-vector versions
(`t2t_mtl.gradients.textbook`, tests/benchmarks only), `GradientSurgery` (the [T, P] buffer the backward fills,
Gram → weights → combine) and `build_step_hook`, the DeepSpeed trainer's per-step entry point.
"""
from .base import METHODS, GradientMethod, GradientMethodError, build_method, random_orders, register_method
from .cagrad import CAGrad, cagrad_weights
from .deepspeed_hook import DeepSpeedSurgeryHook, Zero3SurgeryHook, build_step_hook
from .gradvac import GradVac, gradvac_weights
from .mgda import MGDA, mgda_weights
from .nashmtl import NashMTL, nashmtl_weights
from .pcgrad import PCGrad, pcgrad_weights
from .simple import MeanMethod, SumMethod
from .surgery import DISTRIBUTIONS, GradientSurgery

__all__ = [
    "METHODS", "GradientMethod", "GradientMethodError", "build_method", "random_orders", "register_method",
    "PCGrad", "GradVac", "CAGrad", "MGDA", "NashMTL", "SumMethod", "MeanMethod",
    "pcgrad_weights", "gradvac_weights", "cagrad_weights", "mgda_weights", "nashmtl_weights",
    "GradientSurgery", "DISTRIBUTIONS", "DeepSpeedSurgeryHook", "Zero3SurgeryHook", "build_step_hook",
]
