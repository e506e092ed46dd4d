//! Times the products and factorisations behind matgrad's primitives, forward and
//! reverse, with the backend this build has, and prints them as CSV rows
//! (`backend,op,n,threads,pass,median_s`, no header); `--table` turns the rows of both
//! backends into the per-operation table of `docs/backends.md`.
//!
//! ```text
//! cargo run --release -p bench-report --bin backends -- --threads 1 [--budget 0.3] [--quick]
//! cargo run --release -p bench-report --no-default-features --features faer --bin backends -- --threads 1
//! cargo run --release -p bench-report --bin backends -- --table docs/backends.csv
//! cargo run --release -p bench-report --bin backends -- --runtime
//! ```
//!
//! `--runtime` prints `matgrad::runtime()` (backend, kernel, threads) and exits.
//!
//! `bash tools/bench-report/backends.sh` runs both builds in alternating rounds and
//! writes `docs/backends.csv` and `docs/backends.md`.
//!
//! Each primitive runs as a training loop runs it: `forward_into` and `backward_into`
//! (first writes, a cotangent for every output, every input's gradient) into buffers
//! and a workspace allocated once, on random well-conditioned f64 inputs (SPD where the
//! primitive needs it). Before timing, each result is compared with the scalar loops
//! of `matgrad::naive` at a small order, so a wrong kernel stops the run.

use bench_report::backends::{self, Row};
use bench_report::machine::{backend, set_threads};
use bench_report::timing::measure;
use bench_report::Res;
use matgrad::check::random;
use matgrad::prelude::*;
use ndarray::{Array2, ArrayView2, ArrayViewMut2};
use std::process::ExitCode;

struct Options {
    threads: usize,
    budget: f64,
    quick: bool,
    runtime: bool,
    table: Option<String>,
}

fn parse() -> Result<Options, String> {
    let mut o = Options {
        threads: 1,
        budget: 0.3,
        quick: false,
        runtime: false,
        table: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--quick" {
            o.quick = true;
            continue;
        }
        if flag == "--runtime" {
            o.runtime = true;
            continue;
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--threads" => o.threads = value.parse().map_err(|e| format!("{flag}: {e}"))?,
            "--budget" => o.budget = value.parse().map_err(|e| format!("{flag}: {e}"))?,
            "--table" => o.table = Some(value),
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(o)
}

/// Times `p` forward and reverse into preallocated buffers; prints two rows.
fn time_rule<P: Primitive<f64>>(
    o: &Options,
    op: &str,
    p: &P,
    x: &[Array2<f64>],
    seed: u64,
) -> matgrad::Result<()> {
    let n = x[0].nrows();
    let xv: Vec<ArrayView2<'_, f64>> = x.iter().map(|a| a.view()).collect();
    let shapes: Vec<Shape> = x.iter().map(|a| Shape(a.nrows(), a.ncols())).collect();
    let mut ws = vec![0.0; p.workspace(&shapes)];
    let mut y: Vec<Array2<f64>> = p
        .output_shapes(&xv)?
        .iter()
        .map(|s| Array2::zeros((s.0, s.1)))
        .collect();
    let forward = measure(3, 20, o.budget, || {
        let mut yv: Vec<ArrayViewMut2<'_, f64>> = y.iter_mut().map(|a| a.view_mut()).collect();
        p.forward_into(&xv, &mut yv, Some(&mut ws))
    })?;
    let mut rng = random::rng(seed);
    let ybar: Vec<Array2<f64>> = y[..p.outputs()]
        .iter()
        .map(|a| random::randn::<f64>(a.nrows(), a.ncols(), &mut rng))
        .collect();
    let mut grads: Vec<Array2<f64>> = x.iter().map(|a| Array2::zeros(a.raw_dim())).collect();
    let yv: Vec<ArrayView2<'_, f64>> = y.iter().map(|a| a.view()).collect();
    let ybv: Vec<Option<ArrayView2<'_, f64>>> = ybar.iter().map(|a| Some(a.view())).collect();
    let reverse = measure(3, 20, o.budget, || {
        let mut gv: Vec<Grad<'_, f64>> = grads
            .iter_mut()
            .map(|a| Grad::Write(a.view_mut()))
            .collect();
        p.backward_into(&xv, &yv, &ybv, &mut gv, Some(&mut ws))
    })?;
    for (pass, (secs, reps)) in [("forward", forward), ("reverse", reverse)] {
        let row = Row {
            backend: backend().to_string(),
            op: op.to_string(),
            n,
            threads: o.threads,
            pass: pass.to_string(),
            secs,
        };
        println!("{}", row.csv());
        eprintln!(
            "[{}] {op} n={n} threads={} {pass}: {:.3} ms (median of {reps})",
            row.backend,
            o.threads,
            secs * 1e3
        );
    }
    Ok(())
}

/// `max |x − r| / max |r|`.
fn rel_diff(x: ArrayView2<'_, f64>, r: ArrayView2<'_, f64>) -> f64 {
    let scale = r.iter().fold(f64::MIN_POSITIVE, |m, v| m.max(v.abs()));
    x.iter()
        .zip(r.iter())
        .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()))
        / scale
}

