//! Solve with a Cholesky factor, `X = (LLᵀ)⁻¹B`: two triangular solves.
//!
//! With `K = LLᵀ`, Giles' rule for `X = K⁻¹B` gives `B̄ = K⁻¹X̄` and `K̄ = −B̄Xᵀ`, and
//! `K̇ = L̇Lᵀ + LL̇ᵀ` turns `K̄` into `L̄ = (K̄ + K̄ᵀ)L = −(B̄Xᵀ + XB̄ᵀ)L` on the lower
//! triangle (Giles 2008, §2.2; Murray 2016, §2; `docs/math.md`, solve with a Cholesky
//! factor).
//!
//! ```
//! use matgrad::prelude::*;
//! use ndarray::array;
//!
//! let l = array![[2.0f64, 0.0], [1.0, 3.0]];             // K = LLᵀ = [[4, 2], [2, 10]]
//! let b = array![[8.0], [22.0]];
//! let x = ChoSolve.apply([l.view(), b.view()])?;         // X = K⁻¹B
//! assert!((x.value() - &array![[1.0], [2.0]]).iter().all(|d| d.abs() < 1e-12));
//! let [lbar, bbar] = x.backward(array![[1.0], [0.0]].view())?;
//! assert_eq!((lbar[(0, 1)], bbar.dim()), (0.0, (2, 1)));
//! # Ok::<(), matgrad::Error>(())
//! ```

use super::triangular::{nonsingular, scratch, solve_shapes, with_bbar, TriSolve};
use crate::blas::{gemm_tri, trmm, Accum, Side, Tri, Uplo};
use crate::error::{Result, Shape};
use crate::primitive::{Grad, Partials, Rule, Saves, Shapes, Structure};
use crate::Real;
use ndarray::{ArrayView2, ArrayViewMut2};

const OP: &str = "ChoSolve";

/// `X = (LLᵀ)⁻¹B` for the lower Cholesky factor `L` (only its lower triangle is read).
///
/// Forward `Ẋ = (LLᵀ)⁻¹(Ḃ − (L̇Lᵀ + LL̇ᵀ)X)`; reverse `B̄ = (LLᵀ)⁻¹X̄`,
/// `L̄ = −tril((B̄Xᵀ + XB̄ᵀ)L)` (Giles 2008, §2.2, chained through `K = LLᵀ`;
/// `docs/math.md`). The solves are [`TriSolve::lower`] then [`TriSolve::lower_t`].
///
/// Cost for `k` columns, in units of `n²k` flops: the forward pass is two TRSMs (2),
/// and keeps the half-way point `Y = L⁻¹B` as a residual output (`n×k`, named `L⁻¹B`).
/// The reverse pass solves `Z = L⁻¹X̄` and `B̄ = L⁻ᵀZ` (2), and writes
/// `L̄ = −tril(B̄Yᵀ + XZᵀ)` (with `Y = LᵀX` and `Z = LᵀB̄`) as two triangular GEMMs
/// ([`gemm_tri`], 1 each): 4 in all. Without the residual, `Y` would cost a TRMM (1)
/// more, forming `LᵀB̄` again another (1), and the `n×n` product `(B̄Xᵀ + XB̄ᵀ)L`
/// would cost `n³`. The forward-mode rule reads `Y` too, for `K̇X = L̇Y + L(L̇ᵀX)`.
///
/// The reverse rule reads `L` (whenever a gradient is wanted), and `X` and `Y` (only
/// for `L̄`). Its workspace, `2nk` elements, holds `Z` and `B̄` when its buffer is not
/// a first write. Input 0 is [`Structure::LowerTriangular`].
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Hash)]
pub struct ChoSolve;

impl ChoSolve {
    /// `Y ← (LLᵀ)⁻¹Y` in place: `L⁻¹` then `L⁻ᵀ`. `K⁻¹` is symmetric, so this is both
    /// the forward pass (on `B`) and `B̄` (on `X̄`).
    pub fn solve_in_place<T: Real>(
        l: ArrayView2<'_, T>,
        mut y: ArrayViewMut2<'_, T>,
    ) -> Result<()> {
        TriSolve::lower().solve_in_place(l, y.view_mut())?;
        TriSolve::lower_t().solve_in_place(l, y)
    }
}

/// `L̄ ← −tril(B̄Yᵀ + XZᵀ)` with `Y = LᵀX = L⁻¹B` (the forward pass's residual) and
/// `Z = LᵀB̄ = L⁻¹X̄` (the half-way point of the solve for `B̄`), the same as
/// `−tril((B̄Xᵀ + XB̄ᵀ)L)` without the `n×n` product: two triangular GEMMs, the first
/// replacing or adding as `accum` says, the second adding.
fn backward_l<T: Real>(
    (x, y): (ArrayView2<'_, T>, ArrayView2<'_, T>),
    z: ArrayView2<'_, T>,
    bbar: ArrayView2<'_, T>,
    mut lbar: ArrayViewMut2<'_, T>,
    accum: Accum,
) -> Result<()> {
    gemm_tri(lbar.view_mut(), Uplo::Lower, accum, bbar, y.t(), -T::one())?;
    gemm_tri(lbar, Uplo::Lower, Accum::Add, x, z.t(), -T::one())
}

