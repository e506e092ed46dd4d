//! TriSolve (every side, transpose flag and triangle), ChoSolve and CholLogDet: the
//! rules pass the checker in both precisions at square, tall, wide and 1×1 right-hand
//! sides; the forward results solve what they claim; a singular factor and bad shapes
//! are typed errors; strided and transposed views agree with contiguous arrays; first
//! writes into NaN-filled buffers with a caller workspace give `backward`'s gradients.

mod support {
    pub mod views;
}

use matgrad::blas::GEMM_TRI_LEAF;
use matgrad::check::{assert_rule_precisions, random, Checker};
use matgrad::ops::cholesky::cholesky;
use matgrad::prelude::*;
use ndarray::{array, s, Array2, ArrayView2, ShapeBuilder};
use support::views::assert_same_on_views;

/// `(n, k)`: the factor is `n×n`, the right-hand side has `k` columns (left) or rows
/// (right): a column, a block wider than the factor, a tall block, and 1×1.
const SIZES: [(usize, usize); 4] = [(5, 1), (3, 4), (6, 2), (1, 1)];

/// Every side, transpose flag and triangle, through the named constructors.
fn all_trisolves() -> Vec<TriSolve> {
    let left = [
        TriSolve::lower(),
        TriSolve::lower_t(),
        TriSolve::upper(),
        TriSolve::upper_t(),
    ];
    let ops: Vec<TriSolve> = left
        .iter()
        .chain(&left.map(TriSolve::right))
        .copied()
        .collect();
    for side in [Side::Left, Side::Right] {
        for trans in [Trans::No, Trans::Yes] {
            for uplo in [Uplo::Lower, Uplo::Upper] {
                assert!(ops.contains(&TriSolve::new(side, trans, uplo)));
            }
        }
    }
    ops
}

/// A well-conditioned triangular factor in the `uplo` triangle, with random values in
/// the other triangle too: a rule that reads them gets caught.
fn factor(n: usize, uplo: Uplo, seed: u64) -> Array2<f64> {
    let mut rng = random::rng(seed);
    let l = random::lower::<f64>(n, &mut rng);
    let noise = random::randn::<f64>(n, n, &mut rng);
    let l = match uplo {
        Uplo::Lower => l,
        Uplo::Upper => l.reversed_axes(),
    };
    Array2::from_shape_fn((n, n), |(i, j)| {
        if i == j || in_triangle(uplo, i, j) {
            l[(i, j)]
        } else {
            noise[(i, j)]
        }
    })
}

fn in_triangle(uplo: Uplo, i: usize, j: usize) -> bool {
    match uplo {
        Uplo::Lower => j <= i,
        Uplo::Upper => j >= i,
    }
}

/// The factor as the solve sees it: its triangle, zeros elsewhere.
fn triangle(l: &Array2<f64>, uplo: Uplo) -> Array2<f64> {
    Array2::from_shape_fn(l.dim(), |(i, j)| {
        if in_triangle(uplo, i, j) {
            l[(i, j)]
        } else {
            0.0
        }
    })
}

fn rhs(op: &TriSolve, n: usize, k: usize, seed: u64) -> Array2<f64> {
    let (r, c) = match op.side {
        Side::Left => (n, k),
        Side::Right => (k, n),
    };
    random::randn(r, c, &mut random::rng(seed))
}

fn max_abs(a: &Array2<f64>) -> f64 {
    a.iter().fold(0.0f64, |m, x| m.max(x.abs()))
}

#[test]
fn trisolve_passes_the_checker_for_every_side_trans_and_triangle() {
    for (o, op) in all_trisolves().into_iter().enumerate() {
        for (i, &(n, k)) in SIZES.iter().enumerate() {
            let seed = 100 * o as u64 + 10 * i as u64;
            assert_rule_precisions(
                &op,
                &[
                    factor(n, op.uplo, seed).view(),
                    rhs(&op, n, k, seed + 1).view(),
                ],
            );
        }
    }
}

