#!/usr/bin/env python3
"""Batch-1 latency of bnc against onnxruntime, side by side on the same ONNX files.

For each model and thread count, rounds alternate an onnxruntime block and a bnc block
(`bnc run --repeat`, a separate process running the compiled JIT code), so load changes on a
shared machine hit both engines alike. Reports the median over rounds of each block's
median and the ratio bnc / ORT, and the same for the fastest run of each engine (on a
machine whose speed changes from second to second, the minimum is the steadier number).

Needs the ONNX files written by compare.py (bench/out/MODEL.onnx): run `bash bench/run.sh`
once (or let bench/latency.sh do it), then `bash bench/latency.sh`.
"""

import argparse
import re
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
MODELS = ["resnet18", "resnet50", "mobilenet_v2", "efficientnet_b0", "densenet121"]


def ort_block(sess, feed, runs):
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times), min(times)


def bnc_block(bnc, path, x_npy, threads, runs):
    p = subprocess.run(
        [str(bnc), "run", str(path), "-i", str(x_npy), "--threads", str(threads), "--repeat", str(runs)],
        capture_output=True,
        text=True,
    )
    m = re.search(r"repeat: \d+ runs, median ([0-9.]+) ms, min ([0-9.]+) ms", p.stderr)
    if p.returncode != 0 or not m:
        raise RuntimeError(p.stderr.strip())
    return float(m.group(1)), float(m.group(2))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds per engine")
    ap.add_argument("--runs", type=int, default=20, help="timed runs per block")
    ap.add_argument("--bnc", type=Path, default=ROOT / "target" / "release" / "bnc")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    args = ap.parse_args()
    rows = []
    for name in args.models.split(","):
        path = args.out / f"{name}.onnx"
        x_npy = args.out / f"{name}.input.npy"
        feed = {"input": np.load(x_npy)}
        for t in map(int, args.threads.split(",")):
            so = ort.SessionOptions()
            so.intra_op_num_threads = t
            so.inter_op_num_threads = 1
            sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
            ort_block(sess, feed, 3)  # warm-up
            o, b = [], []
            for _ in range(args.rounds):
                o.append(ort_block(sess, feed, args.runs))
                b.append(bnc_block(args.bnc, path, x_npy, t, args.runs))
            mo = statistics.median(x[0] for x in o)
            mb = statistics.median(x[0] for x in b)
            lo, lb = min(x[1] for x in o), min(x[1] for x in b)
            rows.append((name, t, mb, mo, lb, lo))
            print(
                f"{name:16} {t}T  median bnc {mb:7.2f} ORT {mo:7.2f} ratio {mb / mo:5.2f}"
                f"  | min bnc {lb:7.2f} ORT {lo:7.2f} ratio {lb / lo:5.2f}",
                flush=True,
            )
    print()
    print("| model | threads | bnc ms (median / min) | ORT ms (median / min) | bnc / ORT (median / min) |")
    print("|---|---|---|---|---|")
    for name, t, mb, mo, lb, lo in rows:
        print(f"| {name} | {t} | {mb:.2f} / {lb:.2f} | {mo:.2f} / {lo:.2f} | {mb / mo:.2f} / {lb / lo:.2f} |")


if __name__ == "__main__":
    main()
