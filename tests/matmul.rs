//! MatMul: every transpose flag passes the checker at degenerate and non-square
//! shapes, in both precisions; bad shapes are typed errors; strided views agree.

mod support {
    pub mod views;
}

use matgrad::check::{assert_rule_precisions, random, Checker};
use matgrad::prelude::*;
use ndarray::{s, Array2};
use support::views::assert_same_on_views;

const FLAGS: [(Trans, Trans); 4] = [
    (Trans::No, Trans::No),
    (Trans::Yes, Trans::No),
    (Trans::No, Trans::Yes),
    (Trans::Yes, Trans::Yes),
];

/// Inputs of `op(A)·op(B)` with `op(A)` m×k and `op(B)` k×n.
fn inputs(op: MatMul, m: usize, k: usize, n: usize, seed: u64) -> (Array2<f64>, Array2<f64>) {
    let mut rng = random::rng(seed);
    let (ar, ac) = op.ta.dims((m, k));
    let (br, bc) = op.tb.dims((k, n));
    (
        random::randn(ar, ac, &mut rng),
        random::randn(br, bc, &mut rng),
    )
}

const SHAPES: [(usize, usize, usize); 6] = [
    (1, 1, 1),
    (1, 4, 1),
    (3, 1, 5),
    (1, 3, 4),
    (4, 3, 1),
    (3, 5, 2),
];

#[test]
fn all_flags_pass_the_checker_f64() {
    for (ta, tb) in FLAGS {
        let op = MatMul::new(ta, tb);
        for (i, &(m, k, n)) in SHAPES.iter().enumerate() {
            let (a, b) = inputs(op, m, k, n, i as u64);
            let r = Checker::new()
                .tol(1e-8)
                .check(&op, &[a.view(), b.view()])
                .unwrap();
            r.assert_passed();
            assert!(
                r.inputs.iter().all(|x| x.jacobian.is_some()),
                "small inputs run the full Jacobian"
            );
        }
        // Larger than the full-Jacobian threshold: the directional checks alone.
        let (a, b) = inputs(op, 17, 23, 9, 99);
        let r = Checker::new()
            .tol(1e-8)
            .check(&op, &[a.view(), b.view()])
            .unwrap();
        r.assert_passed();
        assert!(r.inputs.iter().all(|x| x.jacobian.is_none()), "{r}");
    }
}

#[test]
fn all_flags_pass_the_checker_f32() {
    for (ta, tb) in FLAGS {
        let op = MatMul::new(ta, tb);
        let (a, b) = inputs(op, 3, 5, 2, 5);
        // f64, f32 at the same point rounded, and f32 against f64.
        assert_rule_precisions(&op, &[a.view(), b.view()]);
    }
}

#[test]
fn forward_matches_ndarray_dot() {
    for (ta, tb) in FLAGS {
        let op = MatMul::new(ta, tb);
        let (a, b) = inputs(op, 4, 6, 3, 11);
        let opa = if ta == Trans::Yes { a.t() } else { a.view() };
        let opb = if tb == Trans::Yes { b.t() } else { b.view() };
        let c = op.apply([a.view(), b.view()]).unwrap();
        let expected = opa.dot(&opb);
        approx::assert_abs_diff_eq!(c.value().view(), expected.view(), epsilon = 1e-12);
    }
}

