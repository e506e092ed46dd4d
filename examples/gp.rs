//! Gaussian-process regression on monthly Mauna Loa CO₂, 1980–2001 (`data/`): fits the
//! hyperparameters of a squared-exponential kernel by climbing the log marginal
//! likelihood, with the gradient obtained by chaining matgrad's primitives in reverse.
//!
//! ```text
//! log p(y | x, θ) = −½ yᵀK⁻¹y − Σᵢ log Lᵢᵢ − (n/2) log 2π,   K = LLᵀ,
//! K = σ_f² exp(−(x − x')²/(2ℓ²)) + σ_n² I,   θ = (log σ_f², log ℓ, log σ_n²).
//! ```
//!
//! Forward: `L = Cholesky(K)`, `α = ChoSolve(L, y) = K⁻¹y`, `q = MatMul(yᵀα)`,
//! `c = CholLogDet(L) = 2Σ log Lᵢᵢ`. Reverse: `q̄ = c̄ = −½`; `ᾱ` from MatMul; ChoSolve
//! writes `L̄` first and CholLogDet adds into it; Cholesky (symmetric convention, since
//! `K` is built symmetric) gives `K̄`; and `θ̄ᵢ = ⟨K̄, ∂K/∂θᵢ⟩` elementwise. The gradient
//! is proven by the shared checker (finite differences, and the adjoint identity
//! against the same chain in forward mode) before Adam uses it.
//!
//! Run: `cargo run --release --example gp`

use matgrad::prelude::*;
use ndarray::{array, Array2, ArrayView2, ArrayViewMut2, Zip};
use std::process::ExitCode;
use std::time::Instant;

const DATA: &str = include_str!("../data/co2_monthly.csv");

/// Central-difference step on θ. Richardson extrapolation over `h` and `h/2` cancels
/// the `h²` error, so the step can be large enough to keep rounding in `log p` small.
const FD_STEP: f64 = 1e-3;

const STEPS: usize = 300;
const PRINT_EVERY: usize = 20;
const LEARNING_RATE: f64 = 0.05;

/// A column standardised to mean 0 and standard deviation 1, with what undoes it.
struct Standardised {
    values: Array2<f64>,
    mean: f64,
    sd: f64,
}

fn standardise(v: &[f64]) -> Standardised {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let sd = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    let values = Array2::from_shape_fn((v.len(), 1), |(i, _)| (v[i] - mean) / sd);
    Standardised { values, mean, sd }
}

/// The `time` and `co2_ppm` columns of the CSV.
fn load() -> std::result::Result<(Vec<f64>, Vec<f64>), String> {
    let mut lines = DATA.lines();
    let header: Vec<&str> = lines.next().ok_or("empty data file")?.split(',').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .ok_or(format!("no column {name}"))
    };
    let (t, c) = (col("time")?, col("co2_ppm")?);
    let (mut time, mut co2) = (Vec::new(), Vec::new());
    for (i, line) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split(',').collect();
        let num = |j: usize| -> std::result::Result<f64, String> {
            let s = fields
                .get(j)
                .ok_or(format!("line {}: too few fields", i + 2))?;
            s.trim()
                .parse()
                .map_err(|e| format!("line {}: {s:?}: {e}", i + 2))
        };
        time.push(num(t)?);
        co2.push(num(c)?);
    }
    Ok((time, co2))
}

