#!/usr/bin/env python3
"""Exports two nearest-upsample-then-conv models (resize-conv decoder shapes) to bench/out/
as `<name>.onnx` + `<name>.input.npy`, so that `bench/latency.sh --models ...` times bnc's
fused upsample+conv (one transposed conv on the small input, codegen/src/plan/upsample_conv.rs)
against onnxruntime and OpenVINO in the same run:

  up_conv_neck  1x256x20x20, nearest x2, 3x3 conv pad 1 -> 128 channels (a detection neck)
  up_conv_gan   1x128x32x32, nearest x2, 3x3 conv pad 1 -> 64 channels, BN, ReLU
                (a resize-conv generator or decoder step)

Usage: bench/.venv/bin/python bench/upsample_conv_layers.py, then
`bash bench/latency.sh --models up_conv_neck,up_conv_gan`.
"""

from pathlib import Path

import numpy as np
import torch

OUT = Path(__file__).resolve().parent / "out"


def up_conv(cin, cout, bn):
    layers = [torch.nn.Upsample(scale_factor=2, mode="nearest"), torch.nn.Conv2d(cin, cout, 3, padding=1)]
    if bn:
        layers += [torch.nn.BatchNorm2d(cout), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers)


CASES = {
    "up_conv_neck": ((1, 256, 20, 20), up_conv(256, 128, bn=False)),
    "up_conv_gan": ((1, 128, 32, 32), up_conv(128, 64, bn=True)),
}

if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    for name, (shape, model) in CASES.items():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
        model.eval()
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        torch.onnx.export(model, (torch.from_numpy(x),), str(OUT / f"{name}.onnx"), opset_version=17,
                          dynamo=False, input_names=["input"], output_names=["output"])
        np.save(OUT / f"{name}.input.npy", x)
        print(f"{name}: {shape}")
