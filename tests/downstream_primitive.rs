//! Written only against the public API, as a crate that depends on matgrad would:
//! a new primitive, `C = A⁻¹` through ndarray-linalg, proven by the shared checker.

use matgrad::check::{random, Checker, Mistake};
use matgrad::{Error, Primitive, Result, Trans};
use ndarray::{Array2, ArrayView2};
use ndarray_linalg::Inverse as _;

/// `C = A⁻¹`. Forward `Ċ = −CȦC`; reverse `Ā = −CᵀC̄Cᵀ` (Giles 2008, §3.3).
struct Inverse {
    /// Deliberately drop the transposes of the reverse rule, to see the checker catch it.
    forget_transposes: bool,
}

fn inv(a: ArrayView2<'_, f64>) -> Result<Array2<f64>> {
    a.inv().map_err(|e| Error::InvalidArgument {
        op: "Inverse",
        msg: e.to_string(),
    })
}

fn product(
    x: ArrayView2<'_, f64>,
    tx: Trans,
    y: ArrayView2<'_, f64>,
    ty: Trans,
) -> Result<Array2<f64>> {
    matgrad::blas::matmul("Inverse", x, tx, y, ty)
}

impl Primitive<f64> for Inverse {
    fn name(&self) -> String {
        "Inverse".into()
    }
    fn arity(&self) -> usize {
        1
    }
    fn forward(&self, x: &[ArrayView2<'_, f64>]) -> Result<Array2<f64>> {
        inv(x[0].view())
    }
    fn backward(
        &self,
        _x: &[ArrayView2<'_, f64>],
        c: ArrayView2<'_, f64>,
        cbar: ArrayView2<'_, f64>,
    ) -> Result<Vec<Array2<f64>>> {
        let t = if self.forget_transposes {
            Trans::No
        } else {
            Trans::Yes
        };
        let left = product(c.view(), t, cbar, Trans::No)?;
        Ok(vec![-product(left.view(), Trans::No, c.view(), t)?])
    }
    fn jvp(
        &self,
        _x: &[ArrayView2<'_, f64>],
        c: ArrayView2<'_, f64>,
        t: &[ArrayView2<'_, f64>],
    ) -> Result<Array2<f64>> {
        let left = product(c.view(), Trans::No, t[0].view(), Trans::No)?;
        Ok(-product(left.view(), Trans::No, c.view(), Trans::No)?)
    }
}

#[test]
fn a_user_defined_inverse_passes_the_checker() {
    let mut rng = random::rng(12);
    for n in [1, 2, 5, 9] {
        let mut a = random::randn::<f64>(n, n, &mut rng);
        for i in 0..n {
            a[(i, i)] += 3.0;
        }
        let report = Checker::new()
            .check(
                &Inverse {
                    forget_transposes: false,
                },
                &[a.view()],
            )
            .unwrap();
        report.assert_passed();
    }
}

#[test]
fn the_checker_catches_the_users_missing_transposes() {
    let mut rng = random::rng(13);
    let mut a = random::randn::<f64>(5, 5, &mut rng);
    for i in 0..5 {
        a[(i, i)] += 3.0;
    }
    let report = Checker::new()
        .check(
            &Inverse {
                forget_transposes: true,
            },
            &[a.view()],
        )
        .unwrap();
    assert!(!report.passed(), "{report}");
    // −C C̄ C instead of −Cᵀ C̄ Cᵀ is not a plain transpose of the right answer.
    assert!(report.mistake(0).is_some(), "{report}");
    assert_ne!(report.mistake(0), Some(Mistake::TransposedShape));
}
