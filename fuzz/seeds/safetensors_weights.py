"""Writes fuzz/seeds/safetensors_weights/w.safetensors: the weights of the model in
fuzz_targets/safetensors_weights.rs (safetensors: u64 header length, JSON header, data).
Run from the repository root: python3 fuzz/seeds/safetensors_weights.py"""
import json
import struct

SHAPES = {
    "c.weight": [3, 2, 3, 3], "c.bias": [3],
    "b.weight": [3], "b.bias": [3], "b.running_mean": [3], "b.running_var": [3],
    "d.weight": [2, 3], "d.bias": [2],
}
header, data = {}, b""
for i, (name, shape) in enumerate(sorted(SHAPES.items())):
    n = 1
    for d in shape:
        n *= d
    values = [((j * 37 + i * 11) % 17) / 17.0 - 0.4 for j in range(n)]
    if name.endswith("running_var"):
        values = [1.0, 0.5, 1e-3]
    raw = struct.pack("<%df" % n, *values)
    header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
    data += raw
text = json.dumps(header, separators=(",", ":")).encode()
text += b" " * ((8 - len(text) % 8) % 8)
with open("fuzz/seeds/safetensors_weights/w.safetensors", "wb") as f:
    f.write(struct.pack("<Q", len(text)) + text + data)
