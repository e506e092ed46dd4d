//! Safe level-3 BLAS and LAPACK calls on ndarray views, in faer's shape: the
//! destination comes first, accumulation is a mode ([`Accum`]), and a transpose is a
//! view (`a.t()`), never a flag or a copy.
//!
//! One backend computes, chosen by a cargo feature:
//!
//! - `openblas-system` (default), `openblas-static`, `intel-mkl-static`: CBLAS and
//!   LAPACK. A view whose rows or whose columns are contiguous goes to BLAS as it is, a
//!   transposed view as a transpose flag; only views BLAS cannot describe (negative
//!   strides, steps in both dimensions) are first copied to a contiguous buffer.
//! - `faer`: pure Rust, no system library; every view goes to faer as it is, whatever
//!   its strides. When an OpenBLAS feature is enabled as well, faer computes.
//!
//! The functions here check shapes, then call the backend; both backends give the same
//! results up to rounding, with LAPACK's conventions (pivots, orderings, errors).
//! [`crate::runtime()`](fn@crate::runtime) says which backend, kernel and thread count a program runs on.
//!
//! All `unsafe` code of the crate is in this module: its private backend modules, the
//! transposing copy kernels of [`copy`] and the vector-width dispatch of [`vmath`].

pub mod copy;
#[cfg(feature = "faer")]
pub(crate) mod faer;
#[cfg(all(feature = "cblas", not(feature = "faer")))]
pub(crate) mod ffi;
pub mod lapack;
#[cfg(all(feature = "cblas", not(feature = "faer")))]
pub(crate) mod openblas;
pub mod vmath;

#[cfg(feature = "faer")]
pub(crate) use self::faer as backend;
#[cfg(all(feature = "cblas", not(feature = "faer")))]
pub(crate) use self::openblas as backend;

#[cfg(not(any(feature = "cblas", feature = "faer")))]
compile_error!(
    "matgrad needs a BLAS backend: enable the feature `openblas-system` (the default), \
     `faer` (pure Rust), `openblas-static` or `intel-mkl-static`"
);

/// The scalar types the backend computes in; sealed (its module is private).
pub(crate) use backend::Scalar;

use crate::error::{Error, Result, Shape};
use crate::Real;
use ndarray::{ArrayView2, ArrayViewMut2};

pub(crate) use private::TriKind;

