//! Matrix product with transpose flags, `C = op(A)·op(B)`.

use crate::blas::{gemm, Accum, Trans};
use crate::error::{Error, Result, Shape};
use crate::primitive::{Grad, Partials, Rule, Saves, Shapes};
use crate::Real;
use ndarray::{ArrayView2, ArrayViewMut2};
use smallvec::smallvec;

/// `C = op(A)·op(B)` with `op ∈ {X, Xᵀ}` chosen per operand.
///
/// Forward `Ċ = op(Ȧ)op(B) + op(A)op(Ḃ)`; reverse `op(A)‾ = C̄·op(B)ᵀ`,
/// `op(B)‾ = op(A)ᵀ·C̄`, so for `C = AB` `Ā = C̄Bᵀ`, `B̄ = AᵀC̄` and for `C = AᵀB`
/// `Ā = BC̄ᵀ`, `B̄ = AC̄` (Giles 2008, multiplication; `docs/math.md`). Every product is one GEMM
/// on transposed views; first writes are beta = 0, accumulation beta = 1. The reverse
/// rule reads `B` only for `Ā` and `A` only for `B̄`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Hash)]
pub struct MatMul {
    /// Transpose flag of `A`.
    pub ta: Trans,
    /// Transpose flag of `B`.
    pub tb: Trans,
}

impl MatMul {
    /// `C = op(A)·op(B)`.
    pub fn new(ta: Trans, tb: Trans) -> Self {
        MatMul { ta, tb }
    }
    /// `C = AB`.
    pub fn nn() -> Self {
        Self::new(Trans::No, Trans::No)
    }
    /// `C = AᵀB`.
    pub fn tn() -> Self {
        Self::new(Trans::Yes, Trans::No)
    }
    /// `C = ABᵀ`.
    pub fn nt() -> Self {
        Self::new(Trans::No, Trans::Yes)
    }
    /// `C = AᵀBᵀ`.
    pub fn tt() -> Self {
        Self::new(Trans::Yes, Trans::Yes)
    }

    /// `Ā ← C̄·op(B)ᵀ`, written into `op(Ā)`'s view, replacing or adding.
    pub fn backward_a<T: Real>(
        &self,
        b: ArrayView2<'_, T>,
        cbar: ArrayView2<'_, T>,
        abar: ArrayViewMut2<'_, T>,
        accum: Accum,
    ) -> Result<()> {
        gemm(
            self.ta.view_mut(abar),
            accum,
            cbar,
            self.tb.view(b).t(),
            T::one(),
        )
    }

    /// `B̄ ← op(A)ᵀ·C̄`, written into `op(B̄)`'s view, replacing or adding.
    pub fn backward_b<T: Real>(
        &self,
        a: ArrayView2<'_, T>,
        cbar: ArrayView2<'_, T>,
        bbar: ArrayViewMut2<'_, T>,
        accum: Accum,
    ) -> Result<()> {
        gemm(
            self.tb.view_mut(bbar),
            accum,
            self.ta.view(a).t(),
            cbar,
            T::one(),
        )
    }
}

impl<T: Real> Rule<T> for MatMul {
    fn name(&self) -> &'static str {
        match (self.ta, self.tb) {
            (Trans::No, Trans::No) => "MatMul(A·B)",
            (Trans::Yes, Trans::No) => "MatMul(Aᵀ·B)",
            (Trans::No, Trans::Yes) => "MatMul(A·Bᵀ)",
            (Trans::Yes, Trans::Yes) => "MatMul(Aᵀ·Bᵀ)",
        }
    }
    fn arity(&self) -> usize {
        2
    }
    fn shapes(&self, x: &[Shape]) -> Result<Shapes> {
        let (m, k) = self.ta.dims((x[0].0, x[0].1));
        let (kb, n) = self.tb.dims((x[1].0, x[1].1));
        if k != kb {
            return Err(Error::ShapeMismatch {
                op: Rule::<T>::name(self),
                what: "inner dimensions differ",
                lhs_name: "op(A)",
                lhs: Shape(m, k),
                rhs_name: "op(B)",
                rhs: Shape(kb, n),
            });
        }
        Ok(smallvec![Shape(m, n)])
    }
    fn saves(&self, wanted: &[bool]) -> Saves {
        let mut s = Saves::NONE;
        if wanted[1] {
            s = s.input(0);
        }
        if wanted[0] {
            s = s.input(1);
        }
        s
    }
    fn eval(
        &self,
        x: &[ArrayView2<'_, T>],
        y: &mut [ArrayViewMut2<'_, T>],
        _: &mut [T],
    ) -> Result<()> {
        let (a, b) = (self.ta.view(x[0].view()), self.tb.view(x[1].view()));
        gemm(y[0].view_mut(), Accum::Replace, a, b, T::one())
    }
    fn pullback(
        &self,
        x: &[ArrayView2<'_, T>],
        _y: &[ArrayView2<'_, T>],
        ybar: &Partials<'_, '_, T>,
        grads: &mut [Grad<'_, T>],
        _: &mut [T],
    ) -> Result<()> {
        let cbar = ybar.view(0);
        if let Some((g, acc)) = grads[0].target() {
            self.backward_a(x[1].view(), cbar.view(), g, acc)?;
        }
        if let Some((g, acc)) = grads[1].target() {
            self.backward_b(x[0].view(), cbar, g, acc)?;
        }
        Ok(())
    }
    fn pushforward(
        &self,
        x: &[ArrayView2<'_, T>],
        _y: &[ArrayView2<'_, T>],
        xdot: &Partials<'_, '_, T>,
        ydot: &mut [ArrayViewMut2<'_, T>],
        _: &mut [T],
    ) -> Result<()> {
        let (a, b) = (self.ta.view(x[0].view()), self.tb.view(x[1].view()));
        let mut accum = Accum::Replace;
        if let Some(ad) = xdot.get(0) {
            gemm(ydot[0].view_mut(), accum, self.ta.view(ad), b, T::one())?;
            accum = Accum::Add;
        }
        if let Some(bd) = xdot.get(1) {
            gemm(ydot[0].view_mut(), accum, a, self.tb.view(bd), T::one())?;
        }
        Ok(())
    }
}
