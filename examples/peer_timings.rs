//! Times matgrad's matrix product and Cholesky, forward and reverse, in the CSV
//! format of `benches/peers` (`library,op,n,threads,pass,median_s`, no header), so that
//! `benches/peers/run.sh` can set them beside JAX, PyTorch and HIPS autograd.
//!
//! ```text
//! cargo run --release --example peer_timings -- --threads 1 [--min-reps 3] [--max-reps 10] [--budget 1.0] [--seed 7]
//! cargo run --release --example peer_timings -- --print-kernel
//! ```
//!
//! `--print-kernel` prints the name of the kernel OpenBLAS chose for this CPU and exits.
//!
//! Forward is `MatMul::nn().apply` / `Cholesky::new().apply`; backward is `.backward(C̄)`
//! on the result of one forward, for a random `C̄` (lower-triangular for Cholesky), so
//! it excludes the forward pass as the peers' timings do. Cholesky uses the default
//! symmetric convention, the one PyTorch, JAX and autograd use.
//!
//! Before timing, the smallest case of each operation is compared with the scalar loops
//! of `matgrad::naive`, so that a misconfigured BLAS (for example a forced
//! `OPENBLAS_CORETYPE`) stops the run instead of producing fast wrong numbers.

use matgrad::check::random;
use matgrad::prelude::*;
use ndarray::Array2;
use ndarray::ArrayView2;
use std::error::Error as StdError;
use std::ffi::CStr;
use std::os::raw::{c_char, c_int};
use std::process::ExitCode;
use std::time::Instant;

const MATMUL_SIZES: [usize; 2] = [256, 1024];
const CHOLESKY_SIZES: [usize; 3] = [500, 1000, 2000];

extern "C" {
    // OpenBLAS reads OPENBLAS_NUM_THREADS once at load; this also covers a run without it.
    fn openblas_set_num_threads(n: c_int);
    fn openblas_get_num_threads() -> c_int;
    fn openblas_get_corename() -> *const c_char;
}

/// Largest relative difference accepted between the BLAS results and the naive loops.
const AGREEMENT: f64 = 1e-9;

struct Options {
    threads: usize,
    min_reps: usize,
    max_reps: usize,
    budget: f64,
    seed: u64,
    print_kernel: bool,
}

