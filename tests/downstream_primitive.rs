//! Written only against the public API, as a crate that depends on matgrad would:
//! a new primitive, `C = A⁻¹` (its forward pass by matgrad's own LU inverse, its rules
//! written here), proven by the shared checker.

use matgrad::blas::gemm;
use matgrad::check::{assert_rule_precisions, random, Checker, Mistake};
use matgrad::prelude::*;
use ndarray::{Array2, ArrayView2, ArrayViewMut2};

const NAME: &str = "Inverse";

/// `C = A⁻¹` for square `A`. Forward `Ċ = −CȦC`; reverse `Ā = −CᵀC̄Cᵀ` (Giles 2008,
/// §3.3). The reverse rule reads only the output `C`; both rules take their one `n×n`
/// intermediate from the workspace.
struct Inverse {
    /// Deliberately drop the transposes of the reverse rule, to see the checker catch it.
    forget_transposes: bool,
}

const RIGHT: Inverse = Inverse {
    forget_transposes: false,
};
const WRONG: Inverse = Inverse {
    forget_transposes: true,
};

/// The `n×n` scratch matrix at the front of the workspace.
fn scratch<T>(ws: &mut [T], n: usize) -> Result<ArrayViewMut2<'_, T>, Error> {
    ArrayViewMut2::from_shape((n, n), &mut ws[..n * n]).map_err(|e| Error::InvalidArgument {
        op: NAME,
        msg: e.to_string(),
    })
}

impl<T: Real> Rule<T> for Inverse {
    fn name(&self) -> &'static str {
        if self.forget_transposes {
            "Inverse (transposes forgotten)"
        } else {
            NAME
        }
    }
    fn arity(&self) -> usize {
        1
    }
    fn shapes(&self, x: &[Shape]) -> Result<Shapes, Error> {
        if x[0].0 != x[0].1 {
            return Err(Error::NotSquare {
                op: NAME,
                name: "A",
                got: x[0],
            });
        }
        Ok(smallvec![x[0]])
    }
    fn saves(&self, _wanted: &[bool]) -> Saves {
        Saves::NONE.output(0)
    }
    fn workspace(&self, x: &[Shape]) -> usize {
        x[0].0 * x[0].0
    }
    fn eval(
        &self,
        x: &[ArrayView2<'_, T>],
        y: &mut [ArrayViewMut2<'_, T>],
        _ws: &mut [T],
    ) -> Result<(), Error> {
        // The forward pass is any inverse; the rules below are what this file proves.
        matgrad::ops::lu::Inverse.forward_into(x, y, None)
    }
    fn pullback(
        &self,
        _x: &[ArrayView2<'_, T>],
        y: &[ArrayView2<'_, T>],
        ybar: &Partials<'_, '_, T>,
        grads: &mut [Grad<'_, T>],
        ws: &mut [T],
    ) -> Result<(), Error> {
        let Some((g, acc)) = grads[0].target() else {
            return Ok(());
        };
        let c = y[0].view();
        let ct = if self.forget_transposes { c } else { c.t() };
        let mut w = scratch(ws, c.nrows())?;
        // W = CᵀC̄, then Ā = −W·Cᵀ, written or added.
        gemm(w.view_mut(), Accum::Replace, ct, ybar.view(0), T::one())?;
        gemm(g, acc, w.view(), ct, -T::one())
    }
    fn pushforward(
        &self,
        _x: &[ArrayView2<'_, T>],
        y: &[ArrayView2<'_, T>],
        xdot: &Partials<'_, '_, T>,
        ydot: &mut [ArrayViewMut2<'_, T>],
        ws: &mut [T],
    ) -> Result<(), Error> {
        let c = y[0].view();
        let mut w = scratch(ws, c.nrows())?;
        // W = CȦ, then Ċ = −W·C.
        gemm(w.view_mut(), Accum::Replace, c, xdot.view(0), T::one())?;
        gemm(ydot[0].view_mut(), Accum::Replace, w.view(), c, -T::one())
    }
}

/// A random `n×n` matrix with its diagonal pushed away from zero.
fn well_conditioned(n: usize, rng: &mut rand::rngs::StdRng) -> Array2<f64> {
    let mut a = random::randn::<f64>(n, n, rng);
    for i in 0..n {
        a[(i, i)] += 3.0;
    }
    a
}

#[test]
fn a_user_defined_inverse_passes_the_checker() {
    let mut rng = random::rng(12);
    for n in [1, 2, 5, 9] {
        let a = well_conditioned(n, &mut rng);
        let report = Checker::new().check(&RIGHT, &[a.view()]).unwrap();
        report.assert_passed();
        assert_eq!(report.workspace, n * n, "{report}");
    }
}

#[test]
fn a_user_defined_inverse_passes_in_both_precisions() {
    let mut rng = random::rng(14);
    for n in [1, 3, 6] {
        let a = well_conditioned(n, &mut rng);
        assert_rule_precisions(&RIGHT, &[a.view()]);
    }
}

#[test]
fn the_typed_layer_runs_a_user_defined_primitive() {
    let mut rng = random::rng(15);
    let a = well_conditioned(4, &mut rng);
    let c = RIGHT.apply([a.view()]).unwrap();
    let eye = Array2::<f64>::eye(4);
    approx::assert_abs_diff_eq!(a.dot(c.value()), eye, epsilon = 1e-12);
    // Ā for C̄ = I is −CᵀCᵀ.
    let [abar] = c.backward(eye.view()).unwrap();
    let ct = c.value().t().to_owned();
    approx::assert_abs_diff_eq!(abar, -ct.dot(&ct), epsilon = 1e-12);
    let err = RIGHT
        .apply([random::randn::<f64>(3, 4, &mut rng).view()])
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            Error::NotSquare {
                op: NAME,
                got: Shape(3, 4),
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn the_checker_catches_the_users_missing_transposes() {
    let mut rng = random::rng(13);
    let a = well_conditioned(5, &mut rng);
    let report = Checker::new().check(&WRONG, &[a.view()]).unwrap();
    assert!(!report.passed(), "{report}");
    // −C C̄ C instead of −Cᵀ C̄ Cᵀ is not a plain transpose of the right answer.
    assert!(report.mistake(0).is_some(), "{report}");
    assert_ne!(report.mistake(0), Some(Mistake::TransposedShape));
}
