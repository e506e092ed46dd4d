//! Neighbourhood components analysis (Goldberger, Roweis, Hinton and Salakhutdinov,
//! NIPS 2004) on the UCI handwritten digits (`data/digits.csv`): a linear map `A`
//! (`d×D`, `d = 2`, `D = 64` pixels) learned so that, in the embedding `AX`, each
//! point's stochastic nearest neighbour has its class. This is the paper cited in
//! footnote 11 of the seed note as an example of an inefficient expression for a
//! derivative.
//!
//! ```text
//! pᵢⱼ = exp(−‖Axᵢ − Axⱼ‖²) / Σ_{k≠i} exp(−‖Axᵢ − Axₖ‖²),   pᵢᵢ = 0,
//! f(A) = Σᵢ Σ_{j∈Cᵢ} pᵢⱼ          (Cᵢ: the other points of i's class)
//! ```
//!
//! The paper's gradient sums a `D×D` outer product per pair of points,
//!
//! ```text
//! ∂f/∂A = 2A Σᵢ (pᵢ Σₖ pᵢₖ xᵢₖxᵢₖᵀ − Σ_{j∈Cᵢ} pᵢⱼ xᵢⱼxᵢⱼᵀ),   xᵢⱼ = xᵢ − xⱼ,  pᵢ = Σ_{j∈Cᵢ} pᵢⱼ,
//! ```
//!
//! which costs `O(N²D²)`. Recorded as matrix primitives instead — `Y = AX`,
//! squared distances from the Gram matrix `YᵀY` and the squared norms, a column-wise
//! `LogSoftmax`, `Exp`, a class `Mask`, `Sum` — one reverse sweep of the [`Tape`]
//! costs `O(N²d + NDd)`: the `D×D` matrices never appear. Both gradients are computed
//! at the starting point and compared; the tape's is proven by the shared checker, then
//! Adam climbs `f`. The embedding and the objective per iteration are plotted to
//! `docs/nca.svg`.
//!
//! Run: `OPENBLAS_NUM_THREADS=1 cargo run --release --example nca`

use indicatif::{ProgressBar, ProgressStyle};
use matgrad::check::random;
use matgrad::prelude::*;
use ndarray::{Array2, ArrayView2, Axis};
use plotters::prelude::*;
use rand::seq::SliceRandom;
use std::process::ExitCode;
use std::time::Instant;

const DATA: &str = include_str!("../data/digits.csv");
const PLOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/nca.svg");

const PIXELS: usize = 64;
/// Points used (a random subset of the 1797).
const N: usize = 500;
/// Dimension of the embedding.
const DIM: usize = 2;
const ITERATIONS: usize = 300;
const LEARNING_RATE: f64 = 0.02;
const SEED: u64 = 11;
/// Added to the diagonal of the logits so that `pᵢᵢ = 0` (its exponential is 0).
const EXCLUDE_SELF: f64 = -1e30;

type Res<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Pixels as columns (64×n, scaled to [0, 1]) and labels.
fn load() -> Res<(Array2<f64>, Vec<usize>)> {
    let mut lines = DATA.lines();
    lines.next().ok_or("empty data file")?;
    let (mut pixels, mut y) = (Vec::new(), Vec::new());
    for (i, line) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let row = line
            .split(',')
            .map(|s| s.trim().parse::<u32>())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| format!("line {}: {e}", i + 2))?;
        if row.len() != PIXELS + 1 {
            return Err(format!("line {}: bad row", i + 2).into());
        }
        pixels.extend(row[..PIXELS].iter().map(|&p| f64::from(p) / 16.0));
        y.push(row[PIXELS] as usize);
    }
    let x = Array2::from_shape_vec((y.len(), PIXELS), pixels)?
        .reversed_axes()
        .as_standard_layout()
        .to_owned();
    Ok((x, y))
}

