"""What an OVSS evaluation prints beside ours: the data set's own published numbers in their
metric, averages only under their published labels, and the run's configuration (AMG mode,
pruning, upsampler) with "not the published configuration" where it differs."""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from terramask.eval.ovss import evaluate_ovss, published_configuration
from terramask.eval.presets import load_preset
from terramask.methods.dense_clip import DenseClip
from terramask.methods.ovss import OvssPredictor
from terramask.options import REFERENCE_GENERATION, GenerationSettings
from tests.helpers.eval_engines import OracleEngine, UniformEngine, answers_for
from tests.helpers.eval_layouts import read_pairs, write_preset_layout

REFERENCE = REFERENCE_GENERATION


class ImageTextStub:
    name = "clip-stub"
    patch_size = 16


class SegmenterStub:
    name = "sam-stub"


class UpsamplerStub:
    name = "simfeatup:xclip_jbu_one_million_aid.ckpt"


class Described:
    """A predictor that answers like the oracle but describes itself as `predictor` does."""

    def __init__(self, oracle, predictor):
        self.oracle, self.configuration, self.name = oracle, predictor.configuration, "described"
        self.threshold = None

    def predict(self, image, vocabulary):
        probabilities = self.oracle.probabilities(image, vocabulary)
        return probabilities.argmax(0), probabilities.max(0)


def run(mini_layout, tmp_path, predictor, method, name="loveda"):
    root = mini_layout(name)
    preset = load_preset(name)
    oracle = OracleEngine(answers_for(read_pairs(root), reduce=preset.reduce_zero_label))
    engine = Described(oracle, predictor)
    out = tmp_path / method.replace("+", "_")
    result = evaluate_ovss(preset, root, engine=engine, output_dir=out, method=method)
    return result, (out / "report.md").read_text(), json.loads((out / "report.json").read_text())


def test_sam_clip_with_fast_generation_is_not_the_published_configuration(mini_layout, tmp_path):
    predictor = OvssPredictor(DenseClip(ImageTextStub()), segmenter=SegmenterStub(),
                              generation=GenerationSettings())  # fmt: skip
    _, markdown, saved = run(mini_layout, tmp_path, predictor, "sam+clip")
    configuration = saved["configuration"]
    assert configuration["generation"]["amg"] == "fast"
    assert configuration["generation"]["prune"] is True
    assert configuration["dense"]["upsampler"] == "bilinear"
    published = configuration["published_configuration"]
    assert published["matches"] is False
    assert published["differences"] == [
        "mask generation amg 'fast' (reference 'reference')",
        "mask generation min_region_area 100 (reference 0)",
        "mask generation prune True (reference False)",
    ]
    assert "**Not the published configuration** (SAM mask voting (Sosa et al.))" in markdown
    assert "- Pruning: on (coarse to fine)." in markdown
    assert "fast (TerraMask's variant" in markdown
    assert "Dense CLIP upsampling: bilinear (logits)." in markdown


def test_sam_clip_with_the_reference_generation_is_the_published_one(mini_layout, tmp_path):
    predictor = OvssPredictor(DenseClip(ImageTextStub()), segmenter=SegmenterStub(),
                              generation=REFERENCE)  # fmt: skip
    result, markdown, _ = run(mini_layout, tmp_path, predictor, "sam+clip")
    assert result["configuration"]["published_configuration"]["matches"] is True
    assert "- The published configuration (SAM mask voting (Sosa et al.))." in markdown
    assert "reference (segment-anything's automatic mask generator)" in markdown
    assert "- Pruning: off." in markdown
    assert "publishes no AMG settings" in markdown
    changed = dataclasses.replace(REFERENCE_GENERATION, grid=20, prune=True)
    described = OvssPredictor(DenseClip(ImageTextStub()), segmenter=SegmenterStub(),
                              generation=changed).configuration  # fmt: skip
    assert published_configuration("sam+clip", described)["differences"] == [
        "mask generation grid 20 (reference 29)", "mask generation prune True (reference False)"
    ]  # fmt: skip


