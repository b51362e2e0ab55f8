"""Check ground-truth values against what a class list expects, before they make scores wrong.

A label map holds class ids 0..K-1 (or 1..K with reduce-zero-label, where stored 0 is
ignored) and the ignore index; any other value is *unexpected*: scoring would count it in no
class (mmsegmentation drops it from the label areas), so a data set stored in another encoding
(0/255 building masks, LoveDA's 1..K without reduce-zero-label) gives plausible-looking but
wrong numbers. `LabelCheck` counts the unexpected pixels of every label map read.

The rule, for `eval` and `score` alike:

- The share is unexpected pixels / every ground-truth pixel read (ignored ones included).
- It is judged after each label map once `LABEL_CHECK_MIN_PIXELS` pixels have been read, and
  over everything at the end (so a data set smaller than that is judged whole). When it is
  above `UNEXPECTED_LABEL_LIMIT` the run stops with an `InputError` that names the values,
  what was expected and, where the encoding is recognised, the conversion needed. `eval`
  judges the first label maps (up to `LABEL_CHECK_MIN_PIXELS` pixels) before any model loads.
- Under the limit the run goes on; the count is in the result (`unexpected_labels`).
- Binary class lists (K = 2, no reduce-zero-label): when the ignore index holds pixels and
  class 1 has fewer than 1 % as many, the labels are read as a 0/255 mask and the ignore
  index's pixels count as unexpected (otherwise every building or road pixel would be
  silently ignored and its class score 0).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from terramask.errors import InputError
from terramask.eval.metrics import expected_label_values, value_counts

#: Share of ground-truth pixels with an unexpected value above which eval and score stop.
UNEXPECTED_LABEL_LIMIT = 0.01
#: Pixels to read before the running share may stop a run (one 1024 x 1024 label map).
LABEL_CHECK_MIN_PIXELS = 1024 * 1024
#: How many unexpected values an error names (the most frequent).
SHOWN_VALUES = 5


class LabelCheck:
    """Counts unexpected ground-truth values over the label maps read; stops a run on many.

    `preset_name` (a display name) makes the messages speak of the preset (eval); without it
    they name the options `classes`, `ignore_index` and `reduce_zero_label` (score).
    """

    def __init__(
        self,
        classes: Sequence[str],
        *,
        ignore_index: int = 255,
        reduce_zero_label: bool = False,
        preset_name: str | None = None,
        limit: float | None = None,
        min_pixels: int | None = None,
    ) -> None:
        self.classes = tuple(classes)
        self.ignore_index = ignore_index
        self.reduce_zero_label = reduce_zero_label
        self.preset_name = preset_name
        self.limit = UNEXPECTED_LABEL_LIMIT if limit is None else limit
        self.min_pixels = LABEL_CHECK_MIN_PIXELS if min_pixels is None else min_pixels
        self.counts: Counter[int] = Counter()
        self.first_file: dict[int, str] = {}
        self.pixels = 0
        self.files = 0

    def add(self, label: np.ndarray, path: str | os.PathLike) -> None:
        """Count one label map as stored; raise once enough is read and too much is odd."""
        values, counts = value_counts(label)
        for value, count in zip(values.tolist(), counts.tolist(), strict=True):
            self.counts[value] += count
            self.first_file.setdefault(value, str(Path(path)))
        self.pixels += int(np.asarray(label).size)
        self.files += 1
        if self.pixels >= self.min_pixels:
            self._judge()

    def finish(self) -> None:
        """Judge everything read, however little (call once every label map is read)."""
        self._judge()

    def unexpected(self) -> dict[int, int]:
        """value -> pixels of every unexpected value read so far (see the module's rule)."""
        values = np.array(sorted(self.counts), dtype=np.int64)
        ok = expected_label_values(
            values, len(self.classes), self.ignore_index, self.reduce_zero_label
        )
        odd = {int(v): self.counts[int(v)] for v in values[~ok]}
        if self._looks_like_binary_mask():
            odd[self.ignore_index] = self.counts[self.ignore_index]
        return odd

    def _looks_like_binary_mask(self) -> bool:
        if len(self.classes) != 2 or self.reduce_zero_label:
            return False
        ignored = self.counts.get(self.ignore_index, 0)
        return ignored > 0 and self.counts.get(1, 0) * 100 < ignored

    def _judge(self) -> None:
        odd = self.unexpected()
        total = sum(odd.values())
        if self.pixels and total / self.pixels > self.limit:
            raise InputError(self._message(odd, total))

    def _message(self, odd: dict[int, int], total: int) -> str:
        ranked = sorted(odd.items(), key=lambda item: (-item[1], item[0]))
        shown = ", ".join(
            f"{v} ({percent_text(c / self.pixels)})" for v, c in ranked[:SHOWN_VALUES]
        )
        if len(ranked) > SHOWN_VALUES:
            shown += f" and {len(ranked) - SHOWN_VALUES} other values"
        files = "label map" if self.files == 1 else f"{self.files} label maps"
        first = self.first_file[ranked[0][0]]
        together = f", together {percent_text(total / self.pixels)}" if len(ranked) > 1 else ""
        expected = expected_text(self.classes, self.ignore_index, self.reduce_zero_label)
        subject = (
            f"the {self.preset_name} preset"
            if self.preset_name
            else "`classes`, `ignore_index` and `reduce_zero_label`"
        )
        return (
            f"The ground truth holds values that {subject} do{'es' if self.preset_name else ''} "
            f"not expect: {shown}{together} of the {self.pixels:,} pixels of the {files} read "
            f"(first in {first}). "
            f"Expected: {expected}. "
            f"More than {percent_text(self.limit)} of such pixels would make the scores wrong, "
            f"so the run stopped. {self._hint(odd)}"
        )

    def _hint(self, odd: dict[int, int]) -> str:
        k = len(self.classes)
        top = max(odd, key=lambda v: odd[v])
        who = "the preset" if self.preset_name else "`classes`"
        if k == 2 and not self.reduce_zero_label and top == 255 and 0 in self.counts:
            return (
                "The labels hold 0 and 255 and (almost) no 1: a 0/255 mask, whose 255 would "
                f"be ignored or dropped; {who} expects 0/1: convert them "
                "as SegEarth-OV's converters do (255 → 1, written to a label_cvt folder) and "
                "score the converted labels."
            )
        if not self.reduce_zero_label and set(odd) == {k}:
            if self.preset_name:
                return (
                    f"The values run up to {k}, one more than the preset's {k} classes: these "
                    f"look like labels stored 1..{k} with 0 as no-data (as LoveDA and ISPRS "
                    "store them), which this preset does not use; check that the label folder "
                    f"holds the labels converted as the preset's source describes (ids 0..{k - 1})."
                )
            return (
                f"The values run up to {k}, one more than the {k} names in `classes`: if the "
                f"labels are stored 1..{k} with 0 as no-data (as LoveDA and ISPRS store them), "
                "set `reduce_zero_label`; if 0 is a class too, name it first in `classes`."
            )
        if self.preset_name:
            return (
                f"Check that the label folder holds {self.preset_name}'s labels converted to "
                "class ids as the preset's source describes (see the preset's notes)."
            )
        highest = max(odd)
        if highest < 0:
            return (
                "Negative values are no class ids: set `ignore_index` to the value that marks "
                "unlabelled pixels."
            )
        return (
            f"Name every class in `classes`, in id order (ids up to {highest} need "
            f"{highest + 1 - int(self.reduce_zero_label)} names), or set `ignore_index` to the "
            "value that marks unlabelled pixels."
        )


def expected_text(classes: Sequence[str], ignore_index: int, reduce_zero_label: bool) -> str:
    """The stored values a class list expects, in words: '0 background, 1 building; 255 ignored'."""
    first = 1 if reduce_zero_label else 0
    named = [f"{first + i} {name}" for i, name in enumerate(classes)]
    if len(named) > 8:
        named = [*named[:3], "...", named[-1]]
    ignored = sorted({0, ignore_index} if reduce_zero_label else {ignore_index})
    text = ", ".join(named)
    if reduce_zero_label:
        text += f" (class ids 0..{len(classes) - 1} after reducing zero)"
    return text + "; " + " and ".join(str(v) for v in ignored) + " ignored"


def percent_text(share: float) -> str:
    """A share as a percentage for messages: '14.20 %', '<0.01 %'."""
    if 0 < share < 0.0001:
        return "<0.01 %"
    return f"{100 * share:.2f} %"
