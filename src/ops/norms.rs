//! Matrix norms as `1×1` outputs: Frobenius, nuclear (sum of singular values) and
//! spectral (largest singular value), with their forward- and reverse-mode rules
//! (Giles 2008, singular value decomposition; `docs/math.md`, norms).
//!
//! ```
//! use matgrad::prelude::*;
//! use ndarray::array;
//!
//! let a = array![[3.0_f64, 0.0], [0.0, -4.0], [0.0, 0.0]];
//! let fro = FrobeniusNorm.apply([a.view()])?;
//! assert!((fro.value()[(0, 0)] - 5.0).abs() < 1e-12);
//! let nuc = NuclearNorm.apply([a.view()])?;
//! assert!((nuc.value()[(0, 0)] - 7.0).abs() < 1e-12);
//! let spec = SpectralNorm.apply([a.view()])?;
//! assert!((spec.value()[(0, 0)] - 4.0).abs() < 1e-12);
//! let [abar] = spec.backward(array![[1.0]].view())?;   // u₁v₁ᵀ
//! assert!((abar[(1, 1)] + 1.0).abs() < 1e-12);
//! # Ok::<(), matgrad::Error>(())
//! ```
//!
//! Where a norm is not differentiable the rules use a documented subgradient, the same
//! in both modes (the forward mode is its linearization `⟨G, Ȧ⟩`, not the one-sided
//! directional derivative): the zero matrix at `A = 0` for all three, and for the
//! nuclear norm the minimum-norm subgradient `U_r V_rᵀ` over the singular values above
//! the zero tolerance. Only the spectral norm with `σ₁ = σ₂ > 0` within tolerance has
//! no such choice made: it is [`Error::DegenerateEigenvalues`] naming `(0, 1)`.

use super::eigh::{expect_finite, max_abs, tolerance};
use super::svd::{expect_lapack_dims, svd_workspace, thin_svd};
use super::workspace::{rmat_mut, scratch, take};
use crate::blas::{gemm, Accum};
use crate::error::{Error, Result, Shape};
use crate::primitive::{Grad, Partials, Pass, Rule, Saves, Shapes};
use crate::Real;
use ndarray::{ArrayView2, ArrayViewMut2, Zip};
use smallvec::smallvec;

/// `⟨X, Y⟩ = Σᵢⱼ XᵢⱼYᵢⱼ`.
fn inner<T: Real>(x: ArrayView2<'_, T>, y: ArrayView2<'_, T>) -> T {
    let mut s = T::zero();
    Zip::from(x).and(y).for_each(|&a, &b| s += a * b);
    s
}

/// `c = ‖A‖_F = (Σᵢⱼ Aᵢⱼ²)^½`, for any shape.
///
/// - Forward: as LAPACK's dnrm2 and dlassq, a sum of squares of `sA` for a power of two
///   `s` that brings `max|Aᵢⱼ|` near 1 (exact scaling, so subnormal entries keep their
///   bits), then `c = ‖sA‖/s` in one rounding: it neither overflows nor underflows
///   where the norm itself does not; NaN and infinity are [`Error::NonFinite`].
/// - JVP: `ċ = ⟨A, Ȧ⟩/c`, as `⟨sA/‖sA‖, Ȧ⟩` when `⟨A, Ȧ⟩` alone overflows or
///   underflows or `c` is subnormal.
/// - VJP: `Ā = (c̄/c)·A` (Giles 2008: `c² = tr(AᵀA)`). When `c` is subnormal (it has
///   lost bits) or `c̄/c` alone overflows or underflows, the same with `c` replaced by
///   `‖sA‖` and `A` by `sA`, as `(c̄/‖sA‖)·sA`, or `c̄·(sA/‖sA‖)` when `c̄/‖sA‖`
///   underflows: the gradient overflows or underflows only when its value does.
///
/// At `A = 0` the norm is not differentiable; both rules return the zero subgradient
/// (`Ā = 0`, `ċ = 0`), the minimum-norm element of the subdifferential, the unit ball.
/// Saves the input `A` and the output `c`; no workspace.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, Default)]
pub struct FrobeniusNorm;

