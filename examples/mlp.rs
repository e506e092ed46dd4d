//! A feedforward network trained through the tape on the UCI handwritten digits
//! (`data/digits.csv`: 1797 images of 8×8 pixels, 10 classes).
//!
//! The network is the seed note's (section 4), with examples in columns:
//!
//! ```text
//! H⁽⁰⁾ = X                                   X: 64×B pixels, [0, 1] centred to [−½, ½]
//! H⁽ˡ⁾ = tanh(W⁽ˡ⁾H⁽ˡ⁻¹⁾ + b⁽ˡ⁾1ᵀ),  l = 1, 2     128 units each
//! Z = W⁽³⁾H⁽²⁾ + b⁽³⁾1ᵀ                        Z: 10×B logits
//! c = (1/B) Σⱼ (log Σᵢ exp Zᵢⱼ − Z_{yⱼ,j})       softmax cross-entropy
//! ```
//!
//! Each minibatch is recorded on a fresh [`Tape`] (`MatMul`, `AddBias`, `Map(Tanh)`,
//! `SoftmaxCrossEntropy`) with the parameters as leaves, shared with the tape rather
//! than copied; one reverse sweep gives every `W̄⁽ˡ⁾, b̄⁽ˡ⁾` (eqs. 11–14) and Adam
//! (learning rate decayed on a cosine) updates the parameters in place. Before training, the loss on one minibatch
//! at the initial parameters is recorded as a primitive of the four parameters
//! ([`Tape::function`]) and proven by the shared checker.
//!
//! The train/test split (1297/500) and the initialisation are fixed by seeds. Training
//! loss and test accuracy per epoch are plotted to `docs/mlp.svg`.
//!
//! Run: `OPENBLAS_NUM_THREADS=1 cargo run --release --example mlp`

use indicatif::{ProgressBar, ProgressStyle};
use matgrad::check::random;
use matgrad::nn::glorot_uniform;
use matgrad::prelude::*;
use ndarray::{ArcArray2, Array2, Axis};
use plotters::prelude::*;
use rand::seq::SliceRandom;
use std::process::ExitCode;
use std::time::Instant;

const DATA: &str = include_str!("../data/digits.csv");
const PLOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/mlp.svg");

const PIXELS: usize = 64;
const CLASSES: usize = 10;
const TEST: usize = 500;
const BATCH: usize = 32;
/// Width of each of the two hidden layers.
const HIDDEN: usize = 128;
const EPOCHS: usize = 40;
/// Adam's initial learning rate, decayed to 0 over the epochs on a cosine.
const LEARNING_RATE: f64 = 2e-3;
/// Seed of the train/test split and the minibatch order.
const SEED: u64 = 2024;
/// Seed of the Glorot initialisation.
const INIT_SEED: u64 = 7;

type Res<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Pixels as columns (64×n, scaled from 0–16 to [0, 1]) and their labels.
struct Set {
    x: Array2<f64>,
    y: Vec<usize>,
}

impl Set {
    fn select(&self, idx: &[usize]) -> Set {
        Set {
            x: self.x.select(Axis(1), idx),
            y: idx.iter().map(|&i| self.y[i]).collect(),
        }
    }
    fn len(&self) -> usize {
        self.y.len()
    }
}

fn load() -> Res<Set> {
    let mut lines = DATA.lines();
    let header = lines.next().ok_or("empty data file")?;
    if header.split(',').count() != PIXELS + 1 {
        return Err(format!("expected {} columns, header is {header:?}", PIXELS + 1).into());
    }
    let (mut pixels, mut y) = (Vec::new(), Vec::new());
    for (i, line) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let row = line
            .split(',')
            .map(|s| s.trim().parse::<u32>())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| format!("line {}: {e}", i + 2))?;
        if row.len() != PIXELS + 1 || row[PIXELS] as usize >= CLASSES {
            return Err(format!("line {}: bad row", i + 2).into());
        }
        pixels.extend(row[..PIXELS].iter().map(|&p| f64::from(p) / 16.0));
        y.push(row[PIXELS] as usize);
    }
    // Rows of the file are examples; the network wants them as columns.
    let x = Array2::from_shape_vec((y.len(), PIXELS), pixels)?
        .reversed_axes()
        .as_standard_layout()
        .to_owned();
    Ok(Set { x, y })
}

