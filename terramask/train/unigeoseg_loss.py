"""UniGeoSeg's training loss: Mask2Former's matched, point-sampled mask losses plus the language
loss on the reply and explanation.

The mask part is transformers' Mask2Former criterion (`Mask2FormerHungarianMatcher` and
`Mask2FormerLoss.loss_masks`): Hungarian matching of queries to targets by mask BCE and Dice
cost on random points, then sigmoid BCE and Dice on `points` importance-sampled points
(oversample 3, importance 0.75), summed over every decoder stage (deep supervision). The
released decoder has one query per request and one target, so the matching is 1 to 1; the
objectness term is left out because the released decoder emits no class logits (specs §5).
The language part is the cross-entropy of the next token over the labelled reply.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from terramask.models.unigeoseg.model import IGNORE_INDEX


@dataclass
class LossParts:
    """The weighted total and its parts (unweighted, summed over decoder stages)."""

    total: torch.Tensor
    mask: float
    dice: float
    language: float

    def record(self) -> dict[str, float]:
        return {"loss": round(float(self.total.detach()), 5), "mask": round(self.mask, 5),
                "dice": round(self.dice, 5), "lm": round(self.language, 5)}  # fmt: skip


class UniGeoSegCriterion:
    """Mask losses of every decoder stage against (B, H, W) targets, and the language loss."""

    def __init__(self, *, points: int = 12544, oversample: float = 3.0, importance: float = 0.75,
                 mask_weight: float = 5.0, dice_weight: float = 5.0, lm_weight: float = 1.0,
                 deep_supervision: bool = True):  # fmt: skip
        from transformers import Mask2FormerConfig
        from transformers.models.mask2former.modeling_mask2former import Mask2FormerLoss

        config = Mask2FormerConfig(
            num_labels=1, train_num_points=points, oversample_ratio=oversample,
            importance_sample_ratio=importance, mask_weight=mask_weight, dice_weight=dice_weight,
            class_weight=0.0, no_object_weight=0.1,
        )  # fmt: skip
        self.loss = Mask2FormerLoss(config, {"loss_mask": mask_weight, "loss_dice": dice_weight})
        self.mask_weight, self.dice_weight, self.lm_weight = mask_weight, dice_weight, lm_weight
        self.deep_supervision = deep_supervision

    def match(self, logits: torch.Tensor, targets: list[torch.Tensor]) -> list[tuple]:
        """Hungarian matching of (B, Q, h, w) query logits to each sample's (T, H, W) targets."""
        batch, queries = logits.shape[:2]
        classes = logits.new_zeros(batch, queries, 2)  # no class head: a constant cost
        labels = [torch.zeros(len(t), dtype=torch.long, device=logits.device) for t in targets]
        return self.loss.matcher(logits.float(), classes.float(), targets, labels)

    def mask_losses(self, logits: torch.Tensor, targets: list[torch.Tensor]) -> dict:
        """BCE and Dice of one stage's (B, Q, h, w) logits on importance-sampled points."""
        indices = self.match(logits.detach(), targets)
        count = max(1, sum(len(t) for t in targets))
        return self.loss.loss_masks(logits.float(), targets, indices, count)

    def __call__(self, stages: tuple[torch.Tensor, ...], targets: torch.Tensor,
                 lm_logits: torch.Tensor | None = None,
                 labels: torch.Tensor | None = None) -> LossParts:  # fmt: skip
        """`stages`: every decoder prediction, (B, 1, h, w) each (the last is the answer);
        `targets`: (B, H, W) 0/1 masks on the canvas."""
        per_sample = [t[None].float() for t in targets]
        used = stages if self.deep_supervision else stages[-1:]
        mask = dice = stages[-1].new_zeros((), dtype=torch.float32)
        for logits in used:
            parts = self.mask_losses(logits, per_sample)
            mask, dice = mask + parts["loss_mask"], dice + parts["loss_dice"]
        language = mask.new_zeros(())
        if lm_logits is not None and labels is not None and self.lm_weight > 0:
            language = language_loss(lm_logits, labels)
        total = self.mask_weight * mask + self.dice_weight * dice + self.lm_weight * language
        return LossParts(total, float(mask.detach()), float(dice.detach()),
                         float(language.detach()))  # fmt: skip


def language_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy over labelled positions (0 when none are labelled)."""
    shifted = logits[:, :-1].float().reshape(-1, logits.shape[-1])
    targets = labels[:, 1:].reshape(-1)
    if not (targets != IGNORE_INDEX).any():
        return shifted.new_zeros(())
    return F.cross_entropy(shifted, targets, ignore_index=IGNORE_INDEX)
