//! Steady-state loops with caller-owned buffers and workspaces allocate nothing, and a
//! first-write reverse pass never reads its destination.
//!
//! A counting global allocator counts the allocations made by the current thread
//! while counting is switched on, so the test harness's other threads do not disturb
//! the count. BLAS's own buffers come from OpenBLAS's allocator, not Rust's, and are
//! not counted: what is counted is everything matgrad's code allocates.

use matgrad::check::random;
use matgrad::prelude::*;
use ndarray::{Array2, ArrayView2};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
    static BYTES: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // `try_with`: the thread-local may already be gone while a thread shuts down.
    let on = COUNTING.try_with(Cell::get).unwrap_or(false);
    if on {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        let _ = BYTES.try_with(|c| c.set(c.get() + size));
    }
}

// SAFETY: every call is forwarded to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations and bytes that `f` makes on this thread.
fn counted(f: impl FnOnce()) -> (usize, usize) {
    ALLOCATIONS.with(|c| c.set(0));
    BYTES.with(|c| c.set(0));
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    (ALLOCATIONS.with(Cell::get), BYTES.with(Cell::get))
}

fn shape(a: &Array2<f64>) -> Shape {
    Shape(a.nrows(), a.ncols())
}

/// One `MatMul → AddBias → Map(Tanh)` layer, forward into buffers, then the reverse
/// pass twice: first writes, then adds (as a second child of the same values would).
struct Layer {
    w: Array2<f64>,
    h: Array2<f64>,
    b: Array2<f64>,
    z: Array2<f64>,
    a: Array2<f64>,
    y: Array2<f64>,
    ybar: Array2<f64>,
    abar: Array2<f64>,
    zbar: Array2<f64>,
    bbar: Array2<f64>,
    wbar: Array2<f64>,
    hbar: Array2<f64>,
}

impl Layer {
    fn new(n: usize) -> Self {
        let mut rng = random::rng(7);
        let r = |rng: &mut _, m, k| random::randn::<f64>(m, k, rng);
        Layer {
            w: r(&mut rng, n, n),
            h: r(&mut rng, n, n),
            b: r(&mut rng, n, 1),
            z: Array2::zeros((n, n)),
            a: Array2::zeros((n, n)),
            y: Array2::zeros((n, n)),
            ybar: r(&mut rng, n, n),
            abar: Array2::zeros((n, n)),
            zbar: Array2::zeros((n, n)),
            bbar: Array2::zeros((n, 1)),
            wbar: Array2::zeros((n, n)),
            hbar: Array2::zeros((n, n)),
        }
    }

    fn step(&mut self) -> matgrad::Result<()> {
        let (mm, bias, tanh) = (MatMul::nn(), AddBias, Map(Tanh));
        let s = self;
        mm.forward_into(&[s.w.view(), s.h.view()], &mut [s.z.view_mut()], None)?;
        bias.forward_into(&[s.z.view(), s.b.view()], &mut [s.a.view_mut()], None)?;
        tanh.forward_into(&[s.a.view()], &mut [s.y.view_mut()], None)?;
        for acc in [Accum::Replace, Accum::Add] {
            tanh.backward_into(
                &[s.a.view()],
                &[s.y.view()],
                &[Some(s.ybar.view())],
                &mut [Grad::new(s.abar.view_mut(), acc)],
                None,
            )?;
            bias.backward_into(
                &[s.z.view(), s.b.view()],
                &[s.a.view()],
                &[Some(s.abar.view())],
                &mut [
                    Grad::new(s.zbar.view_mut(), acc),
                    Grad::new(s.bbar.view_mut(), acc),
                ],
                None,
            )?;
            mm.backward_into(
                &[s.w.view(), s.h.view()],
                &[s.z.view()],
                &[Some(s.zbar.view())],
                &mut [
                    Grad::new(s.wbar.view_mut(), acc),
                    Grad::new(s.hbar.view_mut(), acc),
                ],
                None,
            )?;
        }
        Ok(())
    }
}