impl<T: Real> Rule<T> for FrobeniusNorm {
    fn name(&self) -> &'static str {
        "FrobeniusNorm"
    }
    fn arity(&self) -> usize {
        1
    }
    fn shapes(&self, _x: &[Shape]) -> Result<Shapes> {
        Ok(smallvec![Shape(1, 1)])
    }
    fn saves(&self, _wanted: &[bool]) -> Saves {
        Saves::NONE.input(0).output(0)
    }
    fn eval(
        &self,
        x: &[ArrayView2<'_, T>],
        y: &mut [ArrayViewMut2<'_, T>],
        _: &mut [T],
    ) -> Result<()> {
        let op = Rule::<T>::name(self);
        let a = x[0].view();
        expect_finite(op, &a, false)?;
        let (s, cs) = scaled_norm(a);
        // One rounding, in the subnormal range too: cs is normal, 1/s a power of two.
        let c = cs * (T::one() / s);
        if !c.is_finite() {
            return Err(Error::InvalidArgument {
                op,
                msg: "the norm overflows the floating-point range".into(),
            });
        }
        y[0][(0, 0)] = c;
        Ok(())
    }
    fn pullback(
        &self,
        x: &[ArrayView2<'_, T>],
        y: &[ArrayView2<'_, T>],
        ybar: &Partials<'_, '_, T>,
        grads: &mut [Grad<'_, T>],
        _: &mut [T],
    ) -> Result<()> {
        let Some((g, acc)) = grads[0].target() else {
            return Ok(());
        };
        let (c, cbar) = (y[0][(0, 0)], ybar.view(0)[(0, 0)]);
        let k = cbar / c;
        let z = Zip::from(g).and(&x[0]);
        if c.is_normal() && (k.is_normal() || cbar == T::zero()) {
            z.for_each(|g, &a| acc.store(g, k * a));
        } else if c == T::zero() {
            z.for_each(|g, _| acc.store(g, T::zero()));
        } else {
            // A subnormal c has lost bits, and c̄/c may overflow or underflow where
            // c̄·A/c does not: c̄/‖sA‖·(sA) with A scaled exactly into the normal range.
            let (s, cs) = scaled_norm(x[0].view());
            let k = cbar / cs;
            if k.is_normal() || cbar == T::zero() {
                z.for_each(|g, &a| acc.store(g, k * (s * a)));
            } else {
                z.for_each(|g, &a| acc.store(g, s * a / cs * cbar));
            }
        }
        Ok(())
    }
    fn pushforward(
        &self,
        x: &[ArrayView2<'_, T>],
        y: &[ArrayView2<'_, T>],
        xdot: &Partials<'_, '_, T>,
        ydot: &mut [ArrayViewMut2<'_, T>],
        _: &mut [T],
    ) -> Result<()> {
        let c = y[0][(0, 0)];
        let t = if c == T::zero() {
            T::zero()
        } else {
            let t = inner(x[0].view(), xdot.view(0));
            if c.is_normal() && t.is_normal() {
                t / c
            } else {
                // ⟨A, Ȧ⟩ overflows or underflows where ⟨sA/‖sA‖, Ȧ⟩ need not (its
                // weights are at most 1), and a subnormal c has lost bits.
                let (s, cs) = scaled_norm(x[0].view());
                let mut t = T::zero();
                Zip::from(&x[0])
                    .and(&xdot.view(0))
                    .for_each(|&a, &d| t += s * a / cs * d);
                t
            }
        };
        ydot[0][(0, 0)] = t;
        Ok(())
    }
}

/// `(s, ‖sA‖_F)` for a power of two `s` that brings `max|Aᵢⱼ|` near 1, as LAPACK's
/// dnrm2 and dlassq scale: `sAᵢⱼ` is exact wherever it is normal, so subnormal entries
/// keep all their bits, and the squares neither overflow nor underflow where they
/// matter. `s = 1` and a norm of 0 for a zero (or empty) `A`; `A` is finite.
fn scaled_norm<T: Real>(a: ArrayView2<'_, T>) -> (T, T) {
    let m = max_abs(a.view());
    if m == T::zero() {
        return (T::one(), T::zero());
    }
    // The exponent of the largest entry, clamped so that 2^±e is a normal number of T
    // (the range of an f32 is 2^±126, of an f64 2^±1022): a smaller or larger entry is
    // still brought far enough from both ends for its square.
    let limit = if T::NAME == "f32" { 100 } else { 1000 };
    let e = (m.to64().log2().floor() as i32).clamp(-limit, limit);
    let s = T::of(2f64.powi(-e));
    let sum = a.iter().fold(T::zero(), |acc, &v| {
        let t = s * v;
        acc + t * t
    });
    (s, sum.sqrt())
}

/// Singular values above the zero tolerance `DEGENERACY·ε·s₁` (`s` is descending).
fn rank<T: Real>(s: ArrayView2<'_, T>) -> usize {
    let tau = tolerance(max_abs(s));
    s.column(0).iter().take_while(|&&x| x > tau).count()
}

/// `c = ‖A‖_* = Σᵢ σᵢ`, the nuclear (trace) norm, through the thin SVD
/// `A = U diag(s) Vᵀ` (Giles 2008, singular value decomposition; `docs/math.md`, norms).
///
/// - Forward: LAPACK gesdd, as [`Svd`](super::svd::Svd); `U`, `s`, `V` are kept as
///   residuals ([`Rule::residuals`]) for the other two rules, so nothing is refactored.
/// - JVP: `ċ = Σᵢ₍σᵢ>τ₎ uᵢᵀȦvᵢ = ⟨U_rV_rᵀ, Ȧ⟩` (one GEMM `ȦV_r`).
/// - VJP: `Ā = c̄·U_rV_rᵀ`, one GEMM straight into the gradient buffer, where `U_r`,
///   `V_r` are the columns whose singular value exceeds `τ = DEGENERACY·ε·σ₁`.
///
/// Where every σ is above `τ` this is the gradient `UVᵀ` (unique even for repeated
/// singular values). A zero singular value makes the norm non-differentiable; dropping
/// its columns chooses the minimum-norm subgradient, which does not depend on the
/// arbitrary singular vectors LAPACK returns for it (`UVᵀ` over all columns would be
/// another subgradient, but a basis-dependent one). At `A = 0` it is `0`.
///
/// Residuals `U` (`m×k`), `s` (`k×1`), `V` (`n×k`); saves those three, not `A` or `c`.
/// Workspace: the SVD's (see [`Svd`](super::svd::Svd)), at least `mk` for the JVP.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, Default)]
pub struct NuclearNorm;

impl<T: Real> Rule<T> for NuclearNorm {
    fn name(&self) -> &'static str {
        "NuclearNorm"
    }
    fn arity(&self) -> usize {
        1
    }
    fn residuals(&self) -> usize {
        3
    }
    fn output_name(&self, k: usize) -> &'static str {
        ["C", "U", "s", "V"].get(k).copied().unwrap_or("R")
    }
    fn shapes(&self, x: &[Shape]) -> Result<Shapes> {
        let Shape(m, n) = x[0];
        expect_lapack_dims(Rule::<T>::name(self), x[0])?;
        let k = m.min(n);
        Ok(smallvec![
            Shape(1, 1),
            Shape(m, k),
            Shape(k, 1),
            Shape(n, k)
        ])
    }
    fn saves(&self, _wanted: &[bool]) -> Saves {
        Saves::NONE.output(1).output(2).output(3)
    }
    fn workspace(&self, x: &[Shape]) -> usize {
        let Shape(m, n) = x[0];
        svd_workspace::<T>(m, n).max(m.saturating_mul(m.min(n)))
    }
    /// The reverse pass works from the saved factors alone.
    fn pass_workspace(&self, x: &[Shape], pass: Pass<'_, '_, T>) -> usize {
        match pass {
            Pass::Pullback(_) => 0,
            Pass::Eval | Pass::Pushforward => Rule::<T>::workspace(self, x),
        }
    }
    fn eval(
        &self,
        x: &[ArrayView2<'_, T>],
        y: &mut [ArrayViewMut2<'_, T>],
        ws: &mut [T],
    ) -> Result<()> {
        let op = Rule::<T>::name(self);
        let [c, u, s, v] = y else {
            return Err(Error::Arity {
                op,
                what: "output buffers",
                expected: 4,
                got: y.len(),
            });
        };
        thin_svd(
            op,
            x[0].view(),
            u.view_mut(),
            s.view_mut(),
            v.view_mut(),
            ws,
        )?;
        c[(0, 0)] = s.iter().fold(T::zero(), |a, &b| a + b);
        Ok(())
    }
    fn pullback(
        &self,
        _x: &[ArrayView2<'_, T>],
        y: &[ArrayView2<'_, T>],
        ybar: &Partials<'_, '_, T>,
        grads: &mut [Grad<'_, T>],
        _: &mut [T],
    ) -> Result<()> {
        let Some((g, acc)) = grads[0].target() else {
            return Ok(());
        };
        let r = rank(y[2].view());
        let u = y[1].slice(ndarray::s![.., ..r]);
        let v = y[3].slice(ndarray::s![.., ..r]);
        gemm(g, acc, u, v.t(), ybar.view(0)[(0, 0)])
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
        let r = rank(y[2].view());
        let u = y[1].slice(ndarray::s![.., ..r]);
        let v = y[3].slice(ndarray::s![.., ..r]);
        let (mut w, _) = scratch(op, ws, (u.nrows(), r))?;
        gemm(w.view_mut(), Accum::Replace, xdot.view(0), v, T::one())?;
        ydot[0][(0, 0)] = inner(u, w.view());
        Ok(())
    }
}

/// `c = ‖A‖₂ = σ₁`, the spectral norm (largest singular value), through the thin SVD
/// (Giles 2008, singular value decomposition; `docs/math.md`, norms).
///
/// - Forward: LAPACK gesdd, as [`Svd`](super::svd::Svd); `u₁`, `v₁` and `σ₂` (0 when
///   `min(m, n) = 1`) are kept as residuals ([`Rule::residuals`]).
/// - JVP: `ċ = u₁ᵀȦv₁` (one GEMM `Ȧv₁`).
/// - VJP: `Ā = c̄·u₁v₁ᵀ`, one rank-one GEMM straight into the gradient buffer.
///
/// With `σ₁ − σ₂ ≤ DEGENERACY·ε·σ₁` and `σ₁ > 0` the norm is not differentiable and no
/// subgradient is chosen: both rules return [`Error::DegenerateEigenvalues`] naming
/// `(0, 1)`. At `A = 0` they return the zero subgradient (`Ā = 0`, `ċ = 0`).
///
/// Residuals `u₁` (`m×1`), `v₁` (`n×1`), `σ₂` (`1×1`); saves them and the output `c`,
/// not `A`. Workspace: the SVD's plus `mk + k + nk` for its factors; `m` for the JVP.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, Default)]
pub struct SpectralNorm;

impl SpectralNorm {
    /// Whether `u₁v₁ᵀ` is the gradient (`Ok(true)`), `0` is (`Ok(false)`, at `A = 0`),
    /// or `σ₁ = σ₂ > 0`, an error.
    fn differentiable<T: Real>(op: &'static str, y: &[ArrayView2<'_, T>]) -> Result<bool> {
        let (s1, s2) = (y[0][(0, 0)], y[3][(0, 0)]);
        if s1 <= T::zero() {
            return Ok(false);
        }
        if s1 - s2 <= tolerance(s1) {
            return Err(Error::DegenerateEigenvalues { op, i: 0, j: 1 });
        }
        Ok(true)
    }
}

impl<T: Real> Rule<T> for SpectralNorm {
    fn name(&self) -> &'static str {
        "SpectralNorm"
    }
    fn arity(&self) -> usize {
        1
    }
    fn residuals(&self) -> usize {
        3
    }
    fn output_name(&self, k: usize) -> &'static str {
        ["C", "u₁", "v₁", "σ₂"].get(k).copied().unwrap_or("R")
    }
    fn shapes(&self, x: &[Shape]) -> Result<Shapes> {
        let Shape(m, n) = x[0];
        expect_lapack_dims(Rule::<T>::name(self), x[0])?;
        Ok(smallvec![
            Shape(1, 1),
            Shape(m, 1),
            Shape(n, 1),
            Shape(1, 1)
        ])
    }
    fn saves(&self, _wanted: &[bool]) -> Saves {
        Saves::NONE.output(0).output(1).output(2).output(3)
    }
    fn workspace(&self, x: &[Shape]) -> usize {
        let Shape(m, n) = x[0];
        let k = m.min(n);
        let factors = [m * k, k, n * k]
            .iter()
            .fold(0usize, |a, &b| a.saturating_add(b));
        factors.saturating_add(svd_workspace::<T>(m, n)).max(m)
    }
    /// The reverse pass works from the saved factors alone.
    fn pass_workspace(&self, x: &[Shape], pass: Pass<'_, '_, T>) -> usize {
        match pass {
            Pass::Pullback(_) => 0,
            Pass::Eval | Pass::Pushforward => Rule::<T>::workspace(self, x),
        }
    }
    fn eval(
        &self,
        x: &[ArrayView2<'_, T>],
        y: &mut [ArrayViewMut2<'_, T>],
        ws: &mut [T],
    ) -> Result<()> {
        let op = Rule::<T>::name(self);
        let a = x[0].view();
        let (m, n) = a.dim();
        let k = m.min(n);
        if k == 0 {
            // An empty matrix: ‖A‖₂ = 0, and u₁, v₁ (not empty when the other
            // dimension is not) are zero.
            for o in y.iter_mut() {
                o.fill(T::zero());
            }
            return expect_finite(op, &a, false);
        }
        let (ubuf, ws) = take(op, ws, m * k)?;
        let (sbuf, ws) = take(op, ws, k)?;
        let (vbuf, ws) = take(op, ws, n * k)?;
        let mut u = rmat_mut(ubuf, (m, k));
        let mut s = rmat_mut(sbuf, (k, 1));
        let mut v = rmat_mut(vbuf, (n, k));
        thin_svd(op, a, u.view_mut(), s.view_mut(), v.view_mut(), ws)?;
        y[0][(0, 0)] = s[(0, 0)];
        y[1].assign(&u.column(0).insert_axis(ndarray::Axis(1)));
        y[2].assign(&v.column(0).insert_axis(ndarray::Axis(1)));
        y[3][(0, 0)] = if k > 1 { s[(1, 0)] } else { T::zero() };
        Ok(())
    }
    fn pullback(
        &self,
        _x: &[ArrayView2<'_, T>],
        y: &[ArrayView2<'_, T>],
        ybar: &Partials<'_, '_, T>,
        grads: &mut [Grad<'_, T>],
        _: &mut [T],
    ) -> Result<()> {
        let op = Rule::<T>::name(self);
        let Some((mut g, acc)) = grads[0].target() else {
            return Ok(());
        };
        if !Self::differentiable(op, y)? {
            if acc == Accum::Replace {
                g.fill(T::zero());
            }
            return Ok(());
        }
        gemm(g, acc, y[1].view(), y[2].t(), ybar.view(0)[(0, 0)])
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
        if !Self::differentiable(op, y)? {
            ydot[0][(0, 0)] = T::zero();
            return Ok(());
        }
        let (mut w, _) = scratch(op, ws, (y[1].nrows(), 1))?;
        gemm(
            w.view_mut(),
            Accum::Replace,
            xdot.view(0),
            y[2].view(),
            T::one(),
        )?;
        ydot[0][(0, 0)] = inner(y[1].view(), w.view());
        Ok(())
    }
}
