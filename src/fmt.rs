//! Placeholder until the formatter lands.
pub fn format_source(source: &str) -> Result<String, kdl::KdlError> {
    Ok(source.parse::<kdl::KdlDocument>()?.to_string())
}
