//! The `bai` binary: parse arguments, run one command, turn its outcome into an exit code.

mod cli;
mod commands;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};
use commands::{Outcome, Printer};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let printer = Printer::new(cli.color);
    commands::set_load_options(bai::config::load::LoadOptions { include_roots: cli.include_root.clone() });
    let cluster = cli.cluster.as_deref();
    let outcome = match &cli.command {
        Command::Validate(args) => commands::validate::run(args, cluster, &printer),
        Command::Plan(args) => commands::plan::run(args, cluster, &printer),
        Command::Diff(args) => commands::diff::run(args, cluster, &printer),
        Command::Graph(args) => commands::graph::run(args, cluster, &printer),
        Command::Fmt(args) => commands::fmt::run(args, &printer),
        Command::Apply(args) => commands::apply::run(args, cluster, &printer),
        Command::Destroy(args) => commands::apply::run_destroy(args, cluster, &printer),
        Command::Lock(args) => commands::lock::run(args, cluster, &printer),
        Command::Status(args) => commands::status::run(args, cluster, &printer),
        Command::Watch(args) => commands::watch::run(args, cluster, &printer),
        Command::Generations(args) => commands::generations::run(args, cluster, &printer),
        Command::Rollback(args) => commands::rollback::run(args, cluster, &printer),
        Command::Logs(args) => commands::logs::run(args, cluster, &printer),
        Command::Exec(args) => commands::exec::run(args, cluster, &printer),
        Command::PortForward(args) => commands::port_forward::run(args, cluster, &printer),
        Command::Cp(args) => commands::cp::run(args, cluster, &printer),
        Command::Agent(args) => commands::agent::run(args),
    };
    printer.finish(outcome);
    match outcome {
        Outcome::Ok => ExitCode::SUCCESS,
        Outcome::Failed => ExitCode::from(1),
        Outcome::Changes => ExitCode::from(2),
        Outcome::Exit(code) => ExitCode::from(code),
    }
}
