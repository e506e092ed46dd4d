//! Symmetric eigendecomposition `A = V diag(λ) Vᵀ` (LAPACK syevd), with its forward-
//! and reverse-mode rules (Giles 2008, eigenvalues and eigenvectors), under the two
//! gradient conventions of [`Cholesky`](super::cholesky::Cholesky) ([`Convention`]).
//!
//! ```
//! use matgrad::prelude::*;
//! use ndarray::array;
//!
//! let a = array![[2.0_f64, 1.0], [1.0, 2.0]];
//! let eig = SymEig::new().apply([a.view()])?;
//! let (lambda, v) = (&eig.outputs()[0], &eig.outputs()[1]);
//! assert!((lambda[(0, 0)] - 1.0).abs() < 1e-12 && (lambda[(1, 0)] - 3.0).abs() < 1e-12);
//! assert!((v.dot(&v.t()) - ndarray::Array2::<f64>::eye(2)).iter().all(|x| x.abs() < 1e-12));
//!
//! // Eigenvalues only (V̄ missing): Ā = V diag(λ̄) Vᵀ, here ∂(λ₀ + λ₁)/∂A = I.
//! let ones = array![[1.0], [1.0]];
//! let abar = &eig.backward_all(&[Some(ones.view()), None])?[0];
//! assert!((abar - ndarray::Array2::<f64>::eye(2)).iter().all(|x| x.abs() < 1e-12));
//! # Ok::<(), matgrad::Error>(())
//! ```
//!
//! # Repeated eigenvalues
//!
//! Eigenvalues `i ≠ j` are *degenerate* when `|λᵢ − λⱼ| ≤ τ_λ = DEGENERACY·ε·max|λ|`
//! ([`DEGENERACY`] `= 1000`, `ε` the precision's machine epsilon). Their eigenvectors
//! are then any orthonormal basis of the eigenspace, and the rules refuse what depends on
//! that choice rather than return `1/0` (`docs/math.md`, degenerate cases):
//!
//! - reverse mode with `V̄` missing uses only `V diag(λ̄) Vᵀ` and never fails; it is the
//!   gradient whenever the loss is differentiable at `A` (then `λ̄` is constant on each
//!   cluster of coinciding eigenvalues, as for `Σλ`, `tr f(A)`, `log det`);
//! - reverse mode with `V̄` given: the term of a degenerate pair is
//!   `((VᵀV̄)ᵢⱼ − (VᵀV̄)ⱼᵢ)/(2(λⱼ − λᵢ))`; it is taken as zero when the numerator is at
//!   most `DEGENERACY·ε·max|VᵀV̄|` (the loss does not see rotations inside the
//!   eigenspace), and is [`Error::DegenerateEigenvalues`] naming `(i, j)` otherwise;
//! - forward mode: with `P = VᵀȦV`, a degenerate pair needs `Pᵢⱼ = 0` and `Pᵢᵢ = Pⱼⱼ`
//!   (within `DEGENERACY·ε·max|P|`): a tangent that splits or rotates the eigenspace has
//!   no derivative and is [`Error::DegenerateEigenvalues`].

use super::cholesky::Convention;
use super::square;
use super::workspace::{fmat, fmat_mut, rmat_mut, scratch, take};
use crate::blas::copy::copy;
use crate::blas::lapack::{int_scratch, ints_in, is_column_major, syevd, syevd_workspace};
use crate::blas::{gemm, gemm_tri, gemm_tri_unzeroed, Accum, Uplo};
use crate::error::{Error, Result, Shape};
use crate::primitive::{Grad, Partials, Rule, Saves, Shapes, Structure};
use crate::Real;
use ndarray::{ArrayView2, ArrayViewMut2, Axis, Zip};
use smallvec::smallvec;

/// Eigenvalues or singular values `i ≠ j` coincide, and a cotangent or tangent entry
/// counts as zero, within `DEGENERACY·ε` times the largest magnitude of its kind
/// (`docs/math.md`, degenerate cases): 1000 rounding errors, well above the splitting
/// LAPACK leaves between equal eigenvalues (a small multiple of `ε·max|λ|`) and the
/// rounding of a cotangent built from invariant quantities.
pub const DEGENERACY: f64 = 1e3;

/// Order of the square blocks [`reverse_core`] goes through the pairs by, and below
/// which [`mirror_lower`] copies entry by entry.
const TILE: usize = 64;

/// `DEGENERACY·ε·scale`.
pub(crate) fn tolerance<T: Real>(scale: T) -> T {
    T::of(DEGENERACY) * T::epsilon() * scale
}