impl<T: Real> Rule<T> for ChoSolve {
    fn name(&self) -> &'static str {
        "ChoSolve((LLᵀ)⁻¹·B)"
    }
    fn arity(&self) -> usize {
        2
    }
    fn input_name(&self, i: usize) -> &'static str {
        ["L", "B"].get(i).copied().unwrap_or("X")
    }
    fn residuals(&self) -> usize {
        1
    }
    fn output_name(&self, k: usize) -> &'static str {
        ["C", "L⁻¹B"].get(k).copied().unwrap_or("R")
    }
    fn structure(&self, i: usize) -> Structure {
        if i == 0 {
            Structure::LowerTriangular
        } else {
            Structure::General
        }
    }
    fn shapes(&self, x: &[Shape]) -> Result<Shapes> {
        let mut s = solve_shapes(OP, Side::Left, x)?;
        s.push(x[1]);
        Ok(s)
    }
    fn saves(&self, wanted: &[bool]) -> Saves {
        match (wanted[0], wanted[1]) {
            (true, _) => Saves::NONE.input(0).output(0).output(1),
            (false, true) => Saves::NONE.input(0),
            (false, false) => Saves::NONE,
        }
    }
    fn workspace(&self, x: &[Shape]) -> usize {
        2 * x[1].0 * x[1].1
    }
    fn eval(
        &self,
        x: &[ArrayView2<'_, T>],
        y: &mut [ArrayViewMut2<'_, T>],
        _: &mut [T],
    ) -> Result<()> {
        let l = x[0].view();
        nonsingular(OP, &l)?;
        let (out, res) = y.split_at_mut(1);
        let (x_out, half) = (&mut out[0], &mut res[0]);
        half.assign(&x[1]);
        TriSolve::lower().solve_in_place(l, half.view_mut())?;
        x_out.assign(half);
        TriSolve::lower_t().solve_in_place(l, x_out.view_mut())
    }
    fn pullback(
        &self,
        x: &[ArrayView2<'_, T>],
        y: &[ArrayView2<'_, T>],
        ybar: &Partials<'_, '_, T>,
        grads: &mut [Grad<'_, T>],
        ws: &mut [T],
    ) -> Result<()> {
        let l = x[0].view();
        nonsingular(OP, &l)?;
        let (gl, gb) = grads.split_at_mut(1);
        let (gl, gb) = (&mut gl[0], &mut gb[0]);
        let Some((lbar, acc)) = gl.target() else {
            let solve = |v: ArrayViewMut2<'_, T>| Self::solve_in_place(l, v);
            let none = None::<fn(ArrayView2<'_, T>) -> Result<()>>;
            return with_bbar(OP, ybar.view(0), gb, ws, solve, none);
        };
        // Z = L⁻¹X̄ is kept for L̄; B̄ = L⁻ᵀZ is then solved from a copy of it.
        let (mut z, rest) = scratch(OP, ws, x[1].dim())?;
        z.assign(&ybar.view(0));
        TriSolve::lower().solve_in_place(l, z.view_mut())?;
        let z = z.view();
        let solve = |v: ArrayViewMut2<'_, T>| TriSolve::lower_t().solve_in_place(l, v);
        let xy = (y[0].view(), y[1].view());
        let lbar = move |bbar: ArrayView2<'_, T>| backward_l(xy, z, bbar, lbar, acc);
        with_bbar(OP, z, gb, rest, solve, Some(lbar))
    }
    fn pushforward(
        &self,
        x: &[ArrayView2<'_, T>],
        y: &[ArrayView2<'_, T>],
        xdot: &Partials<'_, '_, T>,
        ydot: &mut [ArrayViewMut2<'_, T>],
        ws: &mut [T],
    ) -> Result<()> {
        let l = x[0].view();
        nonsingular(OP, &l)?;
        let mut xd = ydot[0].view_mut();
        match xdot.get(0) {
            Some(ld) => {
                // Ḃ − K̇X with K̇X = L̇Y + L(L̇ᵀX), Y = LᵀX the residual; TRMM reads only
                // the lower triangles.
                xd.assign(&y[1]);
                trmm(xd.view_mut(), Side::Left, Tri::lower(ld), -T::one())?;
                let (mut v, _) = scratch(OP, ws, y[0].dim())?;
                v.assign(&y[0]);
                trmm(v.view_mut(), Side::Left, Tri::lower(ld).t(), T::one())?;
                trmm(v.view_mut(), Side::Left, Tri::lower(l), -T::one())?;
                xd += &v;
                if let Some(bd) = xdot.get(1) {
                    xd += &bd;
                }
            }
            None => xd.assign(&xdot.view(1)),
        }
        Self::solve_in_place(l, xd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::ops::Apply;
    use ndarray::Array2;

    fn mat(m: usize, n: usize, seed: usize) -> Array2<f64> {
        Array2::from_shape_fn((m, n), |(i, j)| {
            ((i * 131 + j * 71 + seed * 29 + 1) as f64 * 0.7548776662).sin()
        })
    }

    /// A lower factor with a positive diagonal and junk above it, which must not be read.
    fn factor(n: usize, seed: usize) -> Array2<f64> {
        let m = mat(n, n, seed);
        Array2::from_shape_fn((n, n), |(i, j)| match i.cmp(&j) {
            std::cmp::Ordering::Equal => 2.0 + m[(i, j)].abs(),
            std::cmp::Ordering::Greater => 0.5 * m[(i, j)],
            std::cmp::Ordering::Less => 1e3,
        })
    }

    fn close(a: &Array2<f64>, b: &Array2<f64>, tol: f64) -> bool {
        let scale = b.iter().fold(1.0f64, |m, x| m.max(x.abs()));
        a.dim() == b.dim() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol * scale)
    }

    #[test]
    fn matches_the_dense_rules_in_every_gradient_mode() {
        let (n, k) = (70, 3);
        let l = factor(n, 1);
        let lo = Array2::from_shape_fn((n, n), |(i, j)| if j <= i { l[(i, j)] } else { 0.0 });
        let b = mat(n, k, 2);
        let xbar = mat(n, k, 3);
        let mut kinv = Array2::eye(n);
        ChoSolve::solve_in_place(l.view(), kinv.view_mut()).unwrap();
        let out = ChoSolve.apply([l.view(), b.view()]).unwrap();
        let x = out.value().to_owned();
        assert!(close(&lo.dot(&lo.t()).dot(&x), &b, 1e-12));
        let want_bbar = kinv.dot(&xbar);
        let m = -(want_bbar.dot(&x.t()) + x.dot(&want_bbar.t())).dot(&lo);
        let want_lbar =
            Array2::from_shape_fn((n, n), |(i, j)| if j <= i { m[(i, j)] } else { 0.0 });
        let [lbar, bbar] = out.backward(xbar.view()).unwrap();
        assert!(close(&bbar, &want_bbar, 1e-12));
        assert!(close(&lbar, &want_lbar, 1e-12));

        let shapes = [Shape(n, n), Shape(n, k)];
        let mut ws = vec![f64::NAN; Rule::<f64>::workspace(&ChoSolve, &shapes)];
        let (mut lb, mut bb) = (
            Array2::from_elem((n, n), f64::NAN),
            Array2::from_elem((n, k), f64::NAN),
        );
        out.backward_into(
            &[Some(xbar.view())],
            &mut [Grad::Write(lb.view_mut()), Grad::Skip],
            Some(&mut ws),
        )
        .unwrap();
        assert!(close(&lb, &want_lbar, 1e-12));
        out.backward_into(
            &[Some(xbar.view())],
            &mut [Grad::Add(lb.view_mut()), Grad::Write(bb.view_mut())],
            Some(&mut ws),
        )
        .unwrap();
        assert!(close(&lb, &(&want_lbar * 2.0), 1e-12));
        assert!(close(&bb, &want_bbar, 1e-12));
        out.backward_into(
            &[Some(xbar.view())],
            &mut [Grad::Skip, Grad::Add(bb.view_mut())],
            Some(&mut ws),
        )
        .unwrap();
        assert!(close(&bb, &(&want_bbar * 2.0), 1e-12));

        // ⟨X̄, Ẋ⟩ = ⟨L̄, L̇⟩ + ⟨B̄, Ḃ⟩, with L̇ lower triangular.
        let m4 = mat(n, n, 4);
        let ld = Array2::from_shape_fn((n, n), |(i, j)| if j <= i { m4[(i, j)] } else { 0.0 });
        let bd = mat(n, k, 5);
        let xd = out.jvp([ld.view(), bd.view()]).unwrap();
        let lhs = (&xbar * &xd).sum();
        let rhs = (&lbar * &ld).sum() + (&bbar * &bd).sum();
        assert!((lhs - rhs).abs() < 1e-10 * (1.0 + lhs.abs()), "{lhs} {rhs}");
    }

    #[test]
    fn a_zero_on_the_diagonal_is_singular() {
        let mut l = factor(4, 6);
        l[(1, 1)] = 0.0;
        let b = mat(4, 2, 7);
        assert_eq!(
            ChoSolve.apply([l.view(), b.view()]).err(),
            Some(Error::Singular { op: OP, index: 1 })
        );
    }
}
