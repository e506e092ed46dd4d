//! The running examples of the seed note ("Backpropagation of derivatives"), each
//! recorded on a [`Tape`] from the crate's primitives, differentiated in reverse mode
//! ([`Tape::backward`]) and forward mode ([`Tape::jvp`]), compared with the note's
//! hand-derived formulas, and proven by the shared checker (finite differences, the
//! adjoint identity, …) on the recorded graph as a primitive ([`Tape::function`]).
//!
//! 1. Section 1: `f(x, y) = x²y` with `x = r cos θ`, `y = r sin θ`, a function of
//!    `(r, θ)` (each 1×1); the chain rule, eq. (2), gives `∂f/∂r` and `∂f/∂θ`.
//! 2. Section 2: `z = exp(sin(u²) log(u²))` through `v = u²`, `w = sin v`,
//!    `x = log v`, `y = wx`, `z = exp y`; eq. (5) gives `dz/du`.
//! 3. Section 5: the quadratic forms `c = xᵀAy` (`x̄ = Ay`, `Ā = xyᵀ`, `ȳ = Aᵀx`) and
//!    `c = xᵀAx` (`x̄ = (A + Aᵀ)x`, `Ā = xxᵀ`), where `x` is read twice and its
//!    gradient is the sum of both contributions (footnote 6).
//!
//! Run: `cargo run --release --example seed`

use matgrad::check::random;
use matgrad::prelude::*;
use ndarray::{arr2, Array2, ArrayView2};
use std::process::ExitCode;

