//! What can go wrong talking to Docker, naming what was being done and on what (image reference or
//! container name), never an environment value; each variant has its code (docs/errors.md), which the
//! agent sends with the error.

use super::*;

/// A failure talking to Docker, naming what was being done and on what (image reference or container
/// name). Carries no environment values.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum DockerError {
    #[error("cannot reach the Docker engine: {source}")]
    #[diagnostic(code(bai::docker::connect))]
    Connect { source: EngineError },
    #[error("Docker failed {action}: {source}")]
    #[diagnostic(code(bai::docker::api))]
    Api { action: String, source: EngineError },
    #[error(
        "container {container} holds a name bai manages but does not carry bai's labels for cluster \
         {cluster}; bai leaves it alone (remove or rename it to let bai manage {container})"
    )]
    #[diagnostic(code(bai::docker::not_owned))]
    NotOwned { container: String, cluster: String },
    #[error("image {reference} is not on the node (ensure the image before creating sessions from it)")]
    #[diagnostic(code(bai::docker::image_missing))]
    ImageMissing { reference: String },
    #[error("pulling image {reference} failed: {message}")]
    #[diagnostic(code(bai::docker::pull))]
    Pull { reference: String, message: String },
    #[error("building image {reference} failed: {message}{}", log_tail(.log))]
    #[diagnostic(code(bai::docker::build))]
    Build { reference: String, message: String, log: Vec<String> },
    #[error("loading the image archive for {reference} failed: {message}")]
    #[diagnostic(code(bai::docker::load))]
    Load { reference: String, message: String },
    #[error("the image archive loaded, but it holds no image tagged {reference}")]
    #[diagnostic(code(bai::docker::not_in_archive))]
    NotInArchive { reference: String },
    #[error("cannot read blob {sha256} for image {reference} at {}: {source}", .path.display())]
    #[diagnostic(code(bai::docker::blob))]
    Blob { reference: String, sha256: String, path: PathBuf, source: std::io::Error },
    #[error("image `{image}` ({reference}) is not what bai.lock says: {message}")]
    #[diagnostic(code(bai::docker::locked))]
    Locked { image: String, reference: String, message: String },
    #[error("container {container}: {reason}")]
    #[diagnostic(code(bai::docker::invalid))]
    Invalid { container: String, reason: String },
    #[error("Docker refused the new container for {container}: {source}; the running one is kept as it was")]
    #[diagnostic(code(bai::docker::replacement_refused))]
    ReplacementRefused { container: String, source: EngineError },
    #[error(
        "the old container {container} was removed, but {doing} the new one failed: {source}; \
         the session is not running until `bai apply` creates it again"
    )]
    #[diagnostic(code(bai::docker::replacement_not_started))]
    ReplacementNotStarted { container: String, doing: &'static str, source: EngineError },
    /// Shown escaped: it came from a request and may hold anything.
    #[error("`{}` is not an image reference: {reason}", .reference.escape_debug())]
    #[diagnostic(code(bai::docker::invalid_reference))]
    InvalidReference { reference: String, reason: String },
}

pub(super) fn log_tail(log: &[String]) -> String {
    if log.is_empty() { String::new() } else { format!("\nlast lines of the build log:\n  {}", log.join("\n  ")) }
}

impl From<DockerError> for RpcError {
    fn from(e: DockerError) -> Self {
        let kind = match e {
            DockerError::NotOwned { .. } => ErrorKind::Refused,
            DockerError::Invalid { .. } | DockerError::InvalidReference { .. } => ErrorKind::BadRequest,
            _ => ErrorKind::Failed,
        };
        RpcError::of(kind, &e)
    }
}
