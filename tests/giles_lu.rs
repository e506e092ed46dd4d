//! The LU family of Giles (2008): `Inverse`, `Det`, `SlogDet` and `LuSolve` (both
//! transpose flags). Every rule passes the checker in both precisions at 1×1, small,
//! non-square right-hand sides and n ≥ 70 (past the 64 of an inline pivot list, of
//! LAPACK's blocks and of the switch to the recursive getrf2); orders 100 to 260 run on
//! a thread with a 2 MiB stack; the forward passes match closed forms at 2×2 and 3×3; the
//! determinant's gradient at a singular matrix is the transposed adjugate, finite;
//! undefined answers are typed errors; the reverse passes reuse the forward pass's LU
//! through its residuals; views of any layout agree with contiguous arrays.

mod support {
    pub mod views;
}

use matgrad::check::{assert_rule_precisions, random, Checker};
use matgrad::prelude::*;
use ndarray::{array, Array2, ArrayView2};
use support::views::assert_same_on_views;

/// A random `n×n` matrix (Gaussian, so well conditioned with high probability).
fn square(n: usize, seed: u64) -> Array2<f64> {
    random::randn::<f64>(n, n, &mut random::rng(seed))
}

/// A random dense `n×n` matrix with singular values in `[1, 2)`: `Q·diag(1 + uᵢ)` with
/// `Q` orthogonal (Gram–Schmidt on a Gaussian matrix). At `n = 70` a Gaussian matrix's
/// smallest singular value is about `0.1`, which makes a finite-difference step of the
/// checker (`1e-4`, `1e-2` in `f32`) a large relative perturbation of `A⁻¹`; this one
/// keeps it small, and still needs row interchanges.
fn well_conditioned(n: usize, seed: u64) -> Array2<f64> {
    let mut rng = random::rng(seed);
    let mut q = random::randn::<f64>(n, n, &mut rng);
    let u = random::uniform::<f64>(1, n, 0.0, 1.0, &mut rng).unwrap();
    for j in 0..n {
        for i in 0..j {
            let d = q.column(i).dot(&q.column(j));
            let qi = q.column(i).to_owned();
            q.column_mut(j).scaled_add(-d, &qi);
        }
        let norm = q.column(j).dot(&q.column(j)).sqrt();
        q.column_mut(j).mapv_inplace(|v| v / norm);
    }
    for j in 0..n {
        q.column_mut(j).mapv_inplace(|v| v * (1.0 + u[(0, j)]));
    }
    q
}

/// Test matrices: Gaussian up to order 8, [`well_conditioned`] above.
fn matrix(n: usize, seed: u64) -> Array2<f64> {
    if n <= 8 {
        square(n, seed)
    } else {
        well_conditioned(n, seed)
    }
}

/// [`matrix`] scaled to `log|det A| = log_det`: `det A` neither overflows nor underflows
/// in `f32` at large `n`, and `log|det A|` is not near zero, where a relative error
/// between precisions means nothing.
fn with_log_det(n: usize, seed: u64, log_det: f64) -> Array2<f64> {
    let a = matrix(n, seed);
    let [_, log] = slogdet(&a);
    a * ((log_det - log) / n as f64).exp()
}

/// [`matrix`] scaled to `|det A| = 1`.
fn unit_det(n: usize, seed: u64) -> Array2<f64> {
    with_log_det(n, seed, 0.0)
}

fn slogdet(a: &Array2<f64>) -> [f64; 2] {
    let out = SlogDet.apply([a.view()]).unwrap();
    [out.outputs()[0][(0, 0)], out.outputs()[1][(0, 0)]]
}

fn close(got: ArrayView2<'_, f64>, want: &Array2<f64>, tol: f64) -> bool {
    let scale = want.iter().fold(1.0f64, |m, x| m.max(x.abs()));
    got.dim() == want.dim()
        && got
            .iter()
            .zip(want)
            .all(|(g, w)| (g - w).abs() <= tol * scale)
}

#[track_caller]
fn assert_close(got: ArrayView2<'_, f64>, want: &Array2<f64>, tol: f64, what: &str) {
    assert!(close(got, want, tol), "{what}:\n{got}\nexpected\n{want}");
}

/// `det A` by cofactor expansion along the first row, for `n ≤ 4`.
fn det_cofactors(a: &Array2<f64>) -> f64 {
    let n = a.nrows();
    if n == 1 {
        return a[(0, 0)];
    }
    (0..n)
        .map(|j| {
            let sign = if j % 2 == 0 { 1.0 } else { -1.0 };
            sign * a[(0, j)] * det_cofactors(&minor(a, 0, j))
        })
        .sum()
}

