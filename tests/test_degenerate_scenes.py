"""Degenerate scenes and prompts (issue #11): scenes 1–3 px thin through every verb, thin and
zero-area boxes, rasters placed by ground control points, clicks on nodata, and warnings
that read as one clean line.

Tiny random models: what is asserted is that runs finish on bounded work and that results
cover exactly the scene's pixels, never what the models were padded with."""

from __future__ import annotations

import os
import re
import warnings

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.windows import Window

import terramask
from terramask import api
from terramask.errors import InputError
from terramask.methods.dense_clip import DenseClip
from terramask.methods.geoseg import BoxRefinement, DualRoute
from terramask.methods.ovss import OvssPredictor
from terramask.models import clear_loaded, load_image_text, load_segmenter
from terramask.options import ModelOptions, Tiling
from terramask.pipeline.ask_run import locate, located_mask
from terramask.pipeline.engines import AskModels
from terramask.pipeline.routing import MAX_WINDOW_ASPECT, MIN_WINDOW_SIDE, job_for_bounds
from terramask.protocols import MLLMReply
from terramask.scene import SceneWarning
from terramask.scene.memory import ArrayScene
from terramask.testing.scenes import write_synthetic_scene
from terramask.testing.tiny_models import save_tiny_clip, save_tiny_sam

