#!/usr/bin/env python3
"""Writes the regression corpus and the seeds of the `receive` fuzz target.

Each file is one mode byte (bit 0: 4-octet AS, bit 1: external peer,
bit 2: IPv6 negotiated; see src/fuzzing.rs) followed by BGP messages.
`regressions.txt` lists the RFC action each regression file must get; both
the fuzz smoke test and the daemon test against a live `bird` check it.
Run from bird/fuzz: python3 gen_corpus.py
"""
import os
import struct

OUT = "corpus/receive"
MODE_EBGP4 = 7      # 4-octet AS, external, IPv4+IPv6
MODE_EBGP2 = 6      # 2-octet AS, external, IPv4+IPv6


def msg(kind, body=b"", length=None):
    if length is None:
        length = 19 + len(body)
    return b"\xff" * 16 + struct.pack(">HB", length, kind) + body


def attr(flags, code, value):
    if len(value) > 255:
        return struct.pack(">BBH", flags | 0x10, code, len(value)) + value
    return struct.pack(">BBB", flags, code, len(value)) + value


def update(withdrawn=b"", attrs=b"", nlri=b""):
    return msg(2, struct.pack(">H", len(withdrawn)) + withdrawn +
               struct.pack(">H", len(attrs)) + attrs + nlri)


ORIGIN = attr(0x40, 1, b"\x00")
PATH4 = attr(0x40, 2, b"\x02\x01" + struct.pack(">I", 65001))
PATH2 = attr(0x40, 2, b"\x02\x01" + struct.pack(">H", 65001))
NH = attr(0x40, 3, bytes([10, 0, 0, 1]))
NLRI = bytes([16, 10, 1])            # 10.1.0.0/16
GOOD = ORIGIN + PATH4 + NH
V6NH = bytes.fromhex("20010db8000000000000000000000001")


def mp_reach_v6(nlri):
    return attr(0x80, 14, b"\x00\x02\x01\x10" + V6NH + b"\x00" + nlri)


def open_msg(asn=65001, hold=90, bgp_id=b"\x01\x01\x01\x01", caps=None):
    if caps is None:
        caps = (b"\x01\x04\x00\x01\x00\x01" + b"\x01\x04\x00\x02\x00\x01" +
                b"\x02\x00" + b"\x41\x04" + struct.pack(">I", asn))
    params = b"\x02" + bytes([len(caps)]) + caps
    my_as = asn if asn < 65536 else 23456
    return msg(1, struct.pack(">BHH", 4, my_as, hold) + bgp_id +
               bytes([len(params)]) + params)