/// The products and factorisations against the scalar loops at a small order.
fn verify() -> Res<()> {
    let n = 70;
    let mut rng = random::rng(11);
    let a = random::randn::<f64>(n, n, &mut rng);
    let b = random::randn::<f64>(n, n, &mut rng);
    let spd = random::spd::<f64>(n, &mut rng);
    let checks = [
        (
            "MatMul",
            rel_diff(
                MatMul::nn().apply([a.view(), b.view()])?.value().view(),
                matgrad::naive::matmul_ijk(a.view(), b.view())?.view(),
            ),
        ),
        (
            "Cholesky",
            rel_diff(
                Cholesky::new().apply([spd.view()])?.value().view(),
                matgrad::naive::cholesky::cholesky(spd.view())?.view(),
            ),
        ),
        (
            "Inverse",
            rel_diff(
                a.dot(Inverse.apply([a.view()])?.value()).view(),
                Array2::eye(n).view(),
            ),
        ),
    ];
    for (what, d) in checks {
        if d > 1e-8 {
            return Err(format!("{what} differs from its reference by {d:.1e} (relative)").into());
        }
    }
    Ok(())
}

fn run(o: &Options) -> Res<()> {
    let (big, spectral) = if o.quick {
        ([64, 256], [32, 100])
    } else {
        ([100, 1000], [100, 500])
    };
    for n in big {
        let mut rng = random::rng(n as u64);
        let a = random::randn::<f64>(n, n, &mut rng);
        let b = random::randn::<f64>(n, n, &mut rng);
        let spd = random::spd::<f64>(n, &mut rng);
        let l = Cholesky::new().apply([spd.view()])?.value().to_owned();
        time_rule(o, "MatMul", &MatMul::nn(), &[a.clone(), b.clone()], 1)?;
        time_rule(
            o,
            "Cholesky",
            &Cholesky::new(),
            std::slice::from_ref(&spd),
            2,
        )?;
        time_rule(
            o,
            "TriSolve",
            &TriSolve::lower(),
            &[l.clone(), b.clone()],
            3,
        )?;
        time_rule(o, "ChoSolve", &ChoSolve, &[l, b.clone()], 4)?;
        time_rule(o, "LuSolve", &LuSolve::new(), &[a.clone(), b], 5)?;
        time_rule(o, "Inverse", &Inverse, std::slice::from_ref(&a), 6)?;
        // det A of a random matrix overflows at n = 1000; SlogDet is the same LU.
        time_rule(o, "SlogDet", &SlogDet, &[a], 7)?;
    }
    for n in spectral {
        let mut rng = random::rng(n as u64 + 1);
        let a = random::randn::<f64>(n, n, &mut rng);
        let spd = random::spd::<f64>(n, &mut rng);
        time_rule(o, "SymEig", &SymEig::new(), &[spd], 8)?;
        time_rule(o, "Svd", &Svd, std::slice::from_ref(&a), 9)?;
        time_rule(o, "Expm", &Expm, &[a.mapv(|v| v / (n as f64).sqrt())], 10)?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let o = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("backends: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(path) = &o.table {
        return match backends::read(std::path::Path::new(path)).and_then(|rows| {
            let rows = rows.ok_or_else(|| format!("no file {path}"))?;
            backends::table(&rows)
        }) {
            Ok(t) => {
                print!("{t}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("backends: {e}");
                ExitCode::FAILURE
            }
        };
    }
    set_threads(o.threads);
    if o.runtime {
        println!("{}", matgrad::runtime());
        return ExitCode::SUCCESS;
    }
    eprintln!("[backends] matgrad::runtime(): {}", matgrad::runtime());
    match verify().and_then(|()| run(&o)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("backends: {e}");
            ExitCode::FAILURE
        }
    }
}
