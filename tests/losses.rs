//! Reductions, losses, Softplus and the training utilities: every rule passes the
//! checker at several shapes in both precisions, stays finite where the naive formula
//! overflows (logits of ±800, softplus at ±1000, log-sum-exp of 1e300), agrees with
//! naive loops written here, rejects bad labels with typed errors, and gives the same
//! results on strided views. The optimisers match updates computed by hand, converge on
//! a quadratic and allocate nothing after their first step; a dense layer's reverse
//! pass is the seed's eqs. (11)–(14).

mod support {
    pub mod views;
}

use matgrad::check::{self, random, Checker};
use matgrad::nn::{glorot_uniform, Identity};
use matgrad::prelude::*;
use ndarray::{arr2, array, s, Array2, ArrayView2};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use support::views::assert_same_on_views;

/// 1×1, a row, a column, wide and tall.
const SHAPES: [(usize, usize); 5] = [(1, 1), (1, 6), (6, 1), (3, 5), (4, 2)];

fn randn(m: usize, n: usize, seed: u64) -> Array2<f64> {
    random::randn(m, n, &mut random::rng(seed))
}

/// Seeded labels in `0..k`, one per column.
fn labels(k: usize, n: usize, seed: u64) -> Vec<usize> {
    let u = random::uniform::<f64>(1, n, 0.0, k as f64, &mut random::rng(seed)).unwrap();
    u.iter().map(|&x| (x as usize).min(k - 1)).collect()
}

fn close(got: ArrayView2<'_, f64>, want: ArrayView2<'_, f64>, tol: f64, what: &str) {
    assert_eq!(got.dim(), want.dim(), "{what}: shape");
    let scale = want.iter().fold(1.0f64, |m, x| m.max(x.abs()));
    for (g, w) in got.iter().zip(want) {
        assert!(
            (g - w).abs() <= tol * scale,
            "{what}: {g} vs {w}\n{got}\nvs\n{want}"
        );
    }
}

// ------------------------------------------------------------------ checker

#[test]
fn every_rule_passes_the_checker_in_both_precisions() {
    for (i, &(m, n)) in SHAPES.iter().enumerate() {
        let s = 100 * i as u64;
        let a = randn(m, n, s);
        let t = randn(m, n, s + 1);
        check::assert_rule_precisions(&Sum, &[a.view()]);
        check::assert_rule_precisions(&Mean, &[a.view()]);
        check::assert_rule_precisions(&LogSumExp, &[a.view()]);
        check::assert_rule_precisions(&LogSoftmax, &[a.view()]);
        check::assert_rule_precisions(&Map(Softplus), &[a.view()]);
        check::assert_rule_precisions(&MeanSquaredError, &[a.view(), t.view()]);
        let sce = SoftmaxCrossEntropy::new(labels(m, n, s + 2));
        check::assert_rule_precisions(&sce, &[a.view()]);
    }
}

#[test]
fn larger_inputs_pass_without_the_full_jacobian() {
    let a = randn(17, 23, 5);
    let t = randn(17, 23, 6);
    let run = |p: &dyn Primitive<f64>, x: &[ArrayView2<'_, f64>]| {
        Checker::new()
            .full_jacobian(false)
            .check(p, x)
            .unwrap()
            .assert_passed();
    };
    run(&Sum, &[a.view()]);
    run(&Mean, &[a.view()]);
    run(&LogSumExp, &[a.view()]);
    run(&LogSoftmax, &[a.view()]);
    run(&Map(Softplus), &[a.view()]);
    run(&MeanSquaredError, &[a.view(), t.view()]);
    run(&SoftmaxCrossEntropy::new(labels(17, 23, 7)), &[a.view()]);
}

#[test]
fn the_declared_saves_are_minimal() {
    let r = |p: &dyn Primitive<f64>, w: &[bool]| p.saves(w);
    assert_eq!(r(&Sum, &[true]), Saves::NONE);
    assert_eq!(r(&Mean, &[true]), Saves::NONE);
    assert_eq!(r(&LogSumExp, &[true]), Saves::NONE.input(0));
    assert_eq!(r(&LogSoftmax, &[true]), Saves::NONE.output(0));
    assert_eq!(r(&LogSoftmax, &[false]), Saves::NONE);
    assert_eq!(r(&Map(Softplus), &[true]), Saves::NONE.input(0));
    // The cross-entropy reads only its residual softmax (output 1), not the logits.
    let sce = SoftmaxCrossEntropy::new(vec![0, 1]);
    assert_eq!(r(&sce, &[true]), Saves::NONE.output(1));
    assert_eq!(Rule::<f64>::residuals(&sce), 1);
    assert_eq!(
        r(&MeanSquaredError, &[false, true]),
        Saves::NONE.input(0).input(1)
    );
    assert_eq!(r(&MeanSquaredError, &[false, false]), Saves::NONE);
}

#[test]
fn strided_views_give_the_same_results() {
    let a = randn(4, 3, 11);
    let t = randn(4, 3, 12);
    assert_same_on_views(&Sum, &[&a], 1);
    assert_same_on_views(&Mean, &[&a], 2);
    assert_same_on_views(&LogSumExp, &[&a], 3);
    assert_same_on_views(&LogSoftmax, &[&a], 4);
    assert_same_on_views(&Map(Softplus), &[&a], 5);
    assert_same_on_views(&MeanSquaredError, &[&a, &t], 6);
    // The cross-entropy has a residual (no cotangent), so by hand: logits stored
    // transposed and with a step, against contiguous ones.
    let sce = SoftmaxCrossEntropy::new(vec![1, 3, 0]);
    let want = (&sce).apply([a.view()]).unwrap();
    let [gw] = want.backward(arr2(&[[0.7]]).view()).unwrap();
    let stored_t = a.t().as_standard_layout().into_owned();
    let mut stepped = Array2::from_elem((8, 3), f64::NAN);
    stepped.slice_mut(s![..;2, ..]).assign(&a);
    for z in [stored_t.t(), stepped.slice(s![..;2, ..])] {
        let got = (&sce).apply([z]).unwrap();
        close(got.value().view(), want.value().view(), 1e-15, "loss");
        let [g] = got.backward(arr2(&[[0.7]]).view()).unwrap();
        close(g.view(), gw.view(), 1e-15, "Z̄");
    }
}

