//! Safe level-3 BLAS calls on ndarray views.
//!
//! A view whose rows or whose columns are contiguous goes to BLAS as it is: a
//! transposed view becomes a transpose flag, never a copy. Only views BLAS cannot
//! describe (negative strides, steps in both dimensions) are first copied to a
//! contiguous buffer. Outputs are written in place when their layout allows it.

use crate::error::{Error, Result, Shape};
use crate::Real;
use cblas_sys as cb;
use ndarray::{Array2, ArrayView2, ArrayViewMut2, ShapeBuilder};

/// Whether an operand enters a product as it is or transposed: `op(X) = X` or `Xᵀ`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, Default)]
pub enum Trans {
    /// `op(X) = X`.
    #[default]
    No,
    /// `op(X) = Xᵀ`.
    Yes,
}

impl Trans {
    /// The opposite flag: `op(X)ᵀ` is `X` with the flag flipped.
    #[inline]
    pub fn flip(self) -> Trans {
        match self {
            Trans::No => Trans::Yes,
            Trans::Yes => Trans::No,
        }
    }
    /// Shape of `op(X)` for `X` of shape `(r, c)`.
    #[inline]
    pub fn apply(self, (r, c): (usize, usize)) -> (usize, usize) {
        match self {
            Trans::No => (r, c),
            Trans::Yes => (c, r),
        }
    }
    fn cblas(self) -> cb::CBLAS_TRANSPOSE {
        match self {
            Trans::No => cb::CblasNoTrans,
            Trans::Yes => cb::CblasTrans,
        }
    }
}

/// Replace or accumulate into an output buffer (BLAS beta = 0 or beta = 1).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum Accum {
    /// `out = result`.
    Replace,
    /// `out += result`.
    Add,
}

