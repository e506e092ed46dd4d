//! The real scalar types matgrad works in.

use ndarray::{LinalgScalar, ScalarOperand};
use num_traits::Float;
use std::fmt::{Debug, Display};
use std::iter::Sum;
use std::ops::{AddAssign, DivAssign, MulAssign, SubAssign};

/// A real floating-point type with BLAS and LAPACK behind it: `f32` or `f64`.
///
/// Sealed: its BLAS/LAPACK entry points (or, with the `faer` backend, faer's real
/// field trait) live behind a trait private to [`crate::blas`],
/// which is the only module that calls them. Per-type numbers belong to their users:
/// the checker's tolerances to [`crate::check::Tolerances`] and the Cholesky block size
/// to [`crate::ops::cholesky::Method`].
///
/// Deliberately not a subtrait of ndarray-linalg's `Scalar`, whose `sin`, `abs`, … would
/// make every `num_traits::Float` method call ambiguous in generic code.
pub trait Real:
    Float
    + LinalgScalar
    + ScalarOperand
    + Debug
    + Display
    + Sum
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
    + Send
    + Sync
    + 'static
    + crate::blas::Scalar
{
    /// Short type name used in reports ("f32", "f64").
    const NAME: &'static str;

    /// Converts from `f64`, rounding to this precision.
    fn of(x: f64) -> Self;
    /// Widens to `f64`.
    fn to64(self) -> f64;
}

impl Real for f64 {
    const NAME: &'static str = "f64";
    #[inline]
    fn of(x: f64) -> Self {
        x
    }
    #[inline]
    fn to64(self) -> f64 {
        self
    }
}

impl Real for f32 {
    const NAME: &'static str = "f32";
    #[inline]
    fn of(x: f64) -> Self {
        x as f32
    }
    #[inline]
    fn to64(self) -> f64 {
        f64::from(self)
    }
}