/// The data the objective reads, as constants of every tape.
struct Data {
    /// `D×N`, points in columns.
    x: Array2<f64>,
    labels: Vec<usize>,
    /// `Mᵢⱼ = [i ≠ j, same class]`.
    same: Mask,
}

/// Records `f(A)` on `tape` for the leaf `a` and returns it (1×1).
fn record_objective(tape: &mut Tape<f64>, a: Var, data: &Data) -> matgrad::Result<Var> {
    let n = data.labels.len();
    let x = tape.constant(data.x.clone());
    let ones_n = tape.constant(Array2::ones((1, n)));
    let minus_ones_d = tape.constant(Array2::from_elem((DIM, 1), -1.0));
    let two_i = tape.constant(Array2::eye(DIM) * 2.0);
    let exclude_self = tape.constant(Array2::eye(n) * EXCLUDE_SELF);

    let y = tape.apply1(MatMul::nn(), &[a, x])?; // Y = AX, d×N
    let y2 = tape.apply1(Hadamard, &[y, y])?;
    let minus_norms = tape.apply1(MatMul::tn(), &[minus_ones_d, y2])?; // −‖yⱼ‖², 1×N
    let minus_ni = tape.apply1(MatMul::tn(), &[minus_norms, ones_n])?; // (i, j) ↦ −‖yᵢ‖²
    let minus_nj = tape.apply1(MatMul::tn(), &[ones_n, minus_norms])?; // (i, j) ↦ −‖yⱼ‖²
    let two_y = tape.apply1(MatMul::nn(), &[two_i, y])?;
    let two_gram = tape.apply1(MatMul::tn(), &[y, two_y])?; // 2YᵀY, N×N
                                                            // Logits −‖yᵢ − yⱼ‖² = 2yᵢᵀyⱼ − ‖yᵢ‖² − ‖yⱼ‖², and −∞ in effect on the diagonal.
    let logits = tape.apply1(Add, &[two_gram, minus_ni])?;
    let logits = tape.apply1(Add, &[logits, minus_nj])?;
    let logits = tape.apply1(Add, &[logits, exclude_self])?;
    // The logits are symmetric, so the column softmax holds pᵢⱼ at (j, i); the class
    // mask is symmetric too, so f = Σ M ⊙ Pᵀ = Σ M ⊙ P.
    let log_p = tape.apply1(LogSoftmax, &[logits])?;
    let p = tape.apply1(Map(Exp), &[log_p])?;
    let p_same = tape.apply1(data.same.clone(), &[p])?;
    tape.apply1(Sum, &[p_same])
}

/// `f(A)` and `∂f/∂A` by one recording and one reverse sweep.
fn objective(data: &Data, a: &Array2<f64>) -> matgrad::Result<(f64, Array2<f64>)> {
    let mut tape = Tape::new();
    let av = tape.leaf(a.clone());
    let f = record_objective(&mut tape, av, data)?;
    let value = tape.value(f)?[(0, 0)];
    let mut g = tape.backward(f)?;
    let grad = g.remove(av).ok_or(Error::InvalidArgument {
        op: "NCA",
        msg: "no gradient for A".into(),
    })?;
    Ok((value, grad))
}

