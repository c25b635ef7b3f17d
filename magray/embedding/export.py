"""ONNX copies of a sentence-transformers model, so queries are embedded without torch.

Importing torch and sentence-transformers costs seconds; ONNX Runtime with the model's own
fast tokenizer costs a tenth of that. The copy is made once, from the loaded torch model,
and kept, shared by every home, in magray's user cache directory (``MAGRAY_CACHE``) under
``onnx/<model>-<hash>/``:

    manifest.json          what the copy is and how to feed it (prompts, lengths, padding)
    tokenizer.json         the model's fast tokenizer
    model.onnx(.data)      the whole pipeline: transformer, pooling, dense layers, normalise,
                           graph-optimised once, weights in a side file ONNX Runtime maps
    model-int8.onnx(.data) made on first use of the ``onnx-int8`` backend (dynamic int8),
                           graph-optimised once the same way (copies made before that are
                           optimised at every session start instead)

A copy is only kept if it agrees with the torch model on probe texts (cosine >= 0.999 for
queries and documents); otherwise a ``.failed`` note records why, and magray stays on
torch. Directories are built under a temporary name and renamed into place under a lock,
so a reader sees a whole copy or none. The hash covers the model's files (paths, sizes,
mtimes), so a changed model gets a fresh copy.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from .. import files
from ..locks import locked

FORMAT = 2
MIN_AGREEMENT = 0.999  # cosine between the ONNX and torch vectors of every probe text
MIN_INT8_AGREEMENT = 0.95  # mean cosine between int8 and fp32 vectors of the probes
SUPPORTED_MODULES = {"Transformer", "Pooling", "Dense", "Normalize"}
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
PROBES = [
    "use rg -uu to search files that .gitignore hides",
    "why did we pick a relational store instead of a document database",
    "  leading and trailing spaces  ",
    "Ünïcödé, émojis 🙂 and CJK 漢字 in one note",
    "x",
    "a longer note that goes on for a while: " + "the deploy runs every night at two, " * 40,
]


class ExportError(Exception):
    """The model cannot be copied to ONNX faithfully (the reason is the message)."""


def fingerprint(source: str) -> str:
    """What identifies a model's files: relative paths, sizes and mtimes (or the hub name)."""
    root = Path(source)
    if not root.is_dir():
        return source
    parts = []
    for path in sorted(root.rglob("*")):
        if path.is_file():
            info = path.stat()
            parts.append(f"{path.relative_to(root)}:{info.st_size}:{info.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def export_dir(root: Path, name: str, source: str) -> Path:
    """Where the ONNX copy of ``source`` lives (whether or not it exists yet)."""
    digest = hashlib.sha256(f"{FORMAT}\0{source}\0{fingerprint(source)}".encode()).hexdigest()
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name.split("/")[-1]).strip(".-")[:60] or "model"
    return root / f"{slug}-{digest[:16]}"


def failure_note(directory: Path) -> Path:
    return directory.with_name(directory.name + ".failed")


