#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| edinode_proto::fuzzing::mime(data));
