//! `bai agent` (hidden): the node agent, serving the RPC on stdin/stdout until the controller hangs up.

use bai::agent::process;

use crate::cli::AgentArgs;
use crate::commands::Outcome;

pub fn run(args: &AgentArgs) -> Outcome {
    if process::run(process::AgentArgs { expect_size: args.expect_size, place: args.place.clone() }) {
        Outcome::Ok
    } else {
        Outcome::Failed
    }
}