#[test]
fn shape_errors_are_typed_and_name_the_shapes() {
    let mut rng = random::rng(3);
    let a = random::randn::<f64>(3, 4, &mut rng);
    let b = random::randn::<f64>(5, 2, &mut rng);
    let err = MatMul::nn().apply([a.view(), b.view()]).err().unwrap();
    assert!(
        matches!(
            err,
            Error::ShapeMismatch {
                op: "MatMul(A·B)",
                lhs: Shape(3, 4),
                rhs: Shape(5, 2),
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "MatMul(A·B): inner dimensions differ, op(A) is 3×4, op(B) is 5×2"
    );
    // With a transpose flag the error shows op(A), not A.
    let err = MatMul::tn().apply([a.view(), b.view()]).err().unwrap();
    assert_eq!(
        err.to_string(),
        "MatMul(Aᵀ·B): inner dimensions differ, op(A) is 4×3, op(B) is 5×2"
    );

    let b = random::randn::<f64>(4, 2, &mut rng);
    let out = MatMul::nn().apply([a.view(), b.view()]).unwrap();
    let bad = random::randn::<f64>(2, 3, &mut rng);
    let err = out.backward(bad.view()).err().unwrap();
    assert!(
        matches!(
            err,
            Error::WrongShape {
                op: "MatMul(A·B)",
                name: "cotangent",
                of: "C",
                expected: Shape(3, 2),
                got: Shape(2, 3),
            }
        ),
        "{err}"
    );
    let err = out.jvp([bad.view(), b.view()]).err().unwrap();
    assert!(
        matches!(
            err,
            Error::WrongShape {
                name: "tangent",
                of: "A",
                expected: Shape(3, 4),
                got: Shape(2, 3),
                ..
            }
        ),
        "{err}"
    );
    let cbar = random::randn::<f64>(3, 2, &mut rng);
    let mut wrong = Array2::<f64>::zeros((4, 3));
    for write in [true, false] {
        let grad = if write {
            Grad::Write(wrong.view_mut())
        } else {
            Grad::Add(wrong.view_mut())
        };
        let err = out
            .backward_into(&[Some(cbar.view())], &mut [grad, Grad::Skip], None)
            .err()
            .unwrap();
        assert!(
            matches!(
                err,
                Error::WrongShape {
                    name: "gradient buffer",
                    of: "A",
                    expected: Shape(3, 4),
                    got: Shape(4, 3),
                    ..
                }
            ),
            "{err}"
        );
    }
    let mut wrong = Array2::<f64>::zeros((2, 4));
    let err = out
        .backward_add(cbar.view(), &mut [None, Some(wrong.view_mut())])
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            Error::WrongShape {
                name: "gradient buffer",
                of: "B",
                ..
            }
        ),
        "{err}"
    );
    // The typed layer's arity is part of its type: `let [abar] = out.backward(..)`
    // does not compile for a two-input primitive, so there is no run-time error to test.
    let err = Primitive::<f64>::forward(&MatMul::nn(), &[a.view()])
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            Error::Arity {
                op: "MatMul(A·B)",
                what: "inputs",
                expected: 2,
                got: 1,
            }
        ),
        "{err}"
    );
    let y = [out.value().view()];
    let err = Primitive::<f64>::backward_into(
        &MatMul::nn(),
        &[a.view(), b.view()],
        &y,
        &[Some(cbar.view())],
        &mut [Grad::Skip],
        None,
    )
    .err()
    .unwrap();
    assert!(
        matches!(
            err,
            Error::Arity {
                what: "gradient buffers",
                expected: 2,
                got: 1,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn strided_and_transposed_views_agree_with_contiguous_copies() {
    let mut rng = random::rng(21);
    let big_a = random::randn::<f64>(10, 12, &mut rng);
    let big_b = random::randn::<f64>(12, 9, &mut rng);
    let cbar = random::randn::<f64>(5, 3, &mut rng);
    // A: 5×4 taken with steps and reversed; B: 4×3 as a transposed, negatively strided view.
    let a_views = [
        big_a.slice(s![..;2, 1..9;2]),
        big_a.slice(s![..;-2, ..;-3]),
        big_a.slice(s![1..6, 2..6]),
    ];
    let bt = big_b.t();
    let b_views = [
        bt.slice(s![..3;1, ..4]).reversed_axes(),
        big_b.slice(s![..;-3, ..;-3]),
        big_b.slice(s![2..6, 3..6]),
    ];
    for av in &a_views {
        for bv in &b_views {
            let (ac, bc) = (av.to_owned(), bv.to_owned());
            let strided = MatMul::nn().apply([av.view(), bv.view()]).unwrap();
            let contiguous = MatMul::nn().apply([ac.view(), bc.view()]).unwrap();
            approx::assert_abs_diff_eq!(
                strided.value().view(),
                contiguous.value().view(),
                epsilon = 1e-13
            );
            let [ga, gb] = strided.backward(cbar.view()).unwrap();
            let [ha, hb] = contiguous.backward(cbar.view()).unwrap();
            approx::assert_abs_diff_eq!(ga, ha, epsilon = 1e-13);
            approx::assert_abs_diff_eq!(gb, hb, epsilon = 1e-13);
            // Accumulating into transposed and strided gradient buffers.
            let mut abuf = Array2::<f64>::ones((4, 5));
            let mut bbuf = Array2::<f64>::ones((8, 7));
            strided
                .backward_add(
                    cbar.view(),
                    &mut [
                        Some(abuf.view_mut().reversed_axes()),
                        Some(bbuf.slice_mut(s![..;-2, ..;3])),
                    ],
                )
                .unwrap();
            approx::assert_abs_diff_eq!(abuf.t(), (&ha + 1.0).view(), epsilon = 1e-13);
            approx::assert_abs_diff_eq!(
                bbuf.slice(s![..;-2, ..;3]),
                (&hb + 1.0).view(),
                epsilon = 1e-13
            );
            // First writes into the same layouts, filled with NaN: never read.
            let mut abuf = Array2::<f64>::from_elem((4, 5), f64::NAN);
            let mut bbuf = Array2::<f64>::from_elem((8, 7), f64::NAN);
            strided
                .backward_into(
                    &[Some(cbar.view())],
                    &mut [
                        Grad::Write(abuf.view_mut().reversed_axes()),
                        Grad::Write(bbuf.slice_mut(s![..;-2, ..;3])),
                    ],
                    None,
                )
                .unwrap();
            approx::assert_abs_diff_eq!(abuf.t(), ha.view(), epsilon = 1e-13);
            approx::assert_abs_diff_eq!(bbuf.slice(s![..;-2, ..;3]), hb.view(), epsilon = 1e-13);
            Checker::new()
                .tol(1e-8)
                .check(&MatMul::nn(), &[av.view(), bv.view()])
                .unwrap()
                .assert_passed();
        }
    }
}

#[test]
fn every_flag_agrees_on_every_layout() {
    for (f, (ta, tb)) in FLAGS.into_iter().enumerate() {
        let op = MatMul::new(ta, tb);
        let (a, b) = inputs(op, 5, 4, 3, 40 + f as u64);
        assert_same_on_views(&op, &[&a, &b], 50 + f as u64);
    }
}

#[test]
fn backward_into_skips_unwanted_inputs_and_accumulates() {
    let mut rng = random::rng(8);
    let a = random::randn::<f64>(3, 4, &mut rng);
    let b = random::randn::<f64>(4, 2, &mut rng);
    let cbar = random::randn::<f64>(3, 2, &mut rng);
    let out = MatMul::nn().apply([a.view(), b.view()]).unwrap();
    let [ga, _] = out.backward(cbar.view()).unwrap();
    let mut abar = random::randn::<f64>(3, 4, &mut rng);
    let before = abar.clone();
    out.backward_add(cbar.view(), &mut [Some(abar.view_mut()), None])
        .unwrap();
    out.backward_into(
        &[Some(cbar.view())],
        &mut [Grad::Add(abar.view_mut()), Grad::Skip],
        None,
    )
    .unwrap();
    approx::assert_abs_diff_eq!(abar, before + &ga * 2.0, epsilon = 1e-12);
    // A first write replaces, then an add adds: 2Ā, whatever the buffer held.
    let mut abar = Array2::<f64>::from_elem((3, 4), f64::NAN);
    out.backward_into(
        &[Some(cbar.view())],
        &mut [Grad::Write(abar.view_mut()), Grad::Skip],
        None,
    )
    .unwrap();
    approx::assert_abs_diff_eq!(abar, ga, epsilon = 1e-12);
    out.backward_into(
        &[Some(cbar.view())],
        &mut [Grad::Add(abar.view_mut()), Grad::Skip],
        None,
    )
    .unwrap();
    approx::assert_abs_diff_eq!(abar, &ga * 2.0, epsilon = 1e-12);
    // A missing cotangent is zero: a first write stores zeros, an add adds nothing.
    let mut bbar = Array2::<f64>::from_elem((4, 2), f64::NAN);
    out.backward_into(
        &[None],
        &mut [Grad::Add(abar.view_mut()), Grad::Write(bbar.view_mut())],
        None,
    )
    .unwrap();
    assert!(bbar.iter().all(|&x| x == 0.0), "{bbar}");
    approx::assert_abs_diff_eq!(abar, &ga * 2.0, epsilon = 1e-12);
}

#[test]
fn accumulating_into_reversed_buffers_adds_in_place() {
    // Buffers BLAS cannot address directly (negative strides) go through a temporary.
    let mut rng = random::rng(31);
    let a = random::randn::<f64>(70, 66, &mut rng);
    let b = random::randn::<f64>(66, 65, &mut rng);
    let cbar = random::randn::<f64>(70, 65, &mut rng);
    let out = MatMul::nn().apply([a.view(), b.view()]).unwrap();
    let [ga, gb] = out.backward(cbar.view()).unwrap();
    let mut abuf = random::randn::<f64>(70, 66, &mut rng);
    let mut bbuf = random::randn::<f64>(66, 65, &mut rng);
    let (a0, b0) = (abuf.clone(), bbuf.clone());
    out.backward_into(
        &[Some(cbar.view())],
        &mut [
            Grad::Add(abuf.slice_mut(s![..;-1, ..])),
            Grad::Add(bbuf.slice_mut(s![..;-1, ..;-1])),
        ],
        None,
    )
    .unwrap();
    approx::assert_abs_diff_eq!(
        abuf.slice(s![..;-1, ..]),
        (a0.slice(s![..;-1, ..]).to_owned() + &ga).view(),
        epsilon = 1e-10
    );
    approx::assert_abs_diff_eq!(
        bbuf.slice(s![..;-1, ..;-1]),
        (b0.slice(s![..;-1, ..;-1]).to_owned() + &gb).view(),
        epsilon = 1e-10
    );
    // The same layouts as first writes into NaN.
    abuf.fill(f64::NAN);
    bbuf.fill(f64::NAN);
    out.backward_into(
        &[Some(cbar.view())],
        &mut [
            Grad::Write(abuf.slice_mut(s![..;-1, ..])),
            Grad::Write(bbuf.slice_mut(s![..;-1, ..;-1])),
        ],
        None,
    )
    .unwrap();
    approx::assert_abs_diff_eq!(abuf.slice(s![..;-1, ..]), ga.view(), epsilon = 1e-10);
    approx::assert_abs_diff_eq!(bbuf.slice(s![..;-1, ..;-1]), gb.view(), epsilon = 1e-10);
}
