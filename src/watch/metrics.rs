//! Prometheus text exposition of the watcher's status (placeholder).
