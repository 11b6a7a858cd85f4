"""Bits per dimension of real data under the model (the coverage measure), from the model code."""

from __future__ import annotations

from typing import TYPE_CHECKING

from avade.metrics.configs import BPDConfig

if TYPE_CHECKING:  # the context imports torch: kept out so that a recipe's metric check loads no torch
    from avade.metrics.context import EvalContext


class BPD:
    """Metric ``bpd``: whatever ``ctx.bpd`` returns (at least ``{"bpd": ...}``)."""

    name = "bpd"

    def __init__(self, cfg: BPDConfig) -> None:
        self.cfg = cfg

    def compute(self, ctx: EvalContext) -> dict[str, float]:
        """``bpd``, and with ``importance_samples`` k > 1 also the tighter ``bpd_iw<k>`` (as training reports);
        on the training split ``bpd_train`` (``bpd_iw<k>_train``): ``bpd`` is always the test split's."""
        out = dict(ctx.bpd(split=self.cfg.split, importance_samples=1))
        if self.cfg.importance_samples > 1:
            out.update(ctx.bpd(split=self.cfg.split, importance_samples=self.cfg.importance_samples))
        suffix = "" if self.cfg.split == "test" else f"_{self.cfg.split}"
        return {k + suffix: float(v) for k, v in out.items()}
