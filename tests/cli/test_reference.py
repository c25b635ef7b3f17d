"""The README's CLI reference is kept in step with the app: every command has a section,
and every option of every command is mentioned there."""

from pathlib import Path

import typer.main

from magray.cli import app

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def _commands(group, prefix="magray"):
    for name, command in group.commands.items():
        path = f"{prefix} {name}"
        if hasattr(command, "commands"):
            if command.callback is not None and command.invoke_without_command:
                yield path, command
            yield from _commands(command, path)
        else:
            yield path, command


def test_every_command_and_option_is_documented():
    missing = []
    for path, command in _commands(typer.main.get_command(app)):
        if f"### `{path}" not in README and f"- `{path}" not in README:
            missing.append(f"section (or bullet) for `{path}`")
        for param in command.params:
            for opt in param.opts:
                if opt.startswith("--") and opt not in ("--help",) and f"`{opt}" not in README \
                        and f"{opt}`" not in README and f"{opt} " not in README:
                    missing.append(f"{path} {opt}")
    assert not missing, missing
