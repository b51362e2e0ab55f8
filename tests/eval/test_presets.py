"""The 17 OVSS presets load, agree with their vocabularies, and unknown names are explained."""

from __future__ import annotations

import pytest

from terramask.errors import InputError
from terramask.eval.presets import (
    PRESET_COLUMNS,
    list_presets,
    load_preset,
    preset_rows,
    published_numbers,
)
from terramask.eval.report import published_rows

MULTI = ("openearthmap", "loveda", "isaid", "potsdam", "vaihingen", "uavid", "udd5", "vdd")
SINGLE = (
    "whu_aerial",
    "whu_sat_ii",
    "inria",
    "xbd",
    "chn6_cug",
    "deepglobe_roads",
    "massachusetts_roads",
    "spacenet_roads",
    "wbs_si",
)


def test_all_seventeen_sets_are_listed():
    assert sorted(list_presets()) == sorted(MULTI + SINGLE)


@pytest.mark.parametrize("name", MULTI + SINGLE)
def test_each_preset_loads_into_a_consistent_vocabulary(name):
    preset = load_preset(name)
    vocabulary = preset.vocabulary()
    assert preset.name == name
    assert len(vocabulary) == len(preset.classes) == len(preset.labels)
    assert preset.kind == ("multi-class" if name in MULTI else "single-class")
    if name in SINGLE:
        assert len(preset.classes) == 2 and preset.background_index == 0
    assert preset.background_index is None or 0 <= preset.background_index < len(vocabulary)
    assert preset.threshold is None or 0 <= preset.threshold < 1
    img_dir, ann_dir = preset.layout.folders("val")
    assert img_dir != ann_dir
    assert preset.layout.img_suffix.startswith((".", "_"))
    assert preset.source


def test_known_class_lists():
    potsdam = load_preset("potsdam")
    assert potsdam.labels[0] == "impervious surface"
    assert potsdam.vocabulary().classes[0] == ("road", "parking lot")
    assert potsdam.vocabulary().background == 5 and potsdam.reduce_zero_label
    loveda = load_preset("LoveDA")
    assert loveda.labels == (
        "background", "building", "road", "water", "barren", "forest", "agriculture"
    )  # fmt: skip
    assert loveda.reduce_zero_label and loveda.threshold == 0.3
    assert load_preset("whu-aerial").name == "whu_aerial"
    assert load_preset("uavid").layout.folders(None) == ("img_dir/test", "ann_dir/test")
    assert load_preset("udd5").layout.folders(None) == ("val/src", "val/gt")


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(InputError) as info:
        load_preset("cityscapes")
    message = str(info.value)
    assert "cityscapes" in message and "loveda" in message and "wbs_si" in message
    assert "\n" not in message


SOSA = "SAM mask voting (training-free text-based RS segmentation)"


def test_published_averages_carry_their_published_labels_and_sources():
    averages = {(r["method"], r["kind"]): r for r in published_numbers()["averages"]}
    segearth = averages[("SegEarth-OV", "multi-class")]
    assert segearth["value"] == 39.2 and segearth["label"] == "8-set Avg. (as published)"
    assert averages[(SOSA, "multi-class")]["value"] == 41.3
    assert averages[(SOSA, "multi-class")]["label"] == "Mean of 8 (as published)"
    assert averages[("SegEarth-OV3", "multi-class")]["value"] == 53.4
    assert averages[(SOSA, "single-class")]["value"] == 35.1
    assert averages[("CLIP", "multi-class")]["value"] == 11.4
    assert ("GEM", "multi-class") not in averages  # no source for its 32.3 was found
    for row in averages.values():
        assert row["source"] and len(row["sets"]) == (8 if row["kind"] == "multi-class" else 9)
        assert any(word in row["label"] for word in ("Avg.", "avg.", "Mean of"))
        assert row["metric"] == ("mIoU" if row["kind"] == "multi-class" else "IoU")
    marked = [r["method"] for r in published_rows(load_preset("loveda"), "sam3") if r["ours"]]
    assert marked == ["SegEarth-OV3"]


#: specs/sosa.md section 5: the SAM-voting paper's per-set numbers.
SOSA_PER_SET = {
    "loveda": 38.2, "potsdam": 50.2, "isaid": 21.9, "vaihingen": 40.6, "whu_aerial": 58.8,
    "inria": 48.0, "deepglobe_roads": 15.9, "massachusetts_roads": 12.2, "chn6_cug": 36.4,
}  # fmt: skip


@pytest.mark.parametrize("name", MULTI + SINGLE)
def test_per_set_published_numbers_are_that_sets_with_their_source(name):
    preset = load_preset(name)
    published = preset.published
    assert published["metric"] == ("IoU" if name in SINGLE else "mIoU")
    if name in SINGLE:  # the papers report the foreground class's IoU on these
        assert published["class"] == preset.labels[1]
    values = {row["method"]: row["value"] for row in published["rows"]}
    assert values.get(SOSA) == SOSA_PER_SET.get(name)
    for row in published["rows"]:
        assert row["engine"] in ("clip", "sam+clip", "sam3") and 0 < row["value"] < 100
        assert row["source"] and row["provenance"]
    rows = published_rows(preset, "sam+clip")
    own = [r for r in rows if r["scope"] == "data set"]
    assert [r["value"] for r in own] == [r["value"] for r in published["rows"]]
    assert all(r["label"] == preset.display_name for r in own)
    # an average never stands as this set's number: every other row is labelled as one
    for row in rows[len(own) :]:
        assert row["scope"] == "average" and row["label"] != preset.display_name
        assert len(row["sets"]) == (9 if name in SINGLE else 8)


def test_preset_rows_are_ready_to_print():
    rows = preset_rows()
    assert [r["name"] for r in rows] == sorted(MULTI + SINGLE)
    keys = [key for key, _ in PRESET_COLUMNS]
    for row in rows:
        assert list(row) == keys
        assert all(isinstance(v, str) for v in row.values()), row["name"]
        assert all(row[k] for k in keys if k != "notes"), row["name"]
    by_name = {r["name"]: r for r in rows}
    inria = by_name["inria"]
    assert inria["display_name"] == "Inria Aerial Image Labeling"
    assert inria["kind"] == "single-class" and inria["split"] == "split_test"
    assert (inria["images"], inria["labels"]) == ("img_dir/<split>/*.png", "ann_dir/<split>/*.png")
    assert inria["label_values"] == "0 background, 1 building; 255 ignored"
    assert inria["reduce_zero_label"] == "no" and inria["threshold"] == "0.6"
    assert inria["source"].startswith("SegEarth-OV")
    potsdam = by_name["potsdam"]
    assert potsdam["label_values"] == (
        "1 impervious surface, 2 building, 3 low vegetation, 4 tree, 5 car, 6 clutter; "
        "0 and 255 ignored"
    )
    assert potsdam["reduce_zero_label"].startswith("yes: stored 0 is ignored, 1..6")
    assert potsdam["background"] == "clutter (stored 6)"
    assert by_name["isaid"]["labels"] == "ann_dir/<split>/*_instance_color_RGB.png"
    assert by_name["deepglobe_roads"]["split"] == "none (no split folders)"
    assert by_name["udd5"]["images"] == "<split>/src/*.JPG"


def test_notes_speak_of_the_root_folder_not_of_a_flag():
    for name in MULTI + SINGLE:
        for note in load_preset(name).notes:
            assert "--" not in note, (name, note)
    assert load_preset("whu_aerial").notes[0].startswith("The root folder is the WHU-BD folder")
