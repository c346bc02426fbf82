"""Runs exported models on a batch darts wrote and compares their logits with darts's.

    check.py IMAGES LOGITS N,C,H,W K [--onnx FILE]... [--torch DIR]

IMAGES and LOGITS are raw little-endian float32 ([N, C, H, W] normalised images, [N, K]
logits). Every ONNX file must pass onnx.checker.check_model(full_check=True) and run in
onnxruntime; a torch folder is loaded through its model.py. Prints one JSON object: per model
the largest absolute difference and that difference relative to the largest |logit|; "torch"
is null when torch (or safetensors) is not installed.
"""

import argparse
import importlib.util
import json
import sys

import numpy as np
import onnx
import onnxruntime as ort


def compare(got, want):
    diff = float(np.max(np.abs(got - want)))
    return {"max_abs": diff, "rel": diff / max(float(np.max(np.abs(want))), 1e-12)}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("images")
    p.add_argument("logits")
    p.add_argument("shape")
    p.add_argument("classes", type=int)
    p.add_argument("--onnx", action="append", default=[])
    p.add_argument("--torch")
    a = p.parse_args()
    shape = [int(d) for d in a.shape.split(",")]
    images = np.fromfile(a.images, dtype="<f4").reshape(shape)
    want = np.fromfile(a.logits, dtype="<f4").reshape(shape[0], a.classes)
    out = {"onnx": {}, "torch": None}
    for path in a.onnx:
        model = onnx.load(path)
        onnx.checker.check_model(model, full_check=True)
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        (inp,) = sess.get_inputs()
        assert inp.name == "images" and isinstance(inp.shape[0], str), inp
        (got,) = sess.run(["logits"], {"images": images})
        out["onnx"][path] = compare(got, want)
    if a.torch and all(importlib.util.find_spec(m) for m in ("torch", "safetensors")):
        import torch

        sys.path.insert(0, a.torch)
        import model

        net = model.load()
        with torch.no_grad():
            got = net(torch.from_numpy(images)).numpy()
        out["torch"] = compare(got, want)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