/// The largest `|xᵢⱼ|` (0 for an empty matrix).
pub(crate) fn max_abs<T: Real>(x: ArrayView2<'_, T>) -> T {
    super::max_magnitude(&x)
}

/// [`Error::NonFinite`] for the first NaN or infinity of `a` in row-major order, in the
/// lower triangle only when `lower` is set.
pub(crate) fn expect_finite<T: Real>(
    op: &'static str,
    a: &ArrayView2<'_, T>,
    lower: bool,
) -> Result<()> {
    for ((row, col), v) in a.indexed_iter() {
        if (!lower || col <= row) && !v.is_finite() {
            return Err(Error::NonFinite {
                op,
                name: "A",
                row,
                col,
            });
        }
    }
    Ok(())
}

/// Fixes the sign of each eigen- or singular-vector pair, which LAPACK leaves free:
/// the entry of largest magnitude of column `j` of `v` (the first such on ties) is made
/// positive, and column `j` of `w` (the paired singular vectors) flips with it. The
/// choice is locally constant, so the outputs are differentiable functions of `A`
/// wherever the values are distinct (`docs/math.md`, degenerate cases).
pub(crate) fn fix_signs<T: Real>(mut v: ArrayViewMut2<'_, T>, mut w: Option<ArrayViewMut2<'_, T>>) {
    for j in 0..v.ncols() {
        let mut best = T::zero();
        for &x in v.column(j) {
            if x.abs() > best.abs() {
                best = x;
            }
        }
        if best < T::zero() {
            v.column_mut(j).mapv_inplace(|x| -x);
            if let Some(w) = w.as_mut() {
                w.column_mut(j).mapv_inplace(|x| -x);
            }
        }
    }
}

/// `A = V diag(λ) Vᵀ` for symmetric `A`, reading only its lower triangle: outputs `λ`
/// (`n×1`, ascending) and `V` (`n×n`, orthonormal columns, each with its entry of largest
/// magnitude positive). Giles 2008, eigenvalues and eigenvectors; `docs/math.md`,
/// symmetric eigendecomposition.
///
/// - Forward: LAPACK syevd (divide and conquer) on a copy of the lower triangle, after
///   a scan for NaN and infinity.
/// - JVP: with `Ȧ` made symmetric as the [`Convention`] reads it (`(Ȧ + Ȧᵀ)/2`, or the
///   symmetric matrix with `Ȧ`'s lower triangle) and `P = VᵀȦV`:
///   `λ̇ = diag(P)`, `V̇ = V(F ∘ P)`, `Fᵢⱼ = 1/(λⱼ − λᵢ)` off the diagonal, 0 on it.
/// - VJP: `Ā = V(diag(λ̄) + F ∘ (VᵀV̄))Vᵀ`, then the convention's projection. Only the
///   antisymmetric part of `M = VᵀV̄` survives the symmetric part, so the rule forms
///   `S = diag(λ̄) + F ∘ (M − Mᵀ)/2` (symmetric, as `F` is antisymmetric) and
///   `Ā = VSVᵀ` (two GEMMs), made exactly symmetric (`Convention::Symmetric`) or folded
///   onto the lower triangle, off-diagonal entries doubled and the strict upper
///   triangle zero (`Convention::Lower`). With `V̄` missing, `S = diag(λ̄)` and
///   `Ā = (V diag(λ̄))Vᵀ`, one GEMM.
///
/// Degenerate eigenvalues follow the policy of the [module documentation](self):
/// [`Error::DegenerateEigenvalues`] when the result would depend on the arbitrary basis
/// of an eigenspace, never `inf` or NaN.
///
/// Saves: the reverse rule reads the outputs `λ` and `V`, not `A` (`λ` is read only when
/// `V̄` is given, but the declaration cannot see the cotangents). Workspace:
/// `max(2n², n² + n + syevd's work and iwork)`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, Default)]
pub struct SymEig {
    /// What `Ā` means (as for Cholesky).
    pub convention: Convention,
}

impl SymEig {
    /// The symmetric convention.
    pub fn new() -> Self {
        Self::default()
    }
    /// The same primitive with another gradient convention.
    pub fn convention(self, convention: Convention) -> Self {
        SymEig { convention }
    }
}

