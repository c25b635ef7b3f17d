"""Settings: defaults < config.toml < MAGRAY_<SETTING> environment variables < flags.

Every setting is declared once in ``SPEC`` with its default, type and one-line meaning;
``config/magray.toml`` in the repository documents the same list (a test keeps them equal).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Mapping

from .clock import parse_duration
from .errors import ConfigError, InputError

MAX_CONFIG_BYTES = 64 * 1024
DEVICES = ("auto", "cpu", "cuda")
MODES = ("hybrid", "vector", "keyword")
DTYPES = ("f32", "f16")
# the features of the promotion score (magray/layers.py), weighted by score_weights
SCORE_FEATURES = ("access", "recency", "age", "words", "importance", "neighbours")
BACKENDS = ("auto", "torch", "onnx", "onnx-int8")
SECRETS = ("redact", "refuse", "allow")  # magray/secrets.py MODES


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
        where = f"{origin}: setting '{self.name}'" if origin else f"setting '{self.name}'"
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


def _duration_problem(value: str) -> str | None:
    try:
        parse_duration(value)
    except InputError:
        return f"must be a duration like '24h', '90d' or 'none'; got {value!r}"
    return None


def pairs_problem(items: list, allowed: tuple[str, ...] | None = None) -> str | None:
    """Why ``items`` is not a list of ``word=weight`` with weights 0..1 (None when it is)."""
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        if not sep or not re.fullmatch(r"\w+", key):
            return f"needs items like 'word=0.8', got {item!r}"
        if allowed is not None and key not in allowed:
            return f"has unknown feature {key!r} (features: {', '.join(allowed)})"
        try:
            weight = float(value)
        except ValueError:
            return f"needs a number after '=', got {item!r}"
        if not 0 <= weight <= 1:
            return f"needs weights from 0 to 1, got {item!r}"
    return None


def parse_pairs(items: list, name: str, allowed: tuple[str, ...] | None = None
                ) -> dict[str, float]:
    """``["critical=0.95", ...]`` as a dict; raises ConfigError naming the setting."""
    problem = pairs_problem(items, allowed)
    if problem:
        raise ConfigError(f"setting '{name}' {problem}")
    return {k.strip().lower(): float(v) for k, v in (item.split("=", 1) for item in items)}


def _database_problem(value: str) -> str | None:
    """A database setting that is neither a path nor a usable postgresql:// URL."""
    from .db.pg.target import parse_database  # no driver imported: only the URL is read

    try:
        parse_database(value)
    except ConfigError as exc:
        return str(exc).removeprefix("database: ")
    return None


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
        Setting("secrets", "redact",
                "credentials in texts to store: redact (replace by a marker), refuse or allow",
                choices=SECRETS),
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
        Setting("database", "",
                "where the records live: empty = memory.db in the data directory, a file "
                "path, or a postgresql:// URL (no password in it: ~/.pgpass, PGPASSWORD or "
                "?password_file=PATH)", check=_database_problem),
        # -- the memory lifecycle (magray/layers.py, magray/lifecycle.py) --
        Setting("ttl_interact", "24h", "how long interact keeps a record after its last use",
                check=_duration_problem),
        Setting("ttl_insights", "90d", "how long insights keeps a record after its last use",
                check=_duration_problem),
        Setting("ttl_assets", "none", "how long assets keeps a record after its last use",
                check=_duration_problem),
        Setting("capacity_interact", 10_000, "records interact holds before evicting",
                minimum=1, maximum=10**9),
        Setting("capacity_insights", 100_000, "records insights holds before evicting",
                minimum=1, maximum=10**9),
        Setting("capacity_assets", 1_000_000, "records assets holds before evicting",
                minimum=1, maximum=10**9),
        Setting("promote_to_insights", 0.45, "score that promotes interact -> insights",
                minimum=0.0, maximum=10.0),
        Setting("promote_to_assets", 0.65, "score that promotes insights -> assets",
                minimum=0.0, maximum=10.0),
        Setting("score_weights", ["access=0.3", "recency=0.15", "age=0.05", "words=0.2",
                                  "importance=0.2", "neighbours=0.1"],
                "weight of each feature of the promotion score",
                check=lambda v: pairs_problem(v, SCORE_FEATURES)),
        Setting("importance_words", ["critical=0.95", "security=0.9", "vulnerability=0.9",
                                     "outage=0.9", "urgent=0.9", "bug=0.85", "incident=0.85",
                                     "performance=0.8", "important=0.8", "decision=0.7",
                                     "deadline=0.7"],
                "words that make a note important, with their weights",
                check=pairs_problem),
        Setting("recency_half_life", "7d", "time after which the recency feature halves",
                check=_duration_problem),
        Setting("neighbour_similarity", 0.75,
                "cosine similarity at which another record counts as a near neighbour",
                minimum=0.0, maximum=1.0),
        Setting("clean_promotes", True, "clean runs promote first, before anything expires"),
        Setting("embed_cache_mb", 64.0, "size the embedding cache is pruned to (LRU), in MB",
                minimum=0.0, maximum=1e6),
        Setting("near_duplicate_merge", False,
                "no longer merges: a near-duplicate is always stored as its own record and "
                "reported; merge on purpose with `magray duplicates --merge` (kept so old "
                "config files load)"),
        Setting("near_duplicate_similarity", 0.95,
                "cosine similarity at which a new text is reported as a near-duplicate",
                minimum=0.5, maximum=1.0),
        Setting("default_layer", "assets",
                "layer of what store and import get without a layer: assets keeps it until "
                "you remove it", choices=("interact", "insights", "assets")),
        Setting("trash_days", 30.0,
                "days forgotten, expired, evicted and merged records stay restorable in the "
                "trash before clean purges them", minimum=0.0, maximum=36500.0),
        Setting("access_similarity", 0.35,
                "cosine similarity a search hit (among the first three) needs to count as an "
                "access", minimum=-1.0, maximum=1.0),
        Setting("backup_max_age", "7d",
                "age of the newest backup past which status warns ('none': never)",
                check=_duration_problem),
        Setting("backup_level", 3, "zstd compression level of backup archives (1-19)",
                minimum=1, maximum=19),
        Setting("restore_max_bytes", 64 * 1024 ** 3,
                "most bytes a backup archive may unpack to (refuses decompression bombs)",
                minimum=1, maximum=2 ** 62),
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
        from .paths import refuse_if_shared

        refuse_if_shared(config_file.parent)
        refuse_if_shared(config_file)
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
    import tomllib  # reading needs no tomlkit (~9 ms of every start); writing keeps comments

    try:
        raw = config_file.read_bytes().decode("utf-8")
        document = tomllib.loads(raw)
    except UnicodeDecodeError:
        raise ConfigError(f"{config_file}: not valid UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{config_file}: invalid TOML: {exc}") from None
    result = {}
    for name, value in document.items():
        if name not in SPEC:
            raise ConfigError(f"{config_file}: unknown setting '{name}'")
        result[name] = SPEC[name].coerce(value, str(config_file))
    return result