mod private {
    /// Which triangular level-3 routine: TRSM or TRMM.
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    pub enum TriKind {
        /// `B ← op(A)⁻¹B`.
        Solve,
        /// `B ← op(A)B`.
        Mul,
    }
}
pub use copy::copy;

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
    /// Zeroes the entries of `a` outside this triangle (the strict other triangle),
    /// `a` square or not: row by row, or column by column where `a` is column-major,
    /// so that each zeroed run is contiguous.
    pub fn zero_outside<T: Clone + num_traits::Zero>(self, mut a: ArrayViewMut2<'_, T>) {
        use ndarray::s;
        let (m, n) = a.dim();
        let by_columns = n > 1 && a.strides()[0] == 1;
        match (self, by_columns) {
            (Uplo::Lower, true) => {
                for j in 1..n {
                    a.slice_mut(s![..j.min(m), j]).fill(T::zero());
                }
            }
            (Uplo::Lower, false) => {
                for i in 0..m {
                    a.slice_mut(s![i, (i + 1).min(n)..]).fill(T::zero());
                }
            }
            (Uplo::Upper, true) => {
                for j in 0..n {
                    a.slice_mut(s![(j + 1).min(m).., j]).fill(T::zero());
                }
            }
            (Uplo::Upper, false) => {
                for i in 1..m {
                    a.slice_mut(s![i, ..i.min(n)]).fill(T::zero());
                }
            }
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

/// `C ← alpha·A·B` (`Replace`, C is not read) or `C ← C + alpha·A·B` (`Add`): one
/// GEMM call. Pass `a.t()` for `Aᵀ`: the transpose becomes a BLAS flag (OpenBLAS) or a
/// transposed view (faer).
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
    backend::gemm(c, accum, a, b, alpha)
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
    b: ArrayViewMut2<'_, T>,
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
    backend::triangular(kind, b, side, a, tri.uplo, alpha)
}

/// Cholesky factorisation in place, LAPACK potrf: on entry the lower triangle of `a`
/// holds that of a symmetric positive definite `A`, on exit it holds `L` with
/// `A = LLᵀ`. The strict upper triangle is neither read nor written. `op` names the
/// caller in the error for a pivot that is not positive (0-based index).
pub fn potrf_lower<T: Real>(op: &'static str, a: ArrayViewMut2<'_, T>) -> Result<()> {
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
    backend::potrf_lower(op, a)
}

/// Whether BLAS can address `a` as it is (contiguous rows or contiguous columns).
pub fn addressable<T>(a: &ArrayView2<'_, T>) -> bool {
    let (r, c) = a.dim();
    let s = a.strides();
    let contiguous = |inner: usize, outer: usize, si: isize, so: isize| {
        (inner <= 1 || si == 1) && (outer <= 1 || so >= inner.max(1) as isize)
    };
    contiguous(c, r, s[1], s[0]) || contiguous(r, c, s[0], s[1])
}

/// Order of the diagonal blocks of [`gemm_tri`].
pub const GEMM_TRI_BLOCK: usize = 32;

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
/// halves: the off-diagonal quarter inside the triangle is one GEMM straight into `C`,
/// and each diagonal half recurses, down to diagonal blocks of at most
/// [`GEMM_TRI_BLOCK`], each one GEMM into `C` itself (`Replace`, after which the other
/// triangle of the block is zeroed) or into `tile` (`Add`, after which its triangle is
/// added). That is half the flops of a full product, mostly in GEMMs of order `n/2`,
/// `n/4`, …, and allocates nothing: `tile` must hold [`gemm_tri_workspace`]`(n)`
/// elements for `Add` and may be empty for `Replace`.
pub fn gemm_tri<T: Real>(
    c: ArrayViewMut2<'_, T>,
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
    tri_split(c, uplo, accum, a, b, alpha, tile, true)
}

/// [`gemm_tri`] with [`Accum::Replace`] that leaves the other triangle of `C` as it
/// finds it or as the diagonal blocks' GEMMs leave it (not zeroed): for a caller that
/// overwrites that triangle next, as the symmetric folds of the eigen- and
/// singular-value rules do. Only sizes are checked: `a` is `n×k`, `b` is `k×n`, `c` is
/// `n×n`.
pub(crate) fn gemm_tri_unzeroed<T: Real>(
    c: ArrayViewMut2<'_, T>,
    uplo: Uplo,
    a: ArrayView2<'_, T>,
    b: ArrayView2<'_, T>,
    alpha: T,
) -> Result<()> {
    let n = c.nrows();
    if c.ncols() != n || a.dim() != (n, b.nrows()) || b.ncols() != n {
        return Err(Error::WrongShape {
            op: "gemm_tri",
            name: "C",
            of: "A·B",
            expected: Shape(a.nrows(), b.ncols()),
            got: Shape(c.nrows(), c.ncols()),
        });
    }
    tri_split(c, uplo, Accum::Replace, a, b, alpha, &mut [], false)
}

/// Width of the column panels [`gemm_tri`] goes by when BLAS runs on several threads.
pub const GEMM_TRI_PANEL: usize = 128;

/// [`gemm_tri`] after its checks, by halves ([`tri_halves`]) on one thread and by
/// column panels [`GEMM_TRI_PANEL`] wide ([`tri_panels`]) on several: each call costs a
/// synchronisation of the BLAS threads, and halving makes many calls whose GEMMs are
/// too small to share well, where each panel is one tall GEMM that both threads share,
/// at the cost of its full diagonal block (`GEMM_TRI_PANEL/n` more flops).
#[allow(clippy::too_many_arguments)]
fn tri_split<T: Real>(
    c: ArrayViewMut2<'_, T>,
    uplo: Uplo,
    accum: Accum,
    a: ArrayView2<'_, T>,
    b: ArrayView2<'_, T>,
    alpha: T,
    tile: &mut [T],
    zero_other: bool,
) -> Result<()> {
    if backend::threads() > 1 && c.nrows() > GEMM_TRI_PANEL {
        tri_panels(c, uplo, accum, a, b, alpha, tile, zero_other)
    } else {
        tri_halves(c, uplo, accum, a, b, alpha, tile, zero_other)
    }
}

/// [`gemm_tri`] by column panels: each panel's part inside the triangle is one GEMM
/// with its diagonal block (`Replace`, after which the other triangle of that block is
/// zeroed if `zero_other`), or the rectangle off the diagonal block and the block by
/// [`tri_halves`] (`Add`, whose tile holds only a small block). The part of the panel
/// outside the triangle is zeroed (`Replace` with `zero_other`) or left.
#[allow(clippy::too_many_arguments)]
fn tri_panels<T: Real>(
    mut c: ArrayViewMut2<'_, T>,
    uplo: Uplo,
    accum: Accum,
    a: ArrayView2<'_, T>,
    b: ArrayView2<'_, T>,
    alpha: T,
    tile: &mut [T],
    zero_other: bool,
) -> Result<()> {
    use ndarray::s;
    let n = c.nrows();
    for c0 in (0..n).step_by(GEMM_TRI_PANEL) {
        let c1 = (c0 + GEMM_TRI_PANEL).min(n);
        // Rows of the panel inside the triangle (with the diagonal block), outside it,
        // and inside it below or above the diagonal block.
        let (inside, outside, off) = match uplo {
            Uplo::Lower => (c0..n, 0..c0, c1..n),
            Uplo::Upper => (0..c1, c1..n, 0..c0),
        };
        let bp = b.slice(s![.., c0..c1]);
        match accum {
            Accum::Replace => {
                gemm(
                    c.slice_mut(s![inside.clone(), c0..c1]),
                    accum,
                    a.slice(s![inside, ..]),
                    bp,
                    alpha,
                )?;
                if zero_other {
                    c.slice_mut(s![outside, c0..c1]).fill(T::zero());
                    uplo.zero_outside(c.slice_mut(s![c0..c1, c0..c1]));
                }
            }
            Accum::Add => {
                gemm(
                    c.slice_mut(s![off.clone(), c0..c1]),
                    accum,
                    a.slice(s![off, ..]),
                    bp,
                    alpha,
                )?;
                tri_halves(
                    c.slice_mut(s![c0..c1, c0..c1]),
                    uplo,
                    accum,
                    a.slice(s![c0..c1, ..]),
                    bp,
                    alpha,
                    tile,
                    zero_other,
                )?;
            }
        }
    }
    Ok(())
}

/// [`gemm_tri`] after its checks: the off-diagonal quarter of `C` inside the triangle is
/// one GEMM of half the order, the other one is zeroed (`Replace`) or left, and each
/// diagonal half recurses down to blocks of at most [`GEMM_TRI_BLOCK`]. Large GEMMs run
/// nearer the machine's rate (and thread better) than a row of thin block products.
#[allow(clippy::too_many_arguments)]
fn tri_halves<T: Real>(
    mut c: ArrayViewMut2<'_, T>,
    uplo: Uplo,
    accum: Accum,
    a: ArrayView2<'_, T>,
    b: ArrayView2<'_, T>,
    alpha: T,
    tile: &mut [T],
    zero_other: bool,
) -> Result<()> {
    use ndarray::Axis;
    let m = c.nrows();
    if m <= GEMM_TRI_BLOCK {
        return tri_block(c, uplo, accum, a, b, alpha, tile, zero_other);
    }
    let h = m / 2;
    let (a1, a2) = a.split_at(Axis(0), h);
    let (b1, b2) = b.split_at(Axis(1), h);
    let (top, bottom) = c.view_mut().split_at(Axis(0), h);
    let (c11, c12) = top.split_at(Axis(1), h);
    let (c21, c22) = bottom.split_at(Axis(1), h);
    let (inside, mut outside, p, q) = match uplo {
        Uplo::Lower => (c21, c12, a2, b1),
        Uplo::Upper => (c12, c21, a1, b2),
    };
    gemm(inside, accum, p, q, alpha)?;
    if accum == Accum::Replace && zero_other {
        outside.fill(T::zero());
    }
    tri_halves(c11, uplo, accum, a1, b1, alpha, tile, zero_other)?;
    tri_halves(c22, uplo, accum, a2, b2, alpha, tile, zero_other)
}

/// A diagonal block of [`gemm_tri`]: one GEMM into `C` itself (`Replace`, after which
/// the other triangle is zeroed) or into `tile` (`Add`, after which its triangle is
/// added).
#[allow(clippy::too_many_arguments)]
fn tri_block<T: Real>(
    mut diag: ArrayViewMut2<'_, T>,
    uplo: Uplo,
    accum: Accum,
    rows: ArrayView2<'_, T>,
    cols: ArrayView2<'_, T>,
    alpha: T,
    tile: &mut [T],
    zero_other: bool,
) -> Result<()> {
    match accum {
        Accum::Replace => {
            gemm(diag.view_mut(), Accum::Replace, rows, cols, alpha)?;
            if zero_other {
                uplo.zero_outside(diag);
            }
        }
        Accum::Add => {
            let w = diag.nrows();
            let short = |got| Error::Workspace {
                op: "gemm_tri",
                needed: w * w,
                got,
            };
            let have = tile.len();
            let t = tile.get_mut(..w * w).ok_or(short(have))?;
            let mut t = ArrayViewMut2::from_shape((w, w), t).map_err(|_| short(w * w))?;
            gemm(t.view_mut(), Accum::Replace, rows, cols, alpha)?;
            for ((i, j), x) in diag.indexed_iter_mut() {
                if uplo.contains(i, j) {
                    *x += t[(i, j)];
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array2, ShapeBuilder};

    fn mat(m: usize, n: usize, seed: usize) -> Array2<f64> {
        Array2::from_shape_fn((m, n), |(i, j)| {
            ((i * 131 + j * 71 + seed * 29 + 1) as f64 * 0.7548776662).sin()
        })
    }

    /// Zeroing outside a triangle, on wide and tall matrices in both memory orders and
    /// reversed: exactly the entries `contains` leaves out are zero, the rest untouched.
    #[test]
    fn zeroing_outside_a_triangle_clears_exactly_the_other_triangle() {
        for (m, n) in [(5, 9), (9, 5), (7, 7), (1, 4), (4, 1), (0, 3)] {
            let a = mat(m, n, m + n);
            let make = |column_major: bool| {
                let mut f = Array2::zeros(a.raw_dim().set_f(column_major));
                f.assign(&a);
                f
            };
            for column_major in [false, true] {
                for uplo in [Uplo::Lower, Uplo::Upper] {
                    let mut z = make(column_major);
                    uplo.zero_outside(z.view_mut());
                    // `r` holds `a` reversed; `rv`, negatively strided, reads it as `a`.
                    let mut r = make(column_major);
                    r.assign(&a.slice(ndarray::s![..;-1, ..;-1]));
                    let mut rv = r.view_mut();
                    rv.invert_axis(ndarray::Axis(0));
                    rv.invert_axis(ndarray::Axis(1));
                    uplo.zero_outside(rv);
                    for ((i, j), &got) in z.indexed_iter() {
                        let want = if uplo.contains(i, j) { a[(i, j)] } else { 0.0 };
                        assert_eq!(
                            got, want,
                            "{m}x{n} column-major {column_major} {uplo:?} ({i}, {j})"
                        );
                        assert_eq!(
                            r[(m - 1 - i, n - 1 - j)],
                            want,
                            "reversed {m}x{n} column-major {column_major} {uplo:?}"
                        );
                    }
                }
            }
        }
    }

    /// Both ways of splitting a triangular product, whatever the thread count, against
    /// the full product: the triangle written or added, the other one zeroed, left as
    /// it was, or (unzeroed) not looked at; at an order with uneven panels and halves.
    #[test]
    fn triangular_products_by_halves_and_by_panels_agree_with_the_full_one() {
        let (n, k) = (251, 37);
        let (p, q) = (mat(n, k, 1), mat(k, n, 2));
        let full = p.dot(&q);
        let start = mat(n, n, 3);
        let mut tile = vec![0.0; gemm_tri_workspace(n)];
        for uplo in [Uplo::Lower, Uplo::Upper] {
            for accum in [Accum::Replace, Accum::Add] {
                for zero_other in [true, false] {
                    for panels in [false, true] {
                        let mut c = start.clone();
                        let split = if panels { tri_panels } else { tri_halves };
                        split(
                            c.view_mut(),
                            uplo,
                            accum,
                            p.view(),
                            q.view(),
                            -2.0,
                            &mut tile,
                            zero_other,
                        )
                        .unwrap();
                        for ((i, j), &got) in c.indexed_iter() {
                            let want = match (uplo.contains(i, j), accum) {
                                (true, Accum::Replace) => -2.0 * full[(i, j)],
                                (true, Accum::Add) => start[(i, j)] - 2.0 * full[(i, j)],
                                (false, Accum::Replace) if zero_other => 0.0,
                                (false, Accum::Replace) => continue,
                                (false, Accum::Add) => start[(i, j)],
                            };
                            assert!(
                                (got - want).abs() < 1e-12,
                                "{uplo:?} {accum:?} zero_other {zero_other} panels {panels} ({i}, {j}): {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }
}
