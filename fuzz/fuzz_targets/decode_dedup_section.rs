#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| strongroom_core::fuzzing::decode_dedup_section(data));
