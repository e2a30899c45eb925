#!/usr/bin/env python3
"""Model coverage (issue 14): every torchvision classification and segmentation model through
bnc and onnxruntime.

For every model of `torchvision.models.list_models(module=torchvision.models)` and of
`torchvision.models.segmentation`, plus `unet_small` (a U-Net with ConvTranspose + BN up-steps,
defined here: torchvision has none), or the `--models` subset, this script:
  1. counts its parameters (built on the meta device, nothing allocated) and skips it above
     `--max-params` (150 M);
  2. builds it with random weights (`weights=None`, and `weights_backbone=None` for
     segmentation; nothing is downloaded), randomises every batch-norm's running mean/variance,
     gamma and beta (seeded) so that a folding error shows, eval mode, and exports it with the
     TorchScript exporter (opset 17, batch 1, 3x224x224; inception_v3 3x299x299;
     `training=PRESERVE`, `do_constant_folding=False`: the batch-norms reach the file as
     `BatchNormalization` nodes). Segmentation models are wrapped to return `out` only. The
     export, the input and the facts about it are cached in bench/out/coverage/;
  3. runs onnxruntime (CPU provider, ORT_ENABLE_ALL) on the input, the reference; counts the
     batch-norms onnxruntime leaves in its optimised graph (saved at ORT_ENABLE_EXTENDED, see
     `ort_bn_left`);
  4. runs `bnc run MODEL.onnx -i input.npy -o out.npy --report=json`: imports yes/no (the first
     line of bnc's diagnostic when no), the max relative error against onnxruntime
     (max |bnc - ort| / max |ort|), and the batch-norms bnc leaves (fates `kept`, `partial`, and
     `split` with a part not folded; `dead` and fully folded ones are gone).

Every model runs in its own process (`--one`), under `--timeout` seconds. Results:
bench/out/coverage.md (table + summary) and bench/out/coverage.json. Run it through
`bash bench/coverage.sh` (builds bnc, reuses bench/.venv).
"""

import argparse
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
CACHE = OUT / "coverage"

# Families, longest prefix first where one is the prefix of another.
FAMILIES = [
    "efficientnet_v2", "efficientnet", "mobilenet_v2", "mobilenet_v3", "shufflenet_v2",
    "swin_v2", "swin", "wide_resnet", "resnext", "resnet", "regnet_x", "regnet_y", "convnext",
    "densenet", "mnasnet", "squeezenet", "vgg", "vit", "maxvit", "alexnet", "googlenet",
    "inception", "deeplabv3", "fcn", "lraspp", "unet",
]
# Models torchvision lacks, defined below: a U-Net (decoder with ConvTranspose + BN).
EXTRA = ("unet_small",)
TRANSFORMERS = ("vit", "swin", "swin_v2", "maxvit")
INPUT_SIZE = {"inception_v3": 299}


def family(name):
    for f in FAMILIES:
        if name.startswith(f):
            return f
    return name


def unet_small(base=32, levels=4):
    """A U-Net (Ronneberger et al. 2015) with BN after every conv and after every 2x2 stride-2
    ConvTranspose up-step, `levels` poolings, `base` channels at the top; 21 classes."""
    import torch
    from torch import nn

    def block(cin, cout):
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        )

    class UNet(nn.Module):
        def __init__(self):
            super().__init__()
            widths = [base * 2**i for i in range(levels + 1)]
            self.down = nn.ModuleList([block(3, widths[0])] + [block(a, b) for a, b in zip(widths, widths[1:])])
            self.up = nn.ModuleList(
                nn.Sequential(nn.ConvTranspose2d(b, a, 2, stride=2), nn.BatchNorm2d(a), nn.ReLU(inplace=True))
                for a, b in zip(widths, widths[1:])
            )
            self.merge = nn.ModuleList(block(2 * a, a) for a in widths[:-1])
            self.head = nn.Conv2d(widths[0], 21, 1)

        def forward(self, x):
            skips = []
            for i, d in enumerate(self.down):
                x = d(x if i == 0 else torch.nn.functional.max_pool2d(x, 2))
                skips.append(x)
            x = skips.pop()
            for up, merge in zip(reversed(self.up), reversed(self.merge)):
                x = merge(torch.cat([skips.pop(), up(x)], 1))
            return self.head(x)

    return UNet()