/// Past one diagonal block of the triangular gradient product (`blas::GEMM_TRI_LEAF`),
/// so that it goes by halves. A random triangular matrix this large is badly conditioned; a Cholesky
/// factor of a well-conditioned matrix is not.
#[test]
fn rules_hold_for_factors_spanning_several_blocks() {
    let n = GEMM_TRI_LEAF + 5;
    let mut rng = random::rng(400);
    let l = cholesky(random::spd::<f64>(n, &mut rng).view()).unwrap();
    for op in all_trisolves() {
        let f = match op.uplo {
            Uplo::Lower => l.clone(),
            Uplo::Upper => l.t().to_owned(),
        };
        let b = rhs(&op, n, 3, 401);
        Checker::new()
            .check(&op, &[f.view(), b.view()])
            .unwrap()
            .assert_passed();
    }
    let b = random::randn::<f64>(n, 2, &mut rng);
    Checker::new()
        .check(&ChoSolve, &[l.view(), b.view()])
        .unwrap()
        .assert_passed();
    Checker::new()
        .check(&CholLogDet, &[l.view()])
        .unwrap()
        .assert_passed();
}

#[test]
fn trisolve_gradient_is_zero_off_the_factor_triangle() {
    for (o, op) in all_trisolves().into_iter().enumerate() {
        let (l, b) = (factor(5, op.uplo, o as u64), rhs(&op, 5, 3, 50 + o as u64));
        let x = op.apply([l.view(), b.view()]).unwrap();
        let xbar = random::randn::<f64>(x.value().nrows(), x.value().ncols(), &mut random::rng(7));
        let [lbar, _] = x.backward(xbar.view()).unwrap();
        assert!(
            lbar.indexed_iter()
                .all(|((i, j), &g)| in_triangle(op.uplo, i, j) || g == 0.0),
            "{op:?}: {lbar}"
        );
        assert!(
            lbar.iter().filter(|g| **g != 0.0).count() > 5,
            "{op:?}: {lbar}"
        );
    }
}

#[test]
fn trisolve_solves_its_system() {
    for (o, op) in all_trisolves().into_iter().enumerate() {
        let (l, b) = (
            factor(4, op.uplo, 7 + o as u64),
            rhs(&op, 4, 3, 70 + o as u64),
        );
        let x = op.apply([l.view(), b.view()]).unwrap().into_value();
        let t = triangle(&l, op.uplo);
        let a = match op.trans {
            Trans::No => t,
            Trans::Yes => t.reversed_axes(),
        };
        let back = match op.side {
            Side::Left => a.dot(&x),
            Side::Right => x.dot(&a),
        };
        assert!(max_abs(&(&back - &b)) < 1e-12 * max_abs(&b), "{op:?}");
    }
}

#[test]
fn cho_solve_passes_the_checker() {
    for (i, &(n, k)) in SIZES.iter().enumerate() {
        let seed = 1000 + 10 * i as u64;
        assert_rule_precisions(
            &ChoSolve,
            &[
                factor(n, Uplo::Lower, seed).view(),
                random::randn(n, k, &mut random::rng(seed + 1)).view(),
            ],
        );
    }
}

#[test]
fn cho_solve_solves_with_the_product_of_factors() {
    let l = factor(6, Uplo::Lower, 3);
    let b = random::randn::<f64>(6, 2, &mut random::rng(4));
    let x = ChoSolve.apply([l.view(), b.view()]).unwrap().into_value();
    let t = triangle(&l, Uplo::Lower);
    let back = t.dot(&t.t()).dot(&x);
    assert!(max_abs(&(&back - &b)) < 1e-12 * max_abs(&b));
}

#[test]
fn chol_log_det_passes_the_checker() {
    for (i, n) in [1, 4, 7].into_iter().enumerate() {
        assert_rule_precisions(
            &CholLogDet,
            &[factor(n, Uplo::Lower, 2000 + i as u64).view()],
        );
    }
}

#[test]
fn chol_log_det_is_the_log_determinant_of_the_product() {
    let l = array![[2.0, 0.0, 0.0], [1.0, 0.5, 0.0], [-3.0, 4.0, 3.0]];
    let c = CholLogDet.apply([l.view()]).unwrap().into_value();
    // det(LLᵀ) = (2·0.5·3)².
    assert!((c[(0, 0)] - 9.0f64.ln()).abs() < 1e-14);
}

