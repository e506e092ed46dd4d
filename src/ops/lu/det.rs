//! `c = det A` and `(sign det A, log|det A|)` through one LU, whose factors are residuals.

use super::{
    adjugate_t, all_finite, determinant, factor, inverse_into, overflowed, permutation_sign,
    residual_lu, residual_pivots, solvable, store_pivots, unscale, Pivots,
};
use crate::blas::Trans;
use crate::error::{Error, Result, Shape};
use crate::ops::square;
use crate::ops::workspace::scratch_f;
use crate::primitive::{Grad, Partials, Rule, Saves, Shapes};
use crate::Real;
use ndarray::{ArrayView2, ArrayViewMut2, Zip};
use smallvec::smallvec;

/// Names of the residuals that follow the differentiable outputs.
const RESIDUALS: [&str; 2] = ["LU", "ipiv"];

/// The output shapes of a determinant with `m` scalar outputs: `m` times `1×1`, then
/// the residuals `LU` (`n×n`) and `ipiv` (`n×1`).
fn det_shapes(op: &'static str, m: usize, a: Shape) -> Result<Shapes> {
    let n = square(op, "A", a)?;
    let mut s: Shapes = smallvec![Shape(1, 1); m];
    s.push(Shape(n, n));
    s.push(Shape(n, 1));
    Ok(s)
}

/// `2ᵉA = PLU` ([`factor`]) through the first `n²` elements of `ws`, the factors of
/// `A` ([`unscale`]) into the residuals `y[m]` and the pivots into `y[m + 1]`: the
/// pivots, the first zero pivot if any, `e`, and the factors of `2ᵉA` (in `ws`).
#[allow(clippy::type_complexity)]
fn factor_residuals<'w, T: Real>(
    op: &'static str,
    a: ArrayView2<'_, T>,
    res: &mut [ArrayViewMut2<'_, T>],
    ws: &'w mut [T],
) -> Result<(Pivots, Option<usize>, i32, ArrayViewMut2<'w, T>)> {
    let n = a.nrows();
    let (mut lu, _) = scratch_f(op, ws, (n, n))?;
    let (piv, zero, e) = factor(op, a, lu.view_mut())?;
    res[0].assign(&lu);
    unscale(res[0].view_mut(), e);
    store_pivots(&piv, res[1].view_mut());
    Ok((piv, zero, e, lu))
}

/// The determinant `c = det A` of a square `A`, a `1×1` output (Giles 2008,
/// "determinant"; `docs/math.md`, determinant).
///
/// - Forward: `A = PLU` (getrf), `c = det P · Πᵢ Uᵢᵢ`. The factors and pivots are the
///   residuals `LU` (`n×n`) and `ipiv` (`n×1`, LAPACK's 1-based row interchanges as `T`
///   values), so the other rules do not refactor.
/// - JVP: `ċ = c·tr(A⁻¹Ȧ) = ⟨adj(A)ᵀ, Ȧ⟩`.
/// - VJP: `Ā = c̄·c·A⁻ᵀ = c̄·adj(A)ᵀ`, with `A⁻ᵀ` from the residual LU by one getrs
///   (transposed) on the identity.
///
/// Defined at every `A`, singular ones included: there `c = 0` and the gradient is the
/// transposed adjugate, finite (zero when the rank is `n − 2` or less), computed from
/// the residual LU when it has one zero pivot and through an SVD of `A = PLU` otherwise
/// (see `docs/math.md`). A matrix of subnormal numbers or of entries near the overflow
/// threshold is factored as `2ᵉA` (exact, near 1) and `c = 2⁻ⁿᵉ det(2ᵉA)` taken as a
/// mantissa and a power of two: zero only when `det A` underflows; the residual `LU`
/// holds the factors of `A`. Errors: [`Error::NotSquare`]; [`Error::NonFinite`] for NaN
/// or infinity in `A`, or in the residual `LU` read by the rules; [`Error::InvalidArgument`] when `det A` overflows `T` (use
/// [`SlogDet`]). The reverse rule reads the residuals only, never `A` or `c`.
/// Workspace: `2n²` (a copy of a residual `LU` that is not column-major, and `adj(A)ᵀ`).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Hash)]
pub struct Det;

