"""Benchmarks and metrics: OVSS presets, data-set-level mIoU, folder scoring and reports."""

from terramask.eval.metrics import SegmentationScores
from terramask.eval.presets import OvssPreset, list_presets, load_preset
from terramask.eval.score import score_folders

__all__ = ["OvssPreset", "SegmentationScores", "list_presets", "load_preset", "score_folders"]
