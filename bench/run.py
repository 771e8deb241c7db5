"""``python bench/run.py <name>``: the same entry point as ``python -m bench``."""

import sys
from pathlib import Path

if not __package__:
    # Run as a script: make the repository root importable so ``bench`` resolves.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
