//! Integration tests: the real server on a random port, spoken to over HTTP.

mod admin;
mod admission;
mod auth;
mod binary;
mod cli;
mod client;
mod crash;
mod destinations;
mod events;
mod examples;
mod helpers;
mod ingress;
mod isolation;
mod limits;
mod listing;
mod nodes;
mod ops;
mod peak_rhai;
mod queue;
mod restart;
mod rhai;
mod scheduling;
mod soak;
mod store;
mod ui;
mod wasm;
