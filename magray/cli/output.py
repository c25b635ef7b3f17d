"""Rendering for the CLI: data to stdout, talk to stderr, colour only for people.

Machine formats (``--json``, ``--jsonl``) are the same for every command: one JSON
document, or one JSON object per line, with stable keys. Progress bars and colour appear
only when the stream is a terminal and ``NO_COLOR`` is unset.
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from functools import lru_cache
from typing import Annotated, Any, Callable, Iterable, Iterator, Sequence

import typer

JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]
JsonlFlag = Annotated[bool, typer.Option("--jsonl", help="Print one JSON object per line.")]

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

    stream = sys.stderr if stderr else sys.stdout
    fancy = color_allowed(stream)
    return Console(file=stream, stderr=stderr, highlight=False, no_color=not fancy,
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
        stderr().print(message, markup=False)


def warn(message: str) -> None:
    sys.stderr.write(f"warning: {message}\n")
    sys.stderr.flush()


def error(message: str) -> None:
    sys.stderr.write(f"error: {message}\n")
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
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")


def emit_jsonl(rows: Iterable[Any]) -> None:
    for row in rows:
        sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")


def emit_lines(lines: Iterable[str]) -> None:
    for line in lines:
        sys.stdout.write(line + "\n")


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
    """A text on one line (newlines and tabs shown as spaces), optionally cut to ``width``."""
    flat = " ".join(text.split())
    if width and len(flat) > width:
        return flat[: width - 1] + "…"
    return flat


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
