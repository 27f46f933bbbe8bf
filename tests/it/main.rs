//! bai's integration suite: one test binary, the real `bai` executable and the library's pipeline.

mod agent;
mod apply_local;
mod apply_ssh;
mod ci_example;
mod cli;
mod confirm_healthy;
mod docker;
mod examples;
mod flake;
mod fuzz;
mod generations;
mod hostile_lab;
mod labels;
mod lock;
mod metrics;
mod plan;
mod rules;
mod saved_plan;
mod schemas;
mod secrets;
mod ssh;
mod support;
mod watch;
