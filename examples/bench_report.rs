//! How much faster is a BLAS-backed rule than the loop one would write by hand?
//!
//! ```text
//! cargo run --release --example bench_report [-- --quick --out DIR --detected-kernel]
//! ```
//!
//! Times every primitive against its scalar loop in `matgrad::naive` (medians of
//! repeated runs, f64, one OpenBLAS thread; the main cases again at two threads),
//! measures the machine's own DGEMM rate to compare against, and writes
//! `docs/benchmarks.md` and `docs/benchmarks.svg`. It takes one to two minutes on two
//! idle cores (the naive i-j-k product at n = 1024 alone is about 15 s); `--quick` runs
//! a small sweep (n ≤ 256) for a smoke test, `--out` writes elsewhere. If `docs/peers.csv` exists (from `benches/peers/run.sh`), its rows are
//! tabulated as matgrad/peer ratios.
//!
//! OpenBLAS picks its kernel when it loads. Debian's 0.3.21 does not recognise recent
//! Intel cores and falls back to its generic "Prescott" kernel, several times slower
//! than the AVX2/AVX-512 kernels the CPU can run. Unless `OPENBLAS_CORETYPE` is set or
//! `--detected-kernel` is given, the report then runs itself again with the kernel the
//! CPU supports (as `benches/peers/run.sh` does), and records both rates in the header.

use indicatif::{ProgressBar, ProgressStyle};
use matgrad::check::random;
use matgrad::naive;
use matgrad::ops::cholesky::{self as chol, Convention};
use matgrad::prelude::*;
use ndarray::{Array2, ArrayView2};
use plotters::prelude::*;
use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::ffi::CStr;
use std::fmt::Write as _;
use std::hint::black_box;
use std::os::raw::{c_char, c_int};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

type Res<T> = std::result::Result<T, Box<dyn StdError>>;

extern "C" {
    fn openblas_get_config() -> *const c_char;
    fn openblas_get_corename() -> *const c_char;
    fn openblas_set_num_threads(n: c_int);
    fn openblas_get_num_threads() -> c_int;
}

fn blas_config() -> String {
    // SAFETY: OpenBLAS returns a pointer to a static NUL-terminated string.
    unsafe { CStr::from_ptr(openblas_get_config()) }
        .to_string_lossy()
        .trim()
        .to_string()
}

fn blas_core() -> String {
    // SAFETY: as for `blas_config`.
    unsafe { CStr::from_ptr(openblas_get_corename()) }
        .to_string_lossy()
        .trim()
        .to_string()
}

fn set_threads(n: usize) -> usize {
    // SAFETY: plain setters/getters of OpenBLAS's thread pool size.
    unsafe {
        openblas_set_num_threads(n as c_int);
        openblas_get_num_threads() as usize
    }
}

/// Set in the environment of the re-run: the kernel OpenBLAS chose by itself and the
/// DGEMM rate it gave.
const DETECTED_ENV: &str = "MATGRAD_REPORT_DETECTED_KERNEL";

struct Options {
    quick: bool,
    out: PathBuf,
    keep_kernel: bool,
}

impl Options {
    fn parse() -> Res<Options> {
        let mut o = Options {
            quick: false,
            out: Path::new(env!("CARGO_MANIFEST_DIR")).join("docs"),
            keep_kernel: false,
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            match a.as_str() {
                "--quick" => o.quick = true,
                "--detected-kernel" => o.keep_kernel = true,
                "--out" => o.out = args.next().ok_or("--out needs a directory")?.into(),
                other => {
                    return Err(format!(
                        "unknown argument {other}; see the top of examples/bench_report.rs"
                    )
                    .into())
                }
            }
        }
        Ok(o)
    }
    fn sizes(&self) -> Vec<usize> {
        if self.quick {
            vec![16, 64, 256]
        } else {
            vec![16, 64, 256, 512, 1024]
        }
    }
    fn threaded_sizes(&self) -> Vec<usize> {
        if self.quick {
            vec![256]
        } else {
            vec![256, 512, 1024]
        }
    }
    /// Seconds of timed rounds per case once the minimum count is reached.
    fn budget(&self) -> f64 {
        if self.quick {
            0.05
        } else {
            0.3
        }
    }
    fn gemm_n(&self) -> usize {
        if self.quick {
            512
        } else {
            2048
        }
    }
}

/// The i-j-k product and the naive backward walk columns with a stride of `n`: at
/// n = 1024 one i-j-k call takes about 5 s and one naive backward about twice that,
/// which three timed runs would make the longest part of the report.
const NAIVE_IJK_MAX: usize = 1024;
const NAIVE_BACKWARD_MAX: usize = 512;

// ---------------------------------------------------------------------------------
// Timing

type Case<'a> = Box<dyn FnMut() + 'a>;

fn case<'a, R>(mut f: impl FnMut() -> R + 'a) -> Case<'a> {
    Box::new(move || {
        black_box(f());
    })
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    let m = xs.len() / 2;
    if xs.len() % 2 == 1 {
        xs[m]
    } else {
        0.5 * (xs[m - 1] + xs[m])
    }
}

