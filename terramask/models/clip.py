"""CLIP and SigLIP behind the `ImageText` protocol, with the hooks the dense-CLIP methods need.

Text goes through a prompt ensemble (every template, each embedding normalised, averaged,
re-normalised). Images are encoded as CLIP was trained (processor resize and crop) for
`encode_image`, and at their own resolution for `patch_tokens`, so a 448 px crop gives a
28x28 grid from a /16 model rather than being squeezed to 224.

For the dense methods (SegEarth-OV, CLIP-Surgery) the adapter also exposes `vision_model`,
`visual_projection`, `preprocess`, `dense_features` (patch and class tokens from one pass),
`dense_tokens` (SegEarth-OV's self-self last block, see below), `logit_scale` and `patch_size`;
for GeoSeg's route A, `surgery_features` (CLIP Surgery's architecture surgery, built on
transformers' CLIP; see `_surgery_forward`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from terramask.errors import InputError
from terramask.models.registry import ResolvedModel
from terramask.models.weights import load_pretrained
from terramask.protocols import RAW_TEMPLATE, fill_template

CLIP_FAMILIES = ("clip", "siglip")
#: The largest long-to-short side ratio given to the processor's resize and centre crop.
MAX_ASPECT = 4
#: CLIP Surgery as GeoSeg runs it: the crop resized to 512 x 512 (bicubic, no centre crop), and
#: the dual path on the last 6 blocks of the ViT (`VisionTransformer.forward` of CLIP Surgery's
#: clip_surgery_model.py, "surgery 7": blocks -1 ... -6).
SURGERY_INPUT_SIZE = 512
SURGERY_BLOCKS = 6
#: OpenAI CLIP's normalisation, used when a processor does not say (the reference hard-codes it).
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def _model_class(family: str):
    from transformers import CLIPModel, SiglipModel

    return {"clip": CLIPModel, "siglip": SiglipModel}[family]


class ClipImageText:
    """A CLIP or SigLIP checkpoint as an `ImageText` model; `name` is the id the user asked for."""

    def __init__(
        self,
        resolved: ResolvedModel,
        *,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = "auto",
        text_batch_size: int = 256,
    ):
        from transformers import AutoImageProcessor, AutoTokenizer

        if resolved.family not in CLIP_FAMILIES:
            raise ValueError(f"ClipImageText cannot run a '{resolved.family}' model")
        self.name = resolved.requested
        self.family = resolved.family
        self.resolved = resolved
        self.model, self.device, self.dtype = load_pretrained(
            _model_class(self.family), resolved, device, dtype
        )
        self.tokenizer = AutoTokenizer.from_pretrained(resolved.path)
        self.image_processor = AutoImageProcessor.from_pretrained(resolved.path)
        self.text_batch_size = max(1, int(text_batch_size))
        self._text_fp32: tuple[torch.nn.Module, torch.nn.Module] | None = None

    # ------------------------------------------------------------------ what dense methods use

    @property
    def vision_model(self) -> torch.nn.Module:
        """The ViT (embeddings, encoder.layers, post_layernorm) for methods that edit its blocks."""
        return self.model.vision_model

    @property
    def visual_projection(self) -> torch.nn.Module:
        """Maps post-layernorm vision tokens into the joint space (identity for SigLIP)."""
        projection = getattr(self.model, "visual_projection", None)
        return projection if projection is not None else torch.nn.Identity()

    @property
    def logit_scale(self) -> float:
        """The learned temperature, already exponentiated (100 for OpenAI CLIP)."""
        return float(self.model.logit_scale.detach().exp().item())

    @property
    def logit_bias(self) -> float:
        """SigLIP's learned sigmoid bias; 0 for CLIP."""
        bias = getattr(self.model, "logit_bias", None)
        return 0.0 if bias is None else float(bias.detach().item())

    @property
    def patch_size(self) -> int:
        """Pixels per patch side: patch_tokens has H // patch_size rows."""
        return int(self.model.config.vision_config.patch_size)

    @property
    def embed_dim(self) -> int:
        """D, the width of the joint image-text space."""
        config = self.model.config
        return int(getattr(config, "projection_dim", None) or config.text_config.hidden_size)

    # ------------------------------------------------------------------ text

    def encode_text(
        self,
        texts: Sequence[str],
        templates: Sequence[str] | None = None,
        *,
        float32: bool = False,
    ) -> np.ndarray:
        """(K, D) normalised text embeddings, each the re-normalised mean over `templates`.

        `templates=None` uses each text as written; pass e.g. IMAGENET_TEMPLATES for the
        80-prompt ensemble. Every template must contain `{}`. `float32` runs the text tower in
        float32 even when the model was loaded in half precision (CLIP Surgery's reference runs
        fp32: a float32 copy of the text tower is made once).
        """
        texts = _check_texts(texts)
        templates = tuple(templates) if templates is not None else RAW_TEMPLATE
        if not templates or any("{}" not in t for t in templates):
            raise InputError(
                "Every prompt template needs a '{}' where the class name goes, e.g. "
                "'a satellite image of {}.'; got " + repr(list(templates)[:3]) + "."
            )
        if not texts:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        prompts = [fill_template(t, text) for text in texts for t in templates]
        embeddings = torch.cat([
            self._text_features(prompts[i:i + self.text_batch_size], float32=float32)
            for i in range(0, len(prompts), self.text_batch_size)
        ])
        embeddings = _normalise(embeddings).reshape(len(texts), len(templates), -1)
        return _normalise(embeddings.mean(dim=1)).cpu().numpy()

    def _text_features(self, prompts: list[str], float32: bool = False) -> torch.Tensor:
        max_length = int(self.model.config.text_config.max_position_embeddings)
        # SigLIP was trained on max_length padding and pools the last position: keep it so.
        padding = "max_length" if self.family == "siglip" else True
        tokens = self.tokenizer(prompts, padding=padding, truncation=True,
                                max_length=max_length, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            if float32 and self.dtype != torch.float32 and self.family == "clip":
                text_model, projection = self._float32_text_tower()
                pooled = text_model(**tokens).pooler_output
                return projection(pooled).float()
            output = self.model.get_text_features(**tokens)
        return output.pooler_output.float()

    def _float32_text_tower(self) -> tuple[torch.nn.Module, torch.nn.Module]:
        """A float32 copy of the text transformer and its projection (made once)."""
        if self._text_fp32 is None:
            import copy

            self._text_fp32 = (
                copy.deepcopy(self.model.text_model).float().eval(),
                copy.deepcopy(self.model.text_projection).float().eval(),
            )
        return self._text_fp32

    # ------------------------------------------------------------------ images

    def preprocess(self, images: Sequence[np.ndarray], *, native: bool = False) -> torch.Tensor:
        """pixel_values on the model's device: the processor's resize/crop, or none if `native`.

        Images are always read channels-last (the processor would take a 1- or 3-px tall image
        for channels-first). Native images must hold at least one patch per side. For the
        processor's resize, an image whose long side exceeds `MAX_ASPECT` times its short side
        is first padded with black at the bottom/right to that ratio: resizing its short side
        to the crop size would otherwise blow the long side up without bound (a 1 × 20 000
        strip to 224 × 4 480 000) to keep only the centre crop of a stretched row.
        """
        images = _check_images(images, same_size=native)
        kwargs: dict[str, Any] = {"return_tensors": "pt", "input_data_format": "channels_last"}
        if native:
            small = [image.shape[:2] for image in images if min(image.shape[:2]) < self.patch_size]
            if small:
                raise InputError(
                    f"The image-text model reads images at their own size in {self.patch_size}-"
                    f"pixel patches, so each side needs at least {self.patch_size} pixels; got "
                    f"{small[0][0]} × {small[0][1]}. Pad or resize the image first."
                )
            kwargs["do_resize"] = False
            if getattr(self.image_processor, "do_center_crop", None) is not None:
                kwargs["do_center_crop"] = False
        else:
            images = [_pad_to_aspect(image, MAX_ASPECT) for image in images]
        pixels = self.image_processor(images=list(images), **kwargs)["pixel_values"]
        return pixels.to(self.device, self.dtype)

    def encode_image(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """(B, D) normalised embeddings of (H, W, 3) uint8 images, preprocessed as in training."""
        pixels = self.preprocess(images)
        with torch.inference_mode():
            output = self.model.get_image_features(pixel_values=pixels)
        return _normalise(output.pooler_output.float()).cpu().numpy()

    def dense_features(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(B, h, w, D) patch tokens and (B, D) global token at the images' own resolution.

        CLIP: post-layernorm then visual projection of the patch tokens and of the class token.
        SigLIP (no class token, no projection): the post-layernorm patch tokens and the
        attention-pooled image embedding. Neither is normalised.
        """
        pixels = self.preprocess(images, native=True)
        height, width = (int(v) // self.patch_size for v in pixels.shape[-2:])
        with torch.inference_mode():
            output = self.vision_model(pixel_values=pixels, interpolate_pos_encoding=True)
            hidden = output.last_hidden_state
            if self.family == "clip":
                tokens = self.model.visual_projection(self.vision_model.post_layernorm(hidden))
                patches, cls = tokens[:, 1:], tokens[:, 0]
            else:  # SigLIP's last_hidden_state is already post-layernormed
                patches, cls = hidden, output.pooler_output
        patches = patches.reshape(patches.shape[0], height, width, -1)
        return patches.float().cpu().numpy(), cls.float().cpu().numpy()

    def dense_tokens(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(B, h, w, D) self-self patch tokens and (B, D) global token, in the joint space.

        One pass through the ViT at the images' own resolution; the input of the last block is
        caught on the way and fed to SegEarth-OV's replacement of that block (`_self_self`:
        q-q, k-k and v-v attention summed, applied to v, out-projection; no residual, no MLP),
        whose tokens then get the post-layernorm and the joint-space projection.

        CLIP: the projection is `visual_projection`; the global token is the ordinary
        class-token embedding (what `encode_image` gives before normalising, at this size).
        SigLIP has no class token and no projection: its joint space is the output of the
        attention-pooling head, so the global token is that pooled output, and each patch token
        goes through the head's value path (`_siglip_value_path`, as MaskCLIP does for pooled
        encoders). Neither output is normalised.
        """
        pixels = self.preprocess(images, native=True)
        height, width = (int(v) // self.patch_size for v in pixels.shape[-2:])
        vision = self.vision_model
        caught: list[torch.Tensor] = []

        def catch(_module, args, kwargs):
            caught.append(args[0] if args else kwargs["hidden_states"])

        hook = vision.encoder.layers[-1].register_forward_pre_hook(catch, with_kwargs=True)
        try:
            with torch.inference_mode():
                output = vision(pixel_values=pixels, interpolate_pos_encoding=True)
                tokens = vision.post_layernorm(_self_self(vision.encoder.layers[-1], caught[0]))
                if self.family == "clip":
                    patches = self.model.visual_projection(tokens[:, 1:])
                    global_token = self.model.visual_projection(output.pooler_output)
                else:
                    patches, global_token = _siglip_joint_space(vision, tokens, output)
        finally:
            hook.remove()
        patches = patches.reshape(patches.shape[0], height, width, -1)
        return patches.float().cpu().numpy(), global_token.float().cpu().numpy()

    def patch_tokens(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """(B, h, w, D) patch tokens in the joint space, h = H // patch_size (not normalised)."""
        return self.dense_features(images)[0]

    # ------------------------------------------------------------------ CLIP Surgery

    @property
    def supports_surgery(self) -> bool:
        """Whether `surgery_features` can run (CLIP ViTs; SigLIP has no class token)."""
        return self.family == "clip"

    def surgery_pixels(
        self, images: Sequence[np.ndarray], size: int = SURGERY_INPUT_SIZE
    ) -> torch.Tensor:
        """(B, 3, size, size) float32 pixels as CLIP Surgery's reference preprocesses a crop.

        Each RGB image is resized to size x size with PIL's bicubic filter (what torchvision's
        `Resize((size, size), BICUBIC)` does to a PIL image; no centre crop, aspect not kept),
        scaled to [0, 1] and normalised with the processor's mean and std (OpenAI's).
        """
        from PIL import Image

        images = _check_images(images, same_size=False)
        mean = np.asarray(getattr(self.image_processor, "image_mean", None) or OPENAI_MEAN,
                          np.float32)
        std = np.asarray(getattr(self.image_processor, "image_std", None) or OPENAI_STD,
                         np.float32)
        batch = []
        for image in images:
            resized = Image.fromarray(image).resize((size, size), Image.Resampling.BICUBIC)
            pixels = (np.asarray(resized, np.float32) / 255.0 - mean) / std
            batch.append(torch.from_numpy(pixels.transpose(2, 0, 1).copy()))
        return torch.stack(batch).to(self.device)

    def surgery_features(
        self,
        images: Sequence[np.ndarray],
        *,
        size: int = SURGERY_INPUT_SIZE,
        blocks: int = SURGERY_BLOCKS,
    ) -> np.ndarray:
        """(B, 1 + h*w, D) L2-normalised CLIP Surgery tokens (class token first), float32.

        The crop is preprocessed as the reference does (`surgery_pixels`: 512 x 512 bicubic),
        then `_surgery_forward` runs the ViT with CLIP Surgery's architecture surgery on the
        last `blocks` blocks, in float32 whatever the model's dtype (the reference runs fp32).
        For ViT-B/16 at 512 px, h = w = 32.
        """
        if not self.supports_surgery:
            raise InputError(
                f"CLIP Surgery needs a CLIP ViT (a class token and a visual projection); "
                f"'{self.name}' is a {self.family} model. Use a CLIP model, e.g. "
                "openai/clip-vit-base-patch16, as the reference does."
            )
        pixels = self.surgery_pixels(images, size)
        with torch.inference_mode():
            tokens = _surgery_forward(self.vision_model, self.model.visual_projection, pixels,
                                      blocks)  # fmt: skip
        return tokens.cpu().numpy()


# ---------------------------------------------------------------------- CLIP Surgery


def _surgery_forward(
    vision: torch.nn.Module, projection: torch.nn.Module, pixels: torch.Tensor, blocks: int
) -> torch.Tensor:
    """CLIP Surgery's ViT on transformers' CLIP weights, in float32: (B, 1 + N, D) unit tokens.

    What the reference (`VisionTransformer.forward` in clip_surgery_model.py) does, mapped onto
    transformers' module names (OpenAI `conv1` = `embeddings.patch_embedding`, `ln_pre` =
    `pre_layrnorm`, `resblocks` = `encoder.layers`, `attn.in_proj` = `q/k/v_proj`, `ln_1/ln_2`
    = `layer_norm1/2`, `mlp` = `mlp` with the config's activation, quick-GELU for OpenAI's
    checkpoints, `ln_post` = `post_layernorm`, `proj` = `visual_projection`):

    1. Patch embedding; the class token prepended; the position embedding's grid resized
       bilinearly (align_corners False, no antialias) to the input's grid, 14x14 -> 32x32 at
       512 px (transformers' own `interpolate_pos_encoding` is bicubic, so it is not used).
    2. `pre_layrnorm`, then the blocks before the last `blocks` as usual.
    3. The last `blocks` blocks have two paths. The original path is the ordinary block. The
       new path only accumulates, from the block where it starts, each block's value-value
       attention (softmax(v v^T * head_dim^-0.5) v, then the block's out-projection), computed
       from the same layer-normed *original* hidden state; it skips the MLP.
    4. The class token is taken from the original path; `post_layernorm` and the visual
       projection go over every token; each token is L2-normalised.
    """
    embeddings = vision.embeddings
    weight = embeddings.patch_embedding.weight.float()
    bias = embeddings.patch_embedding.bias
    x = F.conv2d(pixels.float(), weight, None if bias is None else bias.float(),
                 stride=embeddings.patch_embedding.stride)  # fmt: skip
    batch, width, grid_h, grid_w = x.shape
    x = x.flatten(2).transpose(1, 2)
    cls = embeddings.class_embedding.float().expand(batch, 1, width)
    x = torch.cat([cls, x], dim=1)
    x = x + _bilinear_positions(embeddings.position_embedding.weight.float(), (grid_h, grid_w))
    x = _layer_norm(vision.pre_layrnorm, x)
    layers = list(vision.encoder.layers)
    start = max(0, len(layers) - max(0, int(blocks)))
    for layer in layers[:start]:
        original, _ = _surgery_attention(layer, _layer_norm(layer.layer_norm1, x), both=False)
        x = x + original
        x = x + _mlp(layer.mlp, _layer_norm(layer.layer_norm2, x))
    new = x
    for layer in layers[start:]:
        original, value_value = _surgery_attention(layer, _layer_norm(layer.layer_norm1, x))
        new = new + value_value
        x = x + original
        x = x + _mlp(layer.mlp, _layer_norm(layer.layer_norm2, x))
    new = torch.cat([x[:, :1], new[:, 1:]], dim=1) if start < len(layers) else x
    tokens = _layer_norm(vision.post_layernorm, new)
    tokens = F.linear(tokens, projection.weight.float(),
                      None if projection.bias is None else projection.bias.float())  # fmt: skip
    return tokens / tokens.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def _bilinear_positions(positions: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(1 + gh*gw, C) position embeddings: the class row, and the square grid resized to `grid`
    bilinearly (align_corners False), as CLIP Surgery's reference does; unchanged at its size."""
    side = round((positions.shape[0] - 1) ** 0.5)
    if (side, side) == tuple(grid):
        return positions
    square = positions[1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
    resized = F.interpolate(square, size=grid, mode="bilinear", align_corners=False)
    resized = resized.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], -1)
    return torch.cat([positions[:1], resized], dim=0)


def _layer_norm(norm: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, norm.normalized_shape, norm.weight.float(), norm.bias.float(),
                        norm.eps)  # fmt: skip


def _linear(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    bias = module.bias
    return F.linear(x, module.weight.float(), None if bias is None else bias.float())


def _mlp(mlp: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return _linear(mlp.fc2, mlp.activation_fn(_linear(mlp.fc1, x)))


def _surgery_attention(
    layer: torch.nn.Module, x: torch.Tensor, both: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(ordinary q-k attention, value-value attention) of one block, each out-projected.

    Per head: softmax(q k^T * s) v and softmax(v v^T * s) v with s = head_dim^-0.5 (CLIP
    Surgery's `Attention` for ViTs: q = k = v on the new path, same temperature).
    """
    attention = layer.self_attn
    batch, length, _ = x.shape
    heads, dim = attention.num_heads, attention.head_dim

    def split(projection: torch.nn.Module) -> torch.Tensor:
        return _linear(projection, x).view(batch, length, heads, dim).transpose(1, 2)

    q, k, v = split(attention.q_proj), split(attention.k_proj), split(attention.v_proj)
    scale = dim**-0.5

    def attend(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        merged = F.scaled_dot_product_attention(a, b, v, scale=scale)  # softmax(a b^T s) v
        return _linear(attention.out_proj, merged.transpose(1, 2).reshape(batch, length, -1))

    return attend(q, k), (attend(v, v) if both else None)


# ---------------------------------------------------------------------- dense tokens


def _self_self(layer: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """SegEarth-OV's last block: sum of q-q, k-k, v-v softmax attentions applied to v.

    Built from the block's own layer_norm1 and projections (per head, scale head_dim^-0.5);
    the residual and the MLP are left out on purpose: they carry the global, image-level
    signal that makes plain CLIP patch tokens all look like the class token.
    """
    attention = layer.self_attn
    x = layer.layer_norm1(hidden)
    batch, length, _ = x.shape

    def heads(projection: torch.nn.Module) -> torch.Tensor:
        return projection(x).view(batch, length, -1, attention.head_dim).transpose(1, 2)

    q, k, v = heads(attention.q_proj), heads(attention.k_proj), heads(attention.v_proj)
    weights = sum(
        torch.softmax(t @ t.transpose(-1, -2) * attention.scale, dim=-1, dtype=torch.float32)
        for t in (q, k, v)
    )
    merged = (weights.to(v.dtype) @ v).transpose(1, 2).reshape(batch, length, -1)
    return attention.out_proj(merged)


def _siglip_joint_space(vision: torch.nn.Module, tokens: torch.Tensor,
                        output: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """SigLIP's (patches, global token) in the pooled-head space.

    Without a head (vision_use_head=False) the post-layernorm tokens and their mean stand in.
    """
    if not getattr(vision, "use_head", False) or output.pooler_output is None:
        return tokens, output.last_hidden_state.mean(dim=1)
    return _siglip_value_path(vision.head, tokens), output.pooler_output


def _siglip_value_path(head: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Each token through the pooling head as if the probe attended to it alone.

    The probe's output is a convex mix of out_proj(W_v t + b_v) over tokens, so this is the
    per-token term of that mix, followed by the head's own layernorm-MLP residual.
    """
    pooling = head.attention
    dim = pooling.embed_dim
    weight = (pooling.in_proj_weight[2 * dim:] if pooling.in_proj_weight is not None
              else pooling.v_proj_weight)
    bias = pooling.in_proj_bias[2 * dim:] if pooling.in_proj_bias is not None else None
    values = pooling.out_proj(torch.nn.functional.linear(tokens, weight, bias))
    return values + head.mlp(head.layernorm(values))


# ---------------------------------------------------------------------- helpers


def _pad_to_aspect(image: np.ndarray, max_aspect: float) -> np.ndarray:
    """The image padded with black at the bottom/right so its long side is at most
    `max_aspect` times its short side (the image itself when it already is)."""
    height, width = image.shape[:2]
    need = -(-max(height, width) // max_aspect)
    extra = (max(0, int(need) - height), max(0, int(need) - width))
    if not any(extra):
        return image
    return np.pad(image, ((0, extra[0]), (0, extra[1]), (0, 0)))


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    bad = [t for t in texts if not isinstance(t, str) or not t.strip()]
    if bad:
        raise InputError(
            f"Text prompts must be non-empty strings; got {bad[:3]!r}. Remove empty class "
            "names or synonyms (e.g. a trailing comma in 'building,roof,')."
        )
    return [t.strip() for t in texts]


def _check_images(images: Sequence[np.ndarray], *, same_size: bool) -> list[np.ndarray]:
    if isinstance(images, np.ndarray) and images.ndim == 3:
        images = [images]
    images = list(images)
    if not images:
        raise InputError("No images were given to the image-text model.")
    for image in images:
        if (not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3
                or image.dtype != np.uint8):
            shape = getattr(image, "shape", type(image).__name__)
            dtype = getattr(image, "dtype", "")
            raise InputError(
                f"The image-text model needs (H, W, 3) uint8 RGB images, got {shape} {dtype}. "
                "Stretch the imagery to 0-255 and select three bands first."
            )
    if same_size and len({image.shape for image in images}) > 1:
        raise InputError(
            "patch_tokens needs images of one size per call (they are batched at their own "
            f"resolution); got {sorted({image.shape[:2] for image in images})}."
        )
    return images
