//! Safe level-3 BLAS and LAPACK calls on ndarray views, in faer's shape: the
//! destination comes first, accumulation is a mode ([`Accum`]), and a transpose is a
//! view (`a.t()`), never a flag or a copy.
//!
//! A view whose rows or whose columns are contiguous goes to BLAS as it is: a
//! transposed view becomes a transpose flag inside this layer. Only views BLAS cannot
//! describe (negative strides, steps in both dimensions) are first copied to a
//! contiguous buffer. Outputs are written in place when their layout allows it.
//!
//! All `unsafe` code of the crate is in this module: its private `ffi` trait and the
//! transposing copy kernels of [`copy`].

pub mod copy;
pub(crate) mod ffi;
pub mod lapack;

use crate::error::{Error, Result, Shape};
use crate::Real;
use cblas_sys as cb;
pub use copy::copy;
use ffi::TriKind;
use ndarray::{Array2, ArrayView2, ArrayViewMut2, ShapeBuilder};

/// Whether an operand enters a product as it is or transposed: `op(X) = X` or `Xᵀ`.
/// A configuration of primitives such as [`crate::ops::matmul::MatMul`]; the BLAS
/// calls themselves take transposed views.
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
    pub fn dims(self, (r, c): (usize, usize)) -> (usize, usize) {
        match self {
            Trans::No => (r, c),
            Trans::Yes => (c, r),
        }
    }
    /// `op(X)` as a view, without a copy.
    #[inline]
    pub fn view<'a, T>(self, x: ArrayView2<'a, T>) -> ArrayView2<'a, T> {
        match self {
            Trans::No => x,
            Trans::Yes => x.reversed_axes(),
        }
    }
    /// `op(X)` as a mutable view, without a copy.
    #[inline]
    pub fn view_mut<'a, T>(self, x: ArrayViewMut2<'a, T>) -> ArrayViewMut2<'a, T> {
        match self {
            Trans::No => x,
            Trans::Yes => x.reversed_axes(),
        }
    }
}

/// How a result reaches its destination: the destination's previous contents are
/// never read (`Replace`, BLAS beta = 0, no zero fill needed), or the result is added
/// to them (`Add`, beta = 1).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum Accum {
    /// `dst = result`; what `dst` held is not read (NaN there is harmless).
    Replace,
    /// `dst += result`.
    Add,
}

impl Accum {
    /// BLAS's beta for this mode.
    #[inline]
    pub fn beta<T: Real>(self) -> T {
        match self {
            Accum::Replace => T::zero(),
            Accum::Add => T::one(),
        }
    }
    /// `*dst = v` or `*dst += v`.
    #[inline(always)]
    pub fn store<T: Real>(self, dst: &mut T, v: T) {
        match self {
            Accum::Replace => *dst = v,
            Accum::Add => *dst += v,
        }
    }
    /// `dst = src` or `dst += src`, entrywise.
    pub fn assign<T: Real>(self, mut dst: ArrayViewMut2<'_, T>, src: ArrayView2<'_, T>) {
        match self {
            Accum::Replace => dst.assign(&src),
            Accum::Add => dst += &src,
        }
    }
}

/// Which side a triangular matrix multiplies from: `A·B` or `B·A`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum Side {
    /// `A·B`.
    Left,
    /// `B·A`.
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

/// Which triangle of a matrix holds its entries (the other one is never read). The
/// discriminant is LAPACK's character for it.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
#[repr(u8)]
pub enum Uplo {
    /// The lower triangle, with the diagonal.
    Lower = b'L',
    /// The upper triangle, with the diagonal.
    Upper = b'U',
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
    /// Whether entry `(i, j)` lies in this triangle (the diagonal belongs to both).
    #[inline]
    pub fn contains(self, i: usize, j: usize) -> bool {
        match self {
            Uplo::Lower => j <= i,
            Uplo::Upper => j >= i,
        }
    }
    fn cblas(self) -> cb::CBLAS_UPLO {
        match self {
            Uplo::Lower => cb::CblasLower,
            Uplo::Upper => cb::CblasUpper,
        }
    }
}

/// A square matrix of which only one triangle is read: the operand of [`trsm`] and
/// [`trmm`]. `Tri::lower(l).t()` is `Lᵀ`, an upper-triangular view of the same memory.
#[derive(Clone, Copy, Debug)]
pub struct Tri<'a, T> {
    a: ArrayView2<'a, T>,
    uplo: Uplo,
}

