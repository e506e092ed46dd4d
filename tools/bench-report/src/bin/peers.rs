//! Times matgrad's matrix product, Cholesky, eigh, SVD and LU solve, forward and
//! reverse, and an MLP training step, in the CSV
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
//! Forward is `apply` of `MatMul::nn()`, `Cholesky::new()`, `SymEig::new()`, `Svd`
//! or `LuSolve::new()`; backward is `.backward_all(Ȳ)` on the result of one forward,
//! for random cotangents of every output (lower-triangular for Cholesky), so it
//! excludes the forward pass as the peers' timings do. Cholesky and eigh use the
//! default symmetric convention, the one PyTorch, JAX and autograd use.
//!
//! The MLP step (ops `mlp-small`, 64-128-128-10 with batch 64, and `mlp-wide`,
//! 784-1024-1024-10 with batch 256; pass `step`, `n` the batch) is forward, reverse
//! and a plain SGD update of a tanh network with a linear last layer into the softmax
//! cross-entropy, recorded anew every step on a [`Tape::reset`] tape (the eager style
//! of PyTorch); `mlp-small-replay` and `mlp-wide-replay` replay a model recorded once
//! ([`matgrad::tape::Recorded::step`]).
//!
//! Before timing, the smallest case of each operation is compared with the scalar loops
//! of `matgrad::naive`, so that a misconfigured BLAS (for example a forced
//! `OPENBLAS_CORETYPE`) stops the run instead of producing fast wrong numbers.

use bench_report::machine::{backend, blas_core, set_threads};
use bench_report::timing::measure;
use matgrad::check::random;
use matgrad::nn::{glorot_uniform, Optimizer, Sgd};
use matgrad::prelude::*;
use ndarray::{ArcArray2, Array2, ArrayView2};
use std::error::Error as StdError;
use std::process::ExitCode;
use std::sync::Arc;

const MATMUL_SIZES: [usize; 2] = [256, 1024];
const CHOLESKY_SIZES: [usize; 3] = [500, 1000, 2000];
const GILES_SIZES: [usize; 2] = [100, 500];
const LR: f64 = 1e-3;

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