/// `Ȧ` made symmetric as the convention reads it, into `dst` (not read).
pub(crate) fn symmetrised<T: Real>(
    convention: Convention,
    adot: ArrayView2<'_, T>,
    dst: ArrayViewMut2<'_, T>,
) {
    match convention {
        Convention::Symmetric => {
            let half = T::of(0.5);
            Zip::indexed(dst).for_each(|(i, j), v| *v = (adot[(i, j)] + adot[(j, i)]) * half);
        }
        Convention::Lower => {
            Zip::indexed(dst).for_each(|(i, j), v| *v = adot[(i.max(j), i.min(j))]);
        }
    }
}

/// The symmetric `G`, of which `p` holds the lower triangle, written as the
/// convention's gradient into `g`: `G` itself, or its lower triangle with the
/// off-diagonal entries `Gᵢⱼ + Gⱼᵢ = 2Gᵢⱼ` and the strict upper triangle zero.
fn fold_into<T: Real>(
    convention: Convention,
    p: ArrayView2<'_, T>,
    g: ArrayViewMut2<'_, T>,
    acc: Accum,
) {
    let two = T::of(2.0);
    Zip::indexed(g).for_each(|(i, j), x| {
        let v = match convention {
            Convention::Symmetric => p[(i.max(j), i.min(j))],
            Convention::Lower if j > i => T::zero(),
            Convention::Lower if j == i => p[(i, i)],
            Convention::Lower => two * p[(i, j)],
        };
        acc.store(x, v);
    });
}

/// [`fold_into`] in place, for a first write that computed the lower triangle of `G`
/// in the gradient buffer (its strict upper triangle holds anything).
fn fold_in_place<T: Real>(convention: Convention, g: ArrayViewMut2<'_, T>) -> Result<()> {
    match convention {
        Convention::Symmetric => mirror_lower(g),
        Convention::Lower => {
            let two = T::of(2.0);
            Zip::indexed(g).for_each(|(i, j), x| {
                if j > i {
                    *x = T::zero();
                } else if j < i {
                    *x = two * *x;
                }
            });
            Ok(())
        }
    }
}

/// The strict upper triangle of the square `g` from its strict lower one, `gᵢⱼ ← gⱼᵢ`
/// for `j > i`: by halves, the upper off-diagonal block is the transposing [`copy`] of
/// the lower one (by cache-aligned tiles), and each diagonal half recurses.
fn mirror_lower<T: Real>(g: ArrayViewMut2<'_, T>) -> Result<()> {
    let n = g.nrows();
    if n <= TILE {
        let mut g = g;
        for i in 0..n {
            for j in 0..i {
                g[(j, i)] = g[(i, j)];
            }
        }
        return Ok(());
    }
    let h = n / 2;
    let (top, bottom) = g.split_at(Axis(0), h);
    let (g11, g12) = top.split_at(Axis(1), h);
    let (g21, g22) = bottom.split_at(Axis(1), h);
    copy(g12, g21.t(), Accum::Replace)?;
    mirror_lower(g11)?;
    mirror_lower(g22)
}

/// `S ← diag(λ̄) + F ∘ (M − Mᵀ)/2` in place over the row-major `n×n` `m = VᵀV̄`,
/// `Fᵢⱼ = 1/(λⱼ − λᵢ)`; a degenerate pair whose `Mᵢⱼ − Mⱼᵢ` is not zero within
/// tolerance is an error naming the first such pair `(i, j)`, `i < j`, in row order.
/// The pairs go by [`TILE`]`×`[`TILE`] blocks, so that both `Mᵢⱼ` and `Mⱼᵢ` come from
/// cache.
fn reverse_core<T: Real>(
    op: &'static str,
    m: &mut [T],
    n: usize,
    lam: ArrayView2<'_, T>,
    lbar: Option<ArrayView2<'_, T>>,
) -> Result<()> {
    let tau_l = tolerance(max_abs(lam));
    let tau_m = tolerance(m.iter().fold(T::zero(), |a, v| a.max(v.abs())));
    let half = T::of(0.5);
    let lam = lam.column(0);
    let mut first: Option<(usize, usize)> = None;
    for bi in (0..n).step_by(TILE) {
        let ie = (bi + TILE).min(n);
        for bj in (bi..n).step_by(TILE) {
            let je = (bj + TILE).min(n);
            for i in bi..ie {
                let li = lam[i];
                for j in bj.max(i + 1)..je {
                    let skew = m[i * n + j] - m[j * n + i];
                    let gap = lam[j] - li;
                    let (s, bad) = if gap.abs() <= tau_l {
                        (T::zero(), skew.abs() > tau_m)
                    } else {
                        let s = skew * half / gap;
                        (s, !s.is_finite() && skew.is_finite())
                    };
                    if bad && first.map_or(true, |f| (i, j) < f) {
                        first = Some((i, j));
                    }
                    m[i * n + j] = s;
                    m[j * n + i] = s;
                }
            }
        }
    }
    if let Some((i, j)) = first {
        return Err(Error::DegenerateEigenvalues { op, i, j });
    }
    for i in 0..n {
        m[i * n + i] = lbar.as_ref().map_or(T::zero(), |l| l[(i, 0)]);
    }
    Ok(())
}

