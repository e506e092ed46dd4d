//! The checker must reject wrong rules and say what they look like. Each primitive
//! here is deliberately broken in one of the ways people break matrix rules.

use matgrad::check::{random, Checker, Mistake, Report, Value};
use matgrad::prelude::*;
use ndarray::{Array2, ArrayView2, ArrayViewMut2};

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
    /// A JVP that forgets the `AḂ` term; the reverse rule is right.
    JvpMissingTerm,
    /// A reverse rule that overwrites the buffer when asked to add (`Grad::Add`).
    Overwrites,
    /// A reverse rule that adds into `Ā`'s buffer when asked to write it
    /// (`Grad::Write`): it reads a buffer it must not read.
    ReadsWriteBuffer,
    /// `saves` declares only `B`, but `B̄ = AᵀC̄` reads `A`.
    UndeclaredRead,
}

struct Faulty(Fault);

/// Stores `v` into a gradient buffer with `acc`, or returns the shape error a rule
/// gets when its result does not fit (as GEMM does).
fn put(
    mut g: ArrayViewMut2<'_, f64>,
    acc: Accum,
    v: Array2<f64>,
    of: &'static str,
) -> Result<(), Error> {
    if g.dim() != v.dim() {
        return Err(Error::WrongShape {
            op: "Faulty",
            name: "gradient buffer",
            of,
            expected: Shape(g.nrows(), g.ncols()),
            got: Shape(v.nrows(), v.ncols()),
        });
    }
    acc.assign(g.view_mut(), v.view());
    Ok(())
}