/// `A` without row `i` and column `j`.
fn minor(a: &Array2<f64>, i: usize, j: usize) -> Array2<f64> {
    let n = a.nrows();
    let rows: Vec<usize> = (0..n).filter(|&r| r != i).collect();
    let cols: Vec<usize> = (0..n).filter(|&c| c != j).collect();
    Array2::from_shape_fn((n - 1, n - 1), |(r, c)| a[(rows[r], cols[c])])
}

/// The cofactor matrix `Cᵢⱼ = (−1)^{i+j} Mᵢⱼ = adj(A)ᵀ`, the gradient of `det`.
fn cofactor_matrix(a: &Array2<f64>) -> Array2<f64> {
    let n = a.nrows();
    if n == 1 {
        return array![[1.0]];
    }
    Array2::from_shape_fn((n, n), |(i, j)| {
        let sign = if (i + j) % 2 == 0 { 1.0 } else { -1.0 };
        sign * det_cofactors(&minor(a, i, j))
    })
}

/// `A⁻¹ = adj(A)/det A`.
fn inverse_adjugate(a: &Array2<f64>) -> Array2<f64> {
    cofactor_matrix(a).t().to_owned() / det_cofactors(a)
}

// ------------------------------------------------------------ the checker

#[test]
fn inverse_passes_the_checker_in_both_precisions() {
    for (n, seed) in [(1, 1), (2, 2), (3, 3), (6, 4), (70, 5)] {
        assert_rule_precisions(&Inverse, &[matrix(n, seed).view()]);
    }
}

#[test]
fn det_and_slogdet_pass_the_checker_in_both_precisions() {
    for (n, seed) in [(1, 11), (2, 12), (3, 13), (6, 14), (70, 15)] {
        assert_rule_precisions(&Det, &[unit_det(n, seed).view()]);
        assert_rule_precisions(&SlogDet, &[with_log_det(n, seed, 1.5).view()]);
    }
    // A negative 1×1 determinant, and an unscaled matrix for SlogDet.
    assert_rule_precisions(&Det, &[array![[-0.7]].view()]);
    assert_rule_precisions(&SlogDet, &[array![[-0.7]].view()]);
    assert_rule_precisions(&SlogDet, &[(square(8, 16) * 3.0).view()]);
    assert_rule_precisions(&SlogDet, &[(matrix(70, 17) * -0.5).view()]);
}

#[test]
fn lu_solve_passes_the_checker_in_both_precisions() {
    // (n, k): 1×1, square, wide and tall right-hand sides, and n ≥ 70.
    for (n, k, seed) in [(1, 1, 21), (3, 3, 22), (3, 5, 23), (6, 2, 24), (70, 3, 25)] {
        let a = matrix(n, seed);
        let b = random::randn::<f64>(n, k, &mut random::rng(seed + 100));
        for op in [LuSolve::new(), LuSolve::transposed()] {
            assert_rule_precisions(&op, &[a.view(), b.view()]);
        }
    }
}

#[test]
fn the_checker_reports_the_residuals_and_the_declared_saves() {
    let a = square(4, 31);
    let b = random::randn::<f64>(4, 2, &mut random::rng(32));
    let r = Checker::new()
        .check(&LuSolve::new(), &[a.view(), b.view()])
        .unwrap();
    r.assert_passed();
    assert_eq!(r.outputs.len(), 1, "{r}");
    let names: Vec<&str> = r.residuals.iter().map(|x| x.name).collect();
    assert_eq!(names, ["LU", "ipiv"], "{r}");
    assert!(r.undeclared_reads.is_empty(), "{r}");
    let r = Checker::new().check(&SlogDet, &[a.view()]).unwrap();
    r.assert_passed();
    assert_eq!(r.name, "SlogDet", "{r}");
    let names: Vec<&str> = r.outputs.iter().map(|x| x.name).collect();
    assert_eq!(names, ["sign", "logabsdet"], "{r}");
}

// ------------------------------------------------------- closed forms

fn small_matrices() -> Vec<Array2<f64>> {
    vec![
        array![[4.0, 3.0], [6.0, 3.0]],
        array![[0.5, -1.25], [2.0, 0.75]],
        // Needs a row interchange: a zero in the first pivot position.
        array![[0.0, 2.0, 1.0], [3.0, -1.0, 4.0], [1.0, 5.0, -2.0]],
        array![[2.0, -1.0, 0.5], [1.5, 3.0, -2.0], [-0.5, 1.0, 4.0]],
    ]
}

