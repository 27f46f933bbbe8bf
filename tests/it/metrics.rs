//! `/metrics` text checked by Prometheus's own parser (placeholder).
