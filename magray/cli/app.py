"""The Typer application, its global options, and the one place errors become exit codes."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

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


class MagrayTyper(typer.Typer):
    """The app, remembering each command and group as it is registered (through Typer's
    public methods) so that a run of one command can build an app holding only that one:
    Typer builds every command's parameters on start-up (~20 ms for all of magray's, a
    tenth of a cold search), and a run needs just its own."""

    def __init__(self, **settings: Any):
        super().__init__(**settings)
        self._settings = settings
        self._root: Callable[[typer.Typer], Any] | None = None
        self._entries: dict[str, Callable[[typer.Typer], Any]] = {}

    def callback(self, *args: Any, **kwargs: Any) -> Callable:
        register = super().callback(*args, **kwargs)

        def remember(function: Callable) -> Callable:
            self._root = lambda app: app.callback(*args, **kwargs)(function)
            return register(function)

        return remember

    def command(self, name: str | None = None, **kwargs: Any) -> Callable:
        register = super().command(name, **kwargs)

        def remember(function: Callable) -> Callable:
            called = name or function.__name__.lower().replace("_", "-")  # as Typer names it
            self._entries[called] = lambda app: app.command(name, **kwargs)(function)
            return register(function)

        return remember

    def add_typer(self, typer_instance: typer.Typer, *, name: str | None = None,
                  **kwargs: Any) -> None:
        super().add_typer(typer_instance, name=name, **kwargs)
        if name is not None:  # a group without one is only in the whole app
            self._entries[name] = lambda app: app.add_typer(typer_instance, name=name,
                                                            **kwargs)

    def only(self, name: str) -> typer.Typer | None:
        """A new app with the global options and only the command or group ``name``; None
        when no such command was registered."""
        entry = self._entries.get(name)
        if entry is None:
            return None
        alone = typer.Typer(**self._settings)
        if self._root is not None:
            self._root(alone)
        entry(alone)
        return alone


app = MagrayTyper(
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
