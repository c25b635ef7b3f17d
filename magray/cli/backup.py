"""``magray backup`` (create, ``list``, ``verify``, ``prune``) and ``magray restore``."""

from __future__ import annotations

import sys
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Callable, Iterator, Optional

import typer

from ..errors import InputError
from .. import units
from . import output
from .app import app, open_memory

if TYPE_CHECKING:  # magray.backup loads only for the backup commands: searches start faster
    from ..backup import BackupInfo, Pruned, RestoreResult

backup_app = typer.Typer(invoke_without_command=True, no_args_is_help=False,
                         rich_markup_mode=None)
app.add_typer(backup_app, name="backup")

Json = output.JsonFlag
Output = Annotated[Optional[Path], typer.Option(
    "--output", "-o", help="Directory for the archive (default: the backups directory), or a "
                           "new file name ending in .tar.zst.", show_default=False)]
Daily = Annotated[Optional[int], typer.Option(
    "--keep-daily", min=0, help="Keep the newest archive of each of the last N days.",
    show_default=False)]
Weekly = Annotated[Optional[int], typer.Option(
    "--keep-weekly", min=0, help="Keep the newest archive of each of the last N weeks.",
    show_default=False)]
Monthly = Annotated[Optional[int], typer.Option(
    "--keep-monthly", min=0, help="Keep the newest archive of each of the last N months.",
    show_default=False)]
Directory = Annotated[Optional[Path], typer.Argument(
    help="Directory of archives (default: the backups directory).", show_default=False)]


@backup_app.callback()
def backup(ctx: typer.Context, output_to: Output = None, keep_daily: Daily = None,
           keep_weekly: Weekly = None, keep_monthly: Monthly = None, json_out: Json = False
           ) -> None:
    """Write a verified zstd archive of the memory (database snapshot, indexes, config,
    manifest with SHA-256s); with --keep-* options, then delete older archives of this memory
    that retention does not keep. Silent unless on a terminal or given --json; safe from cron.
    Subcommands list, verify and prune work on existing archives."""
    if ctx.invoked_subcommand:
        if output_to or json_out or any(k is not None for k in (keep_daily, keep_weekly,
                                                                 keep_monthly)):
            raise InputError(f"give options to `magray backup {ctx.invoked_subcommand}`, "
                             "after the subcommand")
        return
    from ..backup import Retention

    retention = Retention(keep_daily, keep_weekly, keep_monthly)
    with open_memory(ctx) as memory, _progress("backing up") as progress:
        result = memory.backup(output_to, retention=retention or None, progress=progress)
    for warning in result.warnings:
        output.warn(warning)
    info = result.archive
    if json_out:
        output.emit_json({**_summary(info), "verified": result.verified,
                          **_pruned_json(result.pruned)})
        return
    output.say(f"wrote {info.path} ({units.size(info.size)}, {_counts(info)}), verified")
    if result.pruned:
        _say_pruned(result.pruned)


@backup_app.command("list")
def list_(ctx: typer.Context, directory: Directory = None, json_out: Json = False) -> None:
    """List archives, oldest first: time, size, record counts (read from each manifest), and
    whether each file still matches its checksum (each is read once, not decompressed)."""
    from ..backup import seal_problem

    with open_memory(ctx) as memory:
        listing = memory.backups(directory)
    damaged = {a.path: problem for a in listing.archives
               if (problem := seal_problem(a.path)) is not None}
    if json_out:
        output.emit_json({"directory": str(listing.directory),
                          "archives": [{**_summary(a), "intact": a.path not in damaged}
                                       for a in listing.archives],
                          "unreadable": [{"path": str(p), "error": e}
                                         for p, e in [*listing.unreadable, *damaged.items()]]})
        return
    if output.human():
        _table(listing.archives, damaged)
    else:
        output.emit_lines(f"{a.created_at}\t{a.size}\t{a.records}\t{output.field(str(a.path))}"
                          f"\t{'damaged' if a.path in damaged else 'ok'}"
                          for a in listing.archives)
    for path, error in [*listing.unreadable, *damaged.items()]:
        what = "damaged, do not rely on it" if path in damaged else "unreadable"
        output.warn(f"{path}: {what}: {error.removeprefix(f'{path}: ')}")
    if not listing.archives:
        output.say(f"no archives in {listing.directory}")


@backup_app.command()
def verify(ctx: typer.Context,
           archive: Annotated[Path, typer.Argument(help="The archive to check.")],
           json_out: Json = False) -> None:
    """Re-read every member of an archive against its manifest and the whole file against its
    checksum trailer. Exit 3, naming the failed check, on any damage."""
    with open_memory(ctx) as memory, _progress("verifying") as progress:
        info = memory.verify_backup(archive, progress=progress)
    if json_out:
        output.emit_json({**_summary(info), "verified": True})
    else:
        output.emit_lines([f"ok: {info.path} ({units.size(info.size)}, {_counts(info)}, "
                           f"made {info.created_at})"])


@backup_app.command("prune")
def prune(ctx: typer.Context, directory: Directory = None, keep_daily: Daily = None,
          keep_weekly: Weekly = None, keep_monthly: Monthly = None,
          dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show what would be "
                                                                   "deleted.")] = False,
          json_out: Json = False) -> None:
    """Apply retention to this memory's archives without writing a new one. The newest
    archive that verifies is never deleted; other stores' archives are never touched."""
    from ..backup import Retention

    retention = Retention(keep_daily, keep_weekly, keep_monthly)
    if not retention:
        raise InputError("give at least one of --keep-daily, --keep-weekly, --keep-monthly")
    with open_memory(ctx) as memory:
        pruned = memory.prune_backups(retention, directory, dry_run=dry_run)
    if json_out:
        output.emit_json({"dry_run": dry_run, **_pruned_json(pruned)})
    elif output.human():
        _say_pruned(pruned, stream=output.emit_lines)
    else:
        output.emit_lines(str(a.path) for a in pruned.removed)