impl Rule<f64> for Faulty {
    fn name(&self) -> &'static str {
        match self.0 {
            Fault::None => "Faulty(None)",
            Fault::BInsteadOfBt => "Faulty(BInsteadOfBt)",
            Fault::Transposed => "Faulty(Transposed)",
            Fault::Negated => "Faulty(Negated)",
            Fault::Doubled => "Faulty(Doubled)",
            Fault::Halved => "Faulty(Halved)",
            Fault::SymmetricPart => "Faulty(SymmetricPart)",
            Fault::LowerOnly => "Faulty(LowerOnly)",
            Fault::Zero => "Faulty(Zero)",
            Fault::JvpMissingTerm => "Faulty(JvpMissingTerm)",
            Fault::Overwrites => "Faulty(Overwrites)",
            Fault::ReadsWriteBuffer => "Faulty(ReadsWriteBuffer)",
            Fault::UndeclaredRead => "Faulty(UndeclaredRead)",
        }
    }
    fn arity(&self) -> usize {
        2
    }
    fn shapes(&self, x: &[Shape]) -> Result<Shapes, Error> {
        Rule::<f64>::shapes(&MatMul::nn(), x)
    }
    fn saves(&self, wanted: &[bool]) -> Saves {
        if self.0 == Fault::UndeclaredRead {
            return Saves::NONE.input(1);
        }
        // Ā reads B, B̄ reads A.
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
        x: &[ArrayView2<'_, f64>],
        y: &mut [ArrayViewMut2<'_, f64>],
        _ws: &mut [f64],
    ) -> Result<(), Error> {
        y[0].assign(&x[0].dot(&x[1]));
        Ok(())
    }
    fn pullback(
        &self,
        x: &[ArrayView2<'_, f64>],
        _y: &[ArrayView2<'_, f64>],
        ybar: &Partials<'_, '_, f64>,
        grads: &mut [Grad<'_, f64>],
        _ws: &mut [f64],
    ) -> Result<(), Error> {
        let (a, b, cbar) = (x[0].view(), x[1].view(), ybar.view(0));
        if let Some((g, acc)) = grads[0].target() {
            let right = cbar.dot(&b.t());
            let abar = match self.0 {
                Fault::BInsteadOfBt => cbar.dot(&b),
                Fault::Transposed => right.t().to_owned(),
                Fault::Negated => -right,
                Fault::Doubled => right * 2.0,
                Fault::Halved => right * 0.5,
                Fault::SymmetricPart => (&right + &right.t()) * 0.5,
                Fault::LowerOnly => Structure::LowerTriangular.project(right),
                Fault::Zero => Array2::zeros(right.raw_dim()),
                Fault::None
                | Fault::JvpMissingTerm
                | Fault::Overwrites
                | Fault::ReadsWriteBuffer
                | Fault::UndeclaredRead => right,
            };
            let acc = match self.0 {
                Fault::Overwrites => Accum::Replace,
                Fault::ReadsWriteBuffer => Accum::Add,
                _ => acc,
            };
            put(g, acc, abar, "A")?;
        }
        if let Some((g, acc)) = grads[1].target() {
            let acc = match self.0 {
                Fault::Overwrites => Accum::Replace,
                _ => acc,
            };
            put(g, acc, a.t().dot(&cbar), "B")?;
        }
        Ok(())
    }
    fn pushforward(
        &self,
        x: &[ArrayView2<'_, f64>],
        _y: &[ArrayView2<'_, f64>],
        xdot: &Partials<'_, '_, f64>,
        ydot: &mut [ArrayViewMut2<'_, f64>],
        _ws: &mut [f64],
    ) -> Result<(), Error> {
        let (a, b) = (x[0].view(), x[1].view());
        let first = xdot.view(0).dot(&b);
        ydot[0].assign(&match self.0 {
            Fault::JvpMissingTerm => first,
            _ => first + a.dot(&xdot.view(1)),
        });
        Ok(())
    }
}

fn run(fault: Fault, a_shape: (usize, usize), n: usize) -> Report {
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
    // The rule could not store its 4×3 result in A's 3×4 buffer.
    assert!(
        matches!(
            r.inputs[0].pullback_error,
            Some(Error::WrongShape {
                expected: Shape(3, 4),
                got: Shape(4, 3),
                ..
            })
        ),
        "{r}"
    );
    assert!(
        r.inputs[0].rule_failed() && !r.inputs[1].rule_failed(),
        "{r}"
    );
    assert!(
        r.failures()
            .iter()
            .any(|f| f.contains("the reverse rule fails on shapes its shape rule accepts")),
        "{r}"
    );
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
    // Overwriting is what a first write should do: that check passes.
    assert!(r.inputs.iter().all(|x| x.first_write_error < 1e-11), "{r}");
}

#[test]
fn a_reverse_rule_that_reads_its_write_buffer_fails_the_first_write_check() {
    let r = run(Fault::ReadsWriteBuffer, (3, 4), 5);
    assert!(!r.passed(), "{r}");
    // The buffer held NaN: the error is NaN or large, never within the tolerance.
    let e = r.inputs[0].first_write_error;
    assert!(e.is_nan() || e > 1e-3, "{r}");
    assert!(r.inputs[1].first_write_error < 1e-11, "{r}");
    // The gradient itself, from zero-filled buffers, and accumulation are right.
    assert!(r.inputs.iter().all(|x| x.vjp_error < 1e-8), "{r}");
    assert!(r.inputs.iter().all(|x| x.accumulate_error < 1e-11), "{r}");
    assert!(
        r.failures()
            .iter()
            .any(|f| f.starts_with("A: first-writing backward (Grad::Write into NaN)")),
        "{r}"
    );
}

#[test]
fn a_reverse_rule_that_reads_an_undeclared_input_fails_the_saves_check() {
    let r = run(Fault::UndeclaredRead, (3, 4), 5);
    assert!(!r.passed(), "{r}");
    // The gradients are right; only the declaration is wrong.
    assert!(r.inputs.iter().all(|x| x.vjp_error < 1e-8), "{r}");
    assert!(r.mistake(0).is_none() && r.mistake(1).is_none(), "{r}");
    assert!(!r.undeclared_reads.is_empty(), "{r}");
    // Every read is of A, when B̄ is wanted (alone or with Ā).
    for u in &r.undeclared_reads {
        assert_eq!(u.value, Some(Value::Input(0)), "{r}");
        assert_eq!(u.name, "A", "{r}");
        assert!(u.wanted[1], "{r}");
    }
    assert!(
        r.undeclared_reads.iter().any(|u| u.wanted == [false, true]),
        "{r}"
    );
    let e = r.inputs[1].saves_error;
    assert!(e.is_nan() || e > 1e-3, "{r}");
    assert!(
        r.failures()
            .iter()
            .any(|f| f.contains("reads input A which it does not declare in saves")),
        "{r}"
    );
    // The saves error is attributed to that read, and not reported a second time.
    assert!(
        !r.failures()
            .iter()
            .any(|f| f.contains("gradient with undeclared values replaced by NaN")),
        "{r}"
    );
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
    let names: Vec<&str> = r.inputs.iter().map(|i| i.name).collect();
    assert_eq!(names, ["X", "b"]);
    // Without a name of its own, a primitive's inputs are A, B, … (C is the output).
    assert_eq!(run(Fault::None, (3, 4), 5).inputs[1].name, "B");
}
