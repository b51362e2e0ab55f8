"""Prompt templates: the published 80 ImageNet templates and our remote-sensing set."""

from __future__ import annotations

from terramask.methods.templates import (
    IMAGENET_TEMPLATES,
    REMOTE_SENSING_TEMPLATES,
    SIMPLE_TEMPLATES,
)
from terramask.protocols import fill_template


def test_imagenet_templates_are_the_published_80():
    assert len(IMAGENET_TEMPLATES) == 80 == len(set(IMAGENET_TEMPLATES))
    assert IMAGENET_TEMPLATES[0] == "a bad photo of a {}."
    assert IMAGENET_TEMPLATES[-1] == "a tattoo of the {}."
    assert "itap of a {}." in IMAGENET_TEMPLATES


def test_every_template_has_one_slot():
    for template in IMAGENET_TEMPLATES + REMOTE_SENSING_TEMPLATES + SIMPLE_TEMPLATES:
        assert template.count("{}") == 1


def test_fill_keeps_literal_braces():
    assert fill_template("a photo of a {}.", "road {paved}") == "a photo of a road {paved}."
