//! Command-line types only: what the user typed, before it means anything.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "bai",
    version,
    about = "A declarative reconciler for GPU labs: write the lab in KDL, plan, review, apply.",
    long_about = "bai reads a lab (clusters, nodes, GPU images, vfolders and compute sessions) written in KDL, \
validates it, and plans the changes that make every node match it.\n\n\
Start with `bai validate lab.kdl`, then `bai plan --offline lab.kdl`."
)]
pub struct Cli {
    /// Act on one cluster of the file only
    #[arg(long, global = true, value_name = "NAME")]
    pub cluster: Option<String>,

    /// When to use colour in human output
    #[arg(long, global = true, value_enum, default_value_t = Color::Auto)]
    pub color: Color,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Color {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check lab files and report every problem at once
    ///
    /// Exits 0 when there is no error (warnings are printed), 1 otherwise.
    Validate(ValidateArgs),
    /// Show the changes that `apply` would make
    ///
    /// Text lists each change with its sign (+ create, ~ update, -/+ replace, - delete), its resource id and
    /// the field-level reasons, and ends with a summary line.
    Plan(PlanArgs),
    /// Show the plan that turns the lab of OLD into the lab of NEW, with no node at all
    ///
    /// What a reviewer reads on a pull request: `bai diff main.kdl branch.kdl --format markdown`.
    Diff(DiffArgs),
    /// Print the resource dependency graph
    Graph(GraphArgs),
    /// Rewrite lab files in canonical form, keeping every comment
    Fmt(FmtArgs),
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Lab files to check
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,

    #[arg(long, value_enum, default_value_t = DiagnosticFormat::Human)]
    pub format: DiagnosticFormat,

    /// Treat warnings as errors
    #[arg(long)]
    pub deny_warnings: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum DiagnosticFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum PlanFormat {
    Text,
    Json,
    Markdown,
}

#[derive(Debug, Args)]
pub struct PlanOutput {
    #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
    pub format: PlanFormat,

    /// Exit 0 when there are no changes, 2 when there are, 1 on error
    #[arg(long)]
    pub detailed_exitcode: bool,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The lab file
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// Plan against nodes that hold nothing (no network)
    #[arg(long, conflicts_with = "state")]
    pub offline: bool,

    /// Plan against an observed-state snapshot (`bai status --format json`; schema/state.schema.json)
    #[arg(long, value_name = "SNAPSHOT.json")]
    pub state: Option<PathBuf>,

    #[command(flatten)]
    pub output: PlanOutput,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The lab before the change
    #[arg(value_name = "OLD")]
    pub old: PathBuf,

    /// The lab after the change
    #[arg(value_name = "NEW")]
    pub new: PathBuf,

    #[command(flatten)]
    pub output: PlanOutput,
}

#[derive(Debug, Args)]
pub struct GraphArgs {
    /// The lab file
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
    pub format: GraphFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum GraphFormat {
    Dot,
    Mermaid,
}

#[derive(Debug, Args)]
pub struct FmtArgs {
    /// Files to format
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,

    /// Change nothing; exit 1 and list the files that are not formatted
    #[arg(long)]
    pub check: bool,
}
