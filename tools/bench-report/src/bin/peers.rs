//! Times matgrad's matrix product and Cholesky, forward and reverse, in the CSV
//! format of `benches/peers` (`library,op,n,threads,pass,median_s`, no header), so that
//! `benches/peers/run.sh` can set them beside JAX, PyTorch and HIPS autograd.
//!
//! ```text
//! cargo run --release -p bench-report --bin peers -- --threads 1 [--min-reps 3] [--max-reps 10] [--budget 1.0] [--seed 7]
//! cargo run --release -p bench-report --bin peers -- --print-kernel
//! cargo run --release -p bench-report --bin peers -- --print-better-kernel
//! ```
//!
//! `--print-better-kernel` prints the `OPENBLAS_CORETYPE` to set when OpenBLAS runs a
//! kernel older than the CPU supports (`matgrad::runtime()`), and nothing otherwise.
//!
//! `--print-kernel` prints the name of the kernel OpenBLAS chose for this CPU and exits.
//!
//! The library column is `matgrad` for the default OpenBLAS build and `matgrad-faer`
//! for a build with `--no-default-features --features faer`.
//!
//! Forward is `MatMul::nn().apply` / `Cholesky::new().apply`; backward is `.backward(C̄)`
//! on the result of one forward, for a random `C̄` (lower-triangular for Cholesky), so
//! it excludes the forward pass as the peers' timings do. Cholesky uses the default
//! symmetric convention, the one PyTorch, JAX and autograd use.
//!
//! Before timing, the smallest case of each operation is compared with the scalar loops
//! of `matgrad::naive`, so that a misconfigured BLAS (for example a forced
//! `OPENBLAS_CORETYPE`) stops the run instead of producing fast wrong numbers.

use bench_report::machine::{backend, blas_core, set_threads};
use bench_report::timing::measure;
use matgrad::check::random;
use matgrad::prelude::*;
use ndarray::{Array2, ArrayView2};
use std::error::Error as StdError;
use std::process::ExitCode;

const MATMUL_SIZES: [usize; 2] = [256, 1024];
const CHOLESKY_SIZES: [usize; 3] = [500, 1000, 2000];

/// Largest relative difference accepted between the BLAS results and the naive loops.
const AGREEMENT: f64 = 1e-9;

struct Options {
    threads: usize,
    min_reps: usize,
    max_reps: usize,
    budget: f64,
    seed: u64,
    print_kernel: bool,
    print_better_kernel: bool,
}

fn parse_options() -> Result<Options, String> {
    let mut o = Options {
        threads: 1,
        min_reps: 3,
        max_reps: 10,
        budget: 1.0,
        seed: 7,
        print_kernel: false,
        print_better_kernel: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--print-kernel" {
            o.print_kernel = true;
            continue;
        }
        if flag == "--print-better-kernel" {
            o.print_better_kernel = true;
            continue;
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--threads" => o.threads = value.parse().map_err(|e| bad(&e))?,
            "--min-reps" => o.min_reps = value.parse().map_err(|e| bad(&e))?,
            "--max-reps" => o.max_reps = value.parse().map_err(|e| bad(&e))?,
            "--budget" => o.budget = value.parse().map_err(|e| bad(&e))?,
            "--seed" => o.seed = value.parse().map_err(|e| bad(&e))?,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    if o.threads == 0 || o.min_reps == 0 || o.max_reps < o.min_reps {
        return Err("need --threads ≥ 1 and 1 ≤ --min-reps ≤ --max-reps".into());
    }
    Ok(o)
}

/// Median seconds of `run` under the options' stopping rule, and the number of runs.
fn timed<R>(o: &Options, run: impl FnMut() -> matgrad::Result<R>) -> matgrad::Result<(f64, usize)> {
    measure(o.min_reps, o.max_reps, o.budget, run)
}

/// The library column: `matgrad` with OpenBLAS, `matgrad-faer` with faer.
fn library() -> &'static str {
    match backend() {
        "faer" => "matgrad-faer",
        _ => "matgrad",
    }
}

fn emit(o: &Options, op: &str, n: usize, pass: &str, (med, reps): (f64, usize)) {
    let lib = library();
    println!("{lib},{op},{n},{},{pass},{med:.9}", o.threads);
    eprintln!(
        "[{lib}] {op} n={n} threads={} {pass}: {:.2} ms (median of {reps})",
        o.threads,
        med * 1e3
    );
}

/// A random `n×n` cotangent with zero strict upper triangle.
fn lower_cotangent(n: usize, rng: &mut rand::rngs::StdRng) -> Array2<f64> {
    let mut lbar = random::randn::<f64>(n, n, rng);
    for i in 0..n {
        lbar.row_mut(i).slice_mut(ndarray::s![i + 1..]).fill(0.0);
    }
    lbar
}

