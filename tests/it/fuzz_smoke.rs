//! Seeded runs of every fuzz entry point (see fuzz/), on stable.