REGRESSIONS = [
    # Message header errors (RFC 4271 section 6.1).
    ("header_length_18", MODE_EBGP4, b"\xff" * 16 + b"\x00\x12\x04", "reset 1 2"),
    ("header_length_4097", MODE_EBGP4, b"\xff" * 16 + b"\x10\x01\x02" + b"\x00" * 8, "reset 1 2"),
    ("header_bad_marker", MODE_EBGP4, b"\xff" * 7 + b"\x00" + b"\xff" * 8 + b"\x00\x13\x04", "reset 1 1"),
    ("header_bad_type", MODE_EBGP4, msg(9), "reset 1 3"),
    ("keepalive_with_body", MODE_EBGP4, msg(4, b"\x00"), "reset 1 2"),
    ("update_shorter_than_23", MODE_EBGP4, msg(2, b"\x00\x00"), "reset 1 2"),
    ("notification_shorter_than_21", MODE_EBGP4, msg(3, b"\x06"), "reset 1 2"),
    ("route_refresh_of_24_bytes", MODE_EBGP4, msg(5, b"\x00\x01\x00\x01\x00"), "reset 1 2"),
    # UPDATE errors that reset the session.
    ("update_withdrawn_length_overrun", MODE_EBGP4, msg(2, b"\x00\xff\x00\x00"), "reset 3 1"),
    ("update_attribute_length_overrun", MODE_EBGP4, msg(2, b"\x00\x00\x00\xff" + ORIGIN), "reset 3 1"),
    ("update_nlri_prefix_length_33", MODE_EBGP4, update(attrs=GOOD, nlri=bytes([33, 10, 1, 2, 3, 4])), "reset 3 10"),
    ("update_nlri_truncated", MODE_EBGP4, update(attrs=GOOD, nlri=bytes([24, 10, 1])), "reset 3 10"),
    ("update_mp_reach_truncated", MODE_EBGP4,
     update(attrs=attr(0x80, 14, b"\x00\x02\x01\x10" + V6NH[:4]) + ORIGIN + PATH4), "reset 3 9"),
    ("update_mp_reach_next_hop_length_8", MODE_EBGP4,
     update(attrs=attr(0x80, 14, b"\x00\x02\x01\x08" + V6NH[:8] + b"\x00") + ORIGIN + PATH4), "reset 3 9"),
    ("update_mp_reach_bad_prefix", MODE_EBGP4,
     update(attrs=mp_reach_v6(bytes([130, 1])) + ORIGIN + PATH4), "reset 3 9"),
    ("update_mp_reach_twice", MODE_EBGP4,
     update(attrs=mp_reach_v6(b"") + mp_reach_v6(b"") + ORIGIN + PATH4), "reset 3 1"),
    ("update_unrecognized_well_known", MODE_EBGP4,
     update(attrs=GOOD + attr(0x40, 99, b"\xaa"), nlri=NLRI), "reset 3 2"),
    # RFC 7606 treat-as-withdraw: the session stays up, the prefix goes.
    ("as_path_segment_overrun", MODE_EBGP4,
     update(attrs=ORIGIN + attr(0x40, 2, b"\x02\x05" + struct.pack(">I", 65001)) + NH, nlri=NLRI), "withdraw"),
    ("as_path_one_byte", MODE_EBGP4, update(attrs=ORIGIN + attr(0x40, 2, b"\x02") + NH, nlri=NLRI), "withdraw"),
    ("as_path_zero_length_segment", MODE_EBGP4,
     update(attrs=ORIGIN + attr(0x40, 2, b"\x02\x00") + NH, nlri=NLRI), "withdraw"),
    ("as_path_leftmost_not_peer", MODE_EBGP4,
     update(attrs=ORIGIN + attr(0x40, 2, b"\x02\x01" + struct.pack(">I", 9)) + NH, nlri=NLRI), "withdraw"),
    ("communities_short", MODE_EBGP4, update(attrs=GOOD + attr(0xc0, 8, b"\x00\x00\x01"), nlri=NLRI), "withdraw"),
    ("origin_undefined", MODE_EBGP4, update(attrs=attr(0x40, 1, b"\x07") + PATH4 + NH, nlri=NLRI), "withdraw"),
    ("next_hop_length_5", MODE_EBGP4,
     update(attrs=ORIGIN + PATH4 + attr(0x40, 3, b"\x0a\x00\x00\x01\x00"), nlri=NLRI), "withdraw"),
    ("next_hop_missing", MODE_EBGP4, update(attrs=ORIGIN + PATH4, nlri=NLRI), "withdraw"),
    ("attribute_overruns_section", MODE_EBGP4,
     update(attrs=GOOD + b"\x80\x04\x09\x00\x00\x00\x01", nlri=NLRI), "withdraw"),
    ("attribute_flags_conflict", MODE_EBGP4,
     update(attrs=attr(0xc0, 1, b"\x00") + PATH4 + NH, nlri=NLRI), "withdraw"),
    ("med_length_2", MODE_EBGP4, update(attrs=GOOD + attr(0x80, 4, b"\x00\x01"), nlri=NLRI), "withdraw"),
    # RFC 7606 attribute-discard: the prefix stays.
    ("atomic_aggregate_length_1", MODE_EBGP4, update(attrs=GOOD + attr(0x40, 6, b"\x00"), nlri=NLRI), "discard"),
    ("aggregator_length_7", MODE_EBGP4, update(attrs=GOOD + attr(0xc0, 7, b"\x00" * 7), nlri=NLRI), "discard"),
    ("local_pref_from_external_peer", MODE_EBGP4,
     update(attrs=GOOD + attr(0x40, 5, b"\x00\x00\x00\xc8"), nlri=NLRI), "discard"),
    ("as4_path_from_four_octet_peer", MODE_EBGP4,
     update(attrs=GOOD + attr(0xc0, 17, b"\x02\x01\x00\x00\x00\x09"), nlri=NLRI), "discard"),
    ("repeated_origin", MODE_EBGP4, update(attrs=GOOD + attr(0x40, 1, b"\x02"), nlri=NLRI), "discard"),
]

SEEDS = [
    ("seed_open", MODE_EBGP4, open_msg()),
    ("seed_open_as_trans", MODE_EBGP2, open_msg(asn=4200000001)),
    ("seed_keepalive", MODE_EBGP4, msg(4)),
    ("seed_update_v4", MODE_EBGP4, update(attrs=GOOD + attr(0xc0, 8, b"\xfd\xe9\x00\x01"), nlri=NLRI + bytes([24, 10, 2, 3]))),
    ("seed_update_v6", MODE_EBGP4, update(attrs=mp_reach_v6(bytes([48, 0x20, 1, 0xd, 0xb8, 0, 1])) + ORIGIN + PATH4)),
    ("seed_withdraw_v6", MODE_EBGP4, update(attrs=attr(0x80, 15, b"\x00\x02\x01" + bytes([48, 0x20, 1, 0xd, 0xb8, 0, 1])))),
    ("seed_end_of_rib", MODE_EBGP4, update() + update(attrs=attr(0x80, 15, b"\x00\x02\x01"))),
    ("seed_two_octet_with_as4_path", MODE_EBGP2,
     update(attrs=ORIGIN + attr(0x40, 2, b"\x02\x02" + struct.pack(">HH", 65001, 23456)) + NH +
            attr(0xc0, 17, b"\x02\x01" + struct.pack(">I", 4200000009)), nlri=NLRI)),
    ("seed_notification", MODE_EBGP4, msg(3, b"\x06\x02\x05maint")),
    ("seed_route_refresh", MODE_EBGP4, msg(5, b"\x00\x02\x00\x01")),
    ("seed_ibgp_update", 5, update(attrs=ORIGIN + attr(0x40, 2, b"") + NH + attr(0x40, 5, b"\x00\x00\x00\x64"), nlri=NLRI)),
]

os.makedirs(OUT, exist_ok=True)
with open("regressions.txt", "w") as manifest:
    manifest.write("# corpus/receive/<file>  expected RFC action (reset CODE SUBCODE | withdraw | discard)\n")
    manifest.write("# Generated by gen_corpus.py; 'withdraw' and 'discard' files announce 10.1.0.0/16.\n")
    for name, mode, data, expect in REGRESSIONS:
        with open(os.path.join(OUT, "regress_" + name), "wb") as f:
            f.write(bytes([mode]) + data)
        manifest.write(f"regress_{name} {expect}\n")
for name, mode, data in SEEDS:
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(bytes([mode]) + data)
