//! datastore (placeholder; being written).