#[test]
fn forward_passes_match_cofactors_and_the_adjugate() {
    let mut rng = random::rng(41);
    for a in small_matrices() {
        let n = a.nrows();
        let det = det_cofactors(&a);
        let inv = inverse_adjugate(&a);

        let c = Det.apply([a.view()]).unwrap();
        assert!(
            (c.value()[(0, 0)] - det).abs() < 1e-12 * det.abs().max(1.0),
            "{a}"
        );

        let [sign, log] = slogdet(&a);
        assert_eq!(sign, det.signum(), "{a}");
        assert!((log - det.abs().ln()).abs() < 1e-12, "{a}");

        let out = Inverse.apply([a.view()]).unwrap();
        assert_close(out.value().view(), &inv, 1e-12, "A⁻¹ against adj(A)/det A");

        let b = random::randn::<f64>(n, 3, &mut rng);
        let x = LuSolve::new().apply([a.view(), b.view()]).unwrap();
        assert_close(x.value().view(), &inv.dot(&b), 1e-12, "A⁻¹B");
        let x = LuSolve::transposed().apply([a.view(), b.view()]).unwrap();
        assert_close(x.value().view(), &inv.t().dot(&b), 1e-12, "A⁻ᵀB");
    }
}

#[test]
fn reverse_passes_match_the_closed_forms() {
    let mut rng = random::rng(42);
    for a in small_matrices() {
        let n = a.nrows();
        let inv = inverse_adjugate(&a);
        let cof = cofactor_matrix(&a);

        // Det: Ā = c̄·adj(A)ᵀ; SlogDet: Ā = ℓ̄·A⁻ᵀ, the sign contributes nothing.
        let [abar] = Det
            .apply([a.view()])
            .unwrap()
            .backward(array![[1.5]].view())
            .unwrap();
        assert_close(abar.view(), &(&cof * 1.5), 1e-12, "Det Ā");
        let s = SlogDet.apply([a.view()]).unwrap();
        let g = s
            .backward_all(&[Some(array![[7.0]].view()), Some(array![[-2.0]].view())])
            .unwrap();
        assert_close(
            g[0].view(),
            &(inv.t().to_owned() * -2.0),
            1e-12,
            "SlogDet Ā",
        );

        // Inverse: Ā = −CᵀC̄Cᵀ.
        let cbar = random::randn::<f64>(n, n, &mut rng);
        let [abar] = Inverse
            .apply([a.view()])
            .unwrap()
            .backward(cbar.view())
            .unwrap();
        let want = -inv.t().dot(&cbar).dot(&inv.t());
        assert_close(abar.view(), &want, 1e-12, "Inverse Ā");

        // LuSolve: B̄ = op(A)⁻ᵀX̄, Ā = −B̄Xᵀ or −XB̄ᵀ.
        let b = random::randn::<f64>(n, 2, &mut rng);
        let xbar = random::randn::<f64>(n, 2, &mut rng);
        let x = inv.dot(&b);
        let [abar, bbar] = LuSolve::new()
            .apply([a.view(), b.view()])
            .unwrap()
            .backward(xbar.view())
            .unwrap();
        let want_b = inv.t().dot(&xbar);
        assert_close(bbar.view(), &want_b, 1e-12, "LuSolve B̄");
        assert_close(abar.view(), &-want_b.dot(&x.t()), 1e-12, "LuSolve Ā");
        let x = inv.t().dot(&b);
        let [abar, bbar] = LuSolve::transposed()
            .apply([a.view(), b.view()])
            .unwrap()
            .backward(xbar.view())
            .unwrap();
        let want_b = inv.dot(&xbar);
        assert_close(bbar.view(), &want_b, 1e-12, "LuSolve(Aᵀ) B̄");
        assert_close(abar.view(), &-x.dot(&want_b.t()), 1e-12, "LuSolve(Aᵀ) Ā");
    }
}

// ------------------------------------------------- singular matrices