#[test]
fn views_agree_with_contiguous_arrays() {
    for (o, op) in all_trisolves().into_iter().enumerate() {
        let seed = 3000 + 10 * o as u64;
        assert_same_on_views(
            &op,
            &[&factor(4, op.uplo, seed), &rhs(&op, 4, 3, seed + 1)],
            seed + 2,
        );
    }
    let l = factor(5, Uplo::Lower, 3100);
    assert_same_on_views(
        &ChoSolve,
        &[&l, &random::randn(5, 2, &mut random::rng(3101))],
        3102,
    );
    assert_same_on_views(&CholLogDet, &[&l], 3103);
}

#[test]
fn a_zero_on_the_diagonal_is_singular() {
    for op in all_trisolves() {
        let mut l = factor(4, op.uplo, 11);
        l[(2, 2)] = 0.0;
        let b = rhs(&op, 4, 2, 12);
        let err = op.apply([l.view(), b.view()]).err();
        assert_eq!(
            err,
            Some(Error::Singular {
                op: "TriSolve",
                index: 2
            }),
            "{op:?}"
        );
    }
    let mut l = factor(4, Uplo::Lower, 13);
    l[(1, 1)] = 0.0;
    let b = random::randn::<f64>(4, 2, &mut random::rng(14));
    assert_eq!(
        ChoSolve.apply([l.view(), b.view()]).err(),
        Some(Error::Singular {
            op: "ChoSolve",
            index: 1
        })
    );
    assert_eq!(
        CholLogDet.apply([l.view()]).err(),
        Some(Error::Singular {
            op: "CholLogDet",
            index: 1
        })
    );
}

