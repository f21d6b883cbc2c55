//! `havoc-spec`: Havoc's experiment and fault model.
//!
//! Pure data and pure functions: parsing YAML with positions, deserializing with field paths,
//! validation, and seeded target selection. No I/O, no async, no unsafe, so the CLI, the operator
//! and the agent all give the same error for the same mistake.

pub mod de;
pub mod error;
pub mod experiment;
pub mod network;
pub mod path;
pub mod probe;
pub mod process;
pub mod selector;
pub mod stress;
pub mod units;
pub mod yaml;

pub use error::{SpecError, SpecErrors};
pub use experiment::{
    parse_experiment, Experiment, ExperimentSpec, FaultEntry, FaultSpec, Metadata,
};
pub use path::FieldPath;
pub use selector::{Mode, Selector};
