//! The checker against MatMul and small test-only rules: correct ones must pass, each
//! deliberately broken one must be caught by the pass meant for it.

use super::random::{randn, rng};
use super::{
    assert_rule, assert_rule_precisions, check_precision, Checker, Mistake, Report, Tolerances,
    Value,
};
use crate::blas::{gemm, Accum};
use crate::error::{Error, Result, Shape};
use crate::ops::matmul::MatMul;
use crate::primitive::{Grad, Partials, Rule, Saves, Shapes, Structure};
use crate::Real;
use ndarray::{s, Array2, ArrayView2, ArrayViewMut2, Zip};
use smallvec::smallvec;

fn point(a: (usize, usize), n: usize, seed: u64) -> (Array2<f64>, Array2<f64>) {
    let mut r = rng(seed);
    let a = randn::<f64>(a.0, a.1, &mut r);
    let b = randn::<f64>(a.ncols(), n, &mut r);
    (a, b)
}

fn run<R: Rule<f64>>(rule: &R, a: (usize, usize), n: usize) -> Report {
    let (a, b) = point(a, n, 42);
    Checker::new().check(rule, &[a.view(), b.view()]).unwrap()
}

// ------------------------------------------------------------------ MatMul

#[test]
fn matmul_passes_in_both_precisions_with_every_pass_run() {
    for op in [MatMul::nn(), MatMul::tn(), MatMul::nt(), MatMul::tt()] {
        let (a, b) = point((3, 4), 5, 1);
        let a = match op.ta {
            crate::Trans::No => a,
            crate::Trans::Yes => a.t().to_owned(),
        };
        let b = match op.tb {
            crate::Trans::No => b,
            crate::Trans::Yes => b.t().to_owned(),
        };
        let r = Checker::new().check(&op, &[a.view(), b.view()]).unwrap();
        r.assert_passed();
        assert!(r.inputs.iter().all(|x| x.jacobian.is_some()), "{r}");
        assert!(r.undeclared_reads.is_empty());
        // With one output there is no other cotangent to leave out; and no residuals.
        assert_eq!(r.outputs[0].missing_cotangent_error, None, "{r}");
        assert!(!r.to_string().contains("resid."), "{r}");
        assert_rule_precisions(&op, &[a.view(), b.view()]);
    }
}

#[test]
fn defaults_follow_the_precision() {
    assert_eq!(Tolerances::for_precision::<f64>(), Tolerances::F64);
    assert_eq!(Tolerances::for_precision::<f32>(), Tolerances::F32);
    assert_eq!(Tolerances::F64.fd, 1e-8);
    assert_eq!(Tolerances::F32.step, 1e-2);
    let c = Checker::new().tol(1e-6);
    assert_eq!(c.tolerances_for::<f64>().fd, 1e-6);
    assert_eq!(c.tolerances_for::<f32>().exact, 1e-4);
    let (a, b) = point((3, 4), 2, 3);
    let (a32, b32) = (a.mapv(|v| v as f32), b.mapv(|v| v as f32));
    let r = Checker::new()
        .check(&MatMul::nn(), &[a32.view(), b32.view()])
        .unwrap();
    assert_eq!(r.tolerances, Tolerances::F32);
    assert_eq!(r.precision, "f32");
    assert_rule(&MatMul::nn(), &[a32.view(), b32.view()]);
    check_precision(&MatMul::nn(), &[a.view(), b.view()])
        .unwrap()
        .assert_passed();
}

#[test]
fn the_report_reads_as_a_table() {
    let r = run(&MatMul::nn(), (3, 4), 5);
    let text = r.to_string();
    assert!(
        text.starts_with("MatMul(A·B) [f64]  (3×4, 4×5) → 3×5   PASSED"),
        "{text}"
    );
    assert!(text.contains("adjoint identity"), "{text}");
    assert_eq!(
        r.inputs.iter().map(|i| i.name).collect::<Vec<_>>(),
        ["A", "B"]
    );
}

#[test]
fn larger_inputs_skip_the_full_jacobian_unless_asked() {
    let (a, b) = point((12, 12), 9, 5);
    let x = [a.view(), b.view()];
    let r = Checker::new().check(&MatMul::nn(), &x).unwrap();
    r.assert_passed();
    assert!(r.inputs.iter().all(|i| i.jacobian.is_none()));
    let r = Checker::new()
        .full_jacobian(true)
        .check(&MatMul::nn(), &x)
        .unwrap();
    assert!(r.inputs.iter().all(|i| i.jacobian.is_some()));
}

#[test]
fn a_wrong_number_of_inputs_is_an_error() {
    let (a, _) = point((3, 4), 5, 1);
    let e = Checker::new()
        .check(&MatMul::nn(), &[a.view()])
        .unwrap_err();
    assert!(matches!(e, Error::Arity { .. }), "{e}");
}

// ------------------------------------------------------- broken MatMuls

/// How `C = AB` is broken.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    None,
    /// `Ā = (C̄Bᵀ)ᵀ`, written through the transposed view of the buffer.
    Transposed,
    Negated,
    Doubled,
    Zero,
    /// `Ā` off by a relative 10⁻⁵: imprecise, not wrong in a recognisable way.
    Imprecise,
    /// A JVP that forgets `AḂ`.
    JvpMissingTerm,
    /// Always adds, also into a `Grad::Write` buffer.
    ReadsWriteBuffer,
    /// Always overwrites, also a `Grad::Add` buffer.
    Overwrites,
    /// Declares that `Ā` needs only `A` (it needs `B`).
    UndeclaredB,
    /// The forward pass adds into its output buffer.
    ForwardReadsOutput,
    /// Declares one element of workspace and adds it to `Ā` without writing it first.
    ReadsWorkspace,
    /// Writes `Ā` into the buffer without its first column: a wrong shape, not a
    /// transposed one.
    DropsColumn,
    /// The reverse rule fails as a rule may on a valid point (a singular factor).
    PullbackFails,
    /// The forward-mode rule fails likewise.
    JvpFails,
    /// `Ċ` twice the right answer.
    JvpDoubled,
    /// `Ċ` half the right answer.
    JvpHalved,
    /// `Ā` with one entry overflowed to infinity.
    InfiniteEntry,
}

struct Faulty(Fault);

const MM: MatMul = MatMul {
    ta: crate::Trans::No,
    tb: crate::Trans::No,
};

