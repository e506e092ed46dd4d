//! Memory of the tape: a training step replayed through a recorded model
//! ([`Recorded::step`]) allocates no matrix storage after the first, and checkpointed
//! segments ([`Tape::checkpoint`]) give the plain tape's gradients with a fraction of
//! its peak memory.
//!
//! A counting global allocator follows the current thread only (the harness runs
//! tests on several threads): the number of allocations, those of matrix size, and
//! the live bytes with their peak. BLAS's own buffers come from OpenBLAS's allocator
//! and are not counted. Times are measured by `examples/tape_memory.rs`, not here.

use matgrad::check::random;
use matgrad::nn::{glorot_uniform, Adam, Optimizer, Sgd};
use matgrad::prelude::*;
use ndarray::{ArcArray2, Array2, ArrayView2};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

/// An allocation of at least 64 `f64`s counts as matrix storage.
const MATRIX_BYTES: usize = 64 * 8;
/// A page or more: every matrix of the re-recorded model below (the smallest, its
/// 10×64 logits, takes 5120 bytes); the reverse sweep's bookkeeping, a few dozen
/// bytes per value of the graph, stays below.
const PAGE_BYTES: usize = 4096;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
    static LARGE: Cell<usize> = const { Cell::new(0) };
    static PAGES: Cell<usize> = const { Cell::new(0) };
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn note(grow: usize, shrink: usize, new: bool) {
    // `try_with`: the thread-locals may already be gone while a thread shuts down.
    if !COUNTING.try_with(Cell::get).unwrap_or(false) {
        return;
    }
    if new {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        if grow >= MATRIX_BYTES {
            let _ = LARGE.try_with(|c| c.set(c.get() + 1));
        }
        if grow >= PAGE_BYTES {
            let _ = PAGES.try_with(|c| c.set(c.get() + 1));
        }
    }
    let _ = LIVE.try_with(|l| {
        let live = l.get() + grow as isize - shrink as isize;
        l.set(live);
        let _ = PEAK.try_with(|p| p.set(p.get().max(live)));
    });
}

// SAFETY: every call is forwarded to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size(), 0, true);
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size(), 0, true);
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size, layout.size(), true);
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(0, layout.size(), false);
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// What `f` allocated on this thread: allocations, those of matrix size, and the peak
/// of live bytes above the level at the start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Counted {
    allocations: usize,
    large: usize,
    /// Allocations of [`PAGE_BYTES`] or more.
    pages: usize,
    peak_bytes: usize,
}

fn counted<R>(f: impl FnOnce() -> R) -> (R, Counted) {
    ALLOCATIONS.with(|c| c.set(0));
    LARGE.with(|c| c.set(0));
    PAGES.with(|c| c.set(0));
    LIVE.with(|c| c.set(0));
    PEAK.with(|c| c.set(0));
    COUNTING.with(|c| c.set(true));
    let r = f();
    COUNTING.with(|c| c.set(false));
    let counted = Counted {
        allocations: ALLOCATIONS.with(Cell::get),
        large: LARGE.with(Cell::get),
        pages: PAGES.with(Cell::get),
        peak_bytes: PEAK.with(Cell::get).max(0) as usize,
    };
    (r, counted)
}

fn rel_close(a: ArrayView2<'_, f64>, b: ArrayView2<'_, f64>, tol: f64) -> bool {
    let scale = b.iter().fold(f64::MIN_POSITIVE, |m, v| m.max(v.abs()));
    a.dim() == b.dim()
        && a.iter()
            .zip(b.iter())
            .all(|(x, y)| (x - y).abs() <= tol * scale)
}

/// A tanh MLP with a linear last layer and the softmax cross-entropy: `widths[0]` is
/// the input width, the last entry the number of classes.
struct Mlp {
    params: Vec<Array2<f64>>,
    grads: Vec<Array2<f64>>,
    x: Array2<f64>,
    labels: Vec<usize>,
}

