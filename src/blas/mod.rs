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
mod gemmt;
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

/// `C ← alpha·A·B` on the `uplo` triangle (with the diagonal) of the square `C` only.
/// `Replace` writes that triangle and zeroes the other one, without reading `C`; `Add`
/// adds to that triangle and leaves the other one untouched. Pass `a.t()` for `Aᵀ`.
///
/// BLAS has no triangular-output GEMM (gemmt is a vendor extension), so this goes by
/// halves: the off-diagonal quarter inside the triangle is one GEMM straight into `C`
/// (on the backend's threads), and each diagonal half recurses down to diagonal blocks
/// of order at most [`GEMM_TRI_LEAF`], which faer's triangular matmul computes on the
/// calling thread, only their triangle. That is half the flops of a full product,
/// mostly in GEMMs of order `n/2`, `n/4`, …, and allocates nothing.
pub fn gemm_tri<T: Real>(
    c: ArrayViewMut2<'_, T>,
    uplo: Uplo,
    accum: Accum,
    a: ArrayView2<'_, T>,
    b: ArrayView2<'_, T>,
    alpha: T,
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
    // OpenBLAS replaces by first writing zeros over each block with its beta kernel,
    // a pass over C slower than a memset; zeroing all of a contiguous C at once and
    // then adding skips those passes and the zeroing of the other triangle by rows.
    #[cfg(not(feature = "faer"))]
    let c = {
        let mut c = c;
        if accum == Accum::Replace && m > GEMM_TRI_LEAF {
            if let Some(all) = c.as_slice_memory_order_mut() {
                all.fill(T::zero());
                return tri_product(c, uplo, Accum::Add, a, b, alpha, true);
            }
        }
        c
    };
    tri_product(c, uplo, accum, a, b, alpha, true)
}

/// [`gemm_tri`] with [`Accum::Replace`] that leaves the other triangle of `C` as it
/// finds it (not zeroed): for a caller that overwrites that triangle next, as the
/// symmetric folds of the eigen- and singular-value rules do. Only sizes are checked:
/// `a` is `n×k`, `b` is `k×n`, `c` is `n×n`.
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
    tri_product(c, uplo, Accum::Replace, a, b, alpha, false)
}

/// Largest diagonal block [`gemm_tri`] computes by faer's triangular matmul: past it,
/// the halves are GEMMs, which the backend threads.
pub const GEMM_TRI_LEAF: usize = 128;

/// [`gemm_tri`] after its checks, by halves down to blocks of [`GEMM_TRI_LEAF`]; with
/// `Replace` and `zero_other` the strict other triangle is zeroed, else left as it
/// is. An empty inner dimension makes the product zero.
fn tri_product<T: Real>(
    mut c: ArrayViewMut2<'_, T>,
    uplo: Uplo,
    accum: Accum,
    a: ArrayView2<'_, T>,
    b: ArrayView2<'_, T>,
    alpha: T,
    zero_other: bool,
) -> Result<()> {
    use ndarray::Axis;
    let m = c.nrows();
    let zero = accum == Accum::Replace && zero_other;
    if m <= GEMM_TRI_LEAF {
        if m == 0 {
            return Ok(());
        }
        if a.ncols() == 0 {
            if accum == Accum::Replace {
                for ((i, j), x) in c.indexed_iter_mut() {
                    if zero_other || uplo.contains(i, j) {
                        *x = T::zero();
                    }
                }
            }
            return Ok(());
        }
        gemmt::gemmt(c.view_mut(), uplo, accum, a, b, alpha);
        if zero {
            uplo.zero_outside(c);
        }
        return Ok(());
    }
    let h = m / 2;
    let (a1, a2) = a.split_at(Axis(0), h);
    let (b1, b2) = b.split_at(Axis(1), h);
    let (top, bottom) = c.split_at(Axis(0), h);
    let (c11, c12) = top.split_at(Axis(1), h);
    let (c21, c22) = bottom.split_at(Axis(1), h);
    let (inside, mut outside, p, q) = match uplo {
        Uplo::Lower => (c21, c12, a2, b1),
        Uplo::Upper => (c12, c21, a1, b2),
    };
    gemm(inside, accum, p, q, alpha)?;
    if zero {
        outside.fill(T::zero());
    }
    tri_product(c11, uplo, accum, a1, b1, alpha, zero_other)?;
    tri_product(c22, uplo, accum, a2, b2, alpha, zero_other)
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

    /// The triangular product, by halves (an order that halves into uneven blocks past
    /// [`GEMM_TRI_LEAF`]) and as one faer block, against the full product: the triangle
    /// written (over NaN, which must not be read) or added, the other one zeroed or
    /// left exactly as it was; with one factor stepped and transposed, and the other
    /// row-major or column-major.
    #[test]
    fn triangular_products_agree_with_the_full_one() {
        use ndarray::{s, ShapeBuilder};
        let k = 37;
        for (n, whole) in [(2 * GEMM_TRI_LEAF + 89, false), (GEMM_TRI_LEAF - 5, true)] {
            let p = mat(n, k, 1);
            let qt = mat(n, 2 * k, 2);
            let q = qt.slice(s![.., ..;2]).reversed_axes(); // k×n, stepped, transposed
            let mut pf = Array2::zeros((n, k).f());
            pf.assign(&p);
            let full = p.dot(&q);
            let start = mat(n, n, 3);
            for uplo in [Uplo::Lower, Uplo::Upper] {
                for accum in [Accum::Replace, Accum::Add] {
                    for zero_other in [true, false] {
                        for lhs in [p.view(), pf.view()] {
                            let mut c = start.clone();
                            if accum == Accum::Replace {
                                for ((i, j), x) in c.indexed_iter_mut() {
                                    if uplo.contains(i, j) {
                                        *x = f64::NAN;
                                    }
                                }
                            }
                            if whole {
                                gemmt::gemmt(c.view_mut(), uplo, accum, lhs, q, -2.0);
                                if accum == Accum::Replace && zero_other {
                                    uplo.zero_outside(c.view_mut());
                                }
                            } else {
                                let c = c.view_mut();
                                tri_product(c, uplo, accum, lhs, q, -2.0, zero_other).unwrap();
                            }
                            for ((i, j), &got) in c.indexed_iter() {
                                let want = match (uplo.contains(i, j), accum) {
                                    (true, Accum::Replace) => -2.0 * full[(i, j)],
                                    (true, Accum::Add) => start[(i, j)] - 2.0 * full[(i, j)],
                                    (false, Accum::Replace) if zero_other => 0.0,
                                    (false, _) => start[(i, j)],
                                };
                                assert!(
                                    (got - want).abs() < 1e-12,
                                    "n {n} {uplo:?} {accum:?} zero_other {zero_other} ({i}, {j}): {got} vs {want}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    /// An empty inner dimension: a zero product, written or added.
    #[test]
    fn a_triangular_product_over_an_empty_inner_dimension_is_zero() {
        let (p, q) = (Array2::<f64>::zeros((4, 0)), Array2::<f64>::zeros((0, 4)));
        let start = mat(4, 4, 5);
        let mut c = start.clone();
        gemm_tri(
            c.view_mut(),
            Uplo::Lower,
            Accum::Add,
            p.view(),
            q.view(),
            1.0,
        )
        .unwrap();
        assert_eq!(c, start);
        gemm_tri(
            c.view_mut(),
            Uplo::Lower,
            Accum::Replace,
            p.view(),
            q.view(),
            1.0,
        )
        .unwrap();
        assert!(c.iter().all(|&x| x == 0.0));
    }
}