// ---------------------------------------------------------------- stability

#[test]
fn cross_entropy_is_finite_at_logits_of_800() {
    // Columns: the label on the largest logit, on the smallest, and on a middle one.
    let z: Array2<f64> = array![
        [800.0, 800.0, -800.0],
        [-800.0, -800.0, 0.0],
        [0.0, 0.0, 800.0]
    ];
    let sce = SoftmaxCrossEntropy::new(vec![0, 1, 1]);
    let c = (&sce).apply([z.view()]).unwrap();
    // Per column: 0, 1600, 800 (e⁻⁸⁰⁰ vanishes next to 1); the mean is 800.
    assert_eq!(c.value()[(0, 0)], 800.0);
    let [g] = c.backward(arr2(&[[1.0]]).view()).unwrap();
    assert!(g.iter().all(|x| x.is_finite()), "{g}");
    // (softmax − onehot)/3, the softmax one-hot on each column's largest logit.
    let want = array![[0.0, 1.0, 0.0], [0.0, -1.0, -1.0], [0.0, 0.0, 1.0]] / 3.0;
    close(g.view(), want.view(), 1e-15, "Z̄ at ±800");
    let zd = randn(3, 3, 1);
    let cd = c.jvp([zd.view()]).unwrap();
    assert!((cd[(0, 0)] - (&g * &zd).sum()).abs() < 1e-14);

    // f32, where e⁸⁰⁰ overflows as early as e⁸⁹.
    let z32 = z.mapv(|x| x as f32);
    let c32 = (&sce).apply([z32.view()]).unwrap();
    assert_eq!(c32.value()[(0, 0)], 800.0f32);
    let [g32] = c32.backward(arr2(&[[1.0f32]]).view()).unwrap();
    assert!(g32.iter().all(|x| x.is_finite()), "{g32}");

    // The checker passes on random logits of magnitude ~800 too (f64).
    let big = randn(4, 6, 2) * 800.0;
    Checker::new()
        .check(&SoftmaxCrossEntropy::new(labels(4, 6, 3)), &[big.view()])
        .unwrap()
        .assert_passed();
}

#[test]
fn softplus_is_finite_and_accurate_at_40_and_1000() {
    let a: Array2<f64> = array![[-1000.0, -40.0, 0.0, 40.0, 1000.0, 1e300]];
    let c = Map(Softplus).apply([a.view()]).unwrap();
    let v = c.value();
    assert!(v.iter().all(|x| x.is_finite()), "{v}");
    assert_eq!(v[(0, 0)], 0.0);
    // log(1 + e⁻⁴⁰) = e⁻⁴⁰ to full relative precision, not 0 or log(1) = 0.
    let rel = (v[(0, 1)] - (-40.0f64).exp()).abs() / (-40.0f64).exp();
    assert!(rel < 1e-15, "{rel}");
    assert_eq!(v[(0, 2)], std::f64::consts::LN_2);
    assert_eq!(v[(0, 3)], 40.0);
    assert_eq!(v[(0, 4)], 1000.0);
    assert_eq!(v[(0, 5)], 1e300);
    let [g] = c.backward(array![[1.0; 6]].view()).unwrap();
    assert!(g.iter().all(|x| x.is_finite()), "{g}");
    assert_eq!(g[(0, 0)], 0.0);
    assert!((g[(0, 1)] - (-40.0f64).exp()).abs() < 1e-30);
    assert_eq!(g[(0, 2)], 0.5);
    assert_eq!(g[(0, 4)], 1.0);

    let a32 = array![[-1000.0f32, -40.0, 40.0, 1000.0]];
    let c32 = Map(Softplus).apply([a32.view()]).unwrap();
    assert!(c32.value().iter().all(|x| x.is_finite()), "{}", c32.value());
    let rel = (c32.value()[(0, 1)] - (-40.0f32).exp()).abs() / (-40.0f32).exp();
    assert!(rel < 1e-6, "{rel}");
    assert_eq!(c32.value()[(0, 3)], 1000.0);
    // NaN passes through.
    let nan = array![[f64::NAN]];
    let n = Map(Softplus).apply([nan.view()]).unwrap();
    assert!(n.value()[(0, 0)].is_nan());
}

#[test]
fn log_sum_exp_of_huge_values() {
    let a = array![
        [1e300, 1000.0, -1000.0, 1e308],
        [1e300, 1000.0, -1000.0, -1e308]
    ];
    let c = LogSumExp.apply([a.view()]).unwrap();
    let v = c.value();
    assert_eq!(v[(0, 0)], 1e300);
    assert!((v[(0, 1)] - (1000.0 + std::f64::consts::LN_2)).abs() < 1e-12);
    assert!((v[(0, 2)] - (-1000.0 + std::f64::consts::LN_2)).abs() < 1e-12);
    assert_eq!(v[(0, 3)], 1e308);
    let [g] = c.backward(array![[1.0, 1.0, 1.0, 1.0]].view()).unwrap();
    let want = array![[0.5, 0.5, 0.5, 1.0], [0.5, 0.5, 0.5, 0.0]];
    close(g.view(), want.view(), 1e-15, "softmax at huge values");

    let big: Array2<f64> = array![[1000.0, 1e300], [0.0, -1e300]];
    let lsm = LogSoftmax.apply([big.view()]).unwrap();
    assert!(lsm.value().iter().all(|x| x.is_finite()), "{}", lsm.value());
    close(
        lsm.value().view(),
        array![[0.0, 0.0], [-1000.0, -2e300]].view(),
        1e-15,
        "log-softmax at huge values",
    );

    let a32 = array![[1e30f32, 100.0], [1e30, 100.0]];
    let c32 = LogSumExp.apply([a32.view()]).unwrap();
    assert_eq!(c32.value()[(0, 0)], 1e30f32);
    assert!((c32.value()[(0, 1)] - (100.0 + std::f32::consts::LN_2)).abs() < 1e-4);
}

