#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| shear_fuzz::shard_manifest::run(shear_fuzz::scratch(), data));
