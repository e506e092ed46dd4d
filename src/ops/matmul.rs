//! Matrix product with transpose flags, `C = op(A)·op(B)`.
//!
//! Forward `Ċ = op(Ȧ)op(B) + op(A)op(Ḃ)`; reverse, for `C = AB`, `Ā = C̄Bᵀ`,
//! `B̄ = AᵀC̄`, and for `C = AᵀB`, `Ā = BC̄ᵀ`, `B̄ = AC̄` (Giles 2008, §3.2).
//! Every product is one GEMM whose transposes are flags; accumulation is beta = 1.

use super::{two, Binary};
use crate::blas::{gemm, matmul, Accum, Trans};
use crate::error::{expect_shape, shape_of, Error, Result, Shape};
use crate::primitive::{check_arity, Primitive};
use crate::Real;
use ndarray::{Array2, ArrayView2, ArrayViewMut2};

const OP: &str = "MatMul";

/// `C = op(A)·op(B)` with `op ∈ {X, Xᵀ}` chosen per operand.
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

    fn out_shape<T>(&self, a: &ArrayView2<'_, T>, b: &ArrayView2<'_, T>) -> Result<(usize, usize)> {
        let (m, k) = self.ta.apply(a.dim());
        let (kb, n) = self.tb.apply(b.dim());
        if k != kb {
            return Err(Error::ShapeMismatch {
                op: OP,
                what: "inner dimensions differ",
                lhs_name: "op(A)",
                lhs: Shape(m, k),
                rhs_name: "op(B)",
                rhs: Shape(kb, n),
            });
        }
        Ok((m, n))
    }

    /// `Ā ← C̄·op(B)ᵀ` (or `op(B)·C̄ᵀ` when `A` enters transposed), replacing or adding.
    pub fn backward_a<T: Real>(
        &self,
        b: ArrayView2<'_, T>,
        cbar: ArrayView2<'_, T>,
        abar: ArrayViewMut2<'_, T>,
        accum: Accum,
    ) -> Result<()> {
        let beta = accum.beta();
        match self.ta {
            Trans::No => gemm(OP, T::one(), cbar, Trans::No, b, self.tb.flip(), beta, abar),
            Trans::Yes => gemm(OP, T::one(), b, self.tb, cbar, Trans::Yes, beta, abar),
        }
    }

    /// `B̄ ← op(A)ᵀ·C̄` (or `C̄ᵀ·op(A)` when `B` enters transposed), replacing or adding.
    pub fn backward_b<T: Real>(
        &self,
        a: ArrayView2<'_, T>,
        cbar: ArrayView2<'_, T>,
        bbar: ArrayViewMut2<'_, T>,
        accum: Accum,
    ) -> Result<()> {
        let beta = accum.beta();
        match self.tb {
            Trans::No => gemm(OP, T::one(), a, self.ta.flip(), cbar, Trans::No, beta, bbar),
            Trans::Yes => gemm(OP, T::one(), cbar, Trans::Yes, a, self.ta, beta, bbar),
        }
    }

    fn check_cbar<T>(
        &self,
        a: &ArrayView2<'_, T>,
        b: &ArrayView2<'_, T>,
        cbar: &ArrayView2<'_, T>,
    ) -> Result<()> {
        let (m, n) = self.out_shape(a, b)?;
        expect_shape(OP, "C̄", "C", Shape(m, n), shape_of(cbar))
    }
}

impl<T: Real> Primitive<T> for MatMul {
    fn name(&self) -> String {
        let f = |t: Trans, x: &str| match t {
            Trans::No => x.to_string(),
            Trans::Yes => format!("{x}ᵀ"),
        };
        format!("{OP}({}·{})", f(self.ta, "A"), f(self.tb, "B"))
    }
    fn arity(&self) -> usize {
        2
    }
    fn forward(&self, inputs: &[ArrayView2<'_, T>]) -> Result<Array2<T>> {
        let (a, b) = two(OP, "inputs", inputs)?;
        self.out_shape(a, b)?;
        matmul(OP, a.view(), self.ta, b.view(), self.tb)
    }
    fn backward(
        &self,
        inputs: &[ArrayView2<'_, T>],
        _output: ArrayView2<'_, T>,
        cbar: ArrayView2<'_, T>,
    ) -> Result<Vec<Array2<T>>> {
        let (a, b) = two(OP, "inputs", inputs)?;
        self.check_cbar(a, b, &cbar)?;
        let abar = match self.ta {
            Trans::No => matmul(OP, cbar.view(), Trans::No, b.view(), self.tb.flip())?,
            Trans::Yes => matmul(OP, b.view(), self.tb, cbar.view(), Trans::Yes)?,
        };
        let bbar = match self.tb {
            Trans::No => matmul(OP, a.view(), self.ta.flip(), cbar.view(), Trans::No)?,
            Trans::Yes => matmul(OP, cbar.view(), Trans::Yes, a.view(), self.ta)?,
        };
        Ok(vec![abar, bbar])
    }
    fn backward_into(
        &self,
        inputs: &[ArrayView2<'_, T>],
        _output: ArrayView2<'_, T>,
        cbar: ArrayView2<'_, T>,
        grads: &mut [Option<ArrayViewMut2<'_, T>>],
    ) -> Result<()> {
        let (a, b) = two(OP, "inputs", inputs)?;
        check_arity(OP, "gradient buffers", 2, grads.len())?;
        self.check_cbar(a, b, &cbar)?;
        if let Some(g) = grads[0].as_mut() {
            expect_shape(OP, "Ā buffer", "A", shape_of(a), shape_of(g))?;
            self.backward_a(b.view(), cbar.view(), g.view_mut(), Accum::Add)?;
        }
        if let Some(g) = grads[1].as_mut() {
            expect_shape(OP, "B̄ buffer", "B", shape_of(b), shape_of(g))?;
            self.backward_b(a.view(), cbar.view(), g.view_mut(), Accum::Add)?;
        }
        Ok(())
    }
    fn jvp(
        &self,
        inputs: &[ArrayView2<'_, T>],
        _output: ArrayView2<'_, T>,
        tangents: &[ArrayView2<'_, T>],
    ) -> Result<Array2<T>> {
        let (a, b) = two(OP, "inputs", inputs)?;
        let (ad, bd) = two(OP, "tangents", tangents)?;
        self.out_shape(a, b)?;
        expect_shape(OP, "Ȧ", "A", shape_of(a), shape_of(ad))?;
        expect_shape(OP, "Ḃ", "B", shape_of(b), shape_of(bd))?;
        let mut c = matmul(OP, ad.view(), self.ta, b.view(), self.tb)?;
        gemm(
            OP,
            T::one(),
            a.view(),
            self.ta,
            bd.view(),
            self.tb,
            T::one(),
            c.view_mut(),
        )?;
        Ok(c)
    }
}

impl<T: Real> Binary<T> for MatMul {}
