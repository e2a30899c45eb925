#!/usr/bin/env python3
"""Exports three single-layer ConvTranspose2d models (decoder shapes) to bench/out/ as
`<name>.onnx` + `<name>.input.npy`, so that `bench/latency.sh --models ...` times bnc's
transposed-conv kernel against onnxruntime and OpenVINO in the same run:

  convt_unet    1x64x56x56 -> 32 channels, 2x2 stride 2 (a U-Net up-step)
  convt_fcn     1x21x28x28 -> 21 channels, 4x4 stride 2 pad 1 (FCN / DCGAN upsampling)
  convt_op1     1x128x28x28 -> 64 channels, 3x3 stride 2 pad 1 output_padding 1

Usage: bench/.venv/bin/python bench/conv_transpose_layers.py, then
`bash bench/latency.sh --models convt_unet,convt_fcn,convt_op1`.
"""

from pathlib import Path

import numpy as np
import torch

OUT = Path(__file__).resolve().parent / "out"
CASES = {
    "convt_unet": ((1, 64, 56, 56), dict(in_channels=64, out_channels=32, kernel_size=2, stride=2)),
    "convt_fcn": ((1, 21, 28, 28), dict(in_channels=21, out_channels=21, kernel_size=4, stride=2, padding=1)),
    "convt_op1": (
        (1, 128, 28, 28),
        dict(in_channels=128, out_channels=64, kernel_size=3, stride=2, padding=1, output_padding=1),
    ),
}

if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    for name, (shape, kwargs) in CASES.items():
        layer = torch.nn.ConvTranspose2d(**kwargs).eval()
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        torch.onnx.export(layer, (torch.from_numpy(x),), str(OUT / f"{name}.onnx"), opset_version=17,
                          dynamo=False, input_names=["input"], output_names=["output"])
        np.save(OUT / f"{name}.input.npy", x)
        print(f"{name}: {shape} {kwargs}")
