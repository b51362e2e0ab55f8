"""Benchmarks and metrics: OVSS presets, data-set-level mIoU, folder scoring and reports.

Names are imported from their modules on first use (see `terramask.lazy`), so importing the
package costs nothing until one of them is needed.
"""

from terramask.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "OvssPreset": "presets",
        "SegmentationScores": "metrics",
        "list_presets": "presets",
        "load_preset": "presets",
        "preset_rows": "presets",
        "score_folders": "score",
    },
)
