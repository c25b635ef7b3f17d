"""The command-line interface: a thin Typer layer over ``magray.Memory``.

Each command parses its options, calls one library method and renders the result; errors
from the library become one ``error: ...`` line on stderr and the documented exit code.
"""

from __future__ import annotations

import os
import sys

from . import coercion, output
from .app import app
# Registration order is the order of `magray --help`.
from . import store, search, records  # noqa: F401,E402
from . import lifecycle, status, backup, transfer  # noqa: F401,E402
from . import config, completion  # noqa: F401,E402

__all__ = ["app", "main"]


def main(argv: list[str] | None = None) -> None:
    """The console script: run the app, print usage errors as one line, exit with a code."""
    import typer.main
    from typer import TyperException

    os.umask(0o077)  # everything magray writes is private to the user
    if os.environ.get("_MAGRAY_COMPLETE"):  # a shell asks for completions (completions/)
        from typer.completion import completion_init

        completion_init()
    command = typer.main.get_command(app)
    coercion.install(command)
    try:
        code = command.main(args=argv, prog_name="magray", standalone_mode=False)
        sys.stdout.flush()  # a reader that went away shows here, not as noise at exit
    except TyperException as exc:  # bad usage: unknown option, bad value, missing argument
        output.error(exc.format_message().splitlines()[0] if exc.format_message() else str(exc))
        code = getattr(exc, "exit_code", 2)
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:  # the reader went away (| head): exit quietly
        output.pipe_closed()
        code = 0
    sys.exit(code if isinstance(code, int) else 0)
