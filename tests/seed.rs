//! The checks the seed note asks its reader to do, done with the crate's primitives.

use matgrad::blas::gemm;
use matgrad::check::{random, Checker, Mistake};
use matgrad::prelude::*;
use ndarray::{array, Array2, ArrayView2, ArrayViewMut2};

/// `C = AᵀB` with a candidate formula for `Ā`; `B̄ = AC̄` is right.
struct AtB {
    /// `Ā = op(X)·op(Y)` with `X, Y ∈ {B, C̄}`.
    first_is_b: bool,
    t1: Trans,
    t2: Trans,
}

impl AtB {
    /// `(formula, primitive name)`: names are `&'static str`, so the eight are spelled out.
    fn names(&self) -> (&'static str, &'static str) {
        use Trans::{No, Yes};
        match (self.first_is_b, self.t1, self.t2) {
            (true, No, No) => ("Ā = BC̄", "AᵀB with Ā = BC̄"),
            (true, No, Yes) => ("Ā = BC̄ᵀ", "AᵀB with Ā = BC̄ᵀ"),
            (true, Yes, No) => ("Ā = BᵀC̄", "AᵀB with Ā = BᵀC̄"),
            (true, Yes, Yes) => ("Ā = BᵀC̄ᵀ", "AᵀB with Ā = BᵀC̄ᵀ"),
            (false, No, No) => ("Ā = C̄B", "AᵀB with Ā = C̄B"),
            (false, No, Yes) => ("Ā = C̄Bᵀ", "AᵀB with Ā = C̄Bᵀ"),
            (false, Yes, No) => ("Ā = C̄ᵀB", "AᵀB with Ā = C̄ᵀB"),
            (false, Yes, Yes) => ("Ā = C̄ᵀBᵀ", "AᵀB with Ā = C̄ᵀBᵀ"),
        }
    }
    fn formula(&self) -> String {
        self.names().0.to_string()
    }
}