/// Singular 3×3 matrices of rank 2, each reaching a different path of the rule.
fn rank_two() -> Vec<(&'static str, Array2<f64>)> {
    let mut rng = random::rng(51);
    let r = random::randn::<f64>(2, 3, &mut rng);
    let mut float = Array2::zeros((3, 3));
    float.row_mut(0).assign(&r.row(0));
    float.row_mut(1).assign(&r.row(1));
    let third = &r.row(0) * 0.3 - &r.row(1) * 1.7;
    float.row_mut(2).assign(&third);
    vec![
        // Elimination is exact: one pivot is exactly zero.
        (
            "one zero pivot",
            array![[2.0, 1.0, 3.0], [4.0, 2.0, 6.0], [1.0, 5.0, 2.0]],
        ),
        // Elimination is exact and the zero pivot is not the last: the left null vector
        // runs through the trailing block.
        (
            "zero pivot before the last",
            array![[1.0, 2.0, 3.0], [2.0, 4.0, 7.0], [4.0, 8.0, 5.0]],
        ),
        // Three zero pivots at rank 2: the shift matrix.
        (
            "shift",
            array![[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]],
        ),
        (
            "shift, scaled",
            array![[0.0, 3.0, -1.0], [0.0, 0.0, 2.0], [0.0, 0.0, 0.0]],
        ),
        // Rounding leaves a tiny pivot instead of a zero one.
        ("rounded", float),
    ]
}

#[test]
fn det_gradient_at_rank_n_minus_1_is_the_transposed_adjugate() {
    for (what, a) in rank_two() {
        let cof = cofactor_matrix(&a);
        assert!(
            cof.iter().any(|&v| v.abs() > 0.1),
            "{what}: adj(A) ≠ 0 at rank n − 1"
        );
        let c = Det.apply([a.view()]).unwrap();
        assert!(
            c.value()[(0, 0)].abs() < 1e-12,
            "{what}: det = {}",
            c.value()
        );
        let [abar] = c.backward(array![[1.0]].view()).unwrap();
        assert!(abar.iter().all(|v| v.is_finite()), "{what}: {abar}");
        for ((i, j), &g) in abar.indexed_iter() {
            assert!(
                (g - cof[(i, j)]).abs() < 1e-10,
                "{what}: Ā[{i},{j}] = {g}, adj(A)ᵀ[{i},{j}] = {}",
                cof[(i, j)]
            );
        }
        // The JVP is the same linear map: ċ = ⟨adj(A)ᵀ, Ȧ⟩.
        let adot = square(3, 52);
        let cdot = c.jvp([adot.view()]).unwrap()[(0, 0)];
        assert!(
            (cdot - (&cof * &adot).sum()).abs() < 1e-10,
            "{what}: ċ = {cdot}"
        );
    }
}

#[test]
fn det_at_exactly_singular_matrices_passes_the_checker() {
    for (what, a) in rank_two().into_iter().take(3) {
        let r = Checker::new().check(&Det, &[a.view()]).unwrap();
        assert!(r.passed(), "{what}:\n{r}");
        assert_rule_precisions(&Det, &[a.view()]);
    }
}

