//! bird: the BGP speaker (being written).
