#!/usr/bin/env python3
"""Batch-1 latency of bnc against onnxruntime and OpenVINO, side by side on the same ONNX files.

For each model and thread count, every round runs one block of each engine in turn:

  1. onnxruntime (in process; CPU provider, ORT_ENABLE_ALL, intra_op_num_threads = T),
  2. OpenVINO (in process; CPU plugin, inference precision f32, INFERENCE_NUM_THREADS = T,
     performance hint LATENCY, batch 1),
  3. bnc (`bnc run --threads T --repeat N`, a separate process running the compiled JIT code),
  4. with --bnc-before PATH, the same with a second bnc binary ("before"; the first is then
     reported as "after").

Load changes on a shared machine thus hit all engines alike. Reports the median over rounds
of each block's median and the ratios bnc / ORT, bnc / OpenVINO (and after / before), and the
same for the fastest run of each engine (on a machine whose speed changes from second to
second, the minimum is the steadier number).

Needs the ONNX files written by compare.py (bench/out/MODEL.onnx): run `bash bench/latency.sh`,
which exports the missing ones first.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
MODELS = ["resnet18", "resnet50", "mobilenet_v2", "efficientnet_b0", "densenet121"]


def timed_block(fn, runs):
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times), min(times)


def ort_runner(path, threads):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return lambda feed: sess.run(None, feed)[0]


def ov_runner(ov, core, path, threads):
    props = ov.properties
    config = {
        props.hint.performance_mode: props.hint.PerformanceMode.LATENCY,
        props.hint.inference_precision: ov.Type.f32,
        props.inference_num_threads: threads,
    }
    compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
    # What the plugin actually uses (a hint it ignored would show here).
    got = {
        "precision": compiled.get_property(props.hint.inference_precision),
        "threads": compiled.get_property(props.inference_num_threads),
        "mode": str(compiled.get_property(props.hint.performance_mode)),
        "streams": compiled.get_property(props.num_streams),
    }
    if got["precision"] != ov.Type.f32 or got["threads"] != threads:
        raise RuntimeError(f"OpenVINO did not take the configuration: {got}")
    req = compiled.create_infer_request()
    out = compiled.output(0)
    return (lambda feed: req.infer(feed, share_inputs=True)[out]), got


def bnc_block(bnc, path, x_npy, threads, runs):
    p = subprocess.run(
        [str(bnc), "run", str(path), "-i", str(x_npy), "--threads", str(threads), "--repeat", str(runs)],
        capture_output=True,
        text=True,
    )
    m = re.search(r"repeat: \d+ runs, median ([0-9.]+) ms, min ([0-9.]+) ms", p.stderr)
    if p.returncode != 0 or not m:
        raise RuntimeError(f"{bnc}: {p.stderr.strip()}")
    return float(m.group(1)), float(m.group(2))


def bnc_gemm(bnc):
    """The GEMM path a binary picks on this host (`--emit=plan`'s `native gemm ...` line)."""
    p = subprocess.run(
        [str(bnc), str(ROOT / "examples" / "tiny.nn"), "--emit=plan"], capture_output=True, text=True
    )
    m = re.search(r"native gemm \S+", p.stdout + p.stderr)
    return m.group(0) if m else "gemm path unknown"


def rel_err(got, ref):
    ref = ref.astype(np.float64)
    return float(np.abs(got.astype(np.float64) - ref).max() / max(np.abs(ref).max(), 1e-30))


def fmt(pair):
    return f"{pair[0]:.2f} / {pair[1]:.2f}"


def ratio(a, b):
    return f"{a[0] / b[0]:.2f} / {a[1] / b[1]:.2f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds per engine")
    ap.add_argument("--runs", type=int, default=20, help="timed runs per block")
    ap.add_argument("--bnc", type=Path, default=ROOT / "target" / "release" / "bnc")
    ap.add_argument(
        "--bnc-before",
        type=Path,
        help="a second bnc binary, timed in its own block each round and reported as 'before' "
        "(--bnc is then 'after'), e.g. a build of the commit before a refactor",
    )
    ap.add_argument(
        "--no-openvino",
        action="store_true",
        help="skip OpenVINO (its columns then say 'not run'); the project's tables need it",
    )
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    args = ap.parse_args()

    ov = core = None
    if not args.no_openvino:
        try:
            import openvino as ov
        except ImportError as e:
            sys.exit(f"cannot import openvino ({e}); run `bash bench/latency.sh` (setup.sh installs it) or pass --no-openvino")
        core = ov.Core()
    for b in [args.bnc] + ([args.bnc_before] if args.bnc_before else []):
        if not os.access(b, os.X_OK):
            sys.exit(f"not an executable: {b}")
    before = args.bnc_before is not None
    name_after = "after" if before else "bnc"

    rows = []
    for name in [m for m in args.models.split(",") if m]:
        path = args.out / f"{name}.onnx"
        x_npy = args.out / f"{name}.input.npy"
        x = np.load(x_npy)
        feed = {"input": x}
        for t in map(int, args.threads.split(",")):
            ort_run = ort_runner(path, t)
            ref = ort_run(feed)
            timed_block(lambda: ort_run(feed), 3)  # warm-up
            ov_run = None
            ov_note = ""
            if core is not None:
                ov_run, got = ov_runner(ov, core, path, t)
                ov_feed = {0: x}
                err = rel_err(ov_run(ov_feed), ref)
                if err > 1e-4:
                    raise RuntimeError(f"{name}: OpenVINO differs from onnxruntime by {err:.1e} (relative)")
                timed_block(lambda: ov_run(ov_feed), 3)  # warm-up
                ov_note = f"  [OpenVINO {got['precision'].get_type_name()}, {got['threads']} threads, {got['streams']} stream(s), rel. err vs ORT {err:.1e}]"
            o, v, b, bb = [], [], [], []
            for rnd in range(args.rounds):
                o.append(timed_block(lambda: ort_run(feed), args.runs))
                if ov_run is not None:
                    v.append(timed_block(lambda: ov_run(ov_feed), args.runs))
                # With a before binary, the two bnc blocks swap places every round, so that
                # neither always runs right after the peers (or in a cache state they left).
                if before and rnd % 2 == 1:
                    bb.append(bnc_block(args.bnc_before, path, x_npy, t, args.runs))
                b.append(bnc_block(args.bnc, path, x_npy, t, args.runs))
                if before and rnd % 2 == 0:
                    bb.append(bnc_block(args.bnc_before, path, x_npy, t, args.runs))

            def summary(blocks):
                if not blocks:
                    return None
                return statistics.median(x[0] for x in blocks), min(x[1] for x in blocks)

            r = dict(model=name, threads=t, ort=summary(o), ov=summary(v), bnc=summary(b), before=summary(bb))
            rows.append(r)
            line = f"{name:16} {t}T  median / min ms: {name_after} {fmt(r['bnc'])}"
            if before:
                line += f"  before {fmt(r['before'])}"
            line += f"  ORT {fmt(r['ort'])}"
            if r["ov"]:
                line += f"  OpenVINO {fmt(r['ov'])}"
            line += f"  | {name_after}/ORT {ratio(r['bnc'], r['ort'])}"
            if r["ov"]:
                line += f"  {name_after}/OV {ratio(r['bnc'], r['ov'])}"
            if before:
                line += f"  after/before {ratio(r['bnc'], r['before'])}"
            print(line + ov_note, flush=True)

    ov_version = ov.get_version().split("-")[0] if ov is not None else "not run"
    gemm = bnc_gemm(args.bnc)
    if before and bnc_gemm(args.bnc_before) != gemm:
        gemm += f" (before: {bnc_gemm(args.bnc_before)})"
    env = (
        f"{os.cpu_count()} CPUs, bnc {gemm}; onnxruntime {ort.__version__}, "
        f"OpenVINO {ov_version}; {args.rounds} rounds x {args.runs} runs per engine and thread count; "
        f"bnc = {args.bnc}" + (f", before = {args.bnc_before}" if before else "")
    )
    lab = "after" if before else "bnc"
    head = ["model", "threads", f"{lab} ms"]
    if before:
        head.append("before ms")
    head += ["ORT ms", "OpenVINO ms", f"{lab} / ORT", f"{lab} / OpenVINO"]
    if before:
        head.append("after / before")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["model"], str(r["threads"]), fmt(r["bnc"])]
        if before:
            cells.append(fmt(r["before"]))
        cells += [fmt(r["ort"]), fmt(r["ov"]) if r["ov"] else "not run", ratio(r["bnc"], r["ort"])]
        cells.append(ratio(r["bnc"], r["ov"]) if r["ov"] else "not run")
        if before:
            cells.append(ratio(r["bnc"], r["before"]))
        lines.append("| " + " | ".join(cells) + " |")
    md = (
        "Each cell: median of the rounds' block medians / fastest single run (ms, or their ratio).\n\n"
        + "\n".join(lines)
        + f"\n\n{env}\n"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latency.md").write_text(md)
    print()
    print(md, end="")


if __name__ == "__main__":
    main()
