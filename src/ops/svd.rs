//! Thin singular value decomposition `A = U diag(s) Vᵀ` (LAPACK gesdd), with its
//! forward- and reverse-mode rules (Giles 2008, singular value decomposition;
//! Townsend 2016).
//!
//! ```
//! use matgrad::prelude::*;
//! use ndarray::array;
//!
//! let a = array![[3.0_f64, 0.0], [0.0, -2.0], [0.0, 0.0]];   // 3×2
//! let svd = Svd.apply([a.view()])?;
//! let (u, s, v) = (&svd.outputs()[0], &svd.outputs()[1], &svd.outputs()[2]);
//! assert_eq!((u.dim(), s.dim(), v.dim()), ((3, 2), (2, 1), (2, 2)));
//! assert!((s[(0, 0)] - 3.0).abs() < 1e-12 && (s[(1, 0)] - 2.0).abs() < 1e-12);
//! let usv = u.dot(&ndarray::Array2::from_diag(&s.column(0))).dot(&v.t());
//! assert!((&usv - &a).iter().all(|x| x.abs() < 1e-12));
//!
//! // Singular values only (Ū and V̄ missing): Ā = U diag(s̄) Vᵀ.
//! let sbar = array![[1.0], [0.0]];
//! let abar = &svd.backward_all(&[None, Some(sbar.view()), None])?[0];
//! assert!((abar[(0, 0)] - 1.0).abs() < 1e-12);
//! # Ok::<(), matgrad::Error>(())
//! ```
//!
//! # Repeated and zero singular values
//!
//! With `τ = DEGENERACY·ε·s₁` ([`DEGENERACY`](super::eigh::DEGENERACY) `= 1000`):
//! singular values `i ≠ j` are degenerate when `|sᵢ − sⱼ| ≤ τ`, and `sᵢ` is zero when
//! `sᵢ ≤ τ`. The rules refuse what the arbitrary choice of singular vectors there
//! decides (`docs/math.md`, degenerate cases):
//!
//! - reverse mode with `Ū` and `V̄` missing uses only `U diag(s̄) Vᵀ` and never fails
//!   (at a zero singular value, where `s` has a kink like `|x|`, it is a subgradient);
//! - reverse mode with `Ū` or `V̄` given: the coupling of pair `(i, j)` is split as
//!   `(Jᵢⱼ' + Kᵢⱼ')/(2(sⱼ − sᵢ)) + (Jᵢⱼ' − Kᵢⱼ')/(2(sⱼ + sᵢ))` with `J' = UᵀŪ − ŪᵀU`,
//!   `K' = VᵀV̄ − V̄ᵀV`; a numerator whose denominator is zero within `τ` must be zero
//!   within `DEGENERACY·ε·max(|J|, |K|)` and then contributes nothing, else
//!   [`Error::DegenerateEigenvalues`] names the pair; the terms with `S⁻¹` of a
//!   non-square `A` (`(I − UUᵀ)ŪS⁻¹Vᵀ`, `US⁻¹V̄ᵀ(I − VVᵀ)`) must have a zero column
//!   for a zero singular value, else [`Error::ZeroSingularValue`];
//! - forward mode: with `P = UᵀȦV`, the same splits of `Pᵢⱼ ± Pⱼᵢ`, and also
//!   `Pᵢᵢ = Pⱼⱼ` on a degenerate pair and `Pᵢᵢ = 0` on a zero singular value (where `ṡᵢ`
//!   would be a one-sided derivative), else a typed error.

use super::eigh::{expect_finite, fix_signs, max_abs, tolerance};
use super::workspace::{fmat, fmat_mut, scratch, scratch_f, take};
use crate::blas::lapack::{gesdd, gesdd_workspace, int_scratch, ints_in, is_column_major};
use crate::blas::{gemm, Accum};
use crate::error::{Error, Result, Shape};
use crate::primitive::{Grad, Partials, Rule, Saves, Shapes};
use crate::Real;
use ndarray::{ArrayView2, ArrayViewMut2, Zip};
use smallvec::smallvec;

const OP: &str = "Svd";

