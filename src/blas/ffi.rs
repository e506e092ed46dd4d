//! The raw CBLAS and LAPACK entry points, one sealed trait implemented for `f32` and
//! `f64`. Nothing outside [`crate::blas`] can name it, so every `unsafe` call in the
//! crate is made from this layer, after the safe wrappers have checked shapes and
//! strides.

use cblas_sys as cb;

/// The typed BLAS/LAPACK routines matgrad calls. Sealed: its module is private, so
/// only `f32` and `f64` implement it.
pub trait Ffi: Sized {
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
    /// As for [`Ffi::gemm`]; `kind` selects TRSM (`Solve`) or TRMM (`Mul`).
    #[allow(clippy::too_many_arguments)]
    unsafe fn triangular(
        kind: TriKind,
        layout: cb::CBLAS_LAYOUT,
        side: cb::CBLAS_SIDE,
        uplo: cb::CBLAS_UPLO,
        ta: cb::CBLAS_TRANSPOSE,
        m: i32,
        n: i32,
        alpha: Self,
        a: *const Self,
        lda: i32,
        b: *mut Self,
        ldb: i32,
    );

    /// LAPACK `potrf` on a column-major `n×n` matrix, reading and writing only its
    /// `uplo` triangle. Returns LAPACK's `info`.
    ///
    /// # Safety
    /// `a` must point to a column-major matrix of `n` columns with leading dimension
    /// `lda ≥ max(1, n)`, valid for reads and writes.
    unsafe fn potrf(uplo: u8, n: i32, a: *mut Self, lda: i32) -> i32;
}

/// Which triangular level-3 routine: TRSM or TRMM.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum TriKind {
    /// `B ← op(A)⁻¹B`.
    Solve,
    /// `B ← op(A)B`.
    Mul,
}

macro_rules! impl_ffi {
    ($t:ty, $gemm:ident, $trsm:ident, $trmm:ident, $potrf:ident) => {
        impl Ffi for $t {
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

            unsafe fn triangular(
                kind: TriKind,
                layout: cb::CBLAS_LAYOUT,
                side: cb::CBLAS_SIDE,
                uplo: cb::CBLAS_UPLO,
                ta: cb::CBLAS_TRANSPOSE,
                m: i32,
                n: i32,
                alpha: Self,
                a: *const Self,
                lda: i32,
                b: *mut Self,
                ldb: i32,
            ) {
                let diag = cb::CblasNonUnit;
                match kind {
                    TriKind::Solve => {
                        cb::$trsm(layout, side, uplo, ta, diag, m, n, alpha, a, lda, b, ldb)
                    }
                    TriKind::Mul => {
                        cb::$trmm(layout, side, uplo, ta, diag, m, n, alpha, a, lda, b, ldb)
                    }
                }
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

impl_ffi!(f64, cblas_dgemm, cblas_dtrsm, cblas_dtrmm, dpotrf_);
impl_ffi!(f32, cblas_sgemm, cblas_strsm, cblas_strmm, spotrf_);
