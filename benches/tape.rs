//! The cost of the tape: one MLP training step (forward, reverse, SGD update) through
//! the tape against the same primitive calls chained by hand.
//!
//! `OPENBLAS_NUM_THREADS=1 OPENBLAS_VERBOSE=2 cargo bench --bench tape` (the second
//! variable makes OpenBLAS print its kernel, `Core: …`, at start).
//!
//! Models: tanh layers and a linear last layer into the softmax cross-entropy, a small
//! one (64-128-128-10, batch 64) and a wide one (784-1024-1024-10, batch 256). Three
//! ways of taking a step:
//!
//! - `hand`: `forward_into` and `backward_into` of `MatMul`, `AddBias`, `Map(Tanh)` and
//!   the loss, chained by hand through preallocated buffers (first writes, no zero
//!   fill), exactly the calls the tape makes;
//! - `replay`: the model recorded once and replayed with [`Recorded::step`] (buffers
//!   owned by the recorded function, no matrix allocated after the first step);
//! - `record`: a new tape every step, recorded and swept into preallocated gradient
//!   buffers (`Tape::backward_into`); values and cotangents are allocated afresh;
//! - `record-reset`: the same on one tape emptied with `Tape::reset` every step, whose
//!   values and cotangents come from the buffers of the step before.
//!
//! The update is the same plain SGD step in all of them.
//!
//! After criterion's own figures, `tape_ratio/…` lines give each way's time over
//! `hand`'s as the median of ratios timed in interleaved rounds: the figure to judge the
//! tape's overhead by on a machine whose load changes.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use matgrad::check::random;
use matgrad::nn::{glorot_uniform, Optimizer, Sgd};
use matgrad::prelude::*;
use ndarray::{ArcArray2, Array2, ArrayView2};
use std::time::{Duration, Instant};

const LR: f64 = 1e-3;

struct Model {
    widths: Vec<usize>,
    batch: usize,
    x: ArcArray2<f64>,
    labels: std::sync::Arc<[usize]>,
    /// `[W₁, b₁, W₂, b₂, …]`.
    params: Vec<ArcArray2<f64>>,
    grads: Vec<Array2<f64>>,
}

impl Model {
    fn new(widths: &[usize], batch: usize) -> Self {
        let mut rng = random::rng(17);
        let mut params = Vec::new();
        for w in widths.windows(2) {
            params.push(glorot_uniform(w[1], w[0], &mut rng).into_shared());
            params.push((random::randn(w[1], 1, &mut rng) * 0.1).into_shared());
        }
        let grads = params.iter().map(|p| Array2::zeros(p.raw_dim())).collect();
        let classes = widths[widths.len() - 1];
        Model {
            widths: widths.to_vec(),
            batch,
            x: random::randn(widths[0], batch, &mut rng).into_shared(),
            labels: (0..batch).map(|j| (j * 7 + 3) % classes).collect(),
            params,
            grads,
        }
    }

    fn layers(&self) -> usize {
        self.widths.len() - 1
    }

    fn update(&mut self, opt: &mut Sgd<f64>) {
        let mut p: Vec<_> = self.params.iter_mut().map(|p| p.view_mut()).collect();
        let g: Vec<_> = self.grads.iter().map(|g| g.view()).collect();
        opt.step(&mut p, &g).unwrap();
    }

    /// Records the step's forward pass: the vars `[x, W₁, b₁, …]` and the loss.
    fn record(&self, tape: &mut Tape<f64>) -> (Vec<Var>, Var) {
        let x = tape.constant(self.x.clone());
        let mut vars = vec![x];
        let mut h = x;
        for (l, wb) in self.params.chunks(2).enumerate() {
            let (w, b) = (tape.leaf(wb[0].clone()), tape.leaf(wb[1].clone()));
            vars.extend([w, b]);
            let z = tape.apply1(MatMul::nn(), &[w, h]).unwrap();
            let a = tape.apply1(AddBias, &[z, b]).unwrap();
            h = if l + 1 < self.layers() {
                tape.apply1(Map(Tanh), &[a]).unwrap()
            } else {
                a
            };
        }
        let loss = tape
            .apply1(SoftmaxCrossEntropy::new(self.labels.clone()), &[h])
            .unwrap();
        (vars, loss)
    }
}

/// The buffers of the hand-chained step, per layer `l`: `Z = WH`, `A = Z + b1ᵀ`,
/// `H' = tanh(A)` (not for the last layer), and their cotangents.
struct Hand {
    z: Vec<Array2<f64>>,
    a: Vec<Array2<f64>>,
    h: Vec<Array2<f64>>,
    zbar: Vec<Array2<f64>>,
    abar: Vec<Array2<f64>>,
    hbar: Vec<Array2<f64>>,
    loss: Array2<f64>,
    p: Array2<f64>,
    one: Array2<f64>,
    loss_op: SoftmaxCrossEntropy,
}