#: (width, height) of the thin scenes every verb must handle.
THIN = [(700, 1), (700, 2), (700, 3), (1, 700)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {"sam": save_tiny_sam(root / "sam"), "clip": save_tiny_clip(root / "clip")}


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    yield
    clear_loaded()


def _read(path):
    with rasterio.open(path) as src:
        return src.read(1), src.profile


# ---------------------------------------------------------------------- prompt and segment


@pytest.mark.parametrize(("width", "height"), THIN)
def test_prompt_on_a_thin_scene(tmp_path, tiny, capfd, width, height):
    """`prompt` on a strip: a click and a box along it give masks exactly the scene's size;
    the 1- and 3-px sides are never taken for colour channels (the processor's complaint)."""
    path = write_synthetic_scene(tmp_path / "strip.tif", width=width, height=height)
    along = (width / 2, height / 2)
    box = (100, 0, 400, height) if width > height else (0, 100, width, 400)
    result = api.prompt(
        path, points=[along], boxes=[box], output=tmp_path / "out",
        models=ModelOptions(segmenter=str(tiny["sam"]), device="cpu"),
        tiling=Tiling(tile=256, overlap=64),
    )  # fmt: skip
    ids, profile = _read(result.outputs["mask"])
    assert (profile["height"], profile["width"]) == (height, width)
    assert set(np.unique(ids)) <= {0, 1, 2}
    for obj in result.objects:
        if not obj["empty"]:
            x0, y0, x1, y1 = obj["bbox_px"]
            assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
    assert "channel dimension is ambiguous" not in capfd.readouterr().err


@pytest.mark.parametrize(("width", "height"), THIN)
def test_segment_on_a_thin_scene(tmp_path, tiny, width, height):
    """`segment` with dense CLIP on a strip, in several tiles: every pixel gets a class."""
    path = write_synthetic_scene(tmp_path / "strip.tif", width=width, height=height)
    result = api.segment(
        path, ["building", "road"], engine="clip", output=tmp_path / "out",
        models=ModelOptions(clip=str(tiny["clip"]), device="cpu"),
        tiling=Tiling(tile=256, overlap=32),
    )  # fmt: skip
    labels, profile = _read(result.outputs["labels"])
    assert (profile["height"], profile["width"]) == (height, width)
    assert set(np.unique(labels)) <= {1, 2}
    assert sum(c["pixels"] for c in result.classes) == width * height
    assert result.tiles["total"] == 3  # along the strip only


def test_segment_with_sam_voting_on_a_thin_scene(tmp_path, tiny):
    path = write_synthetic_scene(tmp_path / "strip.tif", width=600, height=2)
    result = api.segment(
        path, ["building", "road"], engine="sam+clip", output=tmp_path / "out",
        models=ModelOptions(clip=str(tiny["clip"]), segmenter=str(tiny["sam"]), device="cpu"),
    )  # fmt: skip
    labels, _ = _read(result.outputs["labels"])
    assert labels.shape == (2, 600) and set(np.unique(labels)) <= {1, 2}


class CountingImageText:
    """A loaded image-text model, recording every image shape its dense tokens are asked of."""

    def __init__(self, model):
        self.model = model
        self.name, self.patch_size = model.name, model.patch_size
        self.shapes: list[tuple[int, int]] = []

    def encode_text(self, texts, templates=None):
        return self.model.encode_text(texts, templates)

    def dense_tokens(self, images):
        self.shapes += [image.shape[:2] for image in images]
        return self.model.dense_tokens(images)


def test_segment_on_a_long_one_pixel_strip_does_bounded_work(tmp_path, tiny):
    """A 1 × 20 000 strip: 23 tiles of 1024 × 1, each resized to at most 448 × 1792 for the
    sliding windows (not 448 × 458 752), so each tile costs a few windows."""
    path = write_synthetic_scene(tmp_path / "strip.tif", width=20000, height=1)
    counting = CountingImageText(load_image_text(str(tiny["clip"]), device="cpu"))
    result = api.segment(
        path, ["building", "road"], predictor=OvssPredictor(DenseClip(counting)),
        output=tmp_path / "out",
    )  # fmt: skip
    assert result.tiles["total"] == 23
    assert len(counting.shapes) <= 23 * 15
    assert all(max(shape) <= 224 for shape in counting.shapes)
    labels, _ = _read(result.outputs["labels"])
    assert labels.shape == (1, 20000) and (labels != 255).all()


def test_nodata_in_a_thin_scene_never_becomes_an_object(tmp_path, tiny):
    """A 3-px strip whose top and bottom rows are nodata: whatever the models are shown
    around it, the nodata rows stay nodata in the mask and in the labels."""
    path = write_synthetic_scene(tmp_path / "strip.tif", width=500, height=3, nodata_border=1)
    result = api.prompt(
        path, points=[(250, 1.5)], boxes=[(10, 0, 490, 3)], output=tmp_path / "p",
        models=ModelOptions(segmenter=str(tiny["sam"]), device="cpu"),
    )  # fmt: skip
    ids, _ = _read(result.outputs["mask"])
    assert (ids[0] == 255).all() and (ids[2] == 255).all() and (ids[1, 1:-1] != 255).all()
    segmented = api.segment(
        path, ["building", "road"], engine="clip", output=tmp_path / "s",
        models=ModelOptions(clip=str(tiny["clip"]), device="cpu"),
    )  # fmt: skip
    labels, _ = _read(segmented.outputs["labels"])
    assert (labels[0] == 255).all() and (labels[1, 1:-1] != 255).all()
    assert sum(c["pixels"] for c in segmented.classes) == 498


# ---------------------------------------------------------------------- ask


class ScriptedMLLM:
    """An MLLM double that answers every question with one reply, in pixels of what it saw."""

    name = "scripted"

    def __init__(self, text: str):
        self.text = text
        self.shown: list[tuple[int, ...]] = []

    def ask(self, image, prompt, system=None):
        self.shown.append(image.shape)
        return MLLMReply(self.text, image.shape[:2], "pixels", self.name)


@pytest.mark.parametrize(("engine", "reply"), [
    ("box", '{"bbox": [100, 0, 200, 2]}'),
    ("clicks", '{"points": [[150, 1], [250, 0.5]], "labels": [1, 0]}'),
    ("geoseg", '{"bbox": [100, 0, 290, 1], "prompt": "road"}'),
    ("box", '{"bbox": [100, 1, 100, 1]}'),  # a box with no area at all
])  # fmt: skip
def test_ask_locates_on_a_two_pixel_scene(tiny, engine, reply):
    sam = load_segmenter(str(tiny["sam"]), device="cpu")
    clip = load_image_text(str(tiny["clip"]), device="cpu")
    image = np.random.default_rng(0).integers(0, 256, (2, 300, 3), dtype=np.uint8)
    scene = ArrayScene(image)
    mllm = ScriptedMLLM(reply)
    models = AskModels(sam, DualRoute(sam, image_text=clip))
    located = locate(scene, "where is the road?", mllm, models, engine=engine,
                     refinement=BoxRefinement.none())  # fmt: skip
    assert mllm.shown == [(2, 300, 3)]
    [found] = located.objects
    x0, y0, x1, y1 = found.scene_bounds()
    assert x0 >= 0 and x1 <= 300 and y0 >= 0 and y1 <= 2
    assert located_mask(located, 2, 300).shape == (2, 300)


def test_ask_with_a_one_pixel_box_and_no_refinement_stays_bounded(tiny):
    """`ask --refine none` with a 190 × 1 box was OOM-killed: CLIP Surgery saw 42 560 × 224
    and dense CLIP 85 120 × 448 px. Now the window has context (190 × 48) and what CLIP is
    given stays within a few hundred thousand pixels."""
    sam = load_segmenter(str(tiny["sam"]), device="cpu")
    counting = CountingImageText(load_image_text(str(tiny["clip"]), device="cpu"))
    image = np.random.default_rng(1).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    mllm = ScriptedMLLM('{"bbox": [100, 150, 290, 151], "prompt": "wall"}')
    models = AskModels(sam, DualRoute(sam, image_text=counting))
    located = locate(ArrayScene(image), "the wall", mllm, models, engine="geoseg",
                     refinement=BoxRefinement.none())  # fmt: skip
    [box] = located.details["boxes"]
    assert box["refined_px"] == [100, 150, 290, 151]
    x0, y0, x1, y1 = located.objects[0].scene_bounds()
    assert y1 - y0 <= 49 and x1 - x0 <= 190  # within the window: (100, 126) to (290, 175)
    # at most the reference view: the crop resized to 512 x 512
    assert counting.shapes and max(h * w for h, w in counting.shapes) <= 512 * 512


# ---------------------------------------------------------------------- windows around boxes


@pytest.mark.parametrize(("bounds", "window"), [
    ((100, 150, 290, 151), (100, 126, 190, 49)),  # 190 × 1: 47.5 rows about its centre
    ((100, 150, 100, 151), (92, 142, 16, 17)),  # no width: the 16 px minimum
    ((100, 150, 290, 151.5), (100, 127, 190, 48)),
    ((0, 0, 190, 1), (0, 0, 190, 48)),  # at the top edge: moved inside the scene
    ((300, 299, 390, 300), (300, 277, 90, 23)),  # at the bottom edge
    ((50, 60, 150, 130), (50, 60, 100, 70)),  # not thin: as it was
])  # fmt: skip
def test_thin_boxes_get_windows_with_context(bounds, window):
    job = job_for_bounds(bounds, 1024, 400, 300)
    assert (job.window.col_off, job.window.row_off, job.window.width,
            job.window.height) == window  # fmt: skip
    assert job.out_shape is None
    assert min(window[2:]) >= MIN_WINDOW_SIDE
    col, row, width, height = window
    assert col <= bounds[0] and bounds[2] <= col + width  # the box lies inside
    assert row <= bounds[1] and bounds[3] <= row + height
    assert max(window[2:]) <= MAX_WINDOW_ASPECT * min(window[2:]) + 1


def test_a_window_in_a_thin_scene_stays_in_the_scene():
    job = job_for_bounds((100, 0, 290, 1), 1024, 300, 2)
    assert job.window == Window(100, 0, 190, 2)


# ---------------------------------------------------------------------- ground control points


def _gcp_scene(path, transform, count=5):
    from rasterio.control import GroundControlPoint
    from rasterio.crs import CRS

    width, height = 120, 90
    data = np.random.default_rng(0).integers(1, 255, (3, height, width), dtype=np.uint8)
    places = [(0, 0), (width, 0), (0, height), (width, height), (60, 45)][:count]
    gcps = [GroundControlPoint(row=r, col=c, x=(transform @ (c, r))[0], y=(transform @ (c, r))[1])
            for c, r in places]  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=3,
                           dtype="uint8", photometric="RGB") as dst:  # fmt: skip
            dst.write(data)
            dst.gcps = (gcps, CRS.from_epsg(32633))
    return path


