"""Mask voting: SAM's object masks take the majority class of the dense prediction inside them.

Dense CLIP labels are right on average but ragged at object edges; SAM masks follow edges but
carry no class. Voting gives each mask one class and so snaps labels to object boundaries.
Pixels no mask covers keep their dense label.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from terramask.methods.mask_generation import MaskProposal, majority_class
from terramask.methods.vocabulary import NO_CLASS

__all__ = ["majority_class", "vote_masks"]


def vote_masks(
    dense: np.ndarray,
    proposals: Sequence[MaskProposal],
    *,
    single_class: int | None = None,
    min_fraction: float = 0.5,
    reject: int = NO_CLASS,
) -> np.ndarray:
    """A label map where every mask carries one class.

    Multi-class: each mask takes the majority of `dense` inside it. Single-class (e.g. a
    building-only data set): a mask becomes `single_class` when at least `min_fraction` of
    its pixels are that class in `dense`, and `reject` otherwise. Larger masks are painted
    first, so a smaller mask inside a larger one keeps its own class.
    """
    voted = dense.copy()
    for proposal in sorted(proposals, key=lambda p: -p.area):
        r0, c0, r1, c1 = proposal.bbox
        inside = dense[r0:r1, c0:c1][proposal.mask]
        if inside.size == 0:
            continue
        if single_class is None:
            label = majority_class(inside)
        else:
            fraction = float(np.mean(inside == single_class))
            label = single_class if fraction >= min_fraction else reject
        voted[r0:r1, c0:c1][proposal.mask] = label
    return voted
