//! The userspace VTEP's receive parser over arbitrary datagrams: the
//! first two input bytes are the UDP GRO segment size (0: not
//! coalesced), the rest the datagram; every segment goes through
//! `felix::vxlan::userspace::decap` for the VTEP MAC 66:6c:00:00:00:01.
#![no_main]

use felix::vxlan::userspace::{ENCAP_LEN, decap, segments};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [a, b, rest @ ..] = data else {
        return;
    };
    let gso = usize::from(u16::from_be_bytes([*a, *b]));
    for (o, l) in segments(rest.len(), gso) {
        let seg = &rest[o..o + l];
        if let Ok(inner) = decap(seg, &[0x66, 0x6c, 0, 0, 0, 1]) {
            assert!(ENCAP_LEN + inner <= seg.len());
        }
    }
});
