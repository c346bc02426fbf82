"""Top-1 of an exported ONNX model in onnxruntime on the MNIST-format test set of a folder.

    accuracy.py MODEL DATA_DIR

DATA_DIR holds the IDX files (train-images-idx3-ubyte.gz, t10k-*); images are normalised as
darts does for MNIST and Fashion-MNIST (pixels / 255, minus the training set's mean, over its
population standard deviation). Prints one JSON object: the test top-1 and the operator counts
of the graph onnxruntime optimised (which kernels it runs).
"""

import collections
import gzip
import json
import os
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort


def idx(path, offset):
    with gzip.open(path) as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=offset)


def main():
    model, data = sys.argv[1:]
    train = idx(os.path.join(data, "train-images-idx3-ubyte.gz"), 16).astype(np.float64) / 255
    mean, std = train.mean(), train.std()
    x = idx(os.path.join(data, "t10k-images-idx3-ubyte.gz"), 16).reshape(-1, 1, 28, 28)
    x = ((x.astype(np.float32) / 255 - np.float32(mean)) / np.float32(std)).astype(np.float32)
    y = idx(os.path.join(data, "t10k-labels-idx1-ubyte.gz"), 8)
    so = ort.SessionOptions()
    so.optimized_model_filepath = os.path.join(tempfile.mkdtemp(), "opt.onnx")
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    hits = 0
    for i in range(0, len(y), 500):
        (logits,) = sess.run(["logits"], {"images": x[i : i + 500]})
        hits += int(np.sum(np.argmax(logits, 1) == y[i : i + 500]))
    ops = collections.Counter(n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node)
    print(json.dumps({"top1": hits / len(y), "optimised_ops": dict(ops)}))


if __name__ == "__main__":
    main()
