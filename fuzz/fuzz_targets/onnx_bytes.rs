//! ONNX protobuf bytes: decoding, import (attributes, shapes, constant folding, external
//! data looked up in an empty folder), then every fold pipeline and the compiler.
#![no_main]

use bnc::frontend::onnx::{OnnxOptions, load_bytes};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    bnc_fuzz::init();
    let dir = bnc_fuzz::scratch_dir();
    if let Ok(graph) = load_bytes(data, "fuzz.onnx", "fuzz", &dir, &OnnxOptions::default()) {
        bnc_fuzz::fold_compile_run(&graph);
    }
});
