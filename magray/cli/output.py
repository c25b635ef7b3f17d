"""Rendering for the CLI: data to stdout, talk to stderr, colour only for people.

Machine formats (``--json``, ``--jsonl``) are the same for every command: one JSON
document, or one JSON object per line, with stable keys. Progress bars and colour appear
only when the stream is a terminal and ``NO_COLOR`` is unset.

Stored text never reaches the terminal raw (see ``magray.controls``): everything here that
prints a string escapes what could control a terminal or disguise text, people's output
visibly (``visible``), plain piped lines reversibly (``field``), JSON exactly (``dumps``).
"""

from __future__ import annotations

import os
import re
import sys
from contextlib import contextmanager
from functools import lru_cache
from typing import Annotated, Any, Callable, Iterable, Iterator, Sequence

import typer

from ..controls import dumps, field, visible

JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]
JsonlFlag = Annotated[bool, typer.Option("--jsonl", help="Print one JSON object per line.")]

_BLANKS = re.compile(r"[ \t\n]+")
PROGRESS_MIN = 64  # below this many items a progress bar is just flicker


def is_tty(stream: Any) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def color_allowed(stream: Any) -> bool:
    return is_tty(stream) and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


@lru_cache(maxsize=None)
def _console(stderr: bool):
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            # Rich's own exits 1; magray treats a reader that went away (`| head -1`) the
            # same everywhere: the command's handler makes it exit 0, quietly.
            self.quiet = True
            raise BrokenPipeError

    stream = sys.stderr if stderr else sys.stdout
    fancy = color_allowed(stream)
    return _Console(file=stream, stderr=stderr, highlight=False, no_color=not fancy,
                   force_terminal=fancy, emoji=False, soft_wrap=not fancy)


def stdout():
    return _console(False)


def stderr():
    return _console(True)


def human() -> bool:
    """Is a person reading stdout? (Tables and colour then; plain lines otherwise.)"""
    return is_tty(sys.stdout)


def say(message: str) -> None:
    """A note for the person at the terminal (stderr, only when it is a terminal)."""
    if is_tty(sys.stderr):
        stderr().print(visible(message), markup=False)


def hint(message: str) -> None:
    """A note on stderr for a person who must act (stdin waits on their terminal)."""
    sys.stderr.write(f"{visible(message)}\n")
    sys.stderr.flush()


def warn(message: str) -> None:
    """``warning: ...`` on stderr, one line: a message may quote input or a file name."""
    sys.stderr.write(f"warning: {visible(message)}\n")
    sys.stderr.flush()


def error(message: str) -> None:
    sys.stderr.write(f"error: {visible(message)}\n")
    sys.stderr.flush()


def pipe_closed() -> None:
    """stdout's reader went away (``| head``): send the rest of stdout to /dev/null, so that
    neither more output nor the flush at exit raises a second BrokenPipeError."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # not a real file (tests): nothing to redirect
        pass


def emit_json(data: Any) -> None:
    sys.stdout.write(dumps(data, indent=2) + "\n")


def emit_jsonl(rows: Iterable[Any]) -> None:
    for row in rows:
        sys.stdout.write(dumps(row) + "\n")


def emit_lines(lines: Iterable[str]) -> None:
    """Lines of output, each made of ``field``s or of magray's own text; any other control
    character left in one is still escaped (tabs and line breaks are magray's own)."""
    for line in lines:
        sys.stdout.write(visible(line, keep="\t\n") + "\n")


def emit_rows(items: Sequence[Any], *, json_out: bool, jsonl: bool, table: Callable[[], None],
              line: Callable[[Any], str], as_dict: Callable[[Any], Any] = lambda i: i.to_dict()
              ) -> None:
    """A listing in the format asked for: --json, --jsonl, a table on a terminal, or plain
    tab-separated lines for pipes."""
    if json_out:
        emit_json([as_dict(i) for i in items])
    elif jsonl:
        emit_jsonl(as_dict(i) for i in items)
    elif human():
        table()
    else:
        emit_lines(line(i) for i in items)


def one_line(text: str, width: int | None = None) -> str:
    """A text for a person, on one line (runs of spaces, tabs and newlines shown as one
    space; every other control character escaped, a CR too), optionally cut to ``width``."""
    flat = " ".join(_BLANKS.split(text.strip(" \t\n")))
    if width and len(flat) > width:
        flat = flat[: width - 1] + "…"
    return visible(flat)


def cell(text: str, width: int | None = None):
    """``one_line`` as a Rich ``Text``: a note's own [brackets] are not markup."""
    from rich.text import Text

    return Text(one_line(text, width))


def zone() -> str:
    """The local time zone's name (``UTC``, ``CET``): times for people are local, as
    ``--since 2026-01-31T09:00`` reads them, and say so."""
    from datetime import datetime

    return datetime.now().astimezone().tzname() or "local time"


def when(iso: str | None, *, seconds: bool = False, named: bool = False) -> str:
    """A stored UTC time as local wall-clock time: ``2026-01-31 09:00``; with the zone's
    name when ``named``, or when it is not today's (daylight saving time)."""
    if iso is None:
        return "-"
    from ..clock import parse_time

    moment = parse_time(iso).astimezone()
    text = moment.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")
    name = moment.tzname() or ""
    return f"{text} {name}" if name and (named or name != zone()) else text


@contextmanager
def progress(total: int, label: str) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr for large jobs on a terminal; a no-op callback otherwise."""
    if total < PROGRESS_MIN or not color_allowed(sys.stderr):
        yield lambda advance: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=stderr(), transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda advance: bar.advance(task, advance)