/// The thin SVD `A = U diag(s) Vᵀ` of an `m×n` matrix, `k = min(m, n)`: outputs `U`
/// (`m×k`, orthonormal columns), `s` (`k×1`, descending, non-negative) and `V` (`n×k`,
/// not `Vᵀ`), each pair `(uᵢ, vᵢ)` signed so that the entry of largest magnitude of `uᵢ`
/// is positive. Giles 2008, singular value decomposition; Townsend 2016,
/// *Differentiating the singular value decomposition*; `docs/math.md`, SVD.
///
/// - Forward: LAPACK gesdd (divide and conquer, thin factors) on a column-major copy,
///   after a scan for NaN and infinity.
/// - JVP: `P = UᵀȦV`, `Fᵢⱼ = 1/(sⱼ² − sᵢ²)` (0 on the diagonal): `ṡ = diag(P)`,
///   `U̇ = U(F ∘ (PS + SPᵀ)) + (I − UUᵀ)ȦVS⁻¹`,
///   `V̇ = V(F ∘ (SP + PᵀS)) + (I − VVᵀ)ȦᵀUS⁻¹`.
/// - VJP: with `J = UᵀŪ`, `K = VᵀV̄`,
///   `Ā = U[(F ∘ (J − Jᵀ))S + diag(s̄) + S(F ∘ (K − Kᵀ))]Vᵀ + (I − UUᵀ)ŪS⁻¹Vᵀ
///   + US⁻¹V̄ᵀ(I − VVᵀ)`. The bracket `X` is formed entrywise as
///   `Xᵢⱼ = (Jᵢⱼ' + Kᵢⱼ')/(2(sⱼ − sᵢ)) + (Jᵢⱼ' − Kᵢⱼ')/(2(sⱼ + sᵢ))`, the same
///   value split so that each denominator can be tested; then for `m > n`
///   `Ā = (UX + (Ū − UJ)S⁻¹)Vᵀ`, for `m < n` `Ā = U(VXᵀ + (V̄ − VK)S⁻¹)ᵀ`, for `m = n`
///   `Ā = (UX)Vᵀ`, where the projections vanish: four GEMMs at most. With `Ū` and
///   `V̄` missing, `Ā = (U diag(s̄))Vᵀ`, one GEMM.
///
/// Repeated and zero singular values follow the policy of the
/// [module documentation](self): a typed error, never `inf` or NaN.
///
/// Saves: the reverse rule reads the outputs `U`, `s`, `V`, not `A`. Workspace: the
/// forward pass's `mn + mk + kn + k` plus gesdd's work and iwork, the reverse pass's
/// `2k² + max(m, n)k`, the forward mode's `2k²`, whichever is largest.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, Default)]
pub struct Svd;

/// Scratch elements [`thin_svd`] needs for an `m×n` matrix.
pub(crate) fn svd_workspace<T: Real>(m: usize, n: usize) -> usize {
    let k = m.min(n);
    let lw = gesdd_workspace::<T>(m, n).unwrap_or(0);
    [m * n, m * k, k * n, k, lw, ints_in::<T>(8 * k)]
        .iter()
        .fold(0usize, |a, &b| a.saturating_add(b))
}

/// Errors unless every dimension fits LAPACK's 32-bit integers.
pub(crate) fn expect_lapack_dims(op: &'static str, s: Shape) -> Result<()> {
    for d in [s.0, s.1] {
        if i32::try_from(d).is_err() {
            return Err(Error::TooLarge { op, dim: d });
        }
    }
    Ok(())
}

/// The thin SVD of `a` into `u` (`m×k`), `s` (`k×1`) and `v` (`n×k`), of any layout
/// (not read), with the signs fixed; `ws` holds at least [`svd_workspace`] elements.
/// LAPACK writes `U` in place when `u` is column-major and `Vᵀ` in place when `v` is
/// row-major (its transpose is then column-major), elsewhere in the workspace.
pub(crate) fn thin_svd<T: Real>(
    op: &'static str,
    a: ArrayView2<'_, T>,
    mut u: ArrayViewMut2<'_, T>,
    mut s: ArrayViewMut2<'_, T>,
    mut v: ArrayViewMut2<'_, T>,
    ws: &mut [T],
) -> Result<()> {
    expect_finite(op, &a, false)?;
    let (m, n) = a.dim();
    let k = m.min(n);
    if k == 0 {
        return Ok(());
    }
    let (ws, iwork) = int_scratch(ws, 8 * k)?;
    let (mut copy, ws) = scratch_f(op, ws, (m, n))?;
    copy.assign(&a);
    let (ubuf, ws) = take(op, ws, m * k)?;
    let (vtbuf, ws) = take(op, ws, k * n)?;
    let (sbuf, work) = take(op, ws, k)?;
    let u_direct = is_column_major(&u.view());
    let vt_direct = is_column_major(&v.t());
    {
        let mut uz = if u_direct {
            u.view_mut()
        } else {
            fmat_mut(ubuf, (m, k))
        };
        let mut vz = if vt_direct {
            v.view_mut().reversed_axes()
        } else {
            fmat_mut(vtbuf, (k, n))
        };
        gesdd(op, copy, sbuf, uz.view_mut(), vz.view_mut(), work, iwork)?;
    }
    if !u_direct {
        u.assign(&fmat(ubuf, (m, k)));
    }
    if !vt_direct {
        v.assign(&fmat(vtbuf, (k, n)).t());
    }
    fix_signs(u.view_mut(), Some(v.view_mut()));
    for (i, &x) in sbuf.iter().enumerate() {
        s[(i, 0)] = x;
    }
    Ok(())
}

