"""Load an lbedge-written checkpoint (e.g. from `lbedge train merge`) with the OFFICIAL LanguageBind code and
compare its embeddings with lbedge's. Runs in the throwaway venv that has the official code's dependencies
(torch 2.0.1, transformers 4.30.2, peft 0.4, decord...); nothing of the official code is committed.

    /path/to/venv/bin/python tools/check_with_official.py --official /path/to/LanguageBind \
        --checkpoint ckpt/thermal_merged --pixels pixels.npy --out official_embeds.npy

`pixels.npy` is a preprocessed batch (lbedge: `np.save("pixels.npy", enc.preprocess(files))`); compare the
output with `enc.embed(pixels)` (cosine >= 0.99999 expected).
"""

from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path

import numpy as np
import torch  # before the official code: importing decord first crashes that environment


def stub_pytorchvideo() -> None:
    """processing_video imports pytorchvideo at module level; none of it is needed to load models."""
    for name in ("pytorchvideo", "pytorchvideo.data", "pytorchvideo.data.encoded_video", "pytorchvideo.transforms"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["pytorchvideo.data.encoded_video"].EncodedVideo = object
    for attr in ("ApplyTransformToKey", "ShortSideScale", "UniformTemporalSubsample"):
        setattr(sys.modules["pytorchvideo.transforms"], attr, object)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--official", required=True)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--pixels", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    sys.path.insert(0, a.official)
    stub_pytorchvideo()
    import languagebind

    arch = json.loads((Path(a.checkpoint) / "config.json").read_text())["architectures"][0]
    modality = arch.replace("LanguageBind", "").lower()
    model, info = languagebind.model_dict[modality].from_pretrained(a.checkpoint, output_loading_info=True)
    print(json.dumps({k: info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")}))
    with torch.no_grad():
        e = model.get_image_features(pixel_values=torch.from_numpy(np.load(a.pixels)))
    np.save(a.out, (e / e.norm(dim=-1, keepdim=True)).numpy())


if __name__ == "__main__":
    main()
