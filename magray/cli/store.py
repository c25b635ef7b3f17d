"""``magray store``: texts from arguments or stdin (plain lines or JSON Lines)."""

from __future__ import annotations

import sys
from contextlib import nullcontext
from typing import Annotated, List, Optional

import typer

from ..errors import InputError, StoreInterrupted
from ..records import NewRecord
from . import output
from .app import app, open_memory

Tags = Annotated[List[str], typer.Option("--tag", "-t", help="Tag (repeatable).")]


@app.command()
def store(
    ctx: typer.Context,
    texts: Annotated[Optional[List[str]], typer.Argument(
        help="Texts to store, one record each; '-' (or no TEXT with piped stdin) reads stdin, "
             "one record per non-empty line.", show_default=False)] = None,
    layer: Annotated[Optional[str], typer.Option(
        "--layer", "-l", help="interact, insights or assets (default: setting default_layer, "
                              "assets).", show_default=False)] = None,
    tag: Tags = [],
    project: Annotated[Optional[str], typer.Option(help="Project name.")] = None,
    session: Annotated[Optional[str], typer.Option(help="Session name.")] = None,
    kind: Annotated[Optional[str], typer.Option(help="Kind: note, command, decision...")] = None,
    importance: Annotated[float, typer.Option(help="Your own importance, 0 to 1.")] = 0.0,
    jsonl: Annotated[bool, typer.Option(
        "--jsonl", help="Read stdin as JSON Lines: text (required), layer, tags, project, "
                        "session, kind, importance, created_at.")] = False,
    json_out: output.JsonFlag = False,
) -> None:
    """Store texts. Prints the record ids, one per line; an exact repeat of a text in the same
    layer counts as an access of the existing record and is reported as a duplicate. A text
    that closely resembles a record of its layer is stored too, and the record it resembles
    is named (--json: near and similarity)."""
    from .. import ingest

    if layer is not None:
        ingest.check_layer(layer, "--layer")
    fields = dict(tags=tuple(sorted({_tag(t) for t in tag})),
                  project=ingest.check_name(project, "--project"),
                  session=ingest.check_name(session, "--session"),
                  kind=ingest.check_name(kind, "--kind"),
                  importance=ingest.check_importance(importance, "--importance"))
    with open_memory(ctx) as memory:
        template = NewRecord(text="", layer=layer or memory.settings.default_layer, **fields)
        limit = memory.settings.max_text_bytes
        if texts and texts != ["-"]:
            if jsonl:
                raise InputError("--jsonl reads stdin; give '-' or no TEXT")
            items = ingest.from_args(texts, template, limit)
        elif not texts and output.is_tty(sys.stdin):
            raise InputError("nothing to store: give TEXT, or pipe lines on stdin")
        else:  # validated whole, spooled to disk, then embedded and committed in batches
            if output.is_tty(sys.stdin):  # `store -` typed at a prompt: say what it waits for
                output.hint("reading texts from the terminal, one record per line; "
                            "Ctrl-D stores them, Ctrl-C cancels")
            items = ingest.stream_lines(sys.stdin.buffer, template, limit, jsonl=jsonl,
                                        directory=memory.paths.data)
        spool = items if isinstance(items, ingest.Validated) else nullcontext()
        interrupted = False
        with spool, output.progress(len(items), "embedding") as advance:
            try:
                results = memory.store(items, progress=advance)
            except StoreInterrupted as stop:  # what was committed is kept: say so
                results, interrupted = stop.stored, True
    if json_out:
        output.emit_json([r.to_dict() for r in results])
    else:
        output.emit_lines(str(r.id) for r in results)
    duplicates = sum(r.duplicate for r in results)
    for r in results:
        if r.near is not None:  # one line each, so that no resemblance goes unseen
            output.say(f"#{r.id} resembles #{r.near} (similarity {r.similarity:.3f}); both "
                       "are kept: `magray duplicates` reviews them")
    if interrupted:
        output.error(f"interrupted: stored {len(results) - duplicates}, {duplicates} "
                     "duplicate(s) (their ids are above); the rest were not stored")
        raise typer.Exit(StoreInterrupted.exit_code)
    output.say(f"stored {len(results) - duplicates}, {duplicates} duplicate(s)")


def _tag(value: str) -> str:
    if not value.strip():
        raise InputError("--tag: a tag must not be empty")
    return value.strip()