// ------------------------------------------------------------------- errors

#[test]
fn bad_labels_are_typed_errors() {
    let z = randn(3, 4, 1);
    let err = (&SoftmaxCrossEntropy::new(vec![0, 2, 3, 1]))
        .apply([z.view()])
        .err()
        .unwrap();
    assert_eq!(
        err,
        Error::LabelOutOfRange {
            op: "SoftmaxCrossEntropy",
            index: 2,
            label: 3,
            classes: 3
        },
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "SoftmaxCrossEntropy: label 3 of example 2 is out of range, there are 3 classes"
    );

    let err = SoftmaxCrossEntropy::new(vec![0, 1])
        .forward(&[z.view()])
        .unwrap_err();
    assert_eq!(
        err,
        Error::ShapeMismatch {
            op: "SoftmaxCrossEntropy",
            what: "one label per column (example) of Z",
            lhs_name: "Z",
            lhs: Shape(3, 4),
            rhs_name: "labels",
            rhs: Shape(2, 1),
        },
        "{err}"
    );

    // No examples, and no classes.
    let none = Array2::<f64>::zeros((3, 0));
    let err = SoftmaxCrossEntropy::new(vec![])
        .forward(&[none.view()])
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Empty {
                op: "SoftmaxCrossEntropy",
                got: Shape(3, 0),
                ..
            }
        ),
        "{err}"
    );
    let no_classes = Array2::<f64>::zeros((0, 2));
    let err = SoftmaxCrossEntropy::new(vec![0, 0])
        .forward(&[no_classes.view()])
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::LabelOutOfRange {
                classes: 0,
                index: 0,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn bad_shapes_are_typed_errors() {
    let (a, b) = (randn(3, 4, 1), randn(4, 3, 2));
    let err = MeanSquaredError.apply([a.view(), b.view()]).err().unwrap();
    assert!(
        matches!(
            err,
            Error::ShapeMismatch {
                op: "MeanSquaredError",
                lhs: Shape(3, 4),
                rhs: Shape(4, 3),
                ..
            }
        ),
        "{err}"
    );
    let e = Array2::<f64>::zeros((2, 0));
    for err in [
        MeanSquaredError.forward(&[e.view(), e.view()]).unwrap_err(),
        Mean.forward(&[e.view()]).unwrap_err(),
    ] {
        assert!(
            matches!(
                err,
                Error::Empty {
                    got: Shape(2, 0),
                    ..
                }
            ),
            "{err}"
        );
    }
    // A wrong cotangent: the loss is 1×1.
    let c = Sum.apply([a.view()]).unwrap();
    let err = c.backward(a.view()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::WrongShape {
                op: "Sum",
                name: "cotangent",
                expected: Shape(1, 1),
                ..
            }
        ),
        "{err}"
    );
}

// ------------------------------------------------------------------ oracles

/// Naive loops, each written from the definition (no max shift: inputs are moderate).
mod naive {
    use ndarray::Array2;

    pub fn softmax(a: &Array2<f64>) -> Array2<f64> {
        let (m, n) = a.dim();
        let mut p = Array2::zeros((m, n));
        for j in 0..n {
            let mut s = 0.0;
            for i in 0..m {
                s += a[(i, j)].exp();
            }
            for i in 0..m {
                p[(i, j)] = a[(i, j)].exp() / s;
            }
        }
        p
    }

    pub fn log_sum_exp(a: &Array2<f64>) -> Array2<f64> {
        let (m, n) = a.dim();
        let mut c = Array2::zeros((1, n));
        for j in 0..n {
            let mut s = 0.0;
            for i in 0..m {
                s += a[(i, j)].exp();
            }
            c[(0, j)] = s.ln();
        }
        c
    }

    pub fn cross_entropy(z: &Array2<f64>, labels: &[usize]) -> f64 {
        let p = softmax(z);
        let mut c = 0.0;
        for (j, &l) in labels.iter().enumerate() {
            c -= p[(l, j)].ln();
        }
        c / labels.len() as f64
    }

    /// `(P − Y)/n`.
    pub fn cross_entropy_grad(z: &Array2<f64>, labels: &[usize]) -> Array2<f64> {
        let mut g = softmax(z);
        for (j, &l) in labels.iter().enumerate() {
            g[(l, j)] -= 1.0;
        }
        g / labels.len() as f64
    }

    pub fn mse(y: &Array2<f64>, t: &Array2<f64>) -> f64 {
        let mut s = 0.0;
        for (a, b) in y.iter().zip(t) {
            s += (a - b) * (a - b);
        }
        s / y.len() as f64
    }
}

