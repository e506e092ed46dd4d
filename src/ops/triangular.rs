//! Triangular solves, `X = op(L)⁻¹B` or `X = B·op(L)⁻¹`, one TRSM each way.
//!
//! With `A = op(L)`, the left solve `X = A⁻¹B` has `Ẋ = A⁻¹(Ḃ − ȦX)`, `B̄ = A⁻ᵀX̄`,
//! `Ā = −B̄Xᵀ`, and the right solve `X = BA⁻¹` has `Ẋ = (Ḃ − XȦ)A⁻¹`, `B̄ = X̄A⁻ᵀ`,
//! `Ā = −XᵀB̄` (Giles 2008, §3.3). `L̄` is `Ā` (or `Āᵀ` when `L` enters transposed)
//! restricted to the triangle TRSM reads: the other triangle is not an input.
//!
//! ```
//! use matgrad::prelude::*;
//! use ndarray::array;
//!
//! let l = array![[2.0, 0.0], [1.0, 4.0]];
//! let b = array![[2.0, 4.0, 6.0], [5.0, 6.0, 11.0]];
//! let x = TriSolve::default().apply(l.view(), b.view())?;   // X = L⁻¹B
//! assert_eq!(x.value(), &array![[1.0, 2.0, 3.0], [1.0, 1.0, 2.0]]);
//! let (lbar, bbar) = x.backward(array![[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]].view())?;
//! assert_eq!(lbar[(0, 1)], 0.0);                             // L̄ is lower triangular
//! assert_eq!(bbar.dim(), (2, 3));
//! # Ok::<(), matgrad::Error>(())
//! ```

use super::{two, Binary};
use crate::blas::{gemm, matmul, trmm, trsm, Diag, Side, Trans, Uplo};
use crate::error::{expect_shape, shape_of, Error, Result, Shape};
use crate::primitive::{check_arity, Primitive, Structure};
use crate::Real;
use ndarray::{s, Array2, ArrayView2, ArrayViewMut2};

const OP: &str = "TriSolve";

/// The triangular solve `X = op(L)⁻¹B` (left) or `X = B·op(L)⁻¹` (right), `L` square
/// with a non-zero diagonal and only its `uplo` triangle read.
///
/// Left, `A = op(L)`: `Ẋ = A⁻¹(Ḃ − ȦX)`, `B̄ = A⁻ᵀX̄`, `Ā = −B̄Xᵀ`; right: `Ẋ =
/// (Ḃ − XȦ)A⁻¹`, `B̄ = X̄A⁻ᵀ`, `Ā = −XᵀB̄` (Giles 2008, §3.3). `L̄ = Ā` (or `Āᵀ`) on the
/// `uplo` triangle, zero on the other.
///
/// Input 0 declares [`Structure::LowerTriangular`] for `Uplo::Lower`. For `Uplo::Upper`
/// it declares [`Structure::General`]: the strict lower triangle gets a zero gradient
/// and its perturbations leave `X` unchanged, so full perturbations check the same rule.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct TriSolve {
    /// Which side of `B` the inverse multiplies.
    pub side: Side,
    /// Whether `L` enters transposed.
    pub trans: Trans,
    /// Which triangle of `L` is the factor.
    pub uplo: Uplo,
}

impl Default for TriSolve {
    /// `X = L⁻¹B` with `L` lower triangular.
    fn default() -> Self {
        TriSolve::new(Side::Left, Trans::No, Uplo::Lower)
    }
}

impl TriSolve {
    /// A solve with the given side, transpose flag and triangle.
    pub fn new(side: Side, trans: Trans, uplo: Uplo) -> Self {
        TriSolve { side, trans, uplo }
    }

    /// Shape of `X` (that of `B`) after checking that `L` is square and fits `B`.
    fn check<T>(&self, l: &ArrayView2<'_, T>, b: &ArrayView2<'_, T>) -> Result<Shape> {
        let n = square(OP, "L", l)?;
        let (what, fits) = match self.side {
            Side::Left => ("B must have as many rows as L", b.nrows() == n),
            Side::Right => ("B must have as many columns as L", b.ncols() == n),
        };
        if !fits {
            return Err(Error::ShapeMismatch {
                op: OP,
                what,
                lhs_name: "L",
                lhs: shape_of(l),
                rhs_name: "B",
                rhs: shape_of(b),
            });
        }
        Ok(shape_of(b))
    }

