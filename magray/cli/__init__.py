"""The command-line interface: a thin Typer layer over ``magray.Memory``.

Each command parses its options, calls one library method and renders the result; errors
from the library become one ``error: ...`` line on stderr and the documented exit code.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer
import typer.main

from . import coercion, output
from .app import app
# Registration order is the order of `magray --help`.
from . import store, search, records, trash  # noqa: F401,E402
from . import lifecycle, status, backup, transfer  # noqa: F401,E402
from . import scan  # noqa: F401,E402
from . import config, completion, mcp  # noqa: F401,E402
from . import ingest  # noqa: F401,E402

__all__ = ["app", "main"]


def main(argv: list[str] | None = None) -> None:
    """The console script: run the app, print usage errors as one line, exit with a code."""
    from typer import TyperException

    os.umask(0o077)  # everything magray writes is private to the user
    if os.environ.get("_MAGRAY_COMPLETE"):  # a shell asks for completions (completions/)
        from typer.completion import completion_init

        completion_init()
    args = sys.argv[1:] if argv is None else argv
    if (bad := _not_unicode(args)) is not None:
        output.error(bad)
        sys.exit(2)
    command = typer.main.get_command(_app_for(args))
    coercion.install(command)
    _name_metavars(command)
    try:
        code = command.main(args=argv, prog_name="magray", standalone_mode=False)
        sys.stdout.flush()  # a reader that went away shows here, not as noise at exit
    except TyperException as exc:  # bad usage: unknown option, bad value, missing argument
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `magray`: the help it asks for
            sys.stdout.write(exc.format_message() + "\n")
            sys.exit(0)
        output.error(exc.format_message().splitlines()[0] if exc.format_message() else str(exc))
        code = getattr(exc, "exit_code", 2)
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:  # the reader went away (| head): exit quietly
        output.pipe_closed()
        code = 0
    sys.exit(code if isinstance(code, int) else 0)


_METAVARS = {str: "TEXT", int: "INTEGER", float: "NUMBER", Path: "PATH"}


def _name_metavars(command: object) -> None:
    """Help that names values for people (``--tag TEXT``, ``ID``) instead of Typer's
    Python types (``--tag <list[str]>``, ``ID <list[str]>``); explicit metavars are kept."""
    from typing import get_args

    for param in getattr(command, "params", ()):
        descriptor = getattr(param, "type_descriptor", None)
        if descriptor is None:
            continue
        if param.param_type_name == "argument":
            param.metavar = param.metavar or param.name.upper()
            param.display_type_rich = lambda ctx: None  # the name says it: no "<list[str]>"
        elif param.metavar is None and not (param.is_flag or param.count or descriptor.is_choice):
            annotation = descriptor.annotation
            if descriptor.is_list:
                annotation = (get_args(annotation) or (str,))[0]
            param.metavar = _METAVARS.get(annotation)
    for sub in getattr(command, "commands", {}).values():
        _name_metavars(sub)


def _not_unicode(args: list[str]) -> str | None:
    """Why an argument cannot be taken (bytes that are not UTF-8 reach Python as lone
    surrogates, which could be stored but never printed or exported), or None."""
    from ..controls import has_surrogate

    for number, arg in enumerate(args, 1):
        if has_surrogate(arg):
            return f"argument {number} is not valid UTF-8: {arg}"  # error() escapes it
    return None


def _app_for(argv: list[str]) -> typer.Typer:
    """The app with only the command that ``argv`` names, when it names one (see
    ``MagrayTyper.only``). Anything else (no command, a misspelt one, completion) gets the
    whole app, so help and suggestions are unchanged."""
    name = _command_name(argv)
    if name is None or os.environ.get("_MAGRAY_COMPLETE"):
        return app
    return app.only(name) or app


def _command_name(argv: list[str]) -> str | None:
    """The first word of ``argv`` that is not a global option or its value."""
    words = iter(argv)
    for word in words:
        if word == "--home":
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None
