//! havoc-faults
