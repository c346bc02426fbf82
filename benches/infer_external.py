"""The reference runtimes of `darts bench infer`: the exported ONNX model in onnxruntime (f32, and
int8 by onnxruntime's own static quantisation of that file), and the exported model.py in PyTorch
eager, each timed the way darts times its own paths (same images, batch 1 and 64, same thread
count). darts runs this file after its own rows; it prints one JSON object on stdout.

Usage: python infer_external.py SPEC.json   (written by darts: paths, runs, threads)
"""

import json
import os
import sys
import time


def percentile(sorted_ms, p):
    return sorted_ms[round((len(sorted_ms) - 1) * p)]


def timed(fn, x1, x64, runs):
    """Two warm-up calls of each batch, `runs` batch-1 and max(runs // 10, 3) batch-64 calls;
    wall and process CPU milliseconds (the clock darts reads too)."""
    for _ in range(2):
        fn(x1)
        fn(x64)

    def ms(x):
        t, c = time.perf_counter(), time.process_time()
        fn(x)
        return (time.perf_counter() - t) * 1e3, (time.process_time() - c) * 1e3

    def sorted_pair(calls):
        wall, cpu = zip(*calls)
        return sorted(wall), sorted(cpu)

    b1, b1_cpu = sorted_pair([ms(x1) for _ in range(runs)])
    b64, b64_cpu = sorted_pair([ms(x64) for _ in range(max(runs // 10, 3))])
    med64 = percentile(b64, 0.5)
    return {
        "batch1_median_ms": percentile(b1, 0.5),
        "batch1_p99_ms": percentile(b1, 0.99),
        "batch64_ms": med64,
        "batch64_images_per_s": x64.shape[0] / med64 * 1e3,
        "batch1_cpu_ms": percentile(b1_cpu, 0.5),
        "batch64_cpu_ms": percentile(b64_cpu, 0.5),
    }


def onnxruntime_rows(spec, x1, x64, calib):
    import onnxruntime as ort

    rows, notes = [], []

    def session(path):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = spec["threads"]
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])

    def row(name, path):
        sess = session(path)
        run = lambda x: sess.run(None, {"images": x})[0]
        rows.append({"name": name, **timed(run, x1, x64, spec["runs"])})

    row(f"onnxruntime {ort.__version__} f32", spec["onnx"])
    try:
        from onnxruntime.quantization import (
            CalibrationDataReader,
            QuantFormat,
            QuantType,
            quantize_static,
        )

        class Reader(CalibrationDataReader):
            def __init__(self):
                self.batches = iter(calib)

            def get_next(self):
                b = next(self.batches, None)
                return None if b is None else {"images": b}

        q_path = spec["onnx"].replace(".onnx", ".ort-int8.onnx")
        quantize_static(
            spec["onnx"],
            q_path,
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
        row("onnxruntime int8 (its quantize_static)", q_path)
    except Exception as e:  # a failed quantisation still leaves the f32 row
        notes.append(f"onnxruntime int8: {type(e).__name__}: {e}")
    return rows, notes


def torch_rows(spec, x1, x64):
    import torch

    torch.set_num_threads(spec["threads"])
    sys.path.insert(0, spec["torch_dir"])
    import model as exported  # the model.py darts wrote

    net = exported.load().eval()

    def run(x):
        with torch.inference_mode():
            return net(torch.from_numpy(x)).numpy()

    return [{"name": f"PyTorch {torch.__version__} eager", **timed(run, x1, x64, spec["runs"])}]


def main():
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    import numpy as np

    shape = spec["shape"]
    images = np.fromfile(spec["images"], dtype="<f4").reshape(shape)
    x64, x1 = images, np.ascontiguousarray(images[:1])
    calib = [
        b for b in np.fromfile(spec["calibration"], dtype="<f4").reshape(-1, 64, *shape[1:])
    ]
    rows, notes = [], []
    try:
        r, n = onnxruntime_rows(spec, x1, x64, calib)
        rows += r
        notes += n
    except ImportError as e:
        notes.append(f"onnxruntime rows skipped: {e}")
    if spec.get("torch_dir") and os.path.isdir(spec["torch_dir"]):
        try:
            rows += torch_rows(spec, x1, x64)
        except ImportError as e:
            notes.append(f"PyTorch row skipped: {e}")
        except Exception as e:  # model.py failing must not hide the onnxruntime rows
            notes.append(f"PyTorch row failed: {type(e).__name__}: {e}")
    print(json.dumps({"rows": rows, "notes": notes}))


if __name__ == "__main__":
    main()