/// The two parts of a pair's coupling, `num₋/(2(sⱼ − sᵢ))` and `num₊/(2(sⱼ + sᵢ))`,
/// each zero when its denominator is within `tau_s` of zero and its numerator within
/// `tau` of zero, an error naming the pair when only the denominator is.
#[allow(clippy::too_many_arguments)]
fn split_pair<T: Real>(
    op: &'static str,
    (i, j): (usize, usize),
    (si, sj): (T, T),
    sym: T,
    anti: T,
    tau_s: T,
    tau: T,
) -> Result<(T, T)> {
    let part = |num: T, den: T| -> Result<T> {
        if den.abs() <= tau_s {
            if num.abs() > tau {
                return Err(Error::DegenerateEigenvalues { op, i, j });
            }
            return Ok(T::zero());
        }
        let v = num / den;
        if !v.is_finite() && num.is_finite() {
            return Err(Error::DegenerateEigenvalues { op, i, j });
        }
        Ok(v)
    };
    Ok((part(sym, sj - si)?, part(anti, sj + si)?))
}

/// `X ← diag(s̄) + …` in place over `J = UᵀŪ`, reading `K = VᵀV̄`: the bracket of the
/// reverse rule.
fn reverse_core<T: Real>(
    mut jx: ArrayViewMut2<'_, T>,
    kk: ArrayView2<'_, T>,
    s: ArrayView2<'_, T>,
    sbar: Option<ArrayView2<'_, T>>,
) -> Result<()> {
    let k = jx.nrows();
    let tau_s = tolerance(max_abs(s));
    let tau = tolerance(max_abs(jx.view()).max(max_abs(kk)));
    let half = T::of(0.5);
    for i in 0..k {
        for j in i + 1..k {
            let a = jx[(i, j)] - jx[(j, i)];
            let b = kk[(i, j)] - kk[(j, i)];
            let (p, q) = split_pair(
                OP,
                (i, j),
                (s[(i, 0)], s[(j, 0)]),
                (a + b) * half,
                (a - b) * half,
                tau_s,
                tau,
            )?;
            jx[(i, j)] = p + q;
            jx[(j, i)] = p - q;
        }
        jx[(i, i)] = sbar.as_ref().map_or(T::zero(), |b| b[(i, 0)]);
    }
    Ok(())
}

/// Divides column `c` of `w` by `s_c`; for a zero singular value the column must be zero
/// within `tau` (it is then zeroed), else [`Error::ZeroSingularValue`].
fn scale_by_inverse<T: Real>(
    mut w: ArrayViewMut2<'_, T>,
    s: ArrayView2<'_, T>,
    tau_s: T,
    tau: T,
) -> Result<()> {
    for (c, mut col) in w.columns_mut().into_iter().enumerate() {
        let sc = s[(c, 0)];
        if sc <= tau_s {
            if max_abs(col.view().insert_axis(ndarray::Axis(1))) > tau {
                return Err(Error::ZeroSingularValue { op: OP, index: c });
            }
            col.fill(T::zero());
        } else {
            let inv = T::one() / sc;
            col.mapv_inplace(|x| x * inv);
        }
    }
    Ok(())
}