#[test]
fn det_gradient_at_rank_n_minus_2_is_zero() {
    for a in [
        array![[2.0, 4.0, 6.0], [1.0, 2.0, 3.0], [4.0, 8.0, 12.0]],
        Array2::<f64>::zeros((3, 3)),
        array![[0.0, 0.0, 1.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
    ] {
        let c = Det.apply([a.view()]).unwrap();
        assert_eq!(c.value()[(0, 0)], 0.0);
        let [abar] = c.backward(array![[1.0]].view()).unwrap();
        assert!(abar.iter().all(|v| v.abs() < 1e-12), "{a}\n{abar}");
    }
    // 1×1 at zero: d det/dA = 1.
    let [abar] = Det
        .apply([array![[0.0]].view()])
        .unwrap()
        .backward(array![[2.0]].view())
        .unwrap();
    assert_eq!(abar, array![[2.0]]);
}

#[test]
fn undefined_answers_are_typed_errors() {
    let singular = array![[2.0, 1.0, 3.0], [4.0, 2.0, 6.0], [1.0, 5.0, 2.0]];
    let e = SlogDet.apply([singular.view()]).err().unwrap();
    assert_eq!(
        e,
        Error::Singular {
            op: "SlogDet",
            index: 2
        }
    );
    let e = Inverse.apply([singular.view()]).err().unwrap();
    assert_eq!(
        e,
        Error::Singular {
            op: "Inverse(A⁻¹)",
            index: 2
        }
    );
    let b = array![[1.0], [2.0], [3.0]];
    for op in [LuSolve::new(), LuSolve::transposed()] {
        let e = op.apply([singular.view(), b.view()]).err().unwrap();
        assert!(matches!(e, Error::Singular { index: 2, .. }), "{e}");
    }
    // A zero first column: the first pivot is zero.
    let e = Inverse
        .apply([array![[0.0, 1.0], [0.0, 2.0]].view()])
        .err()
        .unwrap();
    assert_eq!(
        e,
        Error::Singular {
            op: "Inverse(A⁻¹)",
            index: 0
        }
    );
    println!("{e}");

    // det A beyond f64: an error, while SlogDet gives its logarithm.
    let big = square(100, 53) * 1e4;
    let e = Det.apply([big.view()]).err().unwrap();
    assert!(matches!(e, Error::InvalidArgument { op: "Det", .. }), "{e}");
    let [_, log] = slogdet(&big);
    assert!(log.is_finite() && log > 709.0, "{log}");

    // Non-finite input.
    let mut a = square(3, 54);
    a[(1, 2)] = f64::NAN;
    for e in [
        Det.apply([a.view()]).err().unwrap(),
        SlogDet.apply([a.view()]).err().unwrap(),
        Inverse.apply([a.view()]).err().unwrap(),
        LuSolve::new().apply([a.view(), b.view()]).err().unwrap(),
    ] {
        assert!(
            matches!(
                e,
                Error::NonFinite {
                    name: "A",
                    row: 1,
                    col: 2,
                    ..
                }
            ),
            "{e}"
        );
    }
    let mut bad_b = b.clone();
    bad_b[(2, 0)] = f64::INFINITY;
    let e = LuSolve::new()
        .apply([square(3, 55).view(), bad_b.view()])
        .err()
        .unwrap();
    assert!(
        matches!(
            e,
            Error::NonFinite {
                name: "B",
                row: 2,
                col: 0,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn bad_shapes_are_typed_errors_naming_the_primitive() {
    let wide = square(3, 61).slice(ndarray::s![.., ..2]).to_owned();
    for e in [
        Inverse.apply([wide.view()]).err().unwrap(),
        Det.apply([wide.view()]).err().unwrap(),
        SlogDet.apply([wide.view()]).err().unwrap(),
    ] {
        assert!(
            matches!(
                e,
                Error::NotSquare {
                    name: "A",
                    got: Shape(3, 2),
                    ..
                }
            ),
            "{e}"
        );
    }
    let a = square(3, 62);
    let b = random::randn::<f64>(4, 2, &mut random::rng(63));
    let e = LuSolve::new().apply([a.view(), b.view()]).err().unwrap();
    assert_eq!(
        e,
        Error::ShapeMismatch {
            op: "LuSolve(A⁻¹·B)",
            what: "B must have as many rows as A",
            lhs_name: "A",
            lhs: Shape(3, 3),
            rhs_name: "B",
            rhs: Shape(4, 2),
        }
    );
    println!("{e}");
    let e = LuSolve::transposed()
        .apply([wide.view(), b.view()])
        .err()
        .unwrap();
    assert!(
        matches!(
            e,
            Error::NotSquare {
                op: "LuSolve(A⁻ᵀ·B)",
                ..
            }
        ),
        "{e}"
    );
}

// ------------------------------------------- the factorisation is reused

/// `P·L·U` from the residuals `LU` and `ipiv`.
fn rebuild(lu: &Array2<f64>, ipiv: &Array2<f64>) -> Array2<f64> {
    let n = lu.nrows();
    let l = Array2::from_shape_fn((n, n), |(i, j)| match i.cmp(&j) {
        std::cmp::Ordering::Greater => lu[(i, j)],
        std::cmp::Ordering::Equal => 1.0,
        std::cmp::Ordering::Less => 0.0,
    });
    let u = Array2::from_shape_fn((n, n), |(i, j)| if j >= i { lu[(i, j)] } else { 0.0 });
    let mut a = l.dot(&u);
    for i in (0..n).rev() {
        let p = ipiv[(i, 0)] as usize - 1;
        for j in 0..n {
            a.swap((i, j), (p, j));
        }
    }
    a
}

#[test]
fn the_residuals_are_the_lu_factors_of_a() {
    for n in [1, 3, 70] {
        let a = matrix(n, 70 + n as u64);
        let b = random::randn::<f64>(n, 2, &mut random::rng(71));
        let x = LuSolve::new().apply([a.view(), b.view()]).unwrap();
        let d = Det.apply([a.view()]).unwrap();
        let s = SlogDet.apply([a.view()]).unwrap();
        for res in [x.residuals(), d.residuals(), s.residuals()] {
            assert_eq!(res.len(), 2);
            assert_eq!(res[1].dim(), (n, 1));
            let swaps = res[1]
                .iter()
                .enumerate()
                .filter(|&(i, &p)| p != (i + 1) as f64);
            assert!(
                n < 3 || swaps.count() > 0,
                "the test matrix needs row interchanges"
            );
            let back = rebuild(&res[0].to_owned(), &res[1].to_owned());
            assert_close(back.view(), &a, 1e-12, "P·L·U");
        }
    }
}

#[test]
fn lu_solve_reverse_reuses_the_factorisation_and_never_reads_a_or_b() {
    let (n, k) = (5, 3);
    let a = square(n, 81);
    let b = random::randn::<f64>(n, k, &mut random::rng(82));
    let xbar = random::randn::<f64>(n, k, &mut random::rng(83));
    for op in [LuSolve::new(), LuSolve::transposed()] {
        for wanted in [[true, true], [true, false], [false, true]] {
            let saves = Rule::<f64>::saves(&op, &wanted);
            assert!(!saves.reads_input(0) && !saves.reads_input(1), "{op:?}");
            assert!(saves.reads_output(1) && saves.reads_output(2), "{op:?}");
            assert_eq!(
                saves.reads_output(0),
                wanted[0],
                "{op:?} reads X only for Ā"
            );
        }
        let y = op.forward(&[a.view(), b.view()]).unwrap();
        let yv: Vec<ArrayView2<'_, f64>> = y.iter().map(|c| c.view()).collect();
        let want = op
            .backward(&[a.view(), b.view()], &yv, &[Some(xbar.view())])
            .unwrap();
        // A and B replaced by NaN placeholders: a refactorisation would give NaN.
        let nan_a = Array2::from_elem((n, n), f64::NAN);
        let nan_b = Array2::from_elem((n, k), f64::NAN);
        let got = op
            .backward(&[nan_a.view(), nan_b.view()], &yv, &[Some(xbar.view())])
            .unwrap();
        assert_eq!(got, want, "{op:?}");
        let t = [
            Some(square(n, 84)),
            Some(random::randn::<f64>(n, k, &mut random::rng(85))),
        ];
        let tv: Vec<_> = t.iter().map(|t| t.as_ref().map(|t| t.view())).collect();
        let jvp = op.jvp(&[nan_a.view(), nan_b.view()], &yv, &tv).unwrap();
        assert!(jvp[0].iter().all(|v| v.is_finite()), "{op:?}");
        assert_eq!(
            jvp,
            op.jvp(&[a.view(), b.view()], &yv, &tv).unwrap(),
            "{op:?}"
        );

        // The residuals of another matrix A₂ give A₂'s gradients: the rule solves with
        // the residual factors it is handed, it does not refactor anything.
        let a2 = square(n, 86);
        let y2 = op.forward(&[a2.view(), b.view()]).unwrap();
        let mixed = [yv[0], y2[1].view(), y2[2].view()];
        let g = op
            .backward(&[a.view(), b.view()], &mixed, &[Some(xbar.view())])
            .unwrap();
        let inv2 = Inverse.apply([a2.view()]).unwrap().into_value();
        let op_inv2 = match op.trans {
            Trans::No => inv2,
            Trans::Yes => inv2.t().to_owned(),
        };
        assert_close(
            g[1].view(),
            &op_inv2.t().dot(&xbar),
            1e-12,
            "B̄ from A₂'s factors",
        );
    }
}

/// A determinant in the subnormal range, `±2⁻¹⁰⁶⁵`, is exact: the product of the pivots
/// underflows, so it is taken again as a mantissa and a power of two, and the power
/// `2⁻¹⁰⁶⁴` is applied in steps (as one factor it would underflow to zero first).
#[test]
fn a_subnormal_determinant_is_exact() {
    let (d1, d2, d3) = (2f64.powi(-400), 2f64.powi(-400), 2f64.powi(-265));
    let r = random::randn::<f64>(1, 3, &mut random::rng(118));
    // The rows of an upper-triangular U, permuted; partial pivoting recovers U exactly.
    let u = array![
        [d1, r[(0, 0)], r[(0, 1)]],
        [0.0, d2, r[(0, 2)]],
        [0.0, 0.0, d3]
    ];
    let a = array![
        [0.0, 0.0, d3],
        [d1, r[(0, 0)], r[(0, 1)]],
        [0.0, d2, r[(0, 2)]]
    ];
    let want = 2f64.powi(-1000) * 2f64.powi(-65);
    assert!(want > 0.0 && !want.is_normal());
    // A's rows are U's in a cyclic order, an even permutation: det A = det U.
    for m in [u, a] {
        let det = Det.apply([m.view()]).unwrap().into_value()[(0, 0)];
        assert_eq!(det, want, "{m}");
        let y = SlogDet.forward(&[m.view()]).unwrap();
        assert_eq!(y[0][(0, 0)], 1.0, "{m}");
        let log = -1065.0 * 2f64.ln();
        assert!((y[1][(0, 0)] - log).abs() < 1e-15 * log.abs(), "{m}");
    }
}

/// A pivot residual that is not a row index in `1..=n` (zero, one past `n`, a fraction
/// inside the range, NaN) is a typed error naming it, in each rule that reads the
/// pivots back, reverse and forward mode; the pivots as stored pass.
#[test]
fn pivots_that_are_not_row_indices_are_typed_errors() {
    let n = 4;
    let a = square(n, 121);
    let b = random::randn::<f64>(n, 2, &mut random::rng(122));
    let solve = LuSolve::new();
    let cases = [
        (&Det as &dyn Rule<f64>, vec![a.view()], 1),
        (&SlogDet, vec![a.view()], 2),
        (&solve, vec![a.view(), b.view()], 1),
    ];
    for (p, x, k) in cases {
        let y = p.forward(&x).unwrap();
        let cbars: Vec<_> = y.iter().take(k).map(|c| Some(c.view())).collect();
        let tangents: Vec<_> = x.iter().map(|v| Some(*v)).collect();
        let piv = y.len() - 1;
        let yv: Vec<ArrayView2<'_, f64>> = y.iter().map(|c| c.view()).collect();
        p.backward(&x, &yv, &cbars).unwrap();
        p.jvp(&x, &yv, &tangents).unwrap();
        for bad in [0.0, (n + 1) as f64, 1.5, f64::NAN] {
            let mut pivots = y[piv].clone();
            pivots[(n - 1, 0)] = bad;
            let mut yv = yv.clone();
            yv[piv] = pivots.view();
            for e in [
                p.backward(&x, &yv, &cbars).err(),
                p.jvp(&x, &yv, &tangents).err(),
            ] {
                assert!(
                    matches!(&e, Some(Error::InvalidArgument { msg, .. })
                        if msg.contains(&format!("pivot {} is {bad}", n - 1))),
                    "{} with pivot {bad}: {e:?}",
                    p.name()
                );
            }
        }
    }
}

#[test]
fn det_and_slogdet_reverse_read_only_the_residuals() {
    let a = unit_det(6, 91);
    for (p, k) in [(&Det as &dyn Rule<f64>, 1), (&SlogDet as &dyn Rule<f64>, 2)] {
        let saves = p.saves(&[true]);
        assert!(!saves.reads_input(0), "{}", p.name());
        assert!((0..k).all(|o| !saves.reads_output(o)), "{}", p.name());
        assert!(
            saves.reads_output(k) && saves.reads_output(k + 1),
            "{}",
            p.name()
        );
        let y = p.forward(&[a.view()]).unwrap();
        let yv: Vec<ArrayView2<'_, f64>> = y.iter().map(|c| c.view()).collect();
        let cbars: Vec<Option<ArrayView2<'_, f64>>> = (0..k).map(|_| Some(yv[0])).collect();
        let want = p.backward(&[a.view()], &yv, &cbars).unwrap();
        let nan = Array2::from_elem((6, 6), f64::NAN);
        let nan1 = array![[f64::NAN]];
        let mut masked = yv.clone();
        for o in masked.iter_mut().take(k) {
            *o = nan1.view();
        }
        let got = p.backward(&[nan.view()], &masked, &cbars).unwrap();
        assert_eq!(got, want, "{}", p.name());
    }
}

// ------------------------------------------------------------- views

#[test]
fn views_give_the_same_answers_as_contiguous_arrays() {
    let a = square(5, 101);
    let u = unit_det(5, 102);
    let b = random::randn::<f64>(5, 3, &mut random::rng(103));
    assert_same_on_views(&Inverse, &[&a], 104);
    assert_same_on_views(&Det, &[&u], 105);
    assert_same_on_views(&SlogDet, &[&a], 106);
    assert_same_on_views(&LuSolve::new(), &[&a, &b], 107);
    assert_same_on_views(&LuSolve::transposed(), &[&a, &b], 108);
    // The singular paths too.
    for (_, s) in rank_two().into_iter().take(2) {
        assert_same_on_views(&Det, &[&s], 109);
    }
}

#[test]
fn first_writes_into_nan_with_a_caller_workspace_match_backward() {
    let a = square(70, 111);
    let b = random::randn::<f64>(70, 4, &mut random::rng(112));
    let xbar = random::randn::<f64>(70, 4, &mut random::rng(113));
    let op = LuSolve::new();
    let out = op.apply([a.view(), b.view()]).unwrap();
    let [want_a, want_b] = out.backward(xbar.view()).unwrap();
    let need = Rule::<f64>::workspace(&op, &[Shape(70, 70), Shape(70, 4)]);
    assert_eq!(need, 70 * 70 + 70 * 4);
    let mut ws = vec![f64::NAN; need];
    let mut ga = Array2::from_elem((70, 70), f64::NAN);
    // B̄ in a column-major first write: getrs runs in the buffer itself.
    let mut gb = Array2::from_elem((4, 70), f64::NAN);
    out.backward_into(
        &[Some(xbar.view())],
        &mut [
            Grad::Write(ga.view_mut()),
            Grad::Write(gb.view_mut().reversed_axes()),
        ],
        Some(&mut ws),
    )
    .unwrap();
    assert_close(ga.view(), &want_a, 1e-13, "Ā");
    assert_close(gb.t(), &want_b, 1e-13, "B̄");
    let e = out
        .backward_into(
            &[Some(xbar.view())],
            &mut [Grad::Write(ga.view_mut()), Grad::Skip],
            Some(&mut ws[..10]),
        )
        .unwrap_err();
    assert!(matches!(e, Error::Workspace { .. }), "{e}");
}

/// An accumulating `B̄` into a column-major buffer, the layout getrs could run in, goes
/// through the workspace and adds: what the buffer held is kept.
#[test]
fn adding_into_a_column_major_buffer_keeps_what_it_held() {
    let (n, k) = (9, 4);
    let a = square(n, 114);
    let b = random::randn::<f64>(n, k, &mut random::rng(115));
    let xbar = random::randn::<f64>(n, k, &mut random::rng(116));
    let held = random::randn::<f64>(k, n, &mut random::rng(117));
    for op in [LuSolve::new(), LuSolve::transposed()] {
        let out = op.apply([a.view(), b.view()]).unwrap();
        let [_, want_b] = out.backward(xbar.view()).unwrap();
        let mut gb = held.clone();
        out.backward_into(
            &[Some(xbar.view())],
            &mut [Grad::Skip, Grad::Add(gb.view_mut().reversed_axes())],
            None,
        )
        .unwrap();
        let want = &held.t() + &want_b;
        assert_close(gb.t(), &want, 1e-13, "held + B̄");
    }
}

#[test]
fn large_orders_factor_on_a_thread_with_the_default_stack() {
    // OpenBLAS's threaded getrf overflows a 2 MiB thread stack from order 100 (f64) and
    // 200 (f32); the rules must not (see `matgrad::blas::lapack::GETRF_RECURSIVE_FROM`).
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(|| {
            for n in [100, 150, 260] {
                let a = well_conditioned(n, 120 + n as u64);
                let b = random::randn::<f64>(n, 3, &mut random::rng(121));
                let x = LuSolve::new().apply([a.view(), b.view()]).unwrap();
                assert_close(a.dot(x.value()).view(), &b, 1e-10, "A·X = B");
                let [abar, _] = x.backward(b.view()).unwrap();
                assert!(abar.iter().all(|v| v.is_finite()));
                let inv = Inverse.apply([a.view()]).unwrap().into_value();
                assert_close(a.dot(&inv).view(), &Array2::eye(n), 1e-10, "A·A⁻¹ = I");
                let [abar] = Det
                    .apply([a.view()])
                    .unwrap()
                    .backward(array![[1.0]].view())
                    .unwrap();
                assert!(abar.iter().all(|v| v.is_finite()));
                let a32 = a.mapv(|v| v as f32);
                let b32 = b.mapv(|v| v as f32);
                let x32 = LuSolve::transposed()
                    .apply([a32.view(), b32.view()])
                    .unwrap();
                let r = a32.t().dot(x32.value()) - &b32;
                assert!(r.iter().all(|v| v.abs() < 1e-3), "f32 Aᵀ·X = B");
                let s = SlogDet.apply([a32.view()]).unwrap();
                let [g] = s.backward(array![[1.0f32]].view()).unwrap();
                assert!(g.iter().all(|v| v.is_finite()));
            }
        })
        .unwrap()
        .join()
        .unwrap();
}
