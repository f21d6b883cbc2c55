//! The `havoc` binary: parses the command line, sets up logging, and hands over to one module per
//! subcommand. Exit codes: 0 success, 1 failure, 2 invalid input, 3 target not found or refused,
//! 4 aborted by a steady-state probe, 5 steady state deviated (a probe failed its tolerance),
//! 130 interrupted (everything recovered in every case).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;
mod progress;

#[derive(Parser)]
#[command(name = "havoc", version, about = "Chaos engineering with guaranteed recovery", long_about = None)]
struct Cli {
    /// Where the journal of active faults is kept.
    #[arg(long, global = true, env = "HAVOC_STATE_DIR", default_value = havoc_engine::journal::DEFAULT_STATE_DIR)]
    state_dir: std::path::PathBuf,
    /// Log level (error, warn, info, debug, trace).
    #[arg(long, global = true, env = "HAVOC_LOG", default_value = "warn")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run an experiment: validate, resolve targets, inject, hold, recover, report.
    Run(cmd::run::Args),
    /// Run a Schedule in the foreground (each run writes its report; SIGTERM stops cleanly).
    Schedule(cmd::schedule::Args),
    /// Check experiment files without touching anything.
    Validate(cmd::validate::Args),
    /// Undo everything a crashed or killed havoc left in effect (from the journal).
    Recover(cmd::recover::Args),
    /// Stop every running havoc on this host and recover all its faults (within a second).
    Halt(cmd::halt::Args),
    /// Run a bundled experiment in a sandbox havoc builds (two network namespaces, a web service
    /// and its client), print the report, and remove the sandbox.
    Demo(cmd::demo::Args),
    /// Run the node agent (gRPC with mutual TLS) that does node-level work for the operator,
    /// or, with --sidecar, a probability loop inside an application's pod.
    Agent(cmd::agent::Args),
    /// Run the Kubernetes operator (the chaos kinds, Schedule, Workflow, StatusCheck).
    Operator(cmd::operator::Args),
    /// Serve a web dashboard of this host's runs: reports, live progress, a YAML editor that
    /// validates as you type, start and halt (on 127.0.0.1:8484 by default).
    Dashboard(cmd::dashboard::Args),
    /// Print the CustomResourceDefinitions as YAML (for kubectl apply).
    Crds(cmd::crds::Args),
    /// Convert Chaos Mesh manifests to havoc.dev ones (unsupported fields are errors).
    Convert(cmd::convert::Args),
    /// Create a CA and the agent's and operator's mutual-TLS certificates.
    Certs(cmd::certs::Args),
    /// Print everything a cluster needs (namespace, CRDs, RBAC, operator, agents).
    Install(cmd::install::Args),
    #[command(name = "__watchdog", hide = true)]
    Watchdog {
        #[arg(long)]
        journal: std::path::PathBuf,
    },
    #[command(name = "__stress-worker", hide = true)]
    StressWorker {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    #[command(name = "__demo-server", hide = true)]
    DemoServer {
        #[arg(long)]
        port: u16,
    },
    #[command(name = "__demo-load", hide = true)]
    DemoLoad {
        #[arg(long)]
        url: String,
    },
}

fn main() -> ExitCode {
    let started = std::time::Instant::now();
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal: log files and `kubectl logs` get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let code = match cli.command {
        Command::Run(args) => cmd::run::run(args, &cli.state_dir, started),
        Command::Schedule(args) => cmd::schedule::run(args, &cli.state_dir, started),
        Command::Validate(args) => cmd::validate::run(args),
        Command::Recover(args) => cmd::recover::run(args, &cli.state_dir),
        Command::Halt(args) => cmd::halt::run(args, &cli.state_dir),
        Command::Demo(args) => cmd::demo::run(args, &cli.state_dir, started),
        Command::Agent(args) => cmd::agent::run(args, &cli.state_dir),
        Command::Operator(args) => cmd::operator::run(args),
        Command::Dashboard(args) => cmd::dashboard::run(args, &cli.state_dir),
        Command::Crds(args) => cmd::crds::run(args),
        Command::Convert(args) => cmd::convert::run(args),
        Command::Certs(args) => cmd::certs::run(args),
        Command::Install(args) => cmd::install::run(args),
        Command::Watchdog { journal } => {
            return ExitCode::from(havoc_engine::watchdog::watchdog_main(journal) as u8)
        }
        Command::StressWorker { args } => match havoc_faults::stress::parse_worker_args(&args) {
            Ok((task, deadline)) => {
                havoc_faults::stress::worker_main(task, deadline);
                Ok(0)
            }
            Err(e) => {
                eprintln!("havoc __stress-worker: {e}");
                Ok(2)
            }
        },
        Command::DemoServer { port } => cmd::demo::server_main(port),
        Command::DemoLoad { url } => cmd::demo::load_main(&url),
    };
    match code {
        Ok(c) => ExitCode::from(c),
        Err(e) => {
            eprintln!("havoc: error: {e:#}");
            ExitCode::from(1)
        }
    }
}