fn parse_options() -> std::result::Result<Options, String> {
    let mut o = Options {
        threads: 1,
        min_reps: 3,
        max_reps: 10,
        budget: 1.0,
        seed: 7,
        print_kernel: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--print-kernel" {
            o.print_kernel = true;
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

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let m = xs.len() / 2;
    if xs.len() % 2 == 1 {
        xs[m]
    } else {
        0.5 * (xs[m - 1] + xs[m])
    }
}

/// Median wall time of `run` after one untimed call, with the same stopping rule as
/// the Python side: at least `min_reps`, at most `max_reps`, no new run past `budget`.
fn measure<R>(o: &Options, mut run: impl FnMut() -> Result<R>) -> Result<(f64, usize)> {
    run()?;
    let mut times = Vec::with_capacity(o.max_reps);
    let mut spent = 0.0;
    while times.len() < o.max_reps && (times.len() < o.min_reps || spent < o.budget) {
        let t0 = Instant::now();
        std::hint::black_box(run()?);
        let dt = t0.elapsed().as_secs_f64();
        times.push(dt);
        spent += dt;
    }
    let reps = times.len();
    Ok((median(times), reps))
}

fn emit(o: &Options, op: &str, n: usize, pass: &str, (med, reps): (f64, usize)) {
    println!("matgrad,{op},{n},{},{pass},{med:.9}", o.threads);
    eprintln!(
        "[matgrad] {op} n={n} threads={} {pass}: {:.2} ms (median of {reps})",
        o.threads,
        med * 1e3
    );
}

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

fn agree(
    what: &str,
    x: ArrayView2<'_, f64>,
    r: ArrayView2<'_, f64>,
) -> std::result::Result<f64, String> {
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
fn verify(o: &Options) -> std::result::Result<(), Box<dyn StdError>> {
    let mut rng = random::rng(o.seed ^ 0x5eed);
    let n = MATMUL_SIZES[0];
    let a = random::randn::<f64>(n, n, &mut rng);
    let b = random::randn::<f64>(n, n, &mut rng);
    let cbar = random::randn::<f64>(n, n, &mut rng);
    let c = MatMul::nn().apply(a.view(), b.view())?;
    let (abar, bbar) = c.backward(cbar.view())?;
    let (abar_ref, bbar_ref) = matgrad::naive::matmul_backward(a.view(), b.view(), cbar.view())?;
    let mut worst = agree(
        "matmul C",
        c.value().view(),
        matgrad::naive::matmul_ijk(a.view(), b.view())?.view(),
    )?;
    worst = worst.max(agree("matmul Ā", abar.view(), abar_ref.view())?);
    worst = worst.max(agree("matmul B̄", bbar.view(), bbar_ref.view())?);

    let n = CHOLESKY_SIZES[0];
    let a = random::spd::<f64>(n, &mut rng);
    let lbar = lower_cotangent(n, &mut rng);
    let l = Cholesky::new().apply(a.view())?;
    let l_ref = matgrad::naive::cholesky::cholesky(a.view())?;
    worst = worst.max(agree("Cholesky L", l.value().view(), l_ref.view())?);
    // The loop gives the lower-triangle convention: below the diagonal twice the symmetric Ā.
    let abar = l.backward(lbar.view())?;
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

fn run(o: &Options) -> Result<()> {
    let mut rng = random::rng(o.seed);
    for n in MATMUL_SIZES {
        let a = random::randn::<f64>(n, n, &mut rng);
        let b = random::randn::<f64>(n, n, &mut rng);
        let cbar = random::randn::<f64>(n, n, &mut rng);
        let op = MatMul::nn();
        emit(
            o,
            "matmul",
            n,
            "forward",
            measure(o, || op.apply(a.view(), b.view()))?,
        );
        let c = op.apply(a.view(), b.view())?;
        emit(
            o,
            "matmul",
            n,
            "backward",
            measure(o, || c.backward(cbar.view()))?,
        );
    }
    for n in CHOLESKY_SIZES {
        let a = random::spd::<f64>(n, &mut rng);
        let lbar = lower_cotangent(n, &mut rng);
        let op = Cholesky::new();
        emit(
            o,
            "cholesky",
            n,
            "forward",
            measure(o, || op.apply(a.view()))?,
        );
        let l = op.apply(a.view())?;
        emit(
            o,
            "cholesky",
            n,
            "backward",
            measure(o, || l.backward(lbar.view()))?,
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let o = match parse_options() {
        Ok(o) => o,
        Err(msg) => {
            eprintln!("peer_timings: {msg}");
            return ExitCode::from(2);
        }
    };
    let threads = c_int::try_from(o.threads).unwrap_or(c_int::MAX);
    // SAFETY: plain setters/getters of OpenBLAS's global thread count, called before any BLAS work.
    let got = unsafe {
        openblas_set_num_threads(threads);
        openblas_get_num_threads()
    };
    // SAFETY: OpenBLAS returns a pointer to a static NUL-terminated string.
    let core = unsafe { CStr::from_ptr(openblas_get_corename()) }.to_string_lossy();
    if o.print_kernel {
        println!("{core}");
        return ExitCode::SUCCESS;
    }
    eprintln!("[matgrad] thread pools: openblas={got}, kernel {core}");
    if let Err(e) = verify(&o) {
        eprintln!("peer_timings: {e}");
        return ExitCode::FAILURE;
    }
    match run(&o) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("peer_timings: {e}");
            ExitCode::FAILURE
        }
    }
}