#[test]
fn rules_agree_with_naive_loops() {
    let tol = 1e-13;
    for (i, &(m, n)) in SHAPES.iter().enumerate() {
        let s = 10 * i as u64;
        let a = randn(m, n, s);
        let t = randn(m, n, s + 1);
        let cbar = 0.7;
        let one = arr2(&[[cbar]]);
        let (mf, nf) = (m as f64, n as f64);

        // Sum and mean: c̄ everywhere, c̄/mn everywhere.
        let c = Sum.apply([a.view()]).unwrap();
        let mut total = 0.0;
        for x in a.iter() {
            total += x;
        }
        assert!((c.value()[(0, 0)] - total).abs() < tol * (1.0 + total.abs()));
        let [g] = c.backward(one.view()).unwrap();
        close(
            g.view(),
            Array2::from_elem((m, n), cbar).view(),
            tol,
            "Sum Ā",
        );
        let c = Mean.apply([a.view()]).unwrap();
        assert!((c.value()[(0, 0)] - total / (mf * nf)).abs() < tol);
        let [g] = c.backward(one.view()).unwrap();
        let want = Array2::from_elem((m, n), cbar / (mf * nf));
        close(g.view(), want.view(), tol, "Mean Ā");

        // Log-sum-exp: Ā = softmax ⊙ 1c̄.
        let c = LogSumExp.apply([a.view()]).unwrap();
        close(
            c.value().view(),
            naive::log_sum_exp(&a).view(),
            tol,
            "LogSumExp",
        );
        let cb = randn(1, n, s + 2);
        let [g] = c.backward(cb.view()).unwrap();
        let p = naive::softmax(&a);
        let mut want = Array2::zeros((m, n));
        for i in 0..m {
            for j in 0..n {
                want[(i, j)] = p[(i, j)] * cb[(0, j)];
            }
        }
        close(g.view(), want.view(), tol, "LogSumExp Ā");

        // Log-softmax: log of the naive softmax; Ā from the full Jacobian
        // ∂Cᵢⱼ/∂Aₖⱼ = δᵢₖ − Pₖⱼ, and Ċ from the same Jacobian.
        let c = LogSoftmax.apply([a.view()]).unwrap();
        close(c.value().view(), p.mapv(f64::ln).view(), tol, "LogSoftmax");
        let cb = randn(m, n, s + 3);
        let ad = randn(m, n, s + 4);
        let [g] = c.backward(cb.view()).unwrap();
        let cd = c.jvp([ad.view()]).unwrap();
        let mut want_g = Array2::zeros((m, n));
        let mut want_d = Array2::zeros((m, n));
        for j in 0..n {
            for i in 0..m {
                for k in 0..m {
                    let jac = f64::from(u8::from(i == k)) - p[(k, j)];
                    want_g[(k, j)] += jac * cb[(i, j)];
                    want_d[(i, j)] += jac * ad[(k, j)];
                }
            }
        }
        close(g.view(), want_g.view(), tol, "LogSoftmax Ā");
        close(cd.view(), want_d.view(), tol, "LogSoftmax Ċ");

        // Cross-entropy: −mean log softmax at the labels; Z̄ = c̄(P − Y)/n.
        let l = labels(m, n, s + 5);
        let sce = SoftmaxCrossEntropy::new(l.clone());
        let c = (&sce).apply([a.view()]).unwrap();
        let want = naive::cross_entropy(&a, &l);
        assert!((c.value()[(0, 0)] - want).abs() < tol * (1.0 + want.abs()));
        close(c.residuals()[0].view(), p.view(), tol, "residual softmax");
        let [g] = c.backward(one.view()).unwrap();
        let want = naive::cross_entropy_grad(&a, &l) * cbar;
        close(g.view(), want.view(), tol, "SoftmaxCrossEntropy Z̄");
        let cd = c.jvp([ad.view()]).unwrap();
        let want = (&naive::cross_entropy_grad(&a, &l) * &ad).sum();
        assert!((cd[(0, 0)] - want).abs() < tol);

        // Mean squared error: Ȳ = 2c̄(Y − T)/mn, T̄ = −Ȳ.
        let c = MeanSquaredError.apply([a.view(), t.view()]).unwrap();
        let want = naive::mse(&a, &t);
        assert!((c.value()[(0, 0)] - want).abs() < tol * (1.0 + want));
        let [gy, gt] = c.backward(one.view()).unwrap();
        let mut want = Array2::zeros((m, n));
        for i in 0..m {
            for j in 0..n {
                want[(i, j)] = 2.0 * cbar * (a[(i, j)] - t[(i, j)]) / (mf * nf);
            }
        }
        close(gy.view(), want.view(), tol, "MSE Ȳ");
        close(gt.view(), (-want).view(), tol, "MSE T̄");

        // Softplus: log(1 + eˣ) and σ(x) on these moderate values.
        let c = Map(Softplus).apply([a.view()]).unwrap();
        close(
            c.value().view(),
            a.mapv(|x| (1.0 + x.exp()).ln()).view(),
            tol,
            "Softplus",
        );
        let [g] = c.backward(Array2::ones((m, n)).view()).unwrap();
        close(
            g.view(),
            a.mapv(|x| 1.0 / (1.0 + (-x).exp())).view(),
            tol,
            "Softplus Ā",
        );
    }
}

// --------------------------------------------------------- training pieces

