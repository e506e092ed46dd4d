//! The tape: reverse mode over a recorded graph, forward mode through the same
//! records, and recorded graphs as primitives that the shared checker proves.
//!
//! Tests run with debug assertions, so every gradient buffer the tape allocates starts
//! as NaN: a rule or a sweep that read a first-write buffer would poison the results.

use matgrad::check::{random, Checker, Mistake};
use matgrad::prelude::*;
use ndarray::{Array2, ArrayView2, ArrayViewMut2, Zip};
use std::cell::RefCell;
use std::rc::Rc;

type R = matgrad::Result<()>;

fn close(a: ArrayView2<'_, f64>, b: ArrayView2<'_, f64>, tol: f64) -> bool {
    let scale = b.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    a.dim() == b.dim()
        && a.iter()
            .zip(b.iter())
            .all(|(x, y)| (x - y).abs() <= tol * scale)
}

#[track_caller]
fn assert_close(a: ArrayView2<'_, f64>, b: ArrayView2<'_, f64>, tol: f64) {
    assert!(close(a, b, tol), "not close:\n{a:.6}\n{b:.6}");
}

fn frob(a: ArrayView2<'_, f64>, b: ArrayView2<'_, f64>) -> f64 {
    a.iter().zip(b.iter()).map(|(x, y)| x * y).sum()
}

/// `X` (3×5) with several children, two of which read it twice:
/// `out = (X⊙X + sin X)(X⊙X + sin X)ᵀ + (XB)(XB)ᵀ`, 3×3.
fn fan_out(tape: &mut Tape<f64>, x: Var, b: Var) -> matgrad::Result<Var> {
    let h = tape.apply1(Hadamard, &[x, x])?;
    let s = tape.apply1(Map(Sin), &[x])?;
    let z = tape.apply1(Add, &[h, s])?;
    let g = tape.apply1(MatMul::nt(), &[z, z])?;
    let p = tape.apply1(MatMul::nn(), &[x, b])?;
    let q = tape.apply1(MatMul::nt(), &[p, p])?;
    tape.apply1(Add, &[g, q])
}

#[test]
fn fan_out_gradients_match_the_checker() -> R {
    let mut rng = random::rng(11);
    let (x0, b0) = (
        random::randn::<f64>(3, 5, &mut rng),
        random::randn::<f64>(5, 4, &mut rng),
    );
    let mut tape = Tape::new();
    let (x, b) = (tape.leaf(x0.clone()), tape.leaf(b0.clone()));
    let out = fan_out(&mut tape, x, b)?;
    let model = tape
        .function("fan-out model", &[x, b], &[out])?
        .with_input_names(&["X", "B"]);
    assert_eq!(model.len(), 7);
    // 35 input elements: the checker also compares the full Jacobian.
    let report = Checker::new().check(&model, &[x0.view(), b0.view()])?;
    report.assert_passed();

    // The tape's own sweep gives what the checked primitive gives.
    let cbar = random::randn::<f64>(3, 3, &mut rng);
    let grads = tape.backward_with(out, cbar.view())?;
    let y = model.forward(&[x0.view(), b0.view()])?;
    let expected = model.backward(
        &[x0.view(), b0.view()],
        &[y[0].view()],
        &[Some(cbar.view())],
    )?;
    assert_close(grads.get(x).unwrap().view(), expected[0].view(), 1e-13);
    assert_close(grads.get(b).unwrap().view(), expected[1].view(), 1e-13);
    assert_eq!(grads.len(), 2);
    Ok(())
}

#[test]
fn a_value_read_twice_by_one_primitive() -> R {
    let mut rng = random::rng(12);
    let x0 = random::randn::<f64>(4, 6, &mut rng);

    // C = XXᵀ: X̄ = (C̄ + C̄ᵀ)X.
    let mut tape = Tape::new();
    let x = tape.leaf(x0.clone());
    let c = tape.apply1(MatMul::nt(), &[x, x])?;
    let cbar = random::randn::<f64>(4, 4, &mut rng);
    let grads = tape.backward_with(c, cbar.view())?;
    let expected = (&cbar + &cbar.t()).dot(&x0);
    assert_close(grads.get(x).unwrap().view(), expected.view(), 1e-13);
    let gram = tape.function("X·Xᵀ", &[x], &[c])?;
    Checker::new().check(&gram, &[x0.view()])?.assert_passed();

    // C = X ⊙ X: X̄ = 2X ⊙ C̄.
    let mut tape = Tape::new();
    let x = tape.leaf(x0.clone());
    let c = tape.apply1(Hadamard, &[x, x])?;
    let cbar = random::randn::<f64>(4, 6, &mut rng);
    let grads = tape.backward_with(c, cbar.view())?;
    let expected = &x0 * &cbar * 2.0;
    assert_close(grads.get(x).unwrap().view(), expected.view(), 1e-14);
    let square = tape.function("X⊙X", &[x], &[c])?;
    Checker::new().check(&square, &[x0.view()])?.assert_passed();
    Ok(())
}

