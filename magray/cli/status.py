"""``magray status``: is my memory healthy? Read-only; exits 1 when an error alert stands."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from .. import units
from ..errors import InputError
from . import output
from .app import app

if TYPE_CHECKING:
    from ..health import Health

SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}


@app.command()
def status(
    ctx: typer.Context,
    json_out: output.JsonFlag = False,
    prometheus: Annotated[bool, typer.Option(
        "--prometheus", help="Print Prometheus text metrics (for node_exporter's textfile "
                             "collector).")] = False,
    check_model: Annotated[bool, typer.Option(
        "--check-model", help="Also load the model and embed a probe: device used, "
                              "dimension, latency.")] = False,
) -> None:
    """Report paths, sizes, layers, index agreement, model, cache, backups, recent latency and
    alerts (on PostgreSQL also the server, its round trip and versions). Changes nothing, and
    loads the model only with --check-model. Exits 1 when an error-level alert stands."""
    from .. import config, health, paths

    if json_out and prometheus:
        raise InputError("--json and --prometheus cannot be combined")
    home = ctx.find_root().obj.get("home")
    settings = config.load(paths.resolve(home).config_file)
    report = health.check(home, settings=settings, check_model=check_model)
    if json_out:
        output.emit_json(report.to_dict())
    elif prometheus:
        output.emit_lines([health.prometheus(report).rstrip("\n")])
    else:
        _render(report)
    if not report.healthy:
        if json_out or prometheus:  # people see the alerts; scripts get one line on stderr
            errors = [a for a in report.alerts if a.severity == "error"]
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            output.error(f"unhealthy: {errors[0].message}{more}")
        raise typer.Exit(1)


def _render(h: "Health") -> None:
    from rich.table import Table

    console = output.stdout()
    counts = {s: sum(a.severity == s for a in h.alerts) for s in ("error", "warning", "info")}
    verdict = "[bold green]healthy[/]" if h.healthy else "[bold red]UNHEALTHY[/]"
    tally = ", ".join(f"{n} {s}{'s' if n > 1 else ''}" for s, n in counts.items() if n)
    console.print(f"[bold]magray {h.version}[/] · {verdict}" + (f" ({tally})" if tally else ""))

    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    database = (f"{h.database}  {units.size(h.database_bytes)}" if h.database_exists
                else f"{h.database}  (none yet: an empty memory)")
    facts.add_row("database", _plain(database))
    if h.server is not None:
        facts.add_row("server", _plain(_server(h)))
        facts.add_row("indexes", _plain(f"HNSW on the server  {units.size(_index_bytes(h))}"))
    else:
        facts.add_row("indexes", _plain(f"{h.indexes}  {units.size(_index_bytes(h))}"))
    config_note = "" if h.config_exists else "  (absent: defaults)"
    facts.add_row("config", _plain(h.config_file + config_note))
    b = h.backups
    newest = (f"{b.archives} archive(s), newest {_when(b.latest_at)} "
              f"({units.duration(b.age_seconds)} ago)" if b.archives else "none")
    facts.add_row("backups", _plain(f"{b.directory}  {newest}"))
    facts.add_row("trash", _plain(f"{h.trash:,} record(s), restorable with `magray trash`"))
    console.print(facts)
    console.print()
    console.print(_layers_table(h))
    console.print()
    console.print(_model_grid(h))
    if h.alerts:
        console.print()
        alerts = Table(box=None, pad_edge=False, show_header=False)
        alerts.add_column(no_wrap=True)
        alerts.add_column(overflow="fold")
        for a in h.alerts:
            alerts.add_row(f"[{SEVERITY_STYLE[a.severity]}]{a.severity}[/]",
                           _plain(f"{a.message}: {a.remedy}"))
        console.print(alerts)


def _layers_table(h: "Health"):
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold", padding=(0, 1, 0, 0))
    for column, justify in (("layer", "left"), ("records", "right"), ("oldest", "right"),
                            ("newest", "right"), ("expired", "right"), ("capacity", "right")):
        table.add_column(column, justify=justify, no_wrap=True)
    table.add_column("index", overflow="fold")  # a problem may be long: fold, never cut
    for layer in h.layers:
        index = layer.index
        if index.fresh:
            state = "fresh" if index.bytes is not None else "-"
        else:
            state = f"[yellow]{_plain(index.problem)}[/]"
        if index.bytes is not None:
            state += f" {units.size(index.bytes)}"
        table.add_row(f"[magenta]{layer.name}[/]", f"{layer.records:,}",
                      _ago(h.checked_at, layer.oldest), _ago(h.checked_at, layer.newest),
                      f"{layer.expired:,}" if layer.ttl_seconds is not None else "never",
                      f"{layer.capacity_used:.0%} of {layer.capacity:,}", state)
    return table


def _model_grid(h: "Health"):
    from rich.table import Table

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    m = h.model
    recorded = ("nothing stored yet" if m.recorded_key is None else
                f"data made with {m.recorded_key}, {m.dimension} dimensions")
    grid.add_row("model", _plain(f"{m.configured_key}  ({recorded})"))
    if m.probe is not None:
        p = m.probe
        if p.error:
            grid.add_row("probe", f"[red]{_plain(p.error)}[/]")
        else:
            why = f" ({p.cuda_unused})" if p.cuda_unused else ""
            grid.add_row("probe", _plain(
                f"device {p.device}{why}, {p.dimension} dimensions, load "
                f"{_seconds(p.load_seconds)}, embed {_seconds(p.embed_seconds)}"))
    c = h.cache
    rate = "no recent lookups" if c.hit_rate is None else f"hit rate {c.hit_rate:.0%} recently"
    grid.add_row("cache", f"{c.entries:,} entries, {rate}")
    for op in h.operations:
        if op.total == 0:
            grid.add_row(op.name, "none yet")
            continue
        grid.add_row(op.name, f"{op.total:,} in all; last {op.recent:,}: p50 "
                              f"{_seconds(op.p50_seconds)}, p99 {_seconds(op.p99_seconds)}")
    return grid


def _server(h: "Health") -> str:
    s = h.server
    vector = (f"pgvector {s.vector_version}" if s.vector_version else
              "no pgvector" + (f" ({s.vector_available} available)" if s.vector_available
                               else ""))
    return (f"PostgreSQL {s.version} at {s.server}, database {s.database} as {s.user}; "
            f"{vector}; round trip {s.latency_seconds * 1000:.2f} ms")


def _index_bytes(h: "Health") -> int:
    return sum(layer.index.bytes or 0 for layer in h.layers)


def _plain(text: str) -> str:
    from rich.markup import escape

    return escape(output.visible(text))


def _when(iso: str | None) -> str:
    return output.when(iso, named=True)


def _ago(now: str, iso: str | None) -> str:
    from ..clock import parse_time

    if iso is None:
        return "-"
    return units.duration(parse_time(now) - parse_time(iso)) + " ago"


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return units.duration(value)