/// The antisymmetric `F ∘ (PS + SPᵀ)` (`left`) or `F ∘ (SP + PᵀS)` into `f`, with the
/// forward-mode checks of degenerate pairs.
fn forward_coupling<T: Real>(
    p: ArrayView2<'_, T>,
    mut f: ArrayViewMut2<'_, T>,
    s: ArrayView2<'_, T>,
    left: bool,
) -> Result<()> {
    let k = p.nrows();
    let tau_s = tolerance(max_abs(s));
    let tau = tolerance(max_abs(p));
    let half = T::of(0.5);
    for i in 0..k {
        f[(i, i)] = T::zero();
        for j in i + 1..k {
            let (a, b) = (p[(i, j)], p[(j, i)]);
            let (si, sj) = (s[(i, 0)], s[(j, 0)]);
            if (sj - si).abs() <= tau_s && (p[(i, i)] - p[(j, j)]).abs() > tau {
                return Err(Error::DegenerateEigenvalues { op: OP, i, j });
            }
            let (sym, anti) = split_pair(
                OP,
                (i, j),
                (si, sj),
                (a + b) * half,
                (a - b) * half,
                tau_s,
                tau,
            )?;
            let v = if left { sym + anti } else { sym - anti };
            f[(i, j)] = v;
            f[(j, i)] = -v;
        }
    }
    Ok(())
}

