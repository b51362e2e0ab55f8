"""Any label encoding to class ids: values, palettes and RGB colours, names merged by key
and by a mapping file, ignored and unlisted values."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio

from terramask.data.labels import IGNORED, UNLISTED, ClassTable, LabelRaster
from terramask.errors import InputError

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")

#: A 4 x 6 map of values 0..3 and an unlisted 9.
VALUES = np.array([[0, 0, 1, 1, 2, 2], [0, 3, 1, 1, 2, 9], [3, 3, 3, 0, 0, 0],
                   [1, 2, 3, 0, 9, 9]], dtype=np.uint8)  # fmt: skip
COLOURS = {0: (0, 0, 0), 1: (255, 0, 0), 2: (0, 255, 0), 3: (60, 16, 152), 9: (7, 7, 7)}


def write(path, bands, colormap=None):
    count = bands.shape[0]
    with rasterio.open(path, "w", driver="GTiff", width=6, height=4, count=count,
                       dtype="uint8") as dst:  # fmt: skip
        dst.write(bands)
        if colormap:
            dst.write_colormap(1, colormap)
    return path


def expected(mapping):
    return np.vectorize(lambda v: mapping.get(int(v), UNLISTED))(VALUES)


def test_indexed_values_with_merged_and_ignored_names(tmp_path):
    table = ClassTable.parse(["0=background", "1=house", "2=road", "3=building"],
                             class_map={"house": "building"}, ignore=["background"])  # fmt: skip
    assert table.names == ("building", "road")
    with LabelRaster(write(tmp_path / "l.tif", VALUES[None]), table) as labels:
        ids = labels.read(0, 0, 6, 4)
        assert labels.encoding == "indexed"
    assert np.array_equal(ids, expected({0: IGNORED, 1: 0, 2: 1, 3: 0}))


def test_palette_and_rgb_labels_read_by_colour_alike(tmp_path):
    rgb = np.stack([np.vectorize(lambda v, i=i: COLOURS[int(v)][i])(VALUES) for i in range(3)])
    specs = ["#000000=nodata", "#FF0000=roof", "0,255,0=grass", "#3C1098=building"]
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"roof": "building", "nodata": None}))
    table = ClassTable.parse(specs, class_map=mapping)
    assert table.names == ("building", "grass")
    palette = {v: (*c, 255) for v, c in COLOURS.items()}
    truth = expected({0: IGNORED, 1: 0, 2: 1, 3: 0})
    with LabelRaster(write(tmp_path / "p.tif", VALUES[None], palette), table) as labels:
        assert labels.encoding == "palette" and np.array_equal(labels.read(0, 0, 6, 4), truth)
    with LabelRaster(write(tmp_path / "c.tif", rgb.astype(np.uint8)), table) as labels:
        assert labels.encoding == "rgb" and np.array_equal(labels.read(0, 0, 6, 4), truth)
        assert np.array_equal(labels.read(2, 1, 3, 2), truth[1:3, 2:5])


def test_names_by_position_and_wrong_encodings_are_refused(tmp_path):
    table = ClassTable.parse(["background", "building"])
    assert table.values == {0: 0, 1: 1}  # "background" is not ignored unless asked
    rgb = write(tmp_path / "c.tif", np.stack([VALUES, VALUES * 2, VALUES]))
    with pytest.raises(InputError, match="colour image"):
        LabelRaster(rgb, table).read(0, 0, 6, 4)
    colours = ClassTable.parse(["#FF0000=roof"])
    with pytest.raises(InputError, match="no colour table"):
        LabelRaster(write(tmp_path / "v.tif", VALUES[None]), colours)
    with pytest.raises(InputError, match="no class is left"):
        ClassTable.parse(["0=background", "1=void"], ignore=["background", "void"])
    with pytest.raises(InputError, match="cannot be read as JSON"):
        (tmp_path / "bad.json").write_text("{")
        ClassTable.parse(["1=a"], class_map=tmp_path / "bad.json")


def test_a_class_mapping_entry_no_class_is_called_is_warned_about():
    """A misspelt key in the mapping merges nothing: say so (before: silently ignored)."""
    with pytest.warns(UserWarning, match="'low vegitation'"):
        table = ClassTable.parse(["1=low vegetation", "2=tree"],
                                 class_map={"low vegitation": "vegetation", "tree": "vegetation"})
    assert table.names == ("low vegetation", "vegetation")
