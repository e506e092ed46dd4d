//! `X = A⁻¹B` or `X = A⁻ᵀB` through LU, whose factors are residuals.

use super::{
    all_finite, expect_finite, factor, is_colmajor, overflowed, residual_lu, residual_pivots,
    solvable, store_pivots, unscale,
};
use crate::blas::{gemm, lapack, Accum, Trans};
use crate::error::{Error, Result, Shape};
use crate::ops::workspace::scratch_f;
use crate::ops::{max_magnitude, rescale_exponent, scale_pow2, square};
use crate::primitive::{Grad, Partials, Rule, Saves, Shapes};
use crate::Real;
use ndarray::{ArrayView2, ArrayViewMut2};
use smallvec::smallvec;

/// The linear solve `X = op(A)⁻¹B`, `op(A) = A` ([`LuSolve::new`]) or `Aᵀ`
/// ([`LuSolve::transposed`]), for a square nonsingular `A` and an `n×k` `B` (Giles
/// 2008, "matrix inverse product"; `docs/math.md`).
///
/// - Forward: `A = PLU` (getrf), then getrs on `B` (with `trans`). The factors and
///   pivots are the residuals `LU` (`n×n`) and `ipiv` (`n×1`, LAPACK's 1-based row
///   interchanges as `T` values). A matrix of subnormal numbers or of entries near the
///   overflow threshold, whose factors getrf would make infinite, is factored as
///   `2ᵉA` (an exact scale near 1), such a `B` is solved as `2ᶠB`, and
///   `X = 2ᵉ⁻ᶠ·op(2ᵉA)⁻¹(2ᶠB)`: it overflows only where `X` does, within rounding.
///   The residual `LU` holds the factors of `A`.
/// - JVP: `Ẋ = op(A)⁻¹(Ḃ − op(Ȧ)X)`: one GEMM and one getrs with the residual LU.
/// - VJP: `B̄ = op(A)⁻ᵀX̄`, one getrs with the transpose flag flipped on the residual LU
///   (no second factorisation), then `Ā = −B̄Xᵀ` (`X = A⁻¹B`) or `Ā = −XB̄ᵀ`
///   (`X = A⁻ᵀB`), one GEMM writing or adding into `Ā`.
///
/// Assumes `A` nonsingular. Errors: [`Error::NotSquare`]; [`Error::ShapeMismatch`]
/// when `B` has not `n` rows; [`Error::NonFinite`] for NaN or infinity in `A` or `B`;
/// [`Error::Singular`] naming the first exactly zero pivot `Uₖₖ`;
/// [`Error::IllConditioned`] naming a pivot whose reciprocal overflows, or the smallest
/// pivot when the scaled solve overflows; [`Error::Overflow`] when `X` itself does
/// (its exact value is beyond the largest finite number). The reverse rule reads the
/// residuals (for either gradient) and `X` (only for `Ā`), never `A` or `B`; it and the
/// forward-mode rule return [`Error::NonFinite`] for a residual `LU` that overflowed
/// (the factors of `A` grow past its entries, which may be near the threshold). Workspace: `n² + nk` (the LU factors, or a
/// copy of a residual that is not column-major, and `X`, `B̄` or `Ẋ` when their buffer
/// is not a column-major first write).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Hash)]
pub struct LuSolve {
    /// `X = A⁻¹B` (`No`) or `X = A⁻ᵀB` (`Yes`).
    pub trans: Trans,
}

impl LuSolve {
    /// `X = A⁻¹B`.
    pub const fn new() -> Self {
        LuSolve { trans: Trans::No }
    }
    /// `X = A⁻ᵀB`.
    pub const fn transposed() -> Self {
        LuSolve { trans: Trans::Yes }
    }
}