def test_prompt_in_map_coordinates_on_a_raster_placed_by_gcps(tmp_path, tiny):
    transform = Affine(0.5, 0.0, 500_000.0, 0.0, -0.5, 4_650_000.0)
    path = _gcp_scene(tmp_path / "gcps.tif", transform)
    x, y = transform @ (60, 45)
    with pytest.warns(SceneWarning, match="ground control points"):
        result = api.prompt(
            path, points=[(x, y)], crs="EPSG:32633", output=tmp_path / "out",
            models=ModelOptions(segmenter=str(tiny["sam"]), device="cpu"),
        )  # fmt: skip
    assert result.objects[0]["prompt_px"]["points"] == [[60.0, 45.0]]
    with rasterio.open(result.outputs["mask"]) as mask:
        assert mask.crs.to_string() == "EPSG:32633"
        assert tuple(mask.transform) == pytest.approx(tuple(transform), abs=1e-6)
        assert not mask.gcps[0]


# ---------------------------------------------------------------------- clicks on nodata


def test_prompt_refuses_a_click_on_nodata_and_prompt_many_leaves_it_out(tmp_path, tiny):
    path = write_synthetic_scene(tmp_path / "nd.tif", width=200, height=150, nodata_border=20)
    models = ModelOptions(segmenter=str(tiny["sam"]), device="cpu")
    with pytest.raises(InputError, match=r"point \(5, 5\).*holds no data"):
        api.prompt(path, points=[(5, 5)], output=tmp_path / "out", models=models)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").glob("*.tif"))
    with pytest.warns(SceneWarning, match="Left out"):
        summary = api.prompt_many(tmp_path / "nd.tif", points=[(5, 5), (100, 75)],
                                  output=tmp_path / "many", models=models)  # fmt: skip
    assert len(summary.processed) == 1 and not summary.failed and not summary.skipped
    with pytest.warns(SceneWarning, match="Left out"):
        alone = api.prompt_many(tmp_path / "nd.tif", points=[(5, 5)], output=tmp_path / "none",
                                models=models)  # fmt: skip
    assert len(alone.skipped) == 1 and not alone.processed  # no prompt left: skipped
    with pytest.warns(SceneWarning, match="Left out"):
        dropped = api.prompt(path, points=[(5, 5), (100, 75)], outside="drop",
                             output=tmp_path / "drop", models=models)  # fmt: skip
    assert dropped.objects[0]["prompt_px"]["points"] == [[100.0, 75.0]]


