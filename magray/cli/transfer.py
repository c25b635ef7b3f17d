"""``magray export`` and ``magray import``: records as JSON Lines (or Markdown) and back."""

from __future__ import annotations

import os
import sys
from contextlib import closing, nullcontext
from pathlib import Path
from typing import IO, Annotated, Optional

import typer

from ..errors import InputError, MagrayError, NotFoundError
from . import filters, output
from .app import app, open_memory


def _complete_format(incomplete: str) -> list[str]:
    from ..transfer import FORMATS

    return [f for f in FORMATS if f.startswith(incomplete)]


@app.command()
def export(
    ctx: typer.Context,
    layer: filters.Layers = [],
    tag: filters.Tags = [],
    project: filters.Project = None,
    session: filters.Session = None,
    kind: filters.Kind = None,
    since: filters.Since = None,
    until: filters.Until = None,
    fmt: Annotated[str, typer.Option(
        "--format", "-f", help="jsonl (every field, one record per line) or markdown "
                               "(a readable document grouped by layer).",
        autocompletion=_complete_format)] = "jsonl",
    with_vectors: Annotated[bool, typer.Option(
        "--with-vectors", help="Include each embedding (base64 float32) so that an import "
                               "into a memory with the same model skips re-embedding.")] = False,
    out: Annotated[Optional[Path], typer.Option(
        "--output", "-o", help="Write to this file (replaced atomically) instead of stdout.",
        show_default=False)] = None,
) -> None:
    """Export records as JSON Lines or Markdown. Every field of every record, or of those
    the filters select; JSON Lines is what `magray import` reads."""
    from .. import transfer

    if fmt not in transfer.FORMATS:
        raise InputError(f"--format must be one of {', '.join(transfer.FORMATS)}, got {fmt!r}")
    if with_vectors and fmt != "jsonl":
        raise InputError("--with-vectors needs --format jsonl")
    chosen = filters.make(tag, project, session, kind, since, until)
    write = transfer.write_markdown if fmt == "markdown" else transfer.write_jsonl
    with open_memory(ctx) as memory, closing(memory.export(
            layers=layer, filters=chosen, vectors=with_vectors,
            by_layer=fmt == "markdown")) as entries:
        if out is None or str(out) == "-":
            count = write(entries, sys.stdout)
        else:
            count = _write_file(out, lambda handle: write(entries, handle))
    output.say(f"exported {count} record(s)" + (f" to {out}" if out else ""))


def _write_file(path: Path, write) -> int:
    """Write through a private temporary file renamed over ``path``: a reader (or a crash)
    never sees half an export."""
    from .. import files

    try:
        with files.replacing(path) as tmp:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                return write(handle)
    except OSError as exc:
        raise MagrayError(f"cannot write {path}: {exc.strerror}") from None


@app.command("import")
def import_records(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(
        metavar="FILE", help="A JSON Lines export; '-' reads stdin.", show_default=False)],
    json_out: output.JsonFlag = False,
) -> None:
    """Import a JSON Lines export, merging. A text already stored in the same layer is not stored
    again (its tags and times are joined); layers, tags, projects, timestamps, access
    counts and, in a fresh memory, ids are kept; a line without a layer goes to the
    setting default_layer. The whole file is checked first: a bad
    line is reported with its number and nothing is written (exit 2)."""
    from .. import transfer

    with open_memory(ctx) as memory, _open(source) as stream:
        with transfer.read(stream, memory.settings.max_text_bytes, memory.paths.data,
                           memory.settings.default_layer) as entries:
            with output.progress(len(entries), "importing") as advance:
                report = memory.import_records(entries, progress=advance)
    if json_out:
        output.emit_json(report.to_dict())
    output.say(f"added {report.added}, merged {report.merged}, unchanged {report.unchanged}"
               f" ({report.embedded} embedded)")


def _open(source: str) -> IO[bytes]:
    if source == "-":
        return nullcontext(sys.stdin.buffer)
    try:
        return open(source, "rb")
    except FileNotFoundError:
        raise NotFoundError(f"no such file: {source}") from None
    except IsADirectoryError:
        raise InputError(f"{source} is a directory, not an export file") from None
    except OSError as exc:
        raise MagrayError(f"cannot read {source}: {exc.strerror}") from None
