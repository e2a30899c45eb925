//! Structured: a valid small model read from the fuzzer's bytes, with extreme BN parameters,
//! folded in every mode and compiled; each must match the interpreter on the unfolded model
//! as `tests/fold_fuzz.rs` requires: within max(1e-5, 10 × the error of `--fold=none`
//! compiled), and finite wherever the reference is.
#![no_main]

use arbitrary::Unstructured;
use bnc::FoldMode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    bnc_fuzz::init();
    let mut u = Unstructured::new(data);
    let Ok(generated) = bnc_fuzz::model::generate(&mut u) else {
        return;
    };
    let dir = bnc_fuzz::scratch_dir();
    let mut graph = match bnc::load_str(&generated.text, "fuzz.nn", &dir) {
        Ok(g) => g,
        Err(e) => panic!(
            "a generated model does not load:\n{}\n{}",
            generated.text,
            e.render(false)
        ),
    };
    bnc_fuzz::model::extreme_parameters(&mut graph, &generated.batchnorms, &mut u);
    let inputs = bnc_fuzz::inputs(&graph, 1);
    let Some(reference) = bnc_fuzz::reference(&graph, &inputs) else {
        return;
    };
    let mut none_error = 0.0f32;
    for fold in bnc_fuzz::FOLD_MODES {
        let model = bnc_fuzz::compile(&graph, fold)
            .unwrap_or_else(|e| panic!("{fold:?} fails on\n{}\n{e}", generated.text));
        let outputs = model
            .run_tensors(&inputs)
            .unwrap_or_else(|e| panic!("{fold:?} does not run:\n{}\n{e}", generated.text));
        let (error, non_finite) = bnc_fuzz::error(&reference, &outputs);
        if fold == FoldMode::None {
            none_error = error;
        }
        let budget = (10.0 * none_error).max(1e-5);
        assert!(
            !non_finite && error <= budget,
            "{fold:?}: error {error:e} (budget {budget:e}, non-finite {non_finite}) on\n{}\n{}",
            generated.text,
            model.report().to_text()
        );
    }
});
