#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| failsoft_fuzzing::facade_request(data));