#[test]
fn dense_layer_backward_is_the_seeds_equations() {
    let (w, b, h) = (randn(4, 3, 1), randn(4, 1, 2), randn(3, 6, 3));
    let layer = Dense::new(w.clone(), b.clone(), Tanh).unwrap();
    let out = layer.forward(h.view()).unwrap();
    let a = w.dot(&h) + &b;
    close(out.value().view(), a.mapv(f64::tanh).view(), 1e-14, "H'");

    let hbar_next = randn(4, 6, 4);
    // (14) Ā = g'(A) ⊙ H̄', (11) b̄ = Ā1, (12) W̄ = ĀHᵀ, (13) H̄ = WᵀĀ.
    let abar = a.mapv(|x| 1.0 - x.tanh().powi(2)) * &hbar_next;
    let want_b = abar
        .sum_axis(ndarray::Axis(1))
        .insert_axis(ndarray::Axis(1));
    let want_w = abar.dot(&h.t());
    let want_h = w.t().dot(&abar);
    let [gw, gb, gh] = out.backward(hbar_next.view()).unwrap();
    close(gw.view(), want_w.view(), 1e-13, "W̄");
    close(gb.view(), want_b.view(), 1e-13, "b̄");
    close(gh.view(), want_h.view(), 1e-13, "H̄");

    // First writes into NaN, then adds, and a skipped input.
    let mut bw = Array2::from_elem((4, 3), f64::NAN);
    let mut bb = Array2::from_elem((4, 1), f64::NAN);
    out.backward_into(
        hbar_next.view(),
        &mut [
            Grad::Write(bw.view_mut()),
            Grad::Write(bb.view_mut()),
            Grad::Skip,
        ],
    )
    .unwrap();
    close(bw.view(), want_w.view(), 1e-13, "W̄ first write");
    close(bb.view(), want_b.view(), 1e-13, "b̄ first write");
    out.backward_into(
        hbar_next.view(),
        &mut [Grad::Add(bw.view_mut()), Grad::Skip, Grad::Skip],
    )
    .unwrap();
    close(bw.view(), (2.0 * &want_w).view(), 1e-13, "W̄ added");

    // A bias that does not fit is a typed error naming the layer.
    let err = Dense::new(w.clone(), randn(3, 1, 5), Tanh).unwrap_err();
    assert!(
        matches!(err, Error::ShapeMismatch { op: "Dense", .. }),
        "{err}"
    );
    // H with the wrong number of rows: the product's error.
    let err = layer.forward(randn(4, 6, 6).view()).err().unwrap();
    assert!(
        matches!(
            err,
            Error::ShapeMismatch {
                op: "MatMul(A·B)",
                ..
            }
        ),
        "{err}"
    );
}

/// The loss of a two-layer network `c = CE(W₂ tanh(W₁X + b₁1ᵀ) + b₂1ᵀ, y)` and its
/// gradient with respect to `W₁`, through [`Dense`] and [`SoftmaxCrossEntropy`].
fn two_layer_loss(
    w1: &Array2<f64>,
    l1: &Dense<f64, Tanh>,
    l2: &Dense<f64, Identity>,
    x: &Array2<f64>,
    sce: &SoftmaxCrossEntropy,
) -> (f64, Array2<f64>) {
    let l1 = Dense::new(w1.clone(), l1.b.clone(), Tanh).unwrap();
    let h = l1.forward(x.view()).unwrap();
    let z = l2.forward(h.value()).unwrap();
    let c = sce.apply([z.value()]).unwrap();
    let [zbar] = c.backward(arr2(&[[1.0]]).view()).unwrap();
    let [_, _, hbar] = z.backward(zbar.view()).unwrap();
    let [w1bar, _, _] = h.backward(hbar.view()).unwrap();
    (c.value()[(0, 0)], w1bar)
}

#[test]
fn a_network_gradient_matches_finite_differences() {
    let mut rng = random::rng(21);
    let x = random::randn::<f64>(3, 10, &mut rng);
    let l1 = Dense::new(
        glorot_uniform(5, 3, &mut rng),
        random::randn(5, 1, &mut rng),
        Tanh,
    )
    .unwrap();
    let l2 = Dense::new(
        glorot_uniform(4, 5, &mut rng),
        random::randn(4, 1, &mut rng),
        Identity,
    )
    .unwrap();
    let sce = SoftmaxCrossEntropy::new(labels(4, 10, 22));
    let (_, g) = two_layer_loss(&l1.w, &l1, &l2, &x, &sce);
    let u = random::randn::<f64>(5, 3, &mut rng);
    let h = 1e-5;
    let (fp, _) = two_layer_loss(&(&l1.w + &(h * &u)), &l1, &l2, &x, &sce);
    let (fm, _) = two_layer_loss(&(&l1.w - &(h * &u)), &l1, &l2, &x, &sce);
    let fd = (fp - fm) / (2.0 * h);
    let an = (&g * &u).sum();
    assert!((fd - an).abs() < 1e-8 * an.abs().max(1.0), "{fd} vs {an}");
}

#[test]
fn glorot_uniform_has_the_right_range_and_variance() {
    let mut rng = random::rng(3);
    let w: Array2<f64> = glorot_uniform(200, 300, &mut rng);
    let r = (6.0f64 / 500.0).sqrt();
    assert_eq!(w.dim(), (200, 300));
    assert!(w.iter().all(|x| x.abs() <= r));
    // Uniform on [−r, r): variance r²/3 = 2/(fan_in + fan_out).
    let var = w.mapv(|x| x * x).mean().unwrap();
    assert!((var - 2.0 / 500.0).abs() < 0.02 * 2.0 / 500.0, "{var}");
    let w32: Array2<f32> = glorot_uniform(0, 0, &mut rng);
    assert_eq!(w32.dim(), (0, 0));
}

/// Parameters and two gradients for the hand-computed optimiser steps.
fn two_steps() -> (Array2<f64>, Array2<f64>, Array2<f64>) {
    (
        array![[1.0, 2.0], [3.0, 4.0]],
        array![[0.5, -1.0], [2.0, 0.0]],
        array![[1.0, 1.0], [-1.0, 0.5]],
    )
}

#[test]
fn sgd_with_momentum_matches_hand_computed_updates() {
    let (mut p, g1, g2) = two_steps();
    let mut opt = Sgd::new(0.1).momentum(0.9);
    opt.step(&mut [p.view_mut()], &[g1.view()]).unwrap();
    // V₁ = G₁, P₁ = P₀ − 0.1·G₁.
    close(
        p.view(),
        array![[0.95, 2.1], [2.8, 4.0]].view(),
        1e-15,
        "SGD step 1",
    );
    opt.step(&mut [p.view_mut()], &[g2.view()]).unwrap();
    // V₂ = 0.9·G₁ + G₂ = [[1.45, 0.1], [0.8, 0.5]], P₂ = P₁ − 0.1·V₂.
    close(
        opt.velocity()[0].view(),
        array![[1.45, 0.1], [0.8, 0.5]].view(),
        1e-15,
        "SGD velocity",
    );
    close(
        p.view(),
        array![[0.805, 2.09], [2.72, 3.95]].view(),
        1e-15,
        "SGD step 2",
    );

    // Without momentum: no state, P ← P − ηG.
    let (mut p, g1, _) = two_steps();
    let mut plain = Sgd::new(0.5);
    plain.step(&mut [p.view_mut()], &[g1.view()]).unwrap();
    close(
        p.view(),
        array![[0.75, 2.5], [2.0, 4.0]].view(),
        1e-15,
        "plain SGD",
    );
    assert!(plain.velocity().is_empty());
}

