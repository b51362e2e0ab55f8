"""The instruction-data engine: labelled rasters to UniGeoSeg-format instruction data.

The GeoSeg-1M recipe (DESIGN.md §1.3, specs/unigeoseg.md §1-2), step by step:

- `labels`: class specs (`-c`), name merging, any label encoding to class ids;
- `tiling`: the patch windows (512 px, stride 256);
- `instances`: 8-connected instances per class and the rule filter, counting what each
  rule removed;
- `marks`: the pictures the MLLMs see (thin contours, distinct colours);
- `prompts`: the replaceable prompt files, rubric and thresholds (`prompts/`);
- `instructions`: interactive texts straight from the mask, reading the MLLMs' replies;
- `engine`: the run: patches, MLLM stages (mask check, generation, cross-evaluation),
  resuming, failures;
- `writer`: UniGeoSeg's layout (`{split}.json`, images, 0/255 masks, per-sample JSON), the
  GeoPackage of instances and `stats.json`.

See docs/data-engine.md.
"""