impl Mlp {
    fn new(widths: &[usize], batch: usize, seed: u64) -> Self {
        let mut rng = random::rng(seed);
        let mut params = Vec::new();
        for w in widths.windows(2) {
            params.push(glorot_uniform(w[1], w[0], &mut rng));
            params.push(random::randn(w[1], 1, &mut rng) * 0.1);
        }
        let grads = params.iter().map(|p| Array2::zeros(p.raw_dim())).collect();
        let x = random::randn(widths[0], batch, &mut rng);
        let classes = widths[widths.len() - 1];
        let labels = (0..batch).map(|j| (j * 7 + 3) % classes).collect();
        Mlp {
            params,
            grads,
            x,
            labels,
        }
    }

    /// Records the model on a tape: `[x, W₁, b₁, …]` and the loss.
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
}

/// One training step of a replayed model: forward, reverse into the gradient buffers,
/// update. Returns the loss.
fn train_step(
    model: &mut Recorded<f64>,
    mlp: &mut Mlp,
    one: &Array2<f64>,
    opt: &mut dyn Optimizer<f64>,
) -> matgrad::Result<f64> {
    {
        let mut x: smallvec::SmallVec<[ArrayView2<'_, f64>; 8]> = smallvec![mlp.x.view()];
        x.extend(mlp.params.iter().map(|p| p.view()));
        let mut grads: smallvec::SmallVec<[Grad<'_, f64>; 8]> = smallvec![Grad::Skip];
        grads.extend(mlp.grads.iter_mut().map(|g| Grad::Write(g.view_mut())));
        model.step(&x, &[Some(one.view())], &mut grads)?;
    }
    let loss = model.output(0).map_or(f64::NAN, |c| c[(0, 0)]);
    let mut p: smallvec::SmallVec<[_; 8]> = mlp.params.iter_mut().map(|p| p.view_mut()).collect();
    let g: smallvec::SmallVec<[_; 8]> = mlp.grads.iter().map(|g| g.view()).collect();
    opt.step(&mut p, &g)?;
    Ok(loss)
}

fn replayed_steps_allocate_no_matrix(opt: &mut dyn Optimizer<f64>, label: &str) {
    let mut mlp = Mlp::new(&[64, 128, 128, 10], 64, 21);
    let mut tape = Tape::new();
    let (vars, loss) = mlp.record(&mut tape).unwrap();
    let mut model = tape.function("MLP step", &vars, &[loss]).unwrap();
    let expected = tape.backward(loss).unwrap();
    let one = Array2::ones((1, 1));

    let (first_loss, first) = counted(|| train_step(&mut model, &mut mlp, &one, opt).unwrap());
    // The replay's gradients are the tape's.
    // (Compared after the update with the saved gradient buffers, which the update
    // does not touch.)
    for (v, g) in vars[1..].iter().zip(&mlp.grads) {
        let e = expected.get(*v).unwrap();
        assert!(
            rel_close(g.view(), e.view(), 1e-12),
            "{label}: gradient differs"
        );
    }
    let mut per_step = Vec::new();
    let mut last = first_loss;
    for _ in 0..20 {
        let (l, c) = counted(|| train_step(&mut model, &mut mlp, &one, opt).unwrap());
        per_step.push(c);
        last = l;
    }
    println!(
        "{label}: first step {} allocations ({} of matrix size); later steps {:?}",
        first.allocations,
        first.large,
        per_step
            .iter()
            .map(|c| (c.allocations, c.large))
            .collect::<Vec<_>>()
    );
    assert!(first.large > 0, "{label}: the first step makes the buffers");
    for c in &per_step {
        assert_eq!(c.large, 0, "{label}: a later step allocated matrix storage");
        assert!(c.allocations <= 4, "{label}: {} allocations", c.allocations);
        assert_eq!(
            c.allocations, per_step[0].allocations,
            "{label}: not stable"
        );
    }
    assert!(last < first_loss, "{label}: loss {first_loss} → {last}");
}

#[test]
fn a_replayed_training_step_allocates_no_matrix_after_the_first_adam() {
    replayed_steps_allocate_no_matrix(&mut Adam::new(1e-2), "Adam");
}

#[test]
fn a_replayed_training_step_allocates_no_matrix_after_the_first_sgd() {
    replayed_steps_allocate_no_matrix(&mut Sgd::new(0.1).momentum(0.9), "Sgd");
}

#[test]
fn a_step_writes_zero_where_nothing_reaches_and_adds_when_asked() -> matgrad::Result<()> {
    let mut rng = random::rng(4);
    let (a0, b0) = (
        random::randn::<f64>(3, 4, &mut rng),
        random::randn::<f64>(4, 2, &mut rng),
    );
    let mut tape = Tape::new();
    let (a, b) = (tape.leaf(a0.clone()), tape.leaf(b0.clone()));
    let u = tape.leaf(random::randn::<f64>(2, 2, &mut rng)); // unused by the output
    let c = tape.apply1(MatMul::nn(), &[a, b])?;
    let s = tape.apply1(Hadamard, &[c, c])?; // a value read twice
    let out = tape.apply1(Sum, &[s])?;
    let mut f = tape.function("f", &[a, b, u], &[out])?;
    let expected = tape.backward(out)?;
    let one = Array2::ones((1, 1));
    let mut abar = Array2::from_elem((3, 4), f64::NAN);
    let mut bbar = Array2::from_elem((4, 2), 1.0);
    let mut ubar = Array2::from_elem((2, 2), f64::NAN);
    let u0 = tape.value(u)?.to_owned();
    for _ in 0..2 {
        bbar.fill(1.0);
        f.step(
            &[a0.view(), b0.view(), u0.view()],
            &[Some(one.view())],
            &mut [
                Grad::Write(abar.view_mut()),
                Grad::Add(bbar.view_mut()),
                Grad::Write(ubar.view_mut()),
            ],
        )?;
        assert!(rel_close(
            abar.view(),
            expected.get(a).unwrap().view(),
            1e-13
        ));
        let b_plus_one = expected.get(b).unwrap() + 1.0;
        assert!(rel_close(bbar.view(), b_plus_one.view(), 1e-13));
        assert!(ubar.iter().all(|&v| v == 0.0));
    }
    // Bad shapes are typed errors naming the function.
    let bad = f.step(
        &[a0.view(), b0.view(), u0.view()],
        &[Some(Array2::ones((2, 2)).view())],
        &mut [Grad::Skip, Grad::Skip, Grad::Skip],
    );
    assert!(
        matches!(
            bad,
            Err(Error::WrongShape {
                op: "f",
                name: "cotangent",
                ..
            })
        ),
        "{bad:?}"
    );
    Ok(())
}

/// A `depth`-layer tanh chain of width `n` on a batch of `n` and the softmax
/// cross-entropy of its last layer, with the parameters `[W₁, b₁, …]`.
///
/// The values are shared arrays, so that recording them on a tape copies nothing and
/// the measured peak is the step's own.
struct Deep {
    x: ArcArray2<f64>,
    params: Vec<ArcArray2<f64>>,
    labels: Vec<usize>,
}

impl Deep {
    fn new(depth: usize, n: usize, seed: u64) -> Self {
        let mut rng = random::rng(seed);
        let params = (0..depth)
            .flat_map(|_| {
                [
                    glorot_uniform(n, n, &mut rng).into_shared(),
                    (random::randn(n, 1, &mut rng) * 0.1).into_shared(),
                ]
            })
            .collect();
        Deep {
            x: random::randn(n, n, &mut rng).into_shared(),
            params,
            labels: (0..n).map(|j| (j * 5 + 1) % n).collect(),
        }
    }

    /// Records the model, with the layers in checkpointed segments of `segment`
    /// layers (0: no checkpoints); returns the parameters' vars and the loss.
    fn record(&self, tape: &mut Tape<f64>, segment: usize) -> matgrad::Result<(Vec<Var>, Var)> {
        let mut h = tape.constant(self.x.clone());
        let params: Vec<Var> = self.params.iter().map(|p| tape.leaf(p.clone())).collect();
        let layer = |t: &mut Tape<f64>, h: Var, wb: &[Var]| -> matgrad::Result<Var> {
            let z = t.apply1(MatMul::nn(), &[wb[0], h])?;
            let a = t.apply1(AddBias, &[z, wb[1]])?;
            t.apply1(Map(Tanh), &[a])
        };
        if segment == 0 {
            for wb in params.chunks(2) {
                h = layer(tape, h, wb)?;
            }
        } else {
            for seg in params.chunks(2 * segment) {
                let mut inputs = vec![h];
                inputs.extend_from_slice(seg);
                h = tape.checkpoint("segment", &inputs, |t, v| {
                    let mut h = v[0];
                    for wb in v[1..].chunks(2) {
                        h = layer(t, h, wb)?;
                    }
                    Ok(vec![h])
                })?[0];
            }
        }
        let loss = tape.apply1(SoftmaxCrossEntropy::new(self.labels.clone()), &[h])?;
        Ok((params, loss))
    }

    /// Record forward and reverse into the gradient buffers; the tape is dropped
    /// before returning.
    fn step(&self, grads: &mut [Array2<f64>], segment: usize) -> matgrad::Result<()> {
        let mut tape = Tape::new();
        let (params, loss) = self.record(&mut tape, segment)?;
        let one = Array2::ones((1, 1));
        let mut g: Vec<(Var, Grad<'_, f64>)> = params
            .iter()
            .zip(grads.iter_mut())
            .map(|(&v, g)| (v, Grad::Write(g.view_mut())))
            .collect();
        tape.backward_into(&[(loss, one.view())], &mut g)
    }
}

#[test]
fn checkpointed_segments_give_the_same_gradients_with_less_memory() -> matgrad::Result<()> {
    let (depth, n) = (32, 256);
    let segment = 6; // about √32 layers
    let deep = Deep::new(depth, n, 8);
    let zeros = || -> Vec<Array2<f64>> {
        deep.params
            .iter()
            .map(|p| Array2::zeros(p.raw_dim()))
            .collect()
    };
    let (mut plain, mut ckpt) = (zeros(), zeros());
    let (r, plain_mem) = counted(|| deep.step(&mut plain, 0));
    r?;
    let (r, ckpt_mem) = counted(|| deep.step(&mut ckpt, segment));
    r?;
    for (i, (p, c)) in plain.iter().zip(&ckpt).enumerate() {
        assert!(
            rel_close(c.view(), p.view(), 1e-12),
            "gradient {i} differs between the plain and the checkpointed tape"
        );
    }
    let ratio = ckpt_mem.peak_bytes as f64 / plain_mem.peak_bytes as f64;
    println!(
        "peak bytes: plain {} , checkpointed every {segment} layers {} ({:.1} %)",
        plain_mem.peak_bytes,
        ckpt_mem.peak_bytes,
        100.0 * ratio
    );
    assert!(ratio <= 0.4, "peak memory ratio {ratio:.3}");
    Ok(())
}

#[test]
fn a_checkpoint_is_checked_like_any_primitive() -> matgrad::Result<()> {
    let mut rng = random::rng(9);
    let x0 = random::randn::<f64>(3, 5, &mut rng);
    let w0 = random::randn::<f64>(3, 3, &mut rng);
    let mut tape = Tape::new();
    let (x, w) = (tape.leaf(x0.clone()), tape.leaf(w0.clone()));
    let outs = tape.checkpoint("segment", &[x, w], |t, v| {
        let z = t.apply1(MatMul::nn(), &[v[1], v[0]])?;
        let h = t.apply1(Map(Tanh), &[z])?;
        let s = t.apply1(Hadamard, &[h, v[0]])?;
        Ok(vec![h, s])
    })?;
    assert_eq!(outs.len(), 2);
    assert_eq!(tape.len(), 1);
    let c = tape.apply1(Hadamard, &[outs[0], outs[1]])?;
    let out = tape.apply1(Sum, &[c])?;
    let model = tape.function("checkpointed model", &[x, w], &[out])?;
    Checker::new()
        .check(&model, &[x0.view(), w0.view()])?
        .assert_passed();
    // The same graph without the checkpoint.
    let mut plain = Tape::new();
    let (px, pw) = (plain.leaf(x0.clone()), plain.leaf(w0.clone()));
    let z = plain.apply1(MatMul::nn(), &[pw, px])?;
    let h = plain.apply1(Map(Tanh), &[z])?;
    let s = plain.apply1(Hadamard, &[h, px])?;
    let c = plain.apply1(Hadamard, &[h, s])?;
    let pout = plain.apply1(Sum, &[c])?;
    let (g, e) = (tape.backward(out)?, plain.backward(pout)?);
    assert!(rel_close(
        g.get(x).unwrap().view(),
        e.get(px).unwrap().view(),
        1e-13
    ));
    assert!(rel_close(
        g.get(w).unwrap().view(),
        e.get(pw).unwrap().view(),
        1e-13
    ));
    Ok(())
}

/// The eager style: the model recorded anew every step on a [`Tape::reset`] tape, whose
/// values and cotangents come from the buffers of the step before. Parameters and
/// data are shared arrays (a leaf holds a reference, not a copy) and the labels an
/// `Arc<[usize]>`.
#[test]
fn a_re_recorded_step_on_a_reset_tape_allocates_no_matrix_after_the_first() {
    let mlp = Mlp::new(&[64, 128, 128, 10], 64, 23);
    let mut params: Vec<ArcArray2<f64>> = mlp.params.iter().map(|p| p.to_shared()).collect();
    let mut grads = mlp.grads;
    let x = mlp.x.into_shared();
    let labels: std::sync::Arc<[usize]> = mlp.labels.into();
    let layers = params.len() / 2;
    let one = Array2::ones((1, 1));
    let mut opt = Adam::new(1e-2);
    let mut tape = Tape::new();

    let mut step = |tape: &mut Tape<f64>, params: &mut Vec<ArcArray2<f64>>| -> f64 {
        tape.reset();
        let mut h = tape.constant(x.clone());
        let mut leaves = Vec::with_capacity(params.len());
        for (l, wb) in params.chunks(2).enumerate() {
            let (w, b) = (tape.leaf(wb[0].clone()), tape.leaf(wb[1].clone()));
            leaves.extend([w, b]);
            let z = tape.apply1(MatMul::nn(), &[w, h]).unwrap();
            let a = tape.apply1(AddBias, &[z, b]).unwrap();
            h = if l + 1 < layers {
                tape.apply1(Map(Tanh), &[a]).unwrap()
            } else {
                a
            };
        }
        let loss = tape
            .apply1(SoftmaxCrossEntropy::new(labels.clone()), &[h])
            .unwrap();
        let value = tape.value(loss).unwrap()[(0, 0)];
        let mut g: Vec<(Var, Grad<'_, f64>)> = leaves
            .iter()
            .zip(grads.iter_mut())
            .map(|(&v, g)| (v, Grad::Write(g.view_mut())))
            .collect();
        tape.backward_into(&[(loss, one.view())], &mut g).unwrap();
        drop(g);
        // Give the parameters back (the tape's leaves share them) before updating in place.
        tape.reset();
        let mut p: Vec<_> = params.iter_mut().map(|p| p.view_mut()).collect();
        let gv: Vec<_> = grads.iter().map(|g| g.view()).collect();
        opt.step(&mut p, &gv).unwrap();
        value
    };

    let (first_loss, first) = counted(|| step(&mut tape, &mut params));
    let mut later = Vec::new();
    let mut last = first_loss;
    for _ in 0..10 {
        let (l, c) = counted(|| step(&mut tape, &mut params));
        later.push(c);
        last = l;
    }
    println!(
        "re-recorded step: first {} allocations ({} of a page or more), later (all, ≥ 512 B, ≥ 4 KiB) {:?}",
        first.allocations,
        first.pages,
        later
            .iter()
            .map(|c| (c.allocations, c.large, c.pages))
            .collect::<Vec<_>>()
    );
    assert!(first.pages > 0, "the first step makes the buffers");
    for c in &later {
        assert_eq!(c.pages, 0, "a later step allocated matrix storage");
        // The two of 512 bytes or more are the sweep's per-value vectors (17 values).
        assert!(c.large <= 2, "{} allocations of 512 bytes or more", c.large);
    }
    assert!(tape.pooled_elements() > 0);
    assert!(last < first_loss, "loss {first_loss} → {last}");
}
