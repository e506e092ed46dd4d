//! Gaussian-process regression on monthly Mauna Loa CO₂, 1980–2001 (`data/`): fits the
//! hyperparameters of a squared-exponential kernel by climbing the log marginal
//! likelihood, with the gradient from a reverse sweep over the recorded computation.
//!
//! ```text
//! log p(y | x, θ) = −½ yᵀK⁻¹y − Σᵢ log Lᵢᵢ − (n/2) log 2π,   K = LLᵀ,
//! K = σ_f² exp(−(x − x')²/(2ℓ²)) + σ_n² I,   θ = (log σ_f², log ℓ, log σ_n²).
//! ```
//!
//! Everything from θ (a 3×1 leaf) to `log p` is recorded on a [`Tape`], built from
//! the crate's primitives only: `MatMul` picks each component of θ and broadcasts a
//! 1×1 value to n×n (`1·s·1ᵀ`), `Map(Exp)`, `Hadamard` and `Add` build
//! `K = exp(log σ_f² − D ⊙ (1/ℓ²)/2) + σ_n² I` from the squared distances `D`, then
//! `L = Cholesky(K)`, `α = ChoSolve(L, y) = K⁻¹y`, `q = MatMul(yᵀα)`,
//! `c = CholLogDet(L) = 2Σ log Lᵢᵢ`, `log p = −½(q + c) − (n/2) log 2π`.
//!
//! The tape's reverse sweep sums what each value's children send back: `L̄` from the
//! solve and the log-determinant, `θ̄` from the three places θ is read. The recorded
//! graph is itself a primitive of θ ([`Tape::function`]), which the shared checker
//! proves (finite differences, and the adjoint identity against the same records in
//! forward mode) before Adam uses the gradient.
//!
//! Run: `cargo run --release --example gp`

use matgrad::prelude::*;
use ndarray::{array, ArcArray2, Array2};
use std::process::ExitCode;
use std::time::Instant;

const DATA: &str = include_str!("../data/co2_monthly.csv");

/// Central-difference step on θ. Richardson extrapolation over `h` and `h/2` cancels
/// the `h²` error, so the step can be large enough to keep rounding in `log p` small.
const FD_STEP: f64 = 1e-3;

const STEPS: usize = 300;
const PRINT_EVERY: usize = 20;
const LEARNING_RATE: f64 = 0.05;

const NAME: &str = "GP log marginal likelihood";

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

/// The data the likelihood reads, shared with every tape (no copies).
struct Data {
    /// `−D/2`, `D` the squared distances between inputs (n×n).
    neg_half_sq_dist: ArcArray2<f64>,
    /// The standardised targets (n×1).
    y: ArcArray2<f64>,
    /// `1` (n×1) and `I` (n×n).
    ones: ArcArray2<f64>,
    eye: ArcArray2<f64>,
}

