//! `bai agent` (hidden): the node agent, serving the RPC on stdin/stdout until the controller hangs up.

use bai::agent::home::Home;
use bai::agent::serve::serve;
use bai::agent::stdio;

use crate::commands::Outcome;

pub fn run() -> Outcome {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bai agent: cannot start: {e}");
            return Outcome::Failed;
        }
    };
    let served = runtime.block_on(async {
        let (input, output, _restore) = stdio::standard();
        serve(input, output, Home::from_env()).await
    });
    // A call abandoned when the controller hung up may have left blocking work behind (a file read on
    // the blocking pool): the agent ends now rather than waiting for it.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    match served {
        Ok(()) => Outcome::Ok,
        Err(e) => {
            eprintln!("bai agent: {e}");
            Outcome::Failed
        }
    }
}