/// `λ̇ = diag(P)` into `lam_dot` and `P ← F ∘ P` in place, with the degenerate-pair
/// checks of the forward mode.
fn forward_core<T: Real>(
    op: &'static str,
    mut p: ArrayViewMut2<'_, T>,
    lam: ArrayView2<'_, T>,
    mut lam_dot: ArrayViewMut2<'_, T>,
) -> Result<()> {
    let n = p.nrows();
    let tau_l = tolerance(max_abs(lam));
    let tau_p = tolerance(max_abs(p.view()));
    for i in 0..n {
        lam_dot[(i, 0)] = p[(i, i)];
    }
    for i in 0..n {
        for j in 0..n {
            if i == j {
                continue;
            }
            let gap = lam[(j, 0)] - lam[(i, 0)];
            let v = if gap.abs() <= tau_l {
                if p[(i, j)].abs() > tau_p || (p[(i, i)] - p[(j, j)]).abs() > tau_p {
                    return Err(Error::DegenerateEigenvalues {
                        op,
                        i: i.min(j),
                        j: i.max(j),
                    });
                }
                T::zero()
            } else {
                let v = p[(i, j)] / gap;
                if !v.is_finite() && p[(i, j)].is_finite() {
                    return Err(Error::DegenerateEigenvalues {
                        op,
                        i: i.min(j),
                        j: i.max(j),
                    });
                }
                v
            };
            p[(i, j)] = v;
        }
    }
    for i in 0..n {
        p[(i, i)] = T::zero();
    }
    Ok(())
}

/// Scratch elements of the forward pass for order `n`: a column-major copy, the
/// eigenvalues, and syevd's work and iwork.
fn eval_workspace<T: Real>(n: usize) -> usize {
    let (lw, liw) = syevd_workspace::<T>(n).unwrap_or((0, 0));
    n.saturating_mul(n)
        .saturating_add(n)
        .saturating_add(lw)
        .saturating_add(ints_in::<T>(liw))
}

