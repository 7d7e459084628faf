#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| failsoft_fuzzing::signature(data));