impl Hand {
    fn new(m: &Model) -> Self {
        let buf = |l: usize| Array2::zeros((m.widths[l + 1], m.batch));
        let n = m.layers();
        Hand {
            z: (0..n).map(buf).collect(),
            a: (0..n).map(buf).collect(),
            h: (0..n - 1).map(buf).collect(),
            zbar: (0..n).map(buf).collect(),
            abar: (0..n).map(buf).collect(),
            hbar: (0..n - 1).map(buf).collect(),
            loss: Array2::zeros((1, 1)),
            p: buf(n - 1),
            one: Array2::ones((1, 1)),
            loss_op: SoftmaxCrossEntropy::new(m.labels.clone()),
        }
    }

    fn step(&mut self, m: &mut Model) -> matgrad::Result<()> {
        let n = m.layers();
        let s = self;
        for l in 0..n {
            let (w, b) = (m.params[2 * l].view(), m.params[2 * l + 1].view());
            let h: ArrayView2<'_, f64> = if l == 0 {
                m.x.view()
            } else {
                s.h[l - 1].view()
            };
            MatMul::nn().forward_into(&[w, h], &mut [s.z[l].view_mut()], None)?;
            AddBias.forward_into(&[s.z[l].view(), b], &mut [s.a[l].view_mut()], None)?;
            if l + 1 < n {
                Map(Tanh).forward_into(&[s.a[l].view()], &mut [s.h[l].view_mut()], None)?;
            }
        }
        s.loss_op.forward_into(
            &[s.a[n - 1].view()],
            &mut [s.loss.view_mut(), s.p.view_mut()],
            None,
        )?;
        s.loss_op.backward_into(
            &[s.a[n - 1].view()],
            &[s.loss.view(), s.p.view()],
            &[Some(s.one.view())],
            &mut [Grad::Write(s.abar[n - 1].view_mut())],
            None,
        )?;
        let (params, grads) = (&m.params, &mut m.grads);
        for l in (0..n).rev() {
            let (wg, bg) = grads[2 * l..2 * l + 2].split_at_mut(1);
            if l + 1 < n {
                Map(Tanh).backward_into(
                    &[s.a[l].view()],
                    &[s.h[l].view()],
                    &[Some(s.hbar[l].view())],
                    &mut [Grad::Write(s.abar[l].view_mut())],
                    None,
                )?;
            }
            let b = params[2 * l + 1].view();
            AddBias.backward_into(
                &[s.z[l].view(), b],
                &[s.a[l].view()],
                &[Some(s.abar[l].view())],
                &mut [
                    Grad::Write(s.zbar[l].view_mut()),
                    Grad::Write(bg[0].view_mut()),
                ],
                None,
            )?;
            let w = params[2 * l].view();
            let h: ArrayView2<'_, f64> = if l == 0 {
                m.x.view()
            } else {
                s.h[l - 1].view()
            };
            let hbar = if l == 0 {
                Grad::Skip
            } else {
                Grad::Write(s.hbar[l - 1].view_mut())
            };
            MatMul::nn().backward_into(
                &[w, h],
                &[s.z[l].view()],
                &[Some(s.zbar[l].view())],
                &mut [Grad::Write(wg[0].view_mut()), hbar],
                None,
            )?;
        }
        Ok(())
    }
}

fn replay_step(model: &mut Recorded<f64>, m: &mut Model, one: &Array2<f64>) {
    let mut x = vec![m.x.view()];
    x.extend(m.params.iter().map(|p| p.view()));
    let mut grads = vec![Grad::Skip];
    grads.extend(m.grads.iter_mut().map(|g| Grad::Write(g.view_mut())));
    model.step(&x, &[Some(one.view())], &mut grads).unwrap();
}

