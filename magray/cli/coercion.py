"""Plain option parsing for plain option types, without pydantic.

Typer (0.29+) coerces every option value through a pydantic ``TypeAdapter``; importing
pydantic and building the adapters costs about a tenth of a second of every command's
start, a fifth of the budget of a cold search. magray's options are plain ``str``, ``int``,
``float`` and ``Path`` values (or lists of them), which need nothing of the sort. Any other
parameter, and any typer without this hook, keeps typer's own coercion.

Typer offers no public way to do this (even ``parser=`` goes through pydantic), so this
module sets typer's private ``_runtime_param`` to a subclass of its private
``typer._coercion.RuntimeParam``. pyproject.toml caps typer below its next minor release
for that, and tests/guarantees/test_fast_paths.py fails loudly when a typer release moves
either (a command run would import pydantic again): check the hook before lifting the cap.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, List, get_args, get_origin

try:
    from typer._click.exceptions import BadParameter
    from typer._coercion import RuntimeParam
except ImportError:  # an older typer: no pydantic in its start-up, nothing to replace
    RuntimeParam = None  # type: ignore[assignment,misc]

_MESSAGES = {int: "Input should be a valid integer, unable to parse string as an integer",
             float: "Input should be a valid number, unable to parse string as a number",
             bool: "Input should be a valid boolean, unable to interpret input"}
_BOOLS = {"1": True, "true": True, "t": True, "yes": True, "y": True, "on": True,
          "0": False, "false": False, "f": False, "no": False, "n": False, "off": False}
_PATH_DEFAULTS = {"exists": False, "file_okay": True, "dir_okay": True, "writable": False,
                  "readable": True, "resolve_path": False, "allow_dash": False,
                  "path_type": None}


def install(command: Any) -> None:
    """Give every plain parameter of ``command`` (and its subcommands) plain coercion."""
    if RuntimeParam is None:
        return
    for param in getattr(command, "params", ()):
        _install_param(param)
    make_help = getattr(command, "get_help_option", None)
    if make_help is not None:  # --help is made per context, not listed in params

        def get_help_option(ctx: Any) -> Any:
            option = make_help(ctx)
            _install_param(option)
            return option

        command.get_help_option = get_help_option
    for sub in getattr(command, "commands", {}).values():
        install(sub)


def _install_param(param: Any) -> None:
    convert = _converter(param)
    if convert is not None and getattr(param, "_runtime_param", False) is None:
        param._runtime_param = _Plain(parameter_info=param.type_descriptor.parameter_info,
                                      annotation=param.type_descriptor.annotation,
                                      convert=convert)


def _converter(param: Any) -> Callable[[str], Any] | None:
    descriptor = getattr(param, "type_descriptor", None)
    if descriptor is None or descriptor.is_file or descriptor.is_choice or descriptor.is_ranged:
        return None
    annotation = descriptor.annotation
    if get_origin(annotation) in (list, List):
        (annotation,) = get_args(annotation) or (None,)
    if annotation is int:
        return _integer
    if annotation in (str, float):
        return annotation
    if annotation is bool:
        return _boolean
    if annotation is Path and all(getattr(descriptor.parameter_info, key, value) == value
                                  for key, value in _PATH_DEFAULTS.items()):
        return Path
    return None


INT64 = 2**63 - 1  # what SQLite stores; a larger number could only fail later, as a traceback


def _integer(value: Any) -> int:
    """ASCII digits only (``int()`` reads ``٣`` as 3) and within SQLite's 64 bits."""
    text = value.strip() if isinstance(value, str) else value
    if not isinstance(text, str) or re.fullmatch(r"[+-]?[0-9]+", text) is None:
        raise ValueError(value)
    number = int(text)
    if not -INT64 <= number <= INT64:
        raise OverflowError(value)
    return number


def _boolean(value: Any) -> bool:
    if isinstance(value, str) and value.strip().lower() in _BOOLS:
        return _BOOLS[value.strip().lower()]
    raise ValueError(value)


if RuntimeParam is not None:
    @dataclass(frozen=True)
    class _Plain(RuntimeParam):
        convert: Callable[[str], Any] = str

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            if isinstance(value, (list, tuple)):
                return [self._one(item, param, ctx) for item in value]
            return self._one(value, param, ctx)

        def _one(self, value: Any, param: Any, ctx: Any) -> Any:
            if isinstance(self.convert, type) and isinstance(value, self.convert) \
                    or self.convert is _integer and type(value) is int:
                return value
            if self.convert is _boolean and isinstance(value, bool):
                return value
            try:
                return self.convert(value)
            except OverflowError:
                raise BadParameter(f"Input should be at most {INT64}", ctx=ctx,
                                   param=param) from None
            except (TypeError, ValueError):
                kind = {_boolean: bool, _integer: int}.get(self.convert, self.convert)
                raise BadParameter(_MESSAGES.get(kind, "Input is not valid"),
                                   ctx=ctx, param=param) from None
