//! The single integration-test binary. Each module names the risk it covers.

// A panic is how a test reports failure; unwrapping here is the point.
#![allow(clippy::unwrap_used)]

mod support;

mod agent;
mod audit;
mod backends;
mod backup_only;
mod catalog;
mod cli;
mod copy;
mod corruption;
mod crash;
mod crash_maintenance;
mod defects;
mod diff;
mod durability;
mod errors;
mod forget;
mod fuzz_smoke;
mod groups;
mod holds;
mod hostile_fs;
mod hostile_store;
mod key_cache;
mod mount;
mod object_lock;
mod ops;
mod parity;
mod prune;
mod put_only;
mod quarantine;
mod ransomware;
mod regressions;
mod repair;
mod requests;
mod restore_modes;
mod rotate;
mod streams;
mod tenants;
mod tree_cache;
mod vectors;
mod verify_restore;
