//! The shared gradient checker.
pub mod random;
