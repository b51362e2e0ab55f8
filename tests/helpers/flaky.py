"""Predictors that fail on purpose, for testing retries where the failure happens in another
process (a Ray actor), beyond the reach of monkeypatching.

Ray workers need not be able to import `tests` (it is not installed), so a test that sends
these to Ray registers this module with `ray.cloudpickle.register_pickle_by_value` first
(see tests/test_ray.py): the classes then travel with the pickled spec."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from terramask.pipeline.engines import PredictorSpec


@dataclass(frozen=True)
class DieOnceSpec:
    """Builds `inner`'s predictor, but the first process to predict with it dies (exit 1)
    before answering; `marker` (a file path) records that the death has happened."""

    inner: PredictorSpec
    marker: str

    @property
    def description(self) -> dict:
        return self.inner.description

    def build(self) -> Any:
        return _DieOnce(self.inner.build(), self.marker)


class _DieOnce:
    def __init__(self, predictor: Any, marker: str) -> None:
        self.predictor = predictor
        self.marker = Path(marker)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.predictor, name)

    def predict(self, *args: Any, **kwargs: Any) -> Any:
        if not self.marker.exists():
            self.marker.touch()
            os._exit(1)  # a worker crash: no exception, no cleanup, the process is gone
        return self.predictor.predict(*args, **kwargs)
