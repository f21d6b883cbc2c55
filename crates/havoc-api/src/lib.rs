//! `havoc-api`: the node agent's gRPC API, generated from `proto/agent.proto`.
//!
//! The agent serves [`v1::agent_server::Agent`]; the operator and the CLI call it through
//! [`v1::agent_client::AgentClient`]. Both ends use mutual TLS only: [`tls`] loads the PEM files
//! and builds both sides, [`pki`] makes the CA and certificates (`havoc certs`).

pub mod pki;
pub mod tls;

/// Generated protobuf messages and tonic client/server for `havoc.agent.v1`.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("havoc.agent.v1");
}
