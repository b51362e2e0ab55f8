"""OVSS benchmark presets: class names with synonyms, threshold, label encoding and folder layout.

One JSON file per data set under `presets/` (values from SegEarth-OV's configs, see each
file's `source` and `notes`), so that adding a data set is adding a file, not code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from terramask.errors import InputError
from terramask.methods.vocabulary import ClassVocabulary

PUBLISHED_FILE = "published.json"


@dataclass(frozen=True)
class PresetClass:
    """One class in label order: its data-set name and the prompts the text encoder sees."""

    label: str
    prompts: tuple[str, ...]
    note: str | None = None


@dataclass(frozen=True)
class Layout:
    """Where images and labels live under a data set's root; `{split}` is filled in."""

    img_dir: str
    ann_dir: str
    split: str | None
    img_suffix: str
    ann_suffix: str

    def folders(self, split: str | None) -> tuple[str, str]:
        """The (image, label) folders relative to the root for `split` (or the default)."""
        chosen = split or self.split or ""
        return self.img_dir.format(split=chosen), self.ann_dir.format(split=chosen)

    @property
    def has_split(self) -> bool:
        return "{split}" in self.img_dir or "{split}" in self.ann_dir


@dataclass(frozen=True)
class OvssPreset:
    """Everything needed to evaluate an OVSS method on one data set like the published runs."""

    name: str
    display_name: str
    kind: str
    classes: tuple[PresetClass, ...]
    background_index: int | None
    threshold: float | None
    reduce_zero_label: bool
    ignore_index: int
    layout: Layout
    source: str = ""
    notes: tuple[str, ...] = ()
    published: dict[str, Any] = field(default_factory=dict)

    @property
    def labels(self) -> tuple[str, ...]:
        """Class names as the data set calls them, in label order (for reports)."""
        return tuple(c.label for c in self.classes)

    def vocabulary(self) -> ClassVocabulary:
        """The prompts as a vocabulary: class i of the vocabulary is label id i (after reduce)."""
        return ClassVocabulary(tuple(c.prompts for c in self.classes), self.background_index)


def list_presets() -> list[str]:
    """Names of every preset shipped with TerraMask, sorted."""
    folder = resources.files("terramask.eval") / "presets"
    return sorted(
        entry.name.removesuffix(".json")
        for entry in folder.iterdir()
        if entry.name.endswith(".json") and entry.name != PUBLISHED_FILE
    )


def load_preset(name: str) -> OvssPreset:
    """The preset called `name` (case and '-' vs '_' do not matter)."""
    key = name.strip().lower().replace("-", "_")
    known = list_presets()
    if key not in known:
        raise InputError(
            f"No benchmark preset is called {name!r}. Known data sets: {', '.join(known)}. "
            "Choose one of these names."
        )
    return _parse(_read_json(f"{key}.json"))


#: The keys of each `preset_rows()` row, in print order, with their column headings.
PRESET_COLUMNS: tuple[tuple[str, str], ...] = (
    ("name", "name"),
    ("display_name", "data set"),
    ("kind", "kind"),
    ("split", "default split"),
    ("images", "images"),
    ("labels", "labels"),
    ("label_values", "label values (as stored)"),
    ("reduce_zero_label", "reduce zero label"),
    ("background", "background class"),
    ("threshold", "threshold"),
    ("source", "source"),
    ("notes", "notes"),
)


def preset_rows() -> list[dict[str, str]]:
    """One row per preset, sorted by name, every value a string ready to print.

    Keys are those of `PRESET_COLUMNS`: the layout under the root folder (`<split>` stands for
    the split's folder), the label values as stored on disk with their classes, the ignore
    index and whether zero is reduced, the background class, threshold, source and notes.
    """
    return [preset_row(load_preset(name)) for name in list_presets()]


def preset_row(preset: OvssPreset) -> dict[str, str]:
    """`preset` as one printable row (see `preset_rows`)."""
    layout = preset.layout
    first = 1 if preset.reduce_zero_label else 0
    classes = ", ".join(f"{first + i} {label}" for i, label in enumerate(preset.labels))
    ignored = sorted(
        {0, preset.ignore_index} if preset.reduce_zero_label else {preset.ignore_index}
    )
    background = (
        "none"
        if preset.background_index is None
        else f"{preset.labels[preset.background_index]} (stored {preset.background_index + first})"
    )
    k = len(preset.classes)
    return {
        "name": preset.name,
        "display_name": preset.display_name,
        "kind": preset.kind,
        "split": layout.split if layout.has_split and layout.split else "none (no split folders)",
        "images": f"{layout.img_dir.replace('{split}', '<split>')}/*{layout.img_suffix}",
        "labels": f"{layout.ann_dir.replace('{split}', '<split>')}/*{layout.ann_suffix}",
        "label_values": f"{classes}; {' and '.join(str(v) for v in ignored)} ignored",
        "reduce_zero_label": (
            f"yes: stored 0 is ignored, 1..{k} become classes 0..{k - 1}"
            if preset.reduce_zero_label
            else "no"
        ),
        "background": background,
        "threshold": "none" if preset.threshold is None else f"{preset.threshold:g}",
        "source": preset.source,
        "notes": " ".join(preset.notes),
    }


@cache
def published_numbers() -> dict[str, Any]:
    """The published 8-set average mIoU per method (DESIGN.md 1.4), with its note."""
    return _read_json(PUBLISHED_FILE)


def _read_json(filename: str) -> dict[str, Any]:
    text = (resources.files("terramask.eval") / "presets" / filename).read_text("utf-8")
    return json.loads(text)


def _parse(doc: dict[str, Any]) -> OvssPreset:
    classes = tuple(
        PresetClass(c["label"], tuple(c.get("prompts") or [c["label"]]), c.get("note"))
        for c in doc["classes"]
    )
    return OvssPreset(
        name=doc["name"],
        display_name=doc["display_name"],
        kind=doc["kind"],
        classes=classes,
        background_index=doc.get("background_index"),
        threshold=doc.get("threshold"),
        reduce_zero_label=bool(doc.get("reduce_zero_label", False)),
        ignore_index=int(doc.get("ignore_index", 255)),
        layout=Layout(**doc["layout"]),
        source=doc.get("source", ""),
        notes=tuple(doc.get("notes", ())),
        published=dict(doc.get("published", {})),
    )
