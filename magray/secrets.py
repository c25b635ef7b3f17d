"""Credentials never enter memory: find them in a text, and redact or refuse them.

Every write path (``Memory.store``, ``Memory.import_records`` and the adapters over them)
passes what it is about to write through a ``Guard`` before anything is embedded or stored,
and ``magray scan`` uses the same ``find`` on what is stored already.

Detection takes the service-token patterns of ``detect-secrets`` (its plugins' compiled
``denylist`` regexes, run in process so that we get each match's position) and adds the
shapes it does not cover or covers only in source code: whole private-key blocks, unquoted
AWS secret keys, GCP and Anthropic keys, ``Authorization:`` headers, ``password=``-style
assignments and connection-string passwords. Its high-entropy-string plugins are not used:
on notes they flag every git SHA, UUID and checksum (scripts/eval_secrets.py measures it).

Nothing here ever puts a secret's value in a message: a finding names its kind and where.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Callable, Iterable, Iterator, Pattern, TypeVar

from .errors import InputError
from .records import content_hash

MODES = ("redact", "refuse", "allow")
METADATA = ("tags", "project", "session", "kind")


@dataclass(frozen=True)
class Finding:
    """A credential in a text: its kind, the field it is in, and where (character offsets)."""

    kind: str
    field: str
    start: int
    end: int

    def describe(self) -> str:
        return f"{self.kind} in {self.field} at character {self.start + 1}"


def marker(kind: str) -> str:
    return f"[redacted: {kind}]"


# -- detectors ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Detector:
    kind: str
    pattern: Pattern[str]
    group: int = 0  # the group that is the secret (0: the whole match; -1: whichever matched)
    valid: Callable[[str], bool] | None = None


# A value that stands for a secret instead of being one: $VAR, ${VAR}, {{ var }}, <password>,
# %s, ***, xxx, your-password..., or code that fetches it (getpass(), os.environ[...]).
_PLACEHOLDER = re.compile(
    r"""^(?:\$\{?\w+\}?|\{\{.*\}\}|\{\w*\}|<[^>]*>|%\(?\w*\)?s|\*+|x{3,}|\.{3,}|…|
        (?:your|example|dummy|sample|placeholder)[-_ ]?\w*|
        changeme|change_me|redacted|none|null|nil|true|false|undefined|secret|password|
        passwd|[\w.]+\(.*|[a-z_]+(?:\.[a-z_]+)+|\[redacted:.*)$""",
    re.IGNORECASE | re.VERBOSE)
_ALL_CAPS_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")


def _real_value(value: str) -> bool:
    """An assigned value that looks like a real secret, not a name, placeholder or prose."""
    value = value.strip("\"'`")
    if len(value) < 6 or "[redacted:" in value or not _not_example(value):
        return False
    if _ALL_CAPS_NAME.match(value):  # PASSWORD=DB_PASSWORD: the name of another variable
        return False
    if _PLACEHOLDER.match(value):
        return False
    # a single lower-case word (password: required, secret: none) is prose, not a credential
    if value.isalpha() and value.islower():
        return False
    return True


def _not_example(value: str) -> bool:
    # AWS's documentation keys (AKIAIOSFODNN7EXAMPLE, wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY)
    # are published as unusable examples: notes quoting the docs keep them.
    return "EXAMPLE" not in value.upper()


_KEYWORDS = (r"(?:password|passwd|pass|pwd|passphrase|secret|secret[-_]?key|client[-_]?secret|"
             r"api[-_]?key|apikey|access[-_]?key|access[-_]?token|auth[-_]?token|"
             r"refresh[-_]?token|private[-_]?key|token|credentials?)")


def _generic_detectors() -> list[Detector]:
    """Credentials known by their context (a header, a key word), not by their shape: they
    come last, so that a token of a known kind inside one is named by its kind."""
    c = re.compile
    return [
        Detector("authorization-header",
                 c(r"(?i)\b(?:proxy-)?authorization\s*[:=]\s*[\"']?(?:bearer|basic|token|"
                   r"bot|digest|negotiate|apikey|sso-key)\s+([^\s\"']{8,})"), 1),
        Detector("authorization-header",
                 c(r"(?i)\b(?:x-api-key|x-auth-token|api-key|private-token|x-goog-api-key)"
                   r"\s*:\s*[\"']?([^\s\"']{12,})"), 1),
        Detector("connection-string-password",
                 c(r"(?i)(?:;\s*(?:password|pwd)\s*=\s*([^;\"']{1,200}?)\s*(?=;|$|[\"'])|"
                   r"\b(?:password|pwd)\s*=\s*([^;\s\"']{1,200})\s*;)"), -1, _real_value),
        Detector("password",
                 c(r"(?i)(?<![\w-])[\w.-]*?" + _KEYWORDS + r"[\"']?\s*(?:=|:=|:|=>)\s*"
                   r"(\"[^\"\n]{1,200}\"|'[^'\n]{1,200}'|[^\s,;\"'()\[\]{}]{1,200}"
                   r"(?![^\s,;\"'()\[\]{}]))"), 1, _real_value),
        Detector("password",
                 c(r"(?i)\b(?:password|passphrase|passwd)\s+(?:is|was|=)\s+[\"'`]?"
                   r"([^\s\"'`]*(?:\d|[^\w\s\"'`])[^\s\"'`]*)[\"'`]?(?=[\s.,;]|$)"), 1,
                 lambda v: _real_value(v.rstrip(".")) and any(ch.isalpha() for ch in v)),
        Detector("password", c(r"(?<!\S)(?:-p|--password[= ])([^\s\-][^\s]{5,})"), 1,
                 _real_value),
    ]


def _own_detectors() -> list[Detector]:
    """The shapes detect-secrets lacks (or finds only in quoted source code)."""
    c = re.compile
    return [
        Detector("private-key", c(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
                                  r"(?:.*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
                                  r"|.*)", re.DOTALL)),
        Detector("private-key", c(r"PuTTY-User-Key-File-\d:.*?Private-MAC: \S+|"
                                  r"PuTTY-User-Key-File-\d:.*", re.DOTALL)),
        Detector("aws-secret-key", c(r"(?i)aws.{0,25}?(?:secret|key)\w*[\"']?\s*(?:=|:|\s)\s*"
                                     r"[\"']?([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])"), 1,
                 _not_example),
        Detector("gcp-api-key", c(r"\bAIza[0-9A-Za-z_\-]{35}(?![0-9A-Za-z_\-])")),
        Detector("anthropic-key", c(r"\bsk-ant-(?:api|admin|oat)\d\d-[A-Za-z0-9_\-]{32,}")),
        Detector("openai-key", c(r"\bsk-(?:proj|svcacct|admin|None)-[A-Za-z0-9_\-]{40,}")),
        Detector("github-token", c(r"\bgithub_pat_[A-Za-z0-9_]{60,}")),
        Detector("stripe-key", c(r"\b(?:sk|rk)_(?:live|test)_[0-9a-zA-Z]{24,}")),
        Detector("azure-client-secret", c(r"(?<![\w~.\-])[A-Za-z0-9_~.\-]{3}\dQ~"
                                          r"[A-Za-z0-9_~.\-]{31,34}(?![\w~.\-])")),
        Detector("azure-sas-token", c(r"[?&]sig=([A-Za-z0-9%+/=]{30,})")),
        Detector("npm-token", c(r"\bnpm_[A-Za-z0-9]{36}\b")),
        # detect-secrets' NpmDetector (//.+/:_authToken=) is quadratic on long lines
        Detector("npm-token", c(r"(?<![^\s\"'])//[^\s/]+(?:/[^\s/]+)*/:_authToken=\s*"
                                r"[\"']?([^\s\"']+)"), 1, _real_value),
    ]


# detect-secrets plugin -> our kind name. Their patterns, compiled and kept up to date by the
# detect-secrets maintainers, are the main line of defence for service tokens.
_LIBRARY = {
    "aws.AWSKeyDetector": "aws-access-key",
    "github_token.GitHubTokenDetector": "github-token",
    "gitlab_token.GitLabTokenDetector": "gitlab-token",
    "slack.SlackDetector": "slack-token",
    "stripe.StripeDetector": "stripe-key",
    "openai.OpenAIDetector": "openai-key",
    "pypi_token.PypiTokenDetector": "pypi-token",
    "jwt.JwtTokenDetector": "jwt",
    "azure_storage_key.AzureStorageKeyDetector": "azure-storage-key",
    "basic_auth.BasicAuthDetector": "url-password",
    "sendgrid.SendGridDetector": "sendgrid-key",
    "twilio.TwilioKeyDetector": "twilio-key",
    "mailchimp.MailchimpDetector": "mailchimp-key",
    "discord.DiscordBotTokenDetector": "discord-token",
    "telegram_token.TelegramBotTokenDetector": "telegram-token",
}


_TOKEN_START = r"(?<![A-Za-z0-9_\-])"


def _library_detectors() -> list[Detector]:
    import importlib

    found = []
    for name, kind in _LIBRARY.items():
        module, cls = name.split(".")
        plugin = getattr(importlib.import_module(f"detect_secrets.plugins.{module}"), cls)
        valid = getattr(plugin, "is_formally_valid", None)
        for pattern in plugin.denylist:
            if kind != "url-password":  # its own character classes keep it linear
                # Matches may start only where a token starts: without this, a long run of
                # a prefix ("sk-sk-sk-...", "eyJeyJ...") costs time quadratic in its length.
                pattern = re.compile(_TOKEN_START + pattern.pattern, pattern.flags)
            group = 1 if pattern.groups and kind in ("url-password", "aws-access-key") else 0
            found.append(Detector(kind, pattern, group, valid or (
                _not_example if kind == "aws-access-key" else None)))
    return found


@lru_cache(maxsize=1)
def detectors() -> tuple[Detector, ...]:
    """Every detector, own first (a private-key block outranks the tokens inside it)."""
    own = _own_detectors()
    return tuple(own[:2] + _library_detectors() + own[2:] + _generic_detectors())


# Any credential shape above contains one of these (case-insensitively): a text without any
# is skipped with one cheap search, which keeps a large store fast.
_HINTS = re.compile(
    r"private|putty|akia|asia|abia|acca|a3t|aws|aiza|sk-|sk_|rk_|gh[pousr]_|github_pat|gl[a-z]+-|"
    r"gr1348941|xox|hooks\.slack|pypi-|npm_|_authtoken|eyj|accountkey|://[^\s/@]*:|sig=|"
    r"authori[sz]ation|api-key|x-auth|private-token|pass|pwd|secret|token|key|credential|"
    r"\dq~|sg\.|ac[0-9a-f]{32}|-us\d|discord|[mn][a-z0-9]{23}\.|\d{8,10}:|-p",
    re.IGNORECASE)


def find(text: str, field: str = "text") -> list[Finding]:
    """The credentials in ``text``, in order, without overlaps."""
    if not text or not _HINTS.search(text):
        return []
    spans: list[Finding] = []
    taken: list[tuple[int, int]] = []  # sorted, disjoint (start, end) of the findings so far
    for detector in detectors():
        for match in detector.pattern.finditer(text):
            if detector.group < 0:  # alternatives: the one group that matched
                group = next((g for g in range(1, detector.pattern.groups + 1)
                              if match.group(g)), 0)
            else:
                group = detector.group if detector.pattern.groups >= detector.group else 0
            start, end = match.span(group)
            if start < 0 or end <= start:
                continue
            value = text[start:end]
            if detector.valid is not None and not detector.valid(value):
                continue
            at = bisect.bisect_left(taken, (start, end))
            if (at and taken[at - 1][1] > start) or (at < len(taken) and taken[at][0] < end):
                continue  # overlaps an earlier (more specific) finding
            taken.insert(at, (start, end))
            spans.append(Finding(detector.kind, field, start, end))
    return sorted(spans, key=lambda f: f.start)


def redact(text: str, findings: Iterable[Finding]) -> str:
    """``text`` with each finding replaced by its marker."""
    out, at = [], 0
    for f in sorted(findings, key=lambda f: f.start):
        out += [text[at:f.start], marker(f.kind)]
        at = f.end
    out.append(text[at:])
    return "".join(out)


# -- the write-path guard ---------------------------------------------------------------------

R = TypeVar("R")


@dataclass(frozen=True)
class Screened:
    """What the guard did to one record: its kinds of credentials found (empty: none)."""

    where: str
    findings: tuple[Finding, ...]

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(f.kind for f in self.findings))


def inspect(fields: dict[str, object]) -> tuple[Finding, ...]:
    """Findings in a record's text and metadata (``fields``: name -> str, tuple or None)."""
    found: list[Finding] = []
    for name, value in fields.items():
        if isinstance(value, str):
            found += find(value, name)
        elif isinstance(value, tuple):
            for n, item in enumerate(value):
                found += find(item, f"{name}[{n}]" if len(value) > 1 else name)
    return tuple(found)


def cleaned(fields: dict[str, object], findings: tuple[Finding, ...]) -> dict[str, object]:
    """``fields`` with every finding redacted (only the changed fields are returned)."""
    changes: dict[str, object] = {}
    for name, value in fields.items():
        if isinstance(value, str):
            mine = [f for f in findings if f.field == name]
            if mine:
                changes[name] = redact(value, mine)
        elif isinstance(value, tuple):
            items = list(value)
            for n, item in enumerate(items):
                key = f"{name}[{n}]" if len(items) > 1 else name
                mine = [f for f in findings if f.field == key]
                if mine:
                    items[n] = redact(item, mine)
            if items != list(value):
                changes[name] = tuple(sorted(set(items)))
    return changes


def record_fields(item: object) -> dict[str, object]:
    """The text and metadata of a NewRecord, a Record or an import Entry."""
    record = getattr(item, "record", item)
    return {"text": record.text, **{k: getattr(record, k) for k in METADATA}}  # type: ignore


def _changed(item: R, changes: dict[str, object]) -> R:
    record = getattr(item, "record", None)
    if record is None:
        return replace(item, **changes)  # type: ignore[type-var]
    if "text" not in changes:
        return replace(item, record=replace(record, **changes))  # type: ignore
    # an import Entry: its vector was made from the text that held the credential
    changes["content_hash"] = content_hash(changes["text"])  # type: ignore[arg-type]
    return replace(item, record=replace(record, **changes), vector=None,  # type: ignore
                   vector_model=None)


class Guard:
    """Applies the ``secrets`` setting to records on their way in: ``redact`` (replace each
    credential by a marker, one warning per record), ``refuse`` (InputError naming the
    record, raised by ``check_all`` before anything is written) or ``allow``."""

    def __init__(self, mode: str, warn: Callable[[str], None]):
        if mode not in MODES:
            raise InputError(f"setting 'secrets' must be one of {', '.join(MODES)}; got {mode!r}")
        self.mode = mode
        self.warn = warn

    @property
    def active(self) -> bool:
        return self.mode != "allow"

    def check_all(self, located: Iterable[tuple[str, R]]) -> None:
        """Refuse mode: the first record holding a credential stops everything."""
        for where, item in located:
            if findings := inspect(record_fields(item)):
                raise InputError(
                    f"{where}: holds a credential ({findings[0].describe()}); nothing was "
                    "stored (setting secrets=refuse; secrets=redact stores it with the "
                    "credential replaced by a marker)")

    def screen(self, where: str, item: R) -> tuple[R, tuple[str, ...]]:
        """The record as it may be stored, and the kinds redacted from it."""
        if not self.active:
            return item, ()
        findings = inspect(record_fields(item))
        if not findings:
            return item, ()
        if self.mode == "refuse":  # check_all ran first; a lazy input changed under us
            self.check_all([(where, item)])
        kinds = tuple(dict.fromkeys(f.kind for f in findings))
        places = ", ".join(f.describe() for f in findings[:3])
        more = f" and {len(findings) - 3} more" if len(findings) > 3 else ""
        self.warn(f"{where}: redacted {places}{more} before storing (setting secrets)")
        return _changed(item, cleaned(record_fields(item), findings)), kinds


def located(items: Iterable[R], noun: str) -> Iterator[tuple[str, R]]:
    """(where, item) pairs: input line numbers when the items know them, else positions."""
    numbered = getattr(items, "numbered", None)
    if numbered is not None:
        return ((f"line {n}", item) for n, item in numbered())
    return ((f"{noun} {n}", item) for n, item in enumerate(items, 1))
