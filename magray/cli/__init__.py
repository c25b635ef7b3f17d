"""The command-line interface: a thin Typer layer over ``magray.Memory``.

Each command parses its options, calls one library method and renders the result; errors
from the library become one ``error: ...`` line on stderr and the documented exit code.
"""

from __future__ import annotations

import copy
import os
import sys

import typer
import typer.main

from . import coercion, output
from .app import app
# Registration order is the order of `magray --help`.
from . import store, search, records  # noqa: F401,E402
from . import lifecycle, status, backup, transfer  # noqa: F401,E402
from . import config, completion  # noqa: F401,E402
from . import ingest  # noqa: F401,E402

__all__ = ["app", "main"]


def main(argv: list[str] | None = None) -> None:
    """The console script: run the app, print usage errors as one line, exit with a code."""
    from typer import TyperException

    os.umask(0o077)  # everything magray writes is private to the user
    if os.environ.get("_MAGRAY_COMPLETE"):  # a shell asks for completions (completions/)
        from typer.completion import completion_init

        completion_init()
    command = typer.main.get_command(_app_for(sys.argv[1:] if argv is None else argv))
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


def _app_for(argv: list[str]) -> typer.Typer:
    """The app with only the command that ``argv`` names, when it names one: Typer builds
    every command's parameters on start-up (~20 ms for all of magray's), and a command
    run needs just its own. Anything else (no command, a misspelt one, completion) gets
    the whole app, so help and suggestions are unchanged."""
    name = _command_name(argv)
    if name is None or os.environ.get("_MAGRAY_COMPLETE"):
        return app
    commands = [c for c in app.registered_commands
                if (c.name or typer.main.get_command_name(c.callback.__name__)) == name]
    groups = [g for g in app.registered_groups
              if (g.name or g.typer_instance.info.name) == name]
    if not commands and not groups:
        return app
    trimmed = copy.copy(app)
    trimmed.registered_commands, trimmed.registered_groups = commands, groups
    return trimmed


def _command_name(argv: list[str]) -> str | None:
    """The first word of ``argv`` that is not a global option or its value."""
    words = iter(argv)
    for word in words:
        if word == "--home":
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None
