//! The Cholesky rules against each other, against finite differences of the factor,
//! and in every gradient mode; the checker and the naive oracle are tested elsewhere.

use super::*;
use crate::ops::Apply;
use crate::primitive::Primitive;
use ndarray::{array, s, Array2, ShapeBuilder};

const CONVENTIONS: [Convention; 2] = [Convention::Symmetric, Convention::Lower];

fn mat(m: usize, n: usize, seed: usize) -> Array2<f64> {
    Array2::from_shape_fn((m, n), |(i, j)| {
        ((i * 131 + j * 71 + seed * 29 + 1) as f64 * 0.7548776662).sin()
    })
}

/// `MMᵀ/n + I` in the lower triangle, NaN above it (never read).
fn spd(n: usize, seed: usize) -> Array2<f64> {
    let m = mat(n, n, seed);
    let mut a = m.dot(&m.t()) / n as f64 + Array2::<f64>::eye(n);
    for i in 0..n {
        for j in i + 1..n {
            a[(i, j)] = f64::NAN;
        }
    }
    a
}

/// Largest difference relative to the largest entry of `b`; infinite if any entry of
/// `a` is NaN (`f64::max` would skip it).
fn rel(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    assert_eq!(a.dim(), b.dim());
    let scale = b.iter().fold(1e-300f64, |m, x| m.max(x.abs()));
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(
            0.0f64,
            |m, d| if d.is_nan() { f64::INFINITY } else { m.max(d) },
        )
        / scale
}

fn methods() -> [Method; 7] {
    [
        Method::Auto,
        Method::Recursive,
        Method::Symbolic,
        Method::Unblocked,
        Method::blocked(),
        Method::Blocked { block: 8 },
        Method::Blocked { block: 1000 },
    ]
}

#[test]
fn factor_of_a_hand_computed_matrix() {
    let a = array![[4.0, 99.0, 99.0], [2.0, 10.0, 99.0], [-2.0, 5.0, 6.0]];
    let l = cholesky(a.view()).unwrap();
    assert_eq!(
        l,
        array![[2.0, 0.0, 0.0], [1.0, 3.0, 0.0], [-1.0, 2.0, 1.0]]
    );
    assert_eq!(
        Cholesky::new().apply([a.t()]).err(),
        Some(Error::NotPositiveDefinite { op: OP, index: 1 })
    );
    let mut bad = a.clone();
    bad[(2, 1)] = f64::INFINITY;
    bad[(1, 0)] = f64::NAN;
    assert_eq!(
        cholesky(bad.view()).unwrap_err(),
        Error::NonFinite {
            op: OP,
            name: "A",
            row: 1,
            col: 0
        }
    );
    assert!(matches!(
        cholesky(mat(3, 2, 0).view()),
        Err(Error::NotSquare { op: OP, .. })
    ));
}

#[test]
fn every_method_and_gradient_mode_agrees_with_the_symbolic_rule() {
    // Around the recursion's leaf (32), its halving into odd orders, the inverted
    // blocks of the solve (64, so 129 and 257 split them), the lower update's leaf (32).
    for n in [1, 5, 32, 33, 37, 70, 129, 130, 257] {
        let a = spd(n, n);
        let lbar = mat(n, n, n + 1);
        let shapes = [Shape(n, n)];
        for conv in CONVENTIONS {
            let l = cholesky(a.view()).unwrap();
            let want = backward_symbolic(l.view(), lbar.view(), conv).unwrap();
            for method in methods() {
                let op = Cholesky::new().convention(conv).method(method);
                let out = op.apply([a.view()]).unwrap();
                assert_eq!(out.value(), &l);
                let [abar] = out.backward(lbar.view()).unwrap();
                assert!(rel(&abar, &want) < 1e-11, "{n} {conv:?} {method:?}");
                // A first write into NaN, then an addition, through a NaN workspace.
                let mut ws = vec![f64::NAN; Rule::<f64>::workspace(&op, &shapes)];
                let mut g = Array2::from_elem((n, n), f64::NAN);
                for grad in [Grad::Write(g.view_mut()), Grad::Skip] {
                    out.backward_into(&[Some(lbar.view())], &mut [grad], Some(&mut ws))
                        .unwrap();
                }
                assert!(rel(&g, &want) < 1e-11, "{n} {conv:?} {method:?} written");
                out.backward_into(
                    &[Some(lbar.view())],
                    &mut [Grad::Add(g.view_mut())],
                    Some(&mut ws),
                )
                .unwrap();
                assert!(
                    rel(&g, &(&want * 2.0)) < 1e-11,
                    "{n} {conv:?} {method:?} added"
                );
                // A first write into a buffer BLAS cannot address goes through the workspace.
                let mut big = Array2::from_elem((n, 2 * n), f64::NAN);
                let mut strided = big.slice_mut(s![.., ..;2]);
                out.backward_into(
                    &[Some(lbar.view())],
                    &mut [Grad::Write(strided.view_mut())],
                    Some(&mut ws),
                )
                .unwrap();
                assert!(rel(&strided.to_owned(), &want) < 1e-11);
            }
            // The strict upper triangle of L̄ is ignored.
            let mut junk = lbar.clone();
            for i in 0..n {
                for j in i + 1..n {
                    junk[(i, j)] = 1e6;
                }
            }
            let again = backward_symbolic(l.view(), junk.view(), conv).unwrap();
            assert!(rel(&again, &want) < 1e-12);
            let blocked = backward_blocked(l.view(), junk, 8, conv).unwrap();
            assert!(rel(&blocked, &want) < 1e-11);
        }
    }
}

