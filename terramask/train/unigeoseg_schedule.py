"""Progressive task scheduling (PTS) for UniGeoSeg fine-tuning: which task each batch is.

The paper (§3.4, Tab. 9) only says the interactive share is reduced gradually, referring is
kept constant and reasoning grows, "interactive weight decays to 0.7, remainder to
reasoning". TerraMask reads that as unnormalised weights (the reimplementation's reading,
specs/unigeoseg.md §5): interactive 1 → `interactive_end`, referring 1, reasoning
1 - interactive weight, normalised over the tasks the data holds. The curve is an option:
"linear" moves the weights every step, "epoch" once per epoch (the reimplementation's
1.0 → 0.85 → 0.7 over three epochs), "none" draws every sample equally likely (the paper's
"uniform" ablation: task shares by data size).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

TASK_ORDER = ("interactive", "referring", "reasoning")


def training_progress(curve: str, step: int, total_steps: int, epoch: int, epochs: int) -> float:
    """How far along the schedule is, 0 to 1: by step ("linear") or by epoch ("epoch")."""
    if curve == "epoch":
        return epoch / (epochs - 1) if epochs > 1 else 0.0
    return min(1.0, step / max(1, total_steps - 1))


def task_weights(
    progress: float, counts: Mapping[str, int], *, curve: str = "linear",
    interactive_end: float = 0.7,
) -> dict[str, float]:  # fmt: skip
    """The probability of each task for a batch at `progress` (0-1), over the tasks with
    samples in `counts`.

    Raises:
        ValueError: No task has samples.
    """
    present = {t: int(counts.get(t, 0)) for t in TASK_ORDER if counts.get(t, 0) > 0}
    if not present:
        raise ValueError("no training samples in any task")
    if curve == "none":
        raw = {t: float(n) for t, n in present.items()}
    else:
        interactive = 1.0 - (1.0 - interactive_end) * float(np.clip(progress, 0.0, 1.0))
        weights = {"interactive": interactive, "referring": 1.0, "reasoning": 1.0 - interactive}
        raw = {t: weights[t] for t in present}
        if sum(raw.values()) <= 0:  # only reasoning data, at the very start
            raw = {t: 1.0 for t in present}
    total = sum(raw.values())
    return {t: raw.get(t, 0.0) / total if t in present else 0.0 for t in TASK_ORDER}


class TaskSampler:
    """Draws each batch's task from `task_weights`, then its samples from that task's pool in
    a shuffled order that is drawn again when used up (one task per batch, as the released
    criterion's memory weight takes the batch's first task)."""

    def __init__(self, pools: Mapping[str, list[int]], *, curve: str, interactive_end: float,
                 seed: int):  # fmt: skip
        self.pools = {t: list(v) for t, v in pools.items() if v}
        self.curve, self.interactive_end = curve, interactive_end
        self.rng = np.random.default_rng(seed)
        self._orders: dict[str, list[int]] = {t: [] for t in self.pools}

    @property
    def counts(self) -> dict[str, int]:
        return {t: len(v) for t, v in self.pools.items()}

    def weights(self, progress: float) -> dict[str, float]:
        return task_weights(progress, self.counts, curve=self.curve,
                            interactive_end=self.interactive_end)  # fmt: skip

    def draw(self, progress: float, batch_size: int) -> tuple[str, list[int]]:
        """(task, sample indexes) of the next batch."""
        weights = self.weights(progress)
        tasks = [t for t in TASK_ORDER if weights[t] > 0]
        task = str(self.rng.choice(tasks, p=[weights[t] for t in tasks]))
        chosen = []
        for _ in range(batch_size):
            if not self._orders[task]:
                self._orders[task] = list(self.rng.permutation(self.pools[task]))
            chosen.append(int(self._orders[task].pop()))
        return task, chosen

    def state(self) -> dict:
        """What resuming needs to continue the same draws."""
        return {"rng": self.rng.bit_generator.state,
                "orders": {t: [int(i) for i in v] for t, v in self._orders.items()}}  # fmt: skip

    def restore(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self._orders = {t: list(v) for t, v in state["orders"].items()}
