"""``magray completion SHELL``: the shell completion script (also kept in completions/).

The scripts are Typer's: small stubs that ask ``magray`` itself for the candidates (through
the ``_MAGRAY_COMPLETE`` variable, see ``magray.cli.main``), so they never go out of date
as commands and options change.
"""

from __future__ import annotations

from typing import Annotated

import typer

from ..errors import InputError
from . import output
from .app import app

# shell -> the file name its completion loader looks for
SHELLS = {"bash": "magray.bash", "zsh": "_magray", "fish": "magray.fish"}


def script(shell: str) -> str:
    """The completion script for ``shell``, exactly as completions/ holds it."""
    from typer.completion import get_completion_script

    if shell not in SHELLS:
        raise InputError(f"unsupported shell {shell!r} (choose {', '.join(SHELLS)})")
    return get_completion_script(prog_name="magray", complete_var="_MAGRAY_COMPLETE",
                                 shell=shell) + "\n"


@app.command()
def completion(
    shell: Annotated[str, typer.Argument(
        metavar="SHELL", help="bash, zsh or fish.", show_default=False,
        autocompletion=lambda incomplete: [s for s in SHELLS if s.startswith(incomplete)])],
) -> None:
    """Print a shell completion script (bash, zsh or fish). For example:
    magray completion fish > ~/.config/fish/completions/magray.fish"""
    output.emit_lines([script(shell).rstrip("\n")])
