"""``magray trash`` (list, restore, empty) and ``magray duplicates``: nothing removed is
lost before a person says so."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, List, Optional

import typer

from ..records import Trashed
from . import filters, output
from .app import app, open_memory
from .records import _agreed, _ids

if TYPE_CHECKING:
    from ..dedupe import Cluster

trash_app = typer.Typer(
    name="trash",
    help="What forget, clean and merges removed, kept for trash_days: list, restore, empty.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(trash_app, name="trash")

Ids = Annotated[List[str], typer.Argument(
    metavar="ID", help="Ids of trashed records; '-' reads ids from stdin.", show_default=False)]


@trash_app.command("list")
def list_trash(
    ctx: typer.Context,
    json_out: output.JsonFlag = False,
    jsonl: output.JsonlFlag = False,
) -> None:
    """List the trash, most recently removed first: id, when, why, layer, text."""
    with open_memory(ctx) as memory:
        entries = memory.trash()
    output.emit_rows(entries, json_out=json_out, jsonl=jsonl, table=lambda: _table(entries),
                     line=_line)
    if not entries:
        output.say("the trash is empty")


@trash_app.command("restore")
def restore(ctx: typer.Context, ids: Ids, json_out: output.JsonFlag = False) -> None:
    """Put trashed records back whole: the same id, text, metadata and layer, findable
    again by meaning and by words. All or nothing. Counts as a use (last access now), so
    the next clean does not expire it again. Prints the ids restored."""
    wanted = _ids(ids)
    with open_memory(ctx) as memory:
        restored = memory.restore_from_trash(wanted)
    if json_out:
        output.emit_json([r.to_dict() for r in restored])
    else:
        output.emit_lines(str(r.id) for r in restored)
    output.say(f"restored {len(restored)} record(s)")


@trash_app.command("empty")
def empty(
    ctx: typer.Context,
    ids: Annotated[Optional[List[str]], typer.Argument(
        metavar="[ID]...", help="Only these trashed records (default: all).",
        show_default=False)] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be destroyed; "
                                                            "change nothing.")] = False,
    yes: Annotated[bool, typer.Option(
        "--yes", "-y", help="Do not ask, even on a terminal, before destroying several "
                            "records.")] = False,
    json_out: output.JsonFlag = False,
) -> None:
    """Destroy what is in the trash, for good (clean does it after trash_days). On a
    terminal, asks before destroying more than one record, as forget does."""
    wanted = _ids(ids) if ids else None
    with open_memory(ctx) as memory:
        if not dry_run and not yes:
            doomed = [t.record for t in memory.empty_trash(ids=wanted, dry_run=True)]
            if len(doomed) > 1 and not _agreed(
                    doomed, f"Destroy these {len(doomed)} trashed records for good?"):
                output.error("not confirmed; nothing was destroyed")
                raise typer.Exit(1)
        gone = memory.empty_trash(ids=wanted, dry_run=dry_run)
    if json_out:
        output.emit_json([t.to_dict() for t in gone])
    elif dry_run:
        output.emit_lines(_line(t) for t in gone)
    verb = "would destroy" if dry_run else "destroyed"
    output.say(f"{verb} {len(gone)} trashed record(s)")


def _line(t: Trashed) -> str:
    return (f"{t.record.id}\t{t.trashed_at}\t{t.reason}\t{t.record.layer}\t"
            f"{output.field(t.record.text)}")


def _table(entries: list[Trashed]) -> None:
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for column, style in (("id", "dim"), (f"trashed ({output.zone()})", "cyan"), ("why", None),
                          ("layer", "magenta"), ("text", None)):
        table.add_column(column, style=style, overflow="fold" if column == "text" else None)
    for t in entries:
        why = t.reason + (f" into #{t.merged_into}" if t.merged_into else "")
        table.add_row(str(t.record.id), output.when(t.trashed_at), why,
                      t.record.layer, output.cell(t.record.text, 400))
    output.stdout().print(table)


@app.command()
def duplicates(
    ctx: typer.Context,
    layer: filters.Layers = [],
    similarity: Annotated[Optional[float], typer.Option(
        help="Cosine similarity that makes two records near-duplicates (default: setting "
             "near_duplicate_similarity).", show_default=False)] = None,
    merge: Annotated[Optional[List[str]], typer.Option(
        "--merge", help="Merge these records (repeat, or give IDs separated by commas) into "
                        "the first: its metadata joins theirs, the others go to the trash.",
        show_default=False)] = None,
    json_out: output.JsonFlag = False,
) -> None:
    """List clusters of near-duplicate records with their similarity, closest first; or,
    with --merge, merge one cluster on purpose (every text stays restorable: clean never
    purges merged texts from the trash; only `magray trash empty` does)."""
    if merge:
        wanted = _ids([word for value in merge for word in value.replace(",", " ").split()])
        with open_memory(ctx) as memory:
            merged = memory.merge_duplicates(wanted)
        if json_out:
            output.emit_json(merged.to_dict())
        else:
            output.emit_lines([str(merged.kept.id)])
        output.say(f"merged {len(merged.merged)} record(s) into #{merged.kept.id}; "
                   f"`magray trash restore {' '.join(str(r.id) for r in merged.merged)}` "
                   "undoes it")
        return
    with open_memory(ctx) as memory:
        found = memory.duplicates(layers=layer, similarity=similarity)
    if json_out:
        output.emit_json([c.to_dict() for c in found])
    else:
        output.emit_lines(line for c in found for line in _cluster(c))
    output.say(f"{len(found)} cluster(s) of near-duplicates")


def _cluster(c: "Cluster") -> list[str]:
    lines = [f"{c.layer}\t{c.similarity:.3f}\t" + " ".join(str(r.id) for r in c.records)]
    return lines + [f"  {r.id}\t{output.field(r.text)}" for r in c.records]
