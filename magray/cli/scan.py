"""``magray scan``: credentials already stored, found and (with --apply) redacted."""

from __future__ import annotations

from typing import Annotated

import typer

from . import output
from .app import app, open_memory


@app.command()
def scan(
    ctx: typer.Context,
    apply: Annotated[bool, typer.Option(
        "--apply", help="Redact what is found, in place: the text re-embedded, the keyword "
                        "index rebuilt, cached vectors of the old text removed, freed pages "
                        "overwritten.")] = False,
    json_out: output.JsonFlag = False,
) -> None:
    """Find credentials already stored in records and their metadata (kind and place, never
    the value). Without --apply nothing changes; exit 0 either way."""
    with open_memory(ctx) as memory:
        report = memory.scan(apply=apply)
    if json_out:
        output.emit_json(report.to_dict())
    else:
        output.emit_lines(f"{f.id}\t{f.layer}\t{', '.join(f.places)}" for f in report.found)
    verb = "redacted credentials in" if apply else "found credentials in"
    tail = "" if apply or not report.found else "; `magray scan --apply` redacts them"
    output.say(f"scanned {report.scanned} record(s); {verb} {len(report.found)}{tail}")