impl Accum {
    pub(crate) fn beta<T: Real>(self) -> T {
        match self {
            Accum::Replace => T::zero(),
            Accum::Add => T::one(),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Layout {
    Row,
    Col,
}

impl Layout {
    pub(crate) fn cblas(self) -> cb::CBLAS_LAYOUT {
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
pub(crate) struct Operand<'a, T> {
    ptr: *const T,
    ld: usize,
    flipped: bool,
    _copy: Option<Array2<T>>,
    _view: std::marker::PhantomData<&'a T>,
}

impl<'a, T: Real> Operand<'a, T> {
    pub(crate) fn new(a: &ArrayView2<'a, T>, layout: Layout) -> Self {
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

    pub(crate) fn trans(&self, t: Trans) -> Trans {
        if self.flipped {
            t.flip()
        } else {
            t
        }
    }
    pub(crate) fn ptr(&self) -> *const T {
        self.ptr
    }
    pub(crate) fn ld(&self) -> usize {
        self.ld
    }
}

/// The layout BLAS can write `c` in directly, if any.
pub(crate) fn out_layout<T>(c: &ArrayViewMut2<T>) -> Option<(Layout, usize)> {
    let (r, col) = c.dim();
    let s = c.strides();
    for layout in [Layout::Row, Layout::Col] {
        if let Some(ld) = leading_dim(r, col, s, layout) {
            return Some((layout, ld));
        }
    }
    None
}

pub(crate) fn to_i32(op: &'static str, d: usize) -> Result<i32> {
    i32::try_from(d).map_err(|_| Error::TooLarge { op, dim: d })
}

/// `C ← alpha·op(A)·op(B) + beta·C`, one GEMM call. `op_name` names the caller in errors.
#[allow(clippy::too_many_arguments)]
pub fn gemm<T: Real>(
    op_name: &'static str,
    alpha: T,
    a: ArrayView2<'_, T>,
    ta: Trans,
    b: ArrayView2<'_, T>,
    tb: Trans,
    beta: T,
    mut c: ArrayViewMut2<'_, T>,
) -> Result<()> {
    let (m, k) = ta.apply(a.dim());
    let (kb, n) = tb.apply(b.dim());
    if k != kb {
        return Err(Error::ShapeMismatch {
            op: op_name,
            what: "inner dimensions differ",
            lhs_name: "op(A)",
            lhs: Shape(m, k),
            rhs_name: "op(B)",
            rhs: Shape(kb, n),
        });
    }
    if c.dim() != (m, n) {
        return Err(Error::WrongShape {
            op: op_name,
            name: "output",
            of: "op(A)·op(B)",
            expected: Shape(m, n),
            got: Shape(c.nrows(), c.ncols()),
        });
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        if beta == T::zero() {
            c.fill(T::zero());
        } else {
            c.mapv_inplace(|x| x * beta);
        }
        return Ok(());
    }
    let Some((layout, ldc)) = out_layout(&c) else {
        // An output BLAS cannot address: compute in a contiguous buffer, then write back.
        let mut tmp = if beta == T::zero() {
            Array2::zeros((m, n))
        } else {
            c.as_standard_layout().into_owned()
        };
        gemm(op_name, alpha, a, ta, b, tb, beta, tmp.view_mut())?;
        c.assign(&tmp);
        return Ok(());
    };
    let (mi, ni, ki) = (
        to_i32(op_name, m)?,
        to_i32(op_name, n)?,
        to_i32(op_name, k)?,
    );
    // In column-major terms the same buffer holds Cᵀ = op(B)ᵀ op(A)ᵀ; cblas handles that
    // when told the layout, so both layouts call one GEMM.
    let oa = Operand::new(&a, layout);
    let ob = Operand::new(&b, layout);
    let (lda, ldb, ldc) = (
        to_i32(op_name, oa.ld())?,
        to_i32(op_name, ob.ld())?,
        to_i32(op_name, ldc)?,
    );
    // SAFETY: shapes were checked above; each operand pointer/ld describes a live view
    // (or its private copy) in `layout`, and `c` is a unique mutable view with `ldc`.
    unsafe {
        T::gemm(
            layout.cblas(),
            oa.trans(ta).cblas(),
            ob.trans(tb).cblas(),
            mi,
            ni,
            ki,
            alpha,
            oa.ptr(),
            lda,
            ob.ptr(),
            ldb,
            beta,
            c.as_mut_ptr(),
            ldc,
        );
    }
    Ok(())
}

/// A new `op(A)·op(B)`, written by GEMM into fresh memory with beta = 0 (no zero fill).
pub fn matmul<T: Real>(
    op_name: &'static str,
    a: ArrayView2<'_, T>,
    ta: Trans,
    b: ArrayView2<'_, T>,
    tb: Trans,
) -> Result<Array2<T>> {
    let (m, k) = ta.apply(a.dim());
    let (kb, n) = tb.apply(b.dim());
    if k == 0 || k != kb {
        let mut c = Array2::zeros((m, n));
        gemm(op_name, T::one(), a, ta, b, tb, T::zero(), c.view_mut())?;
        return Ok(c);
    }
    let mut c = Array2::<T>::uninit((m, n));
    // SAFETY: GEMM with beta = 0 writes every element of an m×n output and reads none,
    // so treating the uninitialised buffer as `T` for the call is sound (f32/f64 have no
    // invalid bit patterns), and it is fully initialised afterwards.
    unsafe {
        let view = ArrayViewMut2::from_shape_ptr((m, n), c.as_mut_ptr() as *mut T);
        gemm(op_name, T::one(), a, ta, b, tb, T::zero(), view)?;
        Ok(c.assume_init())
    }
}

/// Which side a triangular matrix multiplies from: `op(A)·B` or `B·op(A)`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum Side {
    /// `op(A)·B`.
    Left,
    /// `B·op(A)`.
    Right,
}

impl Side {
    fn cblas(self) -> cb::CBLAS_SIDE {
        match self {
            Side::Left => cb::CblasLeft,
            Side::Right => cb::CblasRight,
        }
    }
}

/// Which triangle of a matrix holds its entries (the other one is never read).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum Uplo {
    /// The lower triangle, with the diagonal.
    Lower,
    /// The upper triangle, with the diagonal.
    Upper,
}

impl Uplo {
    /// The other triangle: the lower triangle of `X` is the upper triangle of `Xᵀ`.
    #[inline]
    pub fn flip(self) -> Uplo {
        match self {
            Uplo::Lower => Uplo::Upper,
            Uplo::Upper => Uplo::Lower,
        }
    }
    fn cblas(self) -> cb::CBLAS_UPLO {
        match self {
            Uplo::Lower => cb::CblasLower,
            Uplo::Upper => cb::CblasUpper,
        }
    }
}

/// Whether a triangular matrix has an implicit unit diagonal.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, Default)]
pub enum Diag {
    /// The stored diagonal is used.
    #[default]
    NonUnit,
    /// The diagonal is taken to be all ones and never read.
    Unit,
}

impl Diag {
    fn cblas(self) -> cb::CBLAS_DIAG {
        match self {
            Diag::NonUnit => cb::CblasNonUnit,
            Diag::Unit => cb::CblasUnit,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum TriOp {
    Solve,
    Mul,
}

/// `B ← alpha·op(A)⁻¹·B` (`Side::Left`) or `B ← alpha·B·op(A)⁻¹` (`Side::Right`), one
/// TRSM call, for `A` triangular in its `uplo` triangle. `op_name` names the caller in errors.
///
/// A zero on the diagonal of `A` is not detected here: the result is then infinite.
#[allow(clippy::too_many_arguments)]
pub fn trsm<T: Real>(
    op_name: &'static str,
    side: Side,
    uplo: Uplo,
    ta: Trans,
    diag: Diag,
    alpha: T,
    a: ArrayView2<'_, T>,
    b: ArrayViewMut2<'_, T>,
) -> Result<()> {
    triangular_level3(TriOp::Solve, op_name, side, uplo, ta, diag, alpha, a, b)
}

/// `B ← alpha·op(A)·B` (`Side::Left`) or `B ← alpha·B·op(A)` (`Side::Right`), one TRMM
/// call, for `A` triangular in its `uplo` triangle. `op_name` names the caller in errors.
#[allow(clippy::too_many_arguments)]
pub fn trmm<T: Real>(
    op_name: &'static str,
    side: Side,
    uplo: Uplo,
    ta: Trans,
    diag: Diag,
    alpha: T,
    a: ArrayView2<'_, T>,
    b: ArrayViewMut2<'_, T>,
) -> Result<()> {
    triangular_level3(TriOp::Mul, op_name, side, uplo, ta, diag, alpha, a, b)
}

#[allow(clippy::too_many_arguments)]
fn triangular_level3<T: Real>(
    kind: TriOp,
    op_name: &'static str,
    side: Side,
    uplo: Uplo,
    ta: Trans,
    diag: Diag,
    alpha: T,
    a: ArrayView2<'_, T>,
    mut b: ArrayViewMut2<'_, T>,
) -> Result<()> {
    let (ar, ac) = a.dim();
    if ar != ac {
        return Err(Error::NotSquare {
            op: op_name,
            name: "triangular A",
            got: Shape(ar, ac),
        });
    }
    let (m, n) = b.dim();
    let (what, fits) = match side {
        Side::Left => (
            "triangular A must have as many columns as B has rows",
            ar == m,
        ),
        Side::Right => (
            "triangular A must have as many rows as B has columns",
            ar == n,
        ),
    };
    if !fits {
        return Err(Error::ShapeMismatch {
            op: op_name,
            what,
            lhs_name: "A",
            lhs: Shape(ar, ac),
            rhs_name: "B",
            rhs: Shape(m, n),
        });
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    let Some((layout, ldb)) = out_layout(&b) else {
        // `to_owned` would keep a negative stride; a fresh standard-layout buffer is addressable.
        let mut tmp = Array2::zeros((m, n));
        tmp.assign(&b);
        triangular_level3(
            kind,
            op_name,
            side,
            uplo,
            ta,
            diag,
            alpha,
            a,
            tmp.view_mut(),
        )?;
        b.assign(&tmp);
        return Ok(());
    };
    let oa = Operand::new(&a, layout);
    // Storage read in the other layout holds Aᵀ, whose triangle is the other one.
    let uplo = if oa.flipped { uplo.flip() } else { uplo };
    let (mi, ni) = (to_i32(op_name, m)?, to_i32(op_name, n)?);
    let (lda, ldb) = (to_i32(op_name, oa.ld())?, to_i32(op_name, ldb)?);
    let routine = match kind {
        TriOp::Solve => T::trsm,
        TriOp::Mul => T::trmm,
    };
    // SAFETY: A is square and matches B's side (checked above); its pointer/ld describe the
    // live view (or its private copy) in `layout`; `b` is a unique mutable view with `ldb`.
    unsafe {
        routine(
            layout.cblas(),
            side.cblas(),
            uplo.cblas(),
            oa.trans(ta).cblas(),
            diag.cblas(),
            mi,
            ni,
            alpha,
            oa.ptr(),
            lda,
            b.as_mut_ptr(),
            ldb,
        );
    }
    Ok(())
}

/// `C ← alpha·op(A)·op(A)ᵀ + beta·C` on the `uplo` triangle of `C` only, one SYRK call;
/// the other triangle is neither read nor written. `op_name` names the caller in errors.
#[allow(clippy::too_many_arguments)]
pub fn syrk<T: Real>(
    op_name: &'static str,
    uplo: Uplo,
    alpha: T,
    a: ArrayView2<'_, T>,
    ta: Trans,
    beta: T,
    mut c: ArrayViewMut2<'_, T>,
) -> Result<()> {
    let (n, k) = ta.apply(a.dim());
    if c.dim() != (n, n) {
        return Err(Error::WrongShape {
            op: op_name,
            name: "output",
            of: "op(A)·op(A)ᵀ",
            expected: Shape(n, n),
            got: Shape(c.nrows(), c.ncols()),
        });
    }
    if n == 0 {
        return Ok(());
    }
    let Some((layout, ldc)) = out_layout(&c) else {
        let mut tmp = Array2::zeros((n, n));
        tmp.assign(&c);
        syrk(op_name, uplo, alpha, a, ta, beta, tmp.view_mut())?;
        c.assign(&tmp);
        return Ok(());
    };
    if k == 0 {
        for ((i, j), x) in c.indexed_iter_mut() {
            if (uplo == Uplo::Lower && j <= i) || (uplo == Uplo::Upper && j >= i) {
                *x = if beta == T::zero() {
                    T::zero()
                } else {
                    *x * beta
                };
            }
        }
        return Ok(());
    }
    let oa = Operand::new(&a, layout);
    let (ni, ki) = (to_i32(op_name, n)?, to_i32(op_name, k)?);
    let (lda, ldc) = (to_i32(op_name, oa.ld())?, to_i32(op_name, ldc)?);
    // SAFETY: C is n×n and op(A) is n×k (checked above); A's pointer/ld describe the live
    // view (or its private copy) in `layout`; `c` is a unique mutable view with `ldc`.
    unsafe {
        T::syrk(
            layout.cblas(),
            uplo.cblas(),
            oa.trans(ta).cblas(),
            ni,
            ki,
            alpha,
            oa.ptr(),
            lda,
            beta,
            c.as_mut_ptr(),
            ldc,
        );
    }
    Ok(())
}

/// Whether BLAS can address `a` as it is (contiguous rows or contiguous columns).
pub(crate) fn addressable<T>(a: &ArrayView2<'_, T>) -> bool {
    let (r, c) = a.dim();
    let s = a.strides();
    leading_dim(r, c, s, Layout::Row).is_some() || leading_dim(r, c, s, Layout::Col).is_some()
}
