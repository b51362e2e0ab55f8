"""Images that are not 8-bit are refused with the conversion to make, in any verb's words."""

import numpy as np
import pytest
import rasterio

from terramask.errors import InputError
from terramask.eval.datasets import read_image


def test_a_16_bit_image_is_refused_with_the_conversion(tmp_path):
    path = tmp_path / "scene.tif"
    with rasterio.open(path, "w", driver="GTiff", width=4, height=4, count=3,
                       dtype="uint16") as dst:  # fmt: skip
        dst.write(np.full((3, 4, 4), 900, dtype=np.uint16))
    with pytest.raises(InputError, match=r"uint16, not 8-bit.*gdal_translate -ot Byte -scale"):
        read_image(path)