/// `max |x − r| / max |r|`.
fn rel_diff(x: ArrayView2<'_, f64>, r: ArrayView2<'_, f64>) -> f64 {
    let scale = r.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let diff = x
        .iter()
        .zip(r.iter())
        .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
    diff / scale
}

fn agree(what: &str, x: ArrayView2<'_, f64>, r: ArrayView2<'_, f64>) -> Result<f64, String> {
    let d = rel_diff(x, r);
    if d <= AGREEMENT {
        Ok(d)
    } else {
        Err(format!(
            "{what} differs from the naive loop by {d:.2e} (relative), above {AGREEMENT:.0e}"
        ))
    }
}

/// The smallest matmul and Cholesky case, forward and backward, against `matgrad::naive`.
fn verify(o: &Options) -> Result<(), Box<dyn StdError>> {
    let mut rng = random::rng(o.seed ^ 0x5eed);
    let n = MATMUL_SIZES[0];
    let a = random::randn::<f64>(n, n, &mut rng);
    let b = random::randn::<f64>(n, n, &mut rng);
    let cbar = random::randn::<f64>(n, n, &mut rng);
    let c = MatMul::nn().apply([a.view(), b.view()])?;
    let [abar, bbar] = c.backward(cbar.view())?;
    let (abar_ref, bbar_ref) = matgrad::naive::matmul_backward(a.view(), b.view(), cbar.view())?;
    let c_ref = matgrad::naive::matmul_ijk(a.view(), b.view())?;
    let mut worst = agree("matmul C", c.value().view(), c_ref.view())?;
    worst = worst.max(agree("matmul Ā", abar.view(), abar_ref.view())?);
    worst = worst.max(agree("matmul B̄", bbar.view(), bbar_ref.view())?);

    let n = CHOLESKY_SIZES[0];
    let a = random::spd::<f64>(n, &mut rng);
    let lbar = lower_cotangent(n, &mut rng);
    let l = Cholesky::new().apply([a.view()])?;
    let l_ref = matgrad::naive::cholesky::cholesky(a.view())?;
    worst = worst.max(agree("Cholesky L", l.value().view(), l_ref.view())?);
    // The loop gives the lower-triangle convention: below the diagonal twice the symmetric Ā.
    let [abar] = l.backward(lbar.view())?;
    let lower = Array2::from_shape_fn((n, n), |(i, j)| match i.cmp(&j) {
        std::cmp::Ordering::Greater => 2.0 * abar[(i, j)],
        std::cmp::Ordering::Equal => abar[(i, j)],
        std::cmp::Ordering::Less => 0.0,
    });
    let abar_ref = matgrad::naive::cholesky::cholesky_backward(l_ref.view(), lbar.view())?;
    worst = worst.max(agree("Cholesky Ā", lower.view(), abar_ref.view())?);
    eprintln!(
        "[matgrad] results agree with the naive loops (largest relative difference {worst:.1e})"
    );
    Ok(())
}

fn run(o: &Options) -> matgrad::Result<()> {
    let mut rng = random::rng(o.seed);
    for n in MATMUL_SIZES {
        let a = random::randn::<f64>(n, n, &mut rng);
        let b = random::randn::<f64>(n, n, &mut rng);
        let cbar = random::randn::<f64>(n, n, &mut rng);
        let op = MatMul::nn();
        let forward = timed(o, || op.apply([a.view(), b.view()]))?;
        emit(o, "matmul", n, "forward", forward);
        let c = op.apply([a.view(), b.view()])?;
        let backward = timed(o, || c.backward(cbar.view()))?;
        emit(o, "matmul", n, "backward", backward);
    }
    for n in CHOLESKY_SIZES {
        let a = random::spd::<f64>(n, &mut rng);
        let lbar = lower_cotangent(n, &mut rng);
        let op = Cholesky::new();
        let forward = timed(o, || op.apply([a.view()]))?;
        emit(o, "cholesky", n, "forward", forward);
        let l = op.apply([a.view()])?;
        let backward = timed(o, || l.backward(lbar.view()))?;
        emit(o, "cholesky", n, "backward", backward);
    }
    Ok(())
}

fn main() -> ExitCode {
    let o = match parse_options() {
        Ok(o) => o,
        Err(msg) => {
            eprintln!("peers: {msg}");
            return ExitCode::from(2);
        }
    };
    let got = set_threads(o.threads);
    let core = blas_core();
    if o.print_kernel {
        println!("{core}");
        return ExitCode::SUCCESS;
    }
    if o.print_better_kernel {
        if let Some(k) = matgrad::runtime().better_coretype() {
            println!("{k}");
        }
        return ExitCode::SUCCESS;
    }
    eprintln!(
        "[{}] threads={got}, kernel {core}; matgrad::runtime(): {}",
        library(),
        matgrad::runtime()
    );
    if let Err(e) = verify(&o) {
        eprintln!("peers: {e}");
        return ExitCode::FAILURE;
    }
    match run(&o) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("peers: {e}");
            ExitCode::FAILURE
        }
    }
}
