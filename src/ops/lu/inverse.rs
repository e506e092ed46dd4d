//! `C = A⁻¹` through LU.

use super::{all_finite, factor, inverse_into, is_colmajor, overflowed, solvable};
use crate::blas::{gemm, Accum, Trans};
use crate::error::{Error, Result, Shape};
use crate::ops::square;
use crate::ops::workspace::scratch_f;
use crate::primitive::{Grad, Partials, Rule, Saves, Shapes};
use crate::Real;
use ndarray::{ArrayView2, ArrayViewMut2};
use smallvec::smallvec;

const OP: &str = "Inverse(A⁻¹)";

/// The matrix inverse `C = A⁻¹` of a square `A` (Giles 2008, "inverse";
/// `docs/math.md`).
///
/// - Forward: `A = PLU` (getrf) in the workspace, then getrs on the identity straight
///   into `C`'s buffer: solving `AC = I` when `C` is column-major, `AᵀCᵀ = I` in the
///   column-major view `Cᵀ` when it is row-major, and through the workspace otherwise.
///   A matrix of subnormal numbers or of entries near the overflow threshold is
///   factored as `2ᵉA` (exact, near 1) and `C = 2ᵉ(2ᵉA)⁻¹`.
/// - JVP: `Ċ = −CȦC`, two GEMMs with `ȦC` in the workspace.
/// - VJP: `Ā = −CᵀC̄Cᵀ`, two GEMMs with `C̄Cᵀ` in the workspace, the second writing or
///   adding into `Ā`.
///
/// Assumes `A` invertible. Errors: [`Error::NotSquare`]; [`Error::NonFinite`] for NaN or
/// infinity in `A`; [`Error::Singular`] naming the first exactly zero pivot `Uₖₖ` of the
/// LU factorisation; [`Error::IllConditioned`] naming a pivot whose reciprocal overflows,
/// or, when `A` is so close to singular that `A⁻¹` overflows, its smallest pivot. The reverse rule reads the output `C` only (not `A`). Workspace:
/// `2n²` (the LU factors, and `C` when its buffer is neither row- nor column-major).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Hash)]
pub struct Inverse;

impl<T: Real> Rule<T> for Inverse {
    fn name(&self) -> &'static str {
        OP
    }
    fn arity(&self) -> usize {
        1
    }
    fn shapes(&self, x: &[Shape]) -> Result<Shapes> {
        let n = square(OP, "A", x[0])?;
        Ok(smallvec![Shape(n, n)])
    }
    fn saves(&self, wanted: &[bool]) -> Saves {
        if wanted[0] {
            Saves::NONE.output(0)
        } else {
            Saves::NONE
        }
    }
    fn workspace(&self, x: &[Shape]) -> usize {
        2 * x[0].0 * x[0].0
    }
    fn eval(
        &self,
        x: &[ArrayView2<'_, T>],
        y: &mut [ArrayViewMut2<'_, T>],
        ws: &mut [T],
    ) -> Result<()> {
        let n = x[0].nrows();
        let (mut lu, rest) = scratch_f(OP, ws, (n, n))?;
        let (piv, zero, e) = factor(OP, x[0].view(), lu.view_mut())?;
        if let Some(index) = zero {
            return Err(Error::Singular { op: OP, index });
        }
        let lu = lu.view();
        solvable(OP, &lu)?;
        let c = y[0].view_mut();
        if is_colmajor(&c.view()) {
            inverse_into(OP, lu, &piv, Trans::No, c)?;
        } else if is_colmajor(&c.view().reversed_axes()) {
            // Cᵀ = A⁻ᵀ, column-major in a row-major buffer.
            inverse_into(OP, lu, &piv, Trans::Yes, c.reversed_axes())?;
        } else {
            let (mut w, _) = scratch_f(OP, rest, (n, n))?;
            inverse_into(OP, lu, &piv, Trans::No, w.view_mut())?;
            y[0].assign(&w);
        }
        if e != 0 {
            // The factors are those of 2ᵉA: A⁻¹ = 2ᵉ(2ᵉA)⁻¹.
            let s = T::of(2f64.powi(e));
            y[0].mapv_inplace(|v| v * s);
        }
        if !all_finite(&y[0].view()) {
            return Err(overflowed(OP, &lu, e));
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
        if let Some((g, acc)) = grads[0].target() {
            let c = y[0].view();
            let (mut w, _) = scratch_f(OP, ws, c.dim())?;
            gemm(w.view_mut(), Accum::Replace, ybar.view(0), c.t(), T::one())?;
            gemm(g, acc, c.t(), w.view(), -T::one())?;
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
        let c = y[0].view();
        let (mut w, _) = scratch_f(OP, ws, c.dim())?;
        gemm(w.view_mut(), Accum::Replace, xdot.view(0), c, T::one())?;
        gemm(ydot[0].view_mut(), Accum::Replace, c, w.view(), -T::one())
    }
}