def test_clip_without_simfeatup_is_not_segearth_ovs_configuration(mini_layout, tmp_path):
    plain = OvssPredictor(DenseClip(ImageTextStub()))
    _, markdown, saved = run(mini_layout, tmp_path, plain, "clip")
    published = saved["configuration"]["published_configuration"]
    assert published["matches"] is False and published["paper"] == "SegEarth-OV (CVPR 2025)"
    assert published["differences"][0].startswith("bilinear upsampling of the logits")
    assert "generation" not in saved["configuration"]  # no SAM in this engine
    assert "Pruning" not in markdown and "**Not the published configuration**" in markdown

    upsampled = OvssPredictor(DenseClip(ImageTextStub(), upsampler=UpsamplerStub()))
    assert published_configuration("clip", upsampled.configuration)["matches"] is True
    other = OvssPredictor(DenseClip(ImageTextStub(), upsampler=UpsamplerStub(), stride=224))
    assert published_configuration("clip", other.configuration)["differences"] == [
        "dense CLIP stride 224 (published 112)"
    ]


def test_the_row_beside_a_run_is_that_data_sets_number(mini_layout, tmp_path):
    predictor = OvssPredictor(DenseClip(ImageTextStub()), segmenter=SegmenterStub(),
                              generation=REFERENCE)  # fmt: skip
    result, markdown, _ = run(mini_layout, tmp_path, predictor, "sam+clip")
    own = [row for row in result["published"] if row["scope"] == "data set"]
    assert [(r["method"], r["value"], r["ours"]) for r in own] == [
        ("SAM mask voting (training-free text-based RS segmentation)", 38.2, True),
        ("SegEarth-OV", 36.9, False),
    ]
    assert all(r["label"] == "LoveDA" and r["metric"] == "mIoU" and r["source"] for r in own)
    assert result["comparable"] == {"metric": "mIoU", "class": None, "value": result["miou"]}
    section = markdown[markdown.index("## Published numbers") :]
    assert "Published on LoveDA:" in section
    sosa = "| SAM mask voting (training-free text-based RS segmentation) | 38.2 | `sam+clip`"
    assert sosa + " (this run's engine) |" in section
    assert "8-set avg mIoU" not in markdown  # the old heading that passed averages off as ours
    averages = section[section.index("Averages over several data sets") :]
    assert "| SegEarth-OV | 8-set Avg. (as published) (mIoU) | 39.2 |" in averages
    assert "Mean of 8 (as published) (mIoU) | 41.3" in averages


def test_a_set_without_per_set_numbers_says_so():
    from terramask.eval.report import published_lines, published_rows

    preset = load_preset("uavid")
    rows = published_rows(preset, "clip")
    assert preset.published["rows"] == [] and {r["scope"] for r in rows} == {"average"}
    lines = published_lines({"engine": "clip", "display_name": preset.display_name, "miou": 50.0,
                             "published": rows})  # fmt: skip
    assert "No per-set number of UAVid (images) is recorded from the papers." in lines
    assert any("8-set Avg. (as published)" in line for line in lines)


def test_single_class_sets_compare_the_foreground_iou(tmp_path):
    preset = load_preset("whu_aerial")
    label = np.zeros((32, 32), np.uint8)
    label[8:24, 8:24] = 1
    image = np.zeros((32, 32, 3), np.uint8)
    image[8:24, 8:24] = 200
    root = write_preset_layout(preset, tmp_path / "whu", {"tile": (image, label)})
    result = evaluate_ovss(preset, root, engine=UniformEngine(), threshold=0.0,
                           output_dir=tmp_path / "out", method="sam+clip")  # fmt: skip
    assert result["comparable"] == {
        "metric": "IoU", "class": "building", "value": result["iou"]["building"]
    }  # fmt: skip
    own = [row for row in result["published"] if row["scope"] == "data set"]
    assert [(r["value"], r["metric"], r["class"]) for r in own] == [(58.8, "IoU", "building")]
    averages = [row for row in result["published"] if row["scope"] == "average"]
    assert {r["label"] for r in averages} == {
        "Mean of 9 (as published)", "Mean of 9 (as given in the SAM-voting paper's table)"
    }  # fmt: skip
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "IoU of building" in markdown and "| 58.8 |" in markdown
    assert "Not compared with a published configuration." in markdown  # a bare engine