/// Median seconds per call of each case, timed in interleaved rounds so that a change
/// in machine load shifts all of them alike (ratios between cases are what the report
/// is about). Calls under a millisecond are repeated in batches of about 2 ms so the
/// clock and the loop do not show.
///
/// Each timed batch follows one untimed call of the same case, so that every case is
/// timed in its own steady state: otherwise the case that runs after one which freed
/// more memory pays for the allocator giving pages back to the system and faulting them
/// in again (about 10% of a 1024×1024 product), and the order of the cases in a round
/// would show in the ratios. Cases of half a second or more skip that call, and their
/// first call counts as a sample.
fn time_together(budget: f64, cases: &mut [Case<'_>]) -> Timings {
    const LONG: f64 = 0.5;
    let mut batch = Vec::with_capacity(cases.len());
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for (c, s) in cases.iter_mut().zip(samples.iter_mut()) {
        let t = Instant::now();
        c();
        let first = t.elapsed().as_secs_f64();
        if first >= LONG {
            s.push(first);
        }
        batch.push((
            (2e-3 / first.max(1e-9)).ceil().max(1.0) as usize,
            first < LONG,
        ));
    }
    let round_cost: f64 = samples
        .iter()
        .map(|s| s.first().copied().unwrap_or(0.0))
        .sum();
    let (min_rounds, max_rounds) = if round_cost >= LONG { (3, 3) } else { (7, 41) };
    let start = Instant::now();
    loop {
        let done = samples.iter().map(Vec::len).min().unwrap_or(0);
        if done >= max_rounds || (done >= min_rounds && start.elapsed().as_secs_f64() >= budget) {
            break;
        }
        for ((c, s), &(k, warm)) in cases.iter_mut().zip(samples.iter_mut()).zip(&batch) {
            if s.len() > done {
                continue;
            }
            if warm {
                c();
            }
            let t = Instant::now();
            for _ in 0..k {
                c();
            }
            s.push(t.elapsed().as_secs_f64() / k as f64);
        }
    }
    Timings(samples)
}

/// Seconds per call, one row per case and one column per round.
struct Timings(Vec<Vec<f64>>);

impl Timings {
    fn median(&self, case: usize) -> f64 {
        median(&mut self.0[case].clone())
    }
    /// Median over rounds of `case / base` timed in the same round, steadier under a
    /// changing load than the ratio of the two medians.
    fn ratio(&self, case: usize, base: usize) -> f64 {
        let mut r: Vec<f64> = self.0[case]
            .iter()
            .zip(&self.0[base])
            .map(|(a, b)| a / b)
            .collect();
        median(&mut r)
    }
}

fn time_one(budget: f64, c: Case<'_>) -> f64 {
    time_together(budget, &mut [c]).median(0)
}

/// One raw `cblas_dgemm` of order `n` into a preallocated output: no allocation and no
/// shape checks, the ceiling the rules are held to.
struct Gemm {
    a: Array2<f64>,
    b: Array2<f64>,
    c: Array2<f64>,
}

impl Gemm {
    fn new(n: usize) -> Gemm {
        let mut rng = random::rng(99);
        Gemm {
            a: random::randn(n, n, &mut rng),
            b: random::randn(n, n, &mut rng),
            c: Array2::zeros((n, n)),
        }
    }
    fn n(&self) -> usize {
        self.a.nrows()
    }
    fn call(&mut self) {
        let n = self.n() as i32;
        // SAFETY: a, b and c are standard-layout n×n arrays, so row-major with ld = n.
        unsafe {
            cblas_sys::cblas_dgemm(
                cblas_sys::CblasRowMajor,
                cblas_sys::CblasNoTrans,
                cblas_sys::CblasNoTrans,
                n,
                n,
                n,
                1.0,
                self.a.as_ptr(),
                n,
                self.b.as_ptr(),
                n,
                0.0,
                self.c.as_mut_ptr(),
                n,
            )
        }
    }
}

/// DGEMM rate in GFLOP/s at order `n`, timed on its own.
fn gemm_rate(n: usize, budget: f64) -> f64 {
    let mut g = Gemm::new(n);
    matmul_flops(n) / time_one(budget, case(|| g.call())) / 1e9
}

fn matmul_flops(n: usize) -> f64 {
    2.0 * (n as f64).powi(3)
}

/// Flops of the Cholesky factorisation, `n³/3`.
fn chol_flops(n: usize) -> f64 {
    (n as f64).powi(3) / 3.0
}

fn rel_err(got: ArrayView2<'_, f64>, want: ArrayView2<'_, f64>) -> f64 {
    let scale = want.iter().fold(f64::MIN_POSITIVE, |m, x| m.max(x.abs()));
    let diff = got
        .iter()
        .zip(want.iter())
        .fold(0.0_f64, |m, (g, w)| m.max((g - w).abs()));
    diff / scale
}

/// Stops the report when a BLAS path and its loop disagree: a kernel the CPU cannot
/// run correctly must not produce a speed-up table.
fn agree(what: &str, got: ArrayView2<'_, f64>, want: ArrayView2<'_, f64>, tol: f64) -> Res<()> {
    let e = rel_err(got, want);
    if e > tol {
        return Err(
            format!("{what}: BLAS and naive results differ (relative error {e:.2e})").into(),
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// Measurements

/// One size of the matrix product; the naive fields are absent where capped or not run.
#[derive(Clone, Default)]
struct MatmulRow {
    n: usize,
    ijk: Option<f64>,
    ikj: Option<f64>,
    naive_bwd: Option<f64>,
    fwd: f64,
    dot: f64,
    bwd: f64,
    /// `backward_into` preallocated Ā and B̄ (GEMM with beta = 1, no allocation).
    bwd_into: f64,
    /// Paired ratios, see [`Timings::ratio`].
    fwd_over_dot: f64,
    bwd_over_fwd: f64,
    into_over_fwd: f64,
    /// The reference DGEMM rate timed alongside, and the paired fraction of it that the
    /// forward pass reaches.
    peak: Option<(f64, f64)>,
}

#[derive(Clone)]
struct StructRow {
    n: usize,
    naive_fwd: f64,
    fwd: f64,
    naive_bwd: f64,
    bwd: f64,
}

#[derive(Clone, Default)]
struct CholRow {
    n: usize,
    naive_fwd: Option<f64>,
    naive_bwd: Option<f64>,
    fwd: f64,
    blocked: f64,
    symbolic: f64,
}

struct SmallRow {
    n: usize,
    raw: f64,
    primitive: f64,
    ratio: f64,
}

struct Threaded {
    threads: usize,
    /// Reference DGEMM rate, GFLOP/s.
    gemm: f64,
    matmul: Vec<MatmulRow>,
    chol: Vec<CholRow>,
}

impl Threaded {
    fn peak_rate(&self) -> f64 {
        self.matmul
            .iter()
            .find_map(|r| r.peak)
            .map_or(f64::NAN, |p| p.0)
    }
}

struct Results {
    single: Threaded,
    structural: Vec<(&'static str, Vec<StructRow>)>,
    small: Vec<SmallRow>,
    multi: Option<Threaded>,
}

struct Sweep {
    bar: ProgressBar,
    budget: f64,
}

impl Sweep {
    fn step(&self, what: String) {
        self.bar.set_message(what);
    }
    fn done(&self) {
        self.bar.inc(1);
    }

    /// With `peak`, the reference DGEMM is timed in the same rounds as this size, so that
    /// the fraction of it that the primitive reaches does not drift with the machine.
    fn matmul(&self, n: usize, with_naive: bool, peak: Option<&mut Gemm>) -> Res<MatmulRow> {
        self.step(format!("MatMul n = {n}"));
        let mut rng = random::rng(1000 + n as u64);
        let a = random::randn::<f64>(n, n, &mut rng);
        let b = random::randn::<f64>(n, n, &mut rng);
        let cbar = random::randn::<f64>(n, n, &mut rng);
        let out = MatMul::nn().apply(a.view(), b.view())?;
        let (abar, bbar) = out.backward(cbar.view())?;
        let mut row = MatmulRow {
            n,
            ..Default::default()
        };
        // Accumulating into the same buffers round after round only grows their values.
        let mut ga = random::randn::<f64>(n, n, &mut rng);
        let mut gb = random::randn::<f64>(n, n, &mut rng);
        let peak_n = peak.as_ref().map(|g| g.n());
        let mut cases = vec![
            case(|| MatMul::nn().apply(a.view(), b.view())),
            case(|| a.dot(&b)),
            case(|| out.backward(cbar.view())),
            case(|| out.backward_into(cbar.view(), Some(ga.view_mut()), Some(gb.view_mut()))),
        ];
        if let Some(g) = peak {
            cases.push(case(|| g.call()));
        }
        let t = time_together(self.budget, &mut cases);
        drop(cases);
        if let Some(m) = peak_n {
            let rate = matmul_flops(m) / t.median(4) / 1e9;
            let fraction = matmul_flops(n) / matmul_flops(m) * t.ratio(4, 0);
            row.peak = Some((rate, fraction));
        }
        (row.fwd, row.dot, row.bwd) = (t.median(0), t.median(1), t.median(2));
        row.bwd_into = t.median(3);
        (row.fwd_over_dot, row.bwd_over_fwd) = (t.ratio(0, 1), t.ratio(2, 0));
        row.into_over_fwd = t.ratio(3, 0);
        if with_naive {
            let c_ikj = naive::matmul_ikj(a.view(), b.view())?;
            agree("MatMul forward", out.value().view(), c_ikj.view(), 1e-12)?;
            row.ikj = Some(time_one(
                self.budget,
                case(|| naive::matmul_ikj(a.view(), b.view())),
            ));
            if n <= NAIVE_IJK_MAX {
                row.ijk = Some(time_one(
                    self.budget,
                    case(|| naive::matmul_ijk(a.view(), b.view())),
                ));
            }
            if n <= NAIVE_BACKWARD_MAX {
                let (na, nb) = naive::matmul_backward(a.view(), b.view(), cbar.view())?;
                agree("MatMul Ā", abar.view(), na.view(), 1e-12)?;
                agree("MatMul B̄", bbar.view(), nb.view(), 1e-12)?;
                row.naive_bwd = Some(time_one(
                    self.budget,
                    case(|| naive::matmul_backward(a.view(), b.view(), cbar.view())),
                ));
            }
        }
        self.done();
        Ok(row)
    }

    fn chol(&self, n: usize, with_naive: bool) -> Res<CholRow> {
        self.step(format!("Cholesky n = {n}"));
        let mut rng = random::rng(2000 + n as u64);
        let a = random::spd::<f64>(n, &mut rng);
        let lbar = naive::tril(random::randn::<f64>(n, n, &mut rng).view(), 0);
        let l = chol::cholesky(a.view())?;
        let block = <f64 as Real>::CHOL_BLOCK;
        let blocked = chol::backward_blocked(l.view(), lbar.clone(), block, Convention::Lower)?;
        let symbolic = chol::backward_symbolic(l.view(), lbar.view(), Convention::Lower)?;
        agree(
            "Cholesky backward blocked vs symbolic",
            blocked.view(),
            symbolic.view(),
            1e-8,
        )?;
        let mut row = CholRow {
            n,
            ..Default::default()
        };
        // The blocked pass consumes L̄, so its time includes one n×n copy (as the
        // symbolic pass and the primitive's own backward make one too).
        let t = time_together(
            self.budget,
            &mut [
                case(|| chol::cholesky(a.view())),
                case(|| chol::backward_blocked(l.view(), lbar.clone(), block, Convention::Lower)),
                case(|| chol::backward_symbolic(l.view(), lbar.view(), Convention::Lower)),
            ],
        );
        (row.fwd, row.blocked, row.symbolic) = (t.median(0), t.median(1), t.median(2));
        if with_naive {
            let nl = naive::cholesky::cholesky(a.view())?;
            agree("Cholesky forward", l.view(), nl.view(), 1e-10)?;
            let nabar = naive::cholesky::cholesky_backward(l.view(), lbar.view())?;
            agree(
                "Cholesky backward",
                naive::tril(blocked.view(), 0).view(),
                naive::tril(nabar.view(), 0).view(),
                1e-8,
            )?;
            row.naive_fwd = Some(time_one(
                self.budget,
                case(|| naive::cholesky::cholesky(a.view())),
            ));
            row.naive_bwd = Some(time_one(
                self.budget,
                case(|| naive::cholesky::cholesky_backward(l.view(), lbar.view())),
            ));
        }
        self.done();
        Ok(row)
    }

    fn small(&self, n: usize) -> Res<SmallRow> {
        self.step(format!("small-matrix overhead n = {n}"));
        let mut rng = random::rng(3000 + n as u64);
        let a = random::randn::<f64>(n, n, &mut rng);
        let b = random::randn::<f64>(n, n, &mut rng);
        let cbar = random::randn::<f64>(n, n, &mut rng);
        let t = time_together(
            3.0 * self.budget,
            &mut [
                case(|| (a.dot(&b), cbar.dot(&b.t()), a.t().dot(&cbar))),
                case(|| {
                    let out = MatMul::nn().apply(a.view(), b.view())?;
                    out.backward(cbar.view())
                }),
            ],
        );
        self.done();
        Ok(SmallRow {
            n,
            raw: t.median(0),
            primitive: t.median(1),
            ratio: t.ratio(1, 0),
        })
    }

    fn structural(&self, name: &'static str, n: usize) -> Res<StructRow> {
        self.step(format!("{name} n = {n}"));
        let mut rng = random::rng(4000 + n as u64);
        let a = random::randn::<f64>(n, n, &mut rng);
        let b = random::randn::<f64>(n, n, &mut rng);
        let cbar = random::randn::<f64>(n, n, &mut rng);
        let vbar = random::randn::<f64>(n * n, 1, &mut rng);
        let budget = self.budget;
        let t = match name {
            "Transpose" => {
                let out = Transpose.apply(a.view())?;
                agree(
                    name,
                    out.value().view(),
                    naive::transpose(a.view()).view(),
                    0.0,
                )?;
                let t = time_together(
                    budget,
                    &mut [
                        case(|| naive::transpose(a.view())),
                        case(|| Transpose.apply(a.view())),
                        case(|| naive::transpose_backward(cbar.view())),
                        case(|| out.backward(cbar.view())),
                    ],
                );
                t
            }
            "Add" => {
                let out = Add.apply(a.view(), b.view())?;
                agree(
                    name,
                    out.value().view(),
                    naive::add(a.view(), b.view())?.view(),
                    0.0,
                )?;
                let t = time_together(
                    budget,
                    &mut [
                        case(|| naive::add(a.view(), b.view())),
                        case(|| Add.apply(a.view(), b.view())),
                        case(|| naive::add_backward(cbar.view())),
                        case(|| out.backward(cbar.view())),
                    ],
                );
                t
            }
            "Tril" => {
                let out = Tril { k: 0 }.apply(a.view())?;
                agree(
                    name,
                    out.value().view(),
                    naive::tril(a.view(), 0).view(),
                    0.0,
                )?;
                let t = time_together(
                    budget,
                    &mut [
                        case(|| naive::tril(a.view(), 0)),
                        case(|| Tril { k: 0 }.apply(a.view())),
                        case(|| naive::tril_backward(cbar.view(), 0)),
                        case(|| out.backward(cbar.view())),
                    ],
                );
                t
            }
            _ => {
                let out = VecOp.apply(a.view())?;
                agree(name, out.value().view(), naive::vec(a.view()).view(), 0.0)?;
                let t = time_together(
                    budget,
                    &mut [
                        case(|| naive::vec(a.view())),
                        case(|| VecOp.apply(a.view())),
                        case(|| naive::vec_backward(vbar.view(), n, n)),
                        case(|| out.backward(vbar.view())),
                    ],
                );
                t
            }
        };
        self.done();
        Ok(StructRow {
            n,
            naive_fwd: t.median(0),
            fwd: t.median(1),
            naive_bwd: t.median(2),
            bwd: t.median(3),
        })
    }
}

const STRUCTURAL: [&str; 4] = ["Transpose", "Add", "Tril", "Vec"];
const SMALL: [usize; 2] = [8, 32];

fn run(opts: &Options, cores: usize) -> Res<Results> {
    let sizes = opts.sizes();
    let tsizes = opts.threaded_sizes();
    let multi = cores >= 2;
    let steps = sizes.len() * (2 + STRUCTURAL.len())
        + SMALL.len()
        + if multi { 2 * tsizes.len() } else { 0 };
    let bar = ProgressBar::new(steps as u64).with_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} {msg}")?
            .progress_chars("=> "),
    );
    let sweep = Sweep {
        bar,
        budget: opts.budget(),
    };

    let mut gemm = Gemm::new(opts.gemm_n());
    let threads = set_threads(1);
    let mut single = Threaded {
        threads,
        gemm: f64::NAN,
        matmul: Vec::new(),
        chol: Vec::new(),
    };
    for (i, &n) in sizes.iter().enumerate() {
        let peak = (i + 1 == sizes.len()).then_some(&mut gemm);
        single.matmul.push(sweep.matmul(n, true, peak)?);
    }
    single.gemm = single.peak_rate();
    for &n in &sizes {
        single.chol.push(sweep.chol(n, true)?);
    }
    let mut structural = Vec::new();
    for name in STRUCTURAL {
        let rows = sizes
            .iter()
            .map(|&n| sweep.structural(name, n))
            .collect::<Res<Vec<_>>>()?;
        structural.push((name, rows));
    }
    let small = SMALL
        .iter()
        .map(|&n| sweep.small(n))
        .collect::<Res<Vec<_>>>()?;

    let multi = if multi {
        let threads = set_threads(2);
        let mut t = Threaded {
            threads,
            gemm: f64::NAN,
            matmul: Vec::new(),
            chol: Vec::new(),
        };
        for (i, &n) in tsizes.iter().enumerate() {
            let peak = (i + 1 == tsizes.len()).then_some(&mut gemm);
            t.matmul.push(sweep.matmul(n, false, peak)?);
        }
        t.gemm = t.peak_rate();
        for &n in &tsizes {
            t.chol.push(sweep.chol(n, false)?);
        }
        set_threads(1);
        Some(t)
    } else {
        None
    };
    sweep.bar.finish_and_clear();
    Ok(Results {
        single,
        structural,
        small,
        multi,
    })
}

// ---------------------------------------------------------------------------------
// Machine description

struct Machine {
    date: String,
    cpu: String,
    cores: usize,
    blas: String,
    core: String,
    detected: Option<(String, f64)>,
    env_threads: String,
    load: String,
    /// Share of all cores that other processes kept busy during the run.
    others_busy: Option<f64>,
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown (no /proc/cpuinfo)".to_string())
}

fn cpu_flags() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("flags"))
                .map(str::to_string)
        })
        .unwrap_or_default()
}

