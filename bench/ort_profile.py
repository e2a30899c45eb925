"""Per-node kernel times of ONNX Runtime on one of bench/out's models, to set next to bnc's
per-kernel profile (`BNC_MODEL=MODEL cargo test -p bnc-codegen --release --test bench --
--ignored --nocapture profile`).

    bench/.venv/bin/python bench/ort_profile.py resnet18 [--threads 1] [--runs 30]

ORT's own profiler (`SessionOptions.enable_profiling`) records every node's kernel time;
this prints, per node in execution order, the mean of its 10 fastest of `--runs` runs, and
their sum. The profile's JSON file is deleted afterwards. Needs bench/out/MODEL.onnx and
MODEL.input.npy (written by bench/compare.py, e.g. through bench/latency.sh).
"""

import argparse
import json
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

OUT = Path(__file__).resolve().parent / "out"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.enable_profiling = True
    sess = ort.InferenceSession(str(OUT / f"{args.model}.onnx"), so, providers=["CPUExecutionProvider"])
    x = np.load(OUT / f"{args.model}.input.npy")
    feed = {sess.get_inputs()[0].name: x}
    for _ in range(args.runs):
        sess.run(None, feed)
    path = sess.end_profiling()
    events = json.load(open(path))
    os.remove(path)
    times: dict[str, list[float]] = {}
    for e in events:
        name = e.get("name", "")
        if e.get("cat") == "Node" and name.endswith("_kernel_time"):
            times.setdefault(name[: -len("_kernel_time")], []).append(e["dur"] / 1000.0)
    total = 0.0
    for node, ts in times.items():
        best = sorted(ts)[:10]
        ms = sum(best) / len(best)
        total += ms
        print(f"{ms:8.3f} ms  {node}")
    print(f"total {total:.2f} ms")


if __name__ == "__main__":
    main()