impl<'a, T> Tri<'a, T> {
    /// The lower triangle of `a`.
    pub fn lower(a: ArrayView2<'a, T>) -> Self {
        Tri {
            a,
            uplo: Uplo::Lower,
        }
    }
    /// The upper triangle of `a`.
    pub fn upper(a: ArrayView2<'a, T>) -> Self {
        Tri {
            a,
            uplo: Uplo::Upper,
        }
    }
    /// The `uplo` triangle of `a`.
    pub fn new(a: ArrayView2<'a, T>, uplo: Uplo) -> Self {
        Tri { a, uplo }
    }
    /// The transpose, as a view: the lower triangle of `A` is the upper one of `Aᵀ`.
    pub fn t(self) -> Self {
        Tri {
            a: self.a.reversed_axes(),
            uplo: self.uplo.flip(),
        }
    }
    /// `op(A)` for a transpose flag.
    pub fn op(self, t: Trans) -> Self {
        match t {
            Trans::No => self,
            Trans::Yes => self.t(),
        }
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

/// `C ← alpha·A·B` (`Replace`, C is not read) or `C ← C + alpha·A·B` (`Add`): one
/// GEMM call. Pass `a.t()` for `Aᵀ`: the transpose becomes a BLAS flag.
pub fn gemm<T: Real>(
    mut c: ArrayViewMut2<'_, T>,
    accum: Accum,
    a: ArrayView2<'_, T>,
    b: ArrayView2<'_, T>,
    alpha: T,
) -> Result<()> {
    let (m, k) = a.dim();
    let (kb, n) = b.dim();
    if k != kb {
        return Err(Error::ShapeMismatch {
            op: "gemm",
            what: "inner dimensions differ",
            lhs_name: "A",
            lhs: Shape(m, k),
            rhs_name: "B",
            rhs: Shape(kb, n),
        });
    }
    if c.dim() != (m, n) {
        return Err(Error::WrongShape {
            op: "gemm",
            name: "C",
            of: "A·B",
            expected: Shape(m, n),
            got: Shape(c.nrows(), c.ncols()),
        });
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        if accum == Accum::Replace {
            c.fill(T::zero());
        }
        return Ok(());
    }
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
    // SAFETY: shapes were checked above; each operand pointer/ld describes a live view
    // (or its private copy) in `layout`, and `c` is a unique mutable view with `ldc`.
    // With beta = 0 BLAS does not read C, so NaN there cannot leak into the result.
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

/// `B ← alpha·A⁻¹·B` (`Side::Left`) or `B ← alpha·B·A⁻¹` (`Side::Right`), one TRSM
/// call. Pass `Tri::lower(l).t()` for `L⁻ᵀ`.
///
/// A zero on the diagonal of `A` is not detected here: the result is then infinite.
pub fn trsm<T: Real>(b: ArrayViewMut2<'_, T>, side: Side, a: Tri<'_, T>, alpha: T) -> Result<()> {
    triangular(TriKind::Solve, b, side, a, alpha)
}

/// `B ← alpha·A·B` (`Side::Left`) or `B ← alpha·B·A` (`Side::Right`), one TRMM call,
/// for `A` triangular.
pub fn trmm<T: Real>(b: ArrayViewMut2<'_, T>, side: Side, a: Tri<'_, T>, alpha: T) -> Result<()> {
    triangular(TriKind::Mul, b, side, a, alpha)
}

fn triangular<T: Real>(
    kind: TriKind,
    mut b: ArrayViewMut2<'_, T>,
    side: Side,
    tri: Tri<'_, T>,
    alpha: T,
) -> Result<()> {
    let a = tri.a;
    let (ar, ac) = a.dim();
    if ar != ac {
        return Err(Error::NotSquare {
            op: "trsm/trmm",
            name: "triangular A",
            got: Shape(ar, ac),
        });
    }
    let (m, n) = b.dim();
    let (what, fits) = match side {
        Side::Left => ("A must have as many columns as B has rows", ar == m),
        Side::Right => ("A must have as many rows as B has columns", ar == n),
    };
    if !fits {
        return Err(Error::ShapeMismatch {
            op: "trsm/trmm",
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
        triangular(kind, tmp.view_mut(), side, tri, alpha)?;
        b.assign(&tmp);
        return Ok(());
    };
    let oa = Operand::new(&a, layout);
    // Storage read in the other layout holds Aᵀ, whose triangle is the other one.
    let uplo = if oa.flipped {
        tri.uplo.flip()
    } else {
        tri.uplo
    };
    let (mi, ni) = (to_i32(m)?, to_i32(n)?);
    let (lda, ldb) = (to_i32(oa.ld)?, to_i32(ldb)?);
    // SAFETY: A is square and matches B's side (checked above); its pointer/ld describe the
    // live view (or its private copy) in `layout`; `b` is a unique mutable view with `ldb`.
    unsafe {
        T::triangular(
            kind,
            layout.cblas(),
            side.cblas(),
            uplo.cblas(),
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

/// Cholesky factorisation in place, LAPACK potrf: on entry the lower triangle of `a`
/// holds that of a symmetric positive definite `A`, on exit it holds `L` with
/// `A = LLᵀ`. The strict upper triangle is neither read nor written. `op` names the
/// caller in the error for a pivot that is not positive (0-based index).
pub fn potrf_lower<T: Real>(op: &'static str, mut a: ArrayViewMut2<'_, T>) -> Result<()> {
    let (n, c) = a.dim();
    if n != c {
        return Err(Error::NotSquare {
            op,
            name: "A",
            got: Shape(n, c),
        });
    }
    if n == 0 {
        return Ok(());
    }
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

/// Whether BLAS can address `a` as it is (contiguous rows or contiguous columns).
pub fn addressable<T>(a: &ArrayView2<'_, T>) -> bool {
    let (r, c) = a.dim();
    let s = a.strides();
    leading_dim(r, c, s, Layout::Row).is_some() || leading_dim(r, c, s, Layout::Col).is_some()
}

/// Order of the diagonal blocks of [`gemm_tri`].
pub const GEMM_TRI_BLOCK: usize = 64;

/// Scratch elements [`gemm_tri`] needs in [`Accum::Add`] mode for an `n×n`
/// destination: one diagonal tile (none is needed for [`Accum::Replace`]).
pub fn gemm_tri_workspace(n: usize) -> usize {
    let b = n.min(GEMM_TRI_BLOCK);
    b * b
}

/// `C ← alpha·A·B` on the `uplo` triangle (with the diagonal) of the square `C` only.
/// `Replace` writes that triangle and zeroes the other one, without reading `C`; `Add`
/// adds to that triangle and leaves the other one untouched. Pass `a.t()` for `Aᵀ`.
///
/// BLAS has no triangular-output GEMM (gemmt is a vendor extension), so this goes by
/// block rows of [`GEMM_TRI_BLOCK`]: the part of each block row off the diagonal block
/// is one GEMM straight into `C`, and the diagonal block is one GEMM into `C` itself
/// (`Replace`, after which the other triangle of the block is zeroed) or into `tile`
/// (`Add`, after which its triangle is added). That is half the flops of a full product
/// and allocates nothing: `tile` must hold [`gemm_tri_workspace`]`(n)` elements for
/// `Add` and may be empty for `Replace`.
pub fn gemm_tri<T: Real>(
    mut c: ArrayViewMut2<'_, T>,
    uplo: Uplo,
    accum: Accum,
    a: ArrayView2<'_, T>,
    b: ArrayView2<'_, T>,
    alpha: T,
    tile: &mut [T],
) -> Result<()> {
    const OP: &str = "gemm_tri";
    let (m, k) = a.dim();
    let (kb, n) = b.dim();
    if k != kb {
        return Err(Error::ShapeMismatch {
            op: OP,
            what: "inner dimensions differ",
            lhs_name: "A",
            lhs: Shape(m, k),
            rhs_name: "B",
            rhs: Shape(kb, n),
        });
    }
    if m != n {
        return Err(Error::NotSquare {
            op: OP,
            name: "A·B",
            got: Shape(m, n),
        });
    }
    if c.dim() != (m, n) {
        return Err(Error::WrongShape {
            op: OP,
            name: "C",
            of: "A·B",
            expected: Shape(m, n),
            got: Shape(c.nrows(), c.ncols()),
        });
    }
    let need = gemm_tri_workspace(m);
    let short = |got| Error::Workspace {
        op: OP,
        needed: need,
        got,
    };
    if accum == Accum::Add && tile.len() < need {
        return Err(short(tile.len()));
    }
    for r0 in (0..m).step_by(GEMM_TRI_BLOCK) {
        let r1 = (r0 + GEMM_TRI_BLOCK).min(m);
        let rows = a.slice(ndarray::s![r0..r1, ..]);
        // Columns of this block row inside the triangle, and outside it, off the diagonal block.
        let (inside, outside) = match uplo {
            Uplo::Lower => (0..r0, r1..m),
            Uplo::Upper => (r1..m, 0..r0),
        };
        if !inside.is_empty() {
            let cols = b.slice(ndarray::s![.., inside.clone()]);
            let dst = c.slice_mut(ndarray::s![r0..r1, inside]);
            gemm(dst, accum, rows, cols, alpha)?;
        }
        if accum == Accum::Replace && !outside.is_empty() {
            c.slice_mut(ndarray::s![r0..r1, outside]).fill(T::zero());
        }
        let cols = b.slice(ndarray::s![.., r0..r1]);
        let mut diag = c.slice_mut(ndarray::s![r0..r1, r0..r1]);
        match accum {
            Accum::Replace => {
                gemm(diag.view_mut(), Accum::Replace, rows, cols, alpha)?;
                for ((i, j), x) in diag.indexed_iter_mut() {
                    if !uplo.contains(i, j) {
                        *x = T::zero();
                    }
                }
            }
            Accum::Add => {
                let w = r1 - r0;
                let t = ArrayViewMut2::from_shape((w, w), &mut tile[..w * w]);
                let mut t = t.map_err(|_| short(w * w))?;
                gemm(t.view_mut(), Accum::Replace, rows, cols, alpha)?;
                for ((i, j), x) in diag.indexed_iter_mut() {
                    if uplo.contains(i, j) {
                        *x += t[(i, j)];
                    }
                }
            }
        }
    }
    Ok(())
}
