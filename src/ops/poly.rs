//! Matrix polynomial, `C = p(A) = Σₖ cₖAᵏ`, by Horner's scheme.
//!
//! ```
//! use matgrad::prelude::*;
//! use ndarray::array;
//!
//! // p(A) = 1 + 2A + A² at a nilpotent A (A² = 0): C = I + 2A.
//! let p = MatPoly::new([1.0, 2.0, 1.0]);
//! let a = array![[0.0f64, 3.0], [0.0, 0.0]];
//! let c = (&p).apply([a.view()])?;
//! assert_eq!(c.value(), &array![[1.0, 6.0], [0.0, 1.0]]);
//! let adot = array![[1.0, 0.0], [0.0, 0.0]];
//! // Ċ = 2Ȧ + ȦA + AȦ.
//! assert_eq!(c.jvp([adot.view()])?, array![[2.0, 3.0], [0.0, 0.0]]);
//! # Ok::<(), matgrad::Error>(())
//! ```

use super::square;
use crate::blas::{gemm, Accum};
use crate::error::{Error, Result, Shape};
use crate::primitive::{Grad, Partials, Rule, Saves, Shapes};
use crate::Real;
use ndarray::{ArrayView2, ArrayViewMut2, ShapeBuilder, Zip};
use smallvec::smallvec;

const OP: &str = "MatPoly";

/// `C = p(A) = Σₖ₌₀ᵈ cₖAᵏ` for a square `A`, the coefficients `c₀ … c_d` held in the
/// struct as `f64` (rounded to the precision of `A`). An empty list is the zero
/// polynomial.
///
/// Forward, Horner: `P_d = c_dI`, `P_j = AP_{j+1} + c_jI`, `C = P₀` (`d − 1` GEMMs).
/// JVP, Horner on the pair: `Ṗ_d = 0`, `Ṗ_j = ȦP_{j+1} + AṖ_{j+1}`, `Ċ = Ṗ₀`.
/// VJP, Horner in reverse: `P̄₀ = C̄`, and for `j = 0 … d−1`
/// `Ā += P̄_jP_{j+1}ᵀ`, `P̄_{j+1} = AᵀP̄_j`, so `Ā = Σⱼ P̄_jP_{j+1}ᵀ` (Giles 2008,
/// "Matrix polynomial"; `docs/math.md`, "Matrix polynomial"). The reverse pass
/// recomputes the Horner iterates `P₁ … P_{d−1}` into the workspace (`O(d·n²)` memory)
/// and runs on GEMMs only; the `j = d−1` term, `c_dP̄_{d−1}`, is a scaled sum.
///
/// Saves: the input `A`. Workspace: `(d + 1)n²` elements for `d ≥ 2`, none for
/// `d ≤ 1`. Holding data, it is applied by reference: `(&p).apply([a])`.
#[derive(Clone, PartialEq, Debug, Default)]
pub struct MatPoly {
    /// `c₀, c₁, …, c_d`: the coefficient of `Aᵏ` at index `k`.
    pub coeffs: Vec<f64>,
}

impl MatPoly {
    /// `p(A) = Σₖ coeffs[k]·Aᵏ`.
    pub fn new(coeffs: impl Into<Vec<f64>>) -> Self {
        MatPoly {
            coeffs: coeffs.into(),
        }
    }
    /// The degree `d` (the number of coefficients less one; 0 for an empty list).
    pub fn degree(&self) -> usize {
        self.coeffs.len().saturating_sub(1)
    }
    fn c<T: Real>(&self, k: usize) -> T {
        T::of(self.coeffs.get(k).copied().unwrap_or(0.0))
    }
}

/// An `n×n` column-major view of the first `n²` elements of `ws`.
fn mat<T>(ws: &mut [T], n: usize) -> Result<ArrayViewMut2<'_, T>> {
    let got = ws.len();
    ArrayViewMut2::from_shape((n, n).f(), ws).map_err(|_| Error::Workspace {
        op: OP,
        needed: n * n,
        got,
    })
}