impl<T: Real> Rule<T> for SymEig {
    fn name(&self) -> &'static str {
        match self.convention {
            Convention::Symmetric => "SymEig(symmetric)",
            Convention::Lower => "SymEig(lower)",
        }
    }
    fn arity(&self) -> usize {
        1
    }
    fn outputs(&self) -> usize {
        2
    }
    fn output_name(&self, k: usize) -> &'static str {
        ["λ", "V"].get(k).copied().unwrap_or("Y")
    }
    fn structure(&self, _i: usize) -> Structure {
        self.convention.structure()
    }
    fn shapes(&self, x: &[Shape]) -> Result<Shapes> {
        let n = square(Rule::<T>::name(self), "A", x[0])?;
        if i32::try_from(n).is_err() {
            return Err(Error::TooLarge {
                op: Rule::<T>::name(self),
                dim: n,
            });
        }
        Ok(smallvec![Shape(n, 1), Shape(n, n)])
    }
    fn saves(&self, _wanted: &[bool]) -> Saves {
        Saves::NONE.output(0).output(1)
    }
    fn workspace(&self, x: &[Shape]) -> usize {
        let n = x[0].0;
        eval_workspace::<T>(n).max(n.saturating_mul(n).saturating_mul(2))
    }
    fn eval(
        &self,
        x: &[ArrayView2<'_, T>],
        y: &mut [ArrayViewMut2<'_, T>],
        ws: &mut [T],
    ) -> Result<()> {
        let op = Rule::<T>::name(self);
        let a = x[0].view();
        let n = a.nrows();
        expect_finite(op, &a, true)?;
        if n == 0 {
            return Ok(());
        }
        let (_, liw) = syevd_workspace::<T>(n)?;
        let (ws, iwork) = int_scratch(ws, liw)?;
        let (zbuf, ws) = take(op, ws, n * n)?;
        let (w, work) = take(op, ws, n)?;
        let (lam, v) = y.split_at_mut(1);
        let v = &mut v[0];
        // LAPACK works column-major: straight in V's buffer when it is column-major,
        // in its transpose when it is row-major (then V holds Vᵀ, transposed in place
        // below), else in the workspace.
        let direct = is_column_major(&v.view());
        let transposed = !direct && is_column_major(&v.t());
        {
            let mut z = if direct {
                v.view_mut()
            } else if transposed {
                v.view_mut().reversed_axes()
            } else {
                fmat_mut(zbuf, (n, n))
            };
            Zip::indexed(z.view_mut())
                .for_each(|(i, j), z| *z = if j <= i { a[(i, j)] } else { T::zero() });
            syevd(op, z.view_mut(), w, work, iwork)?;
        }
        if !direct && !transposed {
            v.assign(&fmat(zbuf, (n, n)));
        }
        if transposed {
            for i in 0..n {
                for j in 0..i {
                    let t = v[(i, j)];
                    v[(i, j)] = v[(j, i)];
                    v[(j, i)] = t;
                }
            }
        }
        fix_signs(v.view_mut(), None);
        for (i, &l) in w.iter().enumerate() {
            lam[0][(i, 0)] = l;
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
        let Some((mut g, acc)) = grads[0].target() else {
            return Ok(());
        };
        let (lam, v) = (y[0].view(), y[1].view());
        let n = v.nrows();
        let (sbuf, ws) = take(op, ws, n * n)?;
        let (mut w, _) = scratch(op, ws, (n, n))?;
        match ybar.get(1) {
            Some(vbar) => {
                gemm(
                    rmat_mut(sbuf, (n, n)),
                    Accum::Replace,
                    v.t(),
                    vbar,
                    T::one(),
                )?;
                reverse_core(op, sbuf, n, lam, ybar.get(0))?;
                gemm(
                    w.view_mut(),
                    Accum::Replace,
                    v,
                    rmat_mut(sbuf, (n, n)).view(),
                    T::one(),
                )?;
            }
            None => {
                let lbar = ybar.view(0);
                Zip::indexed(w.view_mut()).for_each(|(i, j), x| *x = v[(i, j)] * lbar[(j, 0)]);
            }
        }
        // G = W·Vᵀ = V·S·Vᵀ is symmetric (S is): only its lower triangle is computed.
        match acc {
            Accum::Replace => {
                gemm_tri_unzeroed(g.view_mut(), Uplo::Lower, w.view(), v.t(), T::one())?;
                fold_in_place(self.convention, g)?;
            }
            Accum::Add => {
                gemm_tri(
                    rmat_mut(sbuf, (n, n)),
                    Uplo::Lower,
                    Accum::Replace,
                    w.view(),
                    v.t(),
                    T::one(),
                )?;
                fold_into(self.convention, rmat_mut(sbuf, (n, n)).view(), g, acc);
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
        let (lam, v) = (y[0].view(), y[1].view());
        let n = v.nrows();
        let (mut p, _) = scratch(op, ws, (n, n))?;
        symmetrised(self.convention, xdot.view(0), p.view_mut());
        let (lam_dot, v_dot) = ydot.split_at_mut(1);
        let v_dot = &mut v_dot[0];
        // ȦV in V̇'s buffer, then P = Vᵀ(ȦV) over Ȧ.
        gemm(v_dot.view_mut(), Accum::Replace, p.view(), v, T::one())?;
        gemm(p.view_mut(), Accum::Replace, v.t(), v_dot.view(), T::one())?;
        forward_core(op, p.view_mut(), lam, lam_dot[0].view_mut())?;
        gemm(v_dot.view_mut(), Accum::Replace, v, p.view(), T::one())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{array, Array2};

    /// `fold_into` reads only the lower triangle of `p` (the strict upper one holds 9s
    /// here), and writes the convention's gradient: the mirrored `G`, or its lower
    /// triangle with doubled off-diagonal entries and a zero strict upper triangle.
    #[test]
    fn fold_into_reads_only_the_lower_triangle() {
        let p = array![[1.0, 9.0, 9.0], [2.0, 3.0, 9.0], [4.0, 5.0, 6.0]];
        let mut g = Array2::from_elem((3, 3), 0.5);
        fold_into(Convention::Lower, p.view(), g.view_mut(), Accum::Add);
        assert_eq!(
            g,
            array![[1.5, 0.5, 0.5], [4.5, 3.5, 0.5], [8.5, 10.5, 6.5]]
        );
        let mut g = Array2::from_elem((3, 3), 0.5);
        fold_into(
            Convention::Symmetric,
            p.view(),
            g.view_mut(),
            Accum::Replace,
        );
        assert_eq!(g, array![[1.0, 2.0, 4.0], [2.0, 3.0, 5.0], [4.0, 5.0, 6.0]]);
    }
}
