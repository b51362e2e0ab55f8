"""Instances of a patch and the recipe's rule filter, counting what each rule removed.

Per category, the 8-connected components of its pixels are the candidates. Then, in this
order, each rule removes candidates (each removed candidate is counted under the first rule
that removed it, per category):

1. `tiny`: fewer than `DataRecipe.min_pixels` pixels — label noise. These are not counted as
   instances by the later rules either. What is left are the category's *visible* instances.
2. `area`: outside `DataRecipe.min_area` .. `max_area` of the patch's area.
3. `crowded`: the category has more than `DataRecipe.max_instances` visible instances in the
   patch: all of its candidates go.
4. `neighbour`: another visible instance of the category lies within
   `DataRecipe.neighbour_px` pixels: a disk of that radius around the candidate's pixels
   (Euclidean distance between pixel centres) touches it, i.e. a gap of fewer than that many
   pixels.
5. `keep_limit`: more than `DataRecipe.keep_per_class` candidates of the category remain: that
   many are kept, drawn at random (seeded per patch).

The MLLM mask check and the per-class cap (`class_cap`) come after, in `engine`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from terramask.options import DataRecipe

#: The instance rules of this module, in the order they apply.
PATCH_RULES: tuple[str, ...] = ("tiny", "area", "crowded", "neighbour", "keep_limit")
#: Every rule that removes instances, in order (the MLLM check and the cap come last).
INSTANCE_RULES: tuple[str, ...] = (*PATCH_RULES, "mask_check", "class_cap")

_EIGHT = np.ones((3, 3), dtype=bool)


@dataclass
class Instance:
    """One candidate: its category, its rank among the category's visible instances in the
    patch (scan order), its mask on the patch, its size and its box (row0, col0, row1, col1;
    ends exclusive)."""

    class_id: int
    index: int
    mask: np.ndarray = field(repr=False)
    pixels: int
    bbox: tuple[int, int, int, int]


@dataclass
class PatchInstances:
    """What the rules left of a patch: the visible instances per category, the candidates
    kept (category, then rank order), and the count removed per (rule, category)."""

    visible: dict[int, list[Instance]]
    kept: list[Instance]
    removed: Counter = field(default_factory=Counter)

    def categories(self) -> list[int]:
        """The categories with at least one visible instance, by id."""
        return sorted(k for k, found in self.visible.items() if found)


def find_instances(
    ids: np.ndarray, recipe: DataRecipe, rng: np.random.Generator
) -> PatchInstances:
    """Apply the rules (module notes) to a patch's (H, W) category ids (negative: none)."""
    height, width = ids.shape
    area = float(height * width)
    visible: dict[int, list[Instance]] = {}
    removed: Counter = Counter()
    kept: list[Instance] = []
    for class_id in np.unique(ids[ids >= 0]).tolist():
        regions, count = ndimage.label(ids == class_id, structure=_EIGHT)
        if not count:
            continue
        sizes = np.bincount(regions.ravel(), minlength=count + 1)
        boxes = ndimage.find_objects(regions)
        found: list[Instance] = []
        for label in range(1, count + 1):
            if sizes[label] < recipe.min_pixels:
                removed["tiny", class_id] += 1
                continue
            rows, cols = boxes[label - 1]
            found.append(
                Instance(
                    class_id,
                    len(found),
                    regions == label,
                    int(sizes[label]),
                    (rows.start, cols.start, rows.stop, cols.stop),
                )
            )
        visible[class_id] = found
        candidates = []
        for instance in found:
            share = instance.pixels / area
            if not recipe.min_area <= share <= recipe.max_area:
                removed["area", class_id] += 1
            else:
                candidates.append(instance)
        if len(found) > recipe.max_instances:
            removed["crowded", class_id] += len(candidates)
            continue
        if recipe.neighbour_px > 0 and len(found) > 1:
            near = [c for c in candidates if _has_neighbour(c, found, recipe.neighbour_px)]
            if near:
                removed["neighbour", class_id] += len(near)
            candidates = [c for c in candidates if not any(c is n for n in near)]
        if len(candidates) > recipe.keep_per_class:
            chosen = sorted(
                rng.choice(len(candidates), size=recipe.keep_per_class, replace=False).tolist()
            )
            removed["keep_limit", class_id] += len(candidates) - len(chosen)
            candidates = [candidates[i] for i in chosen]
        kept.extend(candidates)
    return PatchInstances(visible, kept, removed)


def _has_neighbour(candidate: Instance, found: list[Instance], radius: int) -> bool:
    """Whether another of `found` lies within `radius` pixels of `candidate` (see rule 4)."""
    height, width = candidate.mask.shape
    r0, c0, r1, c1 = candidate.bbox
    r0, c0 = max(0, r0 - radius - 1), max(0, c0 - radius - 1)
    r1, c1 = min(height, r1 + radius + 1), min(width, c1 + radius + 1)
    others = [
        o for o in found
        if o is not candidate and o.bbox[0] < r1 and o.bbox[2] > r0 and o.bbox[1] < c1
        and o.bbox[3] > c0
    ]  # fmt: skip
    if not others:
        return False
    crop = candidate.mask[r0:r1, c0:c1]
    near = ndimage.distance_transform_edt(~crop) <= radius
    return any(bool((near & o.mask[r0:r1, c0:c1]).any()) for o in others)