#[test]
fn a_dense_layer_step_allocates_nothing_after_the_first() {
    let mut layer = Layer::new(64);
    let (first, _) = counted(|| layer.step().unwrap());
    let (steady, bytes) = counted(|| {
        for _ in 0..5 {
            layer.step().unwrap();
        }
    });
    assert_eq!(
        (steady, bytes),
        (0, 0),
        "steady state allocated (first step: {first})"
    );
    // The gradients are real. The second pass adds into the buffers the first pass
    // wrote and reads them as cotangents: Ā, then 2Ā; Z̄ = Ā + 2Ā; W̄ = ĀHᵀ + 3ĀHᵀ.
    let expect = (4.0 / 3.0) * layer.zbar.dot(&layer.h.t());
    assert!((&layer.wbar - &expect).iter().all(|d| d.abs() < 1e-9));
}

/// `Cholesky → ChoSolve → CholLogDet`, the core of a Gaussian-process likelihood.
struct Gp {
    k: Array2<f64>,
    b: Array2<f64>,
    l: Array2<f64>,
    x: Array2<f64>,
    /// ChoSolve's residual, `L⁻¹B`.
    half: Array2<f64>,
    c: Array2<f64>,
    xbar: Array2<f64>,
    cbar: Array2<f64>,
    lbar: Array2<f64>,
    bbar: Array2<f64>,
    kbar: Array2<f64>,
    ws: Vec<f64>,
}

impl Gp {
    fn new(n: usize, m: usize) -> Self {
        let mut rng = random::rng(8);
        let k = random::spd::<f64>(n, &mut rng);
        let b = random::randn::<f64>(n, m, &mut rng);
        let xbar = random::randn::<f64>(n, m, &mut rng);
        let shapes = [Shape(n, n), Shape(n, m)];
        let need = [
            Rule::<f64>::workspace(&Cholesky::new(), &shapes[..1]),
            Rule::<f64>::workspace(&ChoSolve, &shapes),
            Rule::<f64>::workspace(&CholLogDet, &shapes[..1]),
        ];
        Gp {
            k,
            b,
            l: Array2::zeros((n, n)),
            x: Array2::zeros((n, m)),
            half: Array2::zeros((n, m)),
            c: Array2::zeros((1, 1)),
            xbar,
            cbar: Array2::from_elem((1, 1), 0.5),
            lbar: Array2::zeros((n, n)),
            bbar: Array2::zeros((n, m)),
            kbar: Array2::zeros((n, n)),
            ws: vec![0.0; need.into_iter().max().unwrap_or(0)],
        }
    }

    fn step(&mut self) -> matgrad::Result<()> {
        let (chol, solve, logdet) = (Cholesky::new(), ChoSolve, CholLogDet);
        let s = self;
        let ws = &mut s.ws;
        chol.forward_into(&[s.k.view()], &mut [s.l.view_mut()], Some(ws))?;
        solve.forward_into(
            &[s.l.view(), s.b.view()],
            &mut [s.x.view_mut(), s.half.view_mut()],
            Some(ws),
        )?;
        logdet.forward_into(&[s.l.view()], &mut [s.c.view_mut()], Some(ws))?;
        for acc in [Accum::Replace, Accum::Add] {
            solve.backward_into(
                &[s.l.view(), s.b.view()],
                &[s.x.view(), s.half.view()],
                &[Some(s.xbar.view())],
                &mut [
                    Grad::new(s.lbar.view_mut(), acc),
                    Grad::new(s.bbar.view_mut(), acc),
                ],
                Some(ws),
            )?;
            // L has two children: the solve wrote L̄, the log-determinant adds to it.
            logdet.backward_into(
                &[s.l.view()],
                &[s.c.view()],
                &[Some(s.cbar.view())],
                &mut [Grad::Add(s.lbar.view_mut())],
                Some(ws),
            )?;
            chol.backward_into(
                &[s.k.view()],
                &[s.l.view()],
                &[Some(s.lbar.view())],
                &mut [Grad::new(s.kbar.view_mut(), acc)],
                Some(ws),
            )?;
        }
        Ok(())
    }
}

#[test]
fn a_gaussian_process_step_allocates_nothing_after_the_first() {
    // Past one diagonal block of the triangular product in ChoSolve's reverse pass, so
    // that it goes by halves too.
    let mut gp = Gp::new(matgrad::blas::GEMM_TRI_LEAF + 44, 3);
    let (first, _) = counted(|| gp.step().unwrap());
    let (steady, bytes) = counted(|| {
        for _ in 0..3 {
            gp.step().unwrap();
        }
    });
    assert_eq!(
        (steady, bytes),
        (0, 0),
        "steady state allocated (first step: {first})"
    );
    assert!(gp.kbar.iter().all(|v| v.is_finite()));
    assert!(gp.kbar.iter().any(|&v| v != 0.0));
}

