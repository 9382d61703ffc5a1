//! Calico resource types (placeholder; being written).