fn record_step(tape: &mut Tape<f64>, m: &mut Model, one: &Array2<f64>) {
    tape.reset();
    let (vars, loss) = m.record(tape);
    let mut grads: Vec<(Var, Grad<'_, f64>)> = vars[1..]
        .iter()
        .zip(m.grads.iter_mut())
        .map(|(&v, g)| (v, Grad::Write(g.view_mut())))
        .collect();
    tape.backward_into(&[(loss, one.view())], &mut grads)
        .unwrap();
    drop(grads);
    // The leaves share the parameters: give them back before the in-place update.
    tape.reset();
}

fn steps(c: &mut Criterion) {
    let threads = std::env::var("OPENBLAS_NUM_THREADS").unwrap_or_else(|_| "unset".into());
    println!("OPENBLAS_NUM_THREADS={threads}");
    let mut g = c.benchmark_group("tape_step");
    for (name, widths, batch) in [
        ("small 64-128-128-10 b64", vec![64, 128, 128, 10], 64),
        ("wide 784-1024-1024-10 b256", vec![784, 1024, 1024, 10], 256),
    ] {
        let mut m = Model::new(&widths, batch);
        let mut opt = Sgd::new(LR);
        let one = Array2::ones((1, 1));
        let mut hand = Hand::new(&m);
        g.bench_function(BenchmarkId::new("hand", name), |b| {
            b.iter(|| {
                hand.step(&mut m).unwrap();
                m.update(&mut opt);
            })
        });
        let mut tape = Tape::new();
        let (vars, loss) = m.record(&mut tape);
        let mut model = tape.function("MLP", &vars, &[loss]).unwrap();
        drop(tape);
        g.bench_function(BenchmarkId::new("replay", name), |b| {
            b.iter(|| {
                replay_step(&mut model, &mut m, &one);
                m.update(&mut opt);
            })
        });
        g.bench_function(BenchmarkId::new("record", name), |b| {
            b.iter(|| {
                record_step(&mut Tape::new(), &mut m, &one);
                m.update(&mut opt);
            })
        });
        let mut reused = Tape::new();
        g.bench_function(BenchmarkId::new("record-reset", name), |b| {
            b.iter(|| {
                record_step(&mut reused, &mut m, &one);
                m.update(&mut opt);
            })
        });
    }
    g.finish();
}

/// The ratios the tape is judged by, each way of taking a step against `hand`, timed in
/// interleaved rounds (one untimed step, then a timed batch, of each way in turn) so
/// that a change of machine load falls on all of them alike: the median over rounds of
/// the per-round ratio. Criterion times each way on its own, minutes apart, and on a
/// shared machine its ratios drift by more than the 10% they are judged at.
fn interleaved_ratios(_: &mut Criterion) {
    for (name, widths, batch, rounds, k) in [
        (
            "small 64-128-128-10 b64",
            vec![64, 128, 128, 10],
            64,
            41,
            20,
        ),
        (
            "wide 784-1024-1024-10 b256",
            vec![784, 1024, 1024, 10],
            256,
            15,
            1,
        ),
    ] {
        let mut m = Model::new(&widths, batch);
        let mut opt = Sgd::new(LR);
        let one = Array2::ones((1, 1));
        let mut hand = Hand::new(&m);
        let mut tape = Tape::new();
        let (vars, loss) = m.record(&mut tape);
        let mut model = tape.function("MLP", &vars, &[loss]).unwrap();
        drop(tape);
        let mut reused = Tape::new();
        type Step<'a> = Box<dyn FnMut(&mut Model) + 'a>;
        let mut ways: [(&str, Step<'_>); 4] = [
            ("hand", Box::new(|m: &mut Model| hand.step(m).unwrap())),
            (
                "replay",
                Box::new(|m: &mut Model| replay_step(&mut model, m, &one)),
            ),
            (
                "record",
                Box::new(|m: &mut Model| record_step(&mut Tape::new(), m, &one)),
            ),
            (
                "record-reset",
                Box::new(|m: &mut Model| record_step(&mut reused, m, &one)),
            ),
        ];
        let mut secs = vec![Vec::with_capacity(rounds); ways.len()];
        for _ in 0..rounds {
            for ((_, step), s) in ways.iter_mut().zip(secs.iter_mut()) {
                step(&mut m);
                m.update(&mut opt);
                let t = Instant::now();
                for _ in 0..k {
                    step(&mut m);
                    m.update(&mut opt);
                }
                s.push(t.elapsed().as_secs_f64() / k as f64);
            }
        }
        println!("tape_ratio/{name}: {rounds} interleaved rounds of {k} steps each, medians");
        for (i, (way, _)) in ways.iter().enumerate() {
            let mut r: Vec<f64> = secs[i].iter().zip(&secs[0]).map(|(a, b)| a / b).collect();
            println!(
                "  {way:<13} {:>9.3} ms   / hand {:.3}",
                1e3 * median(&mut secs[i].clone()),
                median(&mut r)
            );
        }
    }
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    let m = xs.len() / 2;
    if xs.len() % 2 == 1 {
        xs[m]
    } else {
        0.5 * (xs[m - 1] + xs[m])
    }
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = steps, interleaved_ratios
}
criterion_main!(benches);