/// A primitive and the point where it is evaluated.
type Case = (Box<dyn Rule<f64>>, Vec<Array2<f64>>);

/// Every primitive of the crate, at a random point with non-square inputs where the
/// primitive allows them.
fn every_primitive() -> Vec<Case> {
    let mut rng = random::rng(9);
    let mut r = |m, n| random::randn::<f64>(m, n, &mut rng);
    let spd = random::spd::<f64>(6, &mut random::rng(10));
    let l = random::lower::<f64>(6, &mut random::rng(11));
    vec![
        (Box::new(MatMul::nn()), vec![r(3, 5), r(5, 4)]),
        (Box::new(MatMul::tn()), vec![r(5, 3), r(5, 4)]),
        (Box::new(Add), vec![r(3, 5), r(3, 5)]),
        (Box::new(AddBias), vec![r(3, 5), r(3, 1)]),
        (Box::new(Hadamard), vec![r(3, 5), r(3, 5)]),
        (Box::new(Map(Tanh)), vec![r(3, 5)]),
        (Box::new(Map(Sigmoid)), vec![r(3, 5)]),
        (Box::new(Map(Exp)), vec![r(3, 5)]),
        (Box::new(Map(Sin)), vec![r(3, 5)]),
        (Box::new(Transpose), vec![r(3, 5)]),
        (Box::new(Tril::new(1)), vec![r(4, 5)]),
        (Box::new(Triu::new(-1)), vec![r(4, 5)]),
        (Box::new(Vectorize), vec![r(3, 5)]),
        (Box::new(Unvec::new(5, 3)), vec![r(15, 1)]),
        (Box::new(Cholesky::new()), vec![spd.clone()]),
        (
            Box::new(Cholesky::new().convention(Convention::Lower)),
            vec![spd],
        ),
        (Box::new(TriSolve::default()), vec![l.clone(), r(6, 4)]),
        (Box::new(ChoSolve), vec![l.clone(), r(6, 4)]),
        (Box::new(CholLogDet), vec![l]),
    ]
}

#[test]
fn first_write_reverse_passes_never_read_the_destination() {
    let mut rng = random::rng(12);
    for (p, inputs) in every_primitive() {
        let x: Vec<ArrayView2<'_, f64>> = inputs.iter().map(|a| a.view()).collect();
        let y = p.forward(&x).unwrap();
        let yv: Vec<ArrayView2<'_, f64>> = y.iter().map(|a| a.view()).collect();
        let ybar: Vec<Array2<f64>> = y
            .iter()
            .take(p.outputs())
            .map(|o| random::randn::<f64>(o.nrows(), o.ncols(), &mut rng))
            .collect();
        let ybv: Vec<Option<ArrayView2<'_, f64>>> = ybar.iter().map(|a| Some(a.view())).collect();
        let run = |fill: f64, add: bool| -> Vec<Array2<f64>> {
            let mut out: Vec<Array2<f64>> = inputs
                .iter()
                .map(|a| Array2::from_elem(a.raw_dim(), fill))
                .collect();
            let mut grads: Vec<Grad<'_, f64>> = out
                .iter_mut()
                .map(|o| {
                    if add {
                        Grad::Add(o.view_mut())
                    } else {
                        Grad::Write(o.view_mut())
                    }
                })
                .collect();
            p.backward_into(&x, &yv, &ybv, &mut grads, None).unwrap();
            drop(grads);
            out
        };
        let from_nan = run(f64::NAN, false);
        let from_inf = run(f64::INFINITY, false);
        let added_to_zero = run(0.0, true);
        for (i, ((g, h), z)) in from_nan
            .iter()
            .zip(&from_inf)
            .zip(&added_to_zero)
            .enumerate()
        {
            assert!(
                g.iter().all(|v| v.is_finite()),
                "{}: the first write of input {i} read its NaN-filled buffer",
                p.name()
            );
            assert_eq!(g, h, "{}: input {i} depends on the buffer", p.name());
            let scale = z.iter().fold(1.0f64, |m, v| m.max(v.abs()));
            let err = (g - z).iter().fold(0.0f64, |m, v| m.max(v.abs())) / scale;
            assert!(
                err < 1e-13,
                "{}: input {i}: write and add differ by {err}",
                p.name()
            );
        }
    }
}