#[test]
fn the_lower_convention_is_phi_of_twice_the_symmetric_one() {
    let n = 9;
    let l = cholesky(spd(n, 3).view()).unwrap();
    let lbar = mat(n, n, 4);
    let sym = backward_symbolic(l.view(), lbar.view(), Convention::Symmetric).unwrap();
    let low = backward_symbolic(l.view(), lbar.view(), Convention::Lower).unwrap();
    for ((i, j), &v) in low.indexed_iter() {
        let want = match i.cmp(&j) {
            std::cmp::Ordering::Greater => 2.0 * sym[(i, j)],
            std::cmp::Ordering::Equal => sym[(i, j)],
            std::cmp::Ordering::Less => 0.0,
        };
        assert!((v - want).abs() < 1e-12);
        assert!((sym[(i, j)] - sym[(j, i)]).abs() < 1e-12);
    }
}

#[test]
fn the_tangent_matches_finite_differences_and_the_adjoint() {
    for n in [1, 6, 45] {
        let a = spd(n, 10 + n);
        let adot = mat(n, n, 11 + n);
        let lbar = mat(n, n, 12 + n);
        for conv in CONVENTIONS {
            let op = Cholesky::new().convention(conv);
            let out = op.apply([a.view()]).unwrap();
            let ldot = out.jvp([adot.view()]).unwrap();
            for i in 0..n {
                for j in i + 1..n {
                    assert_eq!(ldot[(i, j)], 0.0);
                }
            }
            // The tangent the convention reads, as a perturbation of the lower triangle.
            let step = |h: f64| {
                let moved = Array2::from_shape_fn((n, n), |(i, j)| {
                    let d = match conv {
                        Convention::Symmetric => 0.5 * (adot[(i, j)] + adot[(j, i)]),
                        Convention::Lower => adot[(i, j)],
                    };
                    a[(i, j)] + h * d
                });
                cholesky(moved.view()).unwrap()
            };
            let h = 1e-6;
            let fd = (step(h) - step(-h)) / (2.0 * h);
            assert!(rel(&fd, &ldot) < 1e-6, "{n} {conv:?}");
            let [abar] = out.backward(lbar.view()).unwrap();
            let lhs = (&lbar * &ldot).sum();
            let rhs = (&abar * &adot).sum();
            assert!((lhs - rhs).abs() < 1e-10 * (1.0 + lhs.abs()), "{lhs} {rhs}");
        }
    }
}

