//! Golden test vectors of docs/FORMAT.md.