#[test]
fn a_workspace_that_is_too_small_is_a_typed_error() {
    let mut rng = random::rng(13);
    let k = random::spd::<f64>(5, &mut rng);
    let chol = Cholesky::new();
    let l = chol.forward(&[k.view()]).unwrap().remove(0);
    let need = Rule::<f64>::workspace(&chol, &[shape(&k)]);
    assert!(need > 0);
    let mut ws = vec![0.0; need - 1];
    let mut kbar = Array2::zeros((5, 5));
    let err = chol
        .backward_into(
            &[k.view()],
            &[l.view()],
            &[Some(l.view())],
            &mut [Grad::Add(kbar.view_mut())],
            Some(&mut ws),
        )
        .unwrap_err();
    assert!(
        matches!(err, Error::Workspace { needed, got, .. } if needed == need && got == need - 1),
        "{err}"
    );
}

/// The workspace is checked before any shortcut: with an empty matrix, no gradient
/// wanted or a zero cotangent, a workspace shorter than the rule declares is still an
/// error, so that whether a call fails does not depend on the values it is given.
#[test]
fn a_short_workspace_is_an_error_even_where_the_rule_has_nothing_to_do() {
    let mut rng = random::rng(17);
    let l = random::lower::<f64>(6, &mut rng);
    type Case = (Box<dyn Primitive<f64>>, Vec<Array2<f64>>);
    let cases: Vec<Case> = vec![
        (Box::new(SymEig::new()), vec![Array2::zeros((0, 0))]),
        (Box::new(Svd), vec![Array2::zeros((5, 0))]),
        (
            Box::new(TriSolve::lower()),
            vec![l.clone(), Array2::zeros((6, 0))],
        ),
        (
            Box::new(TriSolve::lower()),
            vec![l.clone(), random::randn::<f64>(6, 3, &mut rng)],
        ),
    ];
    for (p, x) in &cases {
        let xv: Vec<ArrayView2<'_, f64>> = x.iter().map(|a| a.view()).collect();
        let shapes: Vec<Shape> = x.iter().map(shape).collect();
        let need = p.workspace(&shapes);
        assert!(need > 0, "{}", p.name());
        let y = p.forward(&xv).unwrap();
        let yv: Vec<ArrayView2<'_, f64>> = y.iter().map(|a| a.view()).collect();
        // Zero cotangents and tangents: the rule itself would not run.
        let zeros: Vec<Array2<f64>> = y.iter().map(|a| Array2::zeros(a.raw_dim())).collect();
        let ybar: Vec<Option<ArrayView2<'_, f64>>> = zeros
            .iter()
            .take(p.outputs())
            .map(|z| Some(z.view()))
            .collect();
        let mut g: Vec<Array2<f64>> = x.iter().map(|a| Array2::zeros(a.raw_dim())).collect();
        let mut grads: Vec<Grad<'_, f64>> =
            g.iter_mut().map(|b| Grad::Write(b.view_mut())).collect();
        let mut ws = vec![0.0; need - 1];
        let err = p
            .backward_into(&xv, &yv, &ybar, &mut grads, Some(&mut ws))
            .unwrap_err();
        assert!(
            matches!(err, Error::Workspace { .. }),
            "{}: {err}",
            p.name()
        );
        let xdot: Vec<Option<ArrayView2<'_, f64>>> = vec![None; x.len()];
        let mut d: Vec<Array2<f64>> = zeros.iter().take(p.outputs()).cloned().collect();
        let mut ydot: Vec<_> = d.iter_mut().map(|b| b.view_mut()).collect();
        let err = p
            .jvp_into(&xv, &yv, &xdot, &mut ydot, Some(&mut ws))
            .unwrap_err();
        assert!(
            matches!(err, Error::Workspace { .. }),
            "{}: {err}",
            p.name()
        );
    }
}

