//! The single integration-test binary. Each module names the risk it covers.

mod support;

mod fuzz_smoke;
mod vectors;
