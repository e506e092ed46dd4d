//! Solve with a Cholesky factor, `X = (LLᵀ)⁻¹B`: two triangular solves.
//!
//! With `K = LLᵀ`, Giles' rule for `X = K⁻¹B` gives `B̄ = K⁻¹X̄` and `K̄ = −B̄Xᵀ`, and
//! `K̇ = L̇Lᵀ + LL̇ᵀ` turns `K̄` into `L̄ = (K̄ + K̄ᵀ)L = −(B̄Xᵀ + XB̄ᵀ)L` on the lower
//! triangle (Giles 2008, §3.3; Murray 2016, §2).
//!
//! ```
//! use matgrad::prelude::*;
//! use ndarray::array;
//!
//! let l = array![[2.0f64, 0.0], [1.0, 3.0]];             // K = LLᵀ = [[4, 2], [2, 10]]
//! let b = array![[8.0], [22.0]];
//! let x = ChoSolve.apply(l.view(), b.view())?;           // X = K⁻¹B
//! assert!((x.value() - &array![[1.0], [2.0]]).iter().all(|d| d.abs() < 1e-12));
//! let (lbar, bbar) = x.backward(array![[1.0], [0.0]].view())?;
//! assert_eq!((lbar[(0, 1)], bbar.dim()), (0.0, (2, 1)));
//! # Ok::<(), matgrad::Error>(())
//! ```

use super::triangular::{gemm_tri, nonsingular, square};
use super::{two, Binary};
use crate::blas::{trmm, trsm, Diag, Side, Trans, Uplo};
use crate::error::{expect_shape, shape_of, Error, Result, Shape};
use crate::primitive::{check_arity, Primitive, Structure};
use crate::Real;
use ndarray::{s, Array2, ArrayView2, ArrayViewMut2};

const OP: &str = "ChoSolve";

/// `X = (LLᵀ)⁻¹B` for the lower Cholesky factor `L` (only its lower triangle is read).
///
/// Forward `Ẋ = (LLᵀ)⁻¹(Ḃ − (L̇Lᵀ + LL̇ᵀ)X)`; reverse `B̄ = (LLᵀ)⁻¹X̄`,
/// `L̄ = −tril((B̄Xᵀ + XB̄ᵀ)L)` (Giles 2008, §3.3, chained through `K = LLᵀ`).
/// Input 0 is [`Structure::LowerTriangular`].
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Hash)]
pub struct ChoSolve;

impl ChoSolve {
    fn check<T>(&self, l: &ArrayView2<'_, T>, b: &ArrayView2<'_, T>) -> Result<Shape> {
        let n = square(OP, "L", l)?;
        if b.nrows() != n {
            return Err(Error::ShapeMismatch {
                op: OP,
                what: "B must have as many rows as L",
                lhs_name: "L",
                lhs: shape_of(l),
                rhs_name: "B",
                rhs: shape_of(b),
            });
        }
        Ok(shape_of(b))
    }
}

/// `Y ← (LLᵀ)⁻¹Y` in place.
fn solve_in_place<T: Real>(l: ArrayView2<'_, T>, mut y: ArrayViewMut2<'_, T>) -> Result<()> {
    trsm(
        OP,
        Side::Left,
        Uplo::Lower,
        Trans::No,
        Diag::NonUnit,
        T::one(),
        l.view(),
        y.view_mut(),
    )?;
    trsm(
        OP,
        Side::Left,
        Uplo::Lower,
        Trans::Yes,
        Diag::NonUnit,
        T::one(),
        l,
        y,
    )
}

/// `L̄ −= tril(B̄(XᵀL) + X(B̄ᵀL))`, the same as `tril((B̄Xᵀ + XB̄ᵀ)L)` but O(n²k):
/// one TRMM for `Lᵀ[B̄ X]`, then two triangular GEMMs with beta = 1 into `L̄`.
fn sub_lbar<T: Real>(
    l: ArrayView2<'_, T>,
    x: ArrayView2<'_, T>,
    bbar: ArrayView2<'_, T>,
    mut lbar: ArrayViewMut2<'_, T>,
) -> Result<()> {
    let (n, k) = x.dim();
    let mut y = Array2::zeros((n, 2 * k));
    y.slice_mut(s![.., ..k]).assign(&bbar);
    y.slice_mut(s![.., k..]).assign(&x);
    trmm(
        OP,
        Side::Left,
        Uplo::Lower,
        Trans::Yes,
        Diag::NonUnit,
        T::one(),
        l,
        y.view_mut(),
    )?;
    let (ltb, ltx) = (y.slice(s![.., ..k]), y.slice(s![.., k..]));
    gemm_tri(
        OP,
        Uplo::Lower,
        -T::one(),
        bbar,
        Trans::No,
        ltx,
        Trans::Yes,
        lbar.view_mut(),
    )?;
    gemm_tri(
        OP,
        Uplo::Lower,
        -T::one(),
        x,
        Trans::No,
        ltb,
        Trans::Yes,
        lbar,
    )
}

