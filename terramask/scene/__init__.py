"""Geography: open rasters, tile them, convert prompts, and write georeferenced outputs.

Names are imported from their modules on first use (see `terramask.lazy`), so importing the
package costs nothing until one of them is needed.
"""

from terramask.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "Feature": "polygons",
        "GeoreferenceWarning": "raster",
        "ObjectPrompt": "prompts",
        "OutputSet": "outputs",
        "PromptFile": "prompts",
        "RasterWriter": "writers",
        "Scene": "raster",
        "SceneWarning": "raster",
        "SceneWindow": "raster",
        "Stretch": "stretch",
        "Tile": "tiling",
        "TilePlan": "tiling",
    "area_m2": "polygons",
        "check_prompt_options": "prompts",
        "describe_extent": "prompts",
        "expand_inputs": "inputs",
        "gdal_path": "raster",
        "names_many": "inputs",
        "open_scene": "raster",
        "plan_tiles": "tiling",
        "polygonize": "polygons",
        "prompts_from_options": "prompts",
        "prompts_from_vector": "prompts",
        "read_prompt_file": "prompts",
        "scene_name": "raster",
        "write_preview": "writers",
        "write_vectors": "vectors",
    },
)
