"""Run the whole fault corpus and print its totals.

    .venv/bin/python -m tests.faults.summary [--json] [--tree PATH] [--jobs N] [--only TEXT]

Totals: cases / passed / unexpected errors / mixed-or-blocking output sets / hangs-or-OOM /
wrong outcomes / not applicable, then each failing case with what it showed. ``--tree``
runs the CLI of another checkout of terramask (e.g. a worktree of an older commit); the
inputs, the chat server and the judging stay those of this checkout.
"""

from __future__ import annotations

import argparse
import json
import queue
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from tests.faults.cases import all_cases, run_case
from tests.faults.harness import (
    CATEGORIES,
    HANG,
    MIXED,
    NOT_APPLICABLE,
    PASSED,
    SEVERITY,
    UNEXPECTED,
    WRONG,
    Launcher,
    Outcome,
    target_tree,
)
from tests.faults.inputs import build_inputs


def run_all(tree: Path, jobs: int, only: str | None, progress: bool,
            root: Path) -> tuple[list[Outcome], str]:  # fmt: skip
    cases = [c for c in all_cases() if not only or only in c.name]
    inputs = build_inputs(root / "inputs")
    todo: queue.Queue = queue.Queue()
    for index, case in enumerate(cases):
        todo.put((index, case))
    results: dict[int, Outcome] = {}
    imported: list[str] = []
    errors: list[BaseException] = []

    def worker(number: int) -> None:
        launcher = Launcher(tree=tree, scratch=root / f"scratch{number}")
        try:
            launcher.start()
            imported.append(str(launcher.terramask_file))
            while True:
                try:
                    index, case = todo.get_nowait()
                except queue.Empty:
                    return
                outcome = run_case(case, launcher, inputs, root / "cases")
                results[index] = outcome
                if progress:
                    mark = "." if outcome.category == PASSED else "x"
                    mark = "-" if outcome.category == NOT_APPLICABLE else mark
                    print(mark, end="", file=sys.stderr, flush=True)
        except BaseException as exc:
            errors.append(exc)
        finally:
            launcher.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(max(1, jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if progress:
        print(file=sys.stderr)
    if errors:
        raise errors[0]
    return [results[i] for i in sorted(results)], imported[0] if imported else "?"


def totals(outcomes: list[Outcome]) -> dict[str, int]:
    counts = {"cases": len(outcomes)}
    counts.update({category: 0 for category in CATEGORIES})
    for outcome in outcomes:
        counts[outcome.category] += 1
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the totals as JSON")
    parser.add_argument("--tree", type=Path, default=None,
                        help="the terramask checkout to run [default: this one]")
    parser.add_argument("--jobs", type=int, default=2, help="cases run at once [2]")
    parser.add_argument("--only", help="run only the cases whose name contains this")
    parser.add_argument("--quiet", action="store_true", help="no progress dots on stderr")
    parser.add_argument("--keep", action="store_true",
                        help="keep the folder of inputs and outputs (its path is printed)")
    parser.add_argument("--verbose", action="store_true",
                        help="every finding and run of each failing case")
    args = parser.parse_args(argv)
    tree = (args.tree or target_tree()).resolve()
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="terramask-faults-summary-"))
    try:
        outcomes, imported = run_all(tree, args.jobs, args.only, not args.quiet, root)
    finally:
        for path in [root, *root.rglob("*")]:  # read-only folders of the cases
            if path.is_dir() and not path.is_symlink():
                path.chmod(0o755)
        if args.keep:
            print(f"kept: {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    seconds = time.monotonic() - started
    counts = totals(outcomes)
    failing = [o for o in outcomes if o.category not in (PASSED, NOT_APPLICABLE)]
    if args.json:
        print(json.dumps({
            "tree": str(tree), "terramask": imported, "seconds": round(seconds, 1),
            "totals": counts,
            "by_group": _by_group(outcomes),
            "cases": [o.to_dict() for o in outcomes],
        }, indent=2))  # fmt: skip
        return 0
    print(f"tree: {tree} (imports {imported}); {seconds:.0f} s")
    print(
        f"{counts['cases']} cases / {counts[PASSED]} passed / {counts[UNEXPECTED]} unexpected "
        f"errors / {counts[MIXED]} mixed-or-blocking sets / {counts[HANG]} hangs-or-OOM / "
        f"{counts[WRONG]} wrong outcomes / {counts[NOT_APPLICABLE]} not applicable"
    )
    for category in SEVERITY:
        names = [o for o in failing if o.category == category]
        if not names:
            continue
        print(f"\n{category} ({len(names)}):")
        for outcome in names:
            if args.verbose:
                print("  " + outcome.report().replace("\n", "\n  "))
                continue
            first = (outcome.findings.get(category) or [""])[0]
            print(f"  {outcome.name}: {first}")
    skipped = [o for o in outcomes if o.category == NOT_APPLICABLE]
    if skipped:
        print(f"\n{NOT_APPLICABLE} ({len(skipped)}):")
        for outcome in skipped:
            print(f"  {outcome.name}: {outcome.note}")
    return 0


def _by_group(outcomes: list[Outcome]) -> dict[str, dict[str, int]]:
    groups: dict[str, dict[str, int]] = {}
    for outcome in outcomes:
        group = outcome.name.split("/", 1)[0]
        groups.setdefault(group, {c: 0 for c in ("cases", *CATEGORIES)})
        groups[group]["cases"] += 1
        groups[group][outcome.category] += 1
    return groups


if __name__ == "__main__":
    sys.exit(main())
