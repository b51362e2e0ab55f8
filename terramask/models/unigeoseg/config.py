"""The shape of a UniGeoSeg model, read from a checkpoint's config.json.

The released checkpoint (nishuo1999/UniGeoSeg) is a PSALM-style `llava_phi` folder: its
config.json is Phi-1.5's plus a few multimodal fields (`mm_projector_type`, `swin_type`,
`projector_outdim`), while the Swin-B backbone and the Mask2Former head take their sizes from
the YAML the released code loads (`maskformer2_swin_base_384_bs16_50ep.yaml`) and the rest
are constants in its model file. Those sizes are the defaults here. A folder TerraMask
writes (fine-tuning, the tiny test models) records every size under `CONFIG_KEY`, so that
other shapes load through the same path.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from terramask.errors import ModelLoadError

#: config.json's `model_type` of PSALM-style checkpoints (UniGeoSeg, and also PSALM and
#: SegEarth-R1, which the key table then tells apart).
MODEL_TYPE = "llava_phi"
#: The config.json key under which TerraMask records the sizes it does not take from Phi.
CONFIG_KEY = "terramask_unigeoseg"
#: The projector the released checkpoint uses (its run name says `SparseConv1`).
PROJECTORS = ("SparseConv_1",)

_TEXT_KEYS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
    "num_attention_heads", "num_key_value_heads", "resid_pdrop", "embd_pdrop",
    "attention_dropout", "hidden_act", "max_position_embeddings", "initializer_range",
    "layer_norm_eps", "rope_theta", "partial_rotary_factor", "rope_scaling", "rope_parameters",
    "qk_layernorm", "bos_token_id", "eos_token_id", "pad_token_id", "head_dim",
)  # fmt: skip


@dataclass(frozen=True)
class UniGeoSegConfig:
    """Every size of the model. Defaults are the released checkpoint's.

    Args:
        text: Phi's configuration (PhiConfig keyword arguments), from config.json.
        image_size: Side of the square canvas the model sees (512: the projector's layer
            norms are fixed to its 16 x 16 last Swin stage).
        swin_embed_dim, swin_depths, swin_heads, swin_window: Swin-B (128, [2, 2, 18, 2],
            [4, 8, 16, 32], window 12).
        projector: How the last Swin stage becomes language tokens ("SparseConv_1": 3x3 conv
            + layer norm, stride-2 3x3 conv + layer norm, 1x1 conv: 64 tokens at 512 px).
        mask_hidden: Width of the pixel decoder and the mask decoder (256).
        mask_heads: Attention heads of both (8).
        decoder_ffn: The mask decoder's feed-forward width (2048).
        decoder_layers: Mask2Former's DEC_LAYERS: one prediction from the query itself plus
            `decoder_layers - 1` masked-attention layers (10: nine layers).
        encoder_layers, encoder_ffn: The deformable-attention encoder of the pixel decoder
            (6 layers, feed-forward 1024).
        num_queries: Learnable Mask2Former queries the released decoder holds but does not
            use (100); only their shapes matter, for the key table.
        query_dim: Width of the mask-query path (512, the released `additional_dim`).
        perceiver_depth, perceiver_heads, perceiver_head_dim, perceiver_ff_mult: The
            cross-attention from the pooled instruction to the last Swin stage (1 layer, 8 x 64,
            feed-forward x1).
        memory_slots: Latent knowledge memory slots N (4).
        memory_weights: λ per task (interactive 0.0, referring 0.2, reasoning 0.2).
        reasoning_queries: Queries of the reasoning pooling in TATE (4).
        reasoning_dropout: Dropout after its fusion (0.1).
        pixel_mean, pixel_std: Image normalisation (ImageNet's, on 0-255 values).
    """

    text: dict[str, Any] = field(default_factory=dict)
    image_size: int = 512
    swin_embed_dim: int = 128
    swin_depths: tuple[int, ...] = (2, 2, 18, 2)
    swin_heads: tuple[int, ...] = (4, 8, 16, 32)
    swin_window: int = 12
    projector: str = "SparseConv_1"
    mask_hidden: int = 256
    mask_heads: int = 8
    decoder_ffn: int = 2048
    decoder_layers: int = 10
    encoder_layers: int = 6
    encoder_ffn: int = 1024
    num_queries: int = 100
    query_dim: int = 512
    perceiver_depth: int = 1
    perceiver_heads: int = 8
    perceiver_head_dim: int = 64
    perceiver_ff_mult: int = 1
    memory_slots: int = 4
    memory_weights: tuple[tuple[str, float], ...] = (
        ("interactive", 0.0), ("referring", 0.2), ("reasoning", 0.2),
    )  # fmt: skip
    reasoning_queries: int = 4
    reasoning_dropout: float = 0.1
    pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375)

    def __post_init__(self) -> None:
        for name in ("swin_depths", "swin_heads", "pixel_mean", "pixel_std"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        weights = tuple((str(k), float(v)) for k, v in dict(self.memory_weights).items())
        object.__setattr__(self, "memory_weights", weights)
        if self.projector not in PROJECTORS:
            raise ModelLoadError(
                f"The checkpoint's projector '{self.projector}' (config.json "
                f"`mm_projector_type`) is not one TerraMask builds: it builds "
                f"{', '.join(PROJECTORS)}, the released UniGeoSeg checkpoint's."
            )
        if self.image_size % 64 or len(self.swin_depths) != 4 or len(self.swin_heads) != 4:
            raise ModelLoadError(
                f"A UniGeoSeg model needs an image size divisible by 64 and four Swin stages; "
                f"this configuration has {self.image_size} px and {len(self.swin_depths)} stages."
            )
        if "hidden_size" not in self.text:
            raise ModelLoadError(
                "The UniGeoSeg configuration names no language model size (config.json "
                "`hidden_size`)."
            )

    @property
    def hidden_size(self) -> int:
        """The language model's width d."""
        return int(self.text["hidden_size"])

    @property
    def vision_channels(self) -> tuple[int, int, int, int]:
        """Channels of the four Swin stages (res2..res5)."""
        return tuple(self.swin_embed_dim * 2**i for i in range(4))  # type: ignore[return-value]

    @property
    def grid(self) -> int:
        """Side of the last Swin stage (res5) on the canvas."""
        return self.image_size // 32

    @property
    def image_tokens(self) -> int:
        """Language tokens one image becomes."""
        return (self.grid // 2) ** 2

    def memory_weight(self, task: str) -> float:
        """λ of the latent knowledge memory for `task`."""
        return dict(self.memory_weights).get(task, 0.2)

    def phi_config(self):
        """Phi's configuration object."""
        from transformers import PhiConfig

        return PhiConfig(**self.text)

    # ------------------------------------------------------------- config.json

    @classmethod
    def from_checkpoint(
        cls, config: dict[str, Any], where: str = "config.json"
    ) -> UniGeoSegConfig:
        """The configuration of a checkpoint from its config.json contents."""
        model_type = config.get("model_type")
        if model_type != MODEL_TYPE:
            raise ModelLoadError(
                f"{where} says model_type '{model_type}', not '{MODEL_TYPE}': it is not a "
                "UniGeoSeg checkpoint. Point `ModelOptions.unigeoseg` at the folder of "
                "nishuo1999/UniGeoSeg (or one `terramask train unigeoseg` wrote)."
            )
        swin = config.get("swin_type", "base")
        if swin != "base":
            raise ModelLoadError(
                f"{where} names a '{swin}' Swin backbone; UniGeoSeg's released checkpoint and "
                "TerraMask use Swin-B ('base')."
            )
        text = {k: config[k] for k in _TEXT_KEYS if k in config}
        extra = dict(config.get(CONFIG_KEY) or {})
        extra.setdefault("projector", config.get("mm_projector_type", "SparseConv_1"))
        known = {f.name for f in fields(cls)} - {"text"}
        unknown = sorted(set(extra) - known)
        if unknown:
            raise ModelLoadError(
                f"{where} holds UniGeoSeg settings this TerraMask does not know "
                f"({', '.join(unknown)} under `{CONFIG_KEY}`); it was written by a newer version."
            )
        return cls(text=text, **extra)

    def to_checkpoint(self) -> dict[str, Any]:
        """config.json contents: the released fields plus every size under `CONFIG_KEY`."""
        sizes = {k: v for k, v in asdict(self).items() if k != "text"}
        sizes["memory_weights"] = [list(p) for p in self.memory_weights]
        for key in ("swin_depths", "swin_heads", "pixel_mean", "pixel_std"):
            sizes[key] = list(sizes[key])
        return {
            **self.text,
            "model_type": MODEL_TYPE,
            "architectures": ["UniGeoSeg"],
            "mm_projector_type": self.projector,
            "swin_type": "base",
            "projector_outdim": self.hidden_size,
            "mm_input_embeds": self.vision_channels[-1],
            "tie_word_embeddings": False,
            CONFIG_KEY: sizes,
        }