/// The log marginal likelihood and its gradient with respect to θ.
fn log_likelihood(
    sq_dist: &Array2<f64>,
    y: &Array2<f64>,
    theta: [f64; 3],
) -> matgrad::Result<(f64, [f64; 3])> {
    let [log_sf2, log_ell, log_sn2] = theta;
    let (sf2, ell2, sn2) = (log_sf2.exp(), (2.0 * log_ell).exp(), log_sn2.exp());
    let e = sq_dist.mapv(|d| (-d / (2.0 * ell2)).exp());
    let mut k = &e * sf2;
    k.diag_mut().mapv_inplace(|v| v + sn2);

    // L and α are passed on shared (a reference count, no copy).
    let chol = Cholesky::new().apply([k.view()])?;
    let alpha = ChoSolve.apply([Arg::from(chol.value()), Arg::from(y)])?;
    let quad = MatMul::tn().apply([Arg::from(y), Arg::from(alpha.value())])?;
    let logdet = CholLogDet.apply([chol.value()])?;
    let n = y.nrows() as f64;
    let value = -0.5 * quad.value()[(0, 0)]
        - 0.5 * logdet.value()[(0, 0)]
        - 0.5 * n * std::f64::consts::TAU.ln();

    // Reverse sweep, by hand (a tape would do this). Each gradient buffer gets one
    // first write (`Grad::Write`, its contents not read) and any later writer adds.
    let minus_half = array![[-0.5]];
    let mut alpha_bar = Array2::zeros(y.dim());
    quad.backward_into(
        &[Some(minus_half.view())],
        &mut [Grad::Skip, Grad::Write(alpha_bar.view_mut())],
        None,
    )?;
    // L feeds both the solve and the log-determinant: its gradient is the sum of both.
    let mut l_bar = Array2::zeros(chol.value().dim());
    alpha.backward_into(
        &[Some(alpha_bar.view())],
        &mut [Grad::Write(l_bar.view_mut()), Grad::Skip],
        None,
    )?;
    logdet.backward_into(
        &[Some(minus_half.view())],
        &mut [Grad::Add(l_bar.view_mut())],
        None,
    )?;
    let [k_bar] = chol.backward(l_bar.view())?;

    // ∂K/∂log σ_f² = σ_f²E, ∂K/∂log ℓ = σ_f²E ⊙ D/ℓ², ∂K/∂log σ_n² = σ_n²I.
    let mut dot_e = 0.0;
    let mut dot_ed = 0.0;
    Zip::from(&k_bar)
        .and(&e)
        .and(sq_dist)
        .for_each(|&g, &e, &d| {
            dot_e += g * e;
            dot_ed += g * e * d;
        });
    let grad = [sf2 * dot_e, sf2 * dot_ed / ell2, sn2 * k_bar.diag().sum()];
    Ok((value, grad))
}

/// The log marginal likelihood as a primitive of θ (a 3×1 column), so that the shared
/// checker can prove the chained gradient: its reverse rule is the chain above, its
/// forward rule chains the primitives' `jvp`s, and the checker compares both with
/// finite differences and with each other (the adjoint identity).
struct LogMarginal<'d> {
    sq_dist: &'d Array2<f64>,
    y: &'d Array2<f64>,
}

const NAME: &str = "GP log marginal likelihood";

impl LogMarginal<'_> {
    fn theta(x: &[ArrayView2<'_, f64>]) -> [f64; 3] {
        [x[0][(0, 0)], x[0][(1, 0)], x[0][(2, 0)]]
    }
}