/// The parameters `[W⁽¹⁾, b⁽¹⁾, W⁽²⁾, b⁽²⁾, …]`, shared with each tape by reference count.
struct Params(Vec<ArcArray2<f64>>);

/// Records the logits `Z` of the minibatch `x` (a constant) for the parameters `p`.
fn record_logits(tape: &mut Tape<f64>, p: &[Var], x: Var) -> matgrad::Result<Var> {
    let mut h = x;
    let layers = p.len() / 2;
    for (l, wb) in p.chunks(2).enumerate() {
        let a = tape.apply1(MatMul::nn(), &[wb[0], h])?;
        let a = tape.apply1(AddBias, &[a, wb[1]])?;
        h = if l + 1 < layers {
            tape.apply1(Map(Tanh), &[a])?
        } else {
            a
        };
    }
    Ok(h)
}

/// Records the mean softmax cross-entropy of a minibatch, the parameters as leaves.
fn record_loss(
    tape: &mut Tape<f64>,
    params: &Params,
    batch: &Set,
) -> matgrad::Result<(Vec<Var>, Var)> {
    let p: Vec<Var> = params.0.iter().map(|a| tape.leaf(a.clone())).collect();
    let x = tape.constant(batch.x.clone());
    let z = record_logits(tape, &p, x)?;
    let loss = tape.apply1(SoftmaxCrossEntropy::new(batch.y.clone()), &[z])?;
    Ok((p, loss))
}

/// Fraction of `set` classified correctly (argmax of the logits).
fn accuracy(params: &Params, set: &Set) -> matgrad::Result<f64> {
    let mut tape = Tape::new();
    let p: Vec<Var> = params.0.iter().map(|a| tape.constant(a.clone())).collect();
    let x = tape.constant(set.x.clone());
    let z = record_logits(&mut tape, &p, x)?;
    let z = tape.value(z)?;
    let correct = z
        .columns()
        .into_iter()
        .zip(&set.y)
        .filter(|(col, &label)| {
            let best = col
                .iter()
                .enumerate()
                .fold(
                    (0, f64::NEG_INFINITY),
                    |b, (i, &v)| if v > b.1 { (i, v) } else { b },
                );
            best.0 == label
        })
        .count();
    Ok(correct as f64 / set.len() as f64)
}