#[test]
fn adam_matches_hand_computed_updates() {
    let (mut p, g1, g2) = two_steps();
    let mut opt = Adam::new(0.1);
    opt.step(&mut [p.view_mut()], &[g1.view()]).unwrap();
    // Step 1: M̂ = G, V̂ = G², so P₁ = P₀ − 0.1·G/(|G| + 10⁻⁸), about P₀ − 0.1·sign(G).
    let e = 1e-8;
    let want1 = array![
        [1.0 - 0.1 * 0.5 / (0.5 + e), 2.0 + 0.1 / (1.0 + e)],
        [3.0 - 0.1 * 2.0 / (2.0 + e), 4.0]
    ];
    close(p.view(), want1.view(), 1e-15, "Adam step 1");
    opt.step(&mut [p.view_mut()], &[g2.view()]).unwrap();
    // Step 2, entry (0, 1): G₁ = −1, G₂ = 1, so M = 0.9·(−0.1) + 0.1 = 0.01,
    // M̂ = 0.01/(1 − 0.9²) = 1/19, V = 0.999·0.001 + 0.001 = 0.001999,
    // V̂ = 0.001999/(1 − 0.999²) = 1, P₂ = P₁ − 0.1·(1/19)/(1 + 10⁻⁸).
    let p01 = want1[(0, 1)] - 0.1 * (1.0 / 19.0) / (1.0 + e);
    assert!((p[(0, 1)] - p01).abs() < 1e-15, "{} vs {p01}", p[(0, 1)]);
    // Entry (0, 0): M = 0.9·0.05 + 0.1 = 0.145, M̂ = 0.145/0.19,
    // V = 0.999·0.00025 + 0.001 = 0.00124975, V̂ = V/0.001999.
    let p00 = want1[(0, 0)] - 0.1 * (0.145 / 0.19) / ((0.00124975f64 / 0.001999).sqrt() + e);
    assert!((p[(0, 0)] - p00).abs() < 1e-15, "{} vs {p00}", p[(0, 0)]);
    // All four, as computed once with these formulas in plain floating point.
    let want2 = array![
        [0.8034818006385094, 2.0947368411578946],
        [2.8733662967024314, 3.925586319747512]
    ];
    close(p.view(), want2.view(), 1e-14, "Adam step 2");
    assert_eq!(opt.steps(), 2);
    close(
        opt.first_moments()[0].view(),
        (0.09 * &g1 + 0.1 * &g2).view(),
        1e-15,
        "Adam M",
    );

    // After a reset the next step is a first step again.
    opt.reset();
    let mut q = array![[0.0, 0.0], [0.0, 0.0]];
    opt.step(&mut [q.view_mut()], &[g1.view()]).unwrap();
    close(
        q.view(),
        (want1 - array![[1.0, 2.0], [3.0, 4.0]]).view(),
        1e-15,
        "Adam after reset",
    );
}

/// `f(P) = ½ Σ dᵢⱼ (Pᵢⱼ − Cᵢⱼ)²`, gradient `d ⊙ (P − C)`, for two parameters of
/// different shapes; returns the largest distance to the minimum after `steps`.
fn minimise(opt: &mut dyn Optimizer<f64>, steps: usize) -> f64 {
    let targets = [
        array![[1.0, -2.0], [0.5, 3.0]],
        array![[-1.0], [2.0], [0.25]],
    ];
    let curv = [array![[1.0, 4.0], [0.5, 2.0]], array![[3.0], [1.0], [0.25]]];
    let mut p = [Array2::<f64>::zeros((2, 2)), Array2::zeros((3, 1))];
    let mut g = [Array2::<f64>::zeros((2, 2)), Array2::zeros((3, 1))];
    for _ in 0..steps {
        for k in 0..2 {
            g[k] = &curv[k] * &(&p[k] - &targets[k]);
        }
        let [p0, p1] = &mut p;
        opt.step(
            &mut [p0.view_mut(), p1.view_mut()],
            &[g[0].view(), g[1].view()],
        )
        .unwrap();
    }
    (0..2)
        .flat_map(|k| (&p[k] - &targets[k]).into_iter())
        .fold(0.0, |m, d| m.max(d.abs()))
}

#[test]
fn optimisers_converge_on_a_quadratic() {
    assert!(minimise(&mut Sgd::new(0.2), 300) < 1e-6);
    assert!(minimise(&mut Sgd::new(0.05).momentum(0.9), 500) < 1e-6);
    let err = minimise(&mut Adam::new(0.05), 2000);
    assert!(err < 1e-3, "{err}");
}