def constructor(name, segmentation):
    import torchvision

    if name == "unet_small":
        return unet_small, {}
    if segmentation:
        return getattr(torchvision.models.segmentation, name), {"weights": None, "weights_backbone": None}
    kwargs = {"weights": None}
    if name in ("googlenet", "inception_v3"):
        # Random init without the (eval-unused) auxiliary heads, and without the warning.
        kwargs.update(aux_logits=False, init_weights=True)
    return getattr(torchvision.models, name), kwargs


def list_all():
    import torchvision

    cls = torchvision.models.list_models(module=torchvision.models)
    seg = torchvision.models.list_models(module=torchvision.models.segmentation)
    return [(m, False) for m in cls] + [(m, True) for m in seg] + [(m, True) for m in EXTRA]


def count_params(name, segmentation):
    import torch

    ctor, kwargs = constructor(name, segmentation)
    try:
        with torch.device("meta"):  # no memory, no init
            model = ctor(**kwargs)
    except Exception:  # regnet computes its widths with tensors: build it for real
        model = ctor(**kwargs)
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------- one model (child process)


def build(name, segmentation, seed=0):
    import torch

    torch.manual_seed(seed)
    ctor, kwargs = constructor(name, segmentation)
    model = ctor(**kwargs)
    from compare import randomize_batchnorms  # bench/compare.py

    randomize_batchnorms(model, seed)
    model.eval()
    if segmentation and name not in EXTRA:

        class Out(torch.nn.Module):
            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def forward(self, x):
                return self.inner(x)["out"]

        model = Out(model).eval()
    return model


def count_bn(path):
    import onnx

    g = onnx.load(str(path), load_external_data=False).graph
    return sum(1 for n in g.node if n.op_type == "BatchNormalization")


def export(name, segmentation, files, r, stage):
    """Exports once; later runs read the cached file and its facts."""
    import numpy as np
    import torch

    if files["onnx"].exists() and files["input"].exists() and files["meta"].exists():
        r.update(json.loads(files["meta"].read_text()))
        r["export_cached"] = True
        return
    stage("build")
    t = time.perf_counter()
    model = build(name, segmentation)
    size = INPUT_SIZE.get(name, 224)
    x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    stage("export")
    tmp = files["onnx"].with_suffix(".tmp.onnx")
    # Not under torch.no_grad(): there nn.MultiheadAttention takes its fused fast path
    # (aten::_native_multi_head_attention), which the exporter cannot export.
    torch.onnx.export(
        model,
        (torch.from_numpy(x),),
        str(tmp),
        opset_version=17,
        dynamo=False,
        input_names=["input"],
        output_names=["output"],
        training=torch.onnx.TrainingMode.PRESERVE,
        do_constant_folding=False,
    )
    np.save(files["input"], x)
    tmp.rename(files["onnx"])
    meta = {
        "input_shape": [1, 3, size, size],
        "bn_in_onnx": count_bn(files["onnx"]),
        "bn_in_torch": sum(1 for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)),
        "onnx_mb": round(files["onnx"].stat().st_size / 1e6, 1),
        "s_export": round(time.perf_counter() - t, 1),
    }
    files["meta"].write_text(json.dumps(meta))
    r.update(meta)
    r["export_cached"] = False