#[test]
fn chol_log_det_rejects_a_diagonal_without_a_logarithm() {
    let mut l = factor(3, Uplo::Lower, 15);
    l[(2, 2)] = -0.5;
    let err = CholLogDet.apply([l.view()]).err().unwrap();
    assert!(
        matches!(
            err,
            Error::InvalidArgument {
                op: "CholLogDet",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("diagonal entry 2"), "{err}");
    l[(2, 2)] = f64::NAN;
    let err = CholLogDet.apply([l.view()]).err();
    assert_eq!(
        err,
        Some(Error::NonFinite {
            op: "CholLogDet",
            name: "L",
            row: 2,
            col: 2
        })
    );
}

#[test]
fn bad_shapes_are_typed_errors_naming_both_shapes() {
    let square = factor(4, Uplo::Lower, 16);
    let wide = random::randn::<f64>(4, 3, &mut random::rng(17));
    let b3x2 = random::randn::<f64>(3, 2, &mut random::rng(18));

    let left = TriSolve::default();
    assert_eq!(left, TriSolve::lower());
    let err = left.apply([square.view(), b3x2.view()]).err().unwrap();
    assert!(matches!(
        err,
        Error::ShapeMismatch {
            op: "TriSolve",
            lhs: Shape(4, 4),
            rhs: Shape(3, 2),
            ..
        }
    ));
    assert!(
        err.to_string().contains("4×4") && err.to_string().contains("3×2"),
        "{err}"
    );
    let right = TriSolve::lower().right();
    let err = right.apply([square.view(), b3x2.view()]).err();
    assert!(matches!(
        err,
        Some(Error::ShapeMismatch {
            lhs: Shape(4, 4),
            rhs: Shape(3, 2),
            ..
        })
    ));
    assert_eq!(
        left.apply([wide.view(), b3x2.view()]).err(),
        Some(Error::NotSquare {
            op: "TriSolve",
            name: "L",
            got: Shape(4, 3)
        })
    );

    let err = ChoSolve.apply([square.view(), b3x2.view()]).err();
    assert!(matches!(
        err,
        Some(Error::ShapeMismatch {
            op: "ChoSolve",
            lhs: Shape(4, 4),
            rhs: Shape(3, 2),
            ..
        })
    ));
    assert_eq!(
        ChoSolve.apply([wide.view(), b3x2.view()]).err(),
        Some(Error::NotSquare {
            op: "ChoSolve",
            name: "L",
            got: Shape(4, 3)
        })
    );
    assert_eq!(
        CholLogDet.apply([wide.view()]).err(),
        Some(Error::NotSquare {
            op: "CholLogDet",
            name: "L",
            got: Shape(4, 3)
        })
    );

    let b = random::randn::<f64>(4, 2, &mut random::rng(19));
    let x = left.apply([square.view(), b.view()]).unwrap();
    let err = x.backward(b3x2.view()).err();
    assert!(matches!(
        err,
        Some(Error::WrongShape {
            expected: Shape(4, 2),
            got: Shape(3, 2),
            ..
        })
    ));
    let err = x.jvp([wide.view(), b.view()]).err();
    assert!(matches!(
        err,
        Some(Error::WrongShape {
            expected: Shape(4, 4),
            got: Shape(4, 3),
            ..
        })
    ));
    let c = CholLogDet.apply([square.view()]).unwrap();
    let err = c.backward(b3x2.view()).err();
    assert!(matches!(
        err,
        Some(Error::WrongShape {
            expected: Shape(1, 1),
            got: Shape(3, 2),
            ..
        })
    ));
}

/// A NaN-filled workspace of exactly the declared length and NaN-filled `Grad::Write`
/// buffers, contiguous or stepped in both axes (not BLAS-addressable, so a rule that computes in
/// place in an addressable buffer takes its workspace path), for every subset of the
/// inputs: the gradients written are `backward`'s, and the skipped buffers untouched.
fn first_writes_match_backward<P: Primitive<f64> + ?Sized>(
    p: &P,
    inputs: &[ArrayView2<'_, f64>],
    seed: u64,
) {
    let name = p.name();
    let y = p.forward(inputs).unwrap();
    let yv: Vec<ArrayView2<'_, f64>> = y.iter().map(|c| c.view()).collect();
    let mut rng = random::rng(seed);
    // One cotangent per differentiable output; residuals take none.
    let ybar: Vec<Array2<f64>> = y
        .iter()
        .take(p.outputs())
        .map(|c| random::randn::<f64>(c.nrows(), c.ncols(), &mut rng))
        .collect();
    let ybar: Vec<Option<ArrayView2<'_, f64>>> = ybar.iter().map(|c| Some(c.view())).collect();
    let expected = p.backward(inputs, &yv, &ybar).unwrap();
    let shapes: Vec<Shape> = inputs.iter().map(|x| Shape(x.nrows(), x.ncols())).collect();
    let need = p.workspace(&shapes);
    for stepped in [false, true] {
        for mask in 1..(1u32 << inputs.len()) {
            let wanted = |i: usize| mask & (1 << i) != 0;
            let mut bases: Vec<Array2<f64>> = inputs
                .iter()
                .map(|x| {
                    let k = if stepped { 2 } else { 1 };
                    Array2::from_elem((k * x.nrows(), k * x.ncols()), f64::NAN)
                })
                .collect();
            let mut ws = vec![f64::NAN; need];
            {
                let mut grads: Vec<Grad<'_, f64>> = bases
                    .iter_mut()
                    .enumerate()
                    .map(|(i, b)| {
                        if !wanted(i) {
                            Grad::Skip
                        } else if stepped {
                            Grad::Write(b.slice_mut(s![..;2, ..;2]))
                        } else {
                            Grad::Write(b.view_mut())
                        }
                    })
                    .collect();
                p.backward_into(inputs, &yv, &ybar, &mut grads, Some(&mut ws[..]))
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
            }
            for (i, (b, e)) in bases.iter().zip(&expected).enumerate() {
                let got = if stepped {
                    b.slice(s![..;2, ..;2])
                } else {
                    b.view()
                };
                if !wanted(i) {
                    assert!(
                        b.iter().all(|x| x.is_nan()),
                        "{name}: the skipped buffer {i} was written"
                    );
                    continue;
                }
                assert!(
                    got.iter().all(|x| x.is_finite()),
                    "{name} (stepped: {stepped}, mask {mask:b}): a first write read its buffer or workspace\n{got}"
                );
                let scale = e.iter().fold(1.0f64, |m, x| m.max(x.abs()));
                let err = (&got - e).iter().fold(0.0f64, |m, x| m.max(x.abs())) / scale;
                assert!(
                    err <= 1e-13,
                    "{name} (stepped: {stepped}, mask {mask:b}): gradient {i} differs from backward by {err:e}\n{got}\nvs\n{e}"
                );
            }
        }
    }
}

/// `B̄` alone, first-written into a buffer BLAS can address (row- or column-major; for
/// `LuSolve`, whose getrs needs it, column-major), is solved in that buffer: the
/// workspace is not touched. The result is `backward`'s.
#[test]
fn a_first_write_of_bbar_alone_is_solved_in_the_callers_buffer() {
    fn check(p: &dyn Primitive<f64>, inputs: [&Array2<f64>; 2], seed: u64, layouts: &[bool]) {
        let name = p.name();
        let inputs = inputs.map(|x| x.view());
        // Column-major outputs: LuSolve's residual factors are then read in place.
        let y: Vec<Array2<f64>> = p
            .forward(&inputs)
            .unwrap()
            .iter()
            .map(|c| {
                let mut f = Array2::zeros(c.dim().f());
                f.assign(c);
                f
            })
            .collect();
        let yv: Vec<ArrayView2<'_, f64>> = y.iter().map(|c| c.view()).collect();
        let xbar = random::randn::<f64>(y[0].nrows(), y[0].ncols(), &mut random::rng(seed));
        let ybar: Vec<Option<ArrayView2<'_, f64>>> = (0..p.outputs())
            .map(|k| (k == 0).then(|| xbar.view()))
            .collect();
        let expected = p.backward(&inputs, &yv, &ybar).unwrap().remove(1);
        let shapes = inputs.map(|x| Shape(x.nrows(), x.ncols()));
        let need = p.workspace(&shapes);
        for &column_major in layouts {
            let mut g = Array2::from_elem(inputs[1].dim().set_f(column_major), f64::NAN);
            let mut ws = vec![f64::NAN; need];
            let mut grads = [Grad::Skip, Grad::Write(g.view_mut())];
            p.backward_into(&inputs, &yv, &ybar, &mut grads, Some(&mut ws[..]))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(
                ws.iter().all(|x| x.is_nan()),
                "{name} (column-major: {column_major}): B̄ went through the workspace"
            );
            let err = (&g - &expected).iter().fold(0.0f64, |m, x| m.max(x.abs()));
            assert!(err <= 1e-13, "{name}: B̄ differs from backward's by {err:e}");
        }
    }
    for (o, op) in all_trisolves().into_iter().enumerate() {
        let seed = 5200 + 10 * o as u64;
        let (l, b) = (factor(6, op.uplo, seed), rhs(&op, 6, 4, seed + 1));
        check(&op, [&l, &b], seed + 2, &[false, true]);
    }
    let l = factor(6, Uplo::Lower, 5300);
    let b = random::randn::<f64>(6, 4, &mut random::rng(5301));
    check(&ChoSolve, [&l, &b], 5302, &[false, true]);
    let a = random::randn::<f64>(6, 6, &mut random::rng(5303));
    for op in [LuSolve::new(), LuSolve::transposed()] {
        check(&op, [&a, &b], 5304, &[true]);
    }
}

#[test]
fn first_writes_with_caller_workspaces_match_backward() {
    for (seed, n) in [5, 70].into_iter().enumerate() {
        let a = random::spd::<f64>(n, &mut random::rng(4000 + seed as u64));
        for conv in [Convention::Symmetric, Convention::Lower] {
            for method in [
                Method::Auto,
                Method::Recursive,
                Method::Blocked { block: 16 },
                Method::Symbolic,
                Method::Unblocked,
            ] {
                let op = Cholesky::new().convention(conv).method(method);
                first_writes_match_backward(&op, &[a.view()], 4010 + seed as u64);
            }
        }
    }
    for (o, op) in all_trisolves().into_iter().enumerate() {
        for (i, &(n, k)) in SIZES.iter().enumerate() {
            let seed = 4100 + 100 * o as u64 + 10 * i as u64;
            first_writes_match_backward(
                &op,
                &[
                    factor(n, op.uplo, seed).view(),
                    rhs(&op, n, k, seed + 1).view(),
                ],
                seed + 2,
            );
        }
    }
    for (i, &(n, k)) in SIZES.iter().enumerate() {
        let seed = 5000 + 10 * i as u64;
        first_writes_match_backward(
            &ChoSolve,
            &[
                factor(n, Uplo::Lower, seed).view(),
                random::randn::<f64>(n, k, &mut random::rng(seed + 1)).view(),
            ],
            seed + 2,
        );
    }
    for (i, n) in [1, 4, 7].into_iter().enumerate() {
        let seed = 5100 + 10 * i as u64;
        first_writes_match_backward(
            &CholLogDet,
            &[factor(n, Uplo::Lower, seed).view()],
            seed + 1,
        );
    }
}
