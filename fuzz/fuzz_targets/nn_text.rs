//! `.nn` source text: lexing, parsing, lowering, weights, then every fold pipeline and the
//! compiler on whatever loads.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    bnc_fuzz::init();
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(graph) = bnc::load_str(text, "fuzz.nn", &bnc_fuzz::scratch_dir()) {
        bnc_fuzz::fold_compile_run(&graph);
    }
});
