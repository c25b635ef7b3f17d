"""Settings: defaults < config.toml < MAGRAY_<SETTING> environment variables < flags.

Every setting is declared once in ``SPEC`` with its default, type and one-line meaning;
``config/magray.toml`` in the repository documents the same list (a test keeps them equal).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from .errors import ConfigError

MAX_CONFIG_BYTES = 64 * 1024
DEVICES = ("auto", "cpu", "cuda")
MODES = ("hybrid", "vector", "keyword")
DTYPES = ("f32", "f16")
BACKENDS = ("auto", "torch", "onnx", "onnx-int8")


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    doc: str
    choices: tuple = ()
    minimum: float | None = None
    maximum: float | None = None
    check: Callable[[Any], str | None] | None = None

    @property
    def kind(self) -> type:
        return type(self.default)

    def coerce(self, value: Any, origin: str) -> Any:
        """Type-check (and for env text, parse) one value; raise ConfigError naming the key."""
        kind = self.kind
        where = f"{origin}: setting '{self.name}'"
        if isinstance(value, str) and kind is not str and origin.startswith("environment"):
            value = _parse_text(value, kind, where)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if kind is list:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{where} must be a list of strings")
            value = [str(v) for v in value]
        elif not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(f"{where} must be {_KIND_NAMES[kind]}, got {type(value).__name__}")
        if kind is str:
            value = str(value)
        if self.choices and value not in self.choices:
            raise ConfigError(f"{where} must be one of {', '.join(self.choices)}; got {value!r}")
        if self.minimum is not None and value < self.minimum:
            raise ConfigError(f"{where} must be at least {self.minimum}; got {value!r}")
        if self.maximum is not None and value > self.maximum:
            raise ConfigError(f"{where} must be at most {self.maximum}; got {value!r}")
        if self.check and (problem := self.check(value)):
            raise ConfigError(f"{where} {problem}")
        return value


_KIND_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _parse_text(text: str, kind: type, where: str) -> Any:
    if kind is bool:
        lowered = text.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{where} must be true or false, got {text!r}")
    if kind is list:
        return [part.strip() for part in text.split(",") if part.strip()]
    try:
        return kind(text)
    except ValueError:
        raise ConfigError(f"{where} must be {_KIND_NAMES[kind]}, got {text!r}") from None




SPEC: dict[str, Setting] = {
    s.name: s
    for s in [
        Setting("model", "all-MiniLM-L6-v2",
                "sentence-transformers model: a name or a local directory inside model_roots"),
        Setting("device", "auto", "where the model runs: auto (CUDA when it works), cpu or cuda",
                choices=DEVICES),
        Setting("truncate_dim", 0, "Matryoshka truncation of embeddings; 0 keeps the full size",
                minimum=0, maximum=65536),
        Setting("batch_size", 64, "texts embedded per batch", minimum=1, maximum=65536),
        Setting("backend", "auto",
                "what runs the model: auto (ONNX Runtime; torch for bulk work on a GPU), torch, "
                "onnx or onnx-int8", choices=BACKENDS),
        Setting("threads", 0, "CPU threads for the model (torch and ONNX Runtime); 0 = the "
                "cores this process may use", minimum=0, maximum=1024),
        Setting("model_roots", [], "extra directories a local model path may live in"),
        Setting("allow_download", False, "let sentence-transformers fetch a model from its hub"),
        Setting("max_text_bytes", 512 * 1024, "largest text accepted, in bytes of UTF-8",
                minimum=1, maximum=64 * 1024 * 1024),
        Setting("hnsw_m", 16, "HNSW connectivity (M) of the vector indexes", minimum=2, maximum=256),
        Setting("hnsw_ef_construction", 200, "HNSW expansion when adding", minimum=1,
                maximum=4096),
        Setting("hnsw_ef_search", 50, "HNSW expansion when searching", minimum=1, maximum=4096),
        Setting("index_dtype", "f32", "scalar type of index vectors: f32 or f16", choices=DTYPES),
        Setting("search_mode", "hybrid", "default search mode: hybrid, vector or keyword",
                choices=MODES),
        Setting("top_k", 10, "results returned by search", minimum=1, maximum=100),
        Setting("busy_timeout", 60.0,
                "seconds to wait for another magray process's database or index lock",
                minimum=0.0, maximum=3600.0),
    ]
}


@dataclass(frozen=True)
class Settings:
    """The effective settings, with where each value came from."""

    values: Mapping[str, Any]
    sources: Mapping[str, str] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None

    def replace(self, **overrides: Any) -> "Settings":
        """A copy with flag values applied (None means 'not given')."""
        values, sources = dict(self.values), dict(self.sources)
        for name, value in overrides.items():
            if value is None:
                continue
            values[name] = SPEC[name].coerce(value, "flag")
            sources[name] = "flag"
        return Settings(values, sources)


def defaults() -> Settings:
    return Settings({n: s.default for n, s in SPEC.items()}, {n: "default" for n in SPEC})


def load(config_file: Path | None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read the effective settings: defaults, then the TOML file, then the environment."""
    values = {n: s.default for n, s in SPEC.items()}
    sources = {n: "default" for n in SPEC}
    if config_file is not None:
        for name, value in read_file(config_file).items():
            values[name], sources[name] = value, str(config_file)
    environ = os.environ if environ is None else environ
    for name, setting in SPEC.items():
        key = f"MAGRAY_{name.upper()}"
        if key in environ:
            values[name] = setting.coerce(environ[key], f"environment {key}")
            sources[name] = f"environment {key}"
    return Settings(values, sources)


def read_file(config_file: Path) -> dict[str, Any]:
    """Validated settings from one TOML file; a missing file is an empty one."""
    try:
        size = config_file.stat().st_size
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"{config_file}: cannot read: {exc.strerror}") from None
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{config_file}: {size} bytes is too large for a config file "
                          f"(limit {MAX_CONFIG_BYTES})")
    import tomlkit

    try:
        raw = config_file.read_bytes().decode("utf-8")
        document = tomlkit.parse(raw).unwrap()
    except UnicodeDecodeError:
        raise ConfigError(f"{config_file}: not valid UTF-8") from None
    except tomlkit.exceptions.ParseError as exc:
        raise ConfigError(f"{config_file}: invalid TOML: {exc}") from None
    result = {}
    for name, value in document.items():
        if name not in SPEC:
            raise ConfigError(f"{config_file}: unknown setting '{name}'")
        result[name] = SPEC[name].coerce(value, str(config_file))
    return result
