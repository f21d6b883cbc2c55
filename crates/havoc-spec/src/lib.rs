//! `havoc-spec`: Havoc's experiment and fault model.
//!
//! Pure data and pure functions: parsing YAML with positions, deserializing with field paths,
//! validation, and seeded target selection. No async, no unsafe, and no I/O but one bounded file
//! read ([`source::read_file`]), so the CLI, the operator and the agent all give the same error
//! for the same mistake.
//!
//! Hostile input is bounded everywhere the parser runs: a document is at most 4 MiB, and alias
//! expansion, nodes, text and nesting have budgets ([`yaml::Limits`]); every duration is at most
//! 365 days ([`units::MAX_DURATION`]), sizes at most 16 TiB, rates at most 1 Tbit/s; messages
//! quote at most 64 characters of a value ([`units::clip`]).

pub mod de;
pub mod dns;
pub mod errno;
pub mod error;
pub mod experiment;
pub mod http;
pub mod io;
pub mod network;
pub mod path;
pub mod probe;
pub mod process;
pub mod schedule;
pub mod selector;
pub mod source;
pub mod statuscheck;
pub mod stress;
pub mod syscall;
pub mod time;
pub mod units;
pub mod workflow;
pub mod yaml;

pub use error::{SpecError, SpecErrors};
pub use experiment::{
    parse_experiment, Experiment, ExperimentSpec, FaultEntry, FaultSpec, Metadata,
};
pub use path::FieldPath;
pub use selector::{Mode, Selector};