# ---------------------------------------------------------------------- warnings


def test_warnings_of_degenerate_inputs_name_no_code(tmp_path):
    """Every warning these cases raise is a SceneWarning whose text names the data, never a
    source file or line of TerraMask (the CLI prints the text alone)."""
    from terramask.scene import open_scene, prompts_from_options

    package = os.path.dirname(terramask.__file__)
    warped = Affine(0.5, 0.0, 500_000.0, 0.0, -0.5, 4_650_000.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        open_scene(_gcp_scene(tmp_path / "placed.tif", warped)).close()
        open_scene(_gcp_scene(tmp_path / "few.tif", warped, count=2)).close()
        nodata = write_synthetic_scene(tmp_path / "nd.tif", width=64, height=64, nodata_border=8)
        with open_scene(nodata) as scene:
            prompts_from_options(scene, points=[(2, 2), (30, 30)], outside="drop")
        open_scene(write_synthetic_scene(tmp_path / "two.tif", count=2, width=64,
                                         height=64)).close()  # fmt: skip
    ours = [w for w in caught if issubclass(w.category, SceneWarning)]
    assert len(ours) == 4
    for warning in ours:
        text = str(warning.message)
        assert package not in text and not re.search(r"\.py\b|line \d+", text), text
        assert "\n" not in text