/// The paper's gradient, eq. (5) of Goldberger et al., as plain loops: `O(N²D²)`.
fn paper_gradient(a: ArrayView2<'_, f64>, x: ArrayView2<'_, f64>, labels: &[usize]) -> Array2<f64> {
    let (d, n) = x.dim();
    let y = a.dot(&x);
    let mut s = vec![0.0; d * d];
    let mut p = vec![0.0; n];
    let mut xik = vec![0.0; d];
    for i in 0..n {
        // pᵢₖ, stabilised by the nearest distance.
        let dist: Vec<f64> = (0..n)
            .map(|k| {
                (0..y.nrows())
                    .map(|r| (y[(r, i)] - y[(r, k)]).powi(2))
                    .sum()
            })
            .collect();
        let nearest = (0..n)
            .filter(|&k| k != i)
            .map(|k| dist[k])
            .fold(f64::INFINITY, f64::min);
        let mut total = 0.0;
        for k in 0..n {
            p[k] = if k == i {
                0.0
            } else {
                (nearest - dist[k]).exp()
            };
            total += p[k];
        }
        p.iter_mut().for_each(|v| *v /= total);
        let pi: f64 = (0..n)
            .filter(|&k| k != i && labels[k] == labels[i])
            .map(|k| p[k])
            .sum();
        for k in (0..n).filter(|&k| k != i) {
            let same = if labels[k] == labels[i] { p[k] } else { 0.0 };
            let coef = pi * p[k] - same;
            for (r, v) in xik.iter_mut().enumerate() {
                *v = x[(r, i)] - x[(r, k)];
            }
            for r in 0..d {
                let cr = coef * xik[r];
                for c in 0..d {
                    s[r * d + c] += cr * xik[c];
                }
            }
        }
    }
    let s = Array2::from_shape_vec((d, d), s).expect("d×d");
    a.dot(&s) * 2.0
}

/// Leave-one-out 1-nearest-neighbour accuracy in the embedding `Y` (columns).
fn loo_1nn(y: ArrayView2<'_, f64>, labels: &[usize]) -> f64 {
    let n = labels.len();
    let hits = (0..n)
        .filter(|&i| {
            let nearest = (0..n)
                .filter(|&k| k != i)
                .min_by(|&j, &k| {
                    let dj: f64 = (0..y.nrows())
                        .map(|r| (y[(r, i)] - y[(r, j)]).powi(2))
                        .sum();
                    let dk: f64 = (0..y.nrows())
                        .map(|r| (y[(r, i)] - y[(r, k)]).powi(2))
                        .sum();
                    dj.total_cmp(&dk)
                })
                .unwrap_or(i);
            labels[nearest] == labels[i]
        })
        .count();
    hits as f64 / n as f64
}

