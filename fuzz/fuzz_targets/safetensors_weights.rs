//! A safetensors weights file, as a model that names it reads it: header, dtypes, offsets,
//! shapes against the model's parameters.
#![no_main]

use libfuzzer_sys::fuzz_target;

const MODEL: &str = "model m {
  weights \"w.safetensors\"
  input x: f32[1, 2, 4, 4]
  c = conv2d(x, out = 3, kernel = 3, pad = 1)
  b = batchnorm(c)
  p = global_avgpool(b)
  f = flatten(p)
  d = dense(f, out = 2)
  output d
}";

fuzz_target!(|data: &[u8]| {
    bnc_fuzz::init();
    let dir = bnc_fuzz::scratch_dir();
    std::fs::write(dir.join("w.safetensors"), data).expect("scratch file");
    if let Ok(graph) = bnc::load_str(MODEL, "fuzz.nn", &dir) {
        bnc_fuzz::fold_compile_run(&graph);
    }
});