/// Runs `f` on a column-major `r×c` view whose result is written into `out` (not read):
/// `f` runs in `out` itself when LAPACK can address it, otherwise in the front of `ws`,
/// which is then copied into `out`.
fn through_colmajor<T: Real>(
    op: &'static str,
    mut out: ArrayViewMut2<'_, T>,
    ws: &mut [T],
    f: impl FnOnce(ArrayViewMut2<'_, T>) -> Result<()>,
) -> Result<()> {
    if is_colmajor(&out.view()) {
        return f(out);
    }
    let (mut w, _) = scratch_f(op, ws, out.dim())?;
    f(w.view_mut())?;
    out.assign(&w);
    Ok(())
}

impl<T: Real> Rule<T> for LuSolve {
    fn name(&self) -> &'static str {
        match self.trans {
            Trans::No => "LuSolve(A⁻¹·B)",
            Trans::Yes => "LuSolve(A⁻ᵀ·B)",
        }
    }
    fn arity(&self) -> usize {
        2
    }
    fn input_name(&self, i: usize) -> &'static str {
        ["A", "B"].get(i).copied().unwrap_or("X")
    }
    fn residuals(&self) -> usize {
        2
    }
    fn output_name(&self, k: usize) -> &'static str {
        ["X", "LU", "ipiv"].get(k).copied().unwrap_or("R")
    }
    fn shapes(&self, x: &[Shape]) -> Result<Shapes> {
        let op = Rule::<T>::name(self);
        let n = square(op, "A", x[0])?;
        if x[1].0 != n {
            return Err(Error::ShapeMismatch {
                op,
                what: "B must have as many rows as A",
                lhs_name: "A",
                lhs: x[0],
                rhs_name: "B",
                rhs: x[1],
            });
        }
        Ok(smallvec![x[1], Shape(n, n), Shape(n, 1)])
    }
    fn saves(&self, wanted: &[bool]) -> Saves {
        match (wanted[0], wanted[1]) {
            (true, _) => Saves::NONE.output(0).output(1).output(2),
            (false, true) => Saves::NONE.output(1).output(2),
            (false, false) => Saves::NONE,
        }
    }
    fn workspace(&self, x: &[Shape]) -> usize {
        x[0].0 * x[0].0 + x[1].0 * x[1].1
    }
    fn eval(
        &self,
        x: &[ArrayView2<'_, T>],
        y: &mut [ArrayViewMut2<'_, T>],
        ws: &mut [T],
    ) -> Result<()> {
        let op = Rule::<T>::name(self);
        let n = x[0].nrows();
        let (mut lu, rest) = scratch_f(op, ws, (n, n))?;
        let (piv, zero, e) = factor(op, x[0].view(), lu.view_mut())?;
        if let Some(index) = zero {
            return Err(Error::Singular { op, index });
        }
        solvable(op, &lu.view())?;
        expect_finite(op, "B", &x[1])?;
        let (out, res) = y.split_at_mut(1);
        res[0].assign(&lu);
        unscale(res[0].view_mut(), e);
        store_pivots(&piv, res[1].view_mut());
        let lu = lu.view();
        // The factors are those of 2ᵉA, and B is scaled on its own (its entries may be
        // near the overflow threshold where A's are not): X = 2ᵉ⁻ᶠ·op(2ᵉA)⁻¹(2ᶠB).
        // Scaling a tiny B up loses nothing; scaling a huge one down would flush a
        // column far smaller than the largest to zero, though each column is a solve of
        // its own, so as for A that happens only if the solve with B as it is
        // overflows.
        let mut solve = |f: i32, out: ArrayViewMut2<'_, T>| {
            through_colmajor(op, out, &mut *rest, |mut w| {
                w.assign(&x[1]);
                scale_pow2(w.view_mut(), f);
                lapack::getrs(op, lu, &piv, self.trans, w)
            })
        };
        let scale = rescale_exponent(max_magnitude(&x[1]));
        let mut f = scale.max(0);
        solve(f, out[0].view_mut())?;
        if scale < 0 && !all_finite(&out[0].view()) {
            f = scale;
            solve(f, out[0].view_mut())?;
        }
        if !all_finite(&out[0].view()) {
            return Err(overflowed(op, &lu, e));
        }
        scale_pow2(out[0].view_mut(), e - f);
        if !all_finite(&out[0].view()) {
            return Err(Error::Overflow {
                op,
                name: "X",
                dtype: T::NAME,
            });
        }
        Ok(())
    }
    fn pullback(
        &self,
        _x: &[ArrayView2<'_, T>],
        y: &[ArrayView2<'_, T>],
        ybar: &Partials<'_, '_, T>,
        grads: &mut [Grad<'_, T>],
        ws: &mut [T],
    ) -> Result<()> {
        let op = Rule::<T>::name(self);
        let (ga, gb) = grads.split_at_mut(1);
        let (ga, gb) = (&mut ga[0], &mut gb[0]);
        if !ga.wanted() && !gb.wanted() {
            return Ok(());
        }
        let piv = residual_pivots(op, &y[2])?;
        let (lu, rest) = residual_lu(op, y[1].view(), ws)?;
        solvable(op, &lu)?;
        // B̄ = op(A)⁻ᵀX̄: one getrs with the flag flipped, in B̄'s buffer when that is a
        // column-major first write, else in the workspace.
        let solve = |mut w: ArrayViewMut2<'_, T>| {
            w.assign(&ybar.view(0));
            lapack::getrs(op, lu, &piv, self.trans.flip(), w)
        };
        let (mut scratch, _) = scratch_f(op, rest, y[0].dim())?;
        let bbar: ArrayView2<'_, T> = match gb {
            Grad::Write(b) if is_colmajor(&b.view()) => {
                solve(b.view_mut())?;
                b.view()
            }
            gb => {
                solve(scratch.view_mut())?;
                if let Some((g, acc)) = gb.target() {
                    acc.assign(g, scratch.view());
                }
                scratch.view()
            }
        };
        if let Some((g, acc)) = ga.target() {
            let x = y[0].view();
            match self.trans {
                Trans::No => gemm(g, acc, bbar, x.t(), -T::one())?,
                Trans::Yes => gemm(g, acc, x, bbar.t(), -T::one())?,
            }
        }
        Ok(())
    }
    fn pushforward(
        &self,
        _x: &[ArrayView2<'_, T>],
        y: &[ArrayView2<'_, T>],
        xdot: &Partials<'_, '_, T>,
        ydot: &mut [ArrayViewMut2<'_, T>],
        ws: &mut [T],
    ) -> Result<()> {
        let op = Rule::<T>::name(self);
        let piv = residual_pivots(op, &y[2])?;
        let (lu, rest) = residual_lu(op, y[1].view(), ws)?;
        solvable(op, &lu)?;
        let x = y[0].view();
        through_colmajor(op, ydot[0].view_mut(), rest, |mut w| {
            // Ḃ − op(Ȧ)X, then op(A)⁻¹ of it.
            match xdot.get(0) {
                Some(ad) => {
                    gemm(
                        w.view_mut(),
                        Accum::Replace,
                        self.trans.view(ad),
                        x,
                        -T::one(),
                    )?;
                    if let Some(bd) = xdot.get(1) {
                        w += &bd;
                    }
                }
                None => w.assign(&xdot.view(1)),
            }
            lapack::getrs(op, lu, &piv, self.trans, w)
        })
    }
}
