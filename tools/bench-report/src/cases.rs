//! What the report measures: every case, its inputs, the check of the BLAS path against
//! the naive loop before it is timed, and the rows the tables are made of.

use crate::Options;
use bench_report::machine::{matmul_flops, set_threads, Gemm};
use bench_report::timing::{case, time_one, time_together};
use bench_report::Res;
use indicatif::{ProgressBar, ProgressStyle};
use matgrad::check::random;
use matgrad::naive;
use matgrad::ops::cholesky::{self as chol, Convention, Method};
use matgrad::prelude::*;
use ndarray::linalg::general_mat_mul;
use ndarray::{Array2, ArrayView2, ArrayViewMut2};

/// The i-j-k product and the naive backward walk columns with a stride of `n`: at
/// n = 1024 one i-j-k call takes about 5 s and one naive backward about twice that,
/// which three timed runs would make the longest part of the report.
pub const NAIVE_IJK_MAX: usize = 1024;
pub const NAIVE_BACKWARD_MAX: usize = 512;

/// Block order of the blocked Cholesky reverse pass the report times at every size.
pub const CHOL_BLOCK: usize = Method::DEFAULT_BLOCK;

/// The Cholesky size timed beyond the sweep, at every thread count, without the naive
/// loops (about a second each there): the size of the reverse/forward targets.
pub const CHOL_LARGE: usize = 2000;

const STRUCTURAL: [&str; 4] = ["Transpose", "Add", "Tril", "Vectorize"];

/// Order and right-hand sides of the solves: the size at which the tour times them.
pub const SOLVE_N: usize = 1000;
pub const SOLVE_K: usize = 501;

/// Shapes at which Transpose and Vectorize are held against a copy: powers of two,
/// where an entry-by-entry transpose loses its cache lines, and shapes around them.
const COPY_SHAPES: [(usize, usize); 7] = [
    (64, 64),
    (256, 256),
    (512, 512),
    (512, 515),
    (1000, 1000),
    (1024, 1024),
    (2048, 2048),
];
const COPY_SHAPES_QUICK: [(usize, usize); 3] = [(64, 64), (256, 256), (255, 257)];
const SMALL: [usize; 2] = [8, 32];