    /// `B̄ = op(L)⁻ᵀX̄` (left) or `X̄·op(L)⁻ᵀ` (right), in a new array.
    fn bbar<T: Real>(&self, l: ArrayView2<'_, T>, cbar: ArrayView2<'_, T>) -> Result<Array2<T>> {
        let mut bbar = cbar.to_owned();
        trsm(
            OP,
            self.side,
            self.uplo,
            self.trans.flip(),
            Diag::NonUnit,
            T::one(),
            l,
            bbar.view_mut(),
        )?;
        Ok(bbar)
    }

    /// `L̄ += tri(Ā)` (or `tri(Āᵀ)`), one triangular GEMM straight into the buffer.
    fn add_lbar<T: Real>(
        &self,
        x: ArrayView2<'_, T>,
        bbar: ArrayView2<'_, T>,
        lbar: ArrayViewMut2<'_, T>,
    ) -> Result<()> {
        // Ā = −B̄Xᵀ (left) or −XᵀB̄ (right), and (PQ)ᵀ = QᵀPᵀ when L enters transposed.
        let (p, tp, q, tq) = match self.side {
            Side::Left => (bbar, Trans::No, x, Trans::Yes),
            Side::Right => (x, Trans::Yes, bbar, Trans::No),
        };
        let (p, tp, q, tq) = match self.trans {
            Trans::No => (p, tp, q, tq),
            Trans::Yes => (q, tq.flip(), p, tp.flip()),
        };
        gemm_tri(OP, self.uplo, -T::one(), p, tp, q, tq, lbar)
    }
}

