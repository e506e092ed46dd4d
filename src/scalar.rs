//! The real scalar types matgrad works in, and the one place where per-type numbers
//! (checker tolerances, block sizes) and the typed BLAS entry points live.

use cblas_sys as cb;
use ndarray::{LinalgScalar, ScalarOperand};
use num_traits::Float;
use std::fmt::{Debug, Display};
use std::iter::Sum;
use std::ops::{AddAssign, DivAssign, MulAssign, SubAssign};

/// A real floating-point type with BLAS and LAPACK behind it: `f32` or `f64`.
///
/// Deliberately not a subtrait of ndarray-linalg's `Scalar`, whose `sin`, `abs`, … would
/// make every `num_traits::Float` method call ambiguous in generic code.
///
/// The unsafe methods are the raw CBLAS level-3 routines. They are called only from
/// [`crate::blas`], which checks shapes and strides before it hands pointers over.
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
{
    /// Short type name used in reports ("f32", "f64").
    const NAME: &'static str;
    /// Relative error the checker accepts for finite-difference comparisons.
    const FD_TOL: f64;
    /// Relative error the checker accepts for the exact identities (adjoint, accumulation).
    const EXACT_TOL: f64;
    /// Default finite-difference step for this precision.
    const FD_STEP: f64;
    /// Block size of the blocked Cholesky reverse pass.
    const CHOL_BLOCK: usize;

    /// Converts from `f64`, rounding to this precision.
    fn of(x: f64) -> Self;
    /// Widens to `f64`.
    fn to64(self) -> f64;

    /// # Safety
    /// Pointers, sizes and leading dimensions must describe valid matrices as CBLAS expects.
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm(
        layout: cb::CBLAS_LAYOUT,
        ta: cb::CBLAS_TRANSPOSE,
        tb: cb::CBLAS_TRANSPOSE,
        m: i32,
        n: i32,
        k: i32,
        alpha: Self,
        a: *const Self,
        lda: i32,
        b: *const Self,
        ldb: i32,
        beta: Self,
        c: *mut Self,
        ldc: i32,
    );

    /// # Safety
    /// As for [`Real::gemm`].
    #[allow(clippy::too_many_arguments)]
    unsafe fn trsm(
        layout: cb::CBLAS_LAYOUT,
        side: cb::CBLAS_SIDE,
        uplo: cb::CBLAS_UPLO,
        ta: cb::CBLAS_TRANSPOSE,
        diag: cb::CBLAS_DIAG,
        m: i32,
        n: i32,
        alpha: Self,
        a: *const Self,
        lda: i32,
        b: *mut Self,
        ldb: i32,
    );

    /// # Safety
    /// As for [`Real::gemm`].
    #[allow(clippy::too_many_arguments)]
    unsafe fn trmm(
        layout: cb::CBLAS_LAYOUT,
        side: cb::CBLAS_SIDE,
        uplo: cb::CBLAS_UPLO,
        ta: cb::CBLAS_TRANSPOSE,
        diag: cb::CBLAS_DIAG,
        m: i32,
        n: i32,
        alpha: Self,
        a: *const Self,
        lda: i32,
        b: *mut Self,
        ldb: i32,
    );

    /// # Safety
    /// As for [`Real::gemm`].
    #[allow(clippy::too_many_arguments)]
    unsafe fn syrk(
        layout: cb::CBLAS_LAYOUT,
        uplo: cb::CBLAS_UPLO,
        trans: cb::CBLAS_TRANSPOSE,
        n: i32,
        k: i32,
        alpha: Self,
        a: *const Self,
        lda: i32,
        beta: Self,
        c: *mut Self,
        ldc: i32,
    );

    /// LAPACK `potrf` (Cholesky factorisation) on a column-major `n×n` matrix, reading
    /// and writing only its `uplo` (`b'L'` or `b'U'`) triangle. Returns LAPACK's `info`:
    /// `0` on success, `k > 0` when the leading minor of order `k` is not positive.
    ///
    /// # Safety
    /// `a` must point to a column-major matrix of `n` columns with leading dimension
    /// `lda ≥ max(1, n)`, valid for reads and writes.
    unsafe fn potrf(uplo: u8, n: i32, a: *mut Self, lda: i32) -> i32;
}

