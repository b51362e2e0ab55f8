"""Benchmarks and metrics: OVSS presets, data-set-level mIoU, folder scoring and reports."""

from terramask.eval.metrics import SegmentationScores
from terramask.eval.presets import OvssPreset, list_presets, load_preset, preset_rows
from terramask.eval.score import score_folders

__all__ = [
    "OvssPreset",
    "SegmentationScores",
    "list_presets",
    "load_preset",
    "preset_rows",
    "score_folders",
]