impl Rule<f64> for LogMarginal<'_> {
    fn name(&self) -> &'static str {
        NAME
    }
    fn arity(&self) -> usize {
        1
    }
    fn input_name(&self, _input: usize) -> &'static str {
        "θ"
    }
    fn shapes(&self, x: &[Shape]) -> matgrad::Result<Shapes> {
        if x[0] != Shape(3, 1) {
            return Err(Error::WrongShape {
                op: NAME,
                name: "input",
                of: "θ",
                expected: Shape(3, 1),
                got: x[0],
            });
        }
        Ok(smallvec![Shape(1, 1)])
    }
    fn saves(&self, _wanted: &[bool]) -> Saves {
        Saves::NONE.input(0)
    }
    fn eval(
        &self,
        x: &[ArrayView2<'_, f64>],
        y: &mut [ArrayViewMut2<'_, f64>],
        _ws: &mut [f64],
    ) -> matgrad::Result<()> {
        let (value, _) = log_likelihood(self.sq_dist, self.y, Self::theta(x))?;
        y[0][(0, 0)] = value;
        Ok(())
    }
    fn pullback(
        &self,
        x: &[ArrayView2<'_, f64>],
        _y: &[ArrayView2<'_, f64>],
        ybar: &Partials<'_, '_, f64>,
        grads: &mut [Grad<'_, f64>],
        _ws: &mut [f64],
    ) -> matgrad::Result<()> {
        let Some((mut g, acc)) = grads[0].target() else {
            return Ok(());
        };
        let (_, grad) = log_likelihood(self.sq_dist, self.y, Self::theta(x))?;
        let cbar = ybar.view(0)[(0, 0)];
        for (i, gi) in grad.into_iter().enumerate() {
            acc.store(&mut g[(i, 0)], gi * cbar);
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
    ) -> matgrad::Result<()> {
        let [log_sf2, log_ell, log_sn2] = Self::theta(x);
        let (sf2, ell2, sn2) = (log_sf2.exp(), (2.0 * log_ell).exp(), log_sn2.exp());
        let t = xdot.view(0);
        let (t_sf2, t_ell, t_sn2) = (t[(0, 0)], t[(1, 0)], t[(2, 0)]);
        let e = self.sq_dist.mapv(|d| (-d / (2.0 * ell2)).exp());
        let mut k = &e * sf2;
        k.diag_mut().mapv_inplace(|v| v + sn2);
        // K̇ = Σᵢ θ̇ᵢ ∂K/∂θᵢ, then the primitives' forward-mode rules in order; the
        // data y has no tangent (`None`).
        let mut k_dot = Zip::from(&e)
            .and(self.sq_dist)
            .map_collect(|&e, &d| sf2 * e * (t_sf2 + t_ell * d / ell2));
        k_dot.diag_mut().mapv_inplace(|v| v + sn2 * t_sn2);
        let chol = Cholesky::new().apply([k.view()])?;
        let l_dot = chol.jvp([k_dot.view()])?;
        let alpha = ChoSolve.apply([Arg::from(chol.value()), Arg::from(self.y)])?;
        let alpha_dot = alpha.jvp_all(&[Some(l_dot.view()), None])?.swap_remove(0);
        let quad = MatMul::tn().apply([Arg::from(self.y), Arg::from(alpha.value())])?;
        let quad_dot = quad
            .jvp_all(&[None, Some(alpha_dot.view())])?
            .swap_remove(0);
        let logdet_dot = CholLogDet.apply([chol.value()])?.jvp([l_dot.view()])?;
        ydot[0][(0, 0)] = -0.5 * (quad_dot[(0, 0)] + logdet_dot[(0, 0)]);
        Ok(())
    }
}

/// Adam ascent on θ, printing the log likelihood as it climbs.
fn fit(
    sq_dist: &Array2<f64>,
    y: &Array2<f64>,
    mut theta: [f64; 3],
) -> matgrad::Result<([f64; 3], f64, [f64; 3])> {
    let (b1, b2, eps) = (0.9, 0.999, 1e-8);
    let (mut m, mut v) = ([0.0; 3], [0.0; 3]);
    for step in 1..=STEPS {
        let (value, grad) = log_likelihood(sq_dist, y, theta)?;
        if step == 1 || step % PRINT_EVERY == 0 {
            println!("  step {step:>4}  log p(y|x,θ) = {value:>12.4}  θ = {theta:>8.4?}");
        }
        for i in 0..3 {
            m[i] = b1 * m[i] + (1.0 - b1) * grad[i];
            v[i] = b2 * v[i] + (1.0 - b2) * grad[i] * grad[i];
            let m_hat = m[i] / (1.0 - b1.powi(step as i32));
            let v_hat = v[i] / (1.0 - b2.powi(step as i32));
            theta[i] += LEARNING_RATE * m_hat / (v_hat.sqrt() + eps);
        }
    }
    let (value, grad) = log_likelihood(sq_dist, y, theta)?;
    Ok((theta, value, grad))
}

fn main() -> std::result::Result<ExitCode, Box<dyn std::error::Error>> {
    let start = Instant::now();
    let (time, co2) = load()?;
    let (x, y) = (standardise(&time), standardise(&co2));
    let n = time.len();
    println!(
        "Mauna Loa CO₂, {n} monthly means, decimal years {:.2}–{:.2}: {:.1} ± {:.1} ppm (standardised for the fit)",
        time[0],
        time[n - 1],
        y.mean,
        y.sd
    );
    let xs = x.values.column(0);
    let sq_dist = Array2::from_shape_fn((n, n), |(i, j)| (xs[i] - xs[j]).powi(2));

    let theta0 = [0.0, 0.0, (0.1f64).ln()];
    let gp = LogMarginal {
        sq_dist: &sq_dist,
        y: &y.values,
    };
    let at = array![[theta0[0]], [theta0[1]], [theta0[2]]];
    let report = Checker::new().step(FD_STEP).check(&gp, &[at.view()])?;
    print!("{report}");
    if !report.passed() {
        eprintln!("gradient check FAILED");
        return Ok(ExitCode::FAILURE);
    }

    println!("Adam ascent, learning rate {LEARNING_RATE}, {STEPS} steps");
    let (theta, value, grad) = fit(&sq_dist, &y.values, theta0)?;
    let grad_norm = grad.iter().map(|g| g * g).sum::<f64>().sqrt();
    println!("  final      log p(y|x,θ) = {value:>12.4}  |∇θ| = {grad_norm:.2e}");
    let (sf, ell, sn) = (
        (theta[0] / 2.0).exp(),
        theta[1].exp(),
        (theta[2] / 2.0).exp(),
    );
    println!("fitted hyperparameters (standardised units → data units):");
    println!("  signal sd σ_f    = {sf:.4} → {:.3} ppm", sf * y.sd);
    println!("  length scale ℓ   = {ell:.4} → {:.3} years", ell * x.sd);
    println!("  noise sd σ_n     = {sn:.4} → {:.3} ppm", sn * y.sd);
    println!("  (x mean {:.2}, sd {:.3} years)", x.mean, x.sd);
    println!("done in {:.2} s", start.elapsed().as_secs_f64());
    Ok(ExitCode::SUCCESS)
}
