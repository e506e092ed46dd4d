//! The CBLAS/LAPACK backend: OpenBLAS (`openblas-system`, `openblas-static`) or MKL
//! (`intel-mkl-static`), called through the raw entry points of [`super::ffi`].
//!
//! A view whose rows or whose columns are contiguous goes to BLAS as it is: a
//! transposed view becomes a transpose flag here. Only views BLAS cannot describe
//! (negative strides, steps in both dimensions) are first copied to a contiguous
//! buffer. Outputs are written in place when their layout allows it.

use super::lapack::{col_major, GETRF_RECURSIVE_FROM};
use super::{Accum, Side, TriKind, Uplo};
use crate::error::{Error, Result};
use crate::Real;
use cblas_sys as cb;
use ndarray::{Array2, ArrayView2, ArrayViewMut2, ShapeBuilder};
#[cfg(feature = "openblas")]
use std::ffi::CStr;
#[cfg(feature = "openblas")]
use std::os::raw::{c_char, c_int};

/// The scalar types this backend computes in, `f32` and `f64`: the raw entry points.
pub use super::ffi::Ffi as Scalar;

/// The backend's name in [`crate::runtime()`](fn@crate::runtime).
pub const NAME: &str = if cfg!(feature = "openblas") {
    "OpenBLAS"
} else {
    "MKL"
};

fn side_cblas(side: Side) -> cb::CBLAS_SIDE {
    match side {
        Side::Left => cb::CblasLeft,
        Side::Right => cb::CblasRight,
    }
}

