"""``magray search``: find records by meaning, by words, or both."""

from __future__ import annotations

from typing import Annotated, List, Optional

import typer

from ..records import Hit
from . import filters, output
from .app import app, open_memory


@app.command()
def search(
    ctx: typer.Context,
    query: Annotated[List[str], typer.Argument(help="What to look for (words are joined).")],
    top_k: Annotated[Optional[int], typer.Option(
        "--top-k", "-k", help="Results to return, 1-100 (setting top_k, default 10).",
        show_default=False)] = None,
    layer: filters.Layers = [],
    mode: Annotated[Optional[str], typer.Option(
        help="hybrid (words and meaning fused), vector or keyword (setting search_mode).",
        show_default=False)] = None,
    min_score: Annotated[Optional[float], typer.Option(
        help="Drop hits below this cosine similarity (keyword mode: below this BM25 score).",
        show_default=False)] = None,
    tag: filters.Tags = [],
    project: filters.Project = None,
    session: filters.Session = None,
    kind: filters.Kind = None,
    since: filters.Since = None,
    until: filters.Until = None,
    source: Annotated[Optional[str], typer.Option(
        help="Only records ingested from this file or from files under this directory.",
        show_default=False)] = None,
    by_doc: Annotated[bool, typer.Option(
        "--by-doc", help="The best passage per document (ingested file) only.")] = False,
    no_track: Annotated[bool, typer.Option("--no-track",
                                           help="Do not count the hits as accessed.")] = False,
    json_out: output.JsonFlag = False,
    jsonl: output.JsonlFlag = False,
) -> None:
    """Search the memory. Hybrid mode fuses the FTS5 keyword ranking with the vector ranking."""
    chosen = filters.make(tag, project, session, kind, since, until)
    if source is not None:
        from dataclasses import replace
        from pathlib import Path

        chosen = replace(chosen, source=str(Path(source).expanduser().absolute()))
    options = {"layers": tuple(layer), "min_score": min_score, "filters": chosen,
               "track": not no_track, "by_doc": by_doc}
    if top_k is not None:
        options["top_k"] = top_k
    if mode is not None:
        options["mode"] = mode
    with open_memory(ctx) as memory:
        hits = memory.search(" ".join(query), **options)
    output.emit_rows(hits, json_out=json_out, jsonl=jsonl, table=lambda: _table(hits),
                     line=lambda h: f"{h.record.id}\t{h.score:.4f}\t{h.record.layer}\t"
                                    f"{output.field(_shown(h))}")
    if not hits:
        output.say("no matches")


def _table(hits: list[Hit]) -> None:
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for column, style in (("score", "cyan"), ("id", "dim"), ("layer", "magenta"),
                          ("text", None), ("tags", "green")):
        table.add_column(column, style=style, overflow="fold" if column == "text" else None)
    for h in hits:
        table.add_row(f"{h.score:.3f}", str(h.record.id), h.record.layer,
                      output.cell(_shown(h), 400), output.cell(", ".join(h.record.tags)))
    output.stdout().print(table)


def _shown(hit: Hit) -> str:
    """The matching passage of a long record (the whole text otherwise), after the
    ``path:line`` it came from for an ingested record; raw (``field``/``cell`` escape it)."""
    text = hit.record.text
    if hit.passage is not None:
        text = text[hit.passage.start:hit.passage.end]
    where = f"{hit.location} " if hit.location else ""
    return where + text
