"""The record filters shared by ``search``, ``list`` and ``export``."""

from __future__ import annotations

from typing import Annotated, List, Optional

import typer

from ..records import LAYERS, Filters


def complete_layer(incomplete: str) -> list[str]:
    return [layer for layer in LAYERS if layer.startswith(incomplete)]


Layers = Annotated[List[str], typer.Option(
    "--layer", "-l", help="Only this layer (repeatable; default all).",
    autocompletion=complete_layer)]
Tags = Annotated[List[str], typer.Option(
    "--tag", "-t", help="Only records with this tag (repeatable: all must match).")]
Project = Annotated[Optional[str], typer.Option(help="Only this project.")]
Session = Annotated[Optional[str], typer.Option(help="Only this session.")]
Kind = Annotated[Optional[str], typer.Option(help="Only this kind.")]
Since = Annotated[Optional[str], typer.Option(
    help="Created at or after: ISO 8601 (local time unless it has an offset), or an age "
         "like 7d, 24h.")]
Until = Annotated[Optional[str], typer.Option(
    help="Created at or before: ISO 8601 (local time unless it has an offset), or an age "
         "like 7d, 24h.")]


def make(tags: list[str], project: str | None, session: str | None, kind: str | None,
         since: str | None, until: str | None) -> Filters:
    from ..clock import parse_since

    return Filters(tags=tuple(tags), project=project, session=session, kind=kind,
                   since=parse_since(since, what="--since") if since else None,
                   until=parse_since(until, what="--until") if until else None)