macro_rules! impl_real {
    ($t:ty, $name:literal, $fd:expr, $exact:expr, $step:expr, $block:expr,
     $gemm:ident, $trsm:ident, $trmm:ident, $syrk:ident, $potrf:ident) => {
        impl Real for $t {
            const NAME: &'static str = $name;
            const FD_TOL: f64 = $fd;
            const EXACT_TOL: f64 = $exact;
            const FD_STEP: f64 = $step;
            const CHOL_BLOCK: usize = $block;

            #[inline]
            fn of(x: f64) -> Self {
                x as $t
            }
            #[inline]
            fn to64(self) -> f64 {
                self as f64
            }

            unsafe fn gemm(
                layout: cb::CBLAS_LAYOUT,
                ta: cb::CBLAS_TRANSPOSE,
                tb: cb::CBLAS_TRANSPOSE,
                m: i32,
                n: i32,
                k: i32,
                alpha: Self,
                a: *const Self,
                lda: i32,
                b: *const Self,
                ldb: i32,
                beta: Self,
                c: *mut Self,
                ldc: i32,
            ) {
                cb::$gemm(layout, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
            }

            unsafe fn trsm(
                layout: cb::CBLAS_LAYOUT,
                side: cb::CBLAS_SIDE,
                uplo: cb::CBLAS_UPLO,
                ta: cb::CBLAS_TRANSPOSE,
                diag: cb::CBLAS_DIAG,
                m: i32,
                n: i32,
                alpha: Self,
                a: *const Self,
                lda: i32,
                b: *mut Self,
                ldb: i32,
            ) {
                cb::$trsm(layout, side, uplo, ta, diag, m, n, alpha, a, lda, b, ldb)
            }

            unsafe fn trmm(
                layout: cb::CBLAS_LAYOUT,
                side: cb::CBLAS_SIDE,
                uplo: cb::CBLAS_UPLO,
                ta: cb::CBLAS_TRANSPOSE,
                diag: cb::CBLAS_DIAG,
                m: i32,
                n: i32,
                alpha: Self,
                a: *const Self,
                lda: i32,
                b: *mut Self,
                ldb: i32,
            ) {
                cb::$trmm(layout, side, uplo, ta, diag, m, n, alpha, a, lda, b, ldb)
            }

            unsafe fn syrk(
                layout: cb::CBLAS_LAYOUT,
                uplo: cb::CBLAS_UPLO,
                trans: cb::CBLAS_TRANSPOSE,
                n: i32,
                k: i32,
                alpha: Self,
                a: *const Self,
                lda: i32,
                beta: Self,
                c: *mut Self,
                ldc: i32,
            ) {
                cb::$syrk(layout, uplo, trans, n, k, alpha, a, lda, beta, c, ldc)
            }

            unsafe fn potrf(uplo: u8, n: i32, a: *mut Self, lda: i32) -> i32 {
                let uplo = uplo as std::ffi::c_char;
                let mut info = 0;
                lapack_sys::$potrf(&uplo, &n, a, &lda, &mut info);
                info
            }
        }
    };
}

impl_real!(
    f64,
    "f64",
    1e-8,
    1e-11,
    1e-4,
    64,
    cblas_dgemm,
    cblas_dtrsm,
    cblas_dtrmm,
    cblas_dsyrk,
    dpotrf_
);
impl_real!(
    f32,
    "f32",
    2e-2,
    1e-4,
    1e-2,
    64,
    cblas_sgemm,
    cblas_strsm,
    cblas_strmm,
    cblas_ssyrk,
    spotrf_
);
