//! Triangular solves, `X = op(L)⁻¹B` or `X = B·op(L)⁻¹`, one TRSM each way.
//!
//! With `A = op(L)`, the left solve `X = A⁻¹B` has `Ẋ = A⁻¹(Ḃ − ȦX)`, `B̄ = A⁻ᵀX̄`,
//! `Ā = −B̄Xᵀ`, and the right solve `X = BA⁻¹` has `Ẋ = (Ḃ − XȦ)A⁻¹`, `B̄ = X̄A⁻ᵀ`,
//! `Ā = −XᵀB̄` (Giles 2008, §2.2; `docs/math.md`, triangular solves). `L̄` is `Ā` (or `Āᵀ`
//! when `L` enters transposed) restricted to the triangle TRSM reads: the other triangle
//! is not an input.
//!
//! ```
//! use matgrad::prelude::*;
//! use ndarray::array;
//!
//! let l = array![[2.0, 0.0], [1.0, 4.0]];
//! let b = array![[2.0, 4.0, 6.0], [5.0, 6.0, 11.0]];
//! let x = TriSolve::lower().apply([l.view(), b.view()])?;   // X = L⁻¹B
//! assert_eq!(x.value(), &array![[1.0, 2.0, 3.0], [1.0, 1.0, 2.0]]);
//! let xbar = array![[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]];
//! let [lbar, bbar] = x.backward(xbar.view())?;
//! assert_eq!(lbar[(0, 1)], 0.0);                             // L̄ is lower triangular
//! assert_eq!(bbar.dim(), (2, 3));
//!
//! // Transposed: Xᵀ = Bᵀ·U⁻¹ with U = Lᵀ, a right solve with an upper factor.
//! let u = l.t().to_owned();
//! let y = TriSolve::upper().right().apply([u.view(), b.t()])?;
//! assert_eq!(y.value(), &x.value().t());
//! # Ok::<(), matgrad::Error>(())
//! ```

pub(crate) use super::workspace::scratch;
use super::{all_finite, max_magnitude, rescale_exponent, scale_pow2, square};
use crate::blas::{addressable, gemm_tri, trmm, trsm, Accum, Side, Trans, Tri, Uplo};
use crate::error::{Error, Result, Shape};
use crate::primitive::{Grad, Partials, Pass, Rule, Saves, Shapes, Structure};
use crate::Real;
use ndarray::{s, ArrayView2, ArrayViewMut2};
use smallvec::smallvec;

const OP: &str = "TriSolve";

/// The triangular solve `X = op(L)⁻¹B` (left) or `X = B·op(L)⁻¹` (right), `L` square
/// with a non-zero diagonal and only its `uplo` triangle read.
///
/// Left, `A = op(L)`: forward `Ẋ = A⁻¹(Ḃ − ȦX)`, reverse `B̄ = A⁻ᵀX̄`, `Ā = −B̄Xᵀ`;
/// right: `Ẋ = (Ḃ − XȦ)A⁻¹`, `B̄ = X̄A⁻ᵀ`, `Ā = −XᵀB̄` (Giles 2008, §2.2; `docs/math.md`).
/// `L̄ = Ā` (or `Āᵀ`) on the `uplo` triangle, zero on the other. `B̄` is one TRSM, `L̄`
/// one triangular GEMM ([`gemm_tri`]), `Ẋ` one TRMM and one TRSM.
///
/// Constructors, as [`crate::ops::matmul::MatMul::nn`] for products:
///
/// | constructor | solve |
/// |---|---|
/// | [`TriSolve::lower`] (the default) | `X = L⁻¹B` |
/// | [`TriSolve::lower_t`] | `X = L⁻ᵀB` |
/// | [`TriSolve::upper`] | `X = U⁻¹B` |
/// | [`TriSolve::upper_t`] | `X = U⁻ᵀB` |
/// | any of them `.right()` | `X = B·L⁻¹`, `B·L⁻ᵀ`, `B·U⁻¹`, `B·U⁻ᵀ` |
///
/// The forward pass scales `L`'s triangle and `B` by exact powers of two when their
/// entries are subnormal or near the overflow threshold, so that `X` is finite where its
/// exact value is; errors: [`Error::Singular`] for a zero on the diagonal,
/// [`Error::IllConditioned`] for one whose reciprocal overflows or when the scaled
/// solve overflows, [`Error::Overflow`] when `X` does.
///
/// The reverse rule reads `L` (whenever a gradient is wanted) and `X` (only for `L̄`),
/// never `B`. Its workspace holds `B̄` when `B̄`'s buffer is not a first write (TRSM has
/// no beta); the forward pass's, a scaled copy of `L` (`n²`).
///
/// Input 0 declares [`Structure::LowerTriangular`] for `Uplo::Lower`. For `Uplo::Upper`
/// it declares [`Structure::General`]: the strict lower triangle gets a zero gradient
/// and its perturbations leave `X` unchanged, so full perturbations check the same rule.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct TriSolve {
    /// Which side of `B` the inverse multiplies.
    pub side: Side,
    /// Whether `L` enters transposed.
    pub trans: Trans,
    /// Which triangle of `L` is the factor.
    pub uplo: Uplo,
}

