#!/usr/bin/env python3
"""Side-by-side check of bnc's ONNX import against PyTorch and onnxruntime.

For each torchvision model (random weights, eval mode, batch-norm statistics randomised so
folding matters) this script:
  1. exports it to ONNX (opset 17, batch 1, 3x224x224; batch-norms kept in the file),
  2. runs it in PyTorch (the reference), onnxruntime, and bnc (`bnc run --interpret` and the
     compiled `bnc run`, through the release binary and .npy files),
  3. reports the max abs / rel error of each against PyTorch, batch-1 latency (median of
     --runs runs after a warm-up) at 1 and 2 threads, and how many batch-norms each engine
     leaves (bnc: `bnc fold --report=json`; onnxruntime: its optimized graph; PyTorch: the fx
     fuser `torch.fx.experimental.optimization.fuse`).

Run it through `bash bench/run.sh` (which builds bnc and the venv). Results go to
bench/out/results.md and results.json.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torchvision

MODELS = [
    "resnet18",
    "resnet50",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "efficientnet_b0",
    "densenet121",
    "regnet_x_400mf",
    "shufflenet_v2_x1_0",
    "googlenet",
]

ROOT = Path(__file__).resolve().parent.parent


def randomize_batchnorms(model, seed):
    """Gives every batch-norm random running statistics (mean in [-0.2, 0.2], variance in
    [0.5, 1.5]) and affine parameters (gamma in [0.5, 1.5], beta in [-0.2, 0.2]), so that a
    folding error shows in the outputs. Shared with coverage.py."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                c = m.num_features

                def u(lo, hi):
                    return lo + (hi - lo) * torch.rand(c, generator=gen)

                if m.track_running_stats:
                    m.running_mean.copy_(u(-0.2, 0.2))
                    m.running_var.copy_(u(0.5, 1.5))
                if m.affine:
                    m.weight.copy_(u(0.5, 1.5))
                    m.bias.copy_(u(-0.2, 0.2))


def build_model(name):
    kwargs = {"weights": None}
    if name == "googlenet":
        kwargs.update(aux_logits=False, init_weights=True)
    model = getattr(torchvision.models, name)(**kwargs)
    randomize_batchnorms(model, 0)
    return model.eval()


def export(model, x, path):
    # TorchScript exporter with TrainingMode.PRESERVE: the model is in eval mode, so the
    # batch-norms are exported as inference BatchNormalization nodes instead of being folded
    # into the convolutions by the exporter (EVAL mode would fold them before any engine
    # sees them, and there would be nothing to compare).
    torch.onnx.export(
        model,
        (x,),
        str(path),
        opset_version=17,
        dynamo=False,
        input_names=["input"],
        output_names=["logits"],
        training=torch.onnx.TrainingMode.PRESERVE,
        do_constant_folding=True,
    )


def errors(got, ref):
    ref = ref.astype(np.float64)
    diff = np.abs(got.astype(np.float64) - ref)
    return float(diff.max()), float(diff.max() / max(np.abs(ref).max(), 1e-30))


def median_ms(fn, runs, warmup=3):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def count_bn(onnx_model):
    return sum(1 for n in onnx_model.graph.node if n.op_type == "BatchNormalization")


