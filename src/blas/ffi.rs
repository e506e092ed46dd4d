//! The raw CBLAS and LAPACK entry points, one sealed trait implemented for `f32` and
//! `f64`. Nothing outside [`crate::blas`] can name it, so every `unsafe` call in the
//! crate is made from this layer, after the safe wrappers have checked shapes and
//! strides.

use super::TriKind;
use cblas_sys as cb;

/// The typed BLAS/LAPACK routines matgrad calls. Sealed: its module is private, so
/// only `f32` and `f64` implement it. A faer real field too, for the triangular-output
/// product BLAS lacks (`super::gemmt`).
pub trait Ffi: ::faer::traits::RealField {
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

    /// LAPACK `getrf`: `A = PLU` in place on a column-major `m×n` matrix, pivots
    /// (1-based) into `ipiv` (`min(m, n)` entries). Returns `info`.
    ///
    /// # Safety
    /// `a` column-major with `lda ≥ max(1, m)`, valid for `n` columns; `ipiv` valid
    /// for `min(m, n)` writes.
    unsafe fn getrf(m: i32, n: i32, a: *mut Self, lda: i32, ipiv: *mut i32) -> i32;

    /// LAPACK `getrf2`, the recursive LU of reference LAPACK (3.6 on): the same
    /// partial-pivoting factorisation, pivots and `info` as [`Ffi::getrf`], by level-3
    /// BLAS calls on halves.
    ///
    /// # Safety
    /// As for [`Ffi::getrf`].
    unsafe fn getrf2(m: i32, n: i32, a: *mut Self, lda: i32, ipiv: *mut i32) -> i32;

    /// LAPACK `getrs`: solves `op(A)X = B` with the factors of `getrf`, `trans` being
    /// `b'N'` or `b'T'`, overwriting the column-major `n×nrhs` matrix `b`. Returns `info`.
    ///
    /// # Safety
    /// As for [`Ffi::getrf`], with `b` column-major, `ldb ≥ max(1, n)`.
    #[allow(clippy::too_many_arguments)]
    unsafe fn getrs(
        trans: u8,
        n: i32,
        nrhs: i32,
        a: *const Self,
        lda: i32,
        ipiv: *const i32,
        b: *mut Self,
        ldb: i32,
    ) -> i32;

    /// LAPACK `syevd`: eigenvalues (ascending, into `w`) and, for `jobz = b'V'`,
    /// eigenvectors (overwriting the column-major `a`, reading its `uplo` triangle).
    /// A workspace query with `lwork = liwork = -1` writes the optimal sizes into
    /// `work[0]` and `iwork[0]`. Returns `info`.
    ///
    /// # Safety
    /// `a` column-major `n×n` with `lda ≥ max(1, n)`; `w` valid for `n` writes;
    /// `work`/`iwork` valid for `lwork`/`liwork` (at least 1) elements.
    #[allow(clippy::too_many_arguments)]
    unsafe fn syevd(
        jobz: u8,
        uplo: u8,
        n: i32,
        a: *mut Self,
        lda: i32,
        w: *mut Self,
        work: *mut Self,
        lwork: i32,
        iwork: *mut i32,
        liwork: i32,
    ) -> i32;

    /// LAPACK `gesdd`: the SVD `A = U diag(s) Vᵀ` of a column-major `m×n` matrix, which
    /// it destroys; `jobz = b'S'` gives the thin factors `U` (`m×k`) and `Vᵀ` (`k×n`),
    /// `k = min(m, n)`. A workspace query with `lwork = -1` writes the optimal size into
    /// `work[0]`. `iwork` must hold `8k` entries. Returns `info`.
    ///
    /// # Safety
    /// All pointers column-major with the given leading dimensions and valid for the
    /// sizes above.
    #[allow(clippy::too_many_arguments)]
    unsafe fn gesdd(
        jobz: u8,
        m: i32,
        n: i32,
        a: *mut Self,
        lda: i32,
        s: *mut Self,
        u: *mut Self,
        ldu: i32,
        vt: *mut Self,
        ldvt: i32,
        work: *mut Self,
        lwork: i32,
        iwork: *mut i32,
    ) -> i32;
}

macro_rules! impl_ffi {
    ($t:ty, $gemm:ident, $trsm:ident, $trmm:ident, $potrf:ident, $getrf:ident, $getrf2:ident,
     $getrs:ident, $syevd:ident, $gesdd:ident) => {
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

            unsafe fn getrf(m: i32, n: i32, a: *mut Self, lda: i32, ipiv: *mut i32) -> i32 {
                let mut info = 0;
                lapack_sys::$getrf(&m, &n, a, &lda, ipiv, &mut info);
                info
            }

            unsafe fn getrf2(m: i32, n: i32, a: *mut Self, lda: i32, ipiv: *mut i32) -> i32 {
                let mut info = 0;
                lapack_sys::$getrf2(&m, &n, a, &lda, ipiv, &mut info);
                info
            }

            unsafe fn getrs(
                trans: u8,
                n: i32,
                nrhs: i32,
                a: *const Self,
                lda: i32,
                ipiv: *const i32,
                b: *mut Self,
                ldb: i32,
            ) -> i32 {
                let trans = trans as std::ffi::c_char;
                let mut info = 0;
                lapack_sys::$getrs(&trans, &n, &nrhs, a, &lda, ipiv, b, &ldb, &mut info);
                info
            }

            unsafe fn syevd(
                jobz: u8,
                uplo: u8,
                n: i32,
                a: *mut Self,
                lda: i32,
                w: *mut Self,
                work: *mut Self,
                lwork: i32,
                iwork: *mut i32,
                liwork: i32,
            ) -> i32 {
                let (jobz, uplo) = (jobz as std::ffi::c_char, uplo as std::ffi::c_char);
                let mut info = 0;
                lapack_sys::$syevd(
                    &jobz, &uplo, &n, a, &lda, w, work, &lwork, iwork, &liwork, &mut info,
                );
                info
            }

            unsafe fn gesdd(
                jobz: u8,
                m: i32,
                n: i32,
                a: *mut Self,
                lda: i32,
                s: *mut Self,
                u: *mut Self,
                ldu: i32,
                vt: *mut Self,
                ldvt: i32,
                work: *mut Self,
                lwork: i32,
                iwork: *mut i32,
            ) -> i32 {
                let jobz = jobz as std::ffi::c_char;
                let mut info = 0;
                lapack_sys::$gesdd(
                    &jobz, &m, &n, a, &lda, s, u, &ldu, vt, &ldvt, work, &lwork, iwork, &mut info,
                );
                info
            }
        }
    };
}

impl_ffi!(
    f64,
    cblas_dgemm,
    cblas_dtrsm,
    cblas_dtrmm,
    dpotrf_,
    dgetrf_,
    dgetrf2_,
    dgetrs_,
    dsyevd_,
    dgesdd_
);
impl_ffi!(
    f32,
    cblas_sgemm,
    cblas_strsm,
    cblas_strmm,
    spotrf_,
    sgetrf_,
    sgetrf2_,
    sgetrs_,
    ssyevd_,
    sgesdd_
);
