//! What the two programs of this tool share: the timing harness ([`timing`]) and the
//! description and control of the machine and its OpenBLAS ([`machine`]).
//!
//! - `cargo run --release -p bench-report [-- --quick --out DIR --detected-kernel]`
//!   times every primitive against its scalar loop and writes `docs/benchmarks.md` and
//!   `docs/benchmarks.svg` (`src/main.rs`).
//! - `cargo run --release -p bench-report --bin peers -- --threads 1` prints matgrad's
//!   timings in the CSV format of `benches/peers` (`src/bin/peers.rs`).

pub mod machine;
pub mod timing;

/// Result of the tool's fallible steps.
pub type Res<T> = std::result::Result<T, Box<dyn std::error::Error>>;
