#!/usr/bin/env python3
"""magray's speed targets (issue 7), each measured against its baseline in the same run.

    python scripts/bench.py                          # default sizes
    python scripts/bench.py --vectors 1000000        # the issue's million-vector search
    python scripts/bench.py --only cold,help,store   # some targets (cold help bulk warm size store)
    python scripts/bench.py --records 20000 --vectors 20000 --texts 300   # a quick look

Fixtures are built once and cached under --cache (default $TMPDIR/magray-bench): texts
harvested from the docstrings of the installed Python (standard library first, then
site-packages), magray homes holding --records / --vectors records with synthetic
clustered vectors (a Gaussian mixture in a 48-dimensional subspace of the model's 384,
normalised: real sentence embeddings are similarly low in intrinsic dimension, and
isotropic random vectors would make any HNSW look bad), and the ONNX copy of the model.
Building a 1,000,000-record home takes a long time on 2 cores (the HNSW build at
ef_construction 200 dominates); it is reused by later runs.

Every figure is a median of --repeat runs; ratios compare figures taken in this run.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import onnxruntime  # noqa: E402,F401  - before usearch, whose native library breaks its loading

from magray import config  # noqa: E402
from magray.embedding import DEFAULT_MODEL, shipped_model_dir  # noqa: E402

DIM, LATENT, CLUSTERS = 384, 48, 2000
# Processes run as a user's shell runs them: Python may cache bytecode (this machine sets
# PYTHONDONTWRITEBYTECODE, which would recompile magray's sources on every start).
ENV = {**{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
       "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "NO_COLOR": "1"}
ROWS: list[tuple[str, str, str, str]] = []  # target, measure, figure, verdict


# -- reporting ------------------------------------------------------------------------------

def report(target: str, measure: str, figure: str, verdict: str = "") -> None:
    ROWS.append((target, measure, figure, verdict))
    print(f"  {measure:<58} {figure:>18}  {verdict}", flush=True)


def check(ok: bool, goal: str) -> str:
    return f"{'ok' if ok else 'MISSED'} ({goal})"


def table() -> str:
    lines = ["| target | measure | figure | verdict |", "|---|---|---|---|"]
    lines += [f"| {t} | {m} | {f} | {v} |" for t, m, f, v in ROWS]
    return "\n".join(lines)


def wall(argv: list[str], *, env: dict | None = None, stdin: Path | None = None) -> float:
    """Seconds a whole process takes, start-up included."""
    start = time.perf_counter()
    with open(stdin, "rb") if stdin else open(os.devnull, "rb") as feed:
        done = subprocess.run(argv, env=env or ENV, stdin=feed, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    took = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{' '.join(argv[:4])}... failed: {done.stderr.decode()[-2000:]}")
    return took


def median_of(repeat: int, run) -> float:
    return statistics.median(run(i) for i in range(repeat))


def magray_cmd() -> list[str]:
    script = Path(sys.executable).with_name("magray")
    return [str(script)] if script.exists() else [sys.executable, "-m", "magray"]


# -- fixtures -------------------------------------------------------------------------------

def harvest(cache: Path, count: int) -> list[str]:
    """``count`` distinct sentences from docstrings: the stdlib first, then site-packages."""
    path = cache / "texts.json"
    texts = json.loads(path.read_text()) if path.exists() else []
    if len(texts) >= count:
        return texts[:count]
    print(f"harvesting {count} sentences from docstrings...", flush=True)
    seen: set[str] = set()
    texts = []
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    roots = [stdlib, Path(sysconfig.get_paths()["purelib"])]
    for root in roots:
        for file in sorted(root.rglob("*.py")):
            skip = {"test", "tests", "idlelib", "site-packages"} if root == stdlib else {"tests"}
            if skip & set(file.relative_to(root).parts):
                continue
            for sentence in _sentences(file):
                if sentence not in seen:
                    seen.add(sentence)
                    texts.append(sentence)
            if len(texts) >= count:
                break
        if len(texts) >= count:
            break
    base = list(texts)
    while len(texts) < count:  # more wanted than the docstrings hold: numbered variants
        texts.append(f"{base[len(texts) % len(base)]} (note {len(texts)})")
    path.write_text(json.dumps(texts))
    return texts[:count]


def _sentences(file: Path) -> list[str]:
    try:
        tree = ast.parse(file.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
        return []
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            for paragraph in re.split(r"\n\s*\n", ast.get_docstring(node) or ""):
                flat = " ".join(paragraph.split())
                found += [s for s in re.split(r"(?<=[.!?])\s+", flat)
                          if 30 <= len(s) <= 200 and not s.startswith(">>>")]
    return found


def retrieval_pairs(cache: Path, count: int) -> list[tuple[str, str]]:
    """(summary line, rest of the docstring) of stdlib functions: a retrieval set where each
    query has exactly one right document."""
    path = cache / "pairs.json"
    if path.exists():
        pairs = json.loads(path.read_text())
        if len(pairs) >= count:
            return [tuple(p) for p in pairs[:count]]
    pairs, seen = [], set()
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for file in sorted(stdlib.rglob("*.py")):
        if {"test", "tests", "idlelib", "site-packages"} & set(file.relative_to(stdlib).parts):
            continue
        try:
            tree = ast.parse(file.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                parts = re.split(r"\n\s*\n", ast.get_docstring(node) or "", maxsplit=1)
                if len(parts) == 2:
                    summary, body = " ".join(parts[0].split()), " ".join(parts[1].split())
                    if 25 <= len(summary) <= 150 and 80 <= len(body) <= 600 and \
                            summary not in seen:
                        seen.add(summary)
                        pairs.append((summary, body[:600]))
    path.write_text(json.dumps(pairs))
    return pairs[:count]


def synthetic(n: int, seed: int, start: int = 0) -> np.ndarray:
    """Normalised vectors from a fixed Gaussian mixture in a LATENT-dimensional subspace;
    row i depends only on (seed, start + i) chunks of 10,000, so any prefix is stable."""
    space = np.random.default_rng(12345)
    basis = np.linalg.qr(space.standard_normal((DIM, LATENT)))[0]
    centres = space.standard_normal((CLUSTERS, LATENT))
    out = np.empty((n, DIM), dtype=np.float32)
    for chunk in range(start // 10_000, (start + n + 9_999) // 10_000):
        rng = np.random.default_rng([seed, chunk])
        labels = rng.integers(0, CLUSTERS, 10_000)
        z = centres[labels] + 0.6 * rng.standard_normal((10_000, LATENT))
        block = z @ basis.T + 0.05 * rng.standard_normal((10_000, DIM))
        lo, hi = max(start, chunk * 10_000), min(start + n, (chunk + 1) * 10_000)
        out[lo - start:hi - start] = block[lo - chunk * 10_000:hi - chunk * 10_000]
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def onnx_copy(cache: Path) -> Path:
    """The ONNX export in a magray cache (MAGRAY_CACHE) every bench home shares (made once,
    with torch)."""
    from magray.embedding.export import export_dir

    os.environ["MAGRAY_CACHE"] = ENV["MAGRAY_CACHE"] = str(cache / "magray-cache")
    home = cache / "onnx-home"
    onnx_root = cache / "magray-cache" / "onnx"
    # The copy is named after the installed model files (paths, sizes, mtimes): a reinstall
    # makes a new one, which magray would otherwise export again inside a timed run.
    expected = export_dir(onnx_root, DEFAULT_MODEL, str(shipped_model_dir()))
    if not (expected / "model-int8.onnx.data").exists():  # an int8 copy optimised when made
        print("exporting the model to ONNX (once)...", flush=True)
        from magray import Memory

        shutil.rmtree(home, ignore_errors=True)
        with Memory.open(home) as memory:
            memory.store_texts(["a note to make the ONNX export"])
            memory.embedder._onnx_for("int8")  # the int8 copy too
    return onnx_root


def add_onnx(home: Path, cache: Path) -> None:
    onnx_copy(cache)  # in the cache every home shares


def records_home(cache: Path, n: int, dtype: str = "f32", *, texts: list[str] | None = None,
                 layer: str = "assets") -> Path:
    """A magray home with ``n`` records in ``layer`` (real texts, synthetic vectors) and a
    fresh index built by magray itself."""
    home = cache / f"home-{n}-{dtype}"
    if (home / "ready").exists():
        add_onnx(home, cache)
        return home
    from magray import Memory

    source = cache / f"home-{n}-f32"
    shutil.rmtree(home, ignore_errors=True)
    if dtype != "f32" and (source / "ready").exists():  # same records: copy the database
        (home / "data").mkdir(parents=True)
        for name in ("magray.db",):
            shutil.copy2(source / "data" / name, home / "data" / name)
        (home / "data").chmod(0o700)
    else:
        texts = texts or harvest(cache, min(n, 100_000))
        print(f"building {n} records in {home}...", flush=True)
        with Memory.open(home) as memory:
            _insert(memory, texts, n, layer)
    (home / "config.toml").parent.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(f'index_dtype = "{dtype}"\n')
    add_onnx(home, cache)
    started = time.perf_counter()
    settings = config.load(home / "config.toml")
    with Memory.open(home, settings=settings) as memory:
        memory.sync()
    print(f"  index ({dtype}) built in {time.perf_counter() - started:.0f} s", flush=True)
    (home / "ready").write_text("")
    return home


def _insert(memory, texts: list[str], n: int, layer: str) -> None:
    from magray import clock
    from magray.records import Record, content_hash

    when = clock.now_iso()
    with memory.db.write() as tx:
        memory.db.set_meta(tx, "model", DEFAULT_MODEL)
        memory.db.set_meta(tx, "model_key", DEFAULT_MODEL)
        memory.db.set_meta(tx, "dim", str(DIM))
    for start in range(0, n, 10_000):
        vectors = synthetic(min(10_000, n - start), seed=1, start=start)
        with memory.db.write() as tx:
            for i in range(start, start + len(vectors)):
                text = texts[i % len(texts)] if i < len(texts) else f"{texts[i % len(texts)]} #{i}"
                memory.db.insert_record(tx, Record(0, text, layer, None, (), None, None, when,
                                                   when, None, 0, 0.0, content_hash(text)),
                                        vectors[i - start])


# -- 1. cold search -------------------------------------------------------------------------

RAW_QUERY = r'''
import sqlite3, sys, numpy as np, onnxruntime as ort
from tokenizers import Tokenizer
from usearch.index import Index
home, onnx, query = sys.argv[1:4]
tok = Tokenizer.from_file(onnx + "/tokenizer.json"); tok.enable_truncation(256)
tok.no_padding()  # tokenizer.json pads to 128 by default
so = ort.SessionOptions(); so.log_severity_level = 3
s = ort.InferenceSession(onnx + "/model.onnx", so, providers=["CPUExecutionProvider"])
e = tok.encode(query); ids = np.array([e.ids], dtype=np.int64)
v = s.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids),
                 "token_type_ids": np.zeros_like(ids)})[0][0]
view = Index.restore(home + "/data/indexes/assets.usearch", view=True)
keys = view.search(v / np.linalg.norm(v), 40).keys
db = sqlite3.connect(home + "/data/magray.db")  # the floor: no magray code at all
rows = db.execute("SELECT id, text FROM records WHERE id IN (%s)" % ",".join("?" * len(keys)),  # raw baseline
                  [int(k) for k in keys]).fetchall()
'''


def bench_cold(args, cache: Path) -> None:
    print("1. cold search of a new query", flush=True)
    home = records_home(cache, args.records)
    onnx_dir = next(onnx_copy(cache).glob("*/manifest.json")).parent
    env = {**ENV, "MAGRAY_HOME": str(home)}
    nonce = f"{time.time_ns()}"
    wall(magray_cmd() + ["search", f"first use {nonce}"], env=env)  # untimed: bytecode cache
    st = median_of(args.repeat, lambda i: wall(
        [sys.executable, "-c", "import sentence_transformers"]))
    raw = median_of(args.repeat, lambda i: wall(
        [sys.executable, "-c", RAW_QUERY, str(home), str(onnx_dir),
         f"raw query {nonce} {i}"]))
    cold = median_of(args.repeat, lambda i: wall(
        magray_cmd() + ["search", f"how do I read a config file {nonce} {i}"], env=env))
    torch = wall(magray_cmd() + ["search", f"torch query {nonce}"],
                 env={**env, "MAGRAY_BACKEND": "torch"})
    probe = subprocess.run([sys.executable, "-X", "importtime", "-m", "magray", "search",
                            f"probe {nonce}"], env=env, capture_output=True, text=True)
    heavy = sorted({m for m in ("torch", "sentence_transformers", "transformers")
                    if re.search(rf"\| {m}$", probe.stderr, re.M)})
    t = f"1 cold search ({args.records:,} records)"
    report(t, "import sentence_transformers (baseline)", f"{st:.3f} s")
    report(t, "raw ONNX Runtime + tokenizers + usearch view + SQLite", f"{raw:.3f} s")
    report(t, "magray search <new query> (backend auto)", f"{cold:.3f} s",
           check(cold <= 0.5, "<= 0.5 s"))
    report(t, "  ratio to importing sentence-transformers", f"{cold / st:.3f}",
           check(cold / st <= 0.5 / 4.4, "<= 0.5/4.4"))
    report(t, "  ratio to the raw pipeline", f"{cold / raw:.2f}")
    report(t, "  torch/sentence-transformers imported", ", ".join(heavy) or "none",
           check(not heavy, "none"))
    report(t, "magray search <new query> (backend torch, reference)", f"{torch:.3f} s")


# -- 2. --help ------------------------------------------------------------------------------

def bench_help(args, cache: Path) -> None:
    print("2. start-up", flush=True)
    home = records_home(cache, args.records)
    env = {**ENV, "MAGRAY_HOME": str(home)}
    wall(magray_cmd() + ["--help"])  # once untimed: writes the bytecode cache, as a first use does
    python = median_of(args.repeat, lambda i: wall([sys.executable, "-c", "pass"]))
    helped = median_of(args.repeat, lambda i: wall(magray_cmd() + ["--help"]))
    status = median_of(args.repeat, lambda i: wall(magray_cmd() + ["status"], env=env))
    as_json = median_of(args.repeat, lambda i: wall(magray_cmd() + ["status", "--json"],
                                                    env=env))
    t = "2 start-up"
    report(t, "python -c pass (baseline)", f"{python:.3f} s")
    report(t, "magray --help", f"{helped:.3f} s", check(helped <= 0.2, "<= 0.2 s"))
    report(t, f"magray status ({args.records:,} records)", f"{status:.3f} s",
           check(status <= 0.3, "<= 0.3 s"))
    report(t, f"magray status --json ({args.records:,} records)", f"{as_json:.3f} s",
           check(as_json <= 0.3, "<= 0.3 s"))


# -- 3. bulk store --------------------------------------------------------------------------

RAW_TORCH = r'''
import sys, time
from sentence_transformers import SentenceTransformer
model = SentenceTransformer(sys.argv[1], device="cpu")
texts = open(sys.argv[2], encoding="utf-8").read().splitlines()
start = time.perf_counter()
model.encode(texts, batch_size=64)
print(time.perf_counter() - start, file=sys.stderr)
'''

RAW_ONNX = r'''
import sys, time, numpy as np, onnxruntime as ort
from tokenizers import Tokenizer
onnx, name, path = sys.argv[1:4]
tok = Tokenizer.from_file(onnx + "/tokenizer.json"); tok.enable_truncation(256)
tok.no_padding()  # tokenizer.json pads to 128 by default
so = ort.SessionOptions(); so.log_severity_level = 3
s = ort.InferenceSession(onnx + "/" + name, so, providers=["CPUExecutionProvider"])
texts = open(path, encoding="utf-8").read().splitlines()
start = time.perf_counter()
enc = sorted(tok.encode_batch(texts), key=lambda e: -len(e.ids))
for i in range(0, len(enc), 64):
    batch = enc[i:i + 64]; width = max(len(e.ids) for e in batch)
    ids = np.zeros((len(batch), width), np.int64); mask = np.zeros_like(ids)
    for r, e in enumerate(batch):
        ids[r, :len(e.ids)] = e.ids; mask[r, :len(e.ids)] = 1
    s.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})
print(time.perf_counter() - start, file=sys.stderr)
'''


def _encode_time(argv: list[str]) -> tuple[float, float]:
    """(whole-process wall, seconds inside encode) of a raw encoding script."""
    start = time.perf_counter()
    done = subprocess.run(argv, env=ENV, capture_output=True, text=True)
    took = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(done.stderr[-2000:])
    return took, float(done.stderr.strip().splitlines()[-1])


def _store_wall(cache: Path, texts_file: Path, backend: str, i: int) -> float:
    home = Path(tempfile.mkdtemp(prefix="bulk-", dir=cache))
    add_onnx(home, cache)
    env = {**ENV, "MAGRAY_HOME": str(home), "MAGRAY_BACKEND": backend, "MAGRAY_DEVICE": "cpu"}
    try:
        return wall(magray_cmd() + ["store", "--layer", "assets", "-"], env=env,
                    stdin=texts_file)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def bench_bulk(args, cache: Path) -> None:
    print("3. bulk store", flush=True)
    texts = harvest(cache, args.texts)
    texts_file = cache / f"texts-{args.texts}.txt"
    texts_file.write_text("\n".join(texts) + "\n", encoding="utf-8")
    onnx_dir = next(onnx_copy(cache).glob("*/manifest.json")).parent
    t = f"3 bulk store ({args.texts:,} texts)"
    runs = {}
    for label, argv in [
            ("torch", [sys.executable, "-c", RAW_TORCH, str(shipped_model_dir()),
                       str(texts_file)]),
            ("onnx", [sys.executable, "-c", RAW_ONNX, str(onnx_dir), "model.onnx",
                      str(texts_file)]),
            ("onnx-int8", [sys.executable, "-c", RAW_ONNX, str(onnx_dir), "model-int8.onnx",
                           str(texts_file)])]:
        raw = [_encode_time(argv) for _ in range(args.repeat)]
        raw_wall = statistics.median(r[0] for r in raw)
        raw_rate = len(texts) / statistics.median(r[1] for r in raw)
        store = median_of(args.repeat, lambda i: _store_wall(cache, texts_file, label, i))
        runs[label] = raw_rate
        report(t, f"raw encode, {label}: whole process", f"{raw_wall:.2f} s")
        report(t, f"raw encode, {label}: throughput", f"{raw_rate:.0f} texts/s")
        report(t, f"magray store, backend {label}", f"{store:.2f} s",
               check(store / raw_wall <= 1.15, f"{store / raw_wall:.2f}x <= 1.15x raw"))
    best = max(runs["onnx"], runs["onnx-int8"]) / runs["torch"]
    report(t, "throughput onnx / torch", f"{runs['onnx'] / runs['torch']:.2f}x")
    report(t, "throughput onnx-int8 / torch", f"{runs['onnx-int8'] / runs['torch']:.2f}x",
           check(best >= 2, ">= 2x"))
    _recall_cost(args, cache, onnx_dir, t)


def _recall_cost(args, cache: Path, onnx_dir: Path, t: str) -> None:
    from magray.embedding import SentenceTransformerEmbedder, default_model_roots
    from magray.embedding.onnx import OnnxEmbedder
    from magray.embedding.export import read_manifest

    pairs = retrieval_pairs(cache, args.pairs)
    queries, documents = [q for q, _ in pairs], [d for _, d in pairs]
    manifest = read_manifest(onnx_dir)
    torch = SentenceTransformerEmbedder(DEFAULT_MODEL, roots=default_model_roots(cache),
                                        device="cpu")
    fp32 = OnnxEmbedder(onnx_dir, manifest, name=DEFAULT_MODEL)
    int8 = OnnxEmbedder(onnx_dir, manifest, name=DEFAULT_MODEL,
                        model_file=onnx_dir / "model-int8.onnx")
    q = {"torch": np.stack([torch.embed_query(x) for x in queries]),
         "onnx": fp32.encode(queries, "query"), "onnx-int8": int8.encode(queries, "query")}
    d = {"torch": torch.embed_documents(documents), "onnx": fp32.embed_documents(documents),
         "onnx-int8": int8.embed_documents(documents)}

    def recall(qv: np.ndarray, dv: np.ndarray) -> float:
        top = np.argsort(-(qv @ dv.T), axis=1)[:, :10]
        return float(np.mean([i in row for i, row in enumerate(top)]))

    base = recall(q["torch"], d["torch"])
    report(t, f"recall@10, {len(pairs)} docstring summary->body pairs, torch", f"{base:.3f}")
    for label, qv, dv in [("onnx", q["onnx"], d["onnx"]),
                          ("onnx-int8 documents, fp32 queries", q["onnx"], d["onnx-int8"]),
                          ("onnx-int8 both", q["onnx-int8"], d["onnx-int8"])]:
        r = recall(qv, dv)
        report(t, f"recall@10, {label}", f"{r:.3f}", f"{r - base:+.3f} vs torch")
    cos = float((d["torch"] * d["onnx"]).sum(axis=1).min())
    cos8 = float((d["torch"] * d["onnx-int8"]).sum(axis=1).mean())
    report(t, "cosine to torch: onnx (lowest)", f"{cos:.6f}", check(cos >= 0.999, ">= 0.999"))
    report(t, "cosine to torch: onnx-int8 (mean)", f"{cos8:.4f}")


# -- 4. warm search at scale ----------------------------------------------------------------

def _queries(memory, count: int) -> tuple[list[str], np.ndarray]:
    """Query texts whose vectors (new draws from the mixture) sit in the embedding cache,
    so ``Memory.search`` runs its whole path without a model."""
    from magray import clock
    from magray.records import content_hash

    vectors = synthetic(count, seed=99)
    texts = [f"benchmark query {i}" for i in range(count)]
    model = f"{memory.embedder.key}|query"
    with memory.db.write() as conn:
        memory.db.cache_vectors(conn, model, [(content_hash(t), v) for t, v in
                                              zip(texts, vectors)], clock.now_iso())
    return texts, vectors


def _exact_top(home: Path, queries: np.ndarray, n: int) -> np.ndarray:
    from magray.db.store import Store
    from magray.records import LAYERS

    db = Store.open_readonly(home / "data" / "magray.db")
    best_s = np.full((len(queries), 10), -2.0, dtype=np.float32)
    best_i = np.zeros((len(queries), 10), dtype=np.int64)
    batches = (batch for layer in LAYERS for batch in db.layer_vectors(layer, DIM, 50_000))
    for ids, vectors in batches:
        scores = queries @ vectors.T
        all_s = np.concatenate([best_s, scores], axis=1)
        all_i = np.concatenate([best_i, np.broadcast_to(ids, scores.shape)], axis=1)
        pick = np.argsort(-all_s, axis=1)[:, :10]
        best_s = np.take_along_axis(all_s, pick, 1)
        best_i = np.take_along_axis(all_i, pick, 1)
    return best_i


def bench_warm(args, cache: Path) -> None:
    from magray import Memory
    from usearch.index import Index

    print("4. warm search", flush=True)
    t = f"4 warm search ({args.vectors:,} vectors)"
    recalls = {}
    for dtype in args.dtypes.split(","):
        home = records_home(cache, args.vectors, dtype)
        settings = config.load(home / "config.toml")
        with Memory.open(home, settings=settings) as memory:
            texts, vectors = _queries(memory, args.queries)
            exact = _exact_top(home, vectors, args.vectors)
            index = memory.index("assets")
            raw = Index.restore(str(index.path), view=True)
            raw.expansion_search = settings.hnsw_ef_search
            timings = {"raw": [], "layer": [], "memory": [], "fresh": []}
            found = []

            def search(text):
                return memory.search(text, mode="vector", top_k=10, layers=("assets",),
                                     track=False)

            for rounds in range(2):  # the first round warms the page cache
                for number, (text, vector) in enumerate(zip(texts, vectors)):
                    runs = [("raw", lambda: raw.search(vector, 10)),
                            ("layer", lambda: index.search(vector, 10)),
                            ("memory", lambda: search(text)),
                            ("fresh", lambda: search(text))]
                    turn = number % len(runs)  # no measure always goes first (a cold cache)
                    for label, run in runs[turn:] + runs[:turn]:
                        if label == "fresh":  # as if new to this process: vector from SQLite
                            memory.encoder.forget_query(text)
                        start = time.perf_counter()
                        result = run()
                        if rounds:
                            timings[label].append(time.perf_counter() - start)
                        if rounds and label == "memory":
                            found.append([h.record.id for h in result])
            p50 = {k: statistics.median(v) * 1000 for k, v in timings.items()}
            recall = float(np.mean([len(set(f) & set(e.tolist())) / 10
                                    for f, e in zip(found, exact)]))
            raw_keys = raw.search(vectors, 10).keys
            raw_recall = float(np.mean([len(set(r.tolist()) & set(e.tolist())) / 10
                                        for r, e in zip(raw_keys, exact)]))
            recalls[dtype] = recall
        report(t, f"{dtype}: raw usearch search k=10, p50", f"{p50['raw']:.3f} ms")
        report(t, f"{dtype}: magray layer index search k=10 (warm view), p50",
               f"{p50['layer']:.3f} ms", f"{p50['layer'] / p50['raw']:.2f}x raw")
        report(t, f"{dtype}: Memory.search vector top 10 (records from SQLite), p50",
               f"{p50['memory']:.3f} ms",
               check(p50["memory"] / p50["raw"] <= 1.5,
                     f"{p50['memory'] / p50['raw']:.2f}x <= 1.5x raw"))
        report(t, f"{dtype}:   the same, query vector read from the database cache",
               f"{p50['fresh']:.3f} ms", f"{p50['fresh'] / p50['raw']:.2f}x raw")
        report(t, f"{dtype}: recall@10 of Memory.search vs exact", f"{recall:.3f}",
               check(recall >= 0.95, ">= 0.95"))
        report(t, f"{dtype}: recall@10 of raw usearch k=10 vs exact", f"{raw_recall:.3f}")
    if {"f32", "f16"} <= set(recalls):
        loss = recalls["f32"] - recalls["f16"]
        report(t, "recall@10 f32 - f16", f"{loss:+.3f}", check(loss <= 0.01, "<= 0.01"))


# -- 5. index size --------------------------------------------------------------------------

def bench_size(args, cache: Path) -> None:
    from magray import Memory, clock
    from usearch.index import Index

    print("5. index size", flush=True)
    n = args.size_records
    home = records_home(cache, n)
    path = home / "data" / "indexes" / "assets.usearch"
    settings = config.load(home / "config.toml")
    raw_file = cache / f"raw-{n}.usearch"
    if not raw_file.exists():
        raw = Index(ndim=DIM, metric="ip", dtype="f32", connectivity=settings.hnsw_m,
                    expansion_add=settings.hnsw_ef_construction)
        raw.add(np.arange(1, n + 1), synthetic(n, seed=1))
        raw.save(str(raw_file))
    mine = path.stat().st_size + path.with_suffix(".json").stat().st_size
    t = f"5 index size ({n:,} vectors)"
    report(t, "raw usearch file, same vectors and settings", f"{raw_file.stat().st_size:,} B")
    report(t, "magray index file + sidecar", f"{mine:,} B",
           check(mine / raw_file.stat().st_size <= 1.1,
                 f"{mine / raw_file.stat().st_size:.3f}x <= 1.1x"))
    # after churn: 1% of the records deleted and stored again, replayed into the index
    churn = cache / f"churn-{n}"
    shutil.rmtree(churn, ignore_errors=True)
    shutil.copytree(home, churn)
    with Memory.open(churn, settings=config.load(churn / "config.toml")) as memory:
        churned_ids = [i for i in memory.db.layer_ids("assets") if i % 100 == 0]
        for there, back in (("assets", "insights"), ("insights", "assets")):
            with memory.db.write() as tx:
                for record_id in churned_ids:
                    memory.db.move(tx, record_id, there, back, clock.now_iso())
            memory.sync()
    churned = churn / "data" / "indexes" / "assets.usearch"
    size = churned.stat().st_size + churned.with_suffix(".json").stat().st_size
    report(t, "magray after 1% of vectors left and re-entered", f"{size:,} B",
           check(size / raw_file.stat().st_size <= 1.1,
                 f"{size / raw_file.stat().st_size:.3f}x <= 1.1x"))
    shutil.rmtree(churn, ignore_errors=True)


# -- 6. single store into a large layer -----------------------------------------------------

def bench_single(args, cache: Path) -> None:
    from magray import Memory
    from usearch.index import Index

    print("6. single store into a large layer", flush=True)
    source = records_home(cache, args.records)
    home = cache / "single-store"
    shutil.rmtree(home, ignore_errors=True)
    shutil.copytree(source, home)
    os.sync()  # the copy's writeback would otherwise slow the fsyncs being timed
    settings = config.load(home / "config.toml")
    path = home / "data" / "indexes" / "assets.usearch"
    vector = synthetic(1, seed=7)
    raws, mine = [], []
    with Memory.open(home, settings=settings, warn=print) as memory:
        memory.store_texts(["warm the encoder up"], layer="insights")
        for i in range(args.repeat):
            start = time.perf_counter()
            index = Index.restore(str(path), view=False)
            index.add(10_000_000 + i, vector[0])
            index.save(str(cache / "raw-single.usearch"))
            raws.append(time.perf_counter() - start)
            start = time.perf_counter()
            memory.store_texts([f"one more note, number {i} of {time.time_ns()}"],
                               layer="assets")
            mine.append(time.perf_counter() - start)
    env = {**ENV, "MAGRAY_HOME": str(home)}
    whole = wall(magray_cmd() + ["store", "--layer", "assets", f"cli note {time.time_ns()}"],
                 env=env)
    raw, me = statistics.median(raws), statistics.median(mine)
    t = f"6 single store ({args.records:,}-record layer)"
    report(t, "raw usearch load + add + save", f"{raw:.3f} s")
    report(t, "Memory.store of one text (warm encoder)", f"{me:.3f} s",
           check(me / raw <= 2, f"{me / raw:.2f}x <= 2x"))
    report(t, "magray store <text>, whole process", f"{whole:.3f} s")
    (cache / "raw-single.usearch").unlink(missing_ok=True)
    shutil.rmtree(home, ignore_errors=True)


TARGETS = {"cold": bench_cold, "help": bench_help, "bulk": bench_bulk, "warm": bench_warm,
           "size": bench_size, "store": bench_single}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path,
                        default=Path(tempfile.gettempdir()) / "magray-bench")
    parser.add_argument("--records", type=int, default=100_000,
                        help="records for the cold-search, status and single-store homes")
    parser.add_argument("--vectors", type=int, default=100_000,
                        help="vectors for the warm-search homes (the issue: 1000000)")
    parser.add_argument("--size-records", type=int, default=20_000,
                        help="vectors for the index-size comparison")
    parser.add_argument("--texts", type=int, default=1000, help="texts for the bulk store")
    parser.add_argument("--pairs", type=int, default=300, help="retrieval pairs")
    parser.add_argument("--queries", type=int, default=200, help="warm-search queries")
    parser.add_argument("--dtypes", default="f32,f16", help="index dtypes for warm search")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", default=",".join(TARGETS))
    parser.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    for name in args.only.split(","):
        TARGETS[name.strip()](args, args.cache)
    if args.markdown:
        print(table())


if __name__ == "__main__":
    main()
