//! A primitive with two outputs, defined outside the crate with nothing but the public
//! API, and proved by the shared checker: column normalisation,
//! `r = ‖aⱼ‖` (1×n) and `U = A·diag(r)⁻¹` (m×n).
//!
//! Forward mode: `ṙⱼ = ⟨uⱼ, ȧⱼ⟩`, `u̇ⱼ = (ȧⱼ − uⱼṙⱼ)/rⱼ`.
//! Reverse mode: `āⱼ = uⱼr̄ⱼ + (ūⱼ − uⱼ⟨uⱼ, ūⱼ⟩)/rⱼ`; a missing `r̄` or `Ū` is zero.

use matgrad::check::{random, Checker};
use matgrad::prelude::*;
use ndarray::{Array2, ArrayView2, ArrayViewMut2, Axis, Zip};

const NAME: &str = "Normalize";

struct Normalize;

impl<T: Real> Rule<T> for Normalize {
    fn name(&self) -> &'static str {
        NAME
    }
    fn arity(&self) -> usize {
        1
    }
    fn outputs(&self) -> usize {
        2
    }
    fn output_name(&self, k: usize) -> &'static str {
        ["r", "U"][k.min(1)]
    }
    fn shapes(&self, x: &[Shape]) -> Result<Shapes, Error> {
        Ok(smallvec![Shape(1, x[0].1), x[0]])
    }
    fn saves(&self, _wanted: &[bool]) -> Saves {
        Saves::NONE.output(0).output(1)
    }
    fn eval(
        &self,
        x: &[ArrayView2<'_, T>],
        y: &mut [ArrayViewMut2<'_, T>],
        _ws: &mut [T],
    ) -> Result<(), Error> {
        let a = &x[0];
        let (r, u) = y.split_at_mut(1);
        for (j, col) in a.axis_iter(Axis(1)).enumerate() {
            let norm = col.iter().fold(T::zero(), |s, &v| s + v * v).sqrt();
            if norm == T::zero() {
                return Err(Error::InvalidArgument {
                    op: NAME,
                    msg: format!("column {j} is zero"),
                });
            }
            r[0][(0, j)] = norm;
            Zip::from(u[0].column_mut(j))
                .and(&col)
                .for_each(|u, &v| *u = v / norm);
        }
        Ok(())
    }
    fn pullback(
        &self,
        _x: &[ArrayView2<'_, T>],
        y: &[ArrayView2<'_, T>],
        ybar: &Partials<'_, '_, T>,
        grads: &mut [Grad<'_, T>],
        _ws: &mut [T],
    ) -> Result<(), Error> {
        let (r, u) = (&y[0], &y[1]);
        let Some((mut g, acc)) = grads[0].target() else {
            return Ok(());
        };
        for j in 0..u.ncols() {
            let uj = u.column(j);
            let rbar = ybar.get(0).map_or(T::zero(), |rb| rb[(0, j)]);
            let ubar = ybar.get(1);
            let proj = ubar.as_ref().map_or(T::zero(), |ub| uj.dot(&ub.column(j)));
            for i in 0..u.nrows() {
                let ub = ubar.as_ref().map_or(T::zero(), |ub| ub[(i, j)]);
                let v = uj[i] * rbar + (ub - uj[i] * proj) / r[(0, j)];
                acc.store(&mut g[(i, j)], v);
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
        _ws: &mut [T],
    ) -> Result<(), Error> {
        let (r, u) = (&y[0], &y[1]);
        let adot = xdot.view(0);
        let (rdot, udot) = ydot.split_at_mut(1);
        for j in 0..u.ncols() {
            let uj = u.column(j);
            let rd = uj.dot(&adot.column(j));
            rdot[0][(0, j)] = rd;
            for i in 0..u.nrows() {
                udot[0][(i, j)] = (adot[(i, j)] - uj[i] * rd) / r[(0, j)];
            }
        }
        Ok(())
    }
}

#[test]
fn two_output_primitive_passes_the_checker_in_both_precisions() {
    let mut rng = random::rng(31);
    for (m, n) in [(5, 3), (2, 4), (7, 7)] {
        let a = random::randn::<f64>(m, n, &mut rng);
        let report = Checker::new().check(&Normalize, &[a.view()]).unwrap();
        report.assert_passed();
        let a32 = a.mapv(|v| v as f32);
        Checker::new()
            .check(&Normalize, &[a32.view()])
            .unwrap()
            .assert_passed();
    }
}

#[test]
fn a_missing_cotangent_is_zero_and_the_typed_layer_gives_both_outputs() {
    let mut rng = random::rng(32);
    let a = random::randn::<f64>(4, 3, &mut rng);
    let out = Normalize.apply([a.view()]).unwrap();
    assert_eq!(out.outputs().len(), 2);
    assert_eq!(out.outputs()[0].dim(), (1, 3));
    let ubar = random::randn::<f64>(4, 3, &mut rng);
    let zeros = Array2::<f64>::zeros((1, 3));
    let with_none = out.backward_all(&[None, Some(ubar.view())]).unwrap();
    let with_zero = out
        .backward_all(&[Some(zeros.view()), Some(ubar.view())])
        .unwrap();
    assert_eq!(with_none, with_zero);
    // Only r̄: the gradient of Σ r̄ⱼ‖aⱼ‖ is uⱼr̄ⱼ.
    let rbar = random::randn::<f64>(1, 3, &mut rng);
    let [abar] =
        <[Array2<f64>; 1]>::try_from(out.backward_all(&[Some(rbar.view()), None]).unwrap())
            .unwrap();
    let u = &out.outputs()[1];
    for j in 0..3 {
        for i in 0..4 {
            assert!((abar[(i, j)] - u[(i, j)] * rbar[(0, j)]).abs() < 1e-14);
        }
    }
}

/// A deliberately wrong reverse rule (the projection term dropped) must fail the check.
struct NormalizeWrong;

impl Rule<f64> for NormalizeWrong {
    fn name(&self) -> &'static str {
        "NormalizeWrong"
    }
    fn arity(&self) -> usize {
        1
    }
    fn outputs(&self) -> usize {
        2
    }
    fn shapes(&self, x: &[Shape]) -> Result<Shapes, Error> {
        Rule::<f64>::shapes(&Normalize, x)
    }
    fn eval(
        &self,
        x: &[ArrayView2<'_, f64>],
        y: &mut [ArrayViewMut2<'_, f64>],
        ws: &mut [f64],
    ) -> Result<(), Error> {
        Normalize.eval(x, y, ws)
    }
    fn pullback(
        &self,
        _x: &[ArrayView2<'_, f64>],
        y: &[ArrayView2<'_, f64>],
        ybar: &Partials<'_, '_, f64>,
        grads: &mut [Grad<'_, f64>],
        _ws: &mut [f64],
    ) -> Result<(), Error> {
        let (r, u) = (&y[0], &y[1]);
        if let Some((mut g, acc)) = grads[0].target() {
            let (rbar, ubar) = (ybar.view(0), ybar.view(1));
            for ((i, j), gij) in g.indexed_iter_mut() {
                acc.store(gij, u[(i, j)] * rbar[(0, j)] + ubar[(i, j)] / r[(0, j)]);
            }
        }
        Ok(())
    }
    fn pushforward(
        &self,
        x: &[ArrayView2<'_, f64>],
        y: &[ArrayView2<'_, f64>],
        xdot: &Partials<'_, '_, f64>,
        ydot: &mut [ArrayViewMut2<'_, f64>],
        ws: &mut [f64],
    ) -> Result<(), Error> {
        Normalize.pushforward(x, y, xdot, ydot, ws)
    }
}

#[test]
fn a_wrong_two_output_rule_fails_the_check() {
    let mut rng = random::rng(33);
    let a = random::randn::<f64>(5, 3, &mut rng);
    let report = Checker::new().check(&NormalizeWrong, &[a.view()]).unwrap();
    assert!(!report.passed(), "{report}");
}
