"""The Typer application, its global options, and the one place errors become exit codes."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperGroup

from .. import __version__
from ..errors import MagrayError
from . import output
from .flags import message as in_flags


class MagrayGroup(TyperGroup):
    """Turns a MagrayError raised by any command into ``error: ...`` and its exit code."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:  # `magray ... | head`: the reader has all it wants
            output.pipe_closed()
            raise typer.Exit(0) from None
        except (MagrayError, OSError) as exc:
            if os.environ.get("MAGRAY_DEBUG"):
                raise
            output.error(in_flags(exc, ctx.invoked_subcommand)
                         if isinstance(exc, MagrayError) else _describe(exc))
            raise typer.Exit(getattr(exc, "exit_code", 1)) from None


def _describe(exc: OSError) -> str:
    """An OS failure (disk full, permission denied...) as one line."""
    where = f": {exc.filename}" if exc.filename else ""
    return f"{exc.strerror or exc}{where}"


app = typer.Typer(
    cls=MagrayGroup,
    name="magray",
    help="Personal knowledge memory: store notes, commands and decisions; find them by meaning.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"magray {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    home: Annotated[Optional[Path], typer.Option(
        "--home", envvar="MAGRAY_HOME", show_envvar=True,
        help="Keep data, config and backups under this one directory.")] = None,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """magray: personal knowledge memory in your terminal."""
    ctx.obj = {"home": home}


def open_memory(ctx: typer.Context, **flags: Any):
    """Open the memory for a command; ``flags`` are settings given on the command line."""
    from .. import config, paths
    from ..memory import Memory

    home = ctx.find_root().obj.get("home")
    settings = config.load(paths.resolve(home).config_file).replace(**flags)
    return Memory.open(home, settings=settings, warn=output.warn,
                       note=lambda message: print(message, file=sys.stderr, flush=True))
