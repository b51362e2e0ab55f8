"""Each case of the fault corpus as a test: it passes when the CLI neither hangs, runs out of
memory, crashes nor reports a bug, leaves no partial output set or temporary file and no
leftover that blocks the same command, and does what the case expects (see cases.py).

A failure prints every finding and, for each run, its exit and its one-line message."""

from __future__ import annotations

import pytest

from tests.faults.cases import all_cases, run_case
from tests.faults.harness import NOT_APPLICABLE, PASSED

CASES = all_cases()


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_fault_case(case, fault_launcher, fault_inputs, fault_cases_root):
    outcome = run_case(case, fault_launcher, fault_inputs, fault_cases_root)
    if outcome.category == NOT_APPLICABLE:
        pytest.skip(outcome.note)  # only for another tree (TERRAMASK_FAULTS_TREE)
    assert outcome.category == PASSED, outcome.report()
