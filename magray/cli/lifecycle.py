"""``magray promote``, ``magray clean``, ``magray optimize``: the memory lifecycle."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, List, Optional

import typer

from .. import units
from . import output
from .app import app, open_memory

if TYPE_CHECKING:
    from ..layers import PromotionDecision
    from ..lifecycle import CleanReport, PromotionReport
    from ..maintenance import OptimizeReport

DryRun = Annotated[bool, typer.Option("--dry-run", help="Show what would change; change "
                                                        "nothing.")]


@app.command()
def promote(
    ctx: typer.Context,
    from_layer: Annotated[List[str], typer.Option(
        "--from", help="Promote only from this layer: interact or insights (repeatable; "
                       "default both).")] = [],
    threshold: Annotated[Optional[float], typer.Option(
        help="Score needed, for this run only (default: settings promote_to_insights and "
             "promote_to_assets).", show_default=False)] = None,
    record: Annotated[List[int], typer.Option(
        "--id", help="Only this record (repeatable); its decision is always shown.")] = [],
    dry_run: DryRun = False,
    explain: Annotated[bool, typer.Option(
        "--explain", help="Show every scored record with each feature's contribution "
                          "(--json always has them).")] = False,
    json_out: output.JsonFlag = False,
) -> None:
    """Move records that proved valuable one layer up: interact -> insights -> assets.
    The score weighs accesses, recency, age, importance words, your own importance and near
    neighbours (a recurring topic); --explain shows each part."""
    with open_memory(ctx) as memory:
        report = memory.promote(layers=tuple(from_layer), threshold=threshold, ids=tuple(record),
                                dry_run=dry_run, explain=explain or json_out)
    if json_out:
        output.emit_json(report.to_dict())
    elif explain or record:
        output.emit_lines(line for d in report.decisions for line in _explanation(d))
    else:
        _moves(report)
    verb = "would promote" if dry_run else "promoted"
    output.say(f"{verb} {len(report.moved)} of {report.scored} scored record(s)")


def _moves(report: "PromotionReport") -> None:
    rows = [(str(d.id), f"{d.layer} -> {d.target}", f"{d.score:.3f}", d.outcome, d.text)
            for d in report.moved]
    if not output.human():
        output.emit_lines("\t".join((*row[:4], output.field(row[4]))) for row in rows)
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for column, style in (("id", "dim"), ("move", "magenta"), ("score", "cyan"),
                          ("outcome", None), ("text", None)):
        table.add_column(column, style=style, overflow="fold" if column == "text" else None)
    for row in rows:
        table.add_row(*row[:4], output.cell(row[4], 200))
    output.stdout().print(table)


def _explanation(d: "PromotionDecision") -> list[str]:
    merged = f" into #{d.merged_into}" if d.merged_into else ""
    verdict = ">=" if d.promote else "<"
    lines = [f"#{d.id} {d.layer} -> {d.target}: score {d.score:.3f} {verdict} {d.threshold:g}"
             f", {d.outcome}{merged}", f"  text        {output.one_line(d.text, 100)}"]
    for c in d.contributions:
        lines.append(f"  {c.feature:<11} {c.value:5.3f} x {c.weight:4.2f} = {c.points:5.3f}   "
                     f"{c.detail}")
    return lines + [""]


@app.command()
def clean(
    ctx: typer.Context,
    dry_run: DryRun = False,
    promote_first: Annotated[Optional[bool], typer.Option(
        "--promote/--no-promote", help="Run the promotion first, so valuable notes move up "
                                       "before they expire (default: setting clean_promotes).",
        show_default=False)] = None,
    json_out: output.JsonFlag = False,
) -> None:
    """Expire records past their layer's TTL, evict the lowest-value records of a layer over
    its capacity (both go to the trash), purge the trash of what it has held for trash_days,
    prune the embedding cache. Safe under cron: never prompts, prints one line;
    exits 1, removing nothing there, when a layer's index cannot be brought in step."""
    with open_memory(ctx) as memory:
        report = memory.clean(dry_run=dry_run, promote=promote_first)
    if json_out:
        output.emit_json(report.to_dict())
    else:
        if dry_run:
            output.emit_lines(_planned(report))
        output.emit_lines([_clean_summary(report)])
    for problem in report.problems:
        output.error(problem)
    if report.problems:
        raise typer.Exit(1)