/// A rule allocates for a pass only the workspace that pass uses: Cholesky's forward
/// and forward-mode passes use none, and its reverse pass runs in place in a first-write
/// buffer BLAS can address. An `n×n` workspace there would cost a fill of `8n²` bytes
/// (or page faults) per call for nothing.
#[test]
fn a_pass_allocates_only_the_workspace_it_uses() {
    let n = 40;
    let mut rng = random::rng(19);
    let k = random::spd::<f64>(n, &mut rng);
    let kdot = random::randn::<f64>(n, n, &mut rng);
    let lbar = random::lower::<f64>(n, &mut rng);
    let matrix = n * n * std::mem::size_of::<f64>();
    let chol = Cholesky::new();
    let l = chol.forward(&[k.view()]).unwrap().remove(0);
    assert_eq!(Rule::<f64>::workspace(&chol, &[shape(&k)]), n * n);
    // Each call once uncounted: a backend's scratch kept per thread (faer's) grows on a
    // thread's first calls, not in the steady state measured below.
    let mut warm = Array2::zeros((n, 2 * n));
    for _ in 0..2 {
        chol.forward_into(
            &[k.view()],
            &mut [warm.slice_mut(ndarray::s![.., ..n])],
            None,
        )
        .unwrap();
        chol.jvp(&[k.view()], &[l.view()], &[Some(kdot.view())])
            .unwrap();
        for stepped in [false, true] {
            let g = match stepped {
                true => Grad::Write(warm.slice_mut(ndarray::s![.., ..;2])),
                false => Grad::Add(warm.slice_mut(ndarray::s![.., ..n])),
            };
            chol.backward_into(
                &[k.view()],
                &[l.view()],
                &[Some(lbar.view())],
                &mut [g],
                None,
            )
            .unwrap();
        }
        chol.backward_into(
            &[k.view()],
            &[l.view()],
            &[Some(lbar.view())],
            &mut [Grad::Write(warm.slice_mut(ndarray::s![.., ..n]))],
            None,
        )
        .unwrap();
    }

    let mut l2 = Array2::zeros((n, n));
    let (_, bytes) = counted(|| {
        chol.forward_into(&[k.view()], &mut [l2.view_mut()], None)
            .unwrap();
    });
    assert!(bytes < matrix, "forward_into allocated {bytes} bytes");
    assert_eq!(l2, l);
    let (_, bytes) = counted(|| {
        chol.jvp(&[k.view()], &[l.view()], &[Some(kdot.view())])
            .unwrap();
    });
    assert!(bytes < 2 * matrix, "jvp allocated {bytes} bytes");

    let backward = |g: Grad<'_, f64>| {
        let mut grads = [g];
        counted(|| {
            chol.backward_into(
                &[k.view()],
                &[l.view()],
                &[Some(lbar.view())],
                &mut grads,
                None,
            )
            .unwrap();
        })
        .1
    };
    let mut kbar = Array2::zeros((n, n));
    let bytes = backward(Grad::Write(kbar.view_mut()));
    assert!(
        bytes < matrix,
        "a first write in place allocated {bytes} bytes"
    );
    let written = kbar.clone();
    // Adding, or writing into a buffer BLAS cannot address, needs the workspace.
    let bytes = backward(Grad::Add(kbar.view_mut()));
    assert!(bytes >= matrix, "adding allocated only {bytes} bytes");
    assert_eq!(kbar, &written * 2.0);
    let mut wide = Array2::zeros((n, 2 * n));
    let bytes = backward(Grad::Write(wide.slice_mut(ndarray::s![.., ..;2])));
    assert!(
        bytes >= matrix,
        "a stepped first write allocated only {bytes} bytes"
    );
    assert_eq!(wide.slice(ndarray::s![.., ..;2]), written);
}

