//! The checker's options change what it does: each builder method is shown to matter
//! by a rule that fails without it and passes with it (or the reverse), and the assert
//! helpers are shown to panic on a wrong rule.

use matgrad::check::{
    assert_rule, assert_rule_precisions, check_precision, random, Checker, Report, Tolerances,
};
use matgrad::prelude::*;
use matgrad::Result;
use ndarray::{Array2, ArrayView2, ArrayViewMut2, Zip};
use std::cell::Cell;

/// `C = A ⊙ A ⊙ A`, whose rules can be spoiled on purpose, counting its forward passes.
/// Central differences of a cubic are exact after one Richardson step, so any error the
/// checker sees is the rule's.
struct Cube {
    /// Factor on both derivative rules: 1 is right.
    slope: f64,
    /// Relative error added to `Grad::Add` accumulations only.
    add_error: f64,
    /// Relative error of every `f32` result (forward and derivatives alike, so that the
    /// `f32` rule is self-consistent and only the comparison with `f64` sees it).
    f32_error: f64,
    /// Factor on both derivative rules in `f32` only: 1 is right.
    f32_slope: f64,
    evals: Cell<usize>,
}

impl Cube {
    fn right() -> Self {
        Cube {
            slope: 1.0,
            add_error: 0.0,
            f32_error: 0.0,
            f32_slope: 1.0,
            evals: Cell::new(0),
        }
    }
    fn factor<T: Real>(&self) -> T {
        T::of(if T::NAME == "f32" {
            1.0 + self.f32_error
        } else {
            1.0
        })
    }
    /// The derivative rules' factor: `slope`, and `f32_slope` in `f32`.
    fn slope<T: Real>(&self) -> T {
        T::of(if T::NAME == "f32" {
            3.0 * self.slope * self.f32_slope
        } else {
            3.0 * self.slope
        })
    }
}

