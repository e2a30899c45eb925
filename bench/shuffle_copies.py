#!/usr/bin/env python3
"""Writes bench/out/shufflenet_shuffles.nn: the 16 channel shuffles of shufflenet_v2_x1_0 on
its shapes (4 at 116x28x28, 8 at 232x14x14, 4 at 464x7x7), chained per stage, and nothing
else. Timing it gives what those shuffle copy kernels cost (BENCHMARKS.md, "Latency of the
new model families"):

    python3 bench/shuffle_copies.py
    cargo build --release
    target/release/bnc run bench/out/shufflenet_shuffles.nn --threads 1 --repeat 200
"""
from pathlib import Path

STAGES = [("a", 116, 28, 4), ("b", 232, 14, 8), ("c", 464, 7, 4)]

lines = ["model shufflenet_shuffles {", "  weights random(seed = 1)"]
lines += [f"  input {x}: f32[1, {c}, {hw}, {hw}]" for x, c, hw, _ in STAGES]
outputs = []
for x, _, _, count in STAGES:
    prev = x
    for i in range(count):
        lines.append(f"  {x}{i} = channel_shuffle({prev}, groups = 2)")
        prev = f"{x}{i}"
    outputs.append(prev)
lines += ["  output " + ", ".join(outputs), "}"]

out = Path(__file__).resolve().parent / "out" / "shufflenet_shuffles.nn"
out.parent.mkdir(exist_ok=True)
out.write_text("\n".join(lines) + "\n")
print(out)
