//! The shared gradient checker.
