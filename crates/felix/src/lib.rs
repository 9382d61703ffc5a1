//! felix: the dataplane agent (being written).
