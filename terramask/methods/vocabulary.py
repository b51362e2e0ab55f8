"""Class vocabularies: K classes, each named by one or more synonyms ("road,street")."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from terramask.errors import InputError

#: Label of a pixel that belongs to no class (below threshold, no background class named).
NO_CLASS = -1


@dataclass(frozen=True)
class ClassVocabulary:
    """Classes in index order; a class's first synonym names it in every output.

    `background` is the index of the class that stands for "none of the above" (LoveDA's
    "background", ISPRS "clutter"): pixels whose best probability is below an engine's
    threshold get it. Without one they get NO_CLASS.
    """

    classes: tuple[tuple[str, ...], ...]
    background: int | None = None

    def __post_init__(self) -> None:
        if not self.classes:
            raise InputError("No class was given: name at least one, e.g. -c building.")
        for synonyms in self.classes:
            if not synonyms or any(not name.strip() for name in synonyms):
                raise InputError(
                    f"A class has an empty name ({', '.join(synonyms)!r}); separate synonyms "
                    "with commas and give each class at least one word, e.g. -c 'road,street'."
                )
        seen: dict[str, int] = {}
        for index, synonyms in enumerate(self.classes):  # a class is named by its first
            key = synonyms[0].strip().lower()
            if key in seen:
                raise InputError(
                    f"Two classes are named {synonyms[0]!r} ({', '.join(self.classes[seen[key]])!r}"
                    f" and {', '.join(synonyms)!r}), and outputs name classes by their first "
                    "name: merge them into one class with synonyms, e.g. -c 'road,street'."
                )
            seen[key] = index
        if self.background is not None and not 0 <= self.background < len(self.classes):
            raise InputError(f"background index {self.background} is not a class index")
        if len(self.classes) > 254:
            raise InputError(f"{len(self.classes)} classes given; at most 254 fit a label map.")

    @classmethod
    def parse(cls, specs: Sequence[str], background: str | None = None) -> ClassVocabulary:
        """From CLI-style specs, each "name" or "name,synonym,..."; `background` by name."""
        classes = tuple(
            tuple(part.strip() for part in spec.split(",") if part.strip())
            for spec in specs
        )
        vocabulary = cls(classes)
        if background is None:
            return vocabulary
        for index, synonyms in enumerate(classes):
            if background.strip() in synonyms:
                return cls(classes, index)
        return cls((*classes, (background.strip(),)), len(classes))

    @property
    def names(self) -> tuple[str, ...]:
        """One name per class: its first synonym."""
        return tuple(synonyms[0] for synonyms in self.classes)

    @property
    def prompts(self) -> tuple[tuple[str, int], ...]:
        """Every synonym with the index of its class, in order (what text encoders see)."""
        return tuple((name, i) for i, synonyms in enumerate(self.classes) for name in synonyms)

    def __len__(self) -> int:
        return len(self.classes)