/// Records `log p(y | x, θ)` on `tape` and returns it (1×1).
fn record_log_likelihood(tape: &mut Tape<f64>, theta: Var, data: &Data) -> matgrad::Result<Var> {
    let n = data.y.nrows() as f64;
    let mut constant = |a: Array2<f64>| tape.constant(a);
    let (pick_sf2, pick_ell, pick_sn2) = (
        constant(array![[1.0], [0.0], [0.0]]),
        constant(array![[0.0], [-2.0], [0.0]]),
        constant(array![[0.0], [0.0], [1.0]]),
    );
    let minus_half = constant(array![[-0.5]]);
    let log_norm = constant(array![[-0.5 * n * std::f64::consts::TAU.ln()]]);
    let neg_half_d = tape.constant(data.neg_half_sq_dist.clone());
    let (y, ones, eye) = (
        tape.constant(data.y.clone()),
        tape.constant(data.ones.clone()),
        tape.constant(data.eye.clone()),
    );
    // A 1×1 value s as the n×n matrix 1·s·1ᵀ.
    let broadcast = |tape: &mut Tape<f64>, s: Var| -> matgrad::Result<Var> {
        let column = tape.apply1(MatMul::nn(), &[ones, s])?;
        tape.apply1(MatMul::nt(), &[column, ones])
    };

    // θ is read three times; its gradient is the sum of the three contributions.
    let log_sf2 = tape.apply1(MatMul::tn(), &[pick_sf2, theta])?;
    let minus_2_log_ell = tape.apply1(MatMul::tn(), &[pick_ell, theta])?;
    let log_sn2 = tape.apply1(MatMul::tn(), &[pick_sn2, theta])?;
    // K = exp(log σ_f² − D/(2ℓ²)) + σ_n² I.
    let inv_ell2 = tape.apply1(Map(Exp), &[minus_2_log_ell])?;
    let inv_ell2 = broadcast(tape, inv_ell2)?;
    let scaled = tape.apply1(Hadamard, &[neg_half_d, inv_ell2])?;
    let log_sf2 = broadcast(tape, log_sf2)?;
    let exponent = tape.apply1(Add, &[log_sf2, scaled])?;
    let signal = tape.apply1(Map(Exp), &[exponent])?;
    let sn2 = tape.apply1(Map(Exp), &[log_sn2])?;
    let sn2 = broadcast(tape, sn2)?;
    let noise = tape.apply1(Hadamard, &[eye, sn2])?;
    let k = tape.apply1(Add, &[signal, noise])?;
    // log p = −½(yᵀK⁻¹y + log det K) − (n/2) log 2π. L feeds both the solve and the
    // log-determinant: the sweep writes L̄ from one and adds the other.
    let l = tape.apply1(Cholesky::new(), &[k])?;
    let alpha = tape.apply1(ChoSolve, &[l, y])?;
    let quad = tape.apply1(MatMul::tn(), &[y, alpha])?;
    let logdet = tape.apply1(CholLogDet, &[l])?;
    let sum = tape.apply1(Add, &[quad, logdet])?;
    let half = tape.apply1(MatMul::nn(), &[minus_half, sum])?;
    tape.apply1(Add, &[half, log_norm])
}

/// The log marginal likelihood and its gradient with respect to θ: one recording, one
/// reverse sweep from `log p` (cotangent 1).
fn log_likelihood(data: &Data, theta: [f64; 3]) -> matgrad::Result<(f64, [f64; 3])> {
    let mut tape = Tape::new();
    let th = tape.leaf(array![[theta[0]], [theta[1]], [theta[2]]]);
    let lp = record_log_likelihood(&mut tape, th, data)?;
    // Values no reverse rule reads (most of the n×n intermediates) are dropped.
    tape.release_unsaved(&[lp])?;
    let value = tape.value(lp)?[(0, 0)];
    let grads = tape.backward(lp)?;
    let g = grads.get(th).ok_or(Error::InvalidArgument {
        op: NAME,
        msg: "no gradient for θ".into(),
    })?;
    Ok((value, [g[(0, 0)], g[(1, 0)], g[(2, 0)]]))
}

/// Adam ascent on θ, printing the log likelihood as it climbs.
fn fit(data: &Data, mut theta: [f64; 3]) -> matgrad::Result<([f64; 3], f64, [f64; 3])> {
    let (b1, b2, eps) = (0.9, 0.999, 1e-8);
    let (mut m, mut v) = ([0.0; 3], [0.0; 3]);
    for step in 1..=STEPS {
        let (value, grad) = log_likelihood(data, theta)?;
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
    let (value, grad) = log_likelihood(data, theta)?;
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
    let data = Data {
        neg_half_sq_dist: Array2::from_shape_fn((n, n), |(i, j)| -0.5 * (xs[i] - xs[j]).powi(2))
            .into_shared(),
        y: y.values.clone().into_shared(),
        ones: Array2::ones((n, 1)).into_shared(),
        eye: Array2::eye(n).into_shared(),
    };

    // The recorded likelihood as a primitive of θ, proven by the shared checker.
    let theta0 = [0.0, 0.0, (0.1f64).ln()];
    let at = array![[theta0[0]], [theta0[1]], [theta0[2]]];
    let mut tape = Tape::new();
    let th = tape.leaf(at.clone());
    let lp = record_log_likelihood(&mut tape, th, &data)?;
    let gp = tape.function(NAME, &[th], &[lp])?.with_input_names(&["θ"]);
    let report = Checker::new().step(FD_STEP).check(&gp, &[at.view()])?;
    print!("{report}");
    if !report.passed() {
        eprintln!("gradient check FAILED");
        return Ok(ExitCode::FAILURE);
    }

    println!("Adam ascent, learning rate {LEARNING_RATE}, {STEPS} steps");
    let (theta, value, grad) = fit(&data, theta0)?;
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