impl<T: Real> Primitive<T> for ChoSolve {
    fn name(&self) -> String {
        format!("{OP}((LLᵀ)⁻¹·B)")
    }
    fn arity(&self) -> usize {
        2
    }
    fn input_name(&self, input: usize) -> String {
        ["L", "B"].get(input).map_or_else(
            || crate::check::default_input_name(input),
            |s| s.to_string(),
        )
    }
    fn structure(&self, input: usize) -> Structure {
        if input == 0 {
            Structure::LowerTriangular
        } else {
            Structure::General
        }
    }
    fn forward(&self, inputs: &[ArrayView2<'_, T>]) -> Result<Array2<T>> {
        let (l, b) = two(OP, "inputs", inputs)?;
        self.check(l, b)?;
        nonsingular(OP, l)?;
        let mut x = b.to_owned();
        solve_in_place(l.view(), x.view_mut())?;
        Ok(x)
    }
    fn backward(
        &self,
        inputs: &[ArrayView2<'_, T>],
        output: ArrayView2<'_, T>,
        cbar: ArrayView2<'_, T>,
    ) -> Result<Vec<Array2<T>>> {
        let (l, b) = two(OP, "inputs", inputs)?;
        let xs = self.check(l, b)?;
        expect_shape(OP, "X", "B", xs, shape_of(&output))?;
        expect_shape(OP, "X̄", "X", xs, shape_of(&cbar))?;
        nonsingular(OP, l)?;
        let mut bbar = cbar.to_owned();
        solve_in_place(l.view(), bbar.view_mut())?;
        let mut lbar = Array2::zeros(l.dim());
        sub_lbar(l.view(), output, bbar.view(), lbar.view_mut())?;
        Ok(vec![lbar, bbar])
    }
    fn backward_into(
        &self,
        inputs: &[ArrayView2<'_, T>],
        output: ArrayView2<'_, T>,
        cbar: ArrayView2<'_, T>,
        grads: &mut [Option<ArrayViewMut2<'_, T>>],
    ) -> Result<()> {
        let (l, b) = two(OP, "inputs", inputs)?;
        check_arity(OP, "gradient buffers", 2, grads.len())?;
        let xs = self.check(l, b)?;
        expect_shape(OP, "X", "B", xs, shape_of(&output))?;
        expect_shape(OP, "X̄", "X", xs, shape_of(&cbar))?;
        if let Some(g) = grads[0].as_ref() {
            expect_shape(OP, "L̄ buffer", "L", shape_of(l), shape_of(g))?;
        }
        if let Some(g) = grads[1].as_ref() {
            expect_shape(OP, "B̄ buffer", "B", xs, shape_of(g))?;
        }
        if grads.iter().all(Option::is_none) {
            return Ok(());
        }
        nonsingular(OP, l)?;
        // TRSM has no beta, and L̄ needs B̄ anyway: B̄ is solved into its own buffer.
        let mut bbar = cbar.to_owned();
        solve_in_place(l.view(), bbar.view_mut())?;
        if let Some(g) = grads[0].as_mut() {
            sub_lbar(l.view(), output, bbar.view(), g.view_mut())?;
        }
        if let Some(g) = grads[1].as_mut() {
            *g += &bbar;
        }
        Ok(())
    }
    fn jvp(
        &self,
        inputs: &[ArrayView2<'_, T>],
        output: ArrayView2<'_, T>,
        tangents: &[ArrayView2<'_, T>],
    ) -> Result<Array2<T>> {
        let (l, b) = two(OP, "inputs", inputs)?;
        let (ld, bd) = two(OP, "tangents", tangents)?;
        let xs = self.check(l, b)?;
        expect_shape(OP, "X", "B", xs, shape_of(&output))?;
        expect_shape(OP, "L̇", "L", shape_of(l), shape_of(ld))?;
        expect_shape(OP, "Ḃ", "B", xs, shape_of(bd))?;
        nonsingular(OP, l)?;
        // K̇X = L̇(LᵀX) + L(L̇ᵀX); TRMM reads only the lower triangles of L and L̇.
        let mut xd = output.to_owned();
        trmm(
            OP,
            Side::Left,
            Uplo::Lower,
            Trans::Yes,
            Diag::NonUnit,
            T::one(),
            l.view(),
            xd.view_mut(),
        )?;
        trmm(
            OP,
            Side::Left,
            Uplo::Lower,
            Trans::No,
            Diag::NonUnit,
            -T::one(),
            ld.view(),
            xd.view_mut(),
        )?;
        let mut v = output.to_owned();
        trmm(
            OP,
            Side::Left,
            Uplo::Lower,
            Trans::Yes,
            Diag::NonUnit,
            T::one(),
            ld.view(),
            v.view_mut(),
        )?;
        trmm(
            OP,
            Side::Left,
            Uplo::Lower,
            Trans::No,
            Diag::NonUnit,
            -T::one(),
            l.view(),
            v.view_mut(),
        )?;
        xd += &v;
        xd += bd;
        solve_in_place(l.view(), xd.view_mut())?;
        Ok(xd)
    }
}

impl<T: Real> Binary<T> for ChoSolve {}
