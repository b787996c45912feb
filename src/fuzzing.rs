//! Entry points for the fuzz targets in `fuzz/` and their seeded smoke test
//! on stable (`tests/it/fuzz_smoke.rs`). Each function feeds arbitrary bytes
//! to one decoder and checks more than "no panic": whatever decodes must
//! re-encode to the same bytes.