/// Column-major buffers take the column-wise copy and `Φ`; a transposed `L` makes every
/// GEMM, solve and transpose of the recursive pass meet the other layout.
#[test]
fn column_major_buffers_and_factors_give_the_same_gradient() {
    for n in [33, 130] {
        let a = spd(n, 40 + n);
        let l = cholesky(a.view()).unwrap();
        let l_t = l.t().as_standard_layout().into_owned();
        let lbar = mat(n, n, 41 + n);
        let lbar_f = {
            let mut x = Array2::zeros((n, n).f());
            x.assign(&lbar);
            x
        };
        for conv in CONVENTIONS {
            let want = backward_symbolic(l.view(), lbar.view(), conv).unwrap();
            for method in [Method::Auto, Method::Recursive, Method::blocked()] {
                let op = Cholesky::new().convention(conv).method(method);
                for (lv, lbv) in [(l_t.t(), lbar.view()), (l.view(), lbar_f.view())] {
                    let mut g = Array2::from_elem((n, n).f(), f64::NAN);
                    op.backward_into(
                        &[a.view()],
                        &[lv],
                        &[Some(lbv)],
                        &mut [Grad::Write(g.view_mut())],
                        None,
                    )
                    .unwrap();
                    assert!(rel(&g, &want) < 1e-11, "{n} {conv:?} {method:?}");
                    let mut h = Array2::from_elem((n, n), f64::NAN);
                    op.backward_into(
                        &[a.view()],
                        &[lv],
                        &[Some(lbv)],
                        &mut [Grad::Write(h.view_mut())],
                        None,
                    )
                    .unwrap();
                    assert!(rel(&h, &want) < 1e-11, "{n} {conv:?} {method:?} row-major");
                }
            }
        }
    }
}

#[test]
fn blocked_backward_overwrites_its_own_buffer() {
    let n = 50;
    let l = cholesky(spd(n, 20).view()).unwrap();
    let lbar = mat(n, n, 21);
    for conv in CONVENTIONS {
        let want = backward_symbolic(l.view(), lbar.view(), conv).unwrap();
        let input = lbar.clone();
        let ptr = input.as_ptr();
        let got = backward_blocked(l.view(), input, 16, conv).unwrap();
        assert_eq!(got.as_ptr(), ptr);
        assert!(rel(&got, &want) < 1e-11);
        // L stored transposed and L̄ reversed: the same gradient.
        let l_t = l.t().as_standard_layout().into_owned();
        let mut rev = Array2::zeros((n, n));
        rev.slice_mut(s![..;-1, ..;-1]).assign(&lbar);
        let got =
            backward_blocked(l_t.t(), rev.slice(s![..;-1, ..;-1]).to_owned(), 16, conv).unwrap();
        assert!(rel(&got, &want) < 1e-11);
        let mut buf = lbar.clone();
        backward_blocked_in_place(l.view(), buf.view_mut(), 7, conv).unwrap();
        assert!(rel(&buf, &want) < 1e-11);
    }
}

#[test]
fn bad_factors_blocks_and_cotangents_are_typed_errors() {
    let n = 6;
    let a = spd(n, 30);
    let l = cholesky(a.view()).unwrap();
    let lbar = mat(n, n, 31);
    assert!(matches!(
        backward_symbolic(l.view(), lbar.slice(s![.., ..5]), Convention::Lower),
        Err(Error::WrongShape { op: OP, .. })
    ));
    assert!(matches!(
        backward_blocked(l.view(), lbar.clone(), 0, Convention::Lower),
        Err(Error::InvalidArgument { op: OP, .. })
    ));
    let mut singular = l.clone();
    singular[(3, 3)] = 0.0;
    assert_eq!(
        backward_symbolic(singular.view(), lbar.view(), Convention::Symmetric).unwrap_err(),
        Error::Singular { op: OP, index: 3 }
    );
    let op = Cholesky::new();
    let y = [singular.view()];
    assert_eq!(
        op.backward(&[a.view()], &y, &[Some(lbar.view())])
            .unwrap_err(),
        Error::Singular { op: OP, index: 3 }
    );
    assert_eq!(
        op.jvp(&[a.view()], &y, &[Some(lbar.view())]).unwrap_err(),
        Error::Singular { op: OP, index: 3 }
    );
    let bad = Cholesky::new().method(Method::Blocked { block: 0 });
    let out = bad.apply([a.view()]).unwrap();
    assert!(matches!(
        out.backward(lbar.view()),
        Err(Error::InvalidArgument { op: OP, .. })
    ));
}

#[test]
fn the_empty_matrix_has_an_empty_factor_and_gradient() {
    let a = Array2::<f64>::zeros((0, 0));
    for conv in CONVENTIONS {
        for method in methods() {
            let out = Cholesky::new()
                .convention(conv)
                .method(method)
                .apply([a.view()])
                .unwrap();
            assert_eq!(out.value().dim(), (0, 0));
            let [abar] = out.backward(a.view()).unwrap();
            assert_eq!(abar.dim(), (0, 0));
            assert_eq!(out.jvp([a.view()]).unwrap().dim(), (0, 0));
        }
    }
}
