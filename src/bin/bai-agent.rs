//! `bai-agent`: the node agent alone, the binary bai installs on nodes ([`bai::agent::process`],
//! [`bai::agent::binary`]). Its command line is `bai agent`'s, so the controller starts either the same way.

use std::process::ExitCode;

use bai::agent::binary::BUILD_MARKER;
use bai::agent::process::{AgentArgs, run};
use bai::protocol::BAI_VERSION;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args_os().skip(1).map(|a| a.to_string_lossy().into_owned()).collect();
    if args.first().is_some_and(|a| a == "--version") {
        // The build's identity printed here is also what keeps it in this binary for `bai` to find.
        println!("bai-agent {BAI_VERSION} ({BUILD_MARKER})");
        return ExitCode::SUCCESS;
    }
    match AgentArgs::parse(args) {
        Ok(args) => {
            if run(args) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("bai-agent: {e}");
            ExitCode::from(2)
        }
    }
}