impl<T: Real> Primitive<T> for TriSolve {
    fn name(&self) -> String {
        let l = match self.uplo {
            Uplo::Lower => "L",
            Uplo::Upper => "U",
        };
        let inv = match self.trans {
            Trans::No => "⁻¹",
            Trans::Yes => "⁻ᵀ",
        };
        match self.side {
            Side::Left => format!("{OP}({l}{inv}·B)"),
            Side::Right => format!("{OP}(B·{l}{inv})"),
        }
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
        match (input, self.uplo) {
            (0, Uplo::Lower) => Structure::LowerTriangular,
            _ => Structure::General,
        }
    }
    fn forward(&self, inputs: &[ArrayView2<'_, T>]) -> Result<Array2<T>> {
        let (l, b) = two(OP, "inputs", inputs)?;
        self.check(l, b)?;
        nonsingular(OP, l)?;
        let mut x = b.to_owned();
        trsm(
            OP,
            self.side,
            self.uplo,
            self.trans,
            Diag::NonUnit,
            T::one(),
            l.view(),
            x.view_mut(),
        )?;
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
        let bbar = self.bbar(l.view(), cbar)?;
        let mut lbar = Array2::zeros(l.dim());
        self.add_lbar(output, bbar.view(), lbar.view_mut())?;
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
            expect_shape(OP, "B̄ buffer", "B", shape_of(b), shape_of(g))?;
        }
        if grads.iter().all(Option::is_none) {
            return Ok(());
        }
        nonsingular(OP, l)?;
        // TRSM has no beta, and L̄ needs B̄ anyway: B̄ is solved into its own buffer.
        let bbar = self.bbar(l.view(), cbar)?;
        if let Some(g) = grads[0].as_mut() {
            self.add_lbar(output, bbar.view(), g.view_mut())?;
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
        // TRMM reads only the factor's triangle of L̇, as the forward pass reads L.
        let mut xd = output.to_owned();
        trmm(
            OP,
            self.side,
            self.uplo,
            self.trans,
            Diag::NonUnit,
            -T::one(),
            ld.view(),
            xd.view_mut(),
        )?;
        xd += bd;
        trsm(
            OP,
            self.side,
            self.uplo,
            self.trans,
            Diag::NonUnit,
            T::one(),
            l.view(),
            xd.view_mut(),
        )?;
        Ok(xd)
    }
}

impl<T: Real> Binary<T> for TriSolve {}

/// The order of a square matrix, or `NotSquare` naming it.
pub(crate) fn square<T>(
    op: &'static str,
    name: &'static str,
    a: &ArrayView2<'_, T>,
) -> Result<usize> {
    if a.nrows() == a.ncols() {
        Ok(a.nrows())
    } else {
        Err(Error::NotSquare {
            op,
            name,
            got: shape_of(a),
        })
    }
}

/// `Singular` at the first zero on the diagonal of a triangular factor.
pub(crate) fn nonsingular<T: Real>(op: &'static str, l: &ArrayView2<'_, T>) -> Result<()> {
    match l.diag().iter().position(|&d| d == T::zero()) {
        Some(index) => Err(Error::Singular { op, index }),
        None => Ok(()),
    }
}

/// Whether entry `(i, j)` lies in the `uplo` triangle (with the diagonal).
fn in_triangle(uplo: Uplo, i: usize, j: usize) -> bool {
    match uplo {
        Uplo::Lower => j <= i,
        Uplo::Upper => j >= i,
    }
}

/// `out += alpha·op(P)·op(Q)` on the `uplo` triangle of the square `out` only.
///
/// BLAS has no triangular-output GEMM (gemmt is a vendor extension), so this goes by
/// block rows: the part of each block row off the diagonal block is one GEMM with
/// beta = 1 straight into `out`, and only the small diagonal block is computed apart
/// and added on its triangle. That halves the flops of a full product and leaves the
/// other triangle untouched.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_tri<T: Real>(
    op: &'static str,
    uplo: Uplo,
    alpha: T,
    p: ArrayView2<'_, T>,
    tp: Trans,
    q: ArrayView2<'_, T>,
    tq: Trans,
    mut out: ArrayViewMut2<'_, T>,
) -> Result<()> {
    let (m, k) = tp.apply(p.dim());
    let (kq, n) = tq.apply(q.dim());
    if k != kq {
        return Err(Error::ShapeMismatch {
            op,
            what: "inner dimensions differ",
            lhs_name: "op(P)",
            lhs: Shape(m, k),
            rhs_name: "op(Q)",
            rhs: Shape(kq, n),
        });
    }
    expect_shape(op, "output", "op(P)·op(Q)", Shape(m, m), shape_of(&out))?;
    expect_shape(op, "op(Q)", "op(P)ᵀ", Shape(k, m), Shape(kq, n))?;
    let rows = |r0: usize, r1: usize| match tp {
        Trans::No => p.slice(s![r0..r1, ..]),
        Trans::Yes => p.slice(s![.., r0..r1]),
    };
    let cols = |c0: usize, c1: usize| match tq {
        Trans::No => q.slice(s![.., c0..c1]),
        Trans::Yes => q.slice(s![c0..c1, ..]),
    };
    let nb = T::CHOL_BLOCK.max(1);
    let mut r0 = 0;
    while r0 < m {
        let r1 = (r0 + nb).min(m);
        let (c0, c1) = match uplo {
            Uplo::Lower => (0, r0),
            Uplo::Upper => (r1, m),
        };
        if c1 > c0 {
            gemm(
                op,
                alpha,
                rows(r0, r1),
                tp,
                cols(c0, c1),
                tq,
                T::one(),
                out.slice_mut(s![r0..r1, c0..c1]),
            )?;
        }
        let diag = matmul(op, rows(r0, r1), tp, cols(r0, r1), tq)?;
        for ((i, j), &d) in diag.indexed_iter() {
            if in_triangle(uplo, i, j) {
                out[(r0 + i, r0 + j)] += alpha * d;
            }
        }
        r0 = r1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::random::{lower, randn, rng};
    use crate::Error;

    #[test]
    fn gemm_tri_adds_only_its_triangle() {
        let mut r = rng(3);
        let p = randn::<f64>(150, 7, &mut r);
        let q = randn::<f64>(150, 7, &mut r);
        let full = p.dot(&q.t());
        for uplo in [Uplo::Lower, Uplo::Upper] {
            let start = randn::<f64>(150, 150, &mut r);
            let mut out = start.clone();
            gemm_tri(
                "test",
                uplo,
                2.0,
                p.view(),
                Trans::No,
                q.view(),
                Trans::Yes,
                out.view_mut(),
            )
            .unwrap();
            for ((i, j), &o) in out.indexed_iter() {
                let want = if in_triangle(uplo, i, j) {
                    start[(i, j)] + 2.0 * full[(i, j)]
                } else {
                    start[(i, j)]
                };
                assert!((o - want).abs() < 1e-12, "{uplo:?} ({i}, {j})");
            }
        }
    }

    #[test]
    fn singular_diagonal_is_reported() {
        let mut r = rng(5);
        let mut l = lower::<f64>(4, &mut r);
        l[(2, 2)] = 0.0;
        let b = randn::<f64>(4, 2, &mut r);
        let e = TriSolve::default()
            .forward(&[l.view(), b.view()])
            .unwrap_err();
        assert_eq!(e, Error::Singular { op: OP, index: 2 });
    }
}
