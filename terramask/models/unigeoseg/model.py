"""The UniGeoSeg network: Swin-B → projector → Phi with TATE → pooled query with LKM → Mask2Former.

Parts: transformers' `SwinBackbone` (res2..res5), our `SparseConvProjector` (64 image tokens),
transformers' `PhiModel` with a bias-free LM head, our TATE, memory and mask-query path, and
the Mask2Former pixel and mask decoders (`modules.py`). `encode_prompt` turns a request into
the released conversation's pieces; `UniGeoSegModel.forward` runs a batch of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from terramask.methods.unigeoseg_prompts import (
    ANSWER,
    IMAGE,
    REFER,
    SEG,
    conversation_parts,
    instruction_text,
)
from terramask.models.unigeoseg.config import UniGeoSegConfig
from terramask.models.unigeoseg.modules import (
    LatentKnowledgeMemory,
    MaskDecoder,
    MaskQuery,
    PixelDecoder,
    SparseConvProjector,
    TaskTextEnhancement,
    attention_pool,
)

#: Label of tokens that carry no language-model loss.
IGNORE_INDEX = -100
_END_OF_INSTRUCTION = "[/INST]"


@dataclass
class Piece:
    """One piece of a conversation: text tokens, the image, the instruction (`refer`) or the
    explanation (`answer`); `labels` are the language-model targets (None: none)."""

    kind: str
    ids: torch.Tensor | None = None
    labels: torch.Tensor | None = None


@dataclass
class EncodedPrompt:
    """A tokenized request: its pieces, task and (interactive) coordinate rows."""

    pieces: list[Piece]
    task: str
    coordinates: torch.Tensor | None = None


def encode_prompt(
    tokenizer,
    seg_id: int,
    question: str,
    task: str,
    *,
    coordinates=None,
    style: str = "benchmark",
    answer: str | None = None,
    upto: str = "all",
) -> EncodedPrompt:
    """The released conversation for `question`, tokenized piece by piece as the released
    loader does (each text piece with `encode(..., add_special_tokens=False)`).

    `upto`: "refer" stops after the instruction (all the mask needs: later tokens cannot
    change it under causal attention), "answer" stops where the explanation starts (for
    generating it), "all" keeps the whole conversation with `answer` teacher-forced (training).
    Labels cover the assistant's reply and the explanation.
    """

    def encode(text: str) -> list[int]:
        return list(tokenizer.encode(text, add_special_tokens=False))

    parts = conversation_parts(style, with_answer=upto != "answer")
    pieces: list[Piece] = []
    in_reply = False
    for part in parts:
        if part == IMAGE:
            pieces.append(Piece("image"))
        elif part == REFER:
            ids = torch.tensor([*encode(instruction_text(question)), seg_id], dtype=torch.long)
            pieces.append(Piece("refer", ids))
            if upto == "refer":
                break
        elif part == SEG:
            continue  # the released code drops <seg> (no SEG queries)
        elif part == ANSWER:
            ids = torch.tensor([*encode(answer or ""), seg_id], dtype=torch.long)
            pieces.append(Piece("answer", ids, ids.clone()))
        else:
            ids = torch.tensor(encode(part), dtype=torch.long)
            labels = ids.clone() if in_reply else None
            if not in_reply and _END_OF_INSTRUCTION in part:
                head = part[: part.index(_END_OF_INSTRUCTION) + len(_END_OF_INSTRUCTION)]
                start = len(encode(head))
                labels = ids.clone()
                labels[: min(start, len(ids))] = IGNORE_INDEX
                in_reply = True
            pieces.append(Piece("text", ids, labels))
    rows = None if coordinates is None else torch.as_tensor(coordinates, dtype=torch.float32)
    return EncodedPrompt(pieces, task, rows)


@dataclass
class UniGeoSegOutput:
    """A batch's masks (each decoder stage, (B, 1, h, w) logits at 1/4 of the canvas; the
    last is the answer), and when asked the language model's logits and their labels."""

    masks: tuple[torch.Tensor, ...]
    lm_logits: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    hidden: torch.Tensor | None = field(default=None, repr=False)