impl<T: Real> Rule<T> for Cube {
    fn name(&self) -> &'static str {
        "Cube"
    }
    fn arity(&self) -> usize {
        1
    }
    fn shapes(&self, x: &[Shape]) -> Result<Shapes> {
        Ok(smallvec![x[0]])
    }
    fn saves(&self, _wanted: &[bool]) -> Saves {
        Saves::NONE.input(0)
    }
    fn eval(
        &self,
        x: &[ArrayView2<'_, T>],
        y: &mut [ArrayViewMut2<'_, T>],
        _ws: &mut [T],
    ) -> Result<()> {
        self.evals.set(self.evals.get() + 1);
        let f = self.factor::<T>();
        Zip::from(&mut y[0])
            .and(&x[0])
            .for_each(|c, &a| *c = a * a * a * f);
        Ok(())
    }
    fn pullback(
        &self,
        x: &[ArrayView2<'_, T>],
        _y: &[ArrayView2<'_, T>],
        ybar: &Partials<'_, '_, T>,
        grads: &mut [Grad<'_, T>],
        _ws: &mut [T],
    ) -> Result<()> {
        let k = self.slope::<T>() * self.factor::<T>();
        let add = T::of(1.0 + self.add_error);
        let cbar = ybar.view(0);
        match &mut grads[0] {
            Grad::Skip => {}
            Grad::Write(g) => Zip::from(g)
                .and(&x[0])
                .and(&cbar)
                .for_each(|g, &a, &c| *g = k * a * a * c),
            Grad::Add(g) => Zip::from(g)
                .and(&x[0])
                .and(&cbar)
                .for_each(|g, &a, &c| *g += k * a * a * c * add),
        }
        Ok(())
    }
    fn pushforward(
        &self,
        x: &[ArrayView2<'_, T>],
        _y: &[ArrayView2<'_, T>],
        xdot: &Partials<'_, '_, T>,
        ydot: &mut [ArrayViewMut2<'_, T>],
        _ws: &mut [T],
    ) -> Result<()> {
        let k = self.slope::<T>() * self.factor::<T>();
        Zip::from(&mut ydot[0])
            .and(&x[0])
            .and(&xdot.view(0))
            .for_each(|d, &a, &t| *d = k * a * a * t);
        Ok(())
    }
}

fn point(rows: usize, cols: usize, seed: u64) -> Array2<f64> {
    random::randn(rows, cols, &mut random::rng(seed))
}

fn check(c: Checker, rule: &Cube, a: &Array2<f64>) -> Report {
    c.check(rule, &[a.view()]).unwrap()
}

#[test]
fn the_right_cube_passes_and_a_slightly_wrong_one_fails_the_default_tolerance() {
    let a = point(3, 4, 1);
    check(Checker::new(), &Cube::right(), &a).assert_passed();
    let off = Cube {
        slope: 1.0 + 1e-6,
        ..Cube::right()
    };
    let r = check(Checker::new(), &off, &a);
    assert!(!r.passed(), "{r}");
    assert!(r.inputs[0].vjp_error > 1e-7, "{r}");
}

#[test]
fn the_vjp_error_is_relative_to_the_cauchy_schwarz_bound() {
    // Ā off by a relative δ misses ⟨C̄, D⟩ by δ⟨C̄, D⟩, and the error divides that by
    // ‖C̄‖‖D‖: δ times the cosine of C̄ and D, well under δ for random 5×7 matrices.
    // Divided by |⟨C̄, D⟩| alone it would be δ/(1 + δ) in every direction.
    let delta = 1e-3;
    let off = Cube {
        slope: 1.0 + delta,
        ..Cube::right()
    };
    let r = check(Checker::new(), &off, &point(5, 7, 18));
    let e = r.inputs[0].vjp_error;
    assert!(e > 1e-2 * delta && e < 0.5 * delta, "{r}");
}

#[test]
fn tol_sets_the_finite_difference_tolerance() {
    let a = point(3, 4, 2);
    let off = Cube {
        slope: 1.0 + 1e-6,
        ..Cube::right()
    };
    let r = check(Checker::new().tol(1e-4), &off, &a);
    r.assert_passed();
    assert_eq!(r.tolerances.fd, 1e-4);
    assert_eq!(r.tolerances.exact, Tolerances::F64.exact);
    // Tighter than the rule's error (1e-6 relative): it fails.
    let r = check(Checker::new().tol(1e-7), &off, &a);
    assert!(!r.passed(), "{r}");
    // A tolerance that cannot fail or cannot pass is an error, not a report.
    for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert!(Checker::new()
            .tol(bad)
            .check(&Cube::right(), &[a.view()])
            .is_err());
    }
}

#[test]
fn exact_tol_sets_the_tolerance_of_the_exact_identities() {
    let a = point(3, 4, 3);
    let sloppy_add = Cube {
        add_error: 1e-9,
        ..Cube::right()
    };
    let r = check(Checker::new(), &sloppy_add, &a);
    assert!(!r.passed(), "{r}");
    assert!(r.inputs[0].accumulate_error > 1e-10, "{r}");
    let r = check(Checker::new().exact_tol(1e-7), &sloppy_add, &a);
    r.assert_passed();
    assert_eq!(r.tolerances.exact, 1e-7);
    assert_eq!(r.tolerances.fd, Tolerances::F64.fd);
}

#[test]
fn step_sets_the_finite_difference_step() {
    // exp has a fourth derivative: Richardson leaves an error of order h⁴.
    let a = point(3, 3, 4).mapv(|v| 0.3 * v);
    let r = Checker::new().check(&Map(Exp), &[a.view()]).unwrap();
    r.assert_passed();
    assert_eq!(r.tolerances.step, Tolerances::F64.step);
    let r = Checker::new()
        .step(0.5)
        .check(&Map(Exp), &[a.view()])
        .unwrap();
    assert!(!r.passed(), "{r}");
    assert_eq!(r.tolerances.step, 0.5);
    assert!(r.inputs[0].vjp_error > 1e-6, "{r}");
}

#[test]
fn tolerances_sets_all_three() {
    let t = Tolerances {
        fd: 1e-4,
        exact: 1e-7,
        step: 1e-3,
    };
    let a = point(2, 3, 5);
    let off = Cube {
        slope: 1.0 + 1e-6,
        add_error: 1e-9,
        ..Cube::right()
    };
    assert!(!check(Checker::new(), &off, &a).passed());
    let r = check(Checker::new().tolerances(t), &off, &a);
    r.assert_passed();
    assert_eq!(r.tolerances, t);
    assert_eq!(Checker::new().tolerances(t).tolerances_for::<f32>(), t);
}

#[test]
fn the_seed_decides_the_directions_and_nothing_else() {
    let a = point(3, 4, 6);
    let off = Cube {
        slope: 1.0 + 1e-6,
        ..Cube::right()
    };
    let run = |seed: u64| check(Checker::new().seed(seed), &off, &a);
    let (r1, r1_again, r2) = (run(1), run(1), run(2));
    assert_eq!(r1.inputs[0].vjp_error, r1_again.inputs[0].vjp_error);
    assert_eq!(r1.adjoint_error, r1_again.adjoint_error);
    assert_ne!(r1.inputs[0].vjp_error, r2.inputs[0].vjp_error);
    assert_ne!(r1.adjoint_error, r2.adjoint_error);
    // The default seed is one seed among others, not a reset of the options.
    let c = Checker::new().tol(1e-4).exact_tol(1e-7).step(1e-3).seed(9);
    assert_eq!(
        c.tolerances_for::<f64>(),
        Tolerances {
            fd: 1e-4,
            exact: 1e-7,
            step: 1e-3
        }
    );
    let d = Checker::new().seed(9).tol(1e-4).exact_tol(1e-7).step(1e-3);
    let (rc, rd) = (check(c, &off, &a), check(d, &off, &a));
    assert_eq!(rc.inputs[0].vjp_error, rd.inputs[0].vjp_error);
}

/// Forward passes one check makes.
fn evals(c: Checker, a: &Array2<f64>) -> usize {
    let rule = Cube::right();
    check(c.full_jacobian(false), &rule, a).assert_passed();
    rule.evals.get()
}

#[test]
fn directions_sets_how_many_directions_each_input_gets() {
    let a = point(3, 4, 7);
    let one = evals(Checker::new().directions(1), &a);
    let five = evals(Checker::new().directions(5), &a);
    // Each direction costs two central differences of two evaluations each.
    assert_eq!(five - one, 4 * 4);
    assert_eq!(evals(Checker::new(), &a), one + 2 * 4, "the default is 3");
    // No direction at all would check nothing: an error.
    assert!(Checker::new()
        .directions(0)
        .check(&Cube::right(), &[a.view()])
        .is_err());
    // Other options survive.
    let c = Checker::new().tol(1e-4).directions(2);
    assert_eq!(c.tolerances_for::<f64>().fd, 1e-4);
}

#[test]
fn diagnosing_a_1x1_gradient_tries_no_hypothesis_that_is_the_identity_there() {
    // On a 1×1 input the transpose, the symmetric part and the lower triangle are the
    // identity: once the scalar multiples are ruled out they could only repeat the
    // failed comparison, each at the cost of finite differences. A gradient 1.3 times
    // too large is unrecognised for no more forward passes than a right one passes.
    let a = point(1, 1, 20);
    let right = Cube::right();
    check(Checker::new().full_jacobian(false), &right, &a).assert_passed();
    let off = Cube {
        slope: 1.3,
        ..Cube::right()
    };
    let r = check(Checker::new().full_jacobian(false), &off, &a);
    assert_eq!(
        r.mistake(0),
        Some(matgrad::check::Mistake::Unrecognised),
        "{r}"
    );
    assert_eq!(off.evals.get(), right.evals.get(), "{r}");
}

#[test]
fn the_diagnosis_is_as_tolerant_as_ten_finite_difference_tolerances() {
    // A gradient 2.02 times the right one is "doubled" to within 1%: not to within the
    // diagnosis's floor of 10⁻³ at f64's tolerance, but to within ten times a looser
    // finite-difference tolerance of 5·10⁻³ (as f32's, 2·10⁻², is).
    use matgrad::check::Mistake;
    let a = point(3, 2, 21);
    let off = Cube {
        slope: 2.02,
        ..Cube::right()
    };
    let r = check(Checker::new(), &off, &a);
    assert_eq!(r.mistake(0), Some(Mistake::Unrecognised), "{r}");
    let r = check(Checker::new().tol(5e-3), &off, &a);
    assert_eq!(r.mistake(0), Some(Mistake::Doubled), "{r}");
}

#[test]
fn the_jacobian_error_is_relative_to_the_largest_jacobian_entry() {
    // A slope 1% off gives ∂Cᵢ/∂Aᵢ = 3.03·aᵢ² for 3·aᵢ²: the worst error is 0.03·aᵢ² over
    // the largest entry 3.03·max aⱼ², whatever the scale of A; an absolute error would
    // shrink a millionfold with A scaled by 10⁻³.
    let off = Cube {
        slope: 1.01,
        ..Cube::right()
    };
    let a = point(2, 2, 8);
    let at = |s: f64| {
        let w = check(Checker::new().full_jacobian(true), &off, &(&a * s)).inputs[0]
            .jacobian
            .unwrap();
        assert_eq!(w.input_index, w.output_index);
        w.error
    };
    let (one, small) = (at(1.0), at(1e-3));
    // At the largest aᵢ².
    let want = 0.03 / 3.03;
    assert!((one - want).abs() < 1e-6 * want, "{one} vs {want}");
    assert!((small - want).abs() < 1e-6 * want, "{small} vs {want}");
}

#[test]
fn full_jacobian_is_automatic_up_to_100_input_elements_and_can_be_forced() {
    let jac = |c: Checker, a: &Array2<f64>| check(c, &Cube::right(), a).inputs[0].jacobian;
    let at_limit = point(10, 10, 8);
    let above = point(101, 1, 8);
    assert!(jac(Checker::new(), &at_limit).is_some());
    assert!(jac(Checker::new(), &above).is_none());
    assert!(jac(Checker::new().full_jacobian(true), &above).is_some());
    assert!(jac(Checker::new().full_jacobian(false), &at_limit).is_none());
    let w = jac(Checker::new(), &point(2, 2, 8)).unwrap();
    assert!(w.error < 1e-8, "{w:?}");
    // A wrong rule shows in the worst element.
    let off = Cube {
        slope: 1.01,
        ..Cube::right()
    };
    let r = check(Checker::new().full_jacobian(true), &off, &point(2, 2, 8));
    assert!(r.inputs[0].jacobian.unwrap().error > 1e-3, "{r}");
    let c = Checker::new().tol(1e-4).full_jacobian(true);
    assert_eq!(c.tolerances_for::<f64>().fd, 1e-4);
}

#[test]
fn assert_rule_passes_a_right_rule() {
    assert_rule(&Cube::right(), &[point(3, 2, 9).view()]);
    assert_rule_precisions(&Cube::right(), &[point(3, 2, 9).view()]);
}

#[test]
#[should_panic(expected = "VJP vs finite differences")]
fn assert_rule_panics_on_a_wrong_rule() {
    let off = Cube {
        slope: 1.01,
        ..Cube::right()
    };
    assert_rule(&off, &[point(3, 2, 10).view()]);
}

#[test]
#[should_panic(expected = "VJP vs finite differences")]
fn assert_rule_precisions_panics_on_a_wrong_rule() {
    let off = Cube {
        slope: 1.01,
        ..Cube::right()
    };
    assert_rule_precisions(&off, &[point(3, 2, 11).view()]);
}

#[test]
#[should_panic(expected = "f32")]
fn assert_rule_precisions_panics_when_f32_disagrees_with_f64() {
    let off32 = Cube {
        f32_error: 1e-2,
        ..Cube::right()
    };
    assert_rule_precisions(&off32, &[point(3, 2, 12).view()]);
}

#[test]
fn check_precision_compares_f32_with_f64_within_a_documented_tolerance() {
    let a = point(3, 2, 13);
    let r = check_precision(&Cube::right(), &[a.view()]).unwrap();
    r.assert_passed();
    assert_eq!(r.tol, Tolerances::F32.exact * 10.0);
    assert_eq!(r.forward_errors.len(), 1);
    assert!(r.forward_errors[0] < 1e-6, "{r}");
    // Within the tolerance, 10⁻³: passes; beyond it: fails, in every pass.
    let near = Cube {
        f32_error: 5e-4,
        ..Cube::right()
    };
    check_precision(&near, &[a.view()]).unwrap().assert_passed();
    let off = Cube {
        f32_error: 1e-2,
        ..Cube::right()
    };
    let r = check_precision(&off, &[a.view()]).unwrap();
    assert!(!r.passed(), "{r}");
    for errs in [&r.forward_errors, &r.backward_errors, &r.jvp_errors] {
        assert!(errs[0] > 5e-3 && errs[0] < 2e-2, "{r}");
    }
}

#[test]
fn check_precision_errors_are_relative_to_the_larger_result() {
    // f32 results half or twice the f64 ones: ‖Y/2 − Y‖/‖Y‖ and ‖2Y − Y‖/‖2Y‖, one half
    // either way, in every pass; the text lists them.
    let a = point(3, 2, 19);
    for f32_error in [-0.5, 1.0] {
        let off = Cube {
            f32_error,
            ..Cube::right()
        };
        let r = check_precision(&off, &[a.view()]).unwrap();
        assert!(!r.passed(), "{r}");
        for errs in [&r.forward_errors, &r.backward_errors, &r.jvp_errors] {
            assert!((errs[0] - 0.5).abs() < 1e-6, "{f32_error}: {r}");
        }
        assert_eq!(
            r.to_string(),
            "Cube f32 vs f64: forward [5.00e-1], backward [5.00e-1], jvp [5.00e-1] (tol 1e-3) FAILED\n"
        );
    }
}

#[test]
fn assert_precisions_checks_f32_with_its_own_tolerances() {
    // Options meant for f64 that f32 cannot meet: f32 must be checked with its own.
    let a = point(3, 4, 14);
    let b = point(4, 2, 15);
    let x = [a.view(), b.view()];
    let r = Checker::new()
        .tol(1e-7)
        .assert_precisions(&MatMul::nn(), &x);
    assert_eq!(r.tolerances.fd, 1e-7);
    Checker::new()
        .exact_tol(1e-10)
        .assert_precisions(&MatMul::nn(), &x);
    Checker::new()
        .step(1e-6)
        .assert_precisions(&MatMul::nn(), &x);
    // The f64 options do apply to f64.
    let off = Cube {
        slope: 1.0 + 1e-6,
        ..Cube::right()
    };
    let r = Checker::new()
        .tol(1e-4)
        .assert_precisions(&off, &[point(3, 2, 16).view()]);
    assert!(r.passed());
}

#[test]
#[should_panic(expected = "Cube [f32]")]
fn assert_precisions_checks_f32_with_its_own_step() {
    // A step of 1e-8 suits f64's central differences, not f32's: under f32's rounding
    // unit, x ± h rounds to x or its neighbours, and the differences' rounding floor
    // hides an error of 10% in the f32 rule. assert_precisions must check f32 with its
    // own step, and so fail there (rather than later, comparing f32 with f64).
    let off = Cube {
        f32_slope: 1.1,
        ..Cube::right()
    };
    let a = point(3, 2, 19);
    let a32 = a.mapv(|v| v as f32);
    let h = 1e-8;
    let r32 = Checker::new().step(h).check(&off, &[a32.view()]).unwrap();
    assert!(r32.passed(), "the f64 step hides the error in f32");
    Checker::new().step(h).assert_precisions(&off, &[a.view()]);
}

#[test]
#[should_panic(expected = "f64")]
fn assert_precisions_panics_on_a_wrong_rule() {
    let off = Cube {
        slope: 1.01,
        ..Cube::right()
    };
    Checker::new().assert_precisions(&off, &[point(3, 2, 17).view()]);
}

#[test]
fn assert_precisions_tolerates_f32_errors_a_tight_f64_tolerance_would_fail() {
    // sin(30x): f64's finite differences meet 1e-6 (their error is near 1e-11), f32's
    // do not (near 1e-3, within f32's own 2e-2). assert_precisions must not carry the
    // f64 tolerance over to f32.
    let a = point(3, 2, 18) * 30.0;
    let tol = 1e-6;
    let a32 = a.mapv(|v| v as f32);
    let r32 = Checker::new()
        .tol(tol)
        .check(&Map(Sin), &[a32.view()])
        .unwrap();
    assert!(!r32.passed(), "{r32}");
    let r = Checker::new()
        .tol(tol)
        .assert_precisions(&Map(Sin), &[a.view()]);
    assert!(r.passed() && r.tolerances.fd == tol, "{r}");
}