impl<T: Real> Rule<T> for Svd {
    fn name(&self) -> &'static str {
        OP
    }
    fn arity(&self) -> usize {
        1
    }
    fn outputs(&self) -> usize {
        3
    }
    fn output_name(&self, k: usize) -> &'static str {
        ["U", "s", "V"].get(k).copied().unwrap_or("Y")
    }
    fn shapes(&self, x: &[Shape]) -> Result<Shapes> {
        let Shape(m, n) = x[0];
        expect_lapack_dims(OP, x[0])?;
        let k = m.min(n);
        Ok(smallvec![Shape(m, k), Shape(k, 1), Shape(n, k)])
    }
    fn saves(&self, _wanted: &[bool]) -> Saves {
        Saves::NONE.output(0).output(1).output(2)
    }
    fn workspace(&self, x: &[Shape]) -> usize {
        let Shape(m, n) = x[0];
        let k = m.min(n);
        let reverse = (2 * k * k).saturating_add(m.max(n).saturating_mul(k));
        svd_workspace::<T>(m, n).max(reverse)
    }
    fn eval(
        &self,
        x: &[ArrayView2<'_, T>],
        y: &mut [ArrayViewMut2<'_, T>],
        ws: &mut [T],
    ) -> Result<()> {
        let [u, s, v] = y else {
            return Err(Error::Arity {
                op: OP,
                what: "output buffers",
                expected: 3,
                got: y.len(),
            });
        };
        thin_svd(
            OP,
            x[0].view(),
            u.view_mut(),
            s.view_mut(),
            v.view_mut(),
            ws,
        )
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
        let (u, s, v) = (y[0].view(), y[1].view(), y[2].view());
        let (m, k) = u.dim();
        let n = v.nrows();
        if k == 0 {
            // Ā is m×n with m or n zero: nothing to write.
            return Ok(());
        }
        let (ubar, vbar) = (ybar.get(0), ybar.get(2));
        let (mut jx, ws) = scratch(OP, ws, (k, k))?;
        let (mut kk, ws) = scratch(OP, ws, (k, k))?;
        if ubar.is_none() && vbar.is_none() {
            let (mut w, _) = scratch(OP, ws, (m, k))?;
            let sbar = ybar.view(1);
            Zip::indexed(w.view_mut()).for_each(|(r, c), x| *x = u[(r, c)] * sbar[(c, 0)]);
            return gemm(g, acc, w.view(), v.t(), T::one());
        }
        match ubar {
            Some(ub) => gemm(jx.view_mut(), Accum::Replace, u.t(), ub, T::one())?,
            None => jx.fill(T::zero()),
        }
        match vbar {
            Some(vb) => gemm(kk.view_mut(), Accum::Replace, v.t(), vb, T::one())?,
            None => kk.fill(T::zero()),
        }
        let tau_s = tolerance(max_abs(s));
        match (ubar, vbar) {
            (Some(ub), _) if m > k => {
                // W = (Ū − UJ)S⁻¹ + UX, Ā = WVᵀ.
                let (mut w, _) = scratch(OP, ws, (m, k))?;
                w.assign(&ub);
                gemm(w.view_mut(), Accum::Add, u, jx.view(), -T::one())?;
                scale_by_inverse(w.view_mut(), s, tau_s, tolerance(max_abs(ub)))?;
                reverse_core(jx.view_mut(), kk.view(), s, ybar.get(1))?;
                gemm(w.view_mut(), Accum::Add, u, jx.view(), T::one())?;
                gemm(g, acc, w.view(), v.t(), T::one())
            }
            (_, Some(vb)) if n > k => {
                // W = (V̄ − VK)S⁻¹ + VXᵀ, Ā = UWᵀ.
                let (mut w, _) = scratch(OP, ws, (n, k))?;
                w.assign(&vb);
                gemm(w.view_mut(), Accum::Add, v, kk.view(), -T::one())?;
                scale_by_inverse(w.view_mut(), s, tau_s, tolerance(max_abs(vb)))?;
                reverse_core(jx.view_mut(), kk.view(), s, ybar.get(1))?;
                gemm(w.view_mut(), Accum::Add, v, jx.view().t(), T::one())?;
                gemm(g, acc, u, w.view().t(), T::one())
            }
            _ => {
                // The projections vanish: Ā = (UX)Vᵀ.
                let (mut w, _) = scratch(OP, ws, (m, k))?;
                reverse_core(jx.view_mut(), kk.view(), s, ybar.get(1))?;
                gemm(w.view_mut(), Accum::Replace, u, jx.view(), T::one())?;
                gemm(g, acc, w.view(), v.t(), T::one())
            }
        }
    }
    fn pushforward(
        &self,
        _x: &[ArrayView2<'_, T>],
        y: &[ArrayView2<'_, T>],
        xdot: &Partials<'_, '_, T>,
        ydot: &mut [ArrayViewMut2<'_, T>],
        ws: &mut [T],
    ) -> Result<()> {
        let (u, s, v) = (y[0].view(), y[1].view(), y[2].view());
        let (m, k) = u.dim();
        let n = v.nrows();
        if k == 0 {
            return Ok(());
        }
        let [ud, sd, vd] = ydot else {
            return Err(Error::Arity {
                op: OP,
                what: "tangent buffers",
                expected: 3,
                got: ydot.len(),
            });
        };
        let adot = xdot.view(0);
        let (mut p, ws) = scratch(OP, ws, (k, k))?;
        let (mut f, _) = scratch(OP, ws, (k, k))?;
        // ȦV in U̇'s buffer, P = Uᵀ(ȦV).
        gemm(ud.view_mut(), Accum::Replace, adot, v, T::one())?;
        gemm(p.view_mut(), Accum::Replace, u.t(), ud.view(), T::one())?;
        let tau_s = tolerance(max_abs(s));
        let tau_p = tolerance(max_abs(p.view()));
        for i in 0..k {
            if s[(i, 0)] <= tau_s && p[(i, i)].abs() > tau_p {
                return Err(Error::ZeroSingularValue { op: OP, index: i });
            }
            sd[(i, 0)] = p[(i, i)];
        }

        forward_coupling(p.view(), f.view_mut(), s, true)?;
        if m > k {
            // U̇ = (ȦV − UP)S⁻¹ + U(F ∘ (PS + SPᵀ)).
            let tau = tolerance(max_abs(ud.view()));
            gemm(ud.view_mut(), Accum::Add, u, p.view(), -T::one())?;
            scale_by_inverse(ud.view_mut(), s, tau_s, tau)?;
            gemm(ud.view_mut(), Accum::Add, u, f.view(), T::one())?;
        } else {
            gemm(ud.view_mut(), Accum::Replace, u, f.view(), T::one())?;
        }

        forward_coupling(p.view(), f.view_mut(), s, false)?;
        if n > k {
            // V̇ = (ȦᵀU − VPᵀ)S⁻¹ + V(F ∘ (SP + PᵀS)).
            gemm(vd.view_mut(), Accum::Replace, adot.t(), u, T::one())?;
            let tau = tolerance(max_abs(vd.view()));
            gemm(vd.view_mut(), Accum::Add, v, p.view().t(), -T::one())?;
            scale_by_inverse(vd.view_mut(), s, tau_s, tau)?;
            gemm(vd.view_mut(), Accum::Add, v, f.view(), T::one())
        } else {
            gemm(vd.view_mut(), Accum::Replace, v, f.view(), T::one())
        }
    }
}