/// The OpenBLAS kernel this CPU can run when OpenBLAS fell back to its generic one.
fn better_kernel(detected: &str) -> Option<&'static str> {
    if detected != "Prescott" {
        return None;
    }
    let flags = cpu_flags();
    let has = |f: &str| flags.split_whitespace().any(|x| x == f);
    if has("avx512f") {
        Some("SkylakeX")
    } else if has("avx2") {
        Some("Haswell")
    } else {
        None
    }
}

/// `YYYY-MM-DD HH:MM UTC` from the system clock (days to civil date after
/// H. Hinnant's `civil_from_days`).
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// CPU time from `/proc/stat` (all cores) and `/proc/self/stat` (this process, all
/// its threads), in clock ticks.
#[derive(Clone, Copy)]
struct CpuTicks {
    busy: u64,
    total: u64,
    own: u64,
}

impl CpuTicks {
    fn now() -> Option<CpuTicks> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let cpu: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .map(|x| x.parse().ok())
            .collect::<Option<_>>()?;
        let total: u64 = cpu.iter().take(8).sum();
        let idle = cpu.get(3)? + cpu.get(4)?;
        let me = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the parenthesised command name start at `state`, field 3.
        let rest: Vec<&str> = me.rsplit_once(')')?.1.split_whitespace().collect();
        let own = rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?;
        Some(CpuTicks {
            busy: total - idle,
            total,
            own,
        })
    }
    fn others_busy_since(self) -> Option<f64> {
        let now = CpuTicks::now()?;
        let total = now.total.checked_sub(self.total)?;
        let others = (now.busy - self.busy).saturating_sub(now.own - self.own);
        (total > 0).then(|| others as f64 / total as f64)
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_string())
}