class UniGeoSegModel(nn.Module):
    """UniGeoSeg with transformers' Swin, Phi and Mask2Former parts and our own modules."""

    def __init__(self, config: UniGeoSegConfig):
        super().__init__()
        from transformers import PhiModel, SwinBackbone, SwinConfig

        self.config = config
        d = config.hidden_size
        swin = SwinConfig(
            image_size=config.image_size, patch_size=4, embed_dim=config.swin_embed_dim,
            depths=list(config.swin_depths), num_heads=list(config.swin_heads),
            window_size=config.swin_window, mlp_ratio=4.0, qkv_bias=True, drop_path_rate=0.0,
            out_features=["stage1", "stage2", "stage3", "stage4"],
        )  # fmt: skip
        self.vision = SwinBackbone(swin)
        self.vision.swin.layernorm = nn.Identity()  # the backbone's outputs never use it
        channels = config.vision_channels
        self.projector = SparseConvProjector(channels[-1], d, config.grid)
        phi = config.phi_config()
        self.language_model = PhiModel(phi)
        self.lm_head = nn.Linear(d, phi.vocab_size, bias=False)
        self.ref_query = nn.Parameter(torch.randn(1, d))
        self.tate = TaskTextEnhancement(d, config.reasoning_queries, config.reasoning_dropout)
        self.memory = LatentKnowledgeMemory(config.memory_slots, d)
        self.mask_query = MaskQuery(
            d, channels[-1], config.query_dim, config.mask_hidden,
            depth=config.perceiver_depth, heads=config.perceiver_heads,
            head_dim=config.perceiver_head_dim, ff_mult=config.perceiver_ff_mult,
        )  # fmt: skip
        self.pixel_decoder = PixelDecoder(
            channels, config.mask_hidden, config.mask_hidden, layers=config.encoder_layers,
            ffn=config.encoder_ffn, heads=config.mask_heads,
        )  # fmt: skip
        self.mask_decoder = MaskDecoder(
            config.mask_hidden, config.mask_heads, config.decoder_ffn, config.decoder_layers,
            config.mask_hidden,
        )  # fmt: skip
        self.register_buffer(
            "pixel_mean", torch.tensor(config.pixel_mean).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "pixel_std", torch.tensor(config.pixel_std).view(1, 3, 1, 1), persistent=False
        )

    # ------------------------------------------------------------------ pieces

    def normalize(self, canvas: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) 0-255 values to the backbone's input."""
        mean = self.pixel_mean.to(canvas.device, torch.float32)
        std = self.pixel_std.to(canvas.device, torch.float32)
        return ((canvas.float() - mean) / std).to(self.lm_head.weight.dtype)

    def encode_image(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        """res2..res5 of normalised (B, 3, S, S) pixels."""
        return list(self.vision(pixels).feature_maps)

    def embed_prompt(
        self, prompt: EncodedPrompt, image_tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(embeddings (T, d), instruction positions (T,) bool, labels (T,)) of one prompt;
        TATE acts on the text piece right after the image, as in the released code."""
        embed = self.language_model.embed_tokens
        device = image_tokens.device
        chunks, refer, labels = [], [], []
        after_image = False
        for piece in prompt.pieces:
            if piece.kind == "image":
                chunks.append(image_tokens)
                n = image_tokens.shape[0]
                after_image = True
            else:
                ids = piece.ids.to(device)
                vectors = embed(ids)
                if piece.kind == "text" and after_image:
                    vectors = self.tate(vectors, prompt.task, self.ref_query, prompt.coordinates)
                chunks.append(vectors)
                n = len(ids)
                after_image = False
            refer.append(torch.full((n,), piece.kind == "refer", dtype=torch.bool, device=device))
            labels.append(
                piece.labels.to(device)
                if piece.labels is not None
                else torch.full((n,), IGNORE_INDEX, dtype=torch.long, device=device)
            )
        return torch.cat(chunks), torch.cat(refer), torch.cat(labels)

    def instruction_query(
        self, states: torch.Tensor, task: str, res5: torch.Tensor
    ) -> torch.Tensor:
        """The mask decoder's query from the instruction's hidden states (L, d): pooled with
        the shared referring query, mixed with the memory (λ by task), then the mask-query
        path. No instruction states give a zero pooled vector, as in the released code."""
        if states.shape[0]:
            pooled = attention_pool(self.ref_query, states)
            pooled = self.memory(pooled, self.config.memory_weight(task))
        else:
            pooled = states.new_zeros(states.shape[-1])
        return self.mask_query(pooled, states, res5)

    # ------------------------------------------------------------------ forward

    def forward(
        self,
        pixels: torch.Tensor,
        prompts: Sequence[EncodedPrompt],
        *,
        language_logits: bool = False,
        levels: list[torch.Tensor] | None = None,
        tokens: torch.Tensor | None = None,
    ) -> UniGeoSegOutput:
        """Masks for a batch of normalised canvases and one prompt each.

        `levels` and `tokens` reuse backbone features and image tokens already computed for
        `pixels`.
        """
        levels = self.encode_image(pixels) if levels is None else levels
        tokens = self.projector(levels[-1]) if tokens is None else tokens
        embedded = [self.embed_prompt(p, tokens[b]) for b, p in enumerate(prompts)]
        inputs, attention, refer, labels = _pad(embedded)
        hidden = self.language_model(
            inputs_embeds=inputs, attention_mask=attention, use_cache=False, return_dict=True
        ).last_hidden_state
        states = [hidden[b][refer[b]] for b in range(len(prompts))]
        masks = self.decode_masks(levels, states, [p.task for p in prompts])
        logits = self.lm_head(hidden) if language_logits else None
        return UniGeoSegOutput(masks, logits, labels if language_logits else None, hidden)

    def decode_masks(
        self, levels: list[torch.Tensor], states: Sequence[torch.Tensor], tasks: Sequence[str]
    ) -> tuple[torch.Tensor, ...]:
        """Every decoder stage's (B, 1, h, w) mask logits from each sample's instruction
        states and task."""
        queries = torch.stack([
            self.instruction_query(s, task, levels[-1][b])
            for b, (s, task) in enumerate(zip(states, tasks, strict=True))
        ])  # fmt: skip
        mask_features, multi_scale = self.pixel_decoder(levels)
        return self.mask_decoder(queries.to(mask_features.dtype), multi_scale, mask_features)

    @torch.no_grad()
    def generate_text(
        self,
        tokens: torch.Tensor,
        prompt: EncodedPrompt,
        *,
        max_new_tokens: int,
        stop_ids: Sequence[int],
    ) -> tuple[list[int], torch.Tensor]:
        """Greedy continuation of a prompt cut where the explanation starts (`upto`
        "answer"), for one canvas's image tokens (T, d). Returns the new ids (without the
        stop id) and the hidden states of the prompt (for the mask)."""
        inputs, refer, _ = self.embed_prompt(prompt, tokens)
        out = self.language_model(inputs_embeds=inputs[None], use_cache=True, return_dict=True)
        hidden = out.last_hidden_state[0]
        past = _cache_of(out)
        last = out.last_hidden_state[:, -1]
        produced: list[int] = []
        for _ in range(max_new_tokens):
            next_id = int(self.lm_head(last).argmax(-1)[0])
            if next_id in stop_ids:
                break
            produced.append(next_id)
            step = self.language_model.embed_tokens(
                torch.tensor([[next_id]], device=tokens.device)
            )
            out = self.language_model(
                inputs_embeds=step, use_cache=True, return_dict=True, **{_CACHE_ARGUMENT: past}
            )
            past, last = _cache_of(out), out.last_hidden_state[:, -1]
        return produced, hidden[refer]


def _cache_argument() -> str:
    """The name PhiModel.forward takes its key-value cache by ("cache" from transformers
    5.2x, "past_key_values" before)."""
    import inspect

    from transformers import PhiModel

    return "cache" if "cache" in inspect.signature(PhiModel.forward).parameters else (
        "past_key_values"
    )


_CACHE_ARGUMENT = _cache_argument()


def _cache_of(output):
    cache = getattr(output, "cache", None)
    return cache if cache is not None else getattr(output, "past_key_values", None)


def _pad(
    embedded: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad a batch of (embeddings, instruction positions, labels)."""
    longest = max(e.shape[0] for e, _, _ in embedded)
    first = embedded[0][0]
    inputs = first.new_zeros(len(embedded), longest, first.shape[-1])
    attention = torch.zeros(len(embedded), longest, dtype=torch.long, device=first.device)
    refer = torch.zeros(len(embedded), longest, dtype=torch.bool, device=first.device)
    labels = torch.full((len(embedded), longest), IGNORE_INDEX, dtype=torch.long,
                        device=first.device)  # fmt: skip
    for b, (e, r, lab) in enumerate(embedded):
        n = e.shape[0]
        inputs[b, :n], attention[b, :n], refer[b, :n], labels[b, :n] = e, 1, r, lab
    return inputs, attention, refer, labels
