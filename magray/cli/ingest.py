"""``magray ingest``: files and folders stored as records, and kept in step on re-runs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from . import output
from .app import app, open_memory


@app.command()
def ingest(
    ctx: typer.Context,
    paths: Annotated[List[Path], typer.Argument(
        help="Files and directories (read recursively: Markdown, plain text, "
             "reStructuredText and source files; .gitignore and hidden files respected).",
        show_default=False)],
    layer: Annotated[str, typer.Option("--layer", "-l",
                                       help="interact, insights or assets.")] = "assets",
    tag: Annotated[List[str], typer.Option("--tag", "-t", help="Tag (repeatable).")] = [],
    project: Annotated[Optional[str], typer.Option(help="Project name.")] = None,
    prune: Annotated[bool, typer.Option(
        "--prune", help="Remove the records of files under PATHS that no longer exist.")
    ] = False,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Say what would change; store and remove nothing.")] = False,
    json_out: output.JsonFlag = False,
) -> None:
    """Store files as records, Markdown split at its headings (each section keeps its heading
    path, file and lines). A re-run embeds only what changed. Prints one summary line."""
    from ..ingest import check_layer

    check_layer(layer, "--layer")
    with open_memory(ctx) as memory:
        with output.progress(_count(paths), "ingesting") as advance:
            report = memory.ingest([str(p) for p in paths], layer=layer,
                                   tags=[t.strip() for t in tag if t.strip()], project=project,
                                   prune=prune, dry_run=dry_run, progress=advance)
    for skipped in report.skipped:
        output.warn(f"skipped {output.one_line(skipped.path)}: {skipped.reason}")
    if json_out:
        output.emit_json(report.to_dict())
    else:
        output.emit_lines([report.summary()])


def _count(paths: List[Path]) -> int:
    """Files to go through, for the progress bar (only counted on a terminal)."""
    from ..documents.walk import Found, walk

    if not output.color_allowed(sys.stderr):
        return 0
    return sum(isinstance(item, Found) for item in walk(paths))