/// `dst = c·src + d·I`, without reading `dst`.
fn affine<T: Real>(mut dst: ArrayViewMut2<'_, T>, c: T, src: ArrayView2<'_, T>, d: T) {
    Zip::from(&mut dst).and(&src).for_each(|o, &v| *o = c * v);
    dst.diag_mut().iter_mut().for_each(|o| *o += d);
}

/// Adds `d` to the diagonal.
fn shift<T: Real>(mut m: ArrayViewMut2<'_, T>, d: T) {
    m.diag_mut().iter_mut().for_each(|o| *o += d);
}

impl<T: Real> Rule<T> for MatPoly {
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
    fn saves(&self, _wanted: &[bool]) -> Saves {
        Saves::NONE.input(0)
    }
    fn workspace(&self, x: &[Shape]) -> usize {
        let d = self.degree();
        if d < 2 {
            return 0;
        }
        let n = x[0].0;
        (d + 1).saturating_mul(n.saturating_mul(n))
    }
    fn eval(
        &self,
        x: &[ArrayView2<'_, T>],
        y: &mut [ArrayViewMut2<'_, T>],
        ws: &mut [T],
    ) -> Result<()> {
        let a = x[0].view();
        let n = a.nrows();
        let d = self.degree();
        let mut out = y[0].view_mut();
        if self.coeffs.is_empty() {
            out.fill(T::zero());
            return Ok(());
        }
        if d == 0 {
            out.fill(T::zero());
            shift(out, self.c(0));
            return Ok(());
        }
        // P_{d−1} = c_dA + c_{d−1}I, then d − 1 Horner steps alternating between the
        // output and one scratch matrix, starting where the last one lands in the output.
        let steps = d - 1;
        let room = (n * n).min(ws.len());
        let spare = mat(&mut ws[..room], n);
        let (mut cur, mut nxt) = match (steps % 2, steps) {
            (_, 0) => (out, None),
            (0, _) => (out, Some(spare?)),
            _ => (spare?, Some(out)),
        };
        affine(cur.view_mut(), self.c(d), a.view(), self.c(d - 1));
        for j in (0..steps).rev() {
            let Some(next) = nxt.as_mut() else { break };
            gemm(
                next.view_mut(),
                Accum::Replace,
                a.view(),
                cur.view(),
                T::one(),
            )?;
            shift(next.view_mut(), self.c(j));
            if let Some(next) = nxt.take() {
                nxt = Some(std::mem::replace(&mut cur, next));
            }
        }
        Ok(())
    }
    fn pullback(
        &self,
        x: &[ArrayView2<'_, T>],
        _y: &[ArrayView2<'_, T>],
        ybar: &Partials<'_, '_, T>,
        grads: &mut [Grad<'_, T>],
        ws: &mut [T],
    ) -> Result<()> {
        let Some((mut g, acc)) = grads[0].target() else {
            return Ok(());
        };
        let a = x[0].view();
        let n = a.nrows();
        let d = self.degree();
        let cbar = ybar.view(0);
        if d == 0 {
            // A constant: no gradient.
            if acc == Accum::Replace {
                g.fill(T::zero());
            }
            return Ok(());
        }
        let nn = n * n;
        // The Horner iterates P₁ … P_{d−1}, P_{j+1} in slot j, computed from the top.
        let (iters, rest) = ws.split_at_mut((d - 1) * nn);
        if d >= 2 {
            affine(
                mat(&mut iters[(d - 2) * nn..], n)?,
                self.c(d),
                a.view(),
                self.c(d - 1),
            );
            for j in (0..d - 2).rev() {
                let (lo, hi) = iters.split_at_mut((j + 1) * nn);
                let mut dst = mat(&mut lo[j * nn..], n)?;
                let src = mat(&mut hi[..nn], n)?;
                gemm(
                    dst.view_mut(),
                    Accum::Replace,
                    a.view(),
                    src.view(),
                    T::one(),
                )?;
                shift(dst, self.c(j + 1));
            }
        }
        // P̄₀ = C̄; Ā += P̄_jP_{j+1}ᵀ and P̄_{j+1} = AᵀP̄_j, alternating two scratch matrices.
        let (mut cur, mut nxt) = if d >= 2 {
            let (r0, r1) = rest.split_at_mut(nn);
            (Some(mat(r0, n)?), Some(mat(&mut r1[..nn], n)?))
        } else {
            (None, None)
        };
        let mut accum = acc;
        for j in 0..d {
            let pbar = match (j, cur.as_ref()) {
                (0, _) | (_, None) => cbar.view(),
                (_, Some(c)) => c.view(),
            };
            if j + 1 < d {
                let p = mat(&mut iters[j * nn..(j + 1) * nn], n)?;
                gemm(g.view_mut(), accum, pbar.view(), p.view().t(), T::one())?;
                if let Some(next) = nxt.as_mut() {
                    gemm(next.view_mut(), Accum::Replace, a.t(), pbar, T::one())?;
                }
                std::mem::swap(&mut cur, &mut nxt);
            } else {
                // P_d = c_dI.
                let cd = self.c::<T>(d);
                Zip::from(g.view_mut())
                    .and(&pbar)
                    .for_each(|o, &v| accum.store(o, cd * v));
            }
            accum = Accum::Add;
        }
        Ok(())
    }
    fn pushforward(
        &self,
        x: &[ArrayView2<'_, T>],
        _y: &[ArrayView2<'_, T>],
        xdot: &Partials<'_, '_, T>,
        ydot: &mut [ArrayViewMut2<'_, T>],
        ws: &mut [T],
    ) -> Result<()> {
        let a = x[0].view();
        let ad = xdot.view(0);
        let n = a.nrows();
        let d = self.degree();
        let out = ydot[0].view_mut();
        if d == 0 {
            let mut out = out;
            out.fill(T::zero());
            return Ok(());
        }
        // Ṗ_{d−1} = c_dȦ, P_{d−1} = c_dA + c_{d−1}I; then d − 1 steps on the pair. Ṗ
        // alternates between the output and one scratch matrix so that Ṗ₀ lands in the
        // output; P between two more.
        let steps = d - 1;
        let nn = n * n;
        let mut slots = ws.chunks_exact_mut(nn.max(1));
        let mut take = || match slots.next() {
            Some(s) => mat(s, n),
            None => mat(&mut [], n),
        };
        let (mut tcur, mut tnxt) = match (steps % 2, steps) {
            (_, 0) => (out, None),
            (0, _) => (out, Some(take()?)),
            _ => (take()?, Some(out)),
        };
        let (mut pcur, mut pnxt) = if steps > 0 {
            (Some(take()?), Some(take()?))
        } else {
            (None, None)
        };
        Zip::from(tcur.view_mut())
            .and(&ad)
            .for_each(|o, &v| *o = self.c::<T>(d) * v);
        if let Some(p) = pcur.as_mut() {
            affine(p.view_mut(), self.c(d), a.view(), self.c(d - 1));
        }
        for j in (0..steps).rev() {
            let (Some(tn), Some(pc)) = (tnxt.as_mut(), pcur.as_ref()) else {
                break;
            };
            // Ṗ_j = ȦP_{j+1} + AṖ_{j+1}.
            gemm(
                tn.view_mut(),
                Accum::Replace,
                ad.view(),
                pc.view(),
                T::one(),
            )?;
            gemm(tn.view_mut(), Accum::Add, a.view(), tcur.view(), T::one())?;
            if j > 0 {
                if let Some(pn) = pnxt.as_mut() {
                    // P_j = AP_{j+1} + c_jI (P₀ itself is not needed).
                    gemm(pn.view_mut(), Accum::Replace, a.view(), pc.view(), T::one())?;
                    shift(pn.view_mut(), self.c(j));
                }
                std::mem::swap(&mut pcur, &mut pnxt);
            }
            if let Some(next) = tnxt.take() {
                tnxt = Some(std::mem::replace(&mut tcur, next));
            }
        }
        Ok(())
    }
}
