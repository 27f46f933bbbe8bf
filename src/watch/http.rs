//! The `--listen` HTTP endpoint (placeholder).