def duration(settings: Settings, name: str) -> timedelta | None:
    """A duration setting as a timedelta; None means no limit."""
    return parse_duration(settings.values[name], what=f"setting '{name}'")


def layer_ttl(settings: Settings, layer: str) -> timedelta | None:
    """How long a record may live in ``layer`` (None: forever)."""
    return duration(settings, f"ttl_{layer}")


def layer_capacity(settings: Settings, layer: str) -> int:
    """How many records ``layer`` may hold before clean evicts the least valuable."""
    return int(settings.values[f"capacity_{layer}"])


# -- changing the file (``magray config set``) ---------------------------------------------

def setting(name: str) -> Setting:
    """The declared setting called ``name``; a ConfigError suggests the nearest name."""
    if name in SPEC:
        return SPEC[name]
    import difflib

    close = difflib.get_close_matches(name, SPEC, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise ConfigError(f"unknown setting '{name}'{hint}; `magray config` lists them")


def parse_value(name: str, text: str) -> Any:
    """A value typed on the command line, parsed for the setting's type and validated:
    ``true``/``false``, numbers, text; lists as ``a,b`` or a TOML array ``["a", "b"]``."""
    spec = setting(name)
    where = f"setting '{name}'"
    if spec.kind is list and text.strip().startswith("["):
        import tomlkit

        try:
            value = tomlkit.parse(f"value = {text}").unwrap()["value"]
        except tomlkit.exceptions.ParseError:
            raise ConfigError(f"{where}: {text!r} is not a TOML array") from None
    elif spec.kind is str:
        value = text
    else:
        value = _parse_text(text, spec.kind, where)
    return spec.coerce(value, "")


def write_setting(config_file: Path, name: str, value: Any | None) -> Path:
    """Set one setting in the TOML file (``None`` removes it), keeping everything else in
    the file as it was: comments, order, spacing. A symlinked file is edited where it
    points. Returns the path written."""
    import tomlkit

    from . import files, paths

    setting(name)
    target = config_file.resolve() if config_file.is_symlink() else config_file
    document = _document(target)
    if value is None:
        document.pop(name, None)
    else:
        document[name] = value
    if not target.parent.exists():
        paths.make_private_dir(target.parent)
    files.write_atomic(target, tomlkit.dumps(document).encode("utf-8"))
    return target


def _document(config_file: Path):
    import tomlkit

    try:
        raw = config_file.read_bytes()
    except FileNotFoundError:
        return tomlkit.document()
    except OSError as exc:
        raise ConfigError(f"{config_file}: cannot read: {exc.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{config_file}: too large for a config file (limit {MAX_CONFIG_BYTES})")
    try:
        return tomlkit.parse(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{config_file}: not valid UTF-8") from None
    except tomlkit.exceptions.ParseError as exc:
        raise ConfigError(f"{config_file}: invalid TOML: {exc}; fix it by hand") from None
