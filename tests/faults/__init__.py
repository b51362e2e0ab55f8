"""The fault corpus (issue #11): broken and odd rasters, vector prompt files and class lists,
bad or inapplicable options, output folders that are files, read-only or full, a
fault-injecting MLLM endpoint, and SIGINT/SIGKILL in the middle of runs — each case run
through the real `terramask` CLI in a process of its own, with a time and a memory limit.

- `inputs.py` generates every input (nothing binary is committed);
- `cases.py` lists the cases and what each expects;
- `harness.py` runs the CLI (forked from `runtime/fault_zygote.py`, which has the libraries
  loaded) and classifies each case: passed, unexpected error, mixed or blocking output set,
  hang or OOM, or wrong outcome;
- `test_corpus.py` makes each case a test; ``pytest -n 2 tests/faults``;
- ``python -m tests.faults.summary [--json] [--verbose]`` prints the totals.

Measuring an older commit (its CLI, this checkout's inputs and judging)::

    git worktree add /tmp/tm-before 210516c
    .venv/bin/python -m tests.faults.summary --tree /tmp/tm-before
    git worktree remove /tmp/tm-before --force

(``TERRAMASK_FAULTS_TREE=/tmp/tm-before pytest tests/faults`` does the same as tests; cases
using a flag the older CLI lacks are then skipped as not applicable.)
"""
