//! The whole receive path: framing, the header/OPEN/UPDATE validators,
//! decoding (zettabgp's capability decoder included) and the Adj-RIB-In.
//! Input layout: see `bird::fuzzing`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = bird::fuzzing::receive(data);
});
