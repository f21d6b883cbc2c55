//! havoc-spec