def ort_session(path, level, optimized=None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = level
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    if optimized:
        so.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def ort_bn_left(files):
    """BatchNormalization nodes left in onnxruntime's optimised graph. The graph is saved at
    ORT_ENABLE_EXTENDED (every fusion, including Conv+BatchNormalization): at ORT_ENABLE_ALL
    the NCHWc layout pass rewrites each BN it left into a depthwise NCHWc conv, which would hide
    it from the count (as in bench/compare.py)."""
    import onnxruntime as ort

    opt = files["dir"] / f"{files['name']}.ort-extended.onnx"
    ort_session(files["onnx"], ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, opt)
    n = count_bn(opt)
    opt.unlink()
    return n


def bn_outcome(fate):
    """Mirror of passes/src/report.rs `Fate::outcome`: folded, partly, kept or dead."""
    f = fate["fate"]
    if f in ("folded_backward", "folded_forward"):
        return "folded"
    if f == "partial":
        return "partly"
    if f in ("kept", "dead"):
        return f
    if f == "split":
        parts = [bn_outcome(p) for p in fate["parts"]]
        if all(p == "folded" for p in parts):
            return "folded"
        if all(p == "kept" for p in parts):
            return "kept"
        return "partly"
    raise ValueError(f"unknown fate {f!r}")


def diagnostic(text, onnx_path):
    """bnc's diagnostic as one line (box drawing and line wrapping undone, the help and the
    file name dropped), and the operators it lists as unsupported, if it does."""
    lines = []
    for line in text.splitlines():
        if line.strip().startswith("help:"):
            break
        line = re.sub(r"^\s*[×│]?\s?", "", line)
        lines.append(line.strip())
    words = " ".join(l for l in lines if l)
    words = words.replace(f"{onnx_path}: ", "").replace(f"{onnx_path.name}: ", "")
    m = re.search(r"unsupported operators in this file: ([A-Za-z0-9]+(?:, [A-Za-z0-9]+)*)", words)
    unsupported = m.group(1).split(", ") if m else None
    first = re.split(r" \d+ node\(s\) cannot be imported", words)[0].strip()
    return first or "no diagnostic", unsupported


def parse_report(stderr):
    """The JSON fold report `bnc run --report=json` writes to standard error, and the rest."""
    m = re.search(r'^\{\s*"batchnorms"', stderr, re.M)
    if not m:
        return None, stderr
    report, end = json.JSONDecoder().raw_decode(stderr[m.start():])
    return report, stderr[: m.start()] + stderr[m.start() + end:]


def one_model(name, segmentation, args, stage, r):
    """Fills in `r` as it goes, so that a failure keeps what was learnt before it."""
    import numpy as np
    import onnxruntime as ort

    files = {
        "dir": CACHE,
        "name": name,
        "onnx": CACHE / f"{name}.onnx",
        "input": CACHE / f"{name}.input.npy",
        "meta": CACHE / f"{name}.meta.json",
    }
    r["params"] = args.params
    export(name, segmentation, files, r, stage)

    stage("onnxruntime")
    t = time.perf_counter()
    x = np.load(files["input"])
    sess = ort_session(files["onnx"], ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    ref = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    del sess
    r["bn_left_ort"] = ort_bn_left(files)
    r["s_ort"] = round(time.perf_counter() - t, 1)

    stage("bnc")
    t = time.perf_counter()
    y = CACHE / f"{name}.bnc-out.npy"
    if y.exists():
        y.unlink()
    # Relative names (run in the cache directory): shorter diagnostic lines, fewer wraps.
    p = subprocess.run(
        [str(Path(args.bnc).resolve()), "run", files["onnx"].name, "-i", files["input"].name, "-o", y.name,
         "--report=json", "--color=never"],
        capture_output=True, text=True, cwd=CACHE,
    )
    r["s_bnc"] = round(time.perf_counter() - t, 1)
    report, rest = parse_report(p.stderr)
    if report is not None:
        outcomes = [bn_outcome(b) for b in report["batchnorms"]]
        r["bnc_fates"] = {k: outcomes.count(k) for k in ("folded", "partly", "kept", "dead")}
        r["bn_left_bnc"] = r["bnc_fates"]["kept"] + r["bnc_fates"]["partly"]
    if p.returncode != 0:
        # A failure after the fold report (compile or run) still means the model imported.
        r["imports"] = report is not None
        r["bnc_error"], unsupported = diagnostic(rest, files["onnx"])
        if unsupported:
            r["bnc_unsupported"] = unsupported
        r["bnc_stderr_tail"] = rest[-3000:]
        return r
    r["imports"] = True
    got = np.load(y).astype(np.float64)
    y.unlink()
    b = ref.astype(np.float64)
    if got.shape != b.shape:
        r["bnc_error"] = f"output shape {list(got.shape)} != onnxruntime {list(b.shape)}"
        return r
    r["max_abs_err"] = float(np.abs(got - b).max())
    r["max_rel_err"] = r["max_abs_err"] / max(float(np.abs(b).max()), 1e-30)
    return r


def child(args):
    name = args.one
    segmentation = args.segmentation
    CACHE.mkdir(parents=True, exist_ok=True)
    stage_file = CACHE / f"{name}.stage"

    def stage(s):
        stage_file.write_text(s)

    r = {"model": name, "task": "segmentation" if segmentation else "classification", "family": family(name)}
    try:
        one_model(name, segmentation, args, stage, r)
    except Exception as e:
        traceback.print_exc()
        r["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    Path(args.result).write_text(json.dumps(r))


# ---------------------------------------------------------------- driver


def run_child(name, segmentation, args):
    result = CACHE / f"{name}.result.json"
    stage_file = CACHE / f"{name}.stage"
    for f in (result, stage_file):
        if f.exists():
            f.unlink()
    cmd = [sys.executable, __file__, "--one", name, "--result", str(result), "--bnc", str(args.bnc),
           "--params", str(args.params)]
    if segmentation:
        cmd.append("--segmentation")
    t = time.perf_counter()
    log = open(CACHE / f"{name}.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        proc.wait(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the child and its bnc, nothing else
        proc.wait()
    log.close()
    wall = round(time.perf_counter() - t, 1)
    if result.exists():
        r = json.loads(result.read_text())
    else:
        stage = stage_file.read_text() if stage_file.exists() else "start"
        why = f"timeout after {args.timeout} s (in {stage})" if proc.returncode == -signal.SIGKILL else f"child exited {proc.returncode} (in {stage})"
        r = {"model": name, "task": "segmentation" if segmentation else "classification",
             "family": family(name), "params": args.params, "error": why}
    r["s_total"] = wall
    return r


def fmt_params(n):
    return "?" if n is None else f"{n / 1e6:.1f} M"


def short(text, n=220):
    text = text.replace("|", "\\|")
    return text if len(text) <= n else text[: n - 1] + "…"


def reasons(results):
    """Every distinct failure reason (the unsupported operator set, or the first diagnostic
    line) with the models it hits."""
    by = {}
    for r in results:
        if r.get("skipped"):
            key = "skipped: more than the parameter limit"
        elif "error" in r:
            key = f"failed before bnc finished: {r['error']}"
        elif not r.get("imports"):
            key = ("bnc cannot import: unsupported operators " + ", ".join(r["bnc_unsupported"])
                   if r.get("bnc_unsupported") else f"bnc cannot import: {r.get('bnc_error')}")
        elif r.get("bnc_error"):
            key = f"bnc imports but fails: {r['bnc_error']}"
        else:
            continue
        by.setdefault(key, []).append(r["model"])
    return by


def verdict(r, tol):
    if r.get("skipped"):
        return "skipped"
    if "error" in r:
        return "failed"
    if not r.get("imports"):
        return "not supported"
    if "max_rel_err" not in r:
        return "failed"
    ok = r["max_rel_err"] <= tol
    if r.get("bn_in_onnx") and r.get("bn_left_bnc") is not None:
        ok = ok and r["bn_left_bnc"] <= r["bn_left_ort"]
    return "ok" if ok else "CHECK"


def table(results, tol):
    lines = [
        "| model | family | params | BN in export | imports | max rel err vs ORT | BNs left bnc / ORT | bnc fates folded / partly / kept / dead | s export / ORT / bnc / total | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        g = r.get
        name = r["model"] + (f" ({r['input_shape'][2]}²)" if g("input_shape") and r["input_shape"][2] != 224 else "")
        if g("skipped"):
            lines.append(f"| {name} | {r['family']} | {fmt_params(g('params'))} | — | skipped: {r['skipped']} | — | — | — | — | skipped |")
            continue
        if "error" in r:
            lines.append(f"| {name} | {r['family']} | {fmt_params(g('params'))} | {g('bn_in_onnx', '—')} | — | — | — | — | — / — / — / {g('s_total')} | failed: {r['error']} |")
            continue
        if g("imports"):
            imp = "yes" + (f" (then: {r['bnc_error']})" if g("bnc_error") else "")
        else:
            why = short(r.get("bnc_error", "?"))
            if g("bnc_unsupported"):
                why += f" (unsupported here: {', '.join(r['bnc_unsupported'])})"
            if r["family"] in TRANSFORMERS:
                imp = f"no: not supported (transformer): {why}"
            else:
                imp = f"no: {why}"
        err = f"{r['max_rel_err']:.1e}" if "max_rel_err" in r else "—"
        left = f"{g('bn_left_bnc', '—')} / {g('bn_left_ort', '—')}"
        fates = g("bnc_fates")
        fates = "—" if not fates else f"{fates['folded']} / {fates['partly']} / {fates['kept']} / {fates['dead']}"
        times = f"{g('s_export', '—')}{'*' if g('export_cached') else ''} / {g('s_ort', '—')} / {g('s_bnc', '—')} / {g('s_total')}"
        lines.append(f"| {name} | {r['family']} | {fmt_params(g('params'))} | {g('bn_in_onnx')} | {imp} | {err} | {left} | {fates} | {times} | {verdict(r, tol)} |")
    return "\n".join(lines) + "\n"


def summary(results, tol):
    run = [r for r in results if not r.get("skipped")]
    skipped = [r for r in results if r.get("skipped")]
    failed = [r for r in run if "error" in r]
    imported = [r for r in run if r.get("imports")]
    with_bn = [r for r in run if r.get("bn_in_onnx")]
    bn_imp = [r for r in with_bn if r.get("imports") and r.get("bn_left_bnc") is not None]
    le_ort = [r for r in bn_imp if r["bn_left_bnc"] <= r["bn_left_ort"]]
    ran = [r for r in imported if "max_rel_err" in r]
    within = [r for r in ran if r["max_rel_err"] <= tol]
    bn_within = [r for r in with_bn if "max_rel_err" in r and r["max_rel_err"] <= tol]
    convnext = [r for r in run if r["family"] == "convnext"]
    convnext_ok = [r for r in convnext if "max_rel_err" in r and r["max_rel_err"] <= tol]
    s = {
        "models_listed": len(results),
        "skipped_over_max_params": len(skipped),
        "models_run": len(run),
        "failed_before_bnc": len(failed),
        "import": len(imported),
        "with_bn": len(with_bn),
        "with_bn_import": len(bn_imp),
        "with_bn_leave_le_ort": len(le_ort),
        "ran_in_bnc": len(ran),
        "within_tol": len(within),
        "with_bn_within_tol": len(bn_within),
        "convnext": len(convnext),
        "convnext_within_tol": len(convnext_ok),
    }
    line = (
        f"{s['models_listed']} models listed, {s['skipped_over_max_params']} skipped (> 150 M parameters), "
        f"{s['models_run']} run ({s['failed_before_bnc']} failed before reaching bnc); "
        f"{s['import']} import in bnc; {s['with_bn']} have BatchNorm in the export, {s['with_bn_import']} of them import "
        f"and {s['with_bn_leave_le_ort']} leave no more BNs than onnxruntime; "
        f"{s['within_tol']} of the {s['ran_in_bnc']} that ran are within {tol:g} max relative error "
        f"({s['with_bn_within_tol']} of the {s['with_bn']} with BatchNorm; ConvNeXt {s['convnext_within_tol']} / {s['convnext']})."
    )
    return s, line


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="", help="comma-separated torchvision names (default: all)")
    ap.add_argument("--max-params", type=float, default=150e6, help="skip models with more parameters")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per model (export + ORT + bnc)")
    ap.add_argument("--tol", type=float, default=1e-5, help="max relative error counted as within")
    ap.add_argument("--resume", action="store_true",
                    help="keep the rows of bench/out/coverage.json and run only the models it lacks; "
                         "with --models, rerun those models and keep every other row")
    ap.add_argument("--smallest-first", action="store_true", help="run the models in order of size")
    ap.add_argument("--bnc", type=Path, default=ROOT / "target" / "release" / "bnc")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--segmentation", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    ap.add_argument("--params", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        return child(args)

    CACHE.mkdir(parents=True, exist_ok=True)
    everything = list_all()
    if args.models:
        wanted = [m for m in args.models.split(",") if m]
        known = dict(everything)
        unknown = [m for m in wanted if m not in known]
        if unknown:
            sys.exit(f"not a torchvision classification or segmentation model: {', '.join(unknown)}")
        todo = [(m, known[m]) for m in wanted]
    else:
        todo = everything
    t0 = time.perf_counter()
    results = []
    if args.resume and (OUT / "coverage.json").exists():
        # Keep the rows of the last run (a stopped full run, say) and run only the others.
        results = json.loads((OUT / "coverage.json").read_text())["results"]
        if args.models:  # rerun the named models, keep the other rows
            rerun = {m for m, _ in todo}
            results = [r for r in results if r["model"] not in rerun]
        kept = {r["model"] for r in results}
        todo = [(m, s) for m, s in todo if m not in kept]
    counts_file = CACHE / "params.json"
    counts = json.loads(counts_file.read_text()) if counts_file.exists() else {}
    for name, seg in todo:
        if name not in counts:
            counts[name] = count_params(name, seg)
            counts_file.write_text(json.dumps(counts, indent=1))
    order = {name: i for i, (name, _) in enumerate(everything)}
    if args.smallest_first:  # more rows sooner; the table keeps the listing order
        todo = sorted(todo, key=lambda m: counts[m[0]])
    for i, (name, seg) in enumerate(todo):
        n = args.params = counts[name]
        if n > args.max_params:
            r = {"model": name, "task": "segmentation" if seg else "classification", "family": family(name),
                 "params": n, "skipped": f"{n / 1e6:.0f} M parameters > {args.max_params / 1e6:.0f} M"}
        else:
            print(f"[{i + 1}/{len(todo)}] {name} ({n / 1e6:.1f} M parameters)", file=sys.stderr, flush=True)
            r = run_child(name, seg, args)
        print("   " + json.dumps({k: v for k, v in r.items() if k != "bnc_stderr_tail"}), file=sys.stderr, flush=True)
        results.append(r)
        results.sort(key=lambda r: order[r["model"]])
        write(results, args, time.perf_counter() - t0, partial=i + 1 < len(todo))
    if not todo:
        write(results, args, time.perf_counter() - t0, partial=False)
    print((OUT / "coverage.md").read_text())


def write(results, args, seconds, partial):
    import onnx
    import onnxruntime as ort
    import torch
    import torchvision

    s, line = summary(results, args.tol)
    done = {r["model"] for r in results}
    missing = [m for m, _ in list_all() if m not in done]
    if missing:
        line += f" Not run (a subset, or the run was stopped): {len(missing)} models: {', '.join(missing)}."
    env = (
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, onnx {onnx.__version__}, "
        f"onnxruntime {ort.__version__}, Python {platform.python_version()}, {os.cpu_count()} CPUs; "
        f"{seconds / 60:.1f} min; per-model timeout {args.timeout} s"
    )
    md = (
        (f"**Partial: the run is still going or was stopped ({len(results)} models so far).**\n\n" if partial else "")
        + table(results, args.tol)
        + f"\n{line}\n\n"
        + "".join(f"- {short(k, 400)}: {', '.join(v)}\n" for k, v in reasons(results).items())
        + f"\n{env}\n\n"
        + "Times are wall seconds: export (`*`: cached from an earlier run, the time of that run), "
        "onnxruntime (session, run, BN count), `bnc run` (import, fold, compile, run), and the "
        "whole model process. BNs left by bnc = kept + partly folded; ORT's count is from its "
        "ORT_ENABLE_EXTENDED graph. Verdict `ok`: within tolerance and no more BNs left than ORT.\n"
    )
    (OUT / "coverage.md").write_text(md)
    (OUT / "coverage.json").write_text(json.dumps({"summary": s, "summary_line": line, "env": env,
                                                   "reasons": reasons(results),
                                                   "partial": partial, "results": results}, indent=1))


if __name__ == "__main__":
    main()
