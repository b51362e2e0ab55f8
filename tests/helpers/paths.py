"""Where the shared data lives: the `shared/` folder beside the checkout (no absolute paths)."""

from __future__ import annotations

from pathlib import Path

#: the repository root: the parent of `tests/`
REPO_ROOT = Path(__file__).resolve().parents[2]


def shared_folder() -> Path:
    """`<checkout>/../shared`, whether or not it exists."""
    return REPO_ROOT.parent / "shared"


def rs_samples_folder() -> Path:
    """The real labelled remote-sensing samples: `<checkout>/../shared/data/rs-samples`."""
    return shared_folder() / "data" / "rs-samples"
