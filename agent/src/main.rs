//! `lgtm-agent`: one binary for logs, metrics and traces to a multi-tenant LGTM stack.
//!
//! This crate is the command line, the wiring of each mode's sources into the pipeline, the admin
//! server (`/healthz`, `/readyz`, `/metrics`, `/targets`) and the shutdown sequence. Sources live in
//! `lgtm-daemonset` and `lgtm-statefulset`, exporters in `lgtm-pipeline`, configuration in
//! `lgtm-config`.

mod admin;
mod cli;
mod components;
mod datadir;
mod memory;
mod otlp;
mod reload;
mod run;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    memory::tune_allocator();
    let cli = cli::Cli::parse();
    cli::execute(cli)
}