fn plot(y: ArrayView2<'_, f64>, labels: &[usize], history: &[f64]) -> Res<()> {
    let root = SVGBackend::new(PLOT, (900, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(450);
    let range = |r: usize| {
        let row = y.row(r);
        let lo = row.iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let pad = 0.05 * (hi - lo);
        (lo - pad)..(hi + pad)
    };
    let mut chart = ChartBuilder::on(&left)
        .caption(
            format!("NCA embedding AX of {} digits", labels.len()),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(40)
        .build_cartesian_2d(range(0), range(1))?;
    chart.configure_mesh().max_light_lines(0).draw()?;
    for digit in 0..10 {
        let color = Palette99::pick(digit).to_rgba();
        chart
            .draw_series(
                (0..labels.len())
                    .filter(|&j| labels[j] == digit)
                    .map(|j| Circle::new((y[(0, j)], y[(1, j)]), 3, color.filled())),
            )?
            .label(digit.to_string())
            .legend(move |(px, py)| Circle::new((px, py), 4, color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;

    let top = history.iter().cloned().fold(0.0, f64::max);
    let mut chart = ChartBuilder::on(&right)
        .caption(
            "objective f(A)/N (expected LOO accuracy)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(48)
        .build_cartesian_2d(0.0..history.len() as f64, 0.0..(top * 1.05).min(1.0))?;
    chart
        .configure_mesh()
        .max_light_lines(0)
        .x_desc("iteration")
        .draw()?;
    chart.draw_series(LineSeries::new(
        history.iter().enumerate().map(|(i, &v)| (i as f64, v)),
        BLUE.stroke_width(2),
    ))?;
    root.present()?;
    Ok(())
}

fn main() -> Res<ExitCode> {
    let start = Instant::now();
    let (x_all, y_all) = load()?;
    let mut rng = random::rng(SEED);
    let mut order: Vec<usize> = (0..y_all.len()).collect();
    order.shuffle(&mut rng);
    let pick = &order[..N];
    let x = x_all.select(Axis(1), pick);
    let labels: Vec<usize> = pick.iter().map(|&i| y_all[i]).collect();
    let same = Mask::new(Array2::from_shape_fn((N, N), |(i, j)| {
        i != j && labels[i] == labels[j]
    }));
    let data = Data { x, labels, same };
    println!("NCA on {N} of the UCI digits (D = {PIXELS} pixels in [0, 1]), embedding d = {DIM}");

    let mut a = random::randn::<f64>(DIM, PIXELS, &mut rng) * 0.1;

    // The two gradients at the starting point, and their costs.
    let t = Instant::now();
    let (f0, g_tape) = objective(&data, &a)?;
    let tape_time = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let g_paper = paper_gradient(a.view(), data.x.view(), &data.labels);
    let paper_time = t.elapsed().as_secs_f64();
    let diff = (&g_tape - &g_paper)
        .iter()
        .fold(0.0f64, |m, v| m.max(v.abs()));
    let scale = g_paper.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    println!("f(A₀) = {f0:.6} (f/N = {:.4})", f0 / N as f64);
    println!(
        "gradient, tape over matrix primitives, O(N²d + NDd): {:8.2} ms",
        1e3 * tape_time
    );
    println!(
        "gradient, paper's outer products as loops, O(N²D²):  {:8.2} ms",
        1e3 * paper_time
    );
    println!("max |difference| = {diff:.2e} (largest entry {scale:.3e})");

    // The recorded objective as a primitive of A, proven by the shared checker.
    let mut tape = Tape::new();
    let av = tape.leaf(a.clone());
    let f = record_objective(&mut tape, av, &data)?;
    let model = tape
        .function("NCA objective", &[av], &[f])?
        .with_input_names(&["A"]);
    let report = Checker::new().check(&model, &[a.view()])?;
    print!("{report}");
    // NaN-safe: a NaN difference fails too.
    let agree = diff <= 1e-9 * scale.max(1.0);
    if !report.passed() || !agree {
        eprintln!("gradient check FAILED");
        return Ok(ExitCode::FAILURE);
    }
    drop(tape);

    let before = loo_1nn(a.dot(&data.x).view(), &data.labels);
    let bar = ProgressBar::new(ITERATIONS as u64);
    bar.set_style(ProgressStyle::with_template(
        "{elapsed_precise} [{bar:40}] {pos}/{len} {msg}",
    )?);
    let mut opt = Adam::new(LEARNING_RATE);
    let mut history = Vec::with_capacity(ITERATIONS + 1);
    let t = Instant::now();
    for _ in 0..ITERATIONS {
        let (value, grad) = objective(&data, &a)?;
        history.push(value / N as f64);
        // Adam minimises: climb f by descending −f.
        let ascent = -grad;
        opt.step(&mut [a.view_mut()], &[ascent.view()])?;
        bar.set_message(format!("f/N = {:.4}", value / N as f64));
        bar.inc(1);
    }
    bar.finish();
    let train_time = t.elapsed().as_secs_f64();
    let (value, _) = objective(&data, &a)?;
    history.push(value / N as f64);
    let emb = a.dot(&data.x);
    let after = loo_1nn(emb.view(), &data.labels);
    println!(
        "Adam, learning rate {LEARNING_RATE}, {ITERATIONS} iterations in {train_time:.2} s: f/N {:.4} → {:.4}",
        history[0],
        value / N as f64
    );
    println!(
        "leave-one-out 1-NN accuracy in the 2-D embedding: {:.1}% → {:.1}%",
        100.0 * before,
        100.0 * after
    );
    plot(emb.view(), &data.labels, &history)?;
    println!("plot: {PLOT}");
    println!("total {:.2} s", start.elapsed().as_secs_f64());
    Ok(ExitCode::SUCCESS)
}
