"""Session fixtures of the fault corpus: its inputs, built once, and the process that runs
the CLI (one per xdist worker)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.harness import Launcher
from tests.faults.inputs import Inputs, build_inputs


@pytest.fixture(scope="session")
def fault_inputs(tmp_path_factory: pytest.TempPathFactory) -> Inputs:
    return build_inputs(tmp_path_factory.mktemp("fault-inputs"))


@pytest.fixture(scope="session")
def fault_launcher(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    launcher = Launcher(scratch=tmp_path_factory.mktemp("fault-scratch"))
    launcher.start()
    yield launcher
    launcher.close()


@pytest.fixture(scope="session")
def fault_cases_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fault-cases")
