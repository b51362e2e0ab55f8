"""SegEarth-OV3 fusion in ConceptEngine, checked against hand-made concept results."""

from __future__ import annotations

import numpy as np
import pytest

from terramask.errors import InputError
from terramask.methods.concepts import ConceptEngine, fuse_concept, sigmoid
from terramask.methods.vocabulary import ClassVocabulary
from terramask.protocols import ConceptResult, ConceptSegmenter, SemanticEngine

H, W = 3, 4
INF = np.inf  # sigmoid(+inf) = 1, sigmoid(-inf) = 0, sigmoid(0) = 0.5: exact expectations


def result(instances=(), scores=(), semantic=None, presence=1.0) -> ConceptResult:
    logits = np.asarray(instances, np.float32).reshape(-1, H, W)
    return ConceptResult(
        instance_logits=logits,
        instance_scores=np.asarray(scores, np.float32),
        semantic_logits=np.full((H, W), -INF, np.float32) if semantic is None
        else np.asarray(semantic, np.float32),
        presence=float(presence),
    )


def box(y0, y1, x0, x1, inside=INF, outside=-INF) -> np.ndarray:
    """Mask logits that are `inside` in rows y0:y1, columns x0:x1 and `outside` elsewhere."""
    logits = np.full((H, W), outside, np.float32)
    logits[y0:y1, x0:x1] = inside
    return logits


class PhraseDouble:
    """A concept segmenter that answers each phrase with a fixed result and records calls."""

    name = "phrase-double"

    def __init__(self, answers: dict[str, ConceptResult]):
        self.answers = answers
        self.calls: list[list[str]] = []

    def segment_concepts(self, image, phrases):
        self.calls.append(list(phrases))
        return [self.answers[p] for p in phrases]


IMAGE = np.zeros((H, W, 3), np.uint8)


def probabilities(answers, specs, **kw) -> np.ndarray:
    engine = ConceptEngine(PhraseDouble(answers), **kw)
    return engine.probabilities(IMAGE, ClassVocabulary.parse(specs))


def test_engine_and_double_satisfy_the_protocols():
    double = PhraseDouble({})
    assert isinstance(double, ConceptSegmenter)
    engine = ConceptEngine(double)
    assert isinstance(engine, SemanticEngine)
    assert engine.name == "concepts:phrase-double"


def test_sigmoid_is_exact_at_the_ends_and_quiet():
    with np.errstate(over="raise", divide="raise", invalid="raise"):  # underflow is benign
        out = sigmoid(np.array([-INF, -1000.0, 0.0, 1000.0, INF], np.float32))
    np.testing.assert_array_equal(out, [0.0, 0.0, 0.5, 1.0, 1.0])
    assert out.dtype == np.float32


def test_instances_take_the_max_of_mask_times_score_then_max_with_semantic():
    # Two overlapping instances (scores 0.8, 0.6) and a semantic map that is 0.5 in column 3.
    first = box(0, 2, 0, 2)  # rows 0-1, cols 0-1
    second = box(1, 3, 1, 3)  # rows 1-2, cols 1-2
    second[2, 0] = 0.0  # a half-sure pixel: 0.5 * 0.6 = 0.3
    semantic = box(0, 3, 3, 4, inside=0.0)  # column 3 at 0.5, elsewhere 0
    answers = {"building": result([first, second], [0.8, 0.6], semantic)}
    got = probabilities(answers, ["building"])
    expected = np.array([
        [0.8, 0.8, 0.0, 0.5],
        [0.8, 0.8, 0.6, 0.5],
        [0.3, 0.6, 0.6, 0.5],
    ], np.float32)
    assert got.shape == (1, H, W) and got.dtype == np.float32
    np.testing.assert_array_equal(got[0], expected)


def test_no_instance_leaves_the_semantic_map():
    semantic = box(0, 1, 0, 4, inside=INF, outside=0.0)  # top row 1, elsewhere 0.5
    got = probabilities({"water": result(semantic=semantic)}, ["water"])
    expected = np.full((H, W), 0.5, np.float32)
    expected[0] = 1.0
    np.testing.assert_array_equal(got[0], expected)


def test_presence_scales_the_fused_map():
    semantic = box(0, 1, 0, 4, inside=INF, outside=0.0)
    instance = box(2, 3, 0, 1)
    answers = {"road": result([instance], [0.9], semantic, presence=0.25)}
    got = probabilities(answers, ["road"])
    expected = np.full((H, W), 0.5, np.float32)
    expected[0] = 1.0
    expected[2, 0] = 0.9
    np.testing.assert_array_equal(got[0], expected * np.float32(0.25))
    absent = {"road": result([instance], [0.9], semantic, presence=0.0)}
    assert not probabilities(absent, ["road"]).any()


def test_a_class_is_the_max_over_its_synonyms_and_phrases_are_asked_once():
    answers = {
        "building": result([box(0, 1, 0, 1)], [0.7]),
        "roof": result([box(0, 1, 0, 2)], [0.4], presence=0.5),  # 0.4 * 0.5 = 0.2
        "house": result(semantic=box(2, 3, 0, 4, inside=0.0)),  # bottom row 0.5
        "tree": result([box(1, 2, 0, 4)], [1.0]),
    }
    double = PhraseDouble(answers)
    engine = ConceptEngine(double)
    vocabulary = ClassVocabulary((("building", "roof", "house"), ("tree",), ("roof",)))
    got = engine.probabilities(IMAGE, vocabulary)
    assert double.calls == [["building", "roof", "house", "tree"]]  # "roof" once, one call
    building = np.zeros((H, W), np.float32)
    building[0, 0], building[0, 1], building[2] = 0.7, 0.2, 0.5
    roof = np.zeros((H, W), np.float32)
    roof[0, :2] = 0.2
    tree = np.zeros((H, W), np.float32)
    tree[1] = 1.0
    np.testing.assert_array_equal(got, np.stack([building, tree, roof]))


def test_instance_threshold_drops_weak_instances():
    answers = {"car": result([box(0, 1, 0, 1), box(2, 3, 3, 4)], [0.9, 0.3])}
    kept = probabilities(answers, ["car"])[0]
    assert kept[0, 0] == pytest.approx(0.9) and kept[2, 3] == pytest.approx(0.3)
    strict = probabilities(answers, ["car"], instance_threshold=0.5)[0]
    assert strict[0, 0] == pytest.approx(0.9) and strict[2, 3] == 0.0


def test_fuse_concept_with_no_instances_array():
    empty = result(semantic=np.zeros((H, W), np.float32), presence=0.5)
    assert empty.instance_logits.shape == (0, H, W)
    np.testing.assert_array_equal(fuse_concept(empty), np.full((H, W), 0.25, np.float32))


def test_a_segmenter_that_drops_phrases_or_resizes_is_refused():
    class Short(PhraseDouble):
        def segment_concepts(self, image, phrases):
            return super().segment_concepts(image, phrases)[:-1]

    engine = ConceptEngine(Short({"a": result(), "b": result()}))
    with pytest.raises(InputError, match="one result per phrase"):
        engine.probabilities(IMAGE, ClassVocabulary.parse(["a", "b"]))

    small = ConceptResult(np.zeros((0, 2, 2), np.float32), np.zeros(0, np.float32),
                          np.zeros((2, 2), np.float32), 1.0)
    with pytest.raises(InputError, match="image size"):
        ConceptEngine(PhraseDouble({"a": small})).probabilities(
            IMAGE, ClassVocabulary.parse(["a"]))
