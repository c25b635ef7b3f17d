"""``magray config``: the effective settings and where each comes from; get, set, unset, path.

A sub-application joined to the main one with ``add_typer``. None of these commands opens
the database or loads the model.
"""

from __future__ import annotations

import json
import os
from typing import Annotated, Any

import typer

from .. import config, paths
from . import output
from .app import app

config_app = typer.Typer(
    name="config",
    help="Show and change settings: the effective values and their sources; get, set, "
         "unset, path.",
    add_completion=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(config_app, name="config")


def _complete_name(incomplete: str) -> list[str]:
    return [name for name in config.SPEC if name.startswith(incomplete)]


Name = Annotated[str, typer.Argument(metavar="NAME", help="A setting (`magray config` lists them).",
                                     autocompletion=_complete_name, show_default=False)]


def _where(ctx: typer.Context) -> paths.Paths:
    return paths.resolve(ctx.find_root().obj.get("home"))


@config_app.callback(invoke_without_command=True)
def show(ctx: typer.Context, json_out: output.JsonFlag = False,
         jsonl: output.JsonlFlag = False) -> None:
    """Show every setting's effective value and its source: default, the config file, an
    environment variable."""
    if ctx.invoked_subcommand is not None:
        return
    settings = config.load(_where(ctx).config_file)
    rows = [{"name": name, "value": settings.values[name], "source": settings.sources[name],
             "default": spec.default, "doc": spec.doc} for name, spec in config.SPEC.items()]
    output.emit_rows(rows, json_out=json_out, jsonl=jsonl, table=lambda: _table(rows),
                     line=lambda r: f"{r['name']}\t{_literal(r['value'])}\t{r['source']}",
                     as_dict=dict)


@config_app.command()
def get(ctx: typer.Context, name: Name, json_out: output.JsonFlag = False) -> None:
    """Print one setting's effective value (text as is; other values as TOML)."""
    config.setting(name)
    value = config.load(_where(ctx).config_file).values[name]
    if json_out:
        output.emit_json(value)
    else:
        output.emit_lines([value if isinstance(value, str) else _literal(value)])


@config_app.command("set")
def set_value(
    ctx: typer.Context,
    name: Name,
    value: Annotated[str, typer.Argument(
        metavar="VALUE", help="true/false, a number, text; a list as a,b or '[\"a\", \"b\"]'.",
        show_default=False)],
) -> None:
    """Set a setting in the config file, keeping the file's comments and layout. The value
    is checked first; a bad one changes nothing (exit 2)."""
    parsed = config.parse_value(name, value)
    written = config.write_setting(_where(ctx).config_file, name, parsed)
    _warn_if_overridden(name)
    output.say(f"{name} = {_literal(parsed)} in {written}")


@config_app.command()
def unset(ctx: typer.Context, name: Name) -> None:
    """Remove a setting from the config file: it goes back to its default."""
    written = config.write_setting(_where(ctx).config_file, name, None)
    _warn_if_overridden(name)
    output.say(f"{name} removed from {written}")


@config_app.command()
def path(ctx: typer.Context) -> None:
    """Print where the config file is (it need not exist yet)."""
    output.emit_lines([str(_where(ctx).config_file)])


def _warn_if_overridden(name: str) -> None:
    variable = f"MAGRAY_{name.upper()}"
    if variable in os.environ:
        output.warn(f"{variable} is set in the environment and overrides the config file")


def _literal(value: Any) -> str:
    """A value as it would be written in config.toml."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value, ensure_ascii=False)  # strings and lists of strings: TOML-compatible


def _table(rows: list[dict]) -> None:
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, pad_edge=False, header_style="bold")
    for column, style in (("name", "cyan"), ("value", None), ("source", "dim")):
        table.add_column(column, style=style)
    for row in rows:
        table.add_row(row["name"], Text(output.visible(_literal(row["value"]))),
                      Text(output.visible(row["source"])))
    output.stdout().print(table)