#[test]
fn optimisers_reject_mismatched_gradients_and_parameters() {
    let mut p = Array2::<f64>::zeros((2, 3));
    let g = Array2::<f64>::ones((3, 2));
    for opt in [
        &mut Sgd::new(0.1).momentum(0.5) as &mut dyn Optimizer<f64>,
        &mut Adam::new(0.1),
    ] {
        let err = opt.step(&mut [p.view_mut()], &[g.view()]).unwrap_err();
        assert!(
            matches!(
                err,
                Error::WrongShape {
                    name: "gradient",
                    expected: Shape(2, 3),
                    got: Shape(3, 2),
                    ..
                }
            ),
            "{err}"
        );
        let err = opt.step(&mut [p.view_mut()], &[]).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Arity {
                    expected: 1,
                    got: 0,
                    ..
                }
            ),
            "{err}"
        );
        // State is created for 2×3 on the first good step; a 3×2 parameter later is an
        // error, and the parameter is left unchanged.
        let g23 = Array2::<f64>::ones((2, 3));
        opt.step(&mut [p.view_mut()], &[g23.view()]).unwrap();
        let mut q = Array2::<f64>::zeros((3, 2));
        let err = opt.step(&mut [q.view_mut()], &[g.view()]).unwrap_err();
        assert!(
            matches!(
                err,
                Error::WrongShape {
                    name: "parameter",
                    ..
                }
            ),
            "{err}"
        );
        assert!(q.iter().all(|&x| x == 0.0));
    }
    let mut bad = Adam::new(0.1).betas(0.9, 1.0);
    let g23 = Array2::<f64>::ones((2, 3));
    let err = bad.step(&mut [p.view_mut()], &[g23.view()]).unwrap_err();
    assert!(
        matches!(err, Error::InvalidArgument { op: "Adam", .. }),
        "{err}"
    );
}

// ---------------------------------------------------------------- allocation

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn note() {
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
    }
}