def ort_session(path, threads, optimized=None, level=ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
    so = ort.SessionOptions()
    so.graph_optimization_level = level
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    if optimized:
        so.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def bnc(args, *cmd, check=True):
    p = subprocess.run([str(args.bnc), *map(str, cmd)], capture_output=True, text=True)
    if check and p.returncode != 0:
        raise RuntimeError(p.stderr.strip() or p.stdout.strip())
    return p


def bnc_latency(args, path, x_npy, threads):
    p = bnc(args, "run", path, "-i", x_npy, "--threads", threads, "--repeat", args.runs)
    m = re.search(r"repeat: \d+ runs, median ([0-9.]+) ms", p.stderr)
    if not m:
        raise RuntimeError("no repeat line in: " + p.stderr)
    return float(m.group(1))


def one_model(name, args, out):
    r = {"model": name}
    torch.manual_seed(0)
    model = build_model(name)
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32))
    path = out / f"{name}.onnx"
    export(model, x, path)
    r["bn_in_onnx"] = count_bn(onnx.load(str(path), load_external_data=False))
    x_npy = out / f"{name}.input.npy"
    np.save(x_npy, x.numpy())

    with torch.no_grad():
        ref = model(x).numpy()

    # onnxruntime
    # The BN count comes from the graph after the extended (fusion) optimisations: at
    # ORT_ENABLE_ALL the NCHWc layout pass turns every remaining BatchNormalization into a
    # depthwise 1x1 NCHWc Conv, which would hide the BNs that were not folded.
    optimized = out / f"{name}.ort-optimized.onnx"
    ort_session(path, 1, optimized, ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)
    r["bn_left_ort"] = count_bn(onnx.load(str(optimized)))
    sess = ort_session(path, 1)
    feed = {"input": x.numpy()}
    r["err_ort"] = errors(sess.run(None, feed)[0], ref)
    for t in (1, 2):
        s = ort_session(path, t)
        r[f"ms_ort_{t}"] = median_ms(lambda: s.run(None, feed), args.runs)

    # PyTorch eager, and the fx fuser's BN count
    for t in (1, 2):
        torch.set_num_threads(t)
        with torch.no_grad():
            r[f"ms_torch_{t}"] = median_ms(lambda: model(x), args.runs)
    try:
        from torch.fx.experimental.optimization import fuse

        fused = fuse(model)
        r["bn_left_torch_fx"] = sum(
            1 for m in fused.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
        )
    except Exception as e:  # symbolic tracing fails on some models
        r["bn_left_torch_fx"] = f"fx failed: {type(e).__name__}"

    # bnc
    try:
        report = json.loads(bnc(args, "fold", path, "--report=json").stdout)
        bns = report["batchnorms"]
        r["bn_left_bnc"] = sum(1 for b in bns if not b["fate"].startswith("folded"))
        r["bn_bnc_total"] = len(bns)
        y_i = out / f"{name}.bnc-interp.npy"
        bnc(args, "run", path, "--interpret", "-i", x_npy, "-o", y_i)
        r["err_bnc_interp"] = errors(np.load(y_i), ref)
        y_c = out / f"{name}.bnc.npy"
        bnc(args, "run", path, "-i", x_npy, "-o", y_c)
        r["err_bnc"] = errors(np.load(y_c), ref)
        for t in (1, 2):
            r[f"ms_bnc_{t}"] = bnc_latency(args, path, x_npy, t)
    except Exception as e:
        # The diagnostic is drawn with box characters; keep its words, up to the help.
        text = re.sub(r"[×│]", " ", str(e)).split("help:")[0]
        r["bnc_error"] = " ".join(text.split()) or repr(e)
    return r


def fmt_err(e):
    return "—" if e is None else f"{e[0]:.1e} / {e[1]:.1e}"


def fmt_ms(v):
    return "—" if v is None else f"{v:.1f}"


def table(results):
    lines = [
        "| model | BN in ONNX | BN left bnc / ORT / torch fx | err ORT (abs / rel) | err bnc interp | err bnc compiled | bnc ms 1T / 2T | ORT ms 1T / 2T | torch ms 1T / 2T |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    notes = []
    for r in results:
        if "error" in r:
            lines.append(f"| {r['model']} | failed: {r['error']} |||||||| ")
            continue
        g = r.get
        bn_bnc = g("bn_left_bnc", "✗")
        lines.append(
            f"| {r['model']} | {g('bn_in_onnx')} | {bn_bnc} / {g('bn_left_ort')} / {g('bn_left_torch_fx')} "
            f"| {fmt_err(g('err_ort'))} | {fmt_err(g('err_bnc_interp'))} | {fmt_err(g('err_bnc'))} "
            f"| {fmt_ms(g('ms_bnc_1'))} / {fmt_ms(g('ms_bnc_2'))} | {fmt_ms(g('ms_ort_1'))} / {fmt_ms(g('ms_ort_2'))} "
            f"| {fmt_ms(g('ms_torch_1'))} / {fmt_ms(g('ms_torch_2'))} |"
        )
        if "bnc_error" in r:
            notes.append(f"- {r['model']}: bnc: {r['bnc_error']}")
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated torchvision names")
    ap.add_argument("--runs", type=int, default=20, help="timed runs per latency (>= 20)")
    ap.add_argument("--bnc", type=Path, default=ROOT / "target" / "release" / "bnc")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    args = ap.parse_args()
    args.runs = max(args.runs, 20)
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for name in [m for m in args.models.split(",") if m]:
        print(f"== {name}", file=sys.stderr, flush=True)
        try:
            r = one_model(name, args, args.out)
        except Exception as e:
            traceback.print_exc()
            r = {"model": name, "error": f"{type(e).__name__}: {e}"}
        print(json.dumps(r), file=sys.stderr, flush=True)
        results.append(r)
        (args.out / "results.json").write_text(json.dumps(results, indent=1))
    env = (
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, onnxruntime {ort.__version__}, "
        f"onnx {onnx.__version__}, {os.cpu_count()} CPUs, {args.runs} timed runs"
    )
    md = table(results) + f"\n{env}\n"
    (args.out / "results.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