const DET: &str = "Det";

impl<T: Real> Rule<T> for Det {
    fn name(&self) -> &'static str {
        DET
    }
    fn arity(&self) -> usize {
        1
    }
    fn residuals(&self) -> usize {
        2
    }
    fn output_name(&self, k: usize) -> &'static str {
        match k {
            0 => "det",
            k => RESIDUALS.get(k - 1).copied().unwrap_or("R"),
        }
    }
    fn shapes(&self, x: &[Shape]) -> Result<Shapes> {
        det_shapes(DET, 1, x[0])
    }
    fn saves(&self, wanted: &[bool]) -> Saves {
        if wanted[0] {
            Saves::NONE.output(1).output(2)
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
        let (c, res) = y.split_at_mut(1);
        let (piv, _, e, lu) = factor_residuals(DET, x[0].view(), res, ws)?;
        let n = i64::try_from(lu.nrows()).unwrap_or(i64::MAX);
        let det = determinant(&lu.view(), &piv, -n.saturating_mul(i64::from(e)));
        if !det.is_finite() {
            return Err(Error::InvalidArgument {
                op: DET,
                msg: format!("det A overflows {}; use SlogDet for its logarithm", T::NAME),
            });
        }
        c[0][(0, 0)] = det;
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
        let Some((g, acc)) = grads[0].target() else {
            return Ok(());
        };
        let piv = residual_pivots(DET, &y[2])?;
        let (lu, rest) = residual_lu(DET, y[1].view(), ws)?;
        let (mut adj, _) = scratch_f(DET, rest, lu.dim())?;
        adjugate_t(DET, lu, &piv, adj.view_mut())?;
        let cbar = ybar.view(0)[(0, 0)];
        Zip::from(g)
            .and(&adj)
            .for_each(|g, &v| acc.store(g, cbar * v));
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
        let piv = residual_pivots(DET, &y[2])?;
        let (lu, rest) = residual_lu(DET, y[1].view(), ws)?;
        let (mut adj, _) = scratch_f(DET, rest, lu.dim())?;
        adjugate_t(DET, lu, &piv, adj.view_mut())?;
        // A zero entry of Ȧ contributes zero, also where adj(A) overflows (∞·0 = NaN).
        ydot[0][(0, 0)] = Zip::from(&adj)
            .and(&xdot.view(0))
            .fold(
                T::zero(),
                |s, &g, &ad| {
                    if ad == T::zero() {
                        s
                    } else {
                        s + g * ad
                    }
                },
            );
        Ok(())
    }
}

/// The sign and the logarithm of the absolute value of the determinant of a square,
/// nonsingular `A`: two `1×1` outputs `s = sign det A` (`±1`) and `ℓ = log|det A|`
/// (Giles 2008, "determinant", through `log`; `docs/math.md`, determinant).
///
/// - Forward: `A = PLU` (getrf), `s = det P · Πᵢ sign Uᵢᵢ`, `ℓ = Σᵢ log|Uᵢᵢ|`, which
///   neither overflows nor underflows where `det A` would; for a matrix of subnormal
///   numbers or of entries near the overflow threshold, of `2ᵉA` (an exact scale that
///   brings it near 1) less `n·e·log 2`. The factors (of `A`, overflowing only where
///   those of `A` do) and pivots are the residuals `LU` and `ipiv`, as for [`Det`].
/// - JVP: `ṡ = 0` (the sign is piecewise constant), `ℓ̇ = tr(A⁻¹Ȧ)`.
/// - VJP: `Ā = ℓ̄·A⁻ᵀ` (`s̄` contributes nothing), `A⁻ᵀ` from the residual LU by one
///   getrs (transposed) on the identity.
///
/// Assumes `A` nonsingular: at a singular `A` `log 0` is undefined and the forward pass
/// returns [`Error::Singular`] naming the first zero pivot `Uₖₖ`; the other passes,
/// which solve with `A⁻ᵀ`, return [`Error::IllConditioned`] for a pivot whose
/// reciprocal overflows or when `A⁻ᵀ` overflows (then naming the smallest pivot), and
/// [`Error::NonFinite`] for a residual `LU` that overflowed (the factors of `A` grow
/// past entries near the overflow threshold). Other errors: [`Error::NotSquare`];
/// [`Error::NonFinite`] for NaN or infinity in `A`. The reverse rule reads the residuals
/// only. Workspace: `2n²`, as for [`Det`].
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Hash)]
pub struct SlogDet;

