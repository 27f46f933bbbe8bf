//! `bai watch` against real sshd nodes and the real Docker engine (placeholder).