impl Default for TriSolve {
    /// `X = L⁻¹B` with `L` lower triangular.
    fn default() -> Self {
        TriSolve::lower()
    }
}

impl TriSolve {
    /// A solve with the given side, transpose flag and triangle.
    pub const fn new(side: Side, trans: Trans, uplo: Uplo) -> Self {
        TriSolve { side, trans, uplo }
    }
    /// `X = L⁻¹B`, `L` lower triangular (forward substitution): the default.
    pub const fn lower() -> Self {
        Self::new(Side::Left, Trans::No, Uplo::Lower)
    }
    /// `X = L⁻ᵀB`, `L` lower triangular (back substitution with `Lᵀ`).
    pub const fn lower_t() -> Self {
        Self::new(Side::Left, Trans::Yes, Uplo::Lower)
    }
    /// `X = U⁻¹B`, `U` upper triangular (back substitution).
    pub const fn upper() -> Self {
        Self::new(Side::Left, Trans::No, Uplo::Upper)
    }
    /// `X = U⁻ᵀB`, `U` upper triangular (forward substitution with `Uᵀ`).
    pub const fn upper_t() -> Self {
        Self::new(Side::Left, Trans::Yes, Uplo::Upper)
    }
    /// The same solve from the right, `X = B·op(L)⁻¹`: `TriSolve::lower().right()` is
    /// `X = BL⁻¹`.
    pub const fn right(self) -> Self {
        Self::new(Side::Right, self.trans, self.uplo)
    }

