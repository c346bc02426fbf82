"""Runs an int8 QDQ model exported by darts in onnxruntime and compares it with darts's int8 logits.

    check_qdq.py MODEL IMAGES LOGITS N,C,H,W K OPTIMISED

IMAGES and LOGITS are raw little-endian float32 ([N, C, H, W] normalised images, [N, K]
logits of darts's int8 program). The model must pass onnx.checker.check_model(full_check=True);
onnxruntime (CPU, all graph optimisations) writes the graph it runs to OPTIMISED, whose operator
counts tell whether it runs int8 kernels. Prints one JSON object: top-1 agreement, the largest
absolute logit difference, and the operator counts of the exported and of the optimised graph.
"""

import collections
import json
import sys

import numpy as np
import onnx
import onnxruntime as ort


def ops(model):
    return dict(collections.Counter(n.op_type for n in model.graph.node))


def main():
    path, images, logits, shape, classes, optimised = sys.argv[1:]
    shape = [int(d) for d in shape.split(",")]
    images = np.fromfile(images, dtype="<f4").reshape(shape)
    want = np.fromfile(logits, dtype="<f4").reshape(shape[0], int(classes))
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.optimized_model_filepath = optimised
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    (got,) = sess.run(["logits"], {"images": images})
    agree = float(np.mean(np.argmax(got, 1) == np.argmax(want, 1)))
    print(
        json.dumps(
            {
                "agreement": agree,
                "max_abs": float(np.max(np.abs(got - want))),
                "exported_ops": ops(model),
                "optimised_ops": ops(onnx.load(optimised)),
            }
        )
    )


if __name__ == "__main__":
    main()
