//! Integration tests: the real server on a random port, spoken to over HTTP.

mod admin;
mod cli;
mod examples;
mod helpers;
mod ingress;
mod queue;
mod restart;
mod rhai;
mod store;
mod wasm;