    /// `A = op(L)` as the triangular operand of TRSM and TRMM.
    fn factor<'a, T>(&self, l: ArrayView2<'a, T>) -> Tri<'a, T> {
        Tri::new(l, self.uplo).op(self.trans)
    }

    /// `Y ← A⁻¹Y` (left) or `Y ← YA⁻¹` (right), `A = op(L)`: the forward pass on `Y = B`.
    pub fn solve_in_place<T: Real>(
        &self,
        l: ArrayView2<'_, T>,
        y: ArrayViewMut2<'_, T>,
    ) -> Result<()> {
        trsm(y, self.side, self.factor(l), T::one())
    }

    /// `X ← A⁻¹B` (left) or `X ← BA⁻¹` (right), `A = op(L)`, the forward pass, into `x`
    /// (not read), with `n²` elements of `ws` for a scaled copy of `L`.
    ///
    /// TRSM divides by the diagonal through its reciprocals, which overflow for a
    /// subnormal `L`, and sums `bᵢ − Σ lᵢₖxₖ` overflow for `B` near the overflow
    /// threshold where `X` is moderate. So the plain solve is kept only when its
    /// diagonal can be divided by and its result is finite (one scan of `X`); otherwise
    /// `L` (its triangle) and `B` whose largest entries lie outside the band of
    /// [`rescale_exponent`] are scaled by exact powers of two near 1 and solved again:
    /// `X = 2ᵉ⁻ᶠ·(2ᵉA)⁻¹(2ᶠB)`. Errors: [`Error::Singular`] for a
    /// zero on the diagonal, [`Error::IllConditioned`] for one whose reciprocal
    /// overflows (after the scaling) or, at the diagonal entry of least magnitude, when
    /// the scaled solve overflows from finite `L` and `B`; [`Error::Overflow`] when
    /// only the scale `2ᵉ⁻ᶠ` takes `X` past the overflow threshold.
    fn solve_scaled<T: Real>(
        &self,
        op: &'static str,
        l: ArrayView2<'_, T>,
        b: ArrayView2<'_, T>,
        mut x: ArrayViewMut2<'_, T>,
        ws: &mut [T],
    ) -> Result<()> {
        let n = l.nrows();
        // The plain solve when the diagonal can be divided by and the result is finite,
        // as it is unless the entries are extreme: then the scans below cost nothing.
        if nonsingular(op, &l).is_ok() {
            x.assign(&b);
            self.solve_in_place(l, x.view_mut())?;
            if all_finite(&x.view()) {
                return Ok(());
            }
        }
        // Row by row over the triangle, contiguous rows as slices.
        let big = (0..n).fold(T::zero(), |m, i| {
            let row = match self.uplo {
                Uplo::Lower => l.slice(s![i, ..=i]),
                Uplo::Upper => l.slice(s![i, i..]),
            };
            m.max(max_magnitude(&row.insert_axis(ndarray::Axis(0))))
        });
        let e = rescale_exponent(big);
        let f = rescale_exponent(max_magnitude(&b));
        x.assign(&b);
        scale_pow2(x.view_mut(), f);
        if e == 0 {
            nonsingular(op, &l)?;
            self.solve_in_place(l, x.view_mut())?;
        } else {
            let (mut ls, _) = scratch(op, ws, (n, n))?;
            let s = T::of(2f64.powi(e));
            for ((i, j), v) in ls.indexed_iter_mut() {
                if self.uplo.contains(i, j) {
                    *v = l[(i, j)] * s;
                }
            }
            nonsingular(op, &ls.view())?;
            self.solve_in_place(ls.view(), x.view_mut())?;
        }
        let inputs_finite = || {
            all_finite(&b)
                && l.indexed_iter()
                    .all(|((i, j), v)| !self.uplo.contains(i, j) || v.is_finite())
        };
        if !all_finite(&x.view()) && inputs_finite() {
            // The scaled solve itself overflowed: A is numerically singular.
            let d = l.diag();
            let index = (0..n)
                .min_by(|&i, &j| d[i].to64().abs().total_cmp(&d[j].to64().abs()))
                .unwrap_or(0);
            return Err(Error::IllConditioned {
                op,
                index,
                value: d[index].to64(),
            });
        }
        scale_pow2(x.view_mut(), e - f);
        if !all_finite(&x.view()) && inputs_finite() {
            return Err(Error::Overflow {
                op,
                name: "X",
                dtype: T::NAME,
            });
        }
        Ok(())
    }

    /// `Y ← A⁻ᵀY` (left) or `Y ← YA⁻ᵀ` (right): `B̄` from `Y = X̄`.
    pub fn adjoint_in_place<T: Real>(
        &self,
        l: ArrayView2<'_, T>,
        y: ArrayViewMut2<'_, T>,
    ) -> Result<()> {
        trsm(y, self.side, self.factor(l).t(), T::one())
    }

    /// `L̄ ← op(Ā)` on the `uplo` triangle, `Ā = −B̄Xᵀ` (left) or `−XᵀB̄` (right), replacing
    /// (the other triangle is zeroed) or adding (the other triangle is left as it is).
    pub fn backward_l<T: Real>(
        &self,
        x: ArrayView2<'_, T>,
        bbar: ArrayView2<'_, T>,
        lbar: ArrayViewMut2<'_, T>,
        accum: Accum,
    ) -> Result<()> {
        let (p, q) = match self.side {
            Side::Left => (bbar, x.t()),
            Side::Right => (x.t(), bbar),
        };
        // Ā is written into op(L̄)'s view, where L's triangle is the flipped one.
        let uplo = match self.trans {
            Trans::No => self.uplo,
            Trans::Yes => self.uplo.flip(),
        };
        gemm_tri(self.trans.view_mut(lbar), uplo, accum, p, q, -T::one())
    }
}

