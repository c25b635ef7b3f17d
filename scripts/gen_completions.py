#!/usr/bin/env python3
"""Regenerate the shell completion scripts in completions/ from the app.

    python scripts/gen_completions.py          # rewrite completions/
    python scripts/gen_completions.py --check  # exit 1 if any file is stale

tests/cli/test_shell.py runs the same comparison, so a stale file fails the suite.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from magray.cli.completion import SHELLS, script  # noqa: E402


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for shell, filename in SHELLS.items():
        target = ROOT / "completions" / filename
        wanted = script(shell)
        if target.exists() and target.read_text() == wanted:
            continue
        stale.append(target.relative_to(ROOT))
        if not check:
            target.parent.mkdir(exist_ok=True)
            target.write_text(wanted)
    for path in stale:
        print(f"{'stale' if check else 'wrote'}: {path}")
    return 1 if check and stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