impl Rule<f64> for AtB {
    fn name(&self) -> &'static str {
        self.names().1
    }
    fn arity(&self) -> usize {
        2
    }
    fn shapes(&self, x: &[Shape]) -> Result<Shapes, Error> {
        Rule::<f64>::shapes(&MatMul::tn(), x)
    }
    fn eval(
        &self,
        x: &[ArrayView2<'_, f64>],
        y: &mut [ArrayViewMut2<'_, f64>],
        ws: &mut [f64],
    ) -> Result<(), Error> {
        MatMul::tn().eval(x, y, ws)
    }
    fn pullback(
        &self,
        x: &[ArrayView2<'_, f64>],
        _y: &[ArrayView2<'_, f64>],
        ybar: &Partials<'_, '_, f64>,
        grads: &mut [Grad<'_, f64>],
        _ws: &mut [f64],
    ) -> Result<(), Error> {
        let cbar = ybar.view(0);
        if let Some((g, acc)) = grads[0].target() {
            let (b, cb) = (x[1].view(), cbar.view());
            let (p, q) = if self.first_is_b { (b, cb) } else { (cb, b) };
            // A candidate whose factors do not chain, or whose product has the wrong
            // shape, is a shape error of GEMM.
            gemm(g, acc, self.t1.view(p), self.t2.view(q), 1.0)?;
        }
        if let Some((g, acc)) = grads[1].target() {
            gemm(g, acc, x[0].view(), cbar, 1.0)?;
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
        MatMul::tn().pushforward(x, y, xdot, ydot, ws)
    }
}

fn candidates() -> Vec<AtB> {
    let mut v = Vec::new();
    for first_is_b in [true, false] {
        for t1 in [Trans::No, Trans::Yes] {
            for t2 in [Trans::No, Trans::Yes] {
                v.push(AtB { first_is_b, t1, t2 });
            }
        }
    }
    v
}

#[test]
fn of_the_eight_candidates_for_a_transpose_b_only_b_cbar_transpose_is_right() {
    // Non-square, all dimensions different: A is k×m, B is k×n.
    let mut rng = random::rng(5);
    let a = random::randn::<f64>(4, 3, &mut rng);
    let b = random::randn::<f64>(4, 5, &mut rng);
    let mut passing = Vec::new();
    let mut unformed = 0;
    for cand in candidates() {
        let r = match Checker::new().check(&cand, &[a.view(), b.view()]) {
            Ok(r) => r,
            Err(e) => panic!("{}: unexpected error {e}", cand.formula()),
        };
        match &r.inputs[0].pullback_error {
            // Most candidates cannot even be formed: the dimensions do not chain.
            Some(Error::ShapeMismatch { .. }) => unformed += 1,
            // C̄Bᵀ chains, to m×k: the transpose of A's shape.
            Some(e @ Error::WrongShape { .. }) => {
                assert_eq!(cand.formula(), "Ā = C̄Bᵀ", "{e}");
                assert_eq!(r.mistake(0), Some(Mistake::TransposedShape), "{r}");
            }
            Some(e) => panic!("{}: unexpected error {e}", cand.formula()),
            None if r.passed() => passing.push(cand.formula()),
            None => panic!("{}: right shape, wrong values?\n{r}", cand.formula()),
        }
        assert_eq!(r.passed(), r.inputs[0].pullback_error.is_none(), "{r}");
    }
    assert_eq!(passing, vec!["Ā = BC̄ᵀ".to_string()]);
    assert_eq!(unformed, 6);

    // With square matrices every candidate has the right shape; only values decide.
    let a = random::randn::<f64>(4, 4, &mut rng);
    let b = random::randn::<f64>(4, 4, &mut rng);
    let passing: Vec<String> = candidates()
        .into_iter()
        .filter(|c| {
            let r = Checker::new().check(c, &[a.view(), b.view()]).unwrap();
            assert!(r.inputs[0].pullback_error.is_none(), "{r}");
            r.passed()
        })
        .map(|c| c.formula())
        .collect();
    assert_eq!(passing, vec!["Ā = BC̄ᵀ".to_string()]);
}

fn quad(x: &Array2<f64>, a: &Array2<f64>, y: &Array2<f64>) -> f64 {
    x.t().dot(a).dot(y)[(0, 0)]
}

#[test]
fn quadratic_form_x_transpose_a_y_by_chaining_matmul() {
    let mut rng = random::rng(6);
    let x = random::randn::<f64>(4, 1, &mut rng);
    let a = random::randn::<f64>(4, 3, &mut rng);
    let y = random::randn::<f64>(3, 1, &mut rng);
    // t = xᵀA (1×3), c = t·y (1×1).
    let t = MatMul::tn().apply([x.view(), a.view()]).unwrap();
    let c = MatMul::nn()
        .apply([Arg::from(t.value()), Arg::from(&y)])
        .unwrap();
    assert!((c.value()[(0, 0)] - quad(&x, &a, &y)).abs() < 1e-12);
    let cbar = array![[1.0]];
    let [tbar, ybar] = c.backward(cbar.view()).unwrap();
    let [xbar, abar] = t.backward(tbar.view()).unwrap();
    // The rules derived by hand: x̄ = Ay, Ā = xyᵀ, ȳ = Aᵀx.
    approx::assert_abs_diff_eq!(xbar, a.dot(&y), epsilon = 1e-12);
    approx::assert_abs_diff_eq!(abar, x.dot(&y.t()), epsilon = 1e-12);
    approx::assert_abs_diff_eq!(ybar, a.t().dot(&x), epsilon = 1e-12);
    // And numerically, element by element.
    let h = 1e-6;
    for i in 0..4 {
        for j in 0..3 {
            let (mut ap, mut am) = (a.clone(), a.clone());
            ap[(i, j)] += h;
            am[(i, j)] -= h;
            let fd = (quad(&x, &ap, &y) - quad(&x, &am, &y)) / (2.0 * h);
            assert!(
                (fd - abar[(i, j)]).abs() < 1e-8,
                "Ā[{i},{j}]: {fd} vs {}",
                abar[(i, j)]
            );
        }
    }
}

#[test]
fn quadratic_form_x_transpose_a_x_sums_both_uses_of_x() {
    let mut rng = random::rng(7);
    let x = random::randn::<f64>(4, 1, &mut rng);
    let a = random::randn::<f64>(4, 4, &mut rng);
    let t = MatMul::tn().apply([x.view(), a.view()]).unwrap();
    let c = MatMul::nn()
        .apply([Arg::from(t.value()), Arg::from(&x)])
        .unwrap();
    // x feeds two children: its gradient is the sum over both (seed, footnote 6),
    // gathered in one buffer: the first child writes it, the second adds to it. The
    // buffers start as NaN, so a first write that read them would show.
    let mut xbar = Array2::<f64>::from_elem((4, 1), f64::NAN);
    let mut abar = Array2::<f64>::from_elem((4, 4), f64::NAN);
    let mut tbar = Array2::<f64>::from_elem((1, 4), f64::NAN);
    c.backward_into(
        &[Some(array![[1.0]].view())],
        &mut [Grad::Write(tbar.view_mut()), Grad::Write(xbar.view_mut())],
        None,
    )
    .unwrap();
    t.backward_into(
        &[Some(tbar.view())],
        &mut [Grad::Add(xbar.view_mut()), Grad::Write(abar.view_mut())],
        None,
    )
    .unwrap();
    approx::assert_abs_diff_eq!(xbar, (&a + &a.t()).dot(&x), epsilon = 1e-12);
    approx::assert_abs_diff_eq!(abar, x.dot(&x.t()), epsilon = 1e-12);
    let h = 1e-6;
    for i in 0..4 {
        let (mut xp, mut xm) = (x.clone(), x.clone());
        xp[(i, 0)] += h;
        xm[(i, 0)] -= h;
        let fd = (quad(&xp, &a, &xp) - quad(&xm, &a, &xm)) / (2.0 * h);
        assert!(
            (fd - xbar[(i, 0)]).abs() < 1e-8,
            "x̄[{i}]: {fd} vs {}",
            xbar[(i, 0)]
        );
    }
}

/// `z = exp(sin(u²)·log(u²))` for a column of values of `u`.
fn z_of(u: f64) -> f64 {
    ((u * u).sin() * (u * u).ln()).exp()
}

#[test]
fn scalar_example_forward_and_reverse_mode_agree_with_each_other_and_finite_differences() {
    let u = array![[0.7], [1.3], [-2.1], [0.45]];
    // v = u², w = sin v, x = log v, y = w ⊙ x, z = exp y.
    let v = Map(Square).apply([u.view()]).unwrap();
    let w = Map(Sin).apply([v.value()]).unwrap();
    let x = Map(Log).apply([v.value()]).unwrap();
    let y = Hadamard.apply([w.value(), x.value()]).unwrap();
    let z = Map(Exp).apply([y.value()]).unwrap();
    for (zi, ui) in z.value().iter().zip(u.iter()) {
        assert!((zi - z_of(*ui)).abs() < 1e-14 * zi.abs().max(1.0));
    }

    // Forward mode: u̇ = 1 gives ż = ∂z/∂u for every entry.
    let udot = Array2::<f64>::ones(u.raw_dim());
    let vdot = v.jvp([udot.view()]).unwrap();
    let wdot = w.jvp([vdot.view()]).unwrap();
    let xdot = x.jvp([vdot.view()]).unwrap();
    let ydot = y.jvp([wdot.view(), xdot.view()]).unwrap();
    let zdot = z.jvp([ydot.view()]).unwrap();

    // Reverse mode: z̄ = 1; v has two children, so v̄ accumulates w̄cos v + x̄/v.
    let zbar = Array2::<f64>::ones(u.raw_dim());
    let [ybar] = z.backward(zbar.view()).unwrap();
    let [wbar, xbar] = y.backward(ybar.view()).unwrap();
    let [mut vbar] = w.backward(wbar.view()).unwrap();
    x.backward_add(xbar.view(), &mut [Some(vbar.view_mut())])
        .unwrap();
    let [ubar] = v.backward(vbar.view()).unwrap();

    let h = 1e-6;
    for i in 0..u.nrows() {
        let ui = u[(i, 0)];
        let fd = (z_of(ui + h) - z_of(ui - h)) / (2.0 * h);
        let (f, r) = (zdot[(i, 0)], ubar[(i, 0)]);
        assert!(
            (f - r).abs() <= 1e-13 * f.abs().max(1.0),
            "u = {ui}: forward {f} vs reverse {r}"
        );
        assert!(
            (f - fd).abs() <= 1e-7 * f.abs().max(1.0),
            "u = {ui}: forward {f} vs finite difference {fd}"
        );
        // The closed form from the seed: ∂z/∂u = z (x cos v + w / v) 2u.
        let (vi, wi, xi) = (ui * ui, (ui * ui).sin(), (ui * ui).ln());
        let exact = z_of(ui) * (xi * vi.cos() + wi / vi) * 2.0 * ui;
        assert!(
            (f - exact).abs() <= 1e-12 * exact.abs().max(1.0),
            "u = {ui}: {f} vs {exact}"
        );
    }
}