fn uplo_cblas(uplo: Uplo) -> cb::CBLAS_UPLO {
    match uplo {
        Uplo::Lower => cb::CblasLower,
        Uplo::Upper => cb::CblasUpper,
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Layout {
    Row,
    Col,
}

impl Layout {
    fn cblas(self) -> cb::CBLAS_LAYOUT {
        match self {
            Layout::Row => cb::CblasRowMajor,
            Layout::Col => cb::CblasColMajor,
        }
    }
}

/// Leading dimension of a `rows×cols` matrix with `strides` in `layout`, if BLAS can read it so.
fn leading_dim(rows: usize, cols: usize, strides: &[isize], layout: Layout) -> Option<usize> {
    let (inner_len, outer_len, inner_stride, outer_stride) = match layout {
        Layout::Row => (cols, rows, strides[1], strides[0]),
        Layout::Col => (rows, cols, strides[0], strides[1]),
    };
    if inner_len > 1 && inner_stride != 1 {
        return None;
    }
    if outer_len <= 1 {
        return Some(inner_len.max(1));
    }
    if outer_stride < 0 || (outer_stride as usize) < inner_len.max(1) {
        return None;
    }
    Some(outer_stride as usize)
}

/// An operand as BLAS sees it in a given layout: pointer, leading dimension, and
/// whether the layout mismatch turned it into its transpose.
struct Operand<'a, T> {
    ptr: *const T,
    ld: usize,
    flipped: bool,
    _copy: Option<Array2<T>>,
    _view: std::marker::PhantomData<&'a T>,
}

impl<'a, T: Real> Operand<'a, T> {
    fn new(a: &ArrayView2<'a, T>, layout: Layout) -> Self {
        let (r, c) = a.dim();
        let s = a.strides();
        if let Some(ld) = leading_dim(r, c, s, layout) {
            return Operand {
                ptr: a.as_ptr(),
                ld,
                flipped: false,
                _copy: None,
                _view: Default::default(),
            };
        }
        if let Some(ld) = leading_dim(c, r, &[s[1], s[0]], layout) {
            return Operand {
                ptr: a.as_ptr(),
                ld,
                flipped: true,
                _copy: None,
                _view: Default::default(),
            };
        }
        let copy = match layout {
            Layout::Row => a.as_standard_layout().into_owned(),
            Layout::Col => {
                let mut m = Array2::zeros((r, c).f());
                m.assign(a);
                m
            }
        };
        let ld = match layout {
            Layout::Row => c.max(1),
            Layout::Col => r.max(1),
        };
        Operand {
            ptr: copy.as_ptr(),
            ld,
            flipped: false,
            _copy: Some(copy),
            _view: Default::default(),
        }
    }

    fn trans(&self) -> cb::CBLAS_TRANSPOSE {
        if self.flipped {
            cb::CblasTrans
        } else {
            cb::CblasNoTrans
        }
    }
}

/// The layout BLAS can write `c` in directly, if any.
fn out_layout<T>(c: &ArrayViewMut2<T>) -> Option<(Layout, usize)> {
    let (r, col) = c.dim();
    let s = c.strides();
    [Layout::Row, Layout::Col]
        .into_iter()
        .find_map(|layout| leading_dim(r, col, s, layout).map(|ld| (layout, ld)))
}

fn to_i32(d: usize) -> Result<i32> {
    i32::try_from(d).map_err(|_| Error::TooLarge { op: "BLAS", dim: d })
}

/// `C ← alpha·A·B` or `C ← C + alpha·A·B` for checked, non-empty shapes: one GEMM.
pub fn gemm<T: Real>(
    mut c: ArrayViewMut2<'_, T>,
    accum: Accum,
    a: ArrayView2<'_, T>,
    b: ArrayView2<'_, T>,
    alpha: T,
) -> Result<()> {
    let (m, k) = a.dim();
    let n = b.ncols();
    let Some((layout, ldc)) = out_layout(&c) else {
        // An output BLAS cannot address: compute in a contiguous buffer, then write back.
        let mut tmp = Array2::zeros((m, n));
        gemm(tmp.view_mut(), Accum::Replace, a, b, alpha)?;
        accum.assign(c, tmp.view());
        return Ok(());
    };
    let (mi, ni, ki) = (to_i32(m)?, to_i32(n)?, to_i32(k)?);
    // In column-major terms the same buffer holds Cᵀ = BᵀAᵀ; cblas handles that when
    // told the layout, so both layouts call one GEMM.
    let oa = Operand::new(&a, layout);
    let ob = Operand::new(&b, layout);
    let (lda, ldb, ldc) = (to_i32(oa.ld)?, to_i32(ob.ld)?, to_i32(ldc)?);
    // SAFETY: shapes were checked by the caller; each operand pointer/ld describes a
    // live view (or its private copy) in `layout`, and `c` is a unique mutable view with
    // `ldc`. With beta = 0 BLAS does not read C, so NaN there cannot leak into the result.
    unsafe {
        T::gemm(
            layout.cblas(),
            oa.trans(),
            ob.trans(),
            mi,
            ni,
            ki,
            alpha,
            oa.ptr,
            lda,
            ob.ptr,
            ldb,
            accum.beta(),
            c.as_mut_ptr(),
            ldc,
        );
    }
    Ok(())
}

/// TRSM or TRMM with the `uplo` triangle of the square `a` on `side` of the non-empty
/// `b`, shapes checked by the caller.
pub fn triangular<T: Real>(
    kind: TriKind,
    mut b: ArrayViewMut2<'_, T>,
    side: Side,
    a: ArrayView2<'_, T>,
    uplo: Uplo,
    alpha: T,
) -> Result<()> {
    let (m, n) = b.dim();
    let Some((layout, ldb)) = out_layout(&b) else {
        // `to_owned` would keep a negative stride; a fresh standard-layout buffer is addressable.
        let mut tmp = Array2::zeros((m, n));
        tmp.assign(&b);
        triangular(kind, tmp.view_mut(), side, a, uplo, alpha)?;
        b.assign(&tmp);
        return Ok(());
    };
    let oa = Operand::new(&a, layout);
    // Storage read in the other layout holds Aᵀ, whose triangle is the other one.
    let uplo = if oa.flipped { uplo.flip() } else { uplo };
    let (mi, ni) = (to_i32(m)?, to_i32(n)?);
    let (lda, ldb) = (to_i32(oa.ld)?, to_i32(ldb)?);
    // SAFETY: A is square and matches B's side (checked by the caller); its pointer/ld
    // describe the live view (or its private copy) in `layout`; `b` is a unique mutable
    // view with `ldb`.
    unsafe {
        T::triangular(
            kind,
            layout.cblas(),
            side_cblas(side),
            uplo_cblas(uplo),
            oa.trans(),
            mi,
            ni,
            alpha,
            oa.ptr,
            lda,
            b.as_mut_ptr(),
            ldb,
        );
    }
    Ok(())
}

/// potrf on the lower triangle of the square, non-empty `a`.
pub fn potrf_lower<T: Real>(op: &'static str, mut a: ArrayViewMut2<'_, T>) -> Result<()> {
    let n = a.nrows();
    let Some((layout, ld)) = out_layout(&a) else {
        let mut tmp = Array2::zeros((n, n));
        tmp.assign(&a);
        potrf_lower(op, tmp.view_mut())?;
        a.assign(&tmp);
        return Ok(());
    };
    // A row-major buffer read column-major is Aᵀ, whose upper triangle is A's lower
    // one: potrf 'U' then leaves Uᵀ = L there, with no transposition.
    let uplo = match layout {
        Layout::Col => Uplo::Lower,
        Layout::Row => Uplo::Upper,
    };
    let (ni, ldi) = (to_i32(n)?, to_i32(ld)?);
    // SAFETY: `a` is a unique mutable n×n view that `layout`/`ld` describe.
    let info = unsafe { T::potrf(uplo as u8, ni, a.as_mut_ptr(), ldi) };
    match info {
        0 => Ok(()),
        k if k > 0 => Err(Error::NotPositiveDefinite {
            op,
            index: k as usize - 1,
        }),
        k => Err(Error::Lapack { op, info: k }),
    }
}

/// getrf (or getrf2 from [`GETRF_RECURSIVE_FROM`] on) on the square, non-empty,
/// column-major `a`; the first exactly zero pivot, if any.
pub fn getrf<T: Real>(
    op: &'static str,
    mut a: ArrayViewMut2<'_, T>,
    ipiv: &mut [i32],
) -> Result<Option<usize>> {
    let n = a.nrows();
    let lda = col_major(op, "A", &a.view())?;
    let (ni, ldi) = (to_i32(n)?, to_i32(lda)?);
    // SAFETY: `a` is a unique column-major n×n view with leading dimension `lda`, and
    // `ipiv` holds at least n entries (checked by the caller).
    let info = unsafe {
        if n < GETRF_RECURSIVE_FROM {
            T::getrf(ni, ni, a.as_mut_ptr(), ldi, ipiv.as_mut_ptr())
        } else {
            T::getrf2(ni, ni, a.as_mut_ptr(), ldi, ipiv.as_mut_ptr())
        }
    };
    match info {
        0 => Ok(None),
        k if k > 0 => Ok(Some(k as usize - 1)),
        k => Err(Error::Lapack { op, info: k }),
    }
}

fn lapack_info(op: &'static str, info: i32) -> Result<()> {
    if info == 0 {
        Ok(())
    } else {
        Err(Error::Lapack { op, info })
    }
}

/// getrs on checked, non-empty, column-major operands.
pub fn getrs<T: Real>(
    op: &'static str,
    lu: ArrayView2<'_, T>,
    ipiv: &[i32],
    transposed: bool,
    mut b: ArrayViewMut2<'_, T>,
) -> Result<()> {
    let (n, k) = b.dim();
    let lda = col_major(op, "LU", &lu)?;
    let ldb = col_major(op, "B", &b.view())?;
    let t = if transposed { b'T' } else { b'N' };
    let (ni, ki, ldai, ldbi) = (to_i32(n)?, to_i32(k)?, to_i32(lda)?, to_i32(ldb)?);
    // SAFETY: `lu` is a column-major n×n view, `ipiv` n pivots, `b` a unique
    // column-major n×k view with leading dimension `ldb` (checked by the caller).
    let info = unsafe {
        T::getrs(
            t,
            ni,
            ki,
            lu.as_ptr(),
            ldai,
            ipiv.as_ptr(),
            b.as_mut_ptr(),
            ldbi,
        )
    };
    lapack_info(op, info)
}

/// LAPACK's `(work, iwork)` sizes for syevd of order `n > 0` with vectors.
pub fn syevd_workspace<T: Real>(n: usize) -> Result<(usize, usize)> {
    let ni = to_i32(n)?;
    let (mut work, mut iwork) = ([T::zero()], [0i32]);
    let mut a = [T::zero()];
    let mut w = [T::zero()];
    // SAFETY: a workspace query (lwork = liwork = -1) reads no matrix and writes only
    // work[0] and iwork[0]; the one-element buffers stand in for the matrix pointers.
    let info = unsafe {
        T::syevd(
            b'V',
            b'L',
            ni,
            a.as_mut_ptr(),
            ni,
            w.as_mut_ptr(),
            work.as_mut_ptr(),
            -1,
            iwork.as_mut_ptr(),
            -1,
        )
    };
    lapack_info("syevd", info)?;
    Ok((work[0].to64().ceil() as usize, iwork[0].max(1) as usize))
}

/// syevd on a checked, non-empty, column-major `a`.
pub fn syevd<T: Real>(
    op: &'static str,
    mut a: ArrayViewMut2<'_, T>,
    w: &mut [T],
    work: &mut [T],
    iwork: &mut [i32],
) -> Result<()> {
    let n = a.nrows();
    let lda = col_major(op, "A", &a.view())?;
    let (ni, ldai) = (to_i32(n)?, to_i32(lda)?);
    let (lwi, liwi) = (to_i32(work.len())?, to_i32(iwork.len())?);
    // SAFETY: `a` is a unique column-major n×n view; `w`, `work` and `iwork` hold at
    // least the sizes LAPACK asked for (checked by the caller).
    let info = unsafe {
        T::syevd(
            b'V',
            b'L',
            ni,
            a.as_mut_ptr(),
            ldai,
            w.as_mut_ptr(),
            work.as_mut_ptr(),
            lwi,
            iwork.as_mut_ptr(),
            liwi,
        )
    };
    lapack_info(op, info)
}

/// LAPACK's `work` size for gesdd of an `m×n` matrix, `min(m, n) > 0`, thin factors.
pub fn gesdd_workspace<T: Real>(m: usize, n: usize) -> Result<usize> {
    let k = m.min(n);
    let (mi, ni) = (to_i32(m)?, to_i32(n)?);
    let mut work = [T::zero()];
    let mut one = [T::zero()];
    let mut s = [T::zero()];
    let mut u = [T::zero()];
    let mut vt = [T::zero()];
    let mut iwork = [0i32];
    let (ldu, ldvt) = (mi.max(1), to_i32(k)?.max(1));
    // SAFETY: a workspace query (lwork = -1) reads no matrix and writes only work[0].
    let info = unsafe {
        T::gesdd(
            b'S',
            mi,
            ni,
            one.as_mut_ptr(),
            mi.max(1),
            s.as_mut_ptr(),
            u.as_mut_ptr(),
            ldu,
            vt.as_mut_ptr(),
            ldvt,
            work.as_mut_ptr(),
            -1,
            iwork.as_mut_ptr(),
        )
    };
    lapack_info("gesdd", info)?;
    Ok(work[0].to64().ceil() as usize)
}

/// gesdd on checked, non-empty, column-major operands.
pub fn gesdd<T: Real>(
    op: &'static str,
    mut a: ArrayViewMut2<'_, T>,
    s: &mut [T],
    mut u: ArrayViewMut2<'_, T>,
    mut vt: ArrayViewMut2<'_, T>,
    work: &mut [T],
    iwork: &mut [i32],
) -> Result<()> {
    let (m, n) = a.dim();
    let ld = [
        col_major(op, "A", &a.view())?,
        col_major(op, "U", &u.view())?,
        col_major(op, "Vᵀ", &vt.view())?,
    ];
    let (mi, ni) = (to_i32(m)?, to_i32(n)?);
    let (ldai, ldui, ldvti, lwi) = (
        to_i32(ld[0])?,
        to_i32(ld[1])?,
        to_i32(ld[2])?,
        to_i32(work.len())?,
    );
    // SAFETY: every matrix is a unique column-major view of the checked shape with its
    // leading dimension; `s`, `work` and `iwork` hold at least what LAPACK needs.
    let info = unsafe {
        T::gesdd(
            b'S',
            mi,
            ni,
            a.as_mut_ptr(),
            ldai,
            s.as_mut_ptr(),
            u.as_mut_ptr(),
            ldui,
            vt.as_mut_ptr(),
            ldvti,
            work.as_mut_ptr(),
            lwi,
            iwork.as_mut_ptr(),
        )
    };
    lapack_info(op, info)
}

#[cfg(feature = "openblas")]
extern "C" {
    fn openblas_get_config() -> *const c_char;
    fn openblas_get_corename() -> *const c_char;
    fn openblas_set_num_threads(n: c_int);
    fn openblas_get_num_threads() -> c_int;
}

/// OpenBLAS's build configuration string (version and options).
#[cfg(feature = "openblas")]
pub fn config() -> String {
    // SAFETY: OpenBLAS returns a pointer to a static NUL-terminated string.
    unsafe { CStr::from_ptr(openblas_get_config()) }
        .to_string_lossy()
        .trim()
        .to_string()
}

/// The kernel OpenBLAS chose for this CPU (or was told through `OPENBLAS_CORETYPE`).
#[cfg(feature = "openblas")]
pub fn kernel() -> String {
    // SAFETY: as for `config`.
    unsafe { CStr::from_ptr(openblas_get_corename()) }
        .to_string_lossy()
        .trim()
        .to_string()
}

/// Threads OpenBLAS runs a level-3 call on.
#[cfg(feature = "openblas")]
pub fn threads() -> usize {
    // SAFETY: plain getter of OpenBLAS's thread pool size.
    usize::try_from(unsafe { openblas_get_num_threads() }).unwrap_or(1)
}

/// Sets OpenBLAS's thread count (at least 1).
#[cfg(feature = "openblas")]
pub fn set_threads(n: usize) {
    let n = c_int::try_from(n.max(1)).unwrap_or(c_int::MAX);
    // SAFETY: plain setter of OpenBLAS's thread pool size.
    unsafe { openblas_set_num_threads(n) }
}

/// MKL through CBLAS: no kernel query.
#[cfg(not(feature = "openblas"))]
pub fn config() -> String {
    "Intel MKL (sequential)".to_string()
}

/// MKL dispatches by itself at run time.
#[cfg(not(feature = "openblas"))]
pub fn kernel() -> String {
    "chosen by MKL".to_string()
}

/// The sequential MKL runs on the calling thread.
#[cfg(not(feature = "openblas"))]
pub fn threads() -> usize {
    1
}

/// The sequential MKL has no thread pool to size.
#[cfg(not(feature = "openblas"))]
pub fn set_threads(_n: usize) {}
