//! BFD Control packet parsing and the session state machine over
//! arbitrary datagrams. Input layout: see `bird::fuzzing::bfd_receive`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = bird::fuzzing::bfd_receive(data);
});
