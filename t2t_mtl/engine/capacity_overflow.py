"""The warning of a training run whose MoE layers drop many (token, slot) choices over expert capacity: said once a
run, at the first logged step past `DROPPED_SHARE_WARNING`; every logged step's share stays in its record."""
from __future__ import annotations

from typing import Any, Callable, Mapping

#: the share of a logged step's (token, slot) choices, over all MoE layers, dropped over expert capacity above which
#: training warns (once a run): a dropped choice gives its token no output of that expert
DROPPED_SHARE_WARNING = 0.1


class CapacityOverflowWarning:
    """Says (through `say`) once, at the first logged step whose `moe` figures (`moe_stats_dict`'s) dropped more than
    `DROPPED_SHARE_WARNING` of their choices, how many and what to change."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say, self.said = say, False

    def check(self, step: int, moe: Mapping[str, Any], moe_config: Any) -> None:
        """Look at the logged step `step`'s `moe` figures, of a model of `moe_config` (its `MoEConfig`)."""
        dropped = moe.get("dropped", 0.0)
        if self.said or not dropped > DROPPED_SHARE_WARNING:
            return
        self.said = True
        self.say(f"warning: step {step}: the MoE layers dropped {dropped:.1%} of the (token, slot) choices they routed "
                 f"over expert capacity (model.moe.capacity_factor {moe_config.capacity_factor}; warned over "
                 f"{DROPPED_SHARE_WARNING:.0%}, once a run): a dropped choice gives its token no output of that "
                 f"expert; raise capacity_factor, or set model.moe.dropless: true (each logged step's share is its "
                 f"record's moe.dropped, per layer moe.per_layer, TensorBoard moe/dropped)")
