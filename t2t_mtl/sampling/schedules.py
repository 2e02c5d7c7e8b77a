"""Temperature schedules over epochs (paper epochs e = 1..E)."""
from __future__ import annotations

import math

from t2t_mtl.sampling.errors import SamplingError


def annealed_alpha(epoch: float, total_epochs: int) -> float:
    """Stickland & Murray (2019): alpha(e) = 1 / (1 - 0.8 (e-1)/(E-1)), e clipped to [1, E].

    Starts proportional (alpha 1) and ends at alpha 5 (close to uniform). With E = 1, alpha is 1.
    """
    if total_epochs < 1:
        raise SamplingError(f"the annealed schedule needs sampling.epochs >= 1, got {total_epochs}")
    if total_epochs == 1:
        return 1.0
    e = min(max(epoch, 1.0), float(total_epochs))
    return 1.0 / (1.0 - 0.8 * (e - 1.0) / (total_epochs - 1.0))


def dynamic_alpha(epoch: float, alpha_0: float, alpha_max: float, warmup_epochs: float) -> float:
    """Wang et al. (2020): alpha(e) = min(alpha_max, (e-1)(alpha_max - alpha_0)/M + alpha_0), e >= 1."""
    if not warmup_epochs > 0:
        raise SamplingError(f"dynamic temperature needs sampling.warmup_epochs > 0, got {warmup_epochs}")
    if not (0 < alpha_0 < math.inf and 0 < alpha_max < math.inf):  # (an infinite one: 0 * inf at the first epoch)
        raise SamplingError(f"dynamic temperature needs sampling.alpha_0 and sampling.alpha_max > 0 and finite, got "
                            f"{alpha_0}, {alpha_max} (for a uniform mixture, use the uniform strategy)")
    if alpha_0 > alpha_max:
        raise SamplingError(f"dynamic temperature rises from alpha_0 to alpha_max, but alpha_0 {alpha_0} > alpha_max "
                            f"{alpha_max} (alpha would be alpha_max from the first epoch): swap them")
    e = max(epoch, 1.0)
    return min(alpha_max, (e - 1.0) * (alpha_max - alpha_0) / warmup_epochs + alpha_0)