// ---------------------------------------------------------------------------------
// Peers

struct PeerRow {
    library: String,
    op: String,
    n: usize,
    threads: usize,
    pass: String,
    median_s: f64,
}

fn read_peers(path: &Path) -> Res<Option<Vec<PeerRow>>> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(None);
    };
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        if line.trim().is_empty() || f.first() == Some(&"library") {
            continue;
        }
        let bad = || {
            format!(
                "{}:{}: expected library,op,n,threads,pass,median_s",
                path.display(),
                i + 1
            )
        };
        if f.len() != 6 {
            return Err(bad().into());
        }
        rows.push(PeerRow {
            library: f[0].to_string(),
            op: f[1].to_string(),
            n: f[2].parse().map_err(|_| bad())?,
            threads: f[3].parse().map_err(|_| bad())?,
            pass: f[4].to_string(),
            median_s: f[5].parse().map_err(|_| bad())?,
        });
    }
    Ok(Some(rows))
}

// ---------------------------------------------------------------------------------
// Report

/// Three significant figures in the unit that keeps the number between 1 and 1000.
fn secs(t: f64) -> String {
    let (v, unit) = if t < 1e-6 {
        (t * 1e9, "ns")
    } else if t < 1e-3 {
        (t * 1e6, "µs")
    } else if t < 1.0 {
        (t * 1e3, "ms")
    } else {
        (t, "s")
    };
    let digits = if v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else {
        2
    };
    format!("{v:.digits$} {unit}")
}

