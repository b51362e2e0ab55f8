"""UniGeoSeg's own modules, written from the paper's equations and the released code's shapes.

- `SparseConvProjector`: the last Swin stage to language tokens (the released `SparseConv_1`).
- `TaskTextEnhancement` (TATE): interactive coordinates fused into the text embeddings,
  referring single-query weighting, reasoning four-query pooling plus a global linear path.
- `LatentKnowledgeMemory` (LKM): N slots recalled by the pooled instruction, mixed in by λ.
- `MaskQuery`: the pooled instruction (and its tokens) attending to the last Swin stage, to
  the one query the mask decoder refines.
- `PixelDecoder` and `MaskDecoder`: Mask2Former's, built around transformers' deformable
  encoder and masked-attention decoder; only the parts the released code changed are ours
  (see docs/unigeoseg.md).

Where the released code departs from the paper, these follow the code, so that its weights
load and compute what they were trained to (docs/unigeoseg.md lists each departure).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class SparseConvProjector(nn.Module):
    """Last Swin stage (B, C5, g, g) to (B, (g/2)^2, d) language tokens.

    3x3 conv to d + layer norm over (d, g, g), stride-2 3x3 conv + layer norm over
    (d, g/2, g/2), 1x1 conv; no activation in between (the released `Compression_Connector`).
    """

    def __init__(self, in_channels: int, out_channels: int, grid: int):
        super().__init__()
        half = (grid + 1) // 2
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.norm1 = nn.LayerNorm([out_channels, grid, grid])
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 2, 1)
        self.norm2 = nn.LayerNorm([out_channels, half, half])
        self.fc = nn.Conv2d(out_channels, out_channels, 1)

    def forward(self, res5: torch.Tensor) -> torch.Tensor:
        x = self.norm1(self.conv1(res5))
        x = self.norm2(self.conv2(x))
        x = self.fc(x)
        return x.flatten(2).transpose(1, 2)


def attention_pool(query: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
    """softmax(q Hᵀ / √d) H: (d,) from a (d,) or (1, d) query over (L, d) states."""
    q = query.reshape(-1).to(states.dtype)
    weights = torch.softmax(states @ q / math.sqrt(states.shape[-1]), dim=-1)
    return weights @ states


class TaskTextEnhancement(nn.Module):
    """TATE (paper Eqs. 1-5, in the released code's form) on the text after the image.

    - interactive: Ẽ = W_f [E ; C], C holding one row W_c c_i per coordinate set (a box
      [x0, y0, x1, y1] or a point [x, y, 0, 0]) in the first rows and zeros below; without
      coordinates one zero row;
    - referring: Ẽ = E ⊙ softmax(q Eᵀ / √d): every token weighted, the length kept (q is
      shared with the memory's pooling, `UniGeoSegModel.ref_query`);
    - reasoning: one vector LayerNorm(Dropout(W_F [mean_i softmax(q_i Eᵀ/√d) E ; mean_t W_G E_t]))
      with h query vectors q_i, written at every position.

    The released code computes all three and keeps one with a one-hot task code; computing
    only the kept one gives the same numbers.
    """

    def __init__(self, hidden: int, reasoning_queries: int = 4, dropout: float = 0.1):
        super().__init__()
        self.reason_queries = nn.Parameter(torch.randn(reasoning_queries, hidden) * 0.01)
        self.reason_proj = nn.Linear(hidden, hidden)
        self.reason_fuse = nn.Linear(2 * hidden, hidden)
        self.reason_dropout = nn.Dropout(dropout)
        self.reason_norm = nn.LayerNorm(hidden)
        self.coord_proj = nn.Linear(4, hidden)
        self.coord_fuse = nn.Linear(2 * hidden, hidden)

    def forward(
        self,
        text: torch.Tensor,
        task: str,
        ref_query: torch.Tensor,
        coordinates: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if task == "referring":
            return self.referring(text, ref_query)
        if task == "reasoning":
            return self.reasoning(text)
        if task == "interactive":
            return self.interactive(text, coordinates)
        raise ValueError(f"unknown UniGeoSeg task {task!r}")

    @staticmethod
    def referring(text: torch.Tensor, ref_query: torch.Tensor) -> torch.Tensor:
        q = ref_query.reshape(-1).to(text.dtype)
        weights = torch.softmax(text @ q / math.sqrt(text.shape[-1]), dim=-1)
        return text * weights[:, None]

    def reasoning(self, text: torch.Tensor) -> torch.Tensor:
        queries = self.reason_queries.to(text.dtype)
        weights = torch.softmax(queries @ text.T / math.sqrt(text.shape[-1]), dim=-1)
        pooled = (weights @ text).mean(dim=0)
        functional = self.reason_proj(text).mean(dim=0)
        fused = self.reason_fuse(torch.cat([pooled, functional], dim=-1))
        out = self.reason_norm(self.reason_dropout(fused))
        return out.unsqueeze(0).expand(text.shape[0], -1)

    def interactive(self, text: torch.Tensor, coordinates: torch.Tensor | None) -> torch.Tensor:
        rows = coordinate_rows_tensor(coordinates, text)
        embedded = self.coord_proj(rows).to(text.dtype)
        n = min(embedded.shape[0], text.shape[0])
        padding = text.new_zeros(text.shape[0] - n, text.shape[1])
        spread = torch.cat([embedded[:n], padding], dim=0)
        return self.coord_fuse(torch.cat([text, spread], dim=-1))


def coordinate_rows_tensor(coordinates, like: torch.Tensor) -> torch.Tensor:
    """(n, 4) rows on `like`'s device and dtype: points padded with two zeros; one zero row
    when there are none (the released code's default)."""
    if coordinates is None:
        return like.new_zeros(1, 4)
    rows = torch.as_tensor(coordinates).to(device=like.device, dtype=like.dtype)
    if rows.numel() == 0:
        return like.new_zeros(1, 4)
    rows = rows.reshape(-1, rows.shape[-1])
    if rows.shape[1] == 2:
        rows = torch.cat([rows, rows.new_zeros(rows.shape[0], 2)], dim=1)
    return rows


class LatentKnowledgeMemory(nn.Module):
    """LKM in the released code's form: the pooled instruction p recalls Z = Σ_n w_n M_n with
    w = softmax_n(M_n · p) (no scaling), and p̃ = (1 - λ) p + λ Z.

    The paper mixes every hidden state (Eqs. 6-7); the code mixes the pooled one only.
    """

    def __init__(self, slots: int, hidden: int):
        super().__init__()
        self.slots = nn.Parameter(torch.randn(slots, hidden) * 0.01)

    def recall(self, pooled: torch.Tensor) -> torch.Tensor:
        """Z = Σ_n softmax_n(M_n · p) M_n."""
        slots = self.slots.to(pooled.dtype)
        weights = torch.softmax(slots @ pooled, dim=0)
        return (weights[:, None] * slots).sum(dim=0)

    def forward(self, pooled: torch.Tensor, weight: float) -> torch.Tensor:
        return (1 - weight) * pooled + weight * self.recall(pooled)


class PerceiverAttention(nn.Module):
    """Latents attend to [media; first latent] (a Flamingo-style perceiver block)."""

    def __init__(self, dim: int, heads: int = 8, head_dim: int = 64):
        super().__init__()
        inner = heads * head_dim
        self.heads, self.scale = heads, head_dim**-0.5
        self.norm_media = nn.LayerNorm(dim)
        self.norm_latents = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, media: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        media = self.norm_media(media)
        latents = self.norm_latents(latents)
        q = self.to_q(latents)
        k, v = self.to_kv(torch.cat([media, latents[:, :1]], dim=1)).chunk(2, dim=-1)
        batch = latents.shape[0]

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, x.shape[1], self.heads, -1).transpose(1, 2)

        q, k, v = heads(q) * self.scale, heads(k), heads(v)
        attn = torch.softmax(q @ k.transpose(-1, -2), dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(batch, latents.shape[1], -1)
        return self.to_out(out)


class PerceiverLayer(nn.Module):
    def __init__(self, dim: int, heads: int, head_dim: int, ff_mult: int):
        super().__init__()
        inner = int(dim * ff_mult)
        self.attn = PerceiverAttention(dim, heads, head_dim)
        self.ff = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, inner, bias=False), nn.GELU(),
            nn.Linear(inner, dim, bias=False),
        )  # fmt: skip


class QueryPerceiver(nn.Module):
    """Residual perceiver layers; returns the first latent, normalised (the released
    `D_Projector`)."""

    def __init__(self, dim: int, depth: int = 1, heads: int = 8, head_dim: int = 64,
                 ff_mult: int = 1):  # fmt: skip
        super().__init__()
        self.layers = nn.ModuleList(
            [PerceiverLayer(dim, heads, head_dim, ff_mult) for _ in range(depth)]
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, latents: torch.Tensor, media: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            latents = layer.attn(media, latents) + latents
            latents = layer.ff(latents) + latents
        return self.norm(latents)[:, 0]


class MaskQuery(nn.Module):
    """The mask decoder's query from the remembered pooled instruction p̃, the instruction's
    hidden states H and the last Swin stage:

        W_o [ W_p p̃ ; Perceiver(W_t [p̃; H] over W_v res5)_0 ]
    """

    def __init__(
        self,
        hidden: int,
        vision_channels: int,
        query_dim: int,
        mask_hidden: int,
        *,
        depth: int = 1,
        heads: int = 8,
        head_dim: int = 64,
        ff_mult: int = 1,
    ):
        super().__init__()
        self.pooled_proj = nn.Linear(hidden, query_dim)
        self.text_proj = nn.Linear(hidden, query_dim)
        self.vision_proj = nn.Linear(vision_channels, query_dim)
        self.perceiver = QueryPerceiver(query_dim, depth, heads, head_dim, ff_mult)
        self.out = nn.Linear(2 * query_dim, mask_hidden)

    def forward(
        self, pooled: torch.Tensor, states: torch.Tensor, res5: torch.Tensor
    ) -> torch.Tensor:
        latents = self.text_proj(torch.cat([pooled[None], states], dim=0))
        media = self.vision_proj(res5.flatten(1).T)
        attended = self.perceiver(latents[None], media[None])[0]
        return self.out(torch.cat([self.pooled_proj(pooled), attended], dim=-1))


def _mask2former_config(**kwargs):
    from transformers import Mask2FormerConfig

    return Mask2FormerConfig(dropout=0.0, activation_function="relu", pre_norm=False, **kwargs)


class PixelDecoder(nn.Module):
    """Mask2Former's multi-scale deformable pixel decoder as the released code builds it.

    transformers' deformable-attention encoder and sine positions; the FPN level over res2 is
    ours because the released one differs from transformers' `Mask2FormerPixelDecoder`: its
    1x1 lateral convolution has a bias and a ReLU after its group norm, and its 3x3 output
    convolution has a bias.

    Returns the mask features (1/4 of the canvas) and three levels (res5, res4, res3 sizes)
    for the mask decoder.
    """

    def __init__(self, channels: tuple[int, ...], hidden: int, mask_dim: int, *,
                 layers: int = 6, ffn: int = 1024, heads: int = 8):  # fmt: skip
        super().__init__()
        from transformers.models.mask2former.modeling_mask2former import (
            Mask2FormerPixelDecoderEncoderOnly,
            Mask2FormerSinePositionEmbedding,
        )

        config = _mask2former_config(
            feature_size=hidden, mask_feature_size=mask_dim, encoder_layers=layers,
            encoder_feedforward_dim=ffn, num_attention_heads=heads,
        )  # fmt: skip
        self.position = Mask2FormerSinePositionEmbedding(hidden // 2, normalize=True)
        self.input_projections = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, hidden, kernel_size=1), nn.GroupNorm(32, hidden))
            for c in channels[1:][::-1]
        )
        self.level_embed = nn.Parameter(torch.randn(3, hidden))
        self.encoder = Mask2FormerPixelDecoderEncoderOnly(config)
        self.lateral = nn.Sequential(
            nn.Conv2d(channels[0], hidden, kernel_size=1), nn.GroupNorm(32, hidden), nn.ReLU()
        )
        self.output = nn.Sequential(
            nn.Conv2d(hidden, hidden, kernel_size=3, padding=1), nn.GroupNorm(32, hidden),
            nn.ReLU(),
        )  # fmt: skip
        self.mask_projection = nn.Conv2d(hidden, mask_dim, kernel_size=1)

    def forward(self, levels: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        sources, positions = [], []
        for index, x in enumerate(levels[::-1][:3]):
            sources.append(self.input_projections[index](x))
            pos = self.position(x.shape, x.device, torch.float32).to(x.dtype)
            positions.append(pos.flatten(2).transpose(1, 2) + self.level_embed[index][None, None])
        shapes = [(int(s.shape[2]), int(s.shape[3])) for s in sources]
        flat = torch.cat([s.flatten(2).transpose(1, 2) for s in sources], dim=1)
        batch = flat.shape[0]
        starts = [0]
        for h, w in shapes[:-1]:
            starts.append(starts[-1] + h * w)
        encoded = self.encoder(
            inputs_embeds=flat,
            attention_mask=torch.zeros(flat.shape[:2], dtype=torch.bool, device=flat.device),
            position_embeddings=torch.cat(positions, dim=1),
            spatial_shapes_list=shapes,
            level_start_index=torch.tensor(starts, device=flat.device),
            valid_ratios=flat.new_ones(batch, len(shapes), 2),
            return_dict=True,
        ).last_hidden_state
        outs = [
            chunk.transpose(1, 2).reshape(batch, -1, h, w)
            for chunk, (h, w) in zip(
                encoded.split([h * w for h, w in shapes], dim=1), shapes, strict=True
            )
        ]
        lateral = self.lateral(levels[0])
        upsampled = F.interpolate(
            outs[-1].float(), size=lateral.shape[-2:], mode="bilinear", align_corners=False
        ).to(lateral.dtype)
        outs.append(self.output(lateral + upsampled))
        return self.mask_projection(outs[-1]), outs[:3]


class MaskDecoder(nn.Module):
    """Mask2Former's masked-attention decoder refining the one query UniGeoSeg gives it.

    transformers' `Mask2FormerMaskedAttentionDecoder` (cross-attention, self-attention, FFN,
    post-norm; each layer's attention masked by the previous prediction), fed as the
    released code feeds its decoder: the query alone, zero query positions, sine positions
    and level embeddings on the pixel decoder's three levels.

    Returns every prediction (the query's own, then one per layer) as (B, 1, h, w) logits at
    the mask features' size; the last is the answer.
    """

    def __init__(self, hidden: int, heads: int, ffn: int, layers: int, mask_dim: int):
        super().__init__()
        from transformers.models.mask2former.modeling_mask2former import (
            Mask2FormerMaskedAttentionDecoder,
            Mask2FormerSinePositionEmbedding,
        )

        config = _mask2former_config(
            hidden_dim=hidden, num_attention_heads=heads, dim_feedforward=ffn,
            decoder_layers=layers, mask_feature_size=mask_dim,
        )  # fmt: skip
        self.decoder = Mask2FormerMaskedAttentionDecoder(config)
        self.level_embed = nn.Embedding(3, hidden)
        self.position = Mask2FormerSinePositionEmbedding(hidden // 2, normalize=True)

    def forward(
        self, query: torch.Tensor, levels: list[torch.Tensor], mask_features: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        sources, positions, sizes = [], [], []
        for index, x in enumerate(levels):
            sizes.append(x.shape[-2:])
            pos = self.position(x.shape, x.device, torch.float32).to(x.dtype)
            positions.append(pos.flatten(2).permute(2, 0, 1))
            level = self.level_embed.weight[index].to(x.dtype)
            sources.append((x.flatten(2) + level[None, :, None]).permute(2, 0, 1))
        queries = query[None]
        out = self.decoder(
            inputs_embeds=queries,
            multi_stage_positional_embeddings=positions,
            pixel_embeddings=mask_features,
            encoder_hidden_states=sources,
            query_position_embeddings=torch.zeros_like(queries),
            feature_size_list=sizes,
            return_dict=True,
        )
        return tuple(out.masks_queries_logits)
