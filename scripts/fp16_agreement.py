"""How closely the default model's fp16 vectors agree with its fp32 ones (cosine).

magray embeds documents in fp16 on CUDA only when they agree with fp32 on probe texts to
cosine >= 0.999 (queries are embedded in fp32 by ONNX Runtime), so both share one vector
space. This prints the agreement on the probe texts and on the test corpus, on CUDA when
torch can use it, else on the CPU (fp16 arithmetic emulated there: indicative only).

    python scripts/fp16_agreement.py
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def main() -> None:
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import torch
    from sentence_transformers import SentenceTransformer

    from corpus import FILLER, IDENTIFIED, NOTES
    from magray.embedding import normalise, resolve_model
    from magray.embedding.export import PROBES

    device = "cuda" if torch.cuda.is_available() else "cpu"
    source = resolve_model("all-MiniLM-L6-v2", [])
    texts = {"probe texts": PROBES,
             "test corpus": [n for n, _ in NOTES] + [q for _, q in NOTES]
             + [n for n, _ in IDENTIFIED] + FILLER}
    model = SentenceTransformer(source, device=device, local_files_only=True)
    full = {k: normalise(model.encode_document(v, convert_to_numpy=True, batch_size=1))
            for k, v in texts.items()}
    model.half()
    for name, batch in texts.items():
        half = normalise(model.encode_document(batch, convert_to_numpy=True, batch_size=1))
        cosine = (half * full[name]).sum(axis=1)
        print(f"{device} fp16 vs fp32, {name} ({len(batch)} texts): lowest cosine "
              f"{cosine.min():.6f}, mean {cosine.mean():.6f}")


if __name__ == "__main__":
    main()
