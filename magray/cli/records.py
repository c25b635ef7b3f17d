"""Everyday record commands: ``show`` one, ``list`` the newest, ``forget`` some."""

from __future__ import annotations

import sys
from typing import Annotated, List

import typer

from ..errors import InputError, NotFoundError
from ..records import Record
from . import filters, output
from .coercion import INT64
from .app import app, open_memory


@app.command()
def show(
    ctx: typer.Context,
    record_id: Annotated[int, typer.Argument(metavar="ID", help="The record's id.",
                                             show_default=False)],
    json_out: output.JsonFlag = False,
    jsonl: output.JsonlFlag = False,
) -> None:
    """Show one record with all its fields. Counted as an access (you asked for it)."""
    with open_memory(ctx) as memory:
        record = memory.show(record_id)
    if record is None:
        raise NotFoundError(f"no record with id {record_id}")
    if json_out:
        output.emit_json(record.to_dict())
    elif jsonl:
        output.emit_jsonl([record.to_dict()])
    else:
        _details(record)


@app.command("list")
def list_records(
    ctx: typer.Context,
    layer: filters.Layers = [],
    tag: filters.Tags = [],
    project: filters.Project = None,
    session: filters.Session = None,
    kind: filters.Kind = None,
    since: filters.Since = None,
    until: filters.Until = None,
    limit: Annotated[int, typer.Option("--limit", "-n",
                                       help="How many to show; 0 shows all.")] = 20,
    json_out: output.JsonFlag = False,
    jsonl: output.JsonlFlag = False,
) -> None:
    """List the newest records. The filters are those of search."""
    chosen = filters.make(tag, project, session, kind, since, until)
    if limit < 0:
        raise InputError(f"--limit must be 0 (all) or more, got {limit}")
    with open_memory(ctx) as memory:
        records = memory.list_records(layers=layer, filters=chosen, limit=limit or None)
    output.emit_rows(records, json_out=json_out, jsonl=jsonl, table=lambda: _table(records),
                     line=lambda r: f"{r.id}\t{r.created_at}\t{r.layer}\t{output.field(r.text)}")
    if not records:
        output.say("no records")


@app.command()
def forget(
    ctx: typer.Context,
    ids: Annotated[List[str], typer.Argument(
        metavar="ID", help="Ids of the records to forget; '-' reads ids from stdin "
                              "(separated by spaces or newlines).", show_default=False)],
    purge: Annotated[bool, typer.Option(
        "--purge", help="Destroy them at once instead of moving them to the trash (for a "
                        "secret pasted by mistake).")] = False,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Show what would be forgotten; change nothing.")] = False,
    yes: Annotated[bool, typer.Option(
        "--yes", "-y", help="Do not ask, even on a terminal, before forgetting several "
                            "records.")] = False,
    json_out: output.JsonFlag = False,
) -> None:
    """Move records to the trash: out of search, list and export, restorable with `magray
    trash restore` until clean purges the trash after trash_days. All or nothing: if an id
    does not exist, nothing is forgotten. On a terminal, asks before forgetting more than
    one record. Prints the ids forgotten, one per line."""
    wanted = _ids(ids, empty_pipe=True)
    if not wanted:  # `search ... | jq .id | magray forget -` that matched nothing
        if json_out:
            output.emit_json([])
        output.say("nothing to forget: no ids on stdin")
        return
    with open_memory(ctx) as memory:
        chosen = memory.forget(wanted, dry_run=True)
        where = "destroy them for good" if purge else "move them to the trash"
        if not dry_run and len(chosen) > 1 and not yes and not _agreed(
                chosen, f"Forget these {len(chosen)} records ({where})?"):
            output.error("not confirmed; nothing was forgotten")
            raise typer.Exit(1)
        forgotten = chosen if dry_run else memory.forget(wanted, purge=purge)
    if json_out:
        output.emit_json([{"id": r.id, "layer": r.layer} for r in forgotten])
    elif dry_run:
        output.emit_lines(f"{r.id}\t{r.layer}\t{output.field(r.text)}" for r in forgotten)
    else:
        output.emit_lines(str(r.id) for r in forgotten)
    verb = "would forget" if dry_run else "destroyed" if purge else "moved to the trash"
    output.say(f"{verb} {len(forgotten)} record(s)")


def _agreed(records: list[Record], question: str) -> bool:
    """Ask the person at a terminal; scripts (stdin not a terminal) never wait. ^C at the
    question interrupts (exit 130); end of input declines."""
    if not output.is_tty(sys.stdin):
        return True
    for r in records[:10]:
        output.stderr().print(f"  {r.id}  {r.layer}  {output.one_line(r.text, 70)}",
                              markup=False)
    if len(records) > 10:
        output.stderr().print(f"  ... and {len(records) - 10} more", markup=False)
    try:
        return typer.confirm(question, err=True)
    except typer.Abort as exc:  # end of input, or ^C (click keeps it as the context)
        if isinstance(exc.__context__, KeyboardInterrupt):
            raise KeyboardInterrupt from None
        return False


def _ids(values: list[str], *, empty_pipe: bool = False) -> list[int]:
    """Record ids from arguments and, for '-', stdin. None at all is bad usage, unless
    ``empty_pipe``: then ids piped from a search that matched nothing give an empty list."""
    words: list[str] = []
    for value in values:
        if value == "-":
            words += sys.stdin.read().split()
        else:
            words.append(value)
    ids = [record_id(word) for word in words]
    if not ids and not (empty_pipe and "-" in values):
        raise InputError("no record ids given")
    return ids


def record_id(word: str) -> int:
    """A record id: ASCII digits (``int()`` would read ``٣`` as 3), 1 to SQLite's 2**63-1."""
    if not (word.isascii() and word.isdigit()) or not 1 <= int(word) <= INT64:
        raise InputError(f"{output.visible(repr(word))} is not a record id")
    return int(word)


def _details(record: Record) -> None:
    """Field per line, then the text after a blank line: easy to read and to grep."""
    fields = record.to_dict()
    text = fields.pop("text")
    fields["tags"] = ", ".join(record.tags)
    width = max(map(len, fields))
    body = output.visible(text, keep="\n\t")  # the text's own lines; no CR, no escapes
    if output.human():
        from rich.text import Text

        console = output.stdout()
        for name, value in fields.items():
            console.print(Text.assemble((name.ljust(width), "dim"), "  ", _plain(value)))
        console.print()
        console.print(Text(body))
    else:
        output.emit_lines(f"{name.ljust(width)}  {_plain(value)}" for name, value in fields.items())
        output.emit_lines(["", body])


def _plain(value: object) -> str:
    """A field's value on its one line: a newline in a project cannot fake another field."""
    return "" if value is None else output.visible(str(value))


def _table(records: list[Record]) -> None:
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for column, style in (("id", "dim"), (f"created ({output.zone()})", "cyan"),
                          ("layer", "magenta"), ("text", None), ("tags", "green")):
        table.add_column(column, style=style, overflow="fold" if column == "text" else None)
    for r in records:  # Text(): a note's own [brackets] are not Rich markup
        table.add_row(str(r.id), output.when(r.created_at), r.layer,
                      output.cell(r.text, 400), output.cell(", ".join(r.tags)))
    output.stdout().print(table)
