"""Which coordinate frame a multimodal LLM is asked to answer in, guessed or chosen.

The frame is decided once per client and used twice: the prompt asks for it in words
(`terramask.methods.replies.box_prompt` / `clicks_prompt`) and the parser reads the reply in
exactly that frame (`MLLMReply.frame`); nothing is rescaled from one frame to another after
the fact. `coords="auto"` guesses from the model (table below); "pixel", "norm1000" or "norm1"
overrides the guess (`MLLMOptions.coords`, `--mllm-coords`).

================================  ==========  ============================================
model (name over an endpoint,     frame       why
local family)
================================  ==========  ============================================
qwen3-vl (any size, MoE too);     norm1000    Qwen3-VL grounds on a relative 0-1000 grid;
local qwen3_vl                                the prompt asks for 0-1000 in those words
qwen2.5-vl / qwen2_5_vl;          pixel       Qwen2.5-VL writes absolute pixels of the
local qwen2_5_vl                              image it was given
qwen2-vl                          norm1000    Qwen2-VL's grounding grid
internvl                          norm1000    InternVL's grounding grid
anything else (gpt, claude, ...)  pixel       pixels of the image as sent; the prompt
                                              states its size (W x H), as GeoSeg's does
================================  ==========  ============================================
"""

from __future__ import annotations

import re

from terramask.errors import InputError
from terramask.options import COORDINATE_FRAMES, COORDS
from terramask.protocols import frame_name

#: What `coords=` accepts: "auto" (guess from the model) or one of the frames.

_FRAME_BY_NAME = (
    (re.compile(r"qwen3[\w.\-]*vl"), "norm1000"),
    (re.compile(r"qwen2[.\-_]?5[\-_ ]?vl"), "pixel"),
    (re.compile(r"qwen2[\-_ ]?vl"), "norm1000"),
    (re.compile(r"internvl"), "norm1000"),
)

#: The frame of each local model family (`ResolvedModel.family`).
FAMILY_FRAME = {"qwen2_5_vl": "pixel", "qwen3_vl": "norm1000"}


def guess_frame(model: str) -> str:
    """The frame a model is asked to answer in, guessed from its name (see the table)."""
    name = str(model).lower().rsplit("/", 1)[-1]
    for pattern, frame in _FRAME_BY_NAME:
        if pattern.search(name):
            return frame
    return "pixel"


def choose_frame(coords: str | None, *, guess: str, model: str) -> str:
    """`guess` for "auto" (or None), else the frame `coords` names; an InputError otherwise.

    Earlier names ("pixels", "0-1000", "0-1") are accepted as the frames they meant."""
    name = "auto" if coords is None else frame_name(coords)
    if name == "auto":
        return guess
    if name not in COORDINATE_FRAMES:
        raise InputError(
            f"The coordinate frame '{coords}' given for the multimodal LLM '{model}' is not "
            f"one TerraMask can ask for. Use one of: {', '.join(COORDS)} "
            "(`MLLMOptions.coords`; auto guesses from the model)."
        )
    return name
