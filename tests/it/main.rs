//! The single integration-test binary. Each module names the risk it covers.

mod support;

mod catalog;
mod cli;
mod corruption;
mod crash;
mod errors;
mod fuzz_smoke;
mod streams;
mod vectors;
