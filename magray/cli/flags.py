"""The library's parameters as this CLI's flags, in one place.

The library's messages name its parameters (``top_k must be from 1 to 100``); a person at
the terminal gave flags, so the error handler shows the flag instead (``--top-k must be
from 1 to 100``). A parameter is its flag with dashes unless a table below says otherwise.
"""

from __future__ import annotations

# Flags that are not the parameter's name with dashes, for every command...
_FLAGS = {
    "layers": "--layer",
    "replace=True": "--yes",
    "config=True": "--config",
    "config=False": "--no-config",
    "daily": "--keep-daily",
    "weekly": "--keep-weekly",
    "monthly": "--keep-monthly",
}
# ...and where one command spells it its own way.
_COMMAND_FLAGS = {
    "promote": {"layers": "--from", "ids": "--id"},
    "duplicates": {"ids": "--merge"},
    "mcp": {"address": "--http"},
}


def flag(param: str, command: str | None = None) -> str:
    """The flag that gives the library parameter ``param`` in ``command``."""
    named = _COMMAND_FLAGS.get(command or "", {}).get(param) or _FLAGS.get(param)
    return named or "--" + param.replace("_", "-")


def message(error: Exception, command: str | None = None) -> str:
    """``error``'s message with the parameter it names (if any) given as the flag."""
    text = str(error)
    param = getattr(error, "param", None)
    return text.replace(param, flag(param, command), 1) if param else text