def read_manifest(directory: Path) -> dict | None:
    try:
        manifest = json.loads((directory / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    return manifest if manifest.get("format") == FORMAT else None


def export(directory: Path, *, source: str, name: str, int8: bool = False,
           truncate_dim: int = 0, allow_download: bool = False, timeout: float = 1800.0) -> dict:
    """Make the ONNX copy (and with ``int8`` the quantised one) in a separate process.

    The exporter traces the model with torch's JIT, which hangs or crashes in a process that
    loaded usearch's native library first (both bring their own C++ runtime); a child
    process also keeps torch out of the caller, and a crash in the exporter out of the
    caller's command. Raises ExportError with the child's reason.
    """
    job = {"directory": str(directory), "source": source, "name": name, "int8": int8,
           "truncate_dim": truncate_dim, "allow_download": allow_download}
    package_root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [package_root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    try:
        done = subprocess.run([sys.executable, "-m", "magray.embedding.export", json.dumps(job)],
                              env=env, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ExportError(_first_line(exc)) from None
    manifest = read_manifest(directory)
    if done.returncode != 0 or manifest is None:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        raise ExportError(lines[-1][:300] if lines else f"the exporter exited with "
                          f"{done.returncode}")
    return manifest


def _child(job: dict) -> None:
    """The exporting process: load the torch model, export, check, quantise if asked."""
    if not job["allow_download"]:
        os.environ["HF_HUB_OFFLINE"] = os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    directory = Path(job["directory"])
    if read_manifest(directory) is not None and (
            not job["int8"] or (directory / "model-int8.onnx").exists()):
        return  # another process made it while this one waited: no need to load torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(job["source"], device="cpu",
                                truncate_dim=job["truncate_dim"] or None,
                                local_files_only=not job["allow_download"])
    ensure(directory, model, name=job["name"])
    if job["int8"]:
        ensure_int8(directory, model)


def ensure(directory: Path, model: Any, *, name: str, lock_timeout: float = 600.0) -> dict:
    """The manifest of the ONNX copy in ``directory``, exporting ``model`` first if needed.

    Raises ExportError (and leaves a ``.failed`` note) when the model cannot be exported
    faithfully.
    """
    directory.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with locked(directory.with_name(directory.name + ".lock"), timeout=lock_timeout):
        _remove_stale_work(directory)
        manifest = read_manifest(directory)
        if manifest is not None:
            return manifest
        tmp = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
        tmp.mkdir(mode=0o700)
        try:
            manifest = _export(model, tmp, name)
            files.write_atomic(tmp / "manifest.json", json.dumps(manifest, indent=1).encode())
            shutil.rmtree(directory, ignore_errors=True)  # a copy without a manifest is junk
            os.replace(tmp, directory)
            files.sync_dir(directory.parent)
        except OSError as exc:  # disk full, permissions: try again next time
            raise ExportError(_first_line(exc)) from exc
        except Exception as exc:  # noqa: BLE001 - the model itself cannot be exported: say so
            reason = str(exc) if isinstance(exc, ExportError) else _first_line(exc)
            files.write_atomic(failure_note(directory), json.dumps({"reason": reason}).encode())
            raise ExportError(reason) from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return manifest


def ensure_int8(directory: Path, model: Any, *, lock_timeout: float = 600.0) -> Path:
    """The dynamically quantised (int8) copy next to the fp32 one, made on first use from a
    fresh export of ``model`` (a torch model; only called when the copy is missing)."""
    target = directory / "model-int8.onnx"
    if target.exists():
        return target
    with locked(directory.with_name(directory.name + ".lock"), timeout=lock_timeout):
        _remove_stale_work(directory)
        if target.exists():
            return target
        try:
            from onnxruntime.quantization import QuantType, quantize_dynamic
        except ImportError as exc:
            raise ExportError(f"int8 quantisation needs the onnx package ({exc})") from None
        work = Path(tempfile.mkdtemp(prefix=f".{directory.name}.int8-", dir=directory.parent))
        try:
            _trace(model, work / "raw.onnx")
            # Per-channel scales on the MatMul weights keep int8 vectors within about 1%
            # (cosine) of fp32; per-tensor scales lose several per cent.
            logging.disable(logging.WARNING)  # the quantiser's advice goes to the root logger
            try:
                quantize_dynamic(str(work / "raw.onnx"), str(work / "quantised.onnx"),
                                 per_channel=True, weight_type=QuantType.QInt8,
                                 op_types_to_quantize=["MatMul"])
            finally:
                logging.disable(logging.NOTSET)
            _optimise(work / "quantised.onnx", work / target.name)  # session start: 0.2 -> 0.03 s
            agreement = _int8_agreement(directory, work / target.name)
            if agreement < MIN_INT8_AGREEMENT:
                reason = f"int8 vectors agree with fp32 only to cosine {agreement:.3f}"
                files.write_atomic(failure_note(target), json.dumps({"reason": reason}).encode())
                raise ExportError(reason)
            data = target.name + ".data"  # the weights first: the model file says "complete"
            os.replace(work / data, directory / data)
            os.replace(work / target.name, target)
            files.sync_dir(directory)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return target


def _remove_stale_work(directory: Path) -> None:
    """Delete work directories (~150 MB each) of exports that were killed: the caller holds
    the copy's lock, which every exporter holds for as long as its work directory exists."""
    for pattern in (f".{directory.name}.tmp-*", f".{directory.name}.int8-*"):
        for stale in directory.parent.glob(pattern):
            shutil.rmtree(stale, ignore_errors=True)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:200] if lines else ''}"


# -- the export itself (torch is loaded by now) ---------------------------------------------

def supported(model: Any) -> str:
    """Why ``model`` cannot be exported ('' when it can)."""
    modules = list(model)
    kinds = [type(m).__name__ for m in modules]
    if not modules or kinds[0] != "Transformer":
        return "the model does not start with a Transformer module"
    if unknown := sorted(set(kinds) - SUPPORTED_MODULES):
        return f"modules {', '.join(unknown)} are not supported by the ONNX export"
    transformer = modules[0]
    tokenizer = transformer.tokenizer
    if tokenizer is None or not getattr(tokenizer, "is_fast", False):
        return "the model has no fast tokenizer"
    if set(getattr(transformer, "modality_config", None) or {"text": 1}) != {"text"}:
        return "the model takes more than plain text"
    for option in ("query_expansion", "query_length", "document_length"):
        if getattr(transformer, option, None) is not None:
            return f"the model sets {option}"
    for module in modules:
        if getattr(module, "include_prompt", True) is False and any(model.prompts.values()):
            return "the model pools without its prompt tokens"
    return ""


def _export(model: Any, out: Path, name: str) -> dict:
    if reason := supported(model):
        raise ExportError(reason)
    transformer = model[0]
    tokenizer = transformer.tokenizer
    inputs = _trace(model, out / "raw.onnx")
    _optimise(out / "raw.onnx", out / "model.onnx")
    (out / "raw.onnx").unlink()
    (out / "tokenizer.json").write_text(tokenizer.backend_tokenizer.to_str())
    manifest = {
        "format": FORMAT,
        "model": name,
        "inputs": inputs,
        "max_length": int(transformer.max_seq_length or tokenizer.model_max_length),
        "padding_side": tokenizer.padding_side,
        "truncation_side": tokenizer.truncation_side,
        "pad_id": int(tokenizer.pad_token_id or 0),
        "pad_type_id": int(getattr(tokenizer, "pad_token_type_id", 0) or 0),
        "pad_token": str(tokenizer.pad_token or ""),
        "prompts": {"query": _prompt(model, "query"), "document": _prompt(model, "document")},
        "optimised": True,
    }
    manifest["dim"], manifest["agreement"] = _agreement(model, out, manifest)
    return manifest


def _trace(model: Any, path: Path) -> list[str]:
    """Export the whole pipeline of ``model`` to ``path``; returns the input names."""
    import torch

    sample = _features(model, PROBES[:2])
    inputs = [k for k in INPUTS if k in sample]
    extra = set(sample) - set(INPUTS) - {"modality", "prompt_length"}
    if extra or not {"input_ids", "attention_mask"} <= set(inputs):
        raise ExportError(f"the tokenizer makes inputs {sorted(sample)} that the export cannot feed")

    class Pipeline(torch.nn.Module):
        def __init__(self, st: Any):
            super().__init__()
            self.st = st

        def forward(self, *tensors):
            features = dict(zip(inputs, tensors), modality="text")
            return self.st(features)["sentence_embedding"]

    device = next(model.parameters()).device
    pipeline = Pipeline(model).eval()
    args = tuple(sample[k].to(device) for k in inputs)
    axes = {k: {0: "batch", 1: "tokens"} for k in inputs} | {"embedding": {0: "batch"}}
    import warnings

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer chatter about constant branches
        try:  # the TorchScript exporter: fast, needs nothing beyond torch
            torch.onnx.export(pipeline, args, str(path), input_names=inputs,
                              output_names=["embedding"], dynamic_axes=axes, opset_version=17,
                              do_constant_folding=True, dynamo=False)
        except (TypeError, RuntimeError, ImportError, AttributeError):
            batch, tokens = torch.export.Dim("batch"), torch.export.Dim("tokens")
            torch.onnx.export(pipeline, args, str(path), input_names=inputs,
                              output_names=["embedding"], dynamo=True, external_data=False,
                              dynamic_shapes=tuple({0: batch, 1: tokens} for _ in inputs))
    return inputs


def _optimise(raw: Path, target: Path) -> None:
    """Graph fusions (attention, layer norm, GELU) done once here rather than at every
    session start, and the weights in a side file that ONNX Runtime maps instead of
    parsing: together they cut a query session's start-up by more than half."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(target)
    options.add_session_config_entry(
        "session.optimized_model_external_initializers_file_name", target.name + ".data")
    options.add_session_config_entry(
        "session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    ort.InferenceSession(str(raw), options, providers=["CPUExecutionProvider"])


def _features(model: Any, texts: list[str]) -> dict:
    prepare = getattr(model, "preprocess", None) or model.tokenize
    return prepare(texts)


def _prompt(model: Any, role: str) -> str:
    """The prompt sentence-transformers' encode_query / encode_document would prepend."""
    prompts = getattr(model, "prompts", None) or {}
    names = ["query"] if role == "query" else ["document", "passage", "corpus"]
    for candidate in names:
        if candidate in prompts:
            return prompts[candidate] or ""
    default = getattr(model, "default_prompt_name", None)
    return prompts.get(default, "") if default else ""


def _agreement(model: Any, out: Path, manifest: dict) -> tuple[int, float]:
    """(dimension of the ONNX vectors, lowest cosine to torch over the probes, both roles).

    A model loaded with Matryoshka truncation is compared on its leading dimensions: that
    is all truncation keeps, and magray truncates the ONNX vectors the same way."""
    from .base import normalise
    from .onnx import OnnxEmbedder

    onnx = OnnxEmbedder(out, manifest, name="probe")
    lowest, dim = 1.0, 0
    for role in ("query", "document"):
        encode = model.encode_query if role == "query" else model.encode_document
        reference = normalise(encode(PROBES, convert_to_numpy=True, show_progress_bar=False))
        mine = onnx.encode(PROBES, role)
        dim = mine.shape[1]
        lowest = min(lowest, float((reference * normalise(mine[:, :reference.shape[1]]))
                                   .sum(axis=1).min()))
    if lowest < MIN_AGREEMENT:
        raise ExportError(f"ONNX vectors agree with torch only to cosine {lowest:.4f} "
                          f"(needed {MIN_AGREEMENT})")
    return int(dim), round(lowest, 6)


def _int8_agreement(directory: Path, int8_model: Path) -> float:
    from .onnx import OnnxEmbedder

    manifest = read_manifest(directory) or {}
    full = OnnxEmbedder(directory, manifest, name="probe")
    small = OnnxEmbedder(directory, manifest, name="probe", model_file=int8_model)
    return float((full.encode(PROBES, "document") * small.encode(PROBES, "document"))
                 .sum(axis=1).mean())


if __name__ == "__main__":
    try:
        _child(json.loads(sys.argv[1]))
    except Exception as error:  # noqa: BLE001 - the parent reads the last line
        print(f"{type(error).__name__}: {error}".splitlines()[0][:300], file=sys.stderr)
        sys.exit(1)