type Res<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Largest absolute entrywise difference.
fn max_diff(a: ArrayView2<'_, f64>, b: ArrayView2<'_, f64>) -> f64 {
    a.iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// The gradient of `v`, which every requested leaf has.
fn grad(g: &Gradients<f64>, v: Var) -> Res<Array2<f64>> {
    Ok(g.get(v).ok_or("missing gradient")?.clone())
}

/// Proves a recorded function with the shared checker; prints the report and returns
/// whether it passed.
fn prove(model: &Recorded<f64>, at: &[ArrayView2<'_, f64>]) -> Res<bool> {
    let report = Checker::new().check(model, at)?;
    print!("{report}");
    Ok(report.passed())
}

/// Section 1: `f = x²y`, `x = r cos θ`, `y = r sin θ`.
fn polar(r0: f64, t0: f64) -> Res<bool> {
    println!("── Section 1: f(x, y) = x²y, x = r cos θ, y = r sin θ, at r = {r0}, θ = {t0}");
    let mut tape = Tape::new();
    let r = tape.leaf(arr2(&[[r0]]));
    let theta = tape.leaf(arr2(&[[t0]]));
    let cos = tape.apply1(Map(Cos), &[theta])?;
    let sin = tape.apply1(Map(Sin), &[theta])?;
    let x = tape.apply1(Hadamard, &[r, cos])?;
    let y = tape.apply1(Hadamard, &[r, sin])?;
    let x2 = tape.apply1(Map(Square), &[x])?;
    let f = tape.apply1(Hadamard, &[x2, y])?;

    let value = tape.value(f)?[(0, 0)];
    let g = tape.backward(f)?;
    let (rbar, tbar) = (grad(&g, r)?[(0, 0)], grad(&g, theta)?[(0, 0)]);
    let one = arr2(&[[1.0]]);
    let df_dr = tape.jvp(&[(r, one.view())], &[f])?[0][(0, 0)];
    let df_dt = tape.jvp(&[(theta, one.view())], &[f])?[0][(0, 0)];

    // Eq. (1) and (2): ∂f/∂x = 2xy, ∂f/∂y = x²; ∂x/∂r = cos θ, ∂y/∂r = sin θ,
    // ∂x/∂θ = −r sin θ, ∂y/∂θ = r cos θ.
    let (xv, yv) = (r0 * t0.cos(), r0 * t0.sin());
    let (fx, fy) = (2.0 * xv * yv, xv * xv);
    let hand_r = fx * t0.cos() + fy * t0.sin();
    let hand_t = fx * (-r0 * t0.sin()) + fy * (r0 * t0.cos());
    println!(
        "  f = {value:.12}   (x = {xv:.6}, y = {yv:.6}, x²y = {:.12})",
        xv * xv * yv
    );
    println!("  reverse (one sweep):   ∂f/∂r = {rbar:.12}   ∂f/∂θ = {tbar:.12}");
    println!("  forward (two sweeps):  ∂f/∂r = {df_dr:.12}   ∂f/∂θ = {df_dt:.12}");
    println!("  chain rule, eq. (2):   ∂f/∂r = {hand_r:.12}   ∂f/∂θ = {hand_t:.12}");
    let model = tape
        .function("f(r, θ) = x²y", &[r, theta], &[f])?
        .with_input_names(&["r", "θ"]);
    prove(&model, &[arr2(&[[r0]]).view(), arr2(&[[t0]]).view()])
}

/// Section 2: `z = exp(sin(u²) log(u²))`.
fn scalar_graph(u0: f64) -> Res<bool> {
    println!("── Section 2: z = exp(sin(u²) log(u²)) at u = {u0}");
    let mut tape = Tape::new();
    let u = tape.leaf(arr2(&[[u0]]));
    let v = tape.apply1(Map(Square), &[u])?;
    let w = tape.apply1(Map(Sin), &[v])?;
    let x = tape.apply1(Map(Log), &[v])?;
    let y = tape.apply1(Hadamard, &[w, x])?;
    let z = tape.apply1(Map(Exp), &[y])?;

    let value = tape.value(z)?[(0, 0)];
    // Reverse: ū = dz/du; the sweep also gives v̄ = w̄ cos v + x̄/v (v has two children).
    let g = tape.backward_wrt(&[(z, arr2(&[[1.0]]).view())], &[u, v, w, x, y])?;
    let bar = |var| grad(&g, var).map(|a| a[(0, 0)]);
    let (ubar, vbar, wbar, xbar, ybar) = (bar(u)?, bar(v)?, bar(w)?, bar(x)?, bar(y)?);
    // Forward: u̇ = 1 gives ż = dz/du, and every intermediate tangent on the way.
    let dots = tape.jvp(&[(u, arr2(&[[1.0]]).view())], &[v, w, x, y, z])?;
    let dot: Vec<f64> = dots.iter().map(|d| d[(0, 0)]).collect();
    // Eq. (5): dz/du = (∂v/∂u)((∂w/∂v)(∂y/∂w) + (∂x/∂v)(∂y/∂x))(∂z/∂y).
    let (vv, wv, xv) = (u0 * u0, (u0 * u0).sin(), (u0 * u0).ln());
    let hand = 2.0 * u0 * (vv.cos() * xv + wv / vv) * value;
    println!(
        "  z = {value:.12}   (v = {vv:.6}, w = {wv:.6}, x = {xv:.6}, y = {:.6})",
        wv * xv
    );
    println!(
        "  forward:  v̇ = {:.6}  ẇ = {:.6}  ẋ = {:.6}  ẏ = {:.6}  ż = {:.12}",
        dot[0], dot[1], dot[2], dot[3], dot[4]
    );
    println!(
        "  reverse:  ȳ = {ybar:.6}  x̄ = {xbar:.6}  w̄ = {wbar:.6}  v̄ = {vbar:.6}  ū = {ubar:.12}"
    );
    println!("  eq. (5):  dz/du = {hand:.12}");
    let model = tape
        .function("z(u) = exp(sin(u²) log(u²))", &[u], &[z])?
        .with_input_names(&["u"]);
    prove(&model, &[arr2(&[[u0]]).view()])
}

/// Section 5: `c = xᵀAy` and `c = xᵀAx`.
fn quadratic_forms() -> Res<bool> {
    let (n, m) = (4, 3);
    let mut rng = random::rng(5);
    let x0 = random::randn::<f64>(n, 1, &mut rng);
    let a0 = random::randn::<f64>(n, m, &mut rng);
    let y0 = random::randn::<f64>(m, 1, &mut rng);
    let (xd, ad, yd) = (
        random::randn::<f64>(n, 1, &mut rng),
        random::randn::<f64>(n, m, &mut rng),
        random::randn::<f64>(m, 1, &mut rng),
    );

    println!("── Section 5: c = xᵀAy, x {n}×1, A {n}×{m}, y {m}×1 (random, seed 5)");
    let mut tape = Tape::new();
    let (x, a, y) = (
        tape.leaf(x0.clone()),
        tape.leaf(a0.clone()),
        tape.leaf(y0.clone()),
    );
    let ay = tape.apply1(MatMul::nn(), &[a, y])?;
    let c = tape.apply1(MatMul::tn(), &[x, ay])?;
    let value = tape.value(c)?[(0, 0)];
    let g = tape.backward(c)?;
    let (xbar, abar, ybar) = (grad(&g, x)?, grad(&g, a)?, grad(&g, y)?);
    // By hand: C = xᵀ(Ay) gives x̄ = (Ay)c̄ and (Ay)‾ = xc̄; then Ā = (Ay)‾yᵀ, ȳ = Aᵀ(Ay)‾.
    let (hx, ha, hy) = (a0.dot(&y0), x0.dot(&y0.t()), a0.t().dot(&x0));
    let cdot = tape.jvp(&[(x, xd.view()), (a, ad.view()), (y, yd.view())], &[c])?[0][(0, 0)];
    let hand_dot =
        (xd.t().dot(&a0).dot(&y0) + x0.t().dot(&ad).dot(&y0) + x0.t().dot(&a0).dot(&yd))[(0, 0)];
    println!(
        "  c = {value:.12}   (xᵀAy by ndarray: {:.12})",
        x0.t().dot(&a0).dot(&y0)[(0, 0)]
    );
    println!(
        "  reverse vs x̄ = Ay, Ā = xyᵀ, ȳ = Aᵀx: max differences {:.1e}, {:.1e}, {:.1e}",
        max_diff(xbar.view(), hx.view()),
        max_diff(abar.view(), ha.view()),
        max_diff(ybar.view(), hy.view())
    );
    println!("  x̄ᵀ = {:.6}", xbar.t());
    println!("  forward, random (ẋ, Ȧ, ẏ): ċ = {cdot:.12}   ẋᵀAy + xᵀȦy + xᵀAẏ = {hand_dot:.12}");
    println!(
        "  adjoint: ⟨x̄,ẋ⟩ + ⟨Ā,Ȧ⟩ + ⟨ȳ,ẏ⟩ = {:.12}",
        (&xbar * &xd).sum() + (&abar * &ad).sum() + (&ybar * &yd).sum()
    );
    let model = tape
        .function("c = xᵀAy", &[x, a, y], &[c])?
        .with_input_names(&["x", "A", "y"]);
    let ok1 = prove(&model, &[x0.view(), a0.view(), y0.view()])?;

    println!("── Section 5: c = xᵀAx, x {n}×1, A {n}×{n}");
    let s0 = random::randn::<f64>(n, n, &mut rng);
    let sd = random::randn::<f64>(n, n, &mut rng);
    let mut tape = Tape::new();
    let (x, a) = (tape.leaf(x0.clone()), tape.leaf(s0.clone()));
    let ax = tape.apply1(MatMul::nn(), &[a, x])?;
    let c = tape.apply1(MatMul::tn(), &[x, ax])?;
    let value = tape.value(c)?[(0, 0)];
    let g = tape.backward(c)?;
    let (xbar, abar) = (grad(&g, x)?, grad(&g, a)?);
    // x is read twice (as xᵀ and inside Ax): x̄ = Axc̄ + Aᵀxc̄ = (A + Aᵀ)x; Ā = xxᵀ.
    let hx = (&s0 + &s0.t()).dot(&x0);
    let ha = x0.dot(&x0.t());
    let cdot = tape.jvp(&[(x, xd.view()), (a, sd.view())], &[c])?[0][(0, 0)];
    let hand_dot =
        (xd.t().dot(&s0).dot(&x0) + x0.t().dot(&sd).dot(&x0) + x0.t().dot(&s0).dot(&xd))[(0, 0)];
    println!(
        "  c = {value:.12}   (xᵀAx by ndarray: {:.12})",
        x0.t().dot(&s0).dot(&x0)[(0, 0)]
    );
    println!(
        "  reverse vs x̄ = (A + Aᵀ)x, Ā = xxᵀ: max differences {:.1e}, {:.1e}",
        max_diff(xbar.view(), hx.view()),
        max_diff(abar.view(), ha.view())
    );
    println!("  x̄ᵀ = {:.6}", xbar.t());
    println!("  forward, random (ẋ, Ȧ): ċ = {cdot:.12}   ẋᵀAx + xᵀȦx + xᵀAẋ = {hand_dot:.12}");
    let model = tape
        .function("c = xᵀAx", &[x, a], &[c])?
        .with_input_names(&["x", "A"]);
    let ok2 = prove(&model, &[x0.view(), s0.view()])?;
    Ok(ok1 && ok2)
}

fn main() -> Res<ExitCode> {
    let mut ok = polar(1.5, 0.7)?;
    ok &= scalar_graph(1.3)?;
    ok &= quadratic_forms()?;
    if ok {
        println!("every recorded function passed the checker");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("a gradient check FAILED");
        Ok(ExitCode::FAILURE)
    }
}