fn opt_secs(t: Option<f64>) -> String {
    t.map_or_else(|| "—".to_string(), secs)
}

fn ratio(num: Option<f64>, den: f64) -> String {
    num.map_or_else(|| "—".to_string(), |x| format!("{:.1}×", x / den))
}

fn mark(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**not met**"
    }
}

struct Headline {
    lines: Vec<String>,
}

fn headline(r: &Results) -> Headline {
    let mut lines = Vec::new();
    let s = &r.single;
    if let Some(big) = s.matmul.last() {
        let n = big.n;
        let (into, alloc) = (big.into_over_fwd, big.bwd_over_fwd);
        lines.push(format!(
            "MatMul backward (Ā and B̄) / forward at n = {n}, 1 thread: **{into:.3}** into preallocated \
             buffers with `backward_into` (target ≤ 2.05: {}); **{alloc:.3}** with `backward`, which also \
             allocates Ā and B̄ (see the note under the backward table)",
            mark(into <= 2.05)
        ));
        let frac = big.peak.map_or(f64::NAN, |p| p.1);
        lines.push(format!(
            "MatMul forward at n = {n}, 1 thread: **{:.1} GFLOP/s = {:.0}%** of the measured DGEMM rate \
             ({:.1} GFLOP/s) (target ≥ 90%: {})",
            matmul_flops(n) / big.fwd / 1e9,
            100.0 * frac,
            s.gemm,
            mark(frac >= 0.9)
        ));
        let vs = big.fwd_over_dot - 1.0;
        lines.push(format!(
            "MatMul forward vs raw ndarray `a.dot(&b)` at n = {n}, 1 thread: **{:+.1}%** (target within ±5%: {})",
            100.0 * vs,
            mark(vs.abs() <= 0.05)
        ));
        let across = |naive: fn(&MatmulRow) -> Option<f64>| {
            s.matmul
                .iter()
                .filter_map(|r| naive(r).map(|t| format!("{:.0}× at {}", t / r.fwd, r.n)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        lines.push(format!(
            "BLAS over the naive loops, MatMul forward, 1 thread (the seed's \"about 50×\"): over textbook \
             i-j-k **{}**; over cache-friendly i-k-j **{}**",
            across(|r| r.ijk),
            across(|r| r.ikj)
        ));
    }
    if let (Some(naive), Some(c)) = (s.chol.last().and_then(|c| c.naive_bwd), s.chol.last()) {
        lines.push(format!(
            "Cholesky at n = {}, 1 thread: LAPACK forward {:.0}× faster than the naive loop, blocked \
             backward {:.0}× faster than the naive reverse loop and {:.2}× the symbolic one; \
             backward / forward {:.2}",
            c.n,
            c.naive_fwd.unwrap_or(f64::NAN) / c.fwd,
            naive / c.blocked,
            c.symbolic / c.blocked,
            c.blocked / c.fwd
        ));
    }
    for row in &r.small {
        let x = row.ratio;
        lines.push(format!(
            "Small matrices, n = {}: forward + backward through the primitive / the 3 raw `dot` calls = \
             **{x:.2}×** (target ≤ 1.5×: {})",
            row.n,
            mark(x <= 1.5)
        ));
    }
    if let Some(m) = &r.multi {
        if let (Some(one), Some(two)) = (
            s.matmul.last(),
            m.matmul
                .iter()
                .find(|x| Some(x.n) == s.matmul.last().map(|y| y.n)),
        ) {
            lines.push(format!(
                "{} threads: MatMul forward at n = {} runs {:.2}× as fast as at 1 thread \
                 (DGEMM rate {:.1} vs {:.1} GFLOP/s)",
                m.threads,
                one.n,
                one.fwd / two.fwd,
                m.gemm,
                s.gemm
            ));
        }
    }
    Headline { lines }
}

fn write_markdown(
    r: &Results,
    m: &Machine,
    h: &Headline,
    peers: Option<&[PeerRow]>,
    opts: &Options,
) -> Res<String> {
    let mut o = String::new();
    let s = &r.single;
    writeln!(o, "# Benchmarks\n")?;
    writeln!(
        o,
        "Generated by `cargo run --release --example bench_report`{} on {}; do not edit by hand, run it again.\n",
        if opts.quick { " -- --quick (a smoke-test sweep, not for quoting)" } else { "" },
        m.date
    )?;
    writeln!(o, "| | |\n|---|---|")?;
    writeln!(o, "| CPU | {} ({} cores online) |", m.cpu, m.cores)?;
    writeln!(o, "| BLAS | {} |", m.blas)?;
    let core_note = match &m.detected {
        Some((k, rate)) => format!(
            "{} (set through `OPENBLAS_CORETYPE`; OpenBLAS detected `{k}` by itself, whose DGEMM runs at \
             {rate:.1} GFLOP/s on one thread here; `--detected-kernel` keeps it)",
            m.core
        ),
        None => match std::env::var("OPENBLAS_CORETYPE") {
            Ok(v) => format!("{} (`OPENBLAS_CORETYPE={v}`)", m.core),
            Err(_) => format!("{} (as detected)", m.core),
        },
    };
    writeln!(o, "| OpenBLAS kernel | {core_note} |")?;
    writeln!(
        o,
        "| Threads | sweep at {} OpenBLAS thread, main cases again at {} (set with `openblas_set_num_threads`); \
         `OPENBLAS_NUM_THREADS` = {} |",
        s.threads,
        r.multi.as_ref().map_or("— (one core)".to_string(), |t| t.threads.to_string()),
        m.env_threads
    )?;
    writeln!(
        o,
        "| Measured DGEMM rate | {:.1} GFLOP/s at 1 thread{} (one raw `cblas_dgemm` of order {} into a \
         preallocated output, median, timed in the same rounds as the largest MatMul; the fractions of it \
         quoted at that size are medians of per-round ratios) |",
        s.gemm,
        r.multi.as_ref().map_or(String::new(), |t| format!(", {:.1} GFLOP/s at {} threads", t.gemm, t.threads)),
        opts.gemm_n()
    )?;
    writeln!(
        o,
        "| Timing | f64, square n×n inputs, median of interleaved repeated runs (at least 7, or 3 for runs over \
         half a second), short calls batched to about 2 ms; ratios of cases timed together are medians of \
         per-round ratios; load average at start {}; CPU used by other processes during the run {} |",
        m.load,
        m.others_busy.map_or("unknown".to_string(), |b| format!("{:.0}%", 100.0 * b))
    )?;
    writeln!(o)?;
    if let Some(busy) = m.others_busy.filter(|&b| b >= 0.1) {
        writeln!(
            o,
            "> Other processes kept {:.0}% of the CPU busy during this run, so its timings are noisier than \
             on an idle machine; paired ratios suffer least. Run it again on an idle machine before quoting \
             absolute times.\n",
            100.0 * busy
        )?;
    }
    writeln!(
        o,
        "![time against n, naive loops and BLAS, forward and backward](benchmarks.svg)\n"
    )?;

    writeln!(o, "## Headline\n")?;
    for l in &h.lines {
        writeln!(o, "- {l}")?;
    }
    writeln!(
        o,
        "\n\"Naive\" is the scalar loop one would write by hand (`matgrad::naive`, plain indexed loops \
         over ndarray views, no blocking); \"BLAS\" is the primitive (`MatMul`, `Cholesky`, …) as a user \
         calls it, allocation and shape checks included. Speed-up = naive time / BLAS time.\n"
    )?;

    writeln!(o, "## MatMul, C = AB, 1 thread\n")?;
    writeln!(
        o,
        "| n | naive i-j-k | naive i-k-j | BLAS forward | speed-up vs i-j-k | vs i-k-j | GFLOP/s | % of DGEMM rate \
         | ndarray `dot` | forward / `dot` |"
    )?;
    writeln!(o, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for row in &s.matmul {
        let g = matmul_flops(row.n) / row.fwd / 1e9;
        writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {:.1} | {:.0}% | {} | {:.3} |",
            row.n,
            opt_secs(row.ijk),
            opt_secs(row.ikj),
            secs(row.fwd),
            ratio(row.ijk, row.fwd),
            ratio(row.ikj, row.fwd),
            g,
            100.0 * row.peak.map_or(g / s.gemm, |p| p.1),
            secs(row.dot),
            row.fwd_over_dot
        )?;
    }
    writeln!(
        o,
        "\nBackward, Ā = C̄Bᵀ and B̄ = AᵀC̄ (two products, so 2× the forward flops):\n"
    )?;
    writeln!(
        o,
        "| n | naive backward | BLAS `backward` | speed-up | backward / forward | `backward_into` \
         | backward_into / forward | GFLOP/s (into) | % of DGEMM rate |"
    )?;
    writeln!(o, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for row in &s.matmul {
        let g = 2.0 * matmul_flops(row.n) / row.bwd_into / 1e9;
        writeln!(
            o,
            "| {} | {} | {} | {} | {:.3} | {} | {:.3} | {:.1} | {:.0}% |",
            row.n,
            opt_secs(row.naive_bwd),
            secs(row.bwd),
            ratio(row.naive_bwd, row.bwd),
            row.bwd_over_fwd,
            secs(row.bwd_into),
            row.into_over_fwd,
            g,
            100.0 * g / s.gemm
        )?;
    }
    writeln!(
        o,
        "\n`backward` returns new Ā and B̄; `backward_into` adds them into buffers the caller keeps \
         (GEMM with beta = 1), which is what a training loop reuses. At n = 1024 the two outputs of \
         `backward` are 16 MB, past glibc's default trim threshold: every call returns them to the \
         system and faults them in again, which the allocating column includes."
    )?;
    writeln!(
        o,
        "\nNaive i-j-k runs up to n = {NAIVE_IJK_MAX} and the naive backward up to n = {NAIVE_BACKWARD_MAX}; \
         beyond that one call takes many seconds (\"—\").\n"
    )?;

    writeln!(o, "## Cholesky, A = LLᵀ, 1 thread\n")?;
    writeln!(
        o,
        "| n | naive forward | LAPACK forward | speed-up | GFLOP/s | % of DGEMM rate | naive backward | blocked backward \
         | symbolic backward | speed-up (blocked) | symbolic / blocked | backward / forward |"
    )?;
    writeln!(
        o,
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )?;
    for c in &s.chol {
        let g = chol_flops(c.n) / c.fwd / 1e9;
        writeln!(
            o,
            "| {} | {} | {} | {} | {:.1} | {:.0}% | {} | {} | {} | {} | {:.2} | {:.2} |",
            c.n,
            opt_secs(c.naive_fwd),
            secs(c.fwd),
            ratio(c.naive_fwd, c.fwd),
            g,
            100.0 * g / s.gemm,
            opt_secs(c.naive_bwd),
            secs(c.blocked),
            secs(c.symbolic),
            ratio(c.naive_bwd, c.blocked),
            c.symbolic / c.blocked,
            c.blocked / c.fwd
        )?;
    }
    writeln!(
        o,
        "\nBackward in the lower-triangle convention (`Convention::Lower`, which the naive reverse loop \
         computes), blocked with block {} (`Real::CHOL_BLOCK`); the naive loops are \
         `matgrad::naive::cholesky`. GFLOP/s counts n³/3 for the factorisation.\n",
        <f64 as Real>::CHOL_BLOCK
    )?;

    if let Some(t) = &r.multi {
        writeln!(o, "## Main cases at {} threads\n", t.threads)?;
        writeln!(
            o,
            "| n | MatMul forward | `backward` | backward / forward | `backward_into` | backward_into / forward \
             | GFLOP/s | % of {}-thread DGEMM rate | ndarray `dot` | forward / `dot` | speed-up over 1 thread |",
            t.threads
        )?;
        writeln!(
            o,
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        )?;
        for row in &t.matmul {
            let g = matmul_flops(row.n) / row.fwd / 1e9;
            let one = s.matmul.iter().find(|x| x.n == row.n).map(|x| x.fwd);
            writeln!(
                o,
                "| {} | {} | {} | {:.3} | {} | {:.3} | {:.1} | {:.0}% | {} | {:.3} | {} |",
                row.n,
                secs(row.fwd),
                secs(row.bwd),
                row.bwd_over_fwd,
                secs(row.bwd_into),
                row.into_over_fwd,
                g,
                100.0 * row.peak.map_or(g / t.gemm, |p| p.1),
                secs(row.dot),
                row.fwd_over_dot,
                ratio(one, row.fwd)
            )?;
        }
        writeln!(o, "\n| n | Cholesky forward | blocked backward | symbolic backward | backward / forward |")?;
        writeln!(o, "|---:|---:|---:|---:|---:|")?;
        for c in &t.chol {
            writeln!(
                o,
                "| {} | {} | {} | {} | {:.2} |",
                c.n,
                secs(c.fwd),
                secs(c.blocked),
                secs(c.symbolic),
                c.blocked / c.fwd
            )?;
        }
        writeln!(o)?;
    }

    writeln!(
        o,
        "## Small matrices: fixed cost of the primitive, 1 thread\n"
    )?;
    writeln!(
        o,
        "Forward and backward through `MatMul` (`apply` then `backward`) against the three raw ndarray `dot` \
         calls they consist of (C = AB, C̄Bᵀ, AᵀC̄), timed together. Target ≤ 1.5×.\n"
    )?;
    writeln!(
        o,
        "| n | 3 × `dot` | primitive forward + backward | ratio |"
    )?;
    writeln!(o, "|---:|---:|---:|---:|")?;
    for row in &r.small {
        writeln!(
            o,
            "| {} | {} | {} | {:.2}× |",
            row.n,
            secs(row.raw),
            secs(row.primitive),
            row.ratio
        )?;
    }
    writeln!(o)?;

    writeln!(o, "## Transpose, Add, Tril, Vec, 1 thread\n")?;
    writeln!(
        o,
        "These move memory and do no arithmetic worth a BLAS call; GB/s counts one n×n f64 read and one \
         written per forward. A backward that returns two n×n outputs (Add) meets the allocator effect \
         described under the MatMul backward table at n = 1024.\n"
    )?;
    writeln!(o, "| primitive | n | naive forward | forward | speed-up | naive backward | backward | speed-up | backward / forward | GB/s |")?;
    writeln!(o, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for (name, rows) in &r.structural {
        for row in rows {
            let bytes = 2.0 * (row.n * row.n * 8) as f64;
            writeln!(
                o,
                "| {name} | {} | {} | {} | {} | {} | {} | {} | {:.2} | {:.1} |",
                row.n,
                secs(row.naive_fwd),
                secs(row.fwd),
                ratio(Some(row.naive_fwd), row.fwd),
                secs(row.naive_bwd),
                secs(row.bwd),
                ratio(Some(row.naive_bwd), row.bwd),
                row.bwd / row.fwd,
                bytes / row.fwd / 1e9
            )?;
        }
    }
    writeln!(o)?;

    if let Some(rows) = peers {
        write_peers(&mut o, rows)?;
    }
    Ok(o)
}

fn write_peers(o: &mut String, rows: &[PeerRow]) -> Res<()> {
    let mut libs: Vec<&str> = Vec::new();
    for r in rows {
        if r.library != "matgrad" && !libs.contains(&r.library.as_str()) {
            libs.push(&r.library);
        }
    }
    type Key<'a> = (&'a str, usize, &'a str, usize);
    let mut table: BTreeMap<Key<'_>, BTreeMap<&str, f64>> = BTreeMap::new();
    for r in rows {
        table
            .entry((r.op.as_str(), r.threads, r.pass.as_str(), r.n))
            .or_default()
            .insert(r.library.as_str(), r.median_s);
    }
    writeln!(o, "## Against other libraries\n")?;
    writeln!(
        o,
        "From `docs/peers.csv`, written by `bash benches/peers/run.sh`, which times every library, matgrad \
         included, in the same run (one process per library and thread count). Ratio = matgrad time / \
         peer time: below 1 matgrad is faster.\n"
    )?;
    write!(o, "| op | threads | pass | n | matgrad |")?;
    for l in &libs {
        write!(o, " {l} | matgrad / {l} |")?;
    }
    writeln!(o)?;
    writeln!(
        o,
        "|---|---:|---|---:|---:|{}",
        "---:|---:|".repeat(libs.len())
    )?;
    for ((op, threads, pass, n), by_lib) in &table {
        let Some(&mine) = by_lib.get("matgrad") else {
            continue;
        };
        write!(o, "| {op} | {threads} | {pass} | {n} | {} |", secs(mine))?;
        for l in &libs {
            match by_lib.get(l) {
                Some(&t) => write!(o, " {} | {:.2} |", secs(t), mine / t)?,
                None => write!(o, " — | — |")?,
            }
        }
        writeln!(o)?;
    }
    writeln!(o)?;
    Ok(())
}

// ---------------------------------------------------------------------------------
// Picture

struct Series {
    label: &'static str,
    colour: RGBColor,
    backward: bool,
    points: Vec<(f64, f64)>,
}

fn series(
    label: &'static str,
    colour: RGBColor,
    backward: bool,
    points: impl Iterator<Item = (usize, Option<f64>)>,
) -> Series {
    let points = points
        .filter_map(|(n, t)| t.map(|t| (n as f64, t)))
        .collect();
    Series {
        label,
        colour,
        backward,
        points,
    }
}

const BLAS_COLOUR: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const IJK_COLOUR: RGBColor = RGBColor(0xd6, 0x27, 0x28);
const IKJ_COLOUR: RGBColor = RGBColor(0xff, 0x7f, 0x0e);
const ALT_COLOUR: RGBColor = RGBColor(0x2c, 0xa0, 0x2c);

fn panels(r: &Results) -> Vec<(String, Vec<Series>)> {
    let mm = &r.single.matmul;
    let ch = &r.single.chol;
    vec![
        (
            "MatMul C = AB, f64, 1 thread".to_string(),
            vec![
                series(
                    "naive i-j-k forward",
                    IJK_COLOUR,
                    false,
                    mm.iter().map(|x| (x.n, x.ijk)),
                ),
                series(
                    "naive i-k-j forward",
                    IKJ_COLOUR,
                    false,
                    mm.iter().map(|x| (x.n, x.ikj)),
                ),
                series(
                    "naive backward",
                    IJK_COLOUR,
                    true,
                    mm.iter().map(|x| (x.n, x.naive_bwd)),
                ),
                series(
                    "BLAS forward",
                    BLAS_COLOUR,
                    false,
                    mm.iter().map(|x| (x.n, Some(x.fwd))),
                ),
                series(
                    "BLAS backward",
                    BLAS_COLOUR,
                    true,
                    mm.iter().map(|x| (x.n, Some(x.bwd))),
                ),
            ],
        ),
        (
            "Cholesky A = LLᵀ, f64, 1 thread".to_string(),
            vec![
                series(
                    "naive forward",
                    IJK_COLOUR,
                    false,
                    ch.iter().map(|x| (x.n, x.naive_fwd)),
                ),
                series(
                    "naive backward",
                    IJK_COLOUR,
                    true,
                    ch.iter().map(|x| (x.n, x.naive_bwd)),
                ),
                series(
                    "LAPACK forward",
                    BLAS_COLOUR,
                    false,
                    ch.iter().map(|x| (x.n, Some(x.fwd))),
                ),
                series(
                    "blocked backward",
                    BLAS_COLOUR,
                    true,
                    ch.iter().map(|x| (x.n, Some(x.blocked))),
                ),
                series(
                    "symbolic backward",
                    ALT_COLOUR,
                    true,
                    ch.iter().map(|x| (x.n, Some(x.symbolic))),
                ),
            ],
        ),
    ]
}

fn write_svg(path: &Path, r: &Results) -> Res<()> {
    let panels = panels(r);
    let root = SVGBackend::new(path, (1200, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let areas = root.split_evenly((1, panels.len()));
    for (area, (title, all)) in areas.iter().zip(&panels) {
        let pts = all.iter().flat_map(|s| s.points.iter().copied());
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for (x, y) in pts {
            (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
        }
        if x0 > x1 {
            continue;
        }
        let mut sizes: Vec<f64> = all
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0))
            .collect();
        sizes.sort_by(f64::total_cmp);
        sizes.dedup();
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(
                (x0 / 1.3..x1 * 1.3).log_scale().with_key_points(sizes),
                (y0 / 3.0..y1 * 3.0).log_scale(),
            )?;
        chart
            .configure_mesh()
            .x_desc("n (matrices n×n)")
            .y_desc("median time per call (s)")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.0e}"))
            .draw()?;
        for s in all.iter().filter(|s| !s.points.is_empty()) {
            let style = s.colour.stroke_width(2);
            let anno = if s.backward {
                chart.draw_series(DashedLineSeries::new(s.points.iter().copied(), 8, 5, style))?
            } else {
                chart.draw_series(LineSeries::new(s.points.iter().copied(), style))?
            };
            let (colour, backward) = (s.colour, s.backward);
            anno.label(s.label).legend(move |(x, y)| {
                let style = colour.stroke_width(2);
                if backward {
                    PathElement::new(vec![(x, y), (x + 7, y)], style)
                } else {
                    PathElement::new(vec![(x, y), (x + 20, y)], style)
                }
            });
            chart.draw_series(s.points.iter().map(|&p| {
                if backward {
                    Circle::new(p, 3, colour.stroke_width(2))
                } else {
                    Circle::new(p, 3, colour.filled())
                }
            }))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .draw()?;
    }
    root.present()?;
    Ok(())
}

// ---------------------------------------------------------------------------------

/// Runs this program again with the kernel the CPU supports, when OpenBLAS fell back
/// to its generic one; returns `false` when no re-run is needed.
fn rerun_with_better_kernel(opts: &Options) -> Res<bool> {
    if opts.keep_kernel || std::env::var_os("OPENBLAS_CORETYPE").is_some() {
        return Ok(false);
    }
    let detected = blas_core();
    let Some(kernel) = better_kernel(&detected) else {
        return Ok(false);
    };
    set_threads(1);
    let rate = gemm_rate(opts.gemm_n() / 2, 0.5);
    eprintln!(
        "OpenBLAS chose its generic {detected} kernel ({rate:.1} GFLOP/s); running again with \
         OPENBLAS_CORETYPE={kernel} (pass --detected-kernel to keep {detected})"
    );
    let status = Command::new(std::env::current_exe()?)
        .args(std::env::args_os().skip(1))
        .env("OPENBLAS_CORETYPE", kernel)
        .env(DETECTED_ENV, format!("{detected} {rate}"))
        .status()?;
    if !status.success() {
        return Err(format!("the run with OPENBLAS_CORETYPE={kernel} failed ({status})").into());
    }
    Ok(true)
}

fn main() -> Res<()> {
    let opts = Options::parse()?;
    if rerun_with_better_kernel(&opts)? {
        return Ok(());
    }
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut machine = Machine {
        date: utc_now(),
        cpu: cpu_model(),
        cores,
        blas: blas_config(),
        core: blas_core(),
        detected: std::env::var(DETECTED_ENV).ok().and_then(|v| {
            let (k, r) = v.split_once(' ')?;
            Some((k.to_string(), r.parse().ok()?))
        }),
        env_threads: std::env::var("OPENBLAS_NUM_THREADS").unwrap_or_else(|_| "unset".to_string()),
        load: load_average(),
        others_busy: None,
    };
    eprintln!(
        "{} | {} cores | {} | load {}",
        machine.cpu, machine.cores, machine.blas, machine.load
    );
    let before = CpuTicks::now();
    let results = run(&opts, cores)?;
    machine.others_busy = before.and_then(|b| b.others_busy_since());
    let head = headline(&results);
    std::fs::create_dir_all(&opts.out)?;
    let peers = read_peers(&opts.out.join("peers.csv"))?;
    let md = write_markdown(&results, &machine, &head, peers.as_deref(), &opts)?;
    let md_path = opts.out.join("benchmarks.md");
    let svg_path = opts.out.join("benchmarks.svg");
    std::fs::write(&md_path, md)?;
    write_svg(&svg_path, &results)?;
    for l in &head.lines {
        println!("- {}", l.replace("**", ""));
    }
    println!("wrote {} and {}", md_path.display(), svg_path.display());
    Ok(())
}