fn plot(loss: &[f64], acc: &[f64]) -> Res<()> {
    let root = SVGBackend::new(PLOT, (900, 380)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(450);
    let epochs = loss.len() as f64;

    let top = loss.iter().cloned().fold(0.0, f64::max) * 1.05;
    let mut chart = ChartBuilder::on(&left)
        .caption("training loss (softmax cross-entropy)", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(52)
        .build_cartesian_2d(1.0..epochs, 0.0..top)?;
    chart
        .configure_mesh()
        .max_light_lines(0)
        .x_desc("epoch")
        .y_desc("mean loss")
        .draw()?;
    chart.draw_series(LineSeries::new(
        loss.iter().enumerate().map(|(i, &v)| (i as f64 + 1.0, v)),
        BLUE.stroke_width(2),
    ))?;

    let lo = acc.iter().cloned().fold(1.0, f64::min).min(0.9) * 100.0;
    let mut chart = ChartBuilder::on(&right)
        .caption("test accuracy (500 held-out digits)", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(52)
        .build_cartesian_2d(1.0..epochs, lo..100.0)?;
    chart
        .configure_mesh()
        .max_light_lines(0)
        .x_desc("epoch")
        .y_desc("accuracy (%)")
        .draw()?;
    chart.draw_series(LineSeries::new(
        acc.iter()
            .enumerate()
            .map(|(i, &v)| (i as f64 + 1.0, 100.0 * v)),
        RED.stroke_width(2),
    ))?;
    root.present()?;
    Ok(())
}

fn main() -> Res<ExitCode> {
    let start = Instant::now();
    let all = load()?;
    let mut rng = random::rng(SEED);
    let mut order: Vec<usize> = (0..all.len()).collect();
    order.shuffle(&mut rng);
    let (test_idx, train_idx) = order.split_at(TEST);
    let (mut train, mut test) = (all.select(train_idx), all.select(test_idx));
    // Pixels in [0, 1], centred on 0 for the tanh units: [−½, ½].
    train.x -= 0.5;
    test.x -= 0.5;
    println!(
        "UCI digits: {} images of 8×8 pixels, {} for training, {} for testing",
        all.len(),
        train.len(),
        test.len()
    );
    println!(
        "network {PIXELS}-{HIDDEN}-{HIDDEN}-{CLASSES}, tanh, softmax cross-entropy; Adam, \
         learning rate {LEARNING_RATE} (cosine decay), minibatches of {BATCH}, {EPOCHS} epochs"
    );

    let sizes = [PIXELS, HIDDEN, HIDDEN, CLASSES];
    let mut init = random::rng(INIT_SEED);
    let mut params = Params(Vec::new());
    for w in sizes.windows(2) {
        params
            .0
            .push(glorot_uniform(w[1], w[0], &mut init).into_shared());
        params.0.push(Array2::zeros((w[1], 1)).into_shared());
    }

    // The loss on one minibatch at the initial parameters, as a primitive of the
    // parameters, proven by the shared checker before any training.
    {
        let batch = train.select(&(0..BATCH).collect::<Vec<_>>());
        let mut tape = Tape::new();
        let (p, loss) = record_loss(&mut tape, &params, &batch)?;
        let model = tape
            .function("MLP loss on a minibatch", &p, &[loss])?
            .with_input_names(&["W1", "b1", "W2", "b2", "W3", "b3"]);
        let views: Vec<_> = params.0.iter().map(|a| a.view()).collect();
        // The loss (about 2.3) is summed over the batch: rounding in it limits the
        // finite differences to about 1e-8 relative in some directions, so they are
        // compared at 1e-6 with a larger step; the exact identities (adjoint,
        // accumulation, first write, saves) keep their tolerance of 1e-11.
        let report = Checker::new()
            .step(1e-3)
            .tol(1e-6)
            .full_jacobian(false)
            .check(&model, &views)?;
        print!("{report}");
        if !report.passed() {
            eprintln!("gradient check FAILED");
            return Ok(ExitCode::FAILURE);
        }
    }

    let steps = train.len().div_ceil(BATCH);
    let bar = ProgressBar::new((EPOCHS * steps) as u64);
    bar.set_style(ProgressStyle::with_template(
        "{elapsed_precise} [{bar:40}] epoch {msg}",
    )?);
    let mut opt = Adam::new(LEARNING_RATE);
    let (mut losses, mut accs) = (Vec::new(), Vec::new());
    let train_start = Instant::now();
    let mut idx: Vec<usize> = (0..train.len()).collect();
    for epoch in 1..=EPOCHS {
        let progress = (epoch - 1) as f64 / EPOCHS as f64;
        opt.lr = LEARNING_RATE * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        idx.shuffle(&mut rng);
        let mut total = 0.0;
        for chunk in idx.chunks(BATCH) {
            let batch = train.select(chunk);
            let mut tape = Tape::new();
            let (p, loss) = record_loss(&mut tape, &params, &batch)?;
            total += tape.value(loss)?[(0, 0)] * chunk.len() as f64;
            let mut grads = tape.backward(loss)?;
            let g: Vec<Array2<f64>> = p
                .iter()
                .map(|&v| grads.remove(v).ok_or("no gradient"))
                .collect::<std::result::Result<_, _>>()?;
            // The tape shares the parameters: drop it so they are updated in place.
            drop(tape);
            let mut pv: Vec<_> = params.0.iter_mut().map(|a| a.view_mut()).collect();
            let gv: Vec<_> = g.iter().map(|a| a.view()).collect();
            opt.step(&mut pv, &gv)?;
            bar.inc(1);
        }
        let loss = total / train.len() as f64;
        let acc = accuracy(&params, &test)?;
        bar.set_message(format!(
            "{epoch}/{EPOCHS}: loss {loss:.4}, test accuracy {:.1}%",
            100.0 * acc
        ));
        losses.push(loss);
        accs.push(acc);
    }
    bar.finish();
    let train_time = train_start.elapsed().as_secs_f64();

    let train_acc = accuracy(&params, &train)?;
    let test_acc = accuracy(&params, &test)?;
    println!(
        "final: training loss {:.4}, training accuracy {:.2}%, test accuracy {:.2}% ({} of {})",
        losses[EPOCHS - 1],
        100.0 * train_acc,
        100.0 * test_acc,
        (test_acc * test.len() as f64).round(),
        test.len()
    );
    plot(&losses, &accs)?;
    println!("plot: {PLOT}");
    println!(
        "training {train_time:.2} s, total {:.2} s",
        start.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}
