"""Prompt templates that turn a class name into sentences for a CLIP-family text encoder.

Averaging a class's text embedding over many phrasings makes zero-shot scores less sensitive
to any one wording; the dense OVSS methods use the 80 ImageNet templates (DESIGN.md §1.1).
"""

from __future__ import annotations

# The 80 templates CLIP's authors published for ImageNet zero-shot classification
# (openai/CLIP, notebooks/Prompt_Engineering_for_ImageNet.ipynb), in their order.
IMAGENET_TEMPLATES: tuple[str, ...] = (
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a plushie {}.",
    "a photo of the nice {}.",
    "a photo of the small {}.",
    "a photo of the weird {}.",
    "the cartoon {}.",
    "art of the {}.",
    "a drawing of the {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "the plushie {}.",
    "a dark photo of a {}.",
    "itap of a {}.",
    "graffiti of the {}.",
    "a toy {}.",
    "itap of my {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "a tattoo of the {}.",
)

# CLIP Surgery's default ensemble (its `encode_text_with_prompt_ensemble`, which GeoSeg's route A
# uses unchanged): the 80 ImageNet templates in CLIP's order, then five scene sentences; 85 in all.
CLIP_SURGERY_TEMPLATES: tuple[str, ...] = (
    *IMAGENET_TEMPLATES,
    "there is a {} in the scene.",
    "there is the {} in the scene.",
    "this is a {} in the scene.",
    "this is the {} in the scene.",
    "this is one {} in the scene.",
)

SIMPLE_TEMPLATES: tuple[str, ...] = ("a photo of a {}.",)

# Overhead-imagery phrasings (ours): the subject seen from above, at several scales.
REMOTE_SENSING_TEMPLATES: tuple[str, ...] = (
    "a satellite image of {}.",
    "an aerial photo of {}.",
    "an aerial image showing {}.",
    "a remote sensing image of {}.",
    "a top-down view of {}.",
    "an overhead photo of {}.",
    "a high resolution satellite photo of {}.",
    "{} seen from above.",
)
