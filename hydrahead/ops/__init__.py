"""Sequence-mixing ops. Today: the gated delta rule (Gated DeltaNet), see `hydrahead.ops.gated_delta`."""

from hydrahead.ops.gated_delta import (
    FlaNotInstalledError,
    GatedDeltaRuleError,
    gated_delta_rule,
    gated_delta_rule_step,
    l2norm,
)

__all__ = ["FlaNotInstalledError", "GatedDeltaRuleError", "gated_delta_rule", "gated_delta_rule_step", "l2norm"]