@app.command()
def restore(
    ctx: typer.Context,
    archive: Annotated[Path, typer.Argument(help="The archive to restore.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Replace existing data without "
                                                          "asking.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Verify the archive and show what "
                                                             "would be restored.")] = False,
    config: Annotated[Optional[bool], typer.Option(
        "--config/--no-config", help="Also restore the archive's config.toml (default: only "
                                     "when there is no config file yet).",
        show_default=False)] = None,
    json_out: Json = False,
) -> None:
    """Replace the memory with an archive's. The whole archive is verified first (exit 3 and
    nothing changed when it is damaged); the current data is kept as a safety archive, named
    in the output, until you delete it. Other magray processes must close the memory
    first: restore waits for them up to busy_timeout."""
    confirm = _ask if output.is_tty(sys.stdin) else None
    with open_memory(ctx) as memory, _progress("verifying") as progress:
        result = memory.restore(archive, replace=yes, config=config, confirm=confirm,
                                dry_run=dry_run, progress=progress)
    if json_out:
        output.emit_json(result.to_dict())
    else:
        output.emit_lines(_restore_lines(result))


# -- rendering ----------------------------------------------------------------------------


def _ask(plan: RestoreResult) -> bool:
    info = plan.archive
    output.stderr().print(output.visible(f"{info.path} verified: {_counts(info)}, made "
                                         f"{info.created_at}"), markup=False)
    try:
        return typer.confirm(f"Replace the {sum(plan.replaced.values())} records here"
                             f"{_and_trash(plan)} with the archive's?", err=True)
    except typer.Abort:  # end of input or ^C at the prompt
        return False


def _restore_lines(result: RestoreResult) -> list[str]:
    info = result.archive
    verb = "would restore" if result.dry_run else "restored"
    lines = [f"{verb} {_counts(info)} from {info.path} (made {info.created_at})"]
    replaced = sum(result.replaced.values())
    if result.dry_run:
        lines.append(f"would replace {replaced} records{_and_trash(result)}; the current data "
                     "would be kept as a safety archive" if replaced or result.trashed
                     else "there are no records to replace")
    elif result.safety_copy:
        lines.append(f"previous data ({replaced} records{_and_trash(result)}) kept in "
                     f"{result.safety_copy}")
    lines.append({"restored": "config: restored from the archive",
                  "kept": "config: the current config kept (--config restores the archive's)",
                  "none": "config: none in the archive"}[result.config])
    return lines


def _and_trash(plan: RestoreResult) -> str:
    return f" and {plan.trashed} in the trash" if plan.trashed else ""


def _summary(info: BackupInfo) -> dict:
    return {"path": str(info.path), "size": info.size, "created_at": info.created_at,
            "records": info.records, "counts": dict(info.counts), "model": info.model,
            "model_key": info.model_key, "dim": info.dim,
            "format_version": info.format_version, "magray_version": info.magray_version}


def _pruned_json(pruned: Pruned | None) -> dict:
    if pruned is None:
        return {"pruned": None}
    return {"pruned": {"kept": [str(a.path) for a in pruned.kept],
                       "removed": [str(a.path) for a in pruned.removed]}}


def _say_pruned(pruned: Pruned, stream: Callable | None = None) -> None:
    verb = "would delete" if pruned.dry_run else "deleted"
    lines = [f"{verb} {a.path.name} (made {a.created_at})" for a in pruned.removed]
    lines.append(f"kept {len(pruned.kept)} archive(s), {verb} {len(pruned.removed)}")
    if stream:
        stream(lines)
    else:
        for line in lines:
            output.say(line)


def _table(archives, damaged) -> None:
    from rich.table import Table
    from rich.text import Text

    # The file first and whole (an 80-column terminal has room for a default name and the
    # rest); per-layer counts are in --json and `backup verify`.
    names = [output.one_line(a.path.name) for a in archives]
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("file", min_width=max(map(len, names), default=4), overflow="fold")
    table.add_column(f"created ({output.zone()})", no_wrap=True)
    for column in ("size", "records"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("state", no_wrap=True)
    for a, name in zip(archives, names):
        state = Text("DAMAGED", style="bold red") if a.path in damaged else Text("ok")
        table.add_row(Text(name), output.when(a.created_at), units.size(a.size),
                      f"{a.records:,}", state)
    output.stdout().print(table)


def _counts(info: BackupInfo) -> str:
    layers = ", ".join(f"{layer} {n}" for layer, n in info.counts.items())
    return f"{info.records} records: {layers}"


@contextmanager
def _progress(label: str) -> Iterator[Callable[[int, int], None]]:
    """A (bytes done, bytes in all) callback driving a bar counted in MiB: one appears only
    on a terminal, only for 64 MiB or more, and goes away when its count is complete (so a
    prompt that follows is not drawn under it)."""
    with ExitStack() as stack:
        state: dict = {}

        def update(done: int, total: int) -> None:
            if "bar" not in state:
                state["bar"] = stack.enter_context(ExitStack())
                state["advance"] = state["bar"].enter_context(output.progress(total >> 20,
                                                                              label))
                state["at"] = 0
            mib = done >> 20
            if mib > state["at"]:
                state["advance"](mib - state["at"])
                state["at"] = mib
            if done >= total:
                state.pop("bar").close()

        yield update
