//! What the programs of this tool share: the timing harness ([`timing`]), the
//! description and control of the machine and its backend ([`machine`]), and the table
//! of the two backends side by side ([`backends`]).
//!
//! - `cargo run --release -p bench-report [-- --quick --out DIR --detected-kernel]`
//!   times every primitive against its scalar loop and writes `docs/benchmarks.md` and
//!   `docs/benchmarks.svg` (`src/main.rs`).
//! - `cargo run --release -p bench-report --bin peers -- --threads 1` prints matgrad's
//!   timings in the CSV format of `benches/peers` (`src/bin/peers.rs`).
//! - `bash tools/bench-report/backends.sh` times every factorisation and product with
//!   each backend (`src/bin/backends.rs`, built once per backend) and writes
//!   `docs/backends.csv` and `docs/backends.md`.

pub mod backends;
pub mod machine;
pub mod timing;

/// Result of the tool's fallible steps.
pub type Res<T> = std::result::Result<T, Box<dyn std::error::Error>>;
