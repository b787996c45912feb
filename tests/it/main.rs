//! The single integration-test binary. Each module names the risk it covers.

mod support;

mod cli;
mod fuzz_smoke;
mod vectors;