const SLOGDET: &str = "SlogDet";

/// `A⁻ᵀ` into the column-major `out`, from the residuals; singular factors are an error.
fn inverse_t<T: Real>(
    lu: ArrayView2<'_, T>,
    piv: &[i32],
    mut out: ArrayViewMut2<'_, T>,
) -> Result<()> {
    solvable(SLOGDET, &lu)?;
    inverse_into(SLOGDET, lu, piv, Trans::Yes, out.view_mut())?;
    if all_finite(&out.view()) {
        Ok(())
    } else {
        Err(overflowed(SLOGDET, &lu, 0))
    }
}

impl<T: Real> Rule<T> for SlogDet {
    fn name(&self) -> &'static str {
        SLOGDET
    }
    fn arity(&self) -> usize {
        1
    }
    fn outputs(&self) -> usize {
        2
    }
    fn residuals(&self) -> usize {
        2
    }
    fn output_name(&self, k: usize) -> &'static str {
        match k {
            0 => "sign",
            1 => "logabsdet",
            k => RESIDUALS.get(k - 2).copied().unwrap_or("R"),
        }
    }
    fn shapes(&self, x: &[Shape]) -> Result<Shapes> {
        det_shapes(SLOGDET, 2, x[0])
    }
    fn saves(&self, wanted: &[bool]) -> Saves {
        if wanted[0] {
            Saves::NONE.output(2).output(3)
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
        let (out, res) = y.split_at_mut(2);
        let (piv, zero, e, lu) = factor_residuals(SLOGDET, x[0].view(), res, ws)?;
        if let Some(index) = zero {
            return Err(Error::Singular { op: SLOGDET, index });
        }
        // log|det A| = Σᵢ log|Uᵢᵢ| − n·e·log 2 for the factors of 2ᵉA.
        let (mut sign, mut log) = (permutation_sign::<T>(&piv), T::zero());
        for &d in lu.diag() {
            if d < T::zero() {
                sign = -sign;
            }
            log += d.abs().ln();
        }
        if e != 0 {
            log -= T::of(lu.nrows() as f64 * f64::from(e) * std::f64::consts::LN_2);
        }
        out[0][(0, 0)] = sign;
        out[1][(0, 0)] = log;
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
        let Some((mut g, acc)) = grads[0].target() else {
            return Ok(());
        };
        // Only ℓ̄ reaches Ā: without it the gradient is zero.
        let Some(lbar) = ybar.get(1).map(|l| l[(0, 0)]) else {
            if acc == crate::Accum::Replace {
                g.fill(T::zero());
            }
            return Ok(());
        };
        let piv = residual_pivots(SLOGDET, &y[3])?;
        let (lu, rest) = residual_lu(SLOGDET, y[2].view(), ws)?;
        let (mut inv_t, _) = scratch_f(SLOGDET, rest, lu.dim())?;
        inverse_t(lu, &piv, inv_t.view_mut())?;
        Zip::from(g)
            .and(&inv_t)
            .for_each(|g, &v| acc.store(g, lbar * v));
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
        let piv = residual_pivots(SLOGDET, &y[3])?;
        let (lu, rest) = residual_lu(SLOGDET, y[2].view(), ws)?;
        let (mut inv_t, _) = scratch_f(SLOGDET, rest, lu.dim())?;
        inverse_t(lu, &piv, inv_t.view_mut())?;
        ydot[0][(0, 0)] = T::zero();
        ydot[1][(0, 0)] = Zip::from(&inv_t)
            .and(&xdot.view(0))
            .fold(T::zero(), |s, &g, &ad| s + g * ad);
        Ok(())
    }
}