impl<T: Real> Rule<T> for TriSolve {
    fn name(&self) -> &'static str {
        match (self.side, self.uplo, self.trans) {
            (Side::Left, Uplo::Lower, Trans::No) => "TriSolve(L⁻¹·B)",
            (Side::Left, Uplo::Lower, Trans::Yes) => "TriSolve(L⁻ᵀ·B)",
            (Side::Left, Uplo::Upper, Trans::No) => "TriSolve(U⁻¹·B)",
            (Side::Left, Uplo::Upper, Trans::Yes) => "TriSolve(U⁻ᵀ·B)",
            (Side::Right, Uplo::Lower, Trans::No) => "TriSolve(B·L⁻¹)",
            (Side::Right, Uplo::Lower, Trans::Yes) => "TriSolve(B·L⁻ᵀ)",
            (Side::Right, Uplo::Upper, Trans::No) => "TriSolve(B·U⁻¹)",
            (Side::Right, Uplo::Upper, Trans::Yes) => "TriSolve(B·U⁻ᵀ)",
        }
    }
    fn arity(&self) -> usize {
        2
    }
    fn input_name(&self, i: usize) -> &'static str {
        ["L", "B"].get(i).copied().unwrap_or("X")
    }
    fn structure(&self, i: usize) -> Structure {
        match (i, self.uplo) {
            (0, Uplo::Lower) => Structure::LowerTriangular,
            _ => Structure::General,
        }
    }
    fn shapes(&self, x: &[Shape]) -> Result<Shapes> {
        solve_shapes(OP, self.side, x)
    }
    fn saves(&self, wanted: &[bool]) -> Saves {
        solve_saves(wanted)
    }
    fn workspace(&self, x: &[Shape]) -> usize {
        (x[1].0 * x[1].1).max(x[0].0 * x[0].0)
    }
    /// Forward mode solves in its output buffer.
    fn pass_workspace(&self, x: &[Shape], pass: Pass<'_, '_, T>) -> usize {
        match pass {
            Pass::Pushforward => 0,
            Pass::Eval | Pass::Pullback(_) => Rule::<T>::workspace(self, x),
        }
    }
    fn eval(
        &self,
        x: &[ArrayView2<'_, T>],
        y: &mut [ArrayViewMut2<'_, T>],
        ws: &mut [T],
    ) -> Result<()> {
        self.solve_scaled(OP, x[0].view(), x[1].view(), y[0].view_mut(), ws)
    }
    fn pullback(
        &self,
        x: &[ArrayView2<'_, T>],
        y: &[ArrayView2<'_, T>],
        ybar: &Partials<'_, '_, T>,
        grads: &mut [Grad<'_, T>],
        ws: &mut [T],
    ) -> Result<()> {
        let l = x[0].view();
        nonsingular(OP, &l)?;
        let (gl, gb) = grads.split_at_mut(1);
        let (gl, gb) = (&mut gl[0], &mut gb[0]);
        let solve = |v: ArrayViewMut2<'_, T>| self.adjoint_in_place(l, v);
        let lbar = gl.target().map(|(g, acc)| {
            move |bbar: ArrayView2<'_, T>| self.backward_l(y[0].view(), bbar, g, acc)
        });
        with_bbar(OP, ybar.view(0), gb, ws, solve, lbar)
    }
    fn pushforward(
        &self,
        x: &[ArrayView2<'_, T>],
        y: &[ArrayView2<'_, T>],
        xdot: &Partials<'_, '_, T>,
        ydot: &mut [ArrayViewMut2<'_, T>],
        _: &mut [T],
    ) -> Result<()> {
        let l = x[0].view();
        nonsingular(OP, &l)?;
        let mut xd = ydot[0].view_mut();
        match xdot.get(0) {
            Some(ld) => {
                // Ḃ − ȦX (left) or Ḃ − XȦ (right); TRMM reads only L's triangle of L̇.
                xd.assign(&y[0]);
                trmm(xd.view_mut(), self.side, self.factor(ld), -T::one())?;
                if let Some(bd) = xdot.get(1) {
                    xd += &bd;
                }
            }
            None => xd.assign(&xdot.view(1)),
        }
        self.solve_in_place(l, xd)
    }
}

/// The shape rule of a solve `X = op(L)⁻¹B` or `B·op(L)⁻¹`: `L` square and fitting
/// `B` on `side`, `X` shaped as `B`. Errors name `op`.
pub(crate) fn solve_shapes(op: &'static str, side: Side, x: &[Shape]) -> Result<Shapes> {
    let n = square(op, "L", x[0])?;
    let b = x[1];
    let (what, fits) = match side {
        Side::Left => ("B must have as many rows as L", b.0 == n),
        Side::Right => ("B must have as many columns as L", b.1 == n),
    };
    if !fits {
        return Err(Error::ShapeMismatch {
            op,
            what,
            lhs_name: "L",
            lhs: x[0],
            rhs_name: "B",
            rhs: b,
        });
    }
    Ok(smallvec![b])
}

/// What the reverse rule of a solve with inputs `(L, B)` and output `X` reads: `L` for
/// either gradient, `X` only for `L̄`.
pub(crate) fn solve_saves(wanted: &[bool]) -> Saves {
    match (wanted[0], wanted[1]) {
        (true, _) => Saves::NONE.input(0).output(0),
        (false, true) => Saves::NONE.input(0),
        (false, false) => Saves::NONE,
    }
}

/// `Singular` at the first zero on the diagonal of a triangular factor, `IllConditioned`
/// at the first entry whose reciprocal overflows ([`super::invertible_diagonal`]).
pub(crate) fn nonsingular<T: Real>(op: &'static str, l: &ArrayView2<'_, T>) -> Result<()> {
    super::invertible_diagonal(op, l)
}

/// `B̄` of a solve, computed by `solve` in place on a copy of `X̄`, where it costs least:
/// in `B̄`'s own buffer when that is a first write BLAS can address, otherwise in
/// `scratch_ws` (at least `X̄`'s size), then written or added into `B̄`'s buffer if
/// wanted. When `lbar` is given (`L̄` is wanted), it is then called with `B̄`.
///
/// Nothing is done when neither `B̄` nor `L̄` is wanted.
pub(crate) fn with_bbar<T: Real>(
    op: &'static str,
    xbar: ArrayView2<'_, T>,
    grad: &mut Grad<'_, T>,
    scratch_ws: &mut [T],
    solve: impl FnOnce(ArrayViewMut2<'_, T>) -> Result<()>,
    lbar: Option<impl FnOnce(ArrayView2<'_, T>) -> Result<()>>,
) -> Result<()> {
    match grad {
        Grad::Write(b) if addressable(&b.view()) => {
            b.assign(&xbar);
            solve(b.view_mut())?;
            lbar.map_or(Ok(()), |f| f(b.view()))
        }
        grad => {
            if !grad.wanted() && lbar.is_none() {
                return Ok(());
            }
            let (mut w, _) = scratch(op, scratch_ws, xbar.dim())?;
            w.assign(&xbar);
            solve(w.view_mut())?;
            if let Some((g, acc)) = grad.target() {
                acc.assign(g, w.view());
            }
            lbar.map_or(Ok(()), |f| f(w.view()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::Apply;
    use crate::primitive::Primitive;
    use ndarray::Array2;

    /// Deterministic test values in (−1, 1).
    fn mat(m: usize, n: usize, seed: usize) -> Array2<f64> {
        Array2::from_shape_fn((m, n), |(i, j)| {
            ((i * 131 + j * 71 + seed * 29 + 1) as f64 * 0.7548776662).sin()
        })
    }

    /// A well-conditioned factor with the `uplo` triangle set.
    fn factor(n: usize, uplo: Uplo, seed: usize) -> Array2<f64> {
        let m = mat(n, n, seed);
        Array2::from_shape_fn((n, n), |(i, j)| match (i == j, uplo.contains(i, j)) {
            (true, _) => 2.0 + m[(i, j)].abs(),
            (false, true) => 0.5 * m[(i, j)],
            (false, false) => 0.0,
        })
    }

    fn all() -> Vec<TriSolve> {
        let mut ops = Vec::new();
        for side in [Side::Left, Side::Right] {
            for trans in [Trans::No, Trans::Yes] {
                for uplo in [Uplo::Lower, Uplo::Upper] {
                    ops.push(TriSolve::new(side, trans, uplo));
                }
            }
        }
        ops
    }

    fn close(a: &Array2<f64>, b: &Array2<f64>, tol: f64) -> bool {
        let scale = b.iter().fold(1.0f64, |m, x| m.max(x.abs()));
        a.dim() == b.dim() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol * scale)
    }

    /// `op(L)` densely, and the dense inverse by solving against the identity.
    fn dense(op: &TriSolve, l: &Array2<f64>) -> (Array2<f64>, Array2<f64>) {
        let a = match op.trans {
            Trans::No => l.clone(),
            Trans::Yes => l.t().to_owned(),
        };
        let mut inv = Array2::eye(l.nrows());
        trsm(inv.view_mut(), Side::Left, op.factor(l.view()), 1.0).unwrap();
        (a, inv)
    }

    #[test]
    fn gemm_tri_writes_or_adds_only_its_triangle() {
        let (p, q) = (mat(150, 7, 1), mat(150, 7, 2));
        let full = p.dot(&q.t());
        for uplo in [Uplo::Lower, Uplo::Upper] {
            let start = mat(150, 150, 3);
            let mut add = start.clone();
            gemm_tri(add.view_mut(), uplo, Accum::Add, p.view(), q.t(), 2.0).unwrap();
            let mut write = Array2::from_elem((150, 150), f64::NAN);
            gemm_tri(write.view_mut(), uplo, Accum::Replace, p.view(), q.t(), 2.0).unwrap();
            for ((i, j), &o) in add.indexed_iter() {
                let inside = uplo.contains(i, j);
                let want = if inside {
                    start[(i, j)] + 2.0 * full[(i, j)]
                } else {
                    start[(i, j)]
                };
                assert!((o - want).abs() < 1e-12, "add {uplo:?} ({i}, {j})");
                let want = if inside { 2.0 * full[(i, j)] } else { 0.0 };
                assert!(
                    (write[(i, j)] - want).abs() < 1e-12,
                    "write {uplo:?} ({i}, {j})"
                );
            }
        }
        let mut out = Array2::zeros((150, 150));
        let mut small = Array2::zeros((149, 150));
        let (lo, add) = (Uplo::Lower, Accum::Add);
        let r = |e: Result<()>| e.unwrap_err();
        let inner = r(gemm_tri(out.view_mut(), lo, add, p.view(), q.view(), 1.0));
        assert!(matches!(inner, Error::ShapeMismatch { .. }), "{inner}");
        let sq = r(gemm_tri(
            out.view_mut(),
            lo,
            add,
            p.view(),
            mat(7, 9, 4).view(),
            1.0,
        ));
        assert!(matches!(sq, Error::NotSquare { .. }), "{sq}");
        let c = r(gemm_tri(small.view_mut(), lo, add, p.view(), q.t(), 1.0));
        assert!(matches!(c, Error::WrongShape { .. }), "{c}");
    }

    #[test]
    fn singular_diagonal_is_reported() {
        let mut l = factor(4, Uplo::Lower, 5);
        l[(2, 2)] = 0.0;
        let b = mat(4, 2, 6);
        let e = TriSolve::default()
            .forward(&[l.view(), b.view()])
            .unwrap_err();
        assert_eq!(e, Error::Singular { op: OP, index: 2 });
    }

    #[test]
    fn every_solve_matches_the_dense_rules() {
        let (n, k) = (70, 3);
        for op in all() {
            let l = factor(n, op.uplo, 7);
            let b = match op.side {
                Side::Left => mat(n, k, 8),
                Side::Right => mat(k, n, 8),
            };
            let xbar = mat(b.nrows(), b.ncols(), 9);
            let (a, ainv) = dense(&op, &l);
            let out = op.apply([l.view(), b.view()]).unwrap();
            let x = out.value().to_owned();
            let (want_x, want_bbar, want_abar) = match op.side {
                Side::Left => {
                    let bbar = ainv.t().dot(&xbar);
                    (ainv.dot(&b), bbar.clone(), -bbar.dot(&x.t()))
                }
                Side::Right => {
                    let bbar = xbar.dot(&ainv.t());
                    (b.dot(&ainv), bbar.clone(), -x.t().dot(&bbar))
                }
            };
            let back = match op.side {
                Side::Left => a.dot(&x),
                Side::Right => x.dot(&a),
            };
            assert!(close(&back, &b, 1e-12), "{op:?} op(L)·X = B");
            assert!(close(&x, &want_x, 1e-12), "{op:?} X");
            let abar_l = match op.trans {
                Trans::No => want_abar,
                Trans::Yes => want_abar.t().to_owned(),
            };
            let want_lbar = Array2::from_shape_fn((n, n), |(i, j)| {
                if op.uplo.contains(i, j) {
                    abar_l[(i, j)]
                } else {
                    0.0
                }
            });
            let [lbar, bbar] = out.backward(xbar.view()).unwrap();
            assert!(close(&bbar, &want_bbar, 1e-12), "{op:?} B̄");
            assert!(close(&lbar, &want_lbar, 1e-12), "{op:?} L̄");

            // Accumulating, and first writes into NaN, through a caller workspace.
            let mut ws =
                vec![
                    f64::NAN;
                    Rule::<f64>::workspace(&op, &[Shape(n, n), Shape(b.nrows(), b.ncols())])
                ];
            let (mut lb, mut bb) = (
                Array2::from_elem((n, n), f64::NAN),
                Array2::from_elem(b.dim(), f64::NAN),
            );
            for (first, second) in [(true, true), (true, false), (false, true)] {
                let g = |v, w: bool| if w { Grad::Write(v) } else { Grad::Skip };
                out.backward_into(
                    &[Some(xbar.view())],
                    &mut [g(lb.view_mut(), first), g(bb.view_mut(), second)],
                    Some(&mut ws),
                )
                .unwrap();
                if first {
                    assert!(close(&lb, &want_lbar, 1e-12), "{op:?} L̄ written");
                }
                if second {
                    assert!(close(&bb, &want_bbar, 1e-12), "{op:?} B̄ written");
                }
            }
            out.backward_into(
                &[Some(xbar.view())],
                &mut [Grad::Add(lb.view_mut()), Grad::Add(bb.view_mut())],
                Some(&mut ws),
            )
            .unwrap();
            assert!(close(&lb, &(&want_lbar * 2.0), 1e-12), "{op:?} L̄ added");
            assert!(close(&bb, &(&want_bbar * 2.0), 1e-12), "{op:?} B̄ added");

            // Forward mode against the adjoint identity ⟨X̄, Ẋ⟩ = ⟨L̄, L̇⟩ + ⟨B̄, Ḃ⟩.
            let (ld, bd) = (mat(n, n, 10), mat(b.nrows(), b.ncols(), 11));
            let xd = out.jvp([ld.view(), bd.view()]).unwrap();
            let lhs = (&xbar * &xd).sum();
            let rhs = (&lbar * &ld).sum() + (&bbar * &bd).sum();
            assert!(
                (lhs - rhs).abs() < 1e-10 * (1.0 + lhs.abs()),
                "{op:?} JVP {lhs} {rhs}"
            );
        }
    }
}
