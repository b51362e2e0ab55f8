"""Geography: open rasters, tile them, convert prompts, and write georeferenced outputs."""

from terramask.scene.inputs import expand_inputs, names_many
from terramask.scene.outputs import OutputSet
from terramask.scene.polygons import Feature, area_m2, polygonize
from terramask.scene.prompts import (
    ObjectPrompt,
    PromptFile,
    check_prompt_options,
    describe_extent,
    prompts_from_options,
    prompts_from_vector,
    read_prompt_file,
)
from terramask.scene.raster import (
    GeoreferenceWarning,
    Scene,
    SceneWarning,
    SceneWindow,
    gdal_path,
    open_scene,
    scene_name,
)
from terramask.scene.stretch import Stretch
from terramask.scene.tiling import Tile, TilePlan, plan_tiles
from terramask.scene.vectors import write_vectors
from terramask.scene.writers import RasterWriter, write_preview

__all__ = [
    "Feature",
    "GeoreferenceWarning",
    "ObjectPrompt",
    "OutputSet",
    "PromptFile",
    "RasterWriter",
    "Scene",
    "SceneWarning",
    "SceneWindow",
    "Stretch",
    "Tile",
    "TilePlan",
    "area_m2",
    "check_prompt_options",
    "describe_extent",
    "expand_inputs",
    "gdal_path",
    "names_many",
    "open_scene",
    "plan_tiles",
    "polygonize",
    "prompts_from_options",
    "prompts_from_vector",
    "read_prompt_file",
    "scene_name",
    "write_preview",
    "write_vectors",
]
