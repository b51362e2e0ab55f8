"""TATE, the latent knowledge memory and the query path against the equations, by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from terramask.models.unigeoseg.modules import (
    LatentKnowledgeMemory,
    QueryPerceiver,
    SparseConvProjector,
    TaskTextEnhancement,
    attention_pool,
)

E = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # three tokens, d = 2


def _softmax(values):
    exps = [math.exp(v) for v in values]
    return [e / sum(exps) for e in exps]


def _tate(**weights) -> TaskTextEnhancement:
    tate = TaskTextEnhancement(hidden=2, reasoning_queries=2, dropout=0.1).eval()
    with torch.no_grad():
        for name, value in weights.items():
            module, attr = name.rsplit(".", 1) if "." in name else (None, name)
            target = getattr(tate, module) if module else tate
            getattr(target, attr).copy_(torch.tensor(value))
    return tate


def test_referring_weights_each_token_by_the_shared_query():
    q = torch.tensor([[1.0, 2.0]])
    weights = _softmax([1 / math.sqrt(2), 2 / math.sqrt(2), 3 / math.sqrt(2)])
    expected = [[weights[0], 0.0], [0.0, weights[1]], [weights[2], weights[2]]]
    got = _tate()(E, "referring", q)
    np.testing.assert_allclose(got.detach().numpy(), expected, rtol=1e-6)


def test_reasoning_pools_with_h_queries_and_a_global_linear_path_to_one_vector():
    tate = _tate(**{
        "reason_queries": [[1.0, 0.0], [0.0, 2.0]],
        "reason_proj.weight": [[2.0, 0.0], [0.0, 1.0]], "reason_proj.bias": [0.0, 1.0],
        "reason_fuse.weight": [[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, -1.0]],
        "reason_fuse.bias": [0.5, 0.0],
        "reason_norm.weight": [1.0, 1.0], "reason_norm.bias": [0.0, 0.0],
    })  # fmt: skip
    rows = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]
    pooled = [0.0, 0.0]
    for query in ([1.0, 0.0], [0.0, 2.0]):
        w = _softmax([(query[0] * r[0] + query[1] * r[1]) / math.sqrt(2) for r in rows])
        for k in range(2):
            pooled[k] += sum(w[t] * rows[t][k] for t in range(3)) / 2
    functional = [sum(2 * r[0] for r in rows) / 3, sum(r[1] + 1 for r in rows) / 3]
    fused = [pooled[0] + functional[0] + 0.5, pooled[1] - functional[1]]
    mean = sum(fused) / 2
    var = sum((f - mean) ** 2 for f in fused) / 2
    normed = [(f - mean) / math.sqrt(var + 1e-5) for f in fused]
    got = tate(E, "reasoning", torch.zeros(1, 2))
    np.testing.assert_allclose(got.detach().numpy(), [normed] * 3, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("coordinates", [[[0.2, 0.4], [0.6, 0.8]], [[0.1, 0.2, 0.5, 0.7]], None])
def test_interactive_fuses_one_projected_row_per_coordinate_set(coordinates):
    wc = [[1.0, 0.0, 2.0, 0.0], [0.0, 1.0, 0.0, -1.0]]
    bc = [0.1, -0.2]
    wf = [[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 2.0]]
    bf = [0.0, 0.3]
    tate = _tate(**{"coord_proj.weight": wc, "coord_proj.bias": bc,
                    "coord_fuse.weight": wf, "coord_fuse.bias": bf})  # fmt: skip
    rows = [[*c, 0.0, 0.0] if len(c) == 2 else c for c in (coordinates or [[0.0] * 4])]
    expected = []
    for t, token in enumerate(E.tolist()):
        if t < len(rows):
            c = [sum(wc[i][k] * rows[t][k] for k in range(4)) + bc[i] for i in range(2)]
        else:
            c = [0.0, 0.0]
        joined = token + c
        expected.append([sum(wf[i][k] * joined[k] for k in range(4)) + bf[i] for i in range(2)])
    given = None if coordinates is None else torch.tensor(coordinates)
    got = tate(E, "interactive", torch.zeros(1, 2), given)
    np.testing.assert_allclose(got.detach().numpy(), expected, rtol=1e-6, atol=1e-7)


def test_the_memory_recalls_slots_by_similarity_and_mixes_them_in_by_lambda():
    memory = LatentKnowledgeMemory(slots=2, hidden=2)
    with torch.no_grad():
        memory.slots.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
    p = torch.tensor([0.5, 1.0])
    w = _softmax([0.5, 2.0])  # M_n · p, no scaling
    z = [w[0] * 1.0, w[1] * 2.0]
    expected = [0.8 * 0.5 + 0.2 * z[0], 0.8 * 1.0 + 0.2 * z[1]]
    np.testing.assert_allclose(memory(p, 0.2).detach().numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(memory(p, 0.0).detach().numpy(), p.numpy())


def test_attention_pooling_is_softmax_of_scaled_scores():
    q = torch.tensor([1.0, -1.0])
    w = _softmax([1 / math.sqrt(2), -1 / math.sqrt(2), 0.0])
    expected = [w[0] + w[2], w[1] + w[2]]
    np.testing.assert_allclose(attention_pool(q, E).numpy(), expected, rtol=1e-6)


def test_the_perceiver_answers_for_its_first_latent_alone():
    torch.manual_seed(0)
    perceiver = QueryPerceiver(dim=8, depth=1, heads=2, head_dim=4, ff_mult=1).eval()
    media = torch.randn(1, 5, 8)
    latents = torch.randn(1, 3, 8)
    changed = latents.clone()
    changed[:, 1:] = torch.randn(1, 2, 8)
    a, b = perceiver(latents, media), perceiver(changed, media)
    assert a.shape == (1, 8)
    torch.testing.assert_close(a, b)  # later latents never reach the first (released code)


def test_the_projector_gives_a_quarter_of_the_last_stage_as_tokens():
    projector = SparseConvProjector(16, 8, grid=4)
    assert projector(torch.randn(2, 16, 4, 4)).shape == (2, 4, 8)
    assert SparseConvProjector(1024, 2048, grid=16).norm1.weight.shape == (2048, 16, 16)


def test_the_memory_weight_follows_the_task(tiny_unigeoseg):
    model = tiny_unigeoseg.model
    states = torch.randn(4, model.config.hidden_size)
    res5 = torch.randn(model.config.vision_channels[-1], 4, 4)
    with torch.no_grad():
        before = {t: model.instruction_query(states, t, res5) for t in ("interactive", "referring")}
        saved = model.memory.slots.clone()
        model.memory.slots.mul_(-3.0)
        try:
            after = {t: model.instruction_query(states, t, res5) for t in before}
        finally:
            model.memory.slots.copy_(saved)
    torch.testing.assert_close(before["interactive"], after["interactive"])  # λ = 0
    assert not torch.allclose(before["referring"], after["referring"])  # λ = 0.2
