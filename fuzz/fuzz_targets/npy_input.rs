//! A `.npy` input file, as `bnc run -i` reads it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    bnc_fuzz::init();
    let path = bnc_fuzz::scratch_dir().join("input.npy");
    std::fs::write(&path, data).expect("scratch file");
    if let Ok(tensor) = bnc::npy::read(&path) {
        assert_eq!(tensor.data.len(), tensor.shape.iter().product::<usize>());
    }
});