def _planned(report: "CleanReport") -> list[str]:
    lines = [f"promote\t{d.id}\t{d.layer} -> {d.target}\t{output.field(d.text)}"
             for d in (report.promotion.moved if report.promotion else ())]
    lines += [f"{'expire' if r.reason == 'expired' else 'evict'}\t{r.id}\t{r.layer}\t"
              f"{output.field(r.text)}" for r in report.removed]
    return lines + [f"purge\t{t.record.id}\t{t.record.layer}\t{output.field(t.record.text)}"
                    for t in report.purged_records]


def _clean_summary(report: "CleanReport") -> str:
    promoted = len(report.promotion.moved) if report.promotion else 0
    cache = f"{report.cache_entries} cache entries ({units.size(report.cache_bytes)})"
    counts = (promoted, report.count("expired"), report.count("evicted"))
    if report.dry_run:
        text = ("clean --dry-run: would promote {}, expire {}, evict {}, prune ".format(*counts)
                + cache + "; nothing was changed")
    else:
        text = "clean: promoted {}, expired {}, evicted {}, pruned ".format(*counts) + cache
    if report.removed:
        text += ("; expired and evicted records would go to the trash" if report.dry_run
                 else "; expired and evicted records are in the trash (`magray trash list`)")
    if report.purged:
        text += f"; {'would purge' if report.dry_run else 'purged'} {report.purged} from the trash"
    if report.skipped:
        text += f"; kept {report.skipped} used meanwhile"
    return text


@app.command()
def optimize(
    ctx: typer.Context,
    reembed: Annotated[bool, typer.Option(
        "--reembed", help="First re-embed every record with the configured model (after a "
                          "model change); resumable: a rerun continues.")] = False,
    json_out: output.JsonFlag = False,
) -> None:
    """Rebuild each layer's index from the stored vectors (compacting it), check it agrees
    with the database, prune orphans, optimize full-text search, VACUUM and ANALYZE."""
    from ..maintenance import pending_reembed

    with open_memory(ctx) as memory:
        total = pending_reembed(memory.db, memory.encoder) if reembed else 0
        with output.progress(total, "re-embedding") as advance:
            report = memory.optimize(reembed=reembed, progress=advance)
    if json_out:
        output.emit_json(report.to_dict())
    else:
        output.emit_lines(_optimized(report))


def _optimized(report: "OptimizeReport") -> list[str]:
    lines = []
    if report.reembed is not None:
        r = report.reembed
        if r.embedded or r.resumed:
            lines.append(f"re-embedded {r.embedded + r.resumed} records with {r.model_key} "
                         f"({r.dim} dimensions; was {r.previous_key}, {r.previous_dim})"
                         + (f", {r.resumed} of them in an earlier run" if r.resumed else ""))
        else:
            lines.append(f"nothing to re-embed: every record is embedded with {r.model_key}")
    for c in report.indexes:
        lines.append(f"{c.layer:<9} {c.records:>9,} records  index "
                     f"{units.size(c.before_bytes)} -> {units.size(c.after_bytes)}  "
                     f"(was {c.was})")
    o = report.orphans
    lines.append(f"database  {units.size(report.database_before)} -> "
                 f"{units.size(report.database_after)}; "
                 f"full-text index {report.fts}; pruned {o.get('index_log', 0)} index-log rows, "
                 f"{o.get('embed_cache', 0)} cache entries of other models, "
                 f"{o.get('temp_files', 0)} temporary files")
    return lines