/// `C = AB` whose reverse rule returns `Ā` transposed (`A` square, so the shape fits).
struct TransposedMatMul;

impl Rule<f64> for TransposedMatMul {
    fn name(&self) -> &'static str {
        "TransposedMatMul"
    }
    fn arity(&self) -> usize {
        2
    }
    fn shapes(&self, x: &[Shape]) -> matgrad::Result<Shapes> {
        Rule::<f64>::shapes(&MatMul::nn(), x)
    }
    fn saves(&self, wanted: &[bool]) -> Saves {
        Rule::<f64>::saves(&MatMul::nn(), wanted)
    }
    fn eval(
        &self,
        x: &[ArrayView2<'_, f64>],
        y: &mut [ArrayViewMut2<'_, f64>],
        ws: &mut [f64],
    ) -> matgrad::Result<()> {
        MatMul::nn().eval(x, y, ws)
    }
    fn pullback(
        &self,
        x: &[ArrayView2<'_, f64>],
        _y: &[ArrayView2<'_, f64>],
        ybar: &Partials<'_, '_, f64>,
        grads: &mut [Grad<'_, f64>],
        _ws: &mut [f64],
    ) -> matgrad::Result<()> {
        let cbar = ybar.view(0);
        if let Some((g, acc)) = grads[0].target() {
            let right = cbar.dot(&x[1].t());
            Zip::from(g)
                .and(&right.t())
                .for_each(|g, &v| acc.store(g, v));
        }
        if let Some((g, acc)) = grads[1].target() {
            MatMul::nn().backward_b(x[0].view(), cbar, g, acc)?;
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
    ) -> matgrad::Result<()> {
        MatMul::nn().pushforward(x, y, xdot, ydot, ws)
    }
}

#[test]
fn a_wrong_rule_inside_a_model_is_diagnosed() -> R {
    let mut rng = random::rng(13);
    let (w0, x0) = (
        random::randn::<f64>(4, 4, &mut rng),
        random::randn::<f64>(4, 6, &mut rng),
    );
    let mut tape = Tape::new();
    let (w, x) = (tape.leaf(w0.clone()), tape.constant(x0));
    let z = tape.apply1(TransposedMatMul, &[w, x])?;
    let h = tape.apply1(Map(Tanh), &[z])?;
    let model = tape
        .function("layer with a broken product", &[w], &[h])?
        .with_input_names(&["W"]);
    let report = Checker::new().check(&model, &[w0.view()])?;
    assert!(!report.passed(), "{report}");
    assert_eq!(report.mistake(0), Some(Mistake::Transposed), "{report}");
    let text = report.to_string();
    assert!(
        text.contains("W") && text.contains("transpose of the right answer"),
        "{text}"
    );
    Ok(())
}

/// Per reverse call and input: the primitive, the input, and `W`rite, `A`dd or `S`kip.
type Log = Rc<RefCell<Vec<(&'static str, usize, char)>>>;

/// A rule wrapped so that every reverse call logs, per input, how its buffer is used.
struct Spy<P> {
    inner: P,
    log: Log,
}

impl<P: Rule<f64>> Rule<f64> for Spy<P> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn arity(&self) -> usize {
        self.inner.arity()
    }
    fn shapes(&self, x: &[Shape]) -> matgrad::Result<Shapes> {
        self.inner.shapes(x)
    }
    fn saves(&self, wanted: &[bool]) -> Saves {
        self.inner.saves(wanted)
    }
    fn eval(
        &self,
        x: &[ArrayView2<'_, f64>],
        y: &mut [ArrayViewMut2<'_, f64>],
        ws: &mut [f64],
    ) -> matgrad::Result<()> {
        self.inner.eval(x, y, ws)
    }
    fn pullback(
        &self,
        x: &[ArrayView2<'_, f64>],
        y: &[ArrayView2<'_, f64>],
        ybar: &Partials<'_, '_, f64>,
        grads: &mut [Grad<'_, f64>],
        ws: &mut [f64],
    ) -> matgrad::Result<()> {
        for (i, g) in grads.iter().enumerate() {
            let mode = match g {
                Grad::Skip => 'S',
                Grad::Write(_) => 'W',
                Grad::Add(_) => 'A',
            };
            self.log.borrow_mut().push((self.inner.name(), i, mode));
        }
        self.inner.pullback(x, y, ybar, grads, ws)
    }
    fn pushforward(
        &self,
        x: &[ArrayView2<'_, f64>],
        y: &[ArrayView2<'_, f64>],
        xdot: &Partials<'_, '_, f64>,
        ydot: &mut [ArrayViewMut2<'_, f64>],
        ws: &mut [f64],
    ) -> matgrad::Result<()> {
        self.inner.pushforward(x, y, xdot, ydot, ws)
    }
}

#[test]
fn each_buffer_is_written_once_then_added_to() -> R {
    let mut rng = random::rng(14);
    let x0 = random::randn::<f64>(3, 4, &mut rng);
    let log = Rc::new(RefCell::new(Vec::new()));
    let spy = |inner| Spy {
        inner,
        log: Rc::clone(&log),
    };
    let mut tape = Tape::new();
    let x = tape.leaf(x0.clone());
    let d = tape.constant(random::randn::<f64>(3, 4, &mut rng));
    // x has four contributions: sin, exp, and Hadamard(x, x) twice.
    let a = tape.apply1(spy(Box::new(Map(Sin)) as Box<dyn Rule<f64>>), &[x])?;
    let b = tape.apply1(spy(Box::new(Map(Exp))), &[x])?;
    let c = tape.apply1(spy(Box::new(Hadamard)), &[x, x])?;
    // The data d needs no gradient: its slot is skipped.
    let e = tape.apply1(spy(Box::new(Hadamard)), &[a, d])?;
    let ab = tape.apply1(spy(Box::new(Add)), &[e, b])?;
    let out = tape.apply1(spy(Box::new(Add)), &[ab, c])?;
    let cbar = random::randn::<f64>(3, 4, &mut rng);
    let grads = tape.backward_with(out, cbar.view())?;

    // Reverse order: Add(ab, c), Add(e, b), Hadamard(a, d), Hadamard(x, x) in two
    // calls (one per occurrence of x), Exp, Sin. Every buffer's first contribution is
    // a write, later ones add: x gets W (slot 0 of Hadamard), then A, A, A.
    assert_eq!(
        *log.borrow(),
        vec![
            ("Add", 0, 'W'),
            ("Add", 1, 'W'),
            ("Add", 0, 'W'),
            ("Add", 1, 'W'),
            ("Hadamard", 0, 'W'),
            ("Hadamard", 1, 'S'),
            ("Hadamard", 0, 'W'),
            ("Hadamard", 1, 'S'),
            ("Hadamard", 0, 'S'),
            ("Hadamard", 1, 'A'),
            ("Exp", 0, 'A'),
            ("Sin", 0, 'A'),
        ]
    );

    // Analytic: x̄ = cos x ⊙ d ⊙ C̄ + exp x ⊙ C̄ + 2x ⊙ C̄.
    let dv = tape.value(d)?.to_owned();
    let expected = Zip::from(&x0)
        .and(&dv)
        .and(&cbar)
        .map_collect(|&x, &d, &c| x.cos() * d * c + x.exp() * c + 2.0 * x * c);
    assert_close(grads.get(x).unwrap().view(), expected.view(), 1e-13);
    assert!(grads.get(d).is_none());
    Ok(())
}

#[test]
fn caller_buffers_are_written_without_being_read() -> R {
    let mut rng = random::rng(15);
    let (w0, x0) = (
        random::randn::<f64>(4, 3, &mut rng),
        random::randn::<f64>(3, 7, &mut rng),
    );
    let mut tape = Tape::new();
    let w = tape.leaf(w0);
    let x = tape.leaf(x0);
    let unused = tape.leaf(random::randn::<f64>(2, 2, &mut rng));
    let z = tape.apply1(MatMul::nn(), &[w, x])?;
    let h = tape.apply1(Map(Sigmoid), &[z])?;
    let hw = tape.apply1(Hadamard, &[h, z])?;
    let hbar = random::randn::<f64>(4, 7, &mut rng);
    let grads = tape.backward_with(hw, hbar.view())?;

    // First write into NaN: the buffer's contents are never read.
    let mut gw = Array2::from_elem((4, 3), f64::NAN);
    // Accumulation: exactly the gradient is added.
    let mut gx = Array2::from_elem((3, 7), 0.5);
    // A leaf the output does not depend on: a first write is a zero fill.
    let mut gu = Array2::from_elem((2, 2), f64::NAN);
    tape.backward_into(
        &[(hw, hbar.view())],
        &mut [
            (w, Grad::Write(gw.view_mut())),
            (x, Grad::Add(gx.view_mut())),
            (unused, Grad::Write(gu.view_mut())),
        ],
    )?;
    assert_close(gw.view(), grads.get(w).unwrap().view(), 1e-14);
    let added = grads.get(x).unwrap() + 0.5;
    assert_close(gx.view(), added.view(), 1e-14);
    assert_eq!(gu, Array2::<f64>::zeros((2, 2)));
    assert_eq!(grads.get(unused), Some(&Array2::zeros((2, 2))));
    Ok(())
}

#[test]
fn errors_are_typed() -> R {
    let mut rng = random::rng(16);
    let mut tape = Tape::new();
    let mut other = Tape::<f64>::new();
    let x = tape.leaf(random::randn::<f64>(3, 5, &mut rng));
    let y = other.leaf(random::randn::<f64>(3, 5, &mut rng));

    // A Var of another tape, wherever it is used.
    assert_eq!(
        tape.apply1(Map(Tanh), &[y]),
        Err(Error::ForeignVar { op: "Tanh" })
    );
    assert!(matches!(tape.value(y), Err(Error::ForeignVar { .. })));
    assert!(matches!(tape.backward(y), Err(Error::ForeignVar { .. })));
    assert!(matches!(
        tape.function("f", &[y], &[x]),
        Err(Error::ForeignVar { .. })
    ));

    // A shape error at record time names the primitive; nothing is recorded.
    let err = tape.apply1(MatMul::nn(), &[x, x]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::ShapeMismatch {
                op: "MatMul(A·B)",
                lhs: Shape(3, 5),
                rhs: Shape(3, 5),
                ..
            }
        ),
        "{err}"
    );
    assert!(tape.is_empty());

    // A non-scalar output without a cotangent.
    let h = tape.apply1(Map(Tanh), &[x])?;
    assert_eq!(
        tape.backward(h).unwrap_err(),
        Error::NotScalar {
            op: "Tape::backward",
            got: Shape(3, 5)
        }
    );
    // A cotangent of the wrong shape.
    let bad = Array2::<f64>::zeros((5, 3));
    let err = tape.backward_with(h, bad.view()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::WrongShape {
                name: "cotangent",
                expected: Shape(3, 5),
                got: Shape(5, 3),
                ..
            }
        ),
        "{err}"
    );
    // A tangent of the wrong shape, and a tangent for a value that is not a leaf.
    assert!(matches!(
        tape.jvp(&[(x, bad.view())], &[h]),
        Err(Error::WrongShape {
            name: "tangent",
            ..
        })
    ));
    let t = Array2::<f64>::zeros((3, 5));
    assert!(matches!(
        tape.jvp(&[(h, t.view())], &[h]),
        Err(Error::InvalidArgument { .. })
    ));
    // A primitive with two outputs through apply1.
    assert!(matches!(
        tape.apply1(SinCos, &[x]),
        Err(Error::Arity {
            op: "SinCos",
            expected: 1,
            got: 2,
            ..
        })
    ));

    // A recorded function called on other shapes.
    let f = tape.function("tanh model", &[x], &[h])?;
    let wrong = Array2::<f64>::zeros((5, 3));
    let err = f.forward(&[wrong.view()]).unwrap_err();
    assert_eq!(
        err,
        Error::WrongShape {
            op: "tanh model",
            name: "input",
            of: "A",
            expected: Shape(3, 5),
            got: Shape(5, 3),
        }
    );
    // Recorded functions with inputs given twice or without outputs.
    assert!(matches!(
        tape.function("f", &[x, x], &[h]),
        Err(Error::InvalidArgument { op: "f", .. })
    ));
    assert!(matches!(
        tape.function("f", &[x], &[]),
        Err(Error::InvalidArgument { op: "f", .. })
    ));
    Ok(())
}

#[test]
fn forward_mode_matches_the_checker_and_the_adjoint() -> R {
    let mut rng = random::rng(17);
    let (x0, b0) = (
        random::randn::<f64>(3, 5, &mut rng),
        random::randn::<f64>(5, 4, &mut rng),
    );
    let mut tape = Tape::new();
    let (x, b) = (tape.leaf(x0.clone()), tape.leaf(b0.clone()));
    let out = fan_out(&mut tape, x, b)?;
    let model = tape.function("fan-out model", &[x, b], &[out])?;
    let (xdot, bdot) = (
        random::randn::<f64>(3, 5, &mut rng),
        random::randn::<f64>(5, 4, &mut rng),
    );
    let t = tape.jvp(&[(x, xdot.view()), (b, bdot.view())], &[out])?;
    // The checker proves the model's forward mode against finite differences...
    Checker::new()
        .check(&model, &[x0.view(), b0.view()])?
        .assert_passed();
    // ...and the tape's forward mode is the model's.
    let y = model.forward(&[x0.view(), b0.view()])?;
    let expected = model.jvp(
        &[x0.view(), b0.view()],
        &[y[0].view()],
        &[Some(xdot.view()), Some(bdot.view())],
    )?;
    assert_close(t[0].view(), expected[0].view(), 1e-13);
    // Adjoint identity ⟨C̄, Ċ⟩ = ⟨X̄, Ẋ⟩ + ⟨B̄, Ḃ⟩ between the tape's two modes.
    let cbar = random::randn::<f64>(3, 3, &mut rng);
    let g = tape.backward_with(out, cbar.view())?;
    let lhs = frob(cbar.view(), t[0].view());
    let rhs =
        frob(g.get(x).unwrap().view(), xdot.view()) + frob(g.get(b).unwrap().view(), bdot.view());
    assert!(
        (lhs - rhs).abs() <= 1e-12 * lhs.abs().max(1.0),
        "{lhs} vs {rhs}"
    );
    // A missing tangent is zero: only X moves.
    let tx = tape.jvp(&[(x, xdot.view())], &[out, b])?;
    let ex = model.jvp(
        &[x0.view(), b0.view()],
        &[y[0].view()],
        &[Some(xdot.view()), None],
    )?;
    assert_close(tx[0].view(), ex[0].view(), 1e-13);
    assert_eq!(tx[1], Array2::<f64>::zeros((5, 4)));
    Ok(())
}

/// One MLP layer `H = tanh(WX + b1ᵀ)` on the tape.
fn layer(tape: &mut Tape<f64>, w: Var, b: Var, x: Var) -> matgrad::Result<Var> {
    let z = tape.apply1(MatMul::nn(), &[w, x])?;
    let a = tape.apply1(AddBias, &[z, b])?;
    tape.apply1(Map(Tanh), &[a])
}

#[test]
fn mlp_layer_recorded_and_checked() -> R {
    let mut rng = random::rng(18);
    let (w0, b0, x0) = (
        random::randn::<f64>(4, 3, &mut rng),
        random::randn::<f64>(4, 1, &mut rng),
        random::randn::<f64>(3, 7, &mut rng),
    );
    let mut tape = Tape::new();
    let (w, b) = (tape.leaf(w0.clone()), tape.leaf(b0.clone()));
    let x = tape.constant(x0.clone());
    let h = layer(&mut tape, w, b, x)?;
    // As a function of the parameters, the data a constant...
    let of_params = tape
        .function("MLP layer (W, b)", &[w, b], &[h])?
        .with_input_names(&["W", "b"]);
    Checker::new()
        .check(&of_params, &[w0.view(), b0.view()])?
        .assert_passed();
    // ...and as a function of everything.
    let of_all = tape
        .function("MLP layer (W, b, X)", &[w, b, x], &[h])?
        .with_input_names(&["W", "b", "X"]);
    Checker::new()
        .check(&of_all, &[w0.view(), b0.view(), x0.view()])?
        .assert_passed();

    // The seed note's layer equations (11)–(14): Ā = (1 − H²) ⊙ H̄, W̄ = ĀXᵀ, b̄ = Ā1.
    let hbar = random::randn::<f64>(4, 7, &mut rng);
    let g = tape.backward_with(h, hbar.view())?;
    let hv = tape.value(h)?;
    let abar = Zip::from(&hv)
        .and(&hbar)
        .map_collect(|&h, &c| (1.0 - h * h) * c);
    assert_close(g.get(w).unwrap().view(), abar.dot(&x0.t()).view(), 1e-13);
    let bbar = abar
        .sum_axis(ndarray::Axis(1))
        .insert_axis(ndarray::Axis(1));
    assert_close(g.get(b).unwrap().view(), bbar.view(), 1e-13);
    Ok(())
}

#[test]
fn two_layers_and_a_recorded_model_applied_on_another_tape() -> R {
    let mut rng = random::rng(19);
    let params: Vec<Array2<f64>> = vec![
        random::randn(5, 3, &mut rng),
        random::randn(5, 1, &mut rng),
        random::randn(2, 5, &mut rng),
        random::randn(2, 1, &mut rng),
    ];
    let x0 = random::randn::<f64>(3, 6, &mut rng);
    let mut tape = Tape::new();
    let p: Vec<Var> = params.iter().map(|a| tape.leaf(a.clone())).collect();
    let x = tape.constant(x0);
    let h1 = layer(&mut tape, p[0], p[1], x)?;
    let h2 = layer(&mut tape, p[2], p[3], h1)?;
    let model = tape
        .function("two-layer MLP", &p, &[h2])?
        .with_input_names(&["W1", "b1", "W2", "b2"]);
    let views: Vec<ArrayView2<'_, f64>> = params.iter().map(|a| a.view()).collect();
    Checker::new().check(&model, &views)?.assert_passed();

    // The model as one node of another tape, between two more primitives.
    let mut outer = Tape::new();
    let q: Vec<Var> = params.iter().map(|a| outer.leaf(a.clone())).collect();
    let h = outer.apply(model.clone(), &q)?;
    assert_eq!(h.len(), 1);
    assert_close(outer.value(h[0])?, tape.value(h2)?, 0.0);
    let s = outer.apply1(Map(Square), &[h[0]])?;
    let hbar = random::randn::<f64>(2, 6, &mut rng);
    let go = outer.backward_with(s, hbar.view())?;
    // The same chain on the inner tape.
    let s_inner = tape.apply1(Map(Square), &[h2])?;
    let gi = tape.backward_with(s_inner, hbar.view())?;
    for (a, b) in q.iter().zip(&p) {
        assert_close(
            go.get(*a).unwrap().view(),
            gi.get(*b).unwrap().view(),
            1e-13,
        );
    }
    Ok(())
}

#[test]
fn release_unsaved_keeps_only_what_the_rules_read() -> R {
    let mut rng = random::rng(20);
    let (w0, b0, x0) = (
        random::randn::<f64>(4, 3, &mut rng),
        random::randn::<f64>(4, 1, &mut rng),
        random::randn::<f64>(3, 7, &mut rng),
    );
    let mut tape = Tape::new();
    let (w, b) = (tape.leaf(w0), tape.leaf(b0));
    let x = tape.constant(x0);
    let z = tape.apply1(MatMul::nn(), &[w, x])?;
    let a = tape.apply1(AddBias, &[z, b])?;
    let h = tape.apply1(Map(Tanh), &[a])?;
    let hbar = random::randn::<f64>(4, 7, &mut rng);
    let before = tape.backward_with(h, hbar.view())?;
    let held = tape.retained_elements();
    // MatMul reads X for W̄ (X needs no gradient, so W is not read); AddBias reads
    // nothing; Tanh reads its output H. Z and A (4×7 each) are released.
    let freed = tape.release_unsaved(&[])?;
    assert_eq!(freed, 2 * 28);
    assert_eq!(tape.retained_elements(), held - freed);
    assert_eq!(tape.released_elements(), freed);
    assert!(matches!(
        tape.value(z),
        Err(Error::Released {
            op: "Tape::value",
            ..
        })
    ));
    assert!(tape.value(h).is_ok());
    // The sweep runs on placeholders for what was released and gives the same result.
    let after = tape.backward_with(h, hbar.view())?;
    assert_eq!(after.get(w), before.get(w));
    assert_eq!(after.get(b), before.get(b));
    // Forward mode reads every value: a typed error, naming the primitive.
    let t = Array2::<f64>::ones((4, 3));
    assert!(matches!(
        tape.jvp(&[(w, t.view())], &[h]),
        Err(Error::Released {
            op: "MatMul(A·B)",
            ..
        })
    ));
    // So does recording on a released value.
    assert!(matches!(
        tape.apply1(Map(Exp), &[a]),
        Err(Error::Released { op: "Exp", .. })
    ));
    Ok(())
}

/// `(sin A, cos A)`: two differentiable outputs.
struct SinCos;

impl Rule<f64> for SinCos {
    fn name(&self) -> &'static str {
        "SinCos"
    }
    fn arity(&self) -> usize {
        1
    }
    fn outputs(&self) -> usize {
        2
    }
    fn shapes(&self, x: &[Shape]) -> matgrad::Result<Shapes> {
        Ok(smallvec![x[0], x[0]])
    }
    fn saves(&self, _wanted: &[bool]) -> Saves {
        Saves::NONE.output(0).output(1)
    }
    fn eval(
        &self,
        x: &[ArrayView2<'_, f64>],
        y: &mut [ArrayViewMut2<'_, f64>],
        _ws: &mut [f64],
    ) -> matgrad::Result<()> {
        let (s, c) = y.split_at_mut(1);
        Zip::from(&mut s[0])
            .and(&mut c[0])
            .and(&x[0])
            .for_each(|s, c, &a| (*s, *c) = a.sin_cos());
        Ok(())
    }
    fn pullback(
        &self,
        _x: &[ArrayView2<'_, f64>],
        y: &[ArrayView2<'_, f64>],
        ybar: &Partials<'_, '_, f64>,
        grads: &mut [Grad<'_, f64>],
        _ws: &mut [f64],
    ) -> matgrad::Result<()> {
        if let Some((g, acc)) = grads[0].target() {
            Zip::from(g)
                .and(&y[0])
                .and(&y[1])
                .and(&ybar.view(0))
                .and(&ybar.view(1))
                .for_each(|g, &s, &c, &sb, &cb| acc.store(g, c * sb - s * cb));
        }
        Ok(())
    }
    fn pushforward(
        &self,
        _x: &[ArrayView2<'_, f64>],
        y: &[ArrayView2<'_, f64>],
        xdot: &Partials<'_, '_, f64>,
        ydot: &mut [ArrayViewMut2<'_, f64>],
        _ws: &mut [f64],
    ) -> matgrad::Result<()> {
        let (s, c) = ydot.split_at_mut(1);
        Zip::from(&mut s[0])
            .and(&mut c[0])
            .and(&y[0])
            .and(&y[1])
            .and(&xdot.view(0))
            .for_each(|sd, cd, &s, &c, &a| {
                *sd = c * a;
                *cd = -s * a;
            });
        Ok(())
    }
}

/// `C = exp(A)` that keeps a second copy of `exp(A)` as a residual and reads only that.
struct ExpWithResidual;

impl Rule<f64> for ExpWithResidual {
    fn name(&self) -> &'static str {
        "ExpWithResidual"
    }
    fn arity(&self) -> usize {
        1
    }
    fn residuals(&self) -> usize {
        1
    }
    fn shapes(&self, x: &[Shape]) -> matgrad::Result<Shapes> {
        Ok(smallvec![x[0], x[0]])
    }
    fn saves(&self, _wanted: &[bool]) -> Saves {
        Saves::NONE.output(1)
    }
    fn eval(
        &self,
        x: &[ArrayView2<'_, f64>],
        y: &mut [ArrayViewMut2<'_, f64>],
        _ws: &mut [f64],
    ) -> matgrad::Result<()> {
        for yk in y.iter_mut() {
            Zip::from(yk).and(&x[0]).for_each(|y, &a| *y = a.exp());
        }
        Ok(())
    }
    fn pullback(
        &self,
        _x: &[ArrayView2<'_, f64>],
        y: &[ArrayView2<'_, f64>],
        ybar: &Partials<'_, '_, f64>,
        grads: &mut [Grad<'_, f64>],
        _ws: &mut [f64],
    ) -> matgrad::Result<()> {
        if let Some((g, acc)) = grads[0].target() {
            Zip::from(g)
                .and(&y[1])
                .and(&ybar.view(0))
                .for_each(|g, &r, &c| acc.store(g, r * c));
        }
        Ok(())
    }
    fn pushforward(
        &self,
        _x: &[ArrayView2<'_, f64>],
        y: &[ArrayView2<'_, f64>],
        xdot: &Partials<'_, '_, f64>,
        ydot: &mut [ArrayViewMut2<'_, f64>],
        _ws: &mut [f64],
    ) -> matgrad::Result<()> {
        Zip::from(&mut ydot[0])
            .and(&y[1])
            .and(&xdot.view(0))
            .for_each(|d, &r, &a| *d = r * a);
        Ok(())
    }
}

#[test]
fn several_outputs_and_residuals() -> R {
    let mut rng = random::rng(21);
    let x0 = random::randn::<f64>(3, 4, &mut rng);
    let mut tape = Tape::new();
    let x = tape.leaf(x0.clone());
    let sc = tape.apply(SinCos, &[x])?;
    assert_eq!(sc.len(), 2);
    // Only sin reaches the output: cos gets no cotangent (a missing one is zero).
    let e = tape.apply(ExpWithResidual, &[sc[0]])?;
    assert_eq!(e.len(), 1, "the residual is not a Var");
    let out = tape.apply1(Hadamard, &[e[0], x])?;
    let cbar = random::randn::<f64>(3, 4, &mut rng);
    let g = tape.backward_with(out, cbar.view())?;
    // d/dx [exp(sin x) x] = exp(sin x)(cos x · x + 1).
    let expected = Zip::from(&x0)
        .and(&cbar)
        .map_collect(|&x, &c| (x.sin().exp() * (x.cos() * x + 1.0)) * c);
    assert_close(g.get(x).unwrap().view(), expected.view(), 1e-13);

    // The model with both outputs of SinCos visible.
    let model = tape.function("sin/cos model", &[x], &[out, sc[1]])?;
    Checker::new().check(&model, &[x0.view()])?.assert_passed();

    // SinCos's rule reads both its outputs, ExpWithResidual's only its residual,
    // Hadamard both inputs (C of ExpWithResidual and x): only the output is released.
    let freed = tape.release_unsaved(&[])?;
    assert_eq!(freed, 12);
    assert!(matches!(tape.value(out), Err(Error::Released { .. })));
    let again = tape.backward_with(out, cbar.view())?;
    assert_eq!(again.get(x), g.get(x));
    Ok(())
}

#[test]
fn gradients_of_chosen_values_only() -> R {
    let mut rng = random::rng(22);
    let (w0, x0) = (
        random::randn::<f64>(4, 3, &mut rng),
        random::randn::<f64>(3, 5, &mut rng),
    );
    let log = Rc::new(RefCell::new(Vec::new()));
    let mut tape = Tape::new();
    let w = tape.leaf(w0.clone());
    let x = tape.leaf(x0.clone());
    let z = tape.apply1(
        Spy {
            inner: MatMul::nn(),
            log: Rc::clone(&log),
        },
        &[w, x],
    )?;
    let h = tape.apply1(Map(Sin), &[z])?;
    let hbar = random::randn::<f64>(4, 5, &mut rng);
    // Only W̄ and the intermediate Z̄: X's slot is skipped.
    let g = tape.backward_wrt(&[(h, hbar.view())], &[w, z])?;
    assert_eq!(
        *log.borrow(),
        vec![("MatMul(A·B)", 0, 'W'), ("MatMul(A·B)", 1, 'S')]
    );
    assert!(g.get(x).is_none());
    let zv = w0.dot(&x0);
    let zbar = Zip::from(&zv).and(&hbar).map_collect(|&z, &c| z.cos() * c);
    assert_close(g.get(z).unwrap().view(), zbar.view(), 1e-14);
    assert_close(g.get(w).unwrap().view(), zbar.dot(&x0.t()).view(), 1e-13);
    // A scalar output from a 1×1 product: cotangent 1.
    let ones = tape.constant(Array2::ones((4, 1)));
    let col = tape.apply1(MatMul::tn(), &[ones, h])?;
    let ones5 = tape.constant(Array2::ones((5, 1)));
    let total = tape.apply1(MatMul::nn(), &[col, ones5])?;
    let g = tape.backward(total)?;
    let sum_grad = Zip::from(&zv).map_collect(|&z| z.cos()).dot(&x0.t());
    assert_close(g.get(w).unwrap().view(), sum_grad.view(), 1e-13);
    assert_eq!(tape.value(total)?.dim(), (1, 1));
    Ok(())
}
