//! havoc-engine
