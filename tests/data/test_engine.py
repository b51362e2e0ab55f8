"""`build_instruction_data` end to end on a georeferenced synthetic scene whose kept set is
known exactly, with the scripted chat server as generator and judge (refusals, garbage, low
scores, HTTP failures), resuming, and the output read back by the benchmark and training
loaders."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from PIL import Image

from terramask import api
from terramask.errors import InputError, OutputExistsError
from terramask.eval.referring_datasets import load_referring_dataset
from terramask.options import DataRecipe, MLLMOptions
from terramask.testing.scenes import default_transform, write_synthetic_scene
from terramask.train.data import load_training_data
from tests.helpers.chat_server import ChatServer, Step
from tests.helpers.data_script import DataScript

CLASSES = ["0=background", "1=building", "2=road", "3=tree", "4=water"]
#: Two 64 x 64 patches (0.5 % = 20.5 px, 70 % = 2867 px).
RECIPE = DataRecipe(patch=64, stride=64, reasoning_share=1.0, split="test")
CRS = "EPSG:32633"
PIXEL = 0.5


def write_labels(path: Path) -> np.ndarray:
    """The label of a 128 x 64 scene; what each rule does to it is in the comments."""
    ids = np.zeros((64, 128), dtype=np.uint8)
    ids[5:15, 5:15] = 1  # left: the only building, 100 px -> kept (attribute question)
    ids[30:36, 0:20] = 2  # left: two roads 21 px apart -> both kept (contextual questions)
    ids[30:36, 41:64] = 2
    ids[50:53, 5:8] = 3  # left: a 9 px tree -> tiny
    ids[40:64, 64:128] = 4  # right: water, 1536 px -> kept (attribute question)
    ids[5:11, 70:76] = 1  # right: two buildings 4 px apart -> neighbour, both
    ids[5:11, 80:86] = 1
    with rasterio.open(path, "w", driver="GTiff", width=128, height=64, count=1, dtype="uint8",
                       crs=CRS, transform=default_transform(PIXEL)) as dst:  # fmt: skip
        dst.write(ids, 1)
    return ids


@pytest.fixture
def scene(tmp_path):
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    write_synthetic_scene(images / "s1.tif", width=128, height=64, crs=CRS)
    ids = write_labels(labels / "s1.tif")
    return images, labels, ids


def client(server: ChatServer, name: str) -> MLLMOptions:
    return MLLMOptions(url=server.url, model=name, retries=0, cache=False, timeout=10)


def by_class(replies: dict[str, str]):
    """A reply per class name (the default well-formed reply for others)."""

    def reply(request, name):
        if name in replies:
            return replies[name]
        return DataScript().default(request_kind_of(request), name)

    return reply


def request_kind_of(request):
    from tests.helpers.data_script import request_kind

    return request_kind(request)


def build(scene, out, generator=None, judges=(), recipe=RECIPE, **kw):
    images, labels, _ = scene
    return api.build_instruction_data(
        images, labels, CLASSES, recipe=recipe, generator=generator, judges=list(judges),
        output=out, **kw,
    )  # fmt: skip


def test_the_kept_set_instructions_and_rejections_are_exactly_known(scene, tmp_path):
    script = DataScript({
        # the generator refuses the roads' expressions and sends garbage for the water's
        "referring": by_class({"road": "I'm sorry, but I can't help with that request.",
                               "water": "<<<%%% not json, no expression %%%>>>"}),
        # the judge scores the building's reasoning question too low on uniqueness
        "judge_reasoning": by_class({"building": json.dumps({
            "complexity": 4, "soundness": 5, "uniqueness": 2, "mask_quality": 5,
            "naturalness": 5, "conciseness": 5})}),
    })  # fmt: skip
    out = tmp_path / "out"
    with ChatServer(script) as gen, ChatServer(script) as judge:
        stats = build(scene, out, generator=client(gen, "gen"), judges=[client(judge, "judge")])
    # rules: exactly the planted cases
    assert {k: v for k, v in stats["rules"].items() if v} == {"tiny": 1, "neighbour": 2}
    assert stats["instances"] == {"candidates": 7, "kept": 4}
    assert stats["classes"]["tree"]["removed"]["tiny"] == 1
    assert stats["classes"]["building"]["removed"]["neighbour"] == 2
    # interactive: one per kept instance
    tasks = stats["tasks"]
    assert tasks["interactive"]["samples"] == 4
    # referring: the building's only; roads refused, water garbage
    assert tasks["referring"]["samples"] == 1
    assert tasks["referring"]["rejected"] == {"generation refused": 2,
                                              "generation unreadable reply": 1}  # fmt: skip
    # reasoning: building (attribute) rejected by the judge; two contextual roads; water
    assert tasks["reasoning"]["samples"] == 3
    assert tasks["reasoning"]["kinds"] == {"attribute": 1, "contextual": 2}
    assert tasks["reasoning"]["rejected"] == {"cross_eval": 1}
    assert script.counts["mask_check"] == 4 and script.counts["cues"] == 2
    assert stats["patches"] == {"total": 2, "done_before": 0, "processed": 2,
                                "with_failures": 0, "reasoning": 2}  # fmt: skip
    assert stats["mllm"]["failed"] == 0 and stats["samples_per_second"] > 0
    assert json.loads((out / "stats.json").read_text())["samples"] == 8

    # the layout: lists, 0/255 masks equal to the instances, the patch's own pixels
    listing = json.loads((out / "ref" / "test.json").read_text())
    [entry] = listing
    assert entry == {"img": "images/s1_0_0_64_64.png", "mask": "masks/s1_0_0_64_64_building0.png",
                     "json": "json/s1_0_0_64_64_building0.json"}  # fmt: skip
    mask = np.asarray(Image.open(out / "ref" / entry["mask"]))
    assert set(np.unique(mask)) == {0, 255}
    assert np.array_equal(mask == 255, scene[2][:, :64] == 1)
    with rasterio.open(scene[0] / "s1.tif") as src:
        pixels = np.moveaxis(src.read(window=((0, 64), (0, 64))), 0, -1)
    assert np.array_equal(np.asarray(Image.open(out / "ref" / entry["img"])), pixels)
    document = json.loads((out / "ref" / entry["json"]).read_text())
    assert document["question"] == ["the building left of the road in the upper half"]
    assert document["category"] == "building" and document["judges"][0]["passed"]
    reason = json.loads((out / "reason" / "json" / "s1_0_0_64_64_road0.json").read_text())
    assert reason["kind"] == "contextual" and reason["reason"][0].startswith("It is the road")
    assert reason["cues"] == ["the northern road", "it is the largest one"]

    # the GeoPackage: the kept instances with samples, in the source CRS, at their place
    meta, _, geometry, values = pyogrio.raw.read(out / "instances.gpkg")
    fields = dict(zip(meta["fields"], values, strict=True))
    assert "32633" in meta["crs"] and len(geometry) == 4
    water = shapely.from_wkb(geometry[list(fields["label"]).index("water")])
    x0, y0 = default_transform(PIXEL) @ (64, 40)
    assert water.equals(shapely.box(x0, y0 - 24 * PIXEL, x0 + 64 * PIXEL, y0))

    # read back by UniGeoSeg's benchmark loader (reference protocol) ...
    data = load_referring_dataset("unigeoseg-bench", out, split="test")
    groups = [s.group for s in data.samples]
    assert groups.count("interactive") == 4 and groups.count("referring") == 1
    assert groups.count("reasoning") == 3
    for sample in data.samples:
        assert sample.load_mask().any()
        if sample.interactive:  # the coordinates read back inside the mask
            target = sample.load_mask()
            prompt = sample.coordinates.in_pixels(*target.shape)
            if prompt.box is not None:  # the tight box's pixel edges, to well under a pixel
                rows, cols = np.nonzero(target)
                edges = [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
                assert np.abs(np.asarray(prompt.box) - edges).max() < 0.5
            for x, y in prompt.points:
                assert target[int(y), int(x)]
    # ... and by `train clicks`' data reader: the worded samples (coordinates are no words)
    training = load_training_data(out, split="test")
    assert training.layout == "unigeoseg-bench"
    worded = sorted(s.question for s in data.samples if not s.interactive)
    assert sorted(s.instruction for s in training.samples) == worded and len(worded) == 4


def test_a_failed_request_is_recorded_and_only_its_patch_is_redone(scene, tmp_path):
    out = tmp_path / "out"

    def flaky(request, name):
        return Step(text="overloaded", status=503) if name == "water" else DataScript().default(
            "referring", name)  # fmt: skip

    first = DataScript({"referring": flaky})
    recipe = DataRecipe(patch=64, stride=64, tasks=("interactive", "referring"), split="test")
    with ChatServer(first) as gen:
        stats = build(scene, out, generator=client(gen, "gen"), recipe=recipe)
    assert stats["patches"]["with_failures"] == 1 and stats["mllm"]["failed"] == 1
    [failure] = stats["failures"]
    assert failure["patch"] == "s1_64_0_64_64" and failure["class"] == "water"
    assert "503" in failure["reason"] or "overloaded" in failure["reason"]
    assert stats["tasks"]["referring"]["samples"] == 3  # the left patch's building and roads
    assert stats["tasks"]["interactive"]["samples"] == 4  # kept: the water's too

    again = DataScript()
    with ChatServer(again) as gen:
        stats = build(scene, out, generator=client(gen, "gen"), recipe=recipe)
    assert again.counts == {"referring": 1}  # the right patch's water alone
    assert stats["patches"]["done_before"] == 1 and stats["patches"]["with_failures"] == 0
    assert stats["tasks"]["referring"]["samples"] == 4
    assert stats["tasks"]["interactive"]["samples"] == 4
    entries = json.loads((out / "interactive" / "test.json").read_text())
    assert len(entries) == len({e["mask"] for e in entries}) == 4
    assert all((out / "interactive" / e["mask"]).is_file() for e in entries)

    with ChatServer(DataScript()) as gen:  # done: nothing is asked again
        stats = build(scene, out, generator=client(gen, "gen"), recipe=recipe)
        assert not gen.requests
    assert stats["patches"]["done_before"] == 2


def test_mask_check_rejections_and_the_class_cap_are_counted(scene, tmp_path):
    script = DataScript({"mask_check": by_class({"road": json.dumps(
        {"keep": False, "reason": "a fragment of a larger road"})})})  # fmt: skip
    recipe = DataRecipe(patch=64, stride=64, tasks=("interactive",), class_cap=1, split="test")
    with ChatServer(script) as judge:
        stats = build(scene, tmp_path / "out", judges=[client(judge, "judge")], recipe=recipe)
    assert stats["rules"]["mask_check"] == 2
    assert stats["classes"]["road"]["removed"]["mask_check"] == 2
    assert stats["instances"]["kept"] == 2  # building and water (one each: the cap is 1)
    assert stats["tasks"]["interactive"]["samples"] == 2
    records = json.loads(
        (tmp_path / "out" / ".terramask-data" / "patches" / "s1_0_0_64_64.json").read_text()
    )
    assert {r["reason"] for r in records["rejected"]} == {"a fragment of a larger road"}


def test_an_interactive_only_build_needs_no_mllm_and_other_settings_are_refused(scene, tmp_path):
    out = tmp_path / "out"
    stats = build(scene, out)
    assert set(stats["tasks"]) == {"interactive"} and stats["samples"] == 4
    assert stats["mllm"]["calls"] == 0
    before = sorted(p.name for p in (out / "interactive" / "masks").iterdir())
    with pytest.raises(InputError, match=r"other settings.*recipe"):
        build(scene, out, recipe=DataRecipe(patch=64, stride=64, seed=1, split="test"))
    assert sorted(p.name for p in (out / "interactive" / "masks").iterdir()) == before
    again = build(scene, out, recipe=DataRecipe(patch=64, stride=64, seed=1, split="test"),
                  overwrite=True)  # fmt: skip
    assert again["patches"]["processed"] == 2 and again["samples"] == 4


def test_a_folder_of_foreign_data_is_not_replaced(scene, tmp_path):
    out = tmp_path / "out"
    (out / "ref").mkdir(parents=True)
    (out / "ref" / "test.json").write_text("[]")
    with pytest.raises(OutputExistsError, match="did not start"):
        build(scene, out)
    assert (out / "ref" / "test.json").read_text() == "[]"
    # nor with `overwrite` (e.g. -o pointed at a downloaded UniGeoSeg release by mistake)
    with pytest.raises(OutputExistsError, match="does not replace data the engine did not"):
        build(scene, out, overwrite=True)
    assert (out / "ref" / "test.json").read_text() == "[]"
    assert not (out / ".terramask-data").exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"recipe": DataRecipe(tasks=("referring",))}, "generator"),
        ({"classes": ["1=building", "#FF0000=road"]}, "mix label values"),
        ({"classes": ["1=building", "1=road"]}, "given twice"),
        ({"classes": ["building=1"]}, "not understood"),
        ({"class_map": "missing.json"}, "does not exist"),
        ({"labels": "nowhere/*.tif"}, "nowhere"),
        ({"recipe": DataRecipe(prompts="no-such-folder")}, "is not a folder"),
    ],
)
def test_bad_input_is_refused_before_any_work(scene, tmp_path, kwargs, message):
    images, labels, _ = scene
    arguments = {"images": images, "labels": labels, "classes": CLASSES, **kwargs}
    if arguments["labels"] == "nowhere/*.tif":
        arguments["labels"] = str(tmp_path / "nowhere" / "*.tif")
    with pytest.raises(InputError, match=message):
        api.build_instruction_data(output=tmp_path / "out", **arguments)
    assert not (tmp_path / "out").exists()


def test_an_unreadable_label_is_recorded_and_the_other_pairs_go_on(scene, tmp_path):
    images, labels, _ = scene
    write_synthetic_scene(images / "s2.tif", width=128, height=64, crs=CRS)
    (labels / "s2.tif").write_bytes(b"not a raster")
    stats = build(scene, tmp_path / "out")
    assert [Path(f["image"]).name for f in stats["failed_images"]] == ["s2.tif"]
    assert stats["samples"] == 4


def test_a_resumed_patch_meets_the_replies_that_arrived_in_the_reply_cache(
    scene, tmp_path, monkeypatch
):
    monkeypatch.setenv("TERRAMASK_CACHE", str(tmp_path / "cache"))
    recipe = DataRecipe(patch=64, stride=64, tasks=("referring",), split="test")

    def building_fails(request, name):
        if name == "building":
            return Step(text="overloaded", status=503)
        return DataScript().default("referring", name)

    first = DataScript({"referring": building_fails})
    cached = MLLMOptions(model="gen", retries=0, timeout=10)
    with ChatServer(first) as gen:
        stats = build(scene, tmp_path / "out", generator=replace(cached, url=gen.url),
                      recipe=recipe)  # fmt: skip
    assert first.counts["referring"] == 4 and stats["patches"]["with_failures"] == 1
    again = DataScript()
    with ChatServer(again) as gen:
        stats = build(scene, tmp_path / "out", generator=replace(cached, url=gen.url),
                      recipe=recipe)  # fmt: skip
    # the left patch is redone: its two roads' replies come from the cache, the building's
    # expression alone is asked again
    assert again.counts == {"referring": 1}
    assert stats["mllm"]["cached"] == 2 and stats["tasks"]["referring"]["samples"] == 4


def test_evaluation_reads_the_built_data_and_sends_coordinates_to_the_segmenter(
    scene, tmp_path, monkeypatch
):
    """`eval unigeoseg-bench` on what `data build` wrote: interactive samples reach the
    segmenter (a double that fills the box it is given), referring ones the MLLM."""
    from terramask.eval.referring import evaluate_asking
    from terramask.pipeline import engines
    from terramask.pipeline.engines import AskModels
    from tests.helpers.chat_server import Grounder
    from tests.helpers.doubles import ShapeSegmenter

    monkeypatch.setattr(engines, "build_ask_models", lambda engine, models: AskModels(
        ShapeSegmenter(radius=1.0)))  # fmt: skip
    recipe = DataRecipe(patch=64, stride=64, tasks=("interactive", "referring"), box_share=1.0,
                        split="test")  # fmt: skip
    with ChatServer(DataScript()) as gen:
        build(scene, tmp_path / "data", generator=client(gen, "gen"), recipe=recipe)
    with ChatServer(Grounder((0.0, 0.0, 0.5, 0.5))) as server:
        from terramask.models.mllm import OpenAIChatMLLM

        result = evaluate_asking(
            "unigeoseg-bench", tmp_path / "data", split="test", engine="box",
            mllm=lambda: OpenAIChatMLLM(server.url, "scripted", max_retries=0, cache=None),
            output=tmp_path / "eval",
        )  # fmt: skip
        asked = [" ".join(r.texts()) for r in server.requests]
    assert result["samples"] == 8 and set(result["groups"]) == {"interactive", "referring"}
    assert len(asked) == 4 and not any("x0,y0=" in text for text in asked)
    # a box prompt filled by the double is the tight box of a rectangle: IoU 100 on the
    # rectangles (building, roads, water), each scored on the 512 letterbox
    assert result["groups"]["interactive"]["giou"] == 100.0


def test_a_truncated_label_is_a_failed_pair_and_the_others_go_on(scene, tmp_path):
    """A label that opens but cannot be read to its end (a cut download): listed in
    `failed_images`, none of its patches kept, the other pair built (before: a crash, as
    'unexpected error ... bug', and nothing written)."""
    from PIL import Image

    images, labels, _ = scene
    write_synthetic_scene(images / "s2.tif", width=64, height=256, crs=CRS)
    noise = np.random.default_rng(0).integers(0, 5, size=(256, 64), dtype=np.uint8)
    Image.fromarray(noise).save(labels / "s2.png")
    data = (labels / "s2.png").read_bytes()
    (labels / "s2.png").write_bytes(data[: int(len(data) * 0.6)])  # rows at the end are lost
    stats = build(scene, tmp_path / "out")
    assert [f["label"] for f in stats["failed_images"]] == [str(labels / "s2.png")]
    assert "cannot be read" in stats["failed_images"][0]["reason"]
    assert stats["patches"]["total"] == 2  # s1's two patches, none of s2's
    assert stats["samples"] == 4


def test_a_class_no_label_pixel_holds_is_named_in_a_warning(scene, tmp_path):
    """`-c 9=x` with no 9 in any label: a warning naming the class and its value (before:
    exit 0, no samples of it, nothing said)."""
    images, labels, _ = scene
    with pytest.warns(UserWarning, match=r"No label pixel holds 'ship' \(9\)"):
        stats = api.build_instruction_data(images, labels, [*CLASSES, "9=ship"], recipe=RECIPE,
                                           output=tmp_path / "out")  # fmt: skip
    assert stats["samples"] > 0