/// With the caller's workspace, a reverse pass allocates nothing when the right-hand
/// side's (or the factored matrix's) gradient is first-written into a buffer BLAS
/// cannot address (every other column of a wider array): the solve goes through the
/// workspace, not through a copy the BLAS layer would make of that buffer.
#[test]
fn first_writes_into_stepped_buffers_use_the_callers_workspace() {
    let (n, k) = (7, 5);
    let mut rng = random::rng(23);
    let spd = random::spd::<f64>(n, &mut rng);
    let l = Cholesky::new().forward(&[spd.view()]).unwrap().remove(0);
    let b = random::randn::<f64>(n, k, &mut rng);
    type Case = (Box<dyn Primitive<f64>>, Vec<Array2<f64>>);
    let cases: Vec<Case> = vec![
        (Box::new(TriSolve::lower()), vec![l.clone(), b.clone()]),
        (Box::new(ChoSolve), vec![l.clone(), b.clone()]),
        (Box::new(Cholesky::new()), vec![spd.clone()]),
    ];
    for (p, x) in &cases {
        let xv: Vec<ArrayView2<'_, f64>> = x.iter().map(|a| a.view()).collect();
        let shapes: Vec<Shape> = x.iter().map(shape).collect();
        let y = p.forward(&xv).unwrap();
        let yv: Vec<ArrayView2<'_, f64>> = y.iter().map(|a| a.view()).collect();
        let ybar: Vec<Array2<f64>> = y
            .iter()
            .take(p.outputs())
            .map(|a| random::randn::<f64>(a.nrows(), a.ncols(), &mut rng))
            .collect();
        let ybar: Vec<Option<ArrayView2<'_, f64>>> = ybar.iter().map(|a| Some(a.view())).collect();
        let want = p.backward(&xv, &yv, &ybar).unwrap();
        let mut ws = vec![0.0; p.workspace(&shapes)];
        let mut wide: Vec<Array2<f64>> = x
            .iter()
            .map(|a| Array2::from_elem((a.nrows(), 2 * a.ncols()), f64::NAN))
            .collect();
        let last = x.len() - 1;
        let mut grads: Vec<Grad<'_, f64>> = wide
            .iter_mut()
            .enumerate()
            .map(|(i, w)| match i == last {
                true => Grad::Write(w.slice_mut(ndarray::s![.., ..;2])),
                false => Grad::Skip,
            })
            .collect();
        let (allocations, bytes) = counted(|| {
            p.backward_into(&xv, &yv, &ybar, &mut grads, Some(&mut ws))
                .unwrap();
        });
        drop(grads);
        assert_eq!(
            (allocations, bytes),
            (0, 0),
            "{} allocated into stepped buffers",
            p.name()
        );
        assert_eq!(
            wide[last].slice(ndarray::s![.., ..;2]),
            want[last],
            "{}",
            p.name()
        );
    }
}

/// The determinant's reverse pass at a matrix with exactly one zero pivot (here a zero
/// row: rank n − 1, so the adjugate is not zero) goes by the rank-one formula, two
/// substitutions on vectors, and allocates nothing with the caller's workspace; only
/// at several zero pivots does it fall back to an SVD, which allocates its own scratch.
/// The gradient is `C̄` times the cofactor matrix: zero off the zero row, and on it the
/// signed determinants of the minors, taken here by `Det` on each (nonsingular) minor.
#[test]
fn det_reverse_at_one_zero_pivot_allocates_nothing() {
    let (n, zero_row) = (6, 2);
    let mut a = random::randn::<f64>(n, n, &mut random::rng(31));
    a.row_mut(zero_row).fill(0.0);
    let y = Det.forward(&[a.view()]).unwrap();
    assert_eq!(y[0][(0, 0)], 0.0);
    let yv: Vec<ArrayView2<'_, f64>> = y.iter().map(|v| v.view()).collect();
    let cbar = Array2::from_elem((1, 1), 1.5);
    let mut g = Array2::<f64>::from_elem((n, n), f64::NAN);
    let mut ws = vec![0.0; Rule::<f64>::workspace(&Det, &[Shape(n, n)])];
    let (allocations, bytes) = counted(|| {
        Det.backward_into(
            &[a.view()],
            &yv,
            &[Some(cbar.view())],
            &mut [Grad::Write(g.view_mut())],
            Some(&mut ws),
        )
        .unwrap();
    });
    assert_eq!((allocations, bytes), (0, 0));
    let scale = g.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(scale > 0.1, "{g}");
    for ((i, j), &got) in g.indexed_iter() {
        let want = if i == zero_row {
            let keep = |k: usize, skip: usize| (0..n).filter(move |&r| r != skip).nth(k).unwrap();
            let minor =
                Array2::from_shape_fn((n - 1, n - 1), |(r, c)| a[(keep(r, zero_row), keep(c, j))]);
            let sign = if (i + j) % 2 == 0 { 1.0 } else { -1.0 };
            1.5 * sign * Det.forward(&[minor.view()]).unwrap()[0][(0, 0)]
        } else {
            0.0
        };
        assert!(
            (got - want).abs() <= 1e-12 * scale,
            "({i}, {j}): {got} against {want}"
        );
    }
}