/// Forward and backward of a primitive with several outputs (or inputs), each output
/// with a random cotangent.
fn forward_backward<P: Rule<f64> + Copy, const N: usize>(
    o: &Options,
    name: &str,
    n: usize,
    op: P,
    x: [ArrayView2<'_, f64>; N],
    rng: &mut rand::rngs::StdRng,
) -> matgrad::Result<()> {
    let forward = timed(o, || op.apply(x))?;
    emit(o, name, n, "forward", forward);
    let y = op.apply(x)?;
    let cots: Vec<Array2<f64>> = y
        .outputs()
        .iter()
        .map(|c| random::randn::<f64>(c.nrows(), c.ncols(), rng))
        .collect();
    let ybar: Vec<Option<ArrayView2<'_, f64>>> = cots.iter().map(|c| Some(c.view())).collect();
    let backward = timed(o, || y.backward_all(&ybar))?;
    emit(o, name, n, "backward", backward);
    Ok(())
}

/// The MLP of the step benchmarks: parameters `[W₁, b₁, …]` (out×in and out×1), data
/// (in×batch, one example per column) and labels.
struct Mlp {
    params: Vec<ArcArray2<f64>>,
    grads: Vec<Array2<f64>>,
    x: ArcArray2<f64>,
    labels: Arc<[usize]>,
}

impl Mlp {
    fn new(widths: &[usize], batch: usize, rng: &mut rand::rngs::StdRng) -> Self {
        let mut params = Vec::new();
        for w in widths.windows(2) {
            params.push(glorot_uniform(w[1], w[0], rng).into_shared());
            params.push((random::randn(w[1], 1, rng) * 0.1).into_shared());
        }
        let classes = widths[widths.len() - 1];
        Mlp {
            grads: params.iter().map(|p| Array2::zeros(p.raw_dim())).collect(),
            params,
            x: random::randn(widths[0], batch, rng).into_shared(),
            labels: (0..batch).map(|j| (j * 7 + 3) % classes).collect(),
        }
    }

    /// Records the forward pass: the vars `[x, W₁, b₁, …]` and the loss.
    fn record(&self, tape: &mut Tape<f64>) -> matgrad::Result<(Vec<Var>, Var)> {
        let x = tape.constant(self.x.clone());
        let mut vars = vec![x];
        let mut h = x;
        let layers = self.params.len() / 2;
        for (l, wb) in self.params.chunks(2).enumerate() {
            let (w, b) = (tape.leaf(wb[0].clone()), tape.leaf(wb[1].clone()));
            vars.extend([w, b]);
            let z = tape.apply1(MatMul::nn(), &[w, h])?;
            let a = tape.apply1(AddBias, &[z, b])?;
            h = if l + 1 < layers {
                tape.apply1(Map(Tanh), &[a])?
            } else {
                a
            };
        }
        let loss = tape.apply1(SoftmaxCrossEntropy::new(self.labels.clone()), &[h])?;
        Ok((vars, loss))
    }

    fn update(&mut self, opt: &mut Sgd<f64>) -> matgrad::Result<()> {
        let mut p: Vec<_> = self.params.iter_mut().map(|p| p.view_mut()).collect();
        let g: Vec<_> = self.grads.iter().map(|g| g.view()).collect();
        opt.step(&mut p, &g)
    }

    /// One step recorded anew on a reset tape.
    fn eager_step(&mut self, tape: &mut Tape<f64>, opt: &mut Sgd<f64>) -> matgrad::Result<()> {
        tape.reset();
        let (vars, loss) = self.record(tape)?;
        let one = Array2::ones((1, 1));
        let mut grads: Vec<(Var, Grad<'_, f64>)> = vars[1..]
            .iter()
            .zip(self.grads.iter_mut())
            .map(|(&v, g)| (v, Grad::Write(g.view_mut())))
            .collect();
        tape.backward_into(&[(loss, one.view())], &mut grads)?;
        drop(grads);
        // The leaves share the parameters: give them back before the in-place update.
        tape.reset();
        self.update(opt)
    }

    /// One step replayed through a model recorded once.
    fn replay_step(
        &mut self,
        model: &mut matgrad::tape::Recorded<f64>,
        opt: &mut Sgd<f64>,
    ) -> matgrad::Result<()> {
        let one = Array2::ones((1, 1));
        {
            let mut x = vec![self.x.view()];
            x.extend(self.params.iter().map(|p| p.view()));
            let mut grads = vec![Grad::Skip];
            grads.extend(self.grads.iter_mut().map(|g| Grad::Write(g.view_mut())));
            model.step(&x, &[Some(one.view())], &mut grads)?;
        }
        self.update(opt)
    }
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
    for n in GILES_SIZES {
        let g = random::randn::<f64>(n, n, &mut rng);
        let a = (&g + &g.t()) * 0.5;
        forward_backward(o, "eigh", n, SymEig::new(), [a.view()], &mut rng)?;
    }
    for n in GILES_SIZES {
        let a = random::randn::<f64>(n, n, &mut rng);
        forward_backward(o, "svd", n, Svd, [a.view()], &mut rng)?;
    }
    for n in GILES_SIZES {
        let mut a = random::randn::<f64>(n, n, &mut rng);
        a.diag_mut().mapv_inplace(|d| d + (n as f64).sqrt());
        let b = random::randn::<f64>(n, n, &mut rng);
        forward_backward(
            o,
            "solve",
            n,
            LuSolve::new(),
            [a.view(), b.view()],
            &mut rng,
        )?;
    }
    for (name, widths, batch) in [
        ("mlp-small", &[64, 128, 128, 10][..], 64),
        ("mlp-wide", &[784, 1024, 1024, 10][..], 256),
    ] {
        let mut mlp = Mlp::new(widths, batch, &mut rng);
        let mut opt = Sgd::new(LR);
        let mut tape = Tape::new();
        let eager = timed(o, || mlp.eager_step(&mut tape, &mut opt))?;
        emit(o, name, batch, "step", eager);
        drop(tape);
        let mut tape = Tape::new();
        let (vars, loss) = mlp.record(&mut tape)?;
        let mut model = tape.function("MLP", &vars, &[loss])?;
        drop(tape);
        let replay = timed(o, || mlp.replay_step(&mut model, &mut opt))?;
        emit(o, &format!("{name}-replay"), batch, "step", replay);
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
