//! The checker must reject wrong rules and say what they look like. Each primitive
//! here is deliberately broken in one of the ways people break matrix rules.

use matgrad::check::{random, Checker, Mistake};
use matgrad::prelude::*;
use ndarray::{Array2, ArrayView2};

/// How the gradient of `A` in `C = AB` is broken.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    None,
    /// `Ā = C̄B` instead of `C̄Bᵀ`.
    BInsteadOfBt,
    /// `Ā = (C̄Bᵀ)ᵀ`: right shape only when `A` is square.
    Transposed,
    Negated,
    Doubled,
    Halved,
    SymmetricPart,
    LowerOnly,
    Zero,
    /// A JVP that forgets the `AḂ` term; the backward is right.
    JvpMissingTerm,
    /// `backward_into` that overwrites instead of adding.
    Overwrites,
}

struct Faulty(Fault);

fn ab<'s>(inputs: &'s [ArrayView2<'_, f64>]) -> (ArrayView2<'s, f64>, ArrayView2<'s, f64>) {
    (inputs[0].view(), inputs[1].view())
}

impl Primitive<f64> for Faulty {
    fn name(&self) -> String {
        format!("Faulty({:?})", self.0)
    }
    fn arity(&self) -> usize {
        2
    }
    fn forward(&self, inputs: &[ArrayView2<'_, f64>]) -> Result<Array2<f64>> {
        let (a, b) = ab(inputs);
        Ok(a.dot(&b))
    }
    fn backward(
        &self,
        inputs: &[ArrayView2<'_, f64>],
        _c: ArrayView2<'_, f64>,
        cbar: ArrayView2<'_, f64>,
    ) -> Result<Vec<Array2<f64>>> {
        let (a, b) = ab(inputs);
        let g = cbar.dot(&b.t());
        let abar = match self.0 {
            Fault::BInsteadOfBt => cbar.dot(&b),
            Fault::Transposed => g.t().to_owned(),
            Fault::Negated => -g,
            Fault::Doubled => g * 2.0,
            Fault::Halved => g * 0.5,
            Fault::SymmetricPart => (&g + &g.t()) * 0.5,
            Fault::LowerOnly => Structure::LowerTriangular.project(g),
            Fault::Zero => Array2::zeros(g.raw_dim()),
            Fault::None | Fault::JvpMissingTerm | Fault::Overwrites => g,
        };
        Ok(vec![abar, a.t().dot(&cbar)])
    }
    fn jvp(
        &self,
        inputs: &[ArrayView2<'_, f64>],
        _c: ArrayView2<'_, f64>,
        t: &[ArrayView2<'_, f64>],
    ) -> Result<Array2<f64>> {
        let (a, b) = ab(inputs);
        let first = t[0].dot(&b);
        Ok(match self.0 {
            Fault::JvpMissingTerm => first,
            _ => first + a.dot(&t[1]),
        })
    }
    fn backward_into(
        &self,
        inputs: &[ArrayView2<'_, f64>],
        c: ArrayView2<'_, f64>,
        cbar: ArrayView2<'_, f64>,
        grads: &mut [Option<ndarray::ArrayViewMut2<'_, f64>>],
    ) -> Result<()> {
        let g = self.backward(inputs, c, cbar)?;
        for (buf, g) in grads.iter_mut().zip(g) {
            if let Some(buf) = buf {
                if self.0 == Fault::Overwrites {
                    buf.assign(&g);
                } else {
                    *buf += &g;
                }
            }
        }
        Ok(())
    }
}

fn run(fault: Fault, a_shape: (usize, usize), n: usize) -> matgrad::check::Report {
    let mut rng = random::rng(42);
    let a = random::randn::<f64>(a_shape.0, a_shape.1, &mut rng);
    let b = random::randn::<f64>(a_shape.1, n, &mut rng);
    Checker::new()
        .check(&Faulty(fault), &[a.view(), b.view()])
        .unwrap()
}

#[test]
fn the_correct_rule_passes() {
    run(Fault::None, (3, 4), 5).assert_passed();
    run(Fault::None, (4, 4), 4).assert_passed();
}

#[test]
fn each_mistake_is_rejected_and_named() {
    // Square A so that the wrong formulas still have the right shape; B is 4×4 or 4×6.
    let cases = [
        (Fault::Transposed, (4, 4), 6, Mistake::Transposed),
        (Fault::Negated, (3, 4), 5, Mistake::SignFlipped),
        (Fault::Doubled, (3, 4), 5, Mistake::Doubled),
        (Fault::Halved, (3, 4), 5, Mistake::Halved),
        (Fault::SymmetricPart, (4, 4), 2, Mistake::SymmetricPartOnly),
        (Fault::LowerOnly, (4, 4), 3, Mistake::LowerTriangleOnly),
        (Fault::Zero, (3, 4), 5, Mistake::Zero),
    ];
    for (fault, shape, n, expected) in cases {
        let r = run(fault, shape, n);
        assert!(!r.passed(), "{fault:?} passed:\n{r}");
        assert_eq!(r.mistake(0), Some(expected), "{fault:?}:\n{r}");
        assert_eq!(r.mistake(1), None, "{fault:?}: B's gradient is right:\n{r}");
        assert!(
            r.to_string().contains("diagnosis: the gradient of A"),
            "{r}"
        );
    }
}

#[test]
fn c_bar_b_instead_of_c_bar_b_transpose_is_rejected_on_non_square_a() {
    // A is 3×4, B is 4×4: C̄B has A's shape, so only the values can give it away.
    let r = run(Fault::BInsteadOfBt, (3, 4), 4);
    assert!(!r.passed(), "{r}");
    assert_eq!(r.mistake(0), Some(Mistake::Unrecognised), "{r}");
    // Small enough for the full Jacobian, which names the worst element.
    let w = r.inputs[0].jacobian.expect("full Jacobian ran");
    assert!(w.error > 1e-3, "{r}");
    assert!(r.to_string().contains("worst Jacobian element of A"), "{r}");
}

#[test]
fn a_transposed_gradient_of_a_non_square_input_is_named_by_its_shape() {
    let r = run(Fault::Transposed, (3, 4), 5);
    assert!(!r.passed(), "{r}");
    assert_eq!(r.mistake(0), Some(Mistake::TransposedShape), "{r}");
    assert_eq!(r.inputs[0].gradient_shape, Some(matgrad::Shape(4, 3)));
}

#[test]
fn a_wrong_jvp_fails_the_jvp_and_adjoint_checks_only() {
    let r = run(Fault::JvpMissingTerm, (3, 4), 5);
    assert!(!r.passed(), "{r}");
    assert!(
        r.inputs[0].vjp_error < 1e-8 && r.inputs[1].vjp_error < 1e-8,
        "{r}"
    );
    assert!(r.inputs[1].jvp_error > 0.5, "{r}");
    assert!(r.adjoint_error > 1e-3, "{r}");
}

#[test]
fn an_overwriting_backward_into_fails_the_accumulation_check() {
    let r = run(Fault::Overwrites, (3, 4), 5);
    assert!(!r.passed(), "{r}");
    assert!(r.inputs.iter().all(|x| x.accumulate_error > 1e-3), "{r}");
    assert!(r.inputs.iter().all(|x| x.vjp_error < 1e-8), "{r}");
}

#[test]
fn larger_inputs_are_diagnosed_without_the_full_jacobian() {
    let r = run(Fault::Transposed, (12, 12), 9);
    assert!(r.inputs[0].jacobian.is_none());
    assert_eq!(r.mistake(0), Some(Mistake::Transposed), "{r}");
}

#[test]
fn the_report_reads_as_a_table() {
    let text = run(Fault::None, (3, 4), 5).to_string();
    assert!(
        text.starts_with("Faulty(None) [f64]  (3×4, 4×5) → 3×5   PASSED"),
        "{text}"
    );
    assert!(text.contains("adjoint identity"), "{text}");
}

#[test]
fn the_report_names_inputs_as_the_primitive_does() {
    let mut rng = random::rng(9);
    let x = random::randn::<f64>(3, 4, &mut rng);
    let b = random::randn::<f64>(3, 1, &mut rng);
    let r = Checker::new()
        .check(&AddBias, &[x.view(), b.view()])
        .unwrap();
    let names: Vec<&str> = r.inputs.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["X", "b"]);
    // Without a name of its own, a primitive's inputs are A, B, … (C is the output).
    assert_eq!(run(Fault::None, (3, 4), 5).inputs[1].name, "B");
}
