#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| shear_fuzz::safetensors_header::run(shear_fuzz::scratch(), data));