// SAFETY: every call is forwarded to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations `f` makes on this thread.
fn allocations(f: impl FnOnce()) -> usize {
    ALLOCATIONS.with(|c| c.set(0));
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn optimisers_allocate_nothing_after_the_first_step() {
    let mut p = [randn(5, 4, 1), randn(5, 1, 2)];
    let g = [randn(5, 4, 3), randn(5, 1, 4)];
    let mut sgd = Sgd::new(0.01).momentum(0.9);
    let mut adam = Adam::new(0.01);
    for opt in [&mut sgd as &mut dyn Optimizer<f64>, &mut adam] {
        let [p0, p1] = &mut p;
        let first = allocations(|| {
            opt.step(
                &mut [p0.view_mut(), p1.view_mut()],
                &[g[0].view(), g[1].view()],
            )
            .unwrap()
        });
        assert!(first > 0, "the first step creates the state");
        let later = allocations(|| {
            for _ in 0..10 {
                opt.step(
                    &mut [p0.view_mut(), p1.view_mut()],
                    &[g[0].view(), g[1].view()],
                )
                .unwrap();
            }
        });
        assert_eq!(later, 0, "steps after the first allocate nothing");
    }
}

/// Near the overflow threshold a plain sum can overflow in one order and not in
/// another, or overflow where the mean is finite; in f32 the partial sums overflow
/// long before an f64 sum would. Sum and Mean (forward and tangent) are finite, with
/// the right value, wherever their value is, on every layout.
#[test]
fn sums_and_means_overflow_only_when_their_value_does() {
    use support::views::{store, view, LAYOUTS};
    let big = f64::MAX / 2.0;
    // Rows of [b, b, b, −b, −b] and [−b, −b, −b, b, b] in turn: along a row the partial
    // sums reach 1.5·MAX and overflow, down a column they alternate; the total is finite.
    let a = Array2::from_shape_fn((6, 5), |(i, j)| {
        let s = if (j < 3) == (i % 2 == 0) { 1.0 } else { -1.0 };
        s * big * (1.0 - 1e-3 * (i * 5 + j) as f64)
    });
    let want_sum: f64 = a.iter().map(|v| v / 4.0).sum::<f64>() * 4.0;
    let want_mean = a.iter().map(|v| v / 30.0).sum::<f64>();
    assert!(want_sum.is_finite() && want_mean.is_finite());
    let close = |got: f64, want: f64| (got - want).abs() <= 1e-12 * want.abs();
    let mut layouts: Vec<Option<_>> = vec![None];
    layouts.extend(LAYOUTS.map(Some));
    for layout in layouts {
        let base = layout.map(|l| store(&a, l));
        let av = match (layout, &base) {
            (Some(l), Some(b)) => view(b, l),
            _ => a.view(),
        };
        let s = Sum.forward(&[av]).unwrap()[0][(0, 0)];
        let m = Mean.forward(&[av]).unwrap()[0][(0, 0)];
        assert!(
            close(s, want_sum),
            "Sum {s:e}, want {want_sum:e} ({layout:?})"
        );
        assert!(
            close(m, want_mean),
            "Mean {m:e}, want {want_mean:e} ({layout:?})"
        );
        let one = Array2::<f64>::zeros((1, 1));
        let sd = Sum.jvp(&[av], &[one.view()], &[Some(av)]).unwrap()[0][(0, 0)];
        assert!(close(sd, want_sum), "Sum tangent {sd:e} ({layout:?})");
    }
    // A mean of f32 entries near f32::MAX whose sum overflows f32 but not f64.
    let f = Array2::from_shape_fn((4, 3), |(i, j)| {
        f32::MAX * (0.5 + 0.01 * (i * 3 + j) as f32)
    });
    let m = Mean.forward(&[f.view()]).unwrap()[0][(0, 0)];
    let want = f.iter().map(|&v| f64::from(v)).sum::<f64>() / 12.0;
    assert!(
        m.is_finite() && (f64::from(m) - want).abs() <= 1e-6 * want,
        "f32 Mean {m:e}"
    );
    // A sum whose value does overflow is infinite, with its sign.
    let s = Sum.forward(&[(-&f).view()]).unwrap()[0][(0, 0)];
    assert_eq!(s, f32::NEG_INFINITY);
}

/// LogSoftmax's reverse rule sums each column of the cotangent: in f32 a column of
/// large cotangents overflows that sum while every gradient entry is finite.
#[test]
fn log_softmax_gradient_is_finite_for_cotangents_whose_column_sums_overflow_f32() {
    let a = randn(40, 3, 71).mapv(|v| v as f32);
    let cbar = randn(40, 3, 72).mapv(|v| (v.abs() as f32 + 0.5) * 1e37);
    let y = LogSoftmax.forward(&[a.view()]).unwrap();
    let g = LogSoftmax
        .backward(&[a.view()], &[y[0].view()], &[Some(cbar.view())])
        .unwrap()
        .remove(0);
    // The same rule in f64: Āᵢⱼ = C̄ᵢⱼ − softmax(A)ᵢⱼ Σₖ C̄ₖⱼ.
    let (a64, c64) = (a.mapv(f64::from), cbar.mapv(f64::from));
    for j in 0..3 {
        let m = a64.column(j).fold(f64::NEG_INFINITY, |m, &v| m.max(v));
        let z: f64 = a64.column(j).iter().map(|v| (v - m).exp()).sum();
        let s: f64 = c64.column(j).sum();
        for i in 0..40 {
            let want = c64[(i, j)] - (a64[(i, j)] - m).exp() / z * s;
            let got = f64::from(g[(i, j)]);
            assert!(
                got.is_finite() && (got - want).abs() <= 1e-5 * c64.column(j).sum(),
                "({i}, {j}): {got:e} vs {want:e}"
            );
        }
    }
}

/// A subnormal cotangent times large residuals: the gradient 2c̄(p − t)/n is an ordinary
/// number, which forming 2c̄/n first (itself subnormal) computed to three digits.
#[test]
fn mse_gradient_keeps_its_digits_for_a_subnormal_cotangent() {
    let p = randn(1, 7, 81).mapv(|v| (v * 1e37) as f32);
    let t = randn(1, 7, 82).mapv(|v| v as f32);
    let cbar = Array2::from_elem((1, 1), 3.0e-42f32);
    let y = MeanSquaredError.forward(&[p.view(), t.view()]).unwrap();
    let g = MeanSquaredError
        .backward(&[p.view(), t.view()], &[y[0].view()], &[Some(cbar.view())])
        .unwrap();
    for j in 0..7 {
        let want =
            f64::from(cbar[(0, 0)]) * 2.0 * (f64::from(p[(0, j)]) - f64::from(t[(0, j)])) / 7.0;
        for (k, sign) in [(0, 1.0), (1, -1.0)] {
            let got = f64::from(g[k][(0, j)]);
            assert!(
                (got - sign * want).abs() <= 4.0 * f64::from(f32::EPSILON) * want.abs(),
                "gradient {k} entry {j}: {got:e} vs {:e}",
                sign * want
            );
        }
    }
}

/// A huge cotangent (tangent) times a softmax weight that underflows `f32`:
/// `c̄·e⁻¹⁵⁰ ≈ 10⁻²⁷` for `c̄ ≈ 10³⁸` is an ordinary number, which multiplying the
/// underflowed weight gave as zero.
#[test]
fn log_sum_exp_derivatives_keep_products_of_underflowed_weights_and_huge_partials() {
    // Columns spread over [−90, 90]: weights down to e⁻¹⁸⁰, below f32's range.
    let a = randn(6, 4, 73).mapv(|v| (v * 45.0) as f32);
    let cbar = randn(1, 4, 74).mapv(|v| (v * 1e38).clamp(-3e38, 3e38) as f32);
    let adot = randn(6, 4, 75).mapv(|v| (v * 3e37) as f32);
    let (a64, c64, d64) = (
        a.mapv(f64::from),
        cbar.mapv(f64::from),
        adot.mapv(f64::from),
    );
    let softmax = |j: usize| {
        let m = a64.column(j).fold(f64::NEG_INFINITY, |m, &v| m.max(v));
        let z: f64 = a64.column(j).iter().map(|v| (v - m).exp()).sum();
        a64.column(j).mapv(|v| (v - m).exp() / z)
    };
    let y = LogSumExp.forward(&[a.view()]).unwrap();
    // Accumulating onto zeros runs the adding path on the same products.
    let mut g = Array2::<f32>::zeros(a.dim());
    for accum in [false, true] {
        let got = if accum {
            LogSumExp
                .backward_add(
                    &[a.view()],
                    &[y[0].view()],
                    &[Some(cbar.view())],
                    &mut [Some(g.view_mut())],
                )
                .unwrap();
            g.mapv(f64::from)
        } else {
            let g = LogSumExp
                .backward(&[a.view()], &[y[0].view()], &[Some(cbar.view())])
                .unwrap()
                .remove(0);
            g.mapv(f64::from)
        };
        let mut checked = 0;
        for j in 0..4 {
            let p = softmax(j);
            for i in 0..6 {
                let want = c64[(0, j)] * p[i];
                if want.abs() > 1e-30 && p[i] < 1e-40 {
                    checked += 1;
                }
                let got = got[(i, j)];
                // aᵢ − M, up to 180, rounds in f32 by up to 8·10⁻⁶: a relative 8·10⁻⁶ in
                // its exponential.
                let tol = 2e-5 * want.abs() + 1e-37;
                assert!((got - want).abs() <= tol, "({i}, {j}): {got:e} vs {want:e}");
            }
        }
        assert!(
            checked > 0,
            "no weight below f32's range with a normal product"
        );
    }
    let ydot = LogSumExp
        .jvp(&[a.view()], &[y[0].view()], &[Some(adot.view())])
        .unwrap()
        .remove(0);
    for j in 0..4 {
        let want: f64 = softmax(j)
            .iter()
            .zip(d64.column(j))
            .map(|(p, d)| p * d)
            .sum();
        let got = f64::from(ydot[(0, j)]);
        let scale: f64 = d64.column(j).iter().map(|d| d.abs()).fold(0.0, f64::max);
        assert!(
            (got - want).abs() <= 1e-6 * scale,
            "{j}: {got:e} vs {want:e}"
        );
    }
}
