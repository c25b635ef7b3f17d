"""Precision and recall of magray's credential detection per kind, over the labelled set
in tests/secrets_corpus.py (fake credentials and look-alikes that must stay).

    python scripts/eval_secrets.py [--entropy]

A credential counts as found when its exact string is gone from the redacted text; a
finding counts as right when it overlaps the labelled credential (any finding in a
look-alike is a false positive). ``--entropy`` also shows how many look-alikes
detect-secrets' high-entropy-string plugins would flag (why magray does not use them).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from magray import secrets  # noqa: E402
from tests.secrets_corpus import LOOKALIKES, SECRETS  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entropy", action="store_true")
    parser.add_argument("--worst", type=int, metavar="CHARS", default=0,
                        help="also time find() on adversarial texts of this length (each "
                             "repeats a credential prefix: the time must grow linearly)")
    parser.add_argument("-v", "--verbose", action="store_true", help="list every miss")
    args = parser.parse_args()
    right, wrong, found, total = Counter(), Counter(), Counter(), Counter()
    misses = []
    for kind, text, secret in SECRETS:
        total[kind] += 1
        findings = secrets.find(text)
        start = text.index(secret)
        if secret not in secrets.redact(text, findings):
            found[kind] += 1
        else:
            misses.append(f"missed {kind}: {text[:60]!r}")
        for f in findings:
            if f.start < start + len(secret) and start < f.end:
                right[f.kind] += 1
            else:
                wrong[f.kind] += 1
                misses.append(f"extra {f.kind} in a {kind} text")
    flagged = 0
    for text in LOOKALIKES:
        findings = secrets.find(text)
        flagged += bool(findings)
        for f in findings:
            wrong[f.kind] += 1
            misses.append(f"false {f.kind}: {text[:60]!r}")
    print(f"{'kind':28} {'n':>3} {'recall':>7} {'precision':>9}")
    for kind in sorted(set(total) | set(wrong)):
        n = total[kind]
        recall = f"{found[kind] / n:.2f}" if n else "-"
        hits = right[kind] + wrong[kind]
        precision = f"{right[kind] / hits:.2f}" if hits else "-"
        print(f"{kind:28} {n:>3} {recall:>7} {precision:>9}")
    hits = sum(right.values()) + sum(wrong.values())
    print(f"{'all':28} {len(SECRETS):>3} {sum(found.values()) / len(SECRETS):7.2f} "
          f"{sum(right.values()) / max(hits, 1):9.2f}")
    print(f"look-alikes: {len(LOOKALIKES)}, flagged {flagged}")
    texts = [t for _, t, _ in SECRETS] + LOOKALIKES
    started = time.perf_counter()
    for _ in range(20):
        for text in texts:
            secrets.find(text)
    per = (time.perf_counter() - started) / (20 * len(texts))
    print(f"find(): {per * 1e6:.1f} µs per text (mean over the set)")
    if args.entropy:
        _entropy()
    if args.worst:
        _worst(args.worst)
    if args.verbose:
        print("\n".join(misses))


PREFIXES = ["eyJ", "://a:", "sk-", "//", "xoxb-1-", "glpat-", "AKIA", "AIza", "sk-ant-api03-",
            "ghp_", "github_pat_", "pypi-AgEIcHlwaS5vcmc", "npm_", "Authorization: Bearer ",
            "x-api-key: ", "sig=", "1Q~", "Password=", ";pwd=", "password is ", "-p ",
            "aws_secret=", "-----BEGIN PRIVATE KEY-----", "PuTTY-User-Key-File-2:", "a:b@",
            "//a/:_authToken=", "password=", "key=\"", "AccountKey=", "a", "aws "]


def _worst(n: int) -> None:
    secrets.detectors()
    times = []
    for prefix in PREFIXES:
        text = prefix * (n // len(prefix))
        started = time.perf_counter()
        secrets.find(text)
        times.append((time.perf_counter() - started, prefix))
    seconds, prefix = max(times)
    print(f"worst find() on {n} characters: {seconds:.2f} s ({prefix!r} repeated)")


def _entropy() -> None:
    from detect_secrets.plugins.high_entropy_strings import (Base64HighEntropyString,
                                                             HexHighEntropyString)

    plugins = [Base64HighEntropyString(), HexHighEntropyString()]
    flagged = sum(any(list(p.analyze_string(t)) for p in plugins) for t in LOOKALIKES)
    caught = sum(any(list(p.analyze_string(t)) for p in plugins) for _, t, _ in SECRETS)
    print(f"detect-secrets high-entropy plugins: flag {flagged} of {len(LOOKALIKES)} "
          f"look-alikes, {caught} of {len(SECRETS)} credentials")


if __name__ == "__main__":
    main()