impl Rule<f64> for Faulty {
    fn name(&self) -> &'static str {
        "Faulty"
    }
    fn arity(&self) -> usize {
        2
    }
    fn shapes(&self, x: &[Shape]) -> Result<Shapes> {
        Rule::<f64>::shapes(&MM, x)
    }
    fn saves(&self, wanted: &[bool]) -> Saves {
        match self.0 {
            Fault::UndeclaredB => Saves::NONE.input(0),
            _ => Rule::<f64>::saves(&MM, wanted),
        }
    }
    fn workspace(&self, _x: &[Shape]) -> usize {
        usize::from(self.0 == Fault::ReadsWorkspace)
    }
    fn eval(
        &self,
        x: &[ArrayView2<'_, f64>],
        y: &mut [ArrayViewMut2<'_, f64>],
        ws: &mut [f64],
    ) -> Result<()> {
        if self.0 == Fault::ForwardReadsOutput {
            return gemm(y[0].view_mut(), Accum::Add, x[0], x[1], 1.0);
        }
        MM.eval(x, y, ws)
    }
    fn pullback(
        &self,
        x: &[ArrayView2<'_, f64>],
        _y: &[ArrayView2<'_, f64>],
        ybar: &Partials<'_, '_, f64>,
        grads: &mut [Grad<'_, f64>],
        ws: &mut [f64],
    ) -> Result<()> {
        if self.0 == Fault::PullbackFails {
            return Err(Error::Singular {
                op: "Faulty",
                index: 1,
            });
        }
        let cbar = ybar.view(0);
        let (a, b) = (x[0], x[1]);
        let mode = |acc: Accum| match self.0 {
            Fault::ReadsWriteBuffer => Accum::Add,
            Fault::Overwrites => Accum::Replace,
            _ => acc,
        };
        if let Some((mut g, acc)) = grads[0].target() {
            let alpha = match self.0 {
                Fault::Negated => -1.0,
                Fault::Doubled => 2.0,
                Fault::Zero => 0.0,
                Fault::Imprecise => 1.0 + 1e-5,
                _ => 1.0,
            };
            if self.0 == Fault::Transposed {
                gemm(g.view_mut().reversed_axes(), mode(acc), cbar, b.t(), alpha)?;
            } else if self.0 == Fault::DropsColumn {
                gemm(g.slice_mut(s![.., 1..]), mode(acc), cbar, b.t(), alpha)?;
            } else {
                gemm(g.view_mut(), mode(acc), cbar, b.t(), alpha)?;
            }
            if self.0 == Fault::InfiniteEntry {
                g[(0, 1)] = f64::INFINITY;
            }
            if self.0 == Fault::ReadsWorkspace {
                let w = ws[0];
                g.mapv_inplace(|v| v + w);
            }
        }
        if let Some((g, acc)) = grads[1].target() {
            gemm(g, mode(acc), a.t(), cbar, 1.0)?;
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
    ) -> Result<()> {
        if self.0 == Fault::JvpFails {
            return Err(Error::Singular {
                op: "Faulty",
                index: 1,
            });
        }
        if self.0 == Fault::JvpMissingTerm {
            return gemm(ydot[0].view_mut(), Accum::Replace, xdot.view(0), x[1], 1.0);
        }
        MM.pushforward(x, y, xdot, ydot, ws)?;
        let factor = match self.0 {
            Fault::JvpDoubled => 2.0,
            Fault::JvpHalved => 0.5,
            _ => return Ok(()),
        };
        ydot[0].mapv_inplace(|v| factor * v);
        Ok(())
    }
}

#[test]
fn the_correct_faulty_rule_passes() {
    run(&Faulty(Fault::None), (3, 4), 5).assert_passed();
    run(&Faulty(Fault::None), (4, 4), 4).assert_passed();
}

#[test]
fn a_transposed_gradient_is_caught_and_named() {
    let r = run(&Faulty(Fault::Transposed), (4, 4), 6);
    assert!(!r.passed(), "{r}");
    assert_eq!(r.mistake(0), Some(Mistake::Transposed), "{r}");
    assert_eq!(r.mistake(1), None, "{r}");
    assert!(
        r.to_string()
            .contains("diagnosis: the gradient of A is the transpose"),
        "{r}"
    );
    // Small enough for the full Jacobian, which names the worst element.
    let w = r.inputs[0].jacobian.expect("full Jacobian ran");
    assert!(w.error > 1e-3, "{r}");
    assert!(r.to_string().contains("worst Jacobian element of A"), "{r}");
    // Without the Jacobian, on a larger input.
    let r = run(&Faulty(Fault::Transposed), (12, 12), 9);
    assert!(r.inputs[0].jacobian.is_none());
    assert_eq!(r.mistake(0), Some(Mistake::Transposed), "{r}");
}

#[test]
fn a_transposed_gradient_of_a_non_square_input_is_a_shape_failure() {
    let r = run(&Faulty(Fault::Transposed), (3, 4), 5);
    assert!(!r.passed(), "{r}");
    assert!(r.inputs[0].pullback_error.is_some(), "{r}");
    assert!(r.inputs[1].pullback_error.is_none(), "{r}");
    assert_eq!(r.mistake(0), Some(Mistake::TransposedShape), "{r}");
    assert!(
        r.to_string()
            .contains("A: the reverse rule fails on shapes its shape rule accepts"),
        "{r}"
    );
    // Nothing after the shapes pass ran: its errors, still NaN, are not failures, and
    // the table says why the rows are empty.
    assert!(!r.checked(), "{r}");
    assert_eq!(r.failures().len(), 1, "{r}");
    let text = r.to_string();
    assert!(
        text.contains("\n  A      3×4        a rule fails on these shapes (see below)\n"),
        "{text}"
    );
    assert!(
        text.contains("\n  B      4×5        not checked\n"),
        "{text}"
    );
}

#[test]
fn a_wrong_shape_that_is_not_a_transpose_is_not_named_as_one() {
    let r = run(&Faulty(Fault::DropsColumn), (3, 4), 5);
    assert!(!r.passed(), "{r}");
    assert!(
        matches!(
            r.inputs[0].pullback_error,
            Some(Error::WrongShape {
                expected: Shape(3, 4),
                got: Shape(3, 3),
                ..
            })
        ),
        "{r}"
    );
    assert_eq!(r.mistake(0), None, "{r}");
    assert!(!r.to_string().contains("transposed shape"), "{r}");
}

#[test]
fn an_error_a_rule_may_return_is_passed_on_not_reported_as_a_shape_failure() {
    for fault in [Fault::PullbackFails, Fault::JvpFails] {
        let (a, b) = point((3, 4), 5, 42);
        let e = Checker::new()
            .check(&Faulty(fault), &[a.view(), b.view()])
            .expect_err("the rule's own error");
        assert!(
            matches!(
                e,
                Error::Singular {
                    op: "Faulty",
                    index: 1
                }
            ),
            "{fault:?}: {e}"
        );
    }
}

#[test]
fn the_step_follows_the_magnitude_of_the_input() {
    // A of magnitude 10³: with the step relative to it, the correct rule passes and a
    // relative error of 10⁻⁵ in Ā is caught. A step as small as for unit entries would
    // be drowned by the rounding of the shifted entries themselves (about ε·|A|/h), and
    // the correct rule would fail the JVP comparison.
    let (a, b) = point((3, 4), 5, 42);
    let a = a * 1e3;
    let x = [a.view(), b.view()];
    Checker::new()
        .check(&Faulty(Fault::None), &x)
        .unwrap()
        .assert_passed();
    let r = Checker::new().check(&Faulty(Fault::Imprecise), &x).unwrap();
    assert!(!r.passed(), "{r}");
    assert_eq!(r.mistake(0), Some(Mistake::Inaccurate), "{r}");
    assert_eq!(r.mistake(1), None, "{r}");
}

#[test]
fn a_step_too_small_to_move_the_inputs_cannot_pass() {
    // The smallest positive step: the shifted inputs round back to the point, every
    // finite difference is zero and its rounding bound infinite. The comparison cannot
    // be judged, which must fail the check, not pass it as within the noise.
    let (a, b) = point((3, 4), 5, 42);
    let r = Checker::new()
        .step(f64::from_bits(1))
        .check(&Faulty(Fault::None), &[a.view(), b.view()])
        .unwrap();
    assert!(!r.passed(), "{r}");
    assert!(r.inputs.iter().all(|i| i.vjp_error.is_nan()), "{r}");
    assert!(r.inputs.iter().all(|i| i.jvp_error.is_nan()), "{r}");
}

#[test]
fn a_small_input_next_to_a_large_one_passes_within_the_rounding_of_the_output() {
    // C = A + B with B of magnitude 10⁶: a step of 10⁻⁴ in A (of unit size) moves C by
    // little more than C's rounding, so ⟨C̄, D⟩ is right to about 10⁻⁶ only. That is
    // within the rounding the differences carry, and the right rule must pass.
    let mut r = rng(21);
    let a = randn::<f64>(3, 4, &mut r);
    let b = randn::<f64>(3, 4, &mut r).mapv(|v| 1e6 * (2.0 + v.abs()));
    let report = Checker::new()
        .check(&crate::ops::add::Add, &[a.view(), b.view()])
        .unwrap();
    report.assert_passed();
}

#[test]
fn an_infinite_gradient_entry_gives_nan_errors() {
    // ⟨Ā, U⟩ is infinite: the comparisons are NaN, which no floor may turn into a
    // number.
    let r = run(&Faulty(Fault::InfiniteEntry), (3, 4), 5);
    assert!(!r.passed(), "{r}");
    assert!(r.inputs[0].vjp_error.is_nan(), "{r}");
    let w = r.inputs[0].jacobian.expect("full Jacobian ran");
    assert!(w.error.is_nan(), "{r}");
    assert_eq!(w.input_index, (0, 1), "{r}");
    assert!(r.inputs[1].vjp_error < 1e-8, "{r}");
}

#[test]
fn a_lower_triangular_gradient_has_no_structure_error() {
    // TriSolve's L is lower triangular, and so is its gradient: the diagonal belongs
    // to the structure, only the strict upper triangle would be an error.
    let mut r = rng(12);
    let l = super::random::lower::<f64>(4, &mut r);
    let b = randn::<f64>(4, 3, &mut r);
    let report = Checker::new()
        .check(
            &crate::ops::triangular::TriSolve::lower(),
            &[l.view(), b.view()],
        )
        .unwrap();
    report.assert_passed();
    assert_eq!(report.inputs[0].structure, Structure::LowerTriangular);
    assert_eq!(report.inputs[0].structure_error, 0.0, "{report}");
    let text = report.to_string();
    assert!(
        text.contains(" lower ") && text.contains(" general "),
        "{text}"
    );
}

#[test]
fn sign_factor_and_zero_mistakes_are_named() {
    for (fault, expected) in [
        (Fault::Negated, Mistake::SignFlipped),
        (Fault::Doubled, Mistake::Doubled),
        (Fault::Zero, Mistake::Zero),
    ] {
        let r = run(&Faulty(fault), (3, 4), 5);
        assert!(!r.passed(), "{fault:?}:\n{r}");
        assert_eq!(r.mistake(0), Some(expected), "{fault:?}:\n{r}");
        assert_eq!(r.mistake(1), None, "{fault:?}:\n{r}");
    }
}

#[test]
fn an_imprecise_gradient_is_not_named_as_a_structural_mistake() {
    // A column-shaped input too: its lower triangle is all of it, and must not be
    // offered as the diagnosis of a gradient that is merely imprecise.
    for shape in [(3, 4), (3, 1)] {
        let r = run(&Faulty(Fault::Imprecise), shape, 5);
        assert!(!r.passed(), "{r}");
        assert_eq!(r.mistake(0), Some(Mistake::Inaccurate), "{r}");
    }
}

#[test]
fn a_wrong_jvp_fails_the_jvp_and_adjoint_checks_only() {
    let r = run(&Faulty(Fault::JvpMissingTerm), (3, 4), 5);
    assert!(!r.passed(), "{r}");
    assert!(r.inputs.iter().all(|x| x.vjp_error < 1e-8), "{r}");
    assert!(r.inputs[1].jvp_error > 0.5, "{r}");
    // The one output goes unnamed.
    let line = format!(
        "B: JVP vs finite differences error {:.2e} > 1.0e-8",
        r.inputs[1].jvp_error
    );
    assert!(r.failures().contains(&line), "{line}\n{r}");
    assert!(r.adjoint_error > 1e-3, "{r}");
}

#[test]
fn the_jvp_error_is_relative_to_the_larger_of_the_two() {
    // ‖2D − D‖/‖2D‖ and ‖D/2 − D‖/‖D‖: one half either way.
    for fault in [Fault::JvpDoubled, Fault::JvpHalved] {
        let r = run(&Faulty(fault), (3, 4), 5);
        assert!(!r.passed(), "{fault:?}:\n{r}");
        for i in &r.inputs {
            assert!((i.jvp_error - 0.5).abs() < 1e-6, "{fault:?}:\n{r}");
        }
    }
}

#[test]
fn the_adjoint_error_is_relative_to_the_cauchy_schwarz_bound() {
    // Ċ = D/2 misses x = ⟨C̄, D⟩ = Σᵢ⟨X̄ᵢ, Ẋᵢ⟩ by x/2, divided by ‖C̄‖‖D/2‖ + Σᵢ‖X̄ᵢ‖‖Ẋᵢ‖,
    // at least |x|/2 + |x| by Cauchy–Schwarz: at most ⅓, and far less for random
    // matrices. Divided by the larger side alone, |x|, it would be ½ exactly.
    let r = run(&Faulty(Fault::JvpHalved), (3, 4), 5);
    assert!(!r.passed(), "{r}");
    assert!(r.adjoint_error > 1e-3 && r.adjoint_error < 0.3, "{r}");
}

#[test]
fn the_adjoint_error_does_not_depend_on_the_scale_of_the_inputs() {
    // For a bilinear product with both inputs scaled by s, ⟨C̄, Ċ⟩, Σᵢ⟨X̄ᵢ, Ẋᵢ⟩ and the
    // bound ‖C̄‖‖Ċ‖ + Σᵢ‖X̄ᵢ‖‖Ẋᵢ‖ all scale alike for the same tangents and cotangent:
    // the relative error must not move. A bound that added norms would shrink it a
    // millionfold.
    let (a, b) = point((3, 4), 5, 42);
    let err = |s: f64| {
        let (a, b) = (&a * s, &b * s);
        Checker::new()
            .check(&Faulty(Fault::JvpHalved), &[a.view(), b.view()])
            .unwrap()
            .adjoint_error
    };
    let (one, small) = (err(1.0), err(1e-6));
    assert!(one > 1e-3, "{one}");
    assert!((one - small).abs() <= 1e-9 * one, "{one} vs {small}");
}

/// [`Fault::JvpHalved`], recording the tangents of every JVP that moves both inputs
/// and the cotangent of every VJP.
struct Recorder {
    tangents: std::cell::RefCell<Vec<(Array2<f64>, Array2<f64>)>>,
    cotangents: std::cell::RefCell<Vec<Array2<f64>>>,
}

impl Rule<f64> for Recorder {
    fn name(&self) -> &'static str {
        "Recorder"
    }
    fn arity(&self) -> usize {
        2
    }
    fn shapes(&self, x: &[Shape]) -> Result<Shapes> {
        Rule::<f64>::shapes(&MM, x)
    }
    fn saves(&self, wanted: &[bool]) -> Saves {
        Rule::<f64>::saves(&MM, wanted)
    }
    fn eval(
        &self,
        x: &[ArrayView2<'_, f64>],
        y: &mut [ArrayViewMut2<'_, f64>],
        ws: &mut [f64],
    ) -> Result<()> {
        MM.eval(x, y, ws)
    }
    fn pullback(
        &self,
        x: &[ArrayView2<'_, f64>],
        y: &[ArrayView2<'_, f64>],
        ybar: &Partials<'_, '_, f64>,
        grads: &mut [Grad<'_, f64>],
        ws: &mut [f64],
    ) -> Result<()> {
        self.cotangents.borrow_mut().push(ybar.view(0).to_owned());
        MM.pullback(x, y, ybar, grads, ws)
    }
    fn pushforward(
        &self,
        x: &[ArrayView2<'_, f64>],
        y: &[ArrayView2<'_, f64>],
        xdot: &Partials<'_, '_, f64>,
        ydot: &mut [ArrayViewMut2<'_, f64>],
        ws: &mut [f64],
    ) -> Result<()> {
        if let (Some(a), Some(b)) = (xdot.get(0), xdot.get(1)) {
            self.tangents
                .borrow_mut()
                .push((a.to_owned(), b.to_owned()));
        }
        Faulty(Fault::JvpHalved).pushforward(x, y, xdot, ydot, ws)
    }
}

#[test]
fn the_adjoint_error_is_the_gap_over_the_cauchy_schwarz_bound() {
    // |⟨C̄, Ċ⟩ − Σᵢ⟨X̄ᵢ, Ẋᵢ⟩| / (‖C̄‖‖Ċ‖ + Σᵢ‖X̄ᵢ‖‖Ẋᵢ‖), recomputed here from the tangents
    // and cotangent the checker used, for the product whose JVP is halved.
    let (a, b) = point((3, 4), 5, 42);
    let rec = Recorder {
        tangents: Default::default(),
        cotangents: Default::default(),
    };
    let r = Checker::new().check(&rec, &[a.view(), b.view()]).unwrap();
    // Other passes move both inputs too (and may pass other cotangents): the reported
    // error must be the formula's for one of the recorded pairs.
    let inner = |x: &Array2<f64>, y: &Array2<f64>| (x * y).sum();
    let norm = |x: &Array2<f64>| inner(x, x).sqrt();
    let mut wants = vec![];
    for (ad, bd) in rec.tangents.borrow().iter() {
        for cbar in rec.cotangents.borrow().iter() {
            let ydot = (ad.dot(&b) + a.dot(bd)) * 0.5;
            let (ga, gb) = (cbar.dot(&b.t()), a.t().dot(cbar));
            let lhs = inner(cbar, &ydot);
            let rhs = inner(&ga, ad) + inner(&gb, bd);
            let bound = norm(cbar) * norm(&ydot) + norm(&ga) * norm(ad) + norm(&gb) * norm(bd);
            wants.push((lhs - rhs).abs() / bound);
        }
    }
    let got = r.adjoint_error;
    assert!(got > 1e-3, "{got}");
    assert!(
        wants.iter().any(|w| (got - w).abs() <= 1e-12 * w),
        "{got} vs {wants:?}"
    );
}

#[test]
fn the_report_gives_each_outputs_shape() {
    let r = run(&MM, (3, 4), 5);
    assert_eq!(r.output_shape(0), Some(Shape(3, 5)), "{r}");
    assert_eq!(r.output_shape(1), None, "{r}");
}

#[test]
fn a_rule_that_reads_its_write_buffer_fails_the_first_write_pass() {
    let r = run(&Faulty(Fault::ReadsWriteBuffer), (3, 4), 5);
    assert!(!r.passed(), "{r}");
    assert!(r.inputs.iter().all(|x| x.first_write_error.is_nan()), "{r}");
    // backward() hands it zeroed buffers: every other check passes.
    assert!(r.inputs.iter().all(|x| x.vjp_error < 1e-8), "{r}");
    assert!(r.inputs.iter().all(|x| x.accumulate_error < 1e-11), "{r}");
    assert!(r.to_string().contains("Grad::Write into NaN"), "{r}");
}

#[test]
fn an_overwriting_add_fails_the_accumulation_pass() {
    let r = run(&Faulty(Fault::Overwrites), (3, 4), 5);
    assert!(!r.passed(), "{r}");
    assert!(r.inputs.iter().all(|x| x.accumulate_error > 1e-3), "{r}");
    assert!(r.inputs.iter().all(|x| x.first_write_error == 0.0), "{r}");
    assert!(r.inputs.iter().all(|x| x.vjp_error < 1e-8), "{r}");
}

#[test]
fn an_undeclared_input_read_is_named() {
    let r = run(&Faulty(Fault::UndeclaredB), (3, 4), 5);
    assert!(!r.passed(), "{r}");
    assert!(r.inputs[0].saves_error.is_nan(), "{r}");
    let reads: Vec<(Option<Value>, &str, Vec<bool>)> = r
        .undeclared_reads
        .iter()
        .map(|u| (u.value, u.name, u.wanted.clone()))
        .collect();
    assert_eq!(
        reads,
        [
            (Some(Value::Input(1)), "B", vec![true, true]),
            (Some(Value::Input(1)), "B", vec![true, false]),
        ],
        "{r}"
    );
    let text = r.to_string();
    assert!(
        text.contains(
            "reads input B which it does not declare in saves (when only the gradient of A is wanted)"
        ),
        "{text}"
    );
    // Everything else is right.
    assert!(r.inputs.iter().all(|x| x.vjp_error < 1e-8), "{r}");
}

#[test]
fn a_forward_pass_that_reads_its_output_buffer_is_caught() {
    let r = run(&Faulty(Fault::ForwardReadsOutput), (3, 4), 5);
    assert!(!r.passed(), "{r}");
    assert!(r.outputs[0].first_write_error.is_nan(), "{r}");
    assert!(r.to_string().contains("reads its output buffer"), "{r}");
}

#[test]
fn a_rule_that_reads_its_workspace_before_writing_it_is_caught() {
    let r = run(&Faulty(Fault::ReadsWorkspace), (3, 4), 5);
    assert!(!r.passed(), "{r}");
    assert_eq!(r.workspace, 1);
    assert!(r.workspace_error.is_nan(), "{r}");
    assert!(r.inputs.iter().all(|x| x.vjp_error < 1e-8), "{r}");
    let text = r.to_string();
    assert!(text.contains("reads its workspace"), "{text}");
    assert!(
        text.contains("\n  workspace of 1 element, filled with NaN: NaN✗\n"),
        "{text}"
    );
    // A rule without a workspace gets no such line.
    let text = run(&Faulty(Fault::None), (3, 4), 5).to_string();
    assert!(!text.contains("workspace of"), "{text}");
}

// ------------------------------------------------------------ two outputs

/// `S = A + B`, `P = A ⊙ B`: `Ā = S̄ + P̄ ⊙ B`, `B̄ = S̄ + P̄ ⊙ A`. With `bad_missing`,
/// a missing `S̄` skips the whole gradient.
struct SumProd {
    bad_missing: bool,
}

impl<T: Real> Rule<T> for SumProd {
    fn name(&self) -> &'static str {
        "SumProd"
    }
    fn arity(&self) -> usize {
        2
    }
    fn outputs(&self) -> usize {
        2
    }
    fn output_name(&self, k: usize) -> &'static str {
        ["S", "P"][k.min(1)]
    }
    fn shapes(&self, x: &[Shape]) -> Result<Shapes> {
        crate::ops::same_shape("SumProd", "A", x[0], "B", x[1])?;
        Ok(smallvec![x[0], x[0]])
    }
    fn saves(&self, wanted: &[bool]) -> Saves {
        let mut s = Saves::NONE;
        if wanted[0] {
            s = s.input(1);
        }
        if wanted[1] {
            s = s.input(0);
        }
        s
    }
    fn eval(
        &self,
        x: &[ArrayView2<'_, T>],
        y: &mut [ArrayViewMut2<'_, T>],
        _: &mut [T],
    ) -> Result<()> {
        let (s, p) = y.split_at_mut(1);
        Zip::from(&mut s[0])
            .and(&mut p[0])
            .and(x[0])
            .and(x[1])
            .for_each(|s, p, &a, &b| {
                *s = a + b;
                *p = a * b;
            });
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
        if self.bad_missing && ybar.get(0).is_none() {
            return Ok(());
        }
        for (i, other) in [(0, 1), (1, 0)] {
            if let Some((g, acc)) = grads[i].target() {
                Zip::from(g)
                    .and(ybar.view(0))
                    .and(ybar.view(1))
                    .and(x[other])
                    .for_each(|g, &sb, &pb, &o| acc.store(g, sb + pb * o));
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
        let (s, p) = ydot.split_at_mut(1);
        Zip::from(&mut s[0])
            .and(&mut p[0])
            .and(x[0])
            .and(x[1])
            .and(xdot.view(0))
            .and(xdot.view(1))
            .for_each(|s, p, &a, &b, &ad, &bd| {
                *s = ad + bd;
                *p = ad * b + a * bd;
            });
        Ok(())
    }
}

#[test]
fn a_correct_two_output_rule_passes_and_the_report_names_its_outputs() {
    let mut r = rng(7);
    let (a, b) = (randn::<f64>(3, 4, &mut r), randn::<f64>(3, 4, &mut r));
    let p = SumProd { bad_missing: false };
    let report = Checker::new().check(&p, &[a.view(), b.view()]).unwrap();
    report.assert_passed();
    assert_eq!(report.outputs.len(), 2);
    assert!(
        report
            .outputs
            .iter()
            .all(|o| o.missing_cotangent_error == Some(0.0)),
        "{report}"
    );
    assert!(report.inputs.iter().all(|i| i.jvp_errors.len() == 2));
    let text = report.to_string();
    assert!(
        text.starts_with("SumProd [f64]  (3×4, 3×4) → (S: 3×4, P: 3×4)   PASSED"),
        "{text}"
    );
    assert!(text.contains("Σₖ⟨Ȳₖ,Ẏₖ⟩"), "{text}");
    // Each output's row gives its errors, and nothing reads "not checked".
    for name in ["S", "P"] {
        let row = text
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no row for {name}\n{text}"));
        assert!(row.contains("3×4") && row.contains("0.00e0"), "{row}");
    }
    assert!(!text.contains("not checked"), "{text}");
    assert_rule_precisions(&p, &[a.view(), b.view()]);
}

#[test]
fn a_missing_cotangent_that_is_not_zero_is_caught() {
    let mut r = rng(8);
    let (a, b) = (randn::<f64>(2, 3, &mut r), randn::<f64>(2, 3, &mut r));
    let report = Checker::new()
        .check(&SumProd { bad_missing: true }, &[a.view(), b.view()])
        .unwrap();
    assert!(!report.passed(), "{report}");
    assert!(
        report.outputs[0].missing_cotangent_error.unwrap() > 1e-3,
        "{report}"
    );
    // The check of P's missing cotangent runs the rule with only P̄ given, S̄ missing:
    // the same fault shows there.
    assert!(
        report.outputs[1].missing_cotangent_error.unwrap() > 1e-3,
        "{report}"
    );
    assert!(
        report.to_string().contains("a missing cotangent of S"),
        "{report}"
    );
    // The full Jacobian gives P's one-hot cotangents with S̄ missing: the failure line
    // names the output, one of two.
    let w = report.inputs[0].jacobian.expect("full Jacobian ran");
    assert_eq!(w.output, 1, "{report}");
    let line = format!(
        "A: full Jacobian error {:.2e} at input ({}, {}), output P({}, {})",
        w.error, w.input_index.0, w.input_index.1, w.output_index.0, w.output_index.1
    );
    assert!(report.failures().contains(&line), "{line}\n{report}");
    // The gradients for given cotangents are right.
    assert!(report.inputs.iter().all(|i| i.vjp_error < 1e-8), "{report}");
}

/// `E = exp(A)`, `T = 2Aᵀ`: `Ā = Ē ⊙ E + 2T̄ᵀ`, reading the output `E` (declared unless
/// `hide_output`).
struct ExpAndTwiceT {
    hide_output: bool,
}

impl Rule<f64> for ExpAndTwiceT {
    fn name(&self) -> &'static str {
        "ExpAndTwiceT"
    }
    fn arity(&self) -> usize {
        1
    }
    fn outputs(&self) -> usize {
        2
    }
    fn output_name(&self, k: usize) -> &'static str {
        ["E", "T"][k.min(1)]
    }
    fn shapes(&self, x: &[Shape]) -> Result<Shapes> {
        Ok(smallvec![x[0], Shape(x[0].1, x[0].0)])
    }
    fn saves(&self, _: &[bool]) -> Saves {
        if self.hide_output {
            Saves::NONE
        } else {
            Saves::NONE.output(0)
        }
    }
    fn eval(
        &self,
        x: &[ArrayView2<'_, f64>],
        y: &mut [ArrayViewMut2<'_, f64>],
        _: &mut [f64],
    ) -> Result<()> {
        y[0].zip_mut_with(&x[0], |e, &a| *e = a.exp());
        y[1].zip_mut_with(&x[0].t(), |t, &a| *t = 2.0 * a);
        Ok(())
    }
    fn pullback(
        &self,
        _x: &[ArrayView2<'_, f64>],
        y: &[ArrayView2<'_, f64>],
        ybar: &Partials<'_, '_, f64>,
        grads: &mut [Grad<'_, f64>],
        _: &mut [f64],
    ) -> Result<()> {
        if let Some((g, acc)) = grads[0].target() {
            Zip::from(g)
                .and(ybar.view(0))
                .and(y[0])
                .and(ybar.view(1).t())
                .for_each(|g, &eb, &e, &tb| acc.store(g, eb * e + 2.0 * tb));
        }
        Ok(())
    }
    fn pushforward(
        &self,
        _x: &[ArrayView2<'_, f64>],
        y: &[ArrayView2<'_, f64>],
        xdot: &Partials<'_, '_, f64>,
        ydot: &mut [ArrayViewMut2<'_, f64>],
        _: &mut [f64],
    ) -> Result<()> {
        let ad = xdot.view(0);
        Zip::from(&mut ydot[0])
            .and(&ad)
            .and(y[0])
            .for_each(|d, &ad, &e| *d = ad * e);
        ydot[1].zip_mut_with(&ad.t(), |d, &ad| *d = 2.0 * ad);
        Ok(())
    }
}

#[test]
fn a_rule_reading_a_declared_output_passes_and_an_undeclared_one_is_named() {
    let a = randn::<f64>(3, 2, &mut rng(9));
    Checker::new()
        .check(&ExpAndTwiceT { hide_output: false }, &[a.view()])
        .unwrap()
        .assert_passed();
    let r = Checker::new()
        .check(&ExpAndTwiceT { hide_output: true }, &[a.view()])
        .unwrap();
    assert!(!r.passed(), "{r}");
    assert_eq!(r.undeclared_reads.len(), 1, "{r}");
    assert_eq!(r.undeclared_reads[0].value, Some(Value::Output(0)), "{r}");
    assert!(
        r.to_string().contains(
            "reads output E which it does not declare in saves (when every gradient is wanted)"
        ),
        "{r}"
    );
}

/// `C = A·A` for a symmetric `A`: `Ċ = ȦA + AȦ`, `Ā = sym(C̄Aᵀ + AᵀC̄)`; without the
/// projection (`project: false`) the gradient is not symmetric.
struct SymSquare {
    project: bool,
}

impl Rule<f64> for SymSquare {
    fn name(&self) -> &'static str {
        "SymSquare"
    }
    fn arity(&self) -> usize {
        1
    }
    fn structure(&self, _: usize) -> Structure {
        Structure::Symmetric
    }
    fn shapes(&self, x: &[Shape]) -> Result<Shapes> {
        crate::ops::square("SymSquare", "A", x[0])?;
        Ok(smallvec![x[0]])
    }
    fn saves(&self, _: &[bool]) -> Saves {
        Saves::NONE.input(0)
    }
    fn eval(
        &self,
        x: &[ArrayView2<'_, f64>],
        y: &mut [ArrayViewMut2<'_, f64>],
        _: &mut [f64],
    ) -> Result<()> {
        gemm(y[0].view_mut(), Accum::Replace, x[0], x[0], 1.0)
    }
    fn pullback(
        &self,
        x: &[ArrayView2<'_, f64>],
        _y: &[ArrayView2<'_, f64>],
        ybar: &Partials<'_, '_, f64>,
        grads: &mut [Grad<'_, f64>],
        _: &mut [f64],
    ) -> Result<()> {
        if let Some((g, acc)) = grads[0].target() {
            let a = x[0];
            let cbar = ybar.view(0);
            let mut s = cbar.dot(&a.t()) + a.t().dot(&cbar);
            if self.project {
                Structure::Symmetric.project_in_place(s.view_mut());
            }
            acc.assign(g, s.view());
        }
        Ok(())
    }
    fn pushforward(
        &self,
        x: &[ArrayView2<'_, f64>],
        _y: &[ArrayView2<'_, f64>],
        xdot: &Partials<'_, '_, f64>,
        ydot: &mut [ArrayViewMut2<'_, f64>],
        _: &mut [f64],
    ) -> Result<()> {
        let ad = xdot.view(0);
        gemm(ydot[0].view_mut(), Accum::Replace, ad, x[0], 1.0)?;
        gemm(ydot[0].view_mut(), Accum::Add, x[0], ad, 1.0)
    }
}

#[test]
fn structured_inputs_are_perturbed_along_their_structure() {
    let a = Structure::Symmetric.project(randn::<f64>(4, 4, &mut rng(10)));
    let r = Checker::new()
        .check(&SymSquare { project: true }, &[a.view()])
        .unwrap();
    r.assert_passed();
    assert!(r.inputs[0].jacobian.is_some());
    // The unprojected gradient agrees along symmetric directions, but is not symmetric.
    let r = Checker::new()
        .check(&SymSquare { project: false }, &[a.view()])
        .unwrap();
    assert!(!r.passed(), "{r}");
    assert!(r.inputs[0].vjp_error < 1e-8, "{r}");
    assert!(r.inputs[0].structure_error > 1e-3, "{r}");
}

// -------------------------------------------------------------- residuals

/// How `C = A ⊙ A` with the residual `R0 = 2A` is written.
#[derive(Clone, Copy, Debug, PartialEq)]
enum ResidualFault {
    None,
    /// The reverse rule reads `R0` without declaring it in `saves`.
    Undeclared,
    /// The forward pass never writes `R0` (the rules compute `2A` from `A` instead), so
    /// a NaN-filled residual buffer stays NaN.
    Unwritten,
}

/// `C = A ⊙ A` with one residual `R0 = 2A`, which the rules read:
/// `Ā = R0 ⊙ C̄`, `Ċ = R0 ⊙ Ȧ`.
struct SquareWithResidual(ResidualFault);

impl<T: Real> Rule<T> for SquareWithResidual {
    fn name(&self) -> &'static str {
        "SquareWithResidual"
    }
    fn arity(&self) -> usize {
        1
    }
    fn residuals(&self) -> usize {
        1
    }
    fn shapes(&self, x: &[Shape]) -> Result<Shapes> {
        Ok(smallvec![x[0], x[0]])
    }
    fn saves(&self, _: &[bool]) -> Saves {
        match self.0 {
            ResidualFault::None => Saves::NONE.output(1),
            ResidualFault::Undeclared => Saves::NONE,
            ResidualFault::Unwritten => Saves::NONE.input(0),
        }
    }
    fn eval(
        &self,
        x: &[ArrayView2<'_, T>],
        y: &mut [ArrayViewMut2<'_, T>],
        _: &mut [T],
    ) -> Result<()> {
        let (c, r) = y.split_at_mut(1);
        if self.0 == ResidualFault::Unwritten {
            c[0].zip_mut_with(&x[0], |c, &a| *c = a * a);
            return Ok(());
        }
        Zip::from(&mut c[0])
            .and(&mut r[0])
            .and(x[0])
            .for_each(|c, r, &a| {
                *c = a * a;
                *r = T::of(2.0) * a;
            });
        Ok(())
    }
    fn pullback(
        &self,
        x: &[ArrayView2<'_, T>],
        y: &[ArrayView2<'_, T>],
        ybar: &Partials<'_, '_, T>,
        grads: &mut [Grad<'_, T>],
        _: &mut [T],
    ) -> Result<()> {
        let two = T::of(2.0);
        if let Some((g, acc)) = grads[0].target() {
            if self.0 == ResidualFault::Unwritten {
                Zip::from(g)
                    .and(x[0])
                    .and(ybar.view(0))
                    .for_each(|g, &a, &cb| acc.store(g, two * a * cb));
            } else {
                Zip::from(g)
                    .and(y[1])
                    .and(ybar.view(0))
                    .for_each(|g, &r, &cb| acc.store(g, r * cb));
            }
        }
        Ok(())
    }
    fn pushforward(
        &self,
        x: &[ArrayView2<'_, T>],
        y: &[ArrayView2<'_, T>],
        xdot: &Partials<'_, '_, T>,
        ydot: &mut [ArrayViewMut2<'_, T>],
        _: &mut [T],
    ) -> Result<()> {
        let r = if self.0 == ResidualFault::Unwritten {
            x[0]
        } else {
            y[1]
        };
        let scale = if self.0 == ResidualFault::Unwritten {
            T::of(2.0)
        } else {
            T::one()
        };
        Zip::from(&mut ydot[0])
            .and(r)
            .and(xdot.view(0))
            .for_each(|d, &r, &ad| *d = scale * r * ad);
        Ok(())
    }
}

#[test]
fn a_correct_rule_with_a_residual_passes_and_the_residual_is_not_differentiated() {
    let a = randn::<f64>(3, 4, &mut rng(11));
    let p = SquareWithResidual(ResidualFault::None);
    assert_eq!(Rule::<f64>::output_name(&p, 0), "C");
    assert_eq!(Rule::<f64>::output_name(&p, 1), "R0");
    let r = Checker::new().check(&p, &[a.view()]).unwrap();
    r.assert_passed();
    assert_eq!(r.outputs.len(), 1, "{r}");
    assert_eq!(r.residuals.len(), 1, "{r}");
    assert_eq!(r.residuals[0].name, "R0");
    assert_eq!(r.residuals[0].first_write_error, 0.0, "{r}");
    assert!(r.inputs[0].jacobian.is_some(), "{r}");
    assert_eq!(r.inputs[0].jvp_errors.len(), 1, "{r}");
    let text = r.to_string();
    assert!(
        text.starts_with("SquareWithResidual [f64]  (3×4) → 3×4   PASSED"),
        "{text}"
    );
    assert!(text.contains("R0"), "{text}");
    assert!(text.contains("(not differentiated)"), "{text}");
    assert_rule_precisions(&p, &[a.view()]);
}

#[test]
fn the_slice_layer_takes_every_output_and_cotangents_of_the_differentiable_ones() {
    use crate::Primitive;
    let a = randn::<f64>(2, 3, &mut rng(12));
    let p = SquareWithResidual(ResidualFault::None);
    let y = Primitive::<f64>::forward(&p, &[a.view()]).unwrap();
    assert_eq!(y.len(), 2);
    assert_eq!(y[1], &a * 2.0);
    let cbar = randn::<f64>(2, 3, &mut rng(13));
    let yv = [y[0].view(), y[1].view()];
    let g = p.backward(&[a.view()], &yv, &[Some(cbar.view())]).unwrap();
    assert_eq!(g[0], &y[1] * &cbar);
    // A cotangent for the residual is an arity error; so is a missing residual.
    let e = p
        .backward(&[a.view()], &yv, &[Some(cbar.view()), Some(cbar.view())])
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Arity {
                what: "cotangents",
                expected: 1,
                got: 2,
                ..
            }
        ),
        "{e}"
    );
    let e = p
        .backward(&[a.view()], &yv[..1], &[Some(cbar.view())])
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Arity {
                what: "outputs",
                expected: 2,
                got: 1,
                ..
            }
        ),
        "{e}"
    );
    let t = p.jvp(&[a.view()], &yv, &[Some(cbar.view())]).unwrap();
    assert_eq!(t.len(), 1);
    assert_eq!(t[0], &y[1] * &cbar);
}

#[test]
fn an_undeclared_residual_read_fails_the_saves_pass() {
    let a = randn::<f64>(3, 4, &mut rng(14));
    let r = Checker::new()
        .check(&SquareWithResidual(ResidualFault::Undeclared), &[a.view()])
        .unwrap();
    assert!(!r.passed(), "{r}");
    assert_eq!(r.undeclared_reads.len(), 1, "{r}");
    assert_eq!(r.undeclared_reads[0].value, Some(Value::Output(1)), "{r}");
    assert_eq!(r.undeclared_reads[0].name, "R0", "{r}");
    assert!(
        r.to_string().contains(
            "reads residual R0 which it does not declare in saves (when every gradient is wanted)"
        ),
        "{r}"
    );
    // Everything else is right.
    assert!(r.inputs[0].vjp_error < 1e-8, "{r}");
    assert!(r.adjoint_error < 1e-11, "{r}");
}

#[test]
fn a_residual_left_unwritten_fails_the_first_write_pass() {
    let a = randn::<f64>(3, 4, &mut rng(15));
    let r = Checker::new()
        .check(&SquareWithResidual(ResidualFault::Unwritten), &[a.view()])
        .unwrap();
    assert!(!r.passed(), "{r}");
    assert!(r.residuals[0].first_write_error.is_nan(), "{r}");
    assert_eq!(r.outputs[0].first_write_error, 0.0, "{r}");
    assert_eq!(r.failures().len(), 1, "{r}");
    assert!(
        r.to_string()
            .contains("residual R0: the forward rule leaves its buffer unwritten"),
        "{r}"
    );
}

#[test]
fn the_typed_layer_keeps_residuals_apart_and_hands_them_to_the_rules() {
    use crate::ops::Apply;
    let a = randn::<f64>(3, 2, &mut rng(16));
    let cbar = randn::<f64>(3, 2, &mut rng(17));
    let out = SquareWithResidual(ResidualFault::None)
        .apply([a.view()])
        .unwrap();
    assert_eq!(out.outputs().len(), 1);
    assert_eq!(out.residuals().len(), 1);
    assert_eq!(out.value().to_owned(), &a * &a);
    assert_eq!(out.residuals()[0].to_owned(), &a * 2.0);
    let expected = &a * 2.0 * &cbar;
    let [abar] = out.backward(cbar.view()).unwrap();
    assert_eq!(abar, expected);
    let mut buf = Array2::<f64>::ones((3, 2));
    out.backward_add(cbar.view(), &mut [Some(buf.view_mut())])
        .unwrap();
    assert_eq!(buf, &expected + 1.0);
    let g = out.backward_all(&[Some(cbar.view())]).unwrap();
    assert_eq!(g[0], expected);
    assert_eq!(out.jvp([cbar.view()]).unwrap(), expected);
    assert_eq!(out.jvp_all(&[Some(cbar.view())]).unwrap().len(), 1);
    assert_eq!(out.into_outputs().len(), 1);
}

// ------------------------------------------------------------------ mode sets

/// How [`Product`] is broken.
#[derive(Clone, Copy, Debug, PartialEq)]
enum ProductFault {
    None,
    /// Fails whenever `Ā` is to be added into its buffer.
    AddFails,
    /// Leaves `Ā` alone unless another gradient is wanted too (a shared factor that is
    /// computed only for the others).
    NeedsOthers,
}

/// `C = A ⊙ B ⊙ D ⊙ …` of `n` inputs: `X̄ᵢ = C̄ ⊙ Πⱼ≠ᵢ Xⱼ`.
struct Product {
    n: usize,
    fault: ProductFault,
}

impl Rule<f64> for Product {
    fn name(&self) -> &'static str {
        "Product"
    }
    fn arity(&self) -> usize {
        self.n
    }
    fn shapes(&self, x: &[Shape]) -> Result<Shapes> {
        for s in &x[1..] {
            crate::ops::same_shape("Product", "A", x[0], "another factor", *s)?;
        }
        Ok(smallvec![x[0]])
    }
    fn eval(
        &self,
        x: &[ArrayView2<'_, f64>],
        y: &mut [ArrayViewMut2<'_, f64>],
        _: &mut [f64],
    ) -> Result<()> {
        y[0].assign(&x[0]);
        for xj in &x[1..] {
            y[0] *= xj;
        }
        Ok(())
    }
    fn pullback(
        &self,
        x: &[ArrayView2<'_, f64>],
        _y: &[ArrayView2<'_, f64>],
        ybar: &Partials<'_, '_, f64>,
        grads: &mut [Grad<'_, f64>],
        _: &mut [f64],
    ) -> Result<()> {
        let others_wanted = grads[1..].iter().any(|g| g.wanted());
        for (i, g) in grads.iter_mut().enumerate() {
            let Some((g, acc)) = g.target() else {
                continue;
            };
            if i == 0 {
                match self.fault {
                    ProductFault::AddFails if acc == crate::Accum::Add => {
                        return Err(Error::InvalidArgument {
                            op: "Product",
                            msg: "no accumulation".into(),
                        });
                    }
                    ProductFault::NeedsOthers if !others_wanted => continue,
                    _ => {}
                }
            }
            let mut v = ybar.view(0).to_owned();
            for (j, xj) in x.iter().enumerate() {
                if j != i {
                    v *= xj;
                }
            }
            Zip::from(g).and(&v).for_each(|g, &v| acc.store(g, v));
        }
        Ok(())
    }
    fn pushforward(
        &self,
        x: &[ArrayView2<'_, f64>],
        _y: &[ArrayView2<'_, f64>],
        xdot: &Partials<'_, '_, f64>,
        ydot: &mut [ArrayViewMut2<'_, f64>],
        _: &mut [f64],
    ) -> Result<()> {
        ydot[0].fill(0.0);
        for i in 0..self.n {
            let mut t = xdot.view(i).to_owned();
            for (j, xj) in x.iter().enumerate() {
                if j != i {
                    t *= xj;
                }
            }
            ydot[0] += &t;
        }
        Ok(())
    }
}

fn check_product(n: usize, fault: ProductFault) -> Report {
    let mut r = rng(11);
    let x: Vec<Array2<f64>> = (0..n).map(|_| randn::<f64>(3, 2, &mut r)).collect();
    let views: Vec<ArrayView2<'_, f64>> = x.iter().map(|x| x.view()).collect();
    Checker::new().check(&Product { n, fault }, &views).unwrap()
}

#[test]
fn each_set_of_buffer_modes_is_run_once() {
    for n in 1..=3 {
        check_product(n, ProductFault::None).assert_passed();
    }
    // The buffer modes of every failed call, the accumulation pass first: every input
    // added, each alone, each next to first writes; then the first-write pass, whose
    // sets add only next to a first write.
    let sets = |n: usize| -> Vec<String> {
        check_product(n, ProductFault::AddFails)
            .rule_errors
            .iter()
            .map(|e| e[e.find('(').unwrap() + 1..e.find(')').unwrap()].to_string())
            .collect()
    };
    assert_eq!(sets(1), ["A: Add"]);
    assert_eq!(
        sets(2),
        [
            "A: Add, B: Add",
            "A: Add, B: Skip",
            "A: Add, B: Write",
            "A: Add, B: Write",
        ]
    );
    assert_eq!(
        sets(3),
        [
            "A: Add, B: Add, D: Add",
            "A: Add, B: Skip, D: Skip",
            "A: Add, B: Write, D: Write",
            "A: Add, B: Write, D: Add",
            "A: Add, B: Add, D: Write",
        ]
    );
}

#[test]
fn a_gradient_left_unwritten_when_it_is_wanted_alone_is_caught() {
    let r = check_product(3, ProductFault::NeedsOthers);
    assert!(!r.passed(), "{r}");
    // Only the calls where A's gradient is the one wanted see the fault.
    assert!(r.inputs[0].accumulate_error > 0.1, "{r}");
    assert!(r.inputs[0].first_write_error.is_nan(), "{r}");
    assert!(r.inputs.iter().all(|i| i.vjp_error < 1e-8), "{r}");
    assert!(
        r.inputs[1..].iter().all(|i| i.accumulate_error < 1e-12),
        "{r}"
    );
}

// --------------------------------------------------- an input without effect

/// `C = 3A`, with a second input `B` of another shape that the output does not depend
/// on: `Ā = 3C̄`, `B̄ = 0`.
/// `C = A ⊙ B + D`, three inputs: `Ā = C̄ ⊙ B` reads `B`, `B̄ = C̄ ⊙ A` reads `A`, `D̄ = C̄`
/// reads nothing. With `b_for_a_with_another`, `saves` declares `B` for `Ā` only when
/// another gradient is wanted too: wrong when `Ā` is wanted alone.
struct ProductPlus {
    b_for_a_with_another: bool,
}

impl Rule<f64> for ProductPlus {
    fn name(&self) -> &'static str {
        "ProductPlus"
    }
    fn arity(&self) -> usize {
        3
    }
    fn shapes(&self, x: &[Shape]) -> Result<Shapes> {
        Ok(smallvec![x[0]])
    }
    fn saves(&self, wanted: &[bool]) -> Saves {
        let b = if self.b_for_a_with_another {
            wanted[0] && (wanted[1] || wanted[2])
        } else {
            wanted[0]
        };
        let mut saves = Saves::NONE;
        if b {
            saves = saves.input(1);
        }
        if wanted[1] {
            saves = saves.input(0);
        }
        saves
    }
    fn eval(
        &self,
        x: &[ArrayView2<'_, f64>],
        y: &mut [ArrayViewMut2<'_, f64>],
        _: &mut [f64],
    ) -> Result<()> {
        Zip::from(&mut y[0])
            .and(x[0])
            .and(x[1])
            .and(x[2])
            .for_each(|c, &a, &b, &d| *c = a * b + d);
        Ok(())
    }
    fn pullback(
        &self,
        x: &[ArrayView2<'_, f64>],
        _y: &[ArrayView2<'_, f64>],
        ybar: &Partials<'_, '_, f64>,
        grads: &mut [Grad<'_, f64>],
        _: &mut [f64],
    ) -> Result<()> {
        let cbar = ybar.view(0);
        for (i, other) in [(0, Some(1)), (1, Some(0)), (2, None)] {
            if let Some((g, acc)) = grads[i].target() {
                match other {
                    Some(k) => Zip::from(g)
                        .and(&cbar)
                        .and(x[k])
                        .for_each(|g, &c, &v| acc.store(g, c * v)),
                    None => Zip::from(g).and(&cbar).for_each(|g, &c| acc.store(g, c)),
                }
            }
        }
        Ok(())
    }
    fn pushforward(
        &self,
        x: &[ArrayView2<'_, f64>],
        _y: &[ArrayView2<'_, f64>],
        xdot: &Partials<'_, '_, f64>,
        ydot: &mut [ArrayViewMut2<'_, f64>],
        _: &mut [f64],
    ) -> Result<()> {
        Zip::from(&mut ydot[0])
            .and(x[0])
            .and(x[1])
            .and(xdot.view(0))
            .and(xdot.view(1))
            .for_each(|c, &a, &b, &da, &db| *c = da * b + a * db);
        Zip::from(&mut ydot[0])
            .and(xdot.view(2))
            .for_each(|c, &dd| *c += dd);
        Ok(())
    }
}

#[test]
fn each_gradient_wanted_alone_is_checked_for_undeclared_reads() {
    // With three inputs, "each one alone" is not "all but one": a read undeclared only
    // when Ā is wanted alone must be found, and named with that set of wanted gradients.
    let mut r = rng(35);
    let x: Vec<Array2<f64>> = (0..3).map(|_| randn::<f64>(3, 2, &mut r)).collect();
    let views: Vec<ArrayView2<'_, f64>> = x.iter().map(|a| a.view()).collect();
    let right = ProductPlus {
        b_for_a_with_another: false,
    };
    Checker::new()
        .check(&right, &views)
        .unwrap()
        .assert_passed();
    let wrong = ProductPlus {
        b_for_a_with_another: true,
    };
    let report = Checker::new().check(&wrong, &views).unwrap();
    assert!(!report.passed(), "{report}");
    let reads: Vec<(Option<Value>, Vec<bool>)> = report
        .undeclared_reads
        .iter()
        .map(|u| (u.value, u.wanted.clone()))
        .collect();
    assert_eq!(
        reads,
        [(Some(Value::Input(1)), vec![true, false, false])],
        "{report}"
    );
}

struct IgnoresB;

impl Rule<f64> for IgnoresB {
    fn name(&self) -> &'static str {
        "IgnoresB"
    }
    fn arity(&self) -> usize {
        2
    }
    fn shapes(&self, x: &[Shape]) -> Result<Shapes> {
        Ok(smallvec![x[0]])
    }
    fn saves(&self, _: &[bool]) -> Saves {
        Saves::NONE
    }
    fn eval(
        &self,
        x: &[ArrayView2<'_, f64>],
        y: &mut [ArrayViewMut2<'_, f64>],
        _: &mut [f64],
    ) -> Result<()> {
        Zip::from(&mut y[0])
            .and(x[0])
            .for_each(|c, &a| *c = 3.0 * a);
        Ok(())
    }
    fn pullback(
        &self,
        _x: &[ArrayView2<'_, f64>],
        _y: &[ArrayView2<'_, f64>],
        ybar: &Partials<'_, '_, f64>,
        grads: &mut [Grad<'_, f64>],
        _: &mut [f64],
    ) -> Result<()> {
        if let Some((g, acc)) = grads[0].target() {
            Zip::from(g)
                .and(ybar.view(0))
                .for_each(|g, &c| acc.store(g, 3.0 * c));
        }
        if let Some((g, acc)) = grads[1].target() {
            Zip::from(g).for_each(|g| acc.store(g, 0.0));
        }
        Ok(())
    }
    fn pushforward(
        &self,
        _x: &[ArrayView2<'_, f64>],
        _y: &[ArrayView2<'_, f64>],
        xdot: &Partials<'_, '_, f64>,
        ydot: &mut [ArrayViewMut2<'_, f64>],
        _: &mut [f64],
    ) -> Result<()> {
        Zip::from(&mut ydot[0])
            .and(xdot.view(0))
            .for_each(|c, &a| *c = 3.0 * a);
        Ok(())
    }
}

#[test]
fn an_input_the_output_does_not_depend_on_passes_with_zero_errors() {
    // Along B the VJP, the finite difference and its scale are all exactly zero, and so
    // is the JVP: a comparison of two zeros is no error, not 0/0.
    let mut r = rng(34);
    let (a, b) = (randn::<f64>(3, 4, &mut r), randn::<f64>(2, 5, &mut r));
    let report = Checker::new()
        .check(&IgnoresB, &[a.view(), b.view()])
        .unwrap();
    report.assert_passed();
    assert_eq!(report.inputs[1].vjp_error, 0.0, "{report}");
    assert_eq!(report.inputs[1].jvp_error, 0.0, "{report}");
    // Every element's error is 0: the first is named.
    let jacobian = report.inputs[1].jacobian.expect("full Jacobian ran");
    assert_eq!(jacobian.error, 0.0, "{report}");
    assert_eq!(
        (jacobian.output, jacobian.output_index, jacobian.input_index),
        (0, (0, 0), (0, 0)),
        "{report}"
    );
}

// ------------------------------------------------------------ random matrices

#[test]
fn random_lower_is_lower_triangular_with_a_diagonal_of_at_least_one() {
    let l = super::random::lower::<f64>(6, &mut rng(31));
    for ((r, c), &v) in l.indexed_iter() {
        if c > r {
            assert_eq!(v, 0.0, "({r}, {c})\n{l}");
        } else if c == r {
            assert!(v >= 1.0, "({r}, {c})\n{l}");
        }
    }
    assert!(l.diag().iter().any(|&v| v > 1.5), "{l}");
}

#[test]
fn random_spd_is_the_identity_plus_a_gram_matrix_over_n() {
    let n = 40;
    let a = super::random::spd::<f64>(n, &mut rng(32));
    assert_eq!(a, a.t());
    // A − I = GGᵀ/n: positive definite, its diagonal entries χ²ₙ/n of mean 1.
    let mut g = a.clone();
    g.diag_mut().mapv_inplace(|v| v - 1.0);
    crate::naive::cholesky::cholesky(g.view()).expect("A − I is positive definite");
    let mean = g.diag().mean().unwrap();
    assert!((mean - 1.0).abs() < 0.1, "{mean}");
}

#[test]
fn random_uniform_draws_from_its_range_and_rejects_an_empty_one() {
    let mut r = rng(33);
    let u = super::random::uniform::<f64>(3, 5, -2.0, 0.5, &mut r).unwrap();
    assert_eq!(u.dim(), (3, 5));
    assert!(u.iter().all(|v| (-2.0..0.5).contains(v)), "{u}");
    assert!(
        u.iter().any(|&v| v < -1.0) && u.iter().any(|&v| v > -0.5),
        "{u}"
    );
    for (lo, hi) in [
        (1.0, 1.0),
        (2.0, 1.0),
        (f64::NAN, 1.0),
        (0.0, f64::INFINITY),
        (f64::NEG_INFINITY, 0.0),
    ] {
        let e = super::random::uniform::<f64>(2, 3, lo, hi, &mut r).unwrap_err();
        assert!(
            matches!(e, Error::InvalidArgument { op: "uniform", .. }),
            "[{lo}, {hi}): {e}"
        );
    }
}
