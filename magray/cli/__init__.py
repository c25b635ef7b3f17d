"""The command-line interface: a thin Typer layer over ``magray.Memory``.

Each command parses its options, calls one library method and renders the result; errors
from the library become one ``error: ...`` line on stderr and the documented exit code.
"""

from __future__ import annotations

import os
import sys

from . import coercion, output
from .app import app
from . import search as _search, store as _store  # noqa: F401  (registers the commands)

__all__ = ["app", "main"]


def main(argv: list[str] | None = None) -> None:
    """The console script: run the app, print usage errors as one line, exit with a code."""
    import typer.main
    from typer import TyperException

    command = typer.main.get_command(app)
    coercion.install(command)
    try:
        code = command.main(args=argv, prog_name="magray", standalone_mode=False)
    except TyperException as exc:  # bad usage: unknown option, bad value, missing argument
        output.error(exc.format_message().splitlines()[0] if exc.format_message() else str(exc))
        code = getattr(exc, "exit_code", 2)
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:
        # The reader went away (| head): exit quietly, without a second EPIPE at shutdown.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    sys.exit(code if isinstance(code, int) else 0)
