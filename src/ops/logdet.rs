//! Log-determinant from a Cholesky factor, `c = log det(LLᵀ) = 2 Σᵢ log Lᵢᵢ`.
//!
//! Only the diagonal enters: `ċ = 2 Σᵢ L̇ᵢᵢ/Lᵢᵢ` and `L̄ = diag(2c̄/Lᵢᵢ)` (the
//! elementwise rule for `log` on the diagonal; chained with Cholesky it gives
//! `Ā = c̄A⁻¹`, Giles' determinant rule, Giles 2008, §2.2; `docs/math.md`).
//!
//! ```
//! use matgrad::prelude::*;
//! use ndarray::array;
//!
//! let l = array![[2.0f64, 0.0], [7.0, 0.5]];
//! let c = CholLogDet.apply([l.view()])?;
//! assert!(c.value()[(0, 0)].abs() < 1e-15);              // det(LLᵀ) = (2·0.5)² = 1
//! let [lbar] = c.backward(array![[1.0]].view())?;
//! assert_eq!(lbar, array![[1.0, 0.0], [0.0, 4.0]]);
//! # Ok::<(), matgrad::Error>(())
//! ```

use super::square;
use crate::blas::Accum;
use crate::error::{Error, Result, Shape};
use crate::primitive::{Grad, Partials, Rule, Saves, Shapes, Structure};
use crate::Real;
use ndarray::{ArrayView2, ArrayViewMut2};
use smallvec::smallvec;

const OP: &str = "CholLogDet";

/// `c = 2 Σᵢ log Lᵢᵢ` as a `1×1` matrix: `log det(LLᵀ)` for a Cholesky factor `L`.
///
/// Forward `ċ = 2 Σᵢ L̇ᵢᵢ/Lᵢᵢ`; reverse `L̄ = diag(2c̄/Lᵢᵢ)` (Giles 2008, §2.2, the
/// determinant rule through `log`; `docs/math.md`). The diagonal must be positive:
/// a zero is [`Error::Singular`], a NaN [`Error::NonFinite`], a negative entry
/// [`Error::InvalidArgument`]. The reverse rule reads `L` only, and needs no workspace.
/// Input 0 is [`Structure::LowerTriangular`].
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Hash)]
pub struct CholLogDet;

/// Errors unless every diagonal entry of `L` has a real logarithm.
fn positive_diagonal<T: Real>(l: &ArrayView2<'_, T>) -> Result<()> {
    for (i, &d) in l.diag().iter().enumerate() {
        if d > T::zero() {
            continue;
        }
        return Err(if d == T::zero() {
            Error::Singular { op: OP, index: i }
        } else if d.is_nan() {
            Error::NonFinite {
                op: OP,
                name: "L",
                row: i,
                col: i,
            }
        } else {
            Error::InvalidArgument {
                op: OP,
                msg: format!("diagonal entry {i} of L is {d}, its logarithm is undefined"),
            }
        });
    }
    Ok(())
}

impl<T: Real> Rule<T> for CholLogDet {
    fn name(&self) -> &'static str {
        "CholLogDet(2Σ log Lᵢᵢ)"
    }
    fn arity(&self) -> usize {
        1
    }
    fn input_name(&self, i: usize) -> &'static str {
        ["L"].get(i).copied().unwrap_or("X")
    }
    fn structure(&self, _i: usize) -> Structure {
        Structure::LowerTriangular
    }
    fn shapes(&self, x: &[Shape]) -> Result<Shapes> {
        square(OP, "L", x[0])?;
        Ok(smallvec![Shape(1, 1)])
    }
    fn saves(&self, wanted: &[bool]) -> Saves {
        if wanted[0] {
            Saves::NONE.input(0)
        } else {
            Saves::NONE
        }
    }
    fn eval(
        &self,
        x: &[ArrayView2<'_, T>],
        y: &mut [ArrayViewMut2<'_, T>],
        _: &mut [T],
    ) -> Result<()> {
        positive_diagonal(&x[0])?;
        let two = T::one() + T::one();
        y[0][(0, 0)] = x[0].diag().iter().map(|d| d.ln()).sum::<T>() * two;
        Ok(())
    }
    fn pullback(
        &self,
        x: &[ArrayView2<'_, T>],
        _y: &[ArrayView2<'_, T>],
        ybar: &Partials<'_, '_, T>,
        grads: &mut [Grad<'_, T>],
        _: &mut [T],
    ) -> Result<()> {
        let l = x[0].view();
        positive_diagonal(&l)?;
        let c2 = ybar.view(0)[(0, 0)] * (T::one() + T::one());
        if let Some((mut g, acc)) = grads[0].target() {
            if acc == Accum::Replace {
                g.fill(T::zero());
            }
            for (gi, &d) in g.diag_mut().iter_mut().zip(l.diag()) {
                acc.store(gi, c2 / d);
            }
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
        let l = x[0].view();
        positive_diagonal(&l)?;
        let ld = xdot.view(0);
        let two = T::one() + T::one();
        ydot[0][(0, 0)] = l
            .diag()
            .iter()
            .zip(ld.diag())
            .map(|(&d, &dd)| dd / d)
            .sum::<T>()
            * two;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::Apply;
    use ndarray::{array, Array2};

    #[test]
    fn value_gradient_and_tangent_of_a_small_factor() {
        let l = array![[2.0f64, 0.0, 0.0], [7.0, 0.5, 0.0], [1.0, -3.0, 4.0]];
        let c = CholLogDet.apply([l.view()]).unwrap();
        assert!((c.value()[(0, 0)] - 2.0 * 4.0f64.ln()).abs() < 1e-14);
        let [lbar] = c.backward(array![[0.5]].view()).unwrap();
        assert_eq!(lbar, Array2::from_diag(&array![0.5, 2.0, 0.25]));
        let mut g = Array2::from_elem((3, 3), 1.0);
        c.backward_add(array![[0.5]].view(), &mut [Some(g.view_mut())])
            .unwrap();
        assert_eq!(g, Array2::from_diag(&array![0.5, 2.0, 0.25]) + 1.0);
        let ld = Array2::from_elem((3, 3), 1.0);
        let cd = c.jvp([ld.view()]).unwrap();
        assert!((cd[(0, 0)] - 2.0 * (0.5 + 2.0 + 0.25)).abs() < 1e-14);
    }

    #[test]
    fn a_diagonal_without_a_logarithm_is_rejected() {
        let mut l = array![[2.0f64, 0.0], [1.0, 0.0]];
        assert_eq!(
            CholLogDet.apply([l.view()]).err(),
            Some(Error::Singular { op: OP, index: 1 })
        );
        l[(1, 1)] = -1.0;
        assert!(matches!(
            CholLogDet.apply([l.view()]).err(),
            Some(Error::InvalidArgument { op: OP, .. })
        ));
        l[(1, 1)] = f64::NAN;
        assert!(matches!(
            CholLogDet.apply([l.view()]).err(),
            Some(Error::NonFinite {
                op: OP,
                row: 1,
                col: 1,
                ..
            })
        ));
    }
}
