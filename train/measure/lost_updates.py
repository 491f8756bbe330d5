"""The share of weight updates that rounding to the weights' precision loses, measured on one step per window."""

from __future__ import annotations

import torch


class LostUpdates:
    """The share of weight elements whose update one optimizer step rounded away: gradient non-zero, weight
    bit-identical afterwards. Pure fp16/bf16 keep no fp32 master weights, so an update
    smaller than half a unit in the last place of the weight vanishes; this makes that visible.

    Measured on one step per log window: a copy of the weights before the step and a few whole-tensor ops
    after it, all queued on the device; the counts are read with the window's one sync.
    """

    def __init__(self, model: torch.nn.Module):
        self.params = [p for p in model.parameters() if p.requires_grad]
        self._before: list[torch.Tensor] | None = None
        self._counts: torch.Tensor | None = None  # (lost, eligible, elements the step changed)

    def before_step(self) -> None:
        self._before = [p.detach().clone() for p in self.params]

    def after_step(self) -> None:
        if self._before is None:
            return
        lost = eligible = unchanged = None
        for p, old in zip(self.params, self._before):
            if p.grad is None:
                continue
            # Non-finite gradients need no mask of their own: they either leave a non-finite weight (not "same")
            # or were not applied at all (a skipped step: nothing changed, which read() leaves out).
            moving = p.grad != 0
            same = p.detach() == old
            # count_nonzero, not sum(): a bool tensor's sum widens every element to int64 (~15x slower on a CPU)
            n_lost, n_eligible, n_same = (torch.count_nonzero(moving & same), torch.count_nonzero(moving),
                                          torch.count_nonzero(same))
            lost = n_lost if lost is None else lost + n_lost
            eligible = n_eligible if eligible is None else eligible + n_eligible
            unchanged = n_same if unchanged is None else unchanged + n_same
        self._before = None
        if lost is not None:
            total = sum(p.numel() for p in self.params if p.grad is not None)
            self._counts = torch.stack([lost, eligible, total - unchanged])

    def read(self) -> dict:
        """{precision/lost_update_frac} for the measured step, or {} (none measured, or a step the loss
        scaler skipped: nothing changed because nothing was applied, which is not rounding)."""
        counts, self._counts = self._counts, None
        if counts is None:
            return {}
        lost, eligible, changed = counts.tolist()
        if eligible == 0 or changed == 0:
            return {}
        return {"precision/lost_update_frac": lost / eligible}