/// Flops of the Cholesky factorisation, `n³/3`.
pub fn chol_flops(n: usize) -> f64 {
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

/// One size of the matrix product; the naive fields are absent where capped or not run.
#[derive(Clone, Default)]
pub struct MatmulRow {
    pub n: usize,
    pub ijk: Option<f64>,
    pub ikj: Option<f64>,
    pub naive_bwd: Option<f64>,
    pub fwd: f64,
    pub dot: f64,
    pub bwd: f64,
    /// `backward_into` first-writing Ā and B̄ into preallocated buffers (`Grad::Write`,
    /// GEMM with beta = 0, no allocation).
    pub bwd_into: f64,
    /// Paired ratios, see [`bench_report::timing::Timings::ratio`].
    pub fwd_over_dot: f64,
    pub bwd_over_fwd: f64,
    pub into_over_fwd: f64,
    /// The reference DGEMM rate timed alongside, and the paired fraction of it that the
    /// forward pass reaches.
    pub peak: Option<(f64, f64)>,
}

#[derive(Clone)]
pub struct StructRow {
    pub n: usize,
    pub naive_fwd: f64,
    pub fwd: f64,
    pub naive_bwd: f64,
    pub bwd: f64,
}

#[derive(Clone, Default)]
pub struct CholRow {
    pub n: usize,
    pub naive_fwd: Option<f64>,
    pub naive_bwd: Option<f64>,
    pub fwd: f64,
    /// The primitive's `backward` with the default `Method::Auto`.
    pub bwd: f64,
    pub blocked: f64,
    pub symbolic: f64,
    /// `bwd / fwd`, the median of per-round ratios.
    pub bwd_over_fwd: f64,
}

/// One solve at `SOLVE_N`, `SOLVE_K`: forward and backward through the calls that
/// allocate (`forward`, `backward`) and into preallocated buffers with a caller
/// workspace (`forward_into`, `backward_into` with first writes), timed together.
pub struct SolveRow {
    pub name: &'static str,
    /// Shapes of L and B, for the table.
    pub shapes: String,
    pub fwd: f64,
    pub bwd: f64,
    pub fwd_into: f64,
    pub bwd_into: f64,
    /// Paired ratios backward / forward, allocating and into buffers.
    pub bwd_over_fwd: f64,
    pub into_over_fwd: f64,
    /// The ratio the reverse pass is held to.
    pub target: f64,
}

/// Transpose and Vectorize at one shape against a plain copy of the same entries, all
/// into preallocated buffers and timed together.
pub struct CopyRow {
    pub m: usize,
    pub n: usize,
    /// `dst.assign(&src)` between two standard-layout m×n arrays.
    pub copy: f64,
    /// Name, median seconds and the paired fraction copy time / case time (the fraction
    /// of the copy bandwidth the case reaches, both moving the same bytes).
    pub cases: Vec<(&'static str, f64, f64)>,
}

pub struct SmallRow {
    pub n: usize,
    pub raw: f64,
    pub primitive: f64,
    pub ratio: f64,
    /// Three raw GEMMs into preallocated buffers.
    pub raw_into: f64,
    /// `forward_into` + `backward_into` (first writes) into the same buffers.
    pub primitive_into: f64,
    pub ratio_into: f64,
}

/// The cases run at one OpenBLAS thread count.
pub struct Threaded {
    pub threads: usize,
    /// Reference DGEMM rate, GFLOP/s.
    pub gemm: f64,
    pub matmul: Vec<MatmulRow>,
    pub chol: Vec<CholRow>,
    pub solves: Vec<SolveRow>,
}

impl Threaded {
    fn new(threads: usize) -> Threaded {
        Threaded {
            threads,
            gemm: f64::NAN,
            matmul: Vec::new(),
            chol: Vec::new(),
            solves: Vec::new(),
        }
    }
    fn peak_rate(&self) -> f64 {
        self.matmul
            .iter()
            .find_map(|r| r.peak)
            .map_or(f64::NAN, |p| p.0)
    }
}

pub struct Results {
    pub single: Threaded,
    pub structural: Vec<(&'static str, Vec<StructRow>)>,
    pub copies: Vec<CopyRow>,
    pub small: Vec<SmallRow>,
    pub multi: Option<Threaded>,
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
        let out = MatMul::nn().apply([a.view(), b.view()])?;
        let [abar, bbar] = out.backward(cbar.view())?;
        let mut row = MatmulRow {
            n,
            ..Default::default()
        };
        // First writes: the buffers' contents are never read.
        let mut ga = Array2::<f64>::zeros((n, n));
        let mut gb = Array2::<f64>::zeros((n, n));
        let peak_n = peak.as_ref().map(|g| g.n());
        let mut cases = vec![
            case(|| MatMul::nn().apply([a.view(), b.view()])),
            case(|| a.dot(&b)),
            case(|| out.backward(cbar.view())),
            case(|| {
                out.backward_into(
                    &[Some(cbar.view())],
                    &mut [Grad::Write(ga.view_mut()), Grad::Write(gb.view_mut())],
                    None,
                )
            }),
        ];
        if let Some(g) = peak {
            cases.push(case(|| g.call()));
        }
        let t = time_together(self.budget, &mut cases);
        drop(cases);
        agree("MatMul backward_into Ā", ga.view(), abar.view(), 1e-12)?;
        agree("MatMul backward_into B̄", gb.view(), bbar.view(), 1e-12)?;
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
        let lower = Convention::Lower;
        let op = Cholesky::new().convention(lower);
        let backward = || op.backward(&[a.view()], &[l.view()], &[Some(lbar.view())]);
        let [auto]: [Array2<f64>; 1] = backward()?
            .try_into()
            .map_err(|_| "Cholesky has one gradient")?;
        let blocked = chol::backward_blocked(l.view(), lbar.clone(), CHOL_BLOCK, lower)?;
        let symbolic = chol::backward_symbolic(l.view(), lbar.view(), lower)?;
        for (what, got) in [("default", &auto), ("blocked", &blocked)] {
            agree(
                &format!("Cholesky backward {what} vs symbolic"),
                got.view(),
                symbolic.view(),
                1e-8,
            )?;
        }
        let mut row = CholRow {
            n,
            ..Default::default()
        };
        // The primitive as a user calls it, both ways: each pass allocates its n×n
        // result (and the workspace the rule declares) and copies the lower triangle
        // of its input in. The blocked pass consumes L̄, hence the clone. The symbolic
        // pass, about 3n³ flops, is timed on its own so that its length does not cut
        // the rounds of the others.
        let t = time_together(
            self.budget,
            &mut [
                case(|| op.forward(&[a.view()])),
                case(backward),
                case(|| chol::backward_blocked(l.view(), lbar.clone(), CHOL_BLOCK, lower)),
            ],
        );
        (row.fwd, row.bwd, row.blocked) = (t.median(0), t.median(1), t.median(2));
        row.bwd_over_fwd = t.ratio(1, 0);
        row.symbolic = time_one(
            self.budget,
            case(|| chol::backward_symbolic(l.view(), lbar.view(), lower)),
        );
        if with_naive {
            let nl = naive::cholesky::cholesky(a.view())?;
            agree("Cholesky forward", l.view(), nl.view(), 1e-10)?;
            let nabar = naive::cholesky::cholesky_backward(l.view(), lbar.view())?;
            agree(
                "Cholesky backward",
                naive::tril(auto.view(), 0).view(),
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
        let zeros = || ndarray::Array2::<f64>::zeros((n, n));
        let (mut c1, mut a1, mut b1) = (zeros(), zeros(), zeros());
        let (mut c2, mut a2, mut b2) = (zeros(), zeros(), zeros());
        let t = time_together(
            3.0 * self.budget,
            &mut [
                case(|| (a.dot(&b), cbar.dot(&b.t()), a.t().dot(&cbar))),
                case(|| {
                    let out = MatMul::nn().apply([a.view(), b.view()])?;
                    out.backward(cbar.view())
                }),
                case(|| {
                    general_mat_mul(1.0, &a, &b, 0.0, &mut c1);
                    general_mat_mul(1.0, &cbar, &b.t(), 0.0, &mut a1);
                    general_mat_mul(1.0, &a.t(), &cbar, 0.0, &mut b1);
                }),
                case(|| -> matgrad::Result<()> {
                    let (mm, x) = (MatMul::nn(), [a.view(), b.view()]);
                    mm.forward_into(&x, &mut [c2.view_mut()], None)?;
                    mm.backward_into(
                        &x,
                        &[c2.view()],
                        &[Some(cbar.view())],
                        &mut [Grad::Write(a2.view_mut()), Grad::Write(b2.view_mut())],
                        None,
                    )
                }),
            ],
        );
        self.done();
        Ok(SmallRow {
            n,
            raw: t.median(0),
            primitive: t.median(1),
            ratio: t.ratio(1, 0),
            raw_into: t.median(2),
            primitive_into: t.median(3),
            ratio_into: t.ratio(3, 2),
        })
    }

    /// `which`: 0 `TriSolve::lower()`, 1 `TriSolve::lower_t().right()`, 2 `ChoSolve`, the
    /// three solves of the tour.
    fn solve(&self, which: usize) -> Res<SolveRow> {
        let (n, k) = (SOLVE_N, SOLVE_K);
        let (prim, target): (Box<dyn Rule<f64>>, f64) = match which {
            0 => (Box::new(TriSolve::lower()), 2.0),
            1 => (Box::new(TriSolve::lower_t().right()), 2.0),
            _ => (Box::new(ChoSolve), 2.5),
        };
        let p = prim.as_ref();
        let name = p.name();
        self.step(format!("{name} n = {n}, k = {k}"));
        let mut rng = random::rng(5000 + which as u64);
        let l = random::lower::<f64>(n, &mut rng);
        let b = if which == 1 {
            random::randn::<f64>(k, n, &mut rng)
        } else {
            random::randn::<f64>(n, k, &mut rng)
        };
        let xbar = random::randn::<f64>(b.nrows(), b.ncols(), &mut rng);
        let x_in = [l.view(), b.view()];
        // Every output, residuals included (ChoSolve keeps L⁻¹B for its reverse pass).
        let y = p.forward(&x_in)?;
        let yv: Vec<ArrayView2<'_, f64>> = y.iter().map(|a| a.view()).collect();
        let grads = p.backward(&x_in, &yv, &[Some(xbar.view())])?;
        let shapes = [Shape(n, n), Shape(b.nrows(), b.ncols())];
        let (mut ws_f, mut ws_b) = (
            vec![0.0; p.workspace(&shapes)],
            vec![0.0; p.workspace(&shapes)],
        );
        let mut y_bufs: Vec<Array2<f64>> = y.iter().map(|a| Array2::zeros(a.raw_dim())).collect();
        let mut y_into: Vec<ArrayViewMut2<'_, f64>> =
            y_bufs.iter_mut().map(|a| a.view_mut()).collect();
        let mut lb = Array2::<f64>::zeros((n, n));
        let mut bb = Array2::<f64>::zeros(b.dim());
        let t = time_together(
            self.budget,
            &mut [
                case(|| p.forward(&x_in)),
                case(|| p.backward(&x_in, &yv, &[Some(xbar.view())])),
                case(|| p.forward_into(&x_in, &mut y_into, Some(&mut ws_f))),
                case(|| {
                    p.backward_into(
                        &x_in,
                        &yv,
                        &[Some(xbar.view())],
                        &mut [Grad::Write(lb.view_mut()), Grad::Write(bb.view_mut())],
                        Some(&mut ws_b),
                    )
                }),
            ],
        );
        drop(y_into);
        for (got, want) in y_bufs.iter().zip(&y) {
            agree(
                &format!("{name} forward_into"),
                got.view(),
                want.view(),
                0.0,
            )?;
        }
        agree(
            &format!("{name} backward_into L̄"),
            lb.view(),
            grads[0].view(),
            1e-12,
        )?;
        agree(
            &format!("{name} backward_into B̄"),
            bb.view(),
            grads[1].view(),
            1e-12,
        )?;
        self.done();
        Ok(SolveRow {
            name,
            shapes: format!("{n}×{n}, {}×{}", b.nrows(), b.ncols()),
            fwd: t.median(0),
            bwd: t.median(1),
            fwd_into: t.median(2),
            bwd_into: t.median(3),
            bwd_over_fwd: t.ratio(1, 0),
            into_over_fwd: t.ratio(3, 2),
            target,
        })
    }

    /// Transpose and Vectorize at m×n, forward and backward (first writes), against a
    /// copy of an m×n array into another, every case into a preallocated buffer.
    fn copy(&self, m: usize, n: usize) -> Res<CopyRow> {
        self.step(format!("copy, Transpose and Vectorize {m}×{n}"));
        let mut rng = random::rng(6000 + (m * n) as u64);
        let a = random::randn::<f64>(m, n, &mut rng);
        let cbar = random::randn::<f64>(n, m, &mut rng);
        let vbar = random::randn::<f64>(m * n, 1, &mut rng);
        let (mut c, mut ct, mut v, mut g1, mut g2) = (
            Array2::<f64>::zeros((m, n)),
            Array2::<f64>::zeros((n, m)),
            Array2::<f64>::zeros((m * n, 1)),
            Array2::<f64>::zeros((m, n)),
            Array2::<f64>::zeros((m, n)),
        );
        let (an, tn, vn) = ([a.view()], [cbar.view()], [vbar.view()]);
        let t = time_together(
            self.budget,
            &mut [
                case(|| c.assign(&a)),
                case(|| Transpose.forward_into(&an, &mut [ct.view_mut()], None)),
                case(|| {
                    Transpose.backward_into(
                        &an,
                        &tn,
                        &[Some(cbar.view())],
                        &mut [Grad::Write(g1.view_mut())],
                        None,
                    )
                }),
                case(|| Vectorize.forward_into(&an, &mut [v.view_mut()], None)),
                case(|| {
                    Vectorize.backward_into(
                        &an,
                        &vn,
                        &[Some(vbar.view())],
                        &mut [Grad::Write(g2.view_mut())],
                        None,
                    )
                }),
            ],
        );
        agree("Transpose forward", ct.view(), a.t(), 0.0)?;
        agree("Transpose backward", g1.view(), cbar.t(), 0.0)?;
        agree(
            "Vectorize forward",
            v.view(),
            naive::vec(a.view()).view(),
            0.0,
        )?;
        let unvec = naive::vec_backward(vbar.view(), m, n)?;
        agree("Vectorize backward", g2.view(), unvec.view(), 0.0)?;
        self.done();
        let names = [
            "Transpose forward",
            "Transpose backward",
            "Vectorize forward",
            "Vectorize backward",
        ];
        Ok(CopyRow {
            m,
            n,
            copy: t.median(0),
            cases: names
                .iter()
                .enumerate()
                .map(|(i, &name)| (name, t.median(i + 1), t.ratio(0, i + 1)))
                .collect(),
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
        // Each arm binds its timings to `t` so that the cases, which borrow `out`, are
        // dropped before it.
        let t = match name {
            "Transpose" => {
                let out = Transpose.apply([a.view()])?;
                let want = naive::transpose(a.view());
                agree(name, out.value().view(), want.view(), 0.0)?;
                let t = time_together(
                    budget,
                    &mut [
                        case(|| naive::transpose(a.view())),
                        case(|| Transpose.apply([a.view()])),
                        case(|| naive::transpose_backward(cbar.view())),
                        case(|| out.backward(cbar.view())),
                    ],
                );
                t
            }
            "Add" => {
                let out = Add.apply([a.view(), b.view()])?;
                let want = naive::add(a.view(), b.view())?;
                agree(name, out.value().view(), want.view(), 0.0)?;
                let t = time_together(
                    budget,
                    &mut [
                        case(|| naive::add(a.view(), b.view())),
                        case(|| Add.apply([a.view(), b.view()])),
                        case(|| naive::add_backward(cbar.view())),
                        case(|| out.backward(cbar.view())),
                    ],
                );
                t
            }
            "Tril" => {
                let out = Tril::new(0).apply([a.view()])?;
                let want = naive::tril(a.view(), 0);
                agree(name, out.value().view(), want.view(), 0.0)?;
                let t = time_together(
                    budget,
                    &mut [
                        case(|| naive::tril(a.view(), 0)),
                        case(|| Tril::new(0).apply([a.view()])),
                        case(|| naive::tril_backward(cbar.view(), 0)),
                        case(|| out.backward(cbar.view())),
                    ],
                );
                t
            }
            _ => {
                let out = Vectorize.apply([a.view()])?;
                let want = naive::vec(a.view());
                agree(name, out.value().view(), want.view(), 0.0)?;
                let t = time_together(
                    budget,
                    &mut [
                        case(|| naive::vec(a.view())),
                        case(|| Vectorize.apply([a.view()])),
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

/// Runs every case: the sweep at one thread, then (with two cores or more) the main
/// cases again at two threads.
pub fn run(opts: &Options, cores: usize) -> Res<Results> {
    let sizes = opts.sizes();
    let tsizes = opts.threaded_sizes();
    let multi = cores >= 2;
    let copy_shapes: &[(usize, usize)] = if opts.quick {
        &COPY_SHAPES_QUICK
    } else {
        &COPY_SHAPES
    };
    let steps = sizes.len() * (2 + STRUCTURAL.len())
        + 1
        + SMALL.len()
        + copy_shapes.len()
        + 3
        + if multi { 2 * tsizes.len() + 4 } else { 0 };
    let bar = ProgressBar::new(steps as u64).with_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} {msg}")?
            .progress_chars("=> "),
    );
    let sweep = Sweep {
        bar,
        budget: opts.budget(),
    };

    let mut gemm = Gemm::new(opts.gemm_n());
    let mut single = Threaded::new(set_threads(1));
    for (i, &n) in sizes.iter().enumerate() {
        let peak = (i + 1 == sizes.len()).then_some(&mut gemm);
        single.matmul.push(sweep.matmul(n, true, peak)?);
    }
    single.gemm = single.peak_rate();
    for &n in &sizes {
        single.chol.push(sweep.chol(n, true)?);
    }
    single.chol.push(sweep.chol(opts.chol_large(), false)?);
    for which in 0..3 {
        single.solves.push(sweep.solve(which)?);
    }
    let mut structural = Vec::new();
    for name in STRUCTURAL {
        let rows = sizes
            .iter()
            .map(|&n| sweep.structural(name, n))
            .collect::<Res<Vec<_>>>()?;
        structural.push((name, rows));
    }
    let copies = copy_shapes
        .iter()
        .map(|&(m, n)| sweep.copy(m, n))
        .collect::<Res<Vec<_>>>()?;
    let small = SMALL
        .iter()
        .map(|&n| sweep.small(n))
        .collect::<Res<Vec<_>>>()?;

    let multi = if multi {
        let mut t = Threaded::new(set_threads(2));
        for (i, &n) in tsizes.iter().enumerate() {
            let peak = (i + 1 == tsizes.len()).then_some(&mut gemm);
            t.matmul.push(sweep.matmul(n, false, peak)?);
        }
        t.gemm = t.peak_rate();
        for &n in &tsizes {
            t.chol.push(sweep.chol(n, false)?);
        }
        t.chol.push(sweep.chol(opts.chol_large(), false)?);
        for which in 0..3 {
            t.solves.push(sweep.solve(which)?);
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
        copies,
        small,
        multi,
    })
}
