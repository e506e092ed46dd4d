//! SymEig (both gradient conventions), Svd and the three norms (Giles 2008,
//! eigenvalues and eigenvectors, singular value decomposition): the rules pass the
//! checker in both precisions at 1×1, small, tall, wide and order ≥ 70 shapes; the
//! forward results are what they claim (reconstruction, orthonormality, order, closed
//! forms, cross-checks between the decompositions); repeated and zero eigen/singular
//! values follow the documented policy (exact with value-only cotangents, typed errors
//! when a cotangent or tangent acts inside a degenerate subspace); bad input is a typed
//! error; strided and transposed views agree with contiguous arrays.

mod support {
    pub mod views;
}

use matgrad::check::{assert_rule_precisions, check_precision, random, Checker};
use matgrad::ops::eigh::DEGENERACY;
use matgrad::prelude::*;
use ndarray::{array, Array1, Array2, ArrayView2, Axis};
use support::views::assert_same_on_views;

// ------------------------------------------------------------------ helpers

/// `m×k` with orthonormal columns (the `U` of a Gaussian matrix).
fn orthonormal(m: usize, k: usize, seed: u64) -> Array2<f64> {
    let mut rng = random::rng(seed);
    let g = random::randn::<f64>(m, k, &mut rng);
    Svd.apply([g.view()]).unwrap().outputs()[0].to_owned()
}

/// `m×k` with orthonormal columns close to a random signed partial permutation: each
/// column has one entry near ±1 and the others near 0.1 in size, in scattered rows.
///
/// Eigen- and singular vectors are signed so that their largest entry is positive; a
/// finite difference across a point where two entries of opposite signs tie in size
/// would see the sign jump. Dense random vectors of length 72 come within the
/// checker's step of such a tie in some column, and so do short ones in `f32`; vectors
/// with a dominant entry stay far from it ([`sign_margin`] asserts how far), while the
/// checker's directions are still dense.
fn near_permutation(m: usize, k: usize, seed: u64) -> Array2<f64> {
    let mut rng = random::rng(seed);
    let keys = random::randn::<f64>(m, 1, &mut rng);
    let mut rows: Vec<usize> = (0..m).collect();
    rows.sort_by(|&i, &j| keys[(i, 0)].total_cmp(&keys[(j, 0)]));
    let mut g = random::randn::<f64>(m, k, &mut rng) * 0.1;
    for (j, &r) in rows.iter().take(k).enumerate() {
        g[(r, j)] += if keys[(j, 0)] > 0.0 { 1.0 } else { -1.0 };
    }
    // The orthogonal polar factor, the orthonormal matrix nearest to g.
    let svd = Svd.apply([g.view()]).unwrap();
    svd.outputs()[0].dot(&svd.outputs()[2].t())
}

/// The smallest, over the columns, of the gap between the largest magnitude and the
/// largest magnitude of opposite sign: how far the sign rule is from a jump.
fn sign_margin(v: ArrayView2<'_, f64>) -> f64 {
    v.columns()
        .into_iter()
        .map(|c| {
            let top = c
                .iter()
                .fold(0.0f64, |m, &x| if x.abs() > m.abs() { x } else { m });
            let other = c
                .iter()
                .filter(|&&x| x * top < 0.0)
                .fold(0.0f64, |m, &x| m.max(x.abs()));
            top.abs() - other
        })
        .fold(f64::INFINITY, f64::min)
}

/// `Q diag(λ) Qᵀ` for a random orthogonal `Q`, dense or near a signed permutation.
fn with_spectrum_q(lam: &[f64], q: Array2<f64>) -> Array2<f64> {
    let a = q
        .dot(&Array2::from_diag(&Array1::from(lam.to_vec())))
        .dot(&q.t());
    // Exactly symmetric, as the checker's symmetric directions expect.
    (&a + &a.t()) / 2.0
}

/// `Q diag(λ) Qᵀ` for a dense random orthogonal `Q`.
fn with_spectrum(lam: &[f64], seed: u64) -> Array2<f64> {
    with_spectrum_q(lam, orthonormal(lam.len(), lam.len(), seed))
}

/// `Q diag(λ) Qᵀ` for an orthogonal `Q` near a signed permutation, whose eigenvectors
/// the finite differences of the checker can follow.
fn checkable_spectrum(lam: &[f64], seed: u64) -> Array2<f64> {
    let a = with_spectrum_q(lam, near_permutation(lam.len(), lam.len(), seed));
    let v = SymEig::new().apply([a.view()]).unwrap().outputs()[1].to_owned();
    assert!(sign_margin(v.view()) > 0.3, "{}", sign_margin(v.view()));
    a
}

/// `Q₁ diag(s) Q₂ᵀ`, `m×n`, for random orthonormal `Q₁` (`m×k`), `Q₂` (`n×k`).
fn with_singular_values(m: usize, n: usize, s: &[f64], seed: u64) -> Array2<f64> {
    let k = s.len();
    assert_eq!(k, m.min(n));
    let q1 = orthonormal(m, k, seed);
    let q2 = orthonormal(n, k, seed + 1);
    q1.dot(&Array2::from_diag(&Array1::from(s.to_vec())))
        .dot(&q2.t())
}

/// `Q₁ diag(s) Q₂ᵀ` with both factors near signed partial permutations.
fn checkable_singular_values(m: usize, n: usize, s: &[f64], seed: u64) -> Array2<f64> {
    let q1 = near_permutation(m, s.len(), seed);
    let q2 = near_permutation(n, s.len(), seed + 1);
    let a = q1
        .dot(&Array2::from_diag(&Array1::from(s.to_vec())))
        .dot(&q2.t());
    let u = Svd.apply([a.view()]).unwrap().outputs()[0].to_owned();
    assert!(sign_margin(u.view()) > 0.3, "{}", sign_margin(u.view()));
    a
}

/// `n` eigenvalues centred on 0, at least 0.5 apart.
fn spread(n: usize) -> Vec<f64> {
    (0..n)
        .map(|k| k as f64 - (n as f64 - 1.0) / 2.0 + 0.2 * (3.0 * k as f64).sin())
        .collect()
}

/// `k` singular values from `k` down to about 1, at least 0.5 apart.
fn spread_sv(k: usize) -> Vec<f64> {
    (0..k)
        .map(|i| (k - i) as f64 + 0.2 * (3.0 * i as f64).sin())
        .collect()
}

/// `a` with random numbers in its strict upper triangle, which the lower convention
/// does not read: a rule that read them would be caught.
fn noisy_upper(a: &Array2<f64>, seed: u64) -> Array2<f64> {
    let mut rng = random::rng(seed);
    let noise = random::randn::<f64>(a.nrows(), a.ncols(), &mut rng);
    Array2::from_shape_fn(
        a.dim(),
        |(i, j)| if j > i { noise[(i, j)] } else { a[(i, j)] },
    )
}

fn max_diff(a: ArrayView2<'_, f64>, b: ArrayView2<'_, f64>) -> f64 {
    assert_eq!(a.dim(), b.dim());
    a.iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
}

fn assert_close(a: ArrayView2<'_, f64>, b: ArrayView2<'_, f64>, tol: f64, what: &str) {
    let d = max_diff(a, b);
    assert!(
        d <= tol,
        "{what}: max difference {d:e} > {tol:e}\n{a}\nvs\n{b}"
    );
}

fn diag(v: ArrayView2<'_, f64>) -> Array2<f64> {
    Array2::from_diag(&v.column(0).to_owned())
}

/// [`assert_rule_precisions`] for order ≥ 70, with finer finite-difference steps: the
/// `f32` one always, the `f64` one when `step64` is given.
///
/// The default `f32` step (`1e-2` times the largest entry) moves the vectors of a
/// 72×72 decomposition by more than the gaps between their values (the perturbation
/// has norm `~1e-2·max|A|·2√n`, the gaps are `~max|A|/n`), so the `f32` finite
/// differences of `V` are not derivatives whatever the rule; `2e-4` is. The default
/// `f64` step leaves a Richardson truncation error of `~(1e-4·max|A|·‖U‖₂/gap)⁴`, which
/// for the singular vectors of a 75×72 matrix is `3e-8`, above the `1e-8` tolerance.
/// The tolerances, and the `f32`-against-`f64` comparison, are those of
/// `assert_rule_precisions`.
fn assert_precisions_at_large_order<P>(p: &P, a: &Array2<f64>, step64: Option<f64>)
where
    P: Primitive<f32> + Primitive<f64>,
{
    let checker = match step64 {
        Some(h) => Checker::new().step(h),
        None => Checker::new(),
    };
    checker.check(p, &[a.view()]).unwrap().assert_passed();
    let a32 = a.mapv(|x| x as f32);
    Checker::new()
        .step(2e-4)
        .check(p, &[a32.view()])
        .unwrap()
        .assert_passed();
    check_precision(p, &[a.view()]).unwrap().assert_passed();
}

fn conventions() -> [SymEig; 2] {
    [SymEig::new(), SymEig::new().convention(Convention::Lower)]
}

/// The input a convention is checked at: symmetric, or with noise above the diagonal.
fn input_for(p: &SymEig, a: &Array2<f64>, seed: u64) -> Array2<f64> {
    match p.convention {
        Convention::Symmetric => a.clone(),
        Convention::Lower => noisy_upper(a, seed),
    }
}

// ------------------------------------------------------------- the checker

#[test]
fn sym_eig_passes_the_checker_in_both_precisions() {
    for (seed, n) in [1usize, 2, 3, 6, 9].into_iter().enumerate() {
        let a = checkable_spectrum(&spread(n), 10 + seed as u64);
        for p in conventions() {
            let x = input_for(&p, &a, seed as u64);
            assert_rule_precisions(&p, &[x.view()]);
        }
    }
}

#[test]
fn sym_eig_passes_the_checker_at_order_72() {
    let a = checkable_spectrum(&spread(72), 72);
    for p in conventions() {
        assert_precisions_at_large_order(&p, &input_for(&p, &a, 7), None);
    }
}

#[test]
fn svd_passes_the_checker_in_both_precisions_square_tall_and_wide() {
    for (m, n) in [(1, 1), (1, 4), (4, 1), (5, 3), (3, 5), (4, 4), (2, 7)] {
        let a = checkable_singular_values(m, n, &spread_sv(m.min(n)), (10 * m + n) as u64);
        assert_rule_precisions(&Svd, &[a.view()]);
    }
}

#[test]
fn svd_passes_the_checker_at_order_above_70() {
    for (m, n) in [(75, 72), (70, 74), (72, 72)] {
        let a = checkable_singular_values(m, n, &spread_sv(m.min(n)), (m * n) as u64);
        assert_precisions_at_large_order(&Svd, &a, Some(2e-5));
    }
}

#[test]
fn norms_pass_the_checker_in_both_precisions() {
    // Singular values at least 0.5 apart and from 0: the nuclear norm's kink at σ = 0
    // and the spectral norm's at σ₁ = σ₂ are beyond the f32 finite-difference step.
    for (m, n) in [
        (1, 1),
        (1, 4),
        (4, 1),
        (5, 3),
        (3, 5),
        (4, 4),
        (75, 72),
        (70, 74),
    ] {
        let a = with_singular_values(m, n, &spread_sv(m.min(n)), (7 * m + n) as u64);
        assert_rule_precisions(&FrobeniusNorm, &[a.view()]);
        assert_rule_precisions(&NuclearNorm, &[a.view()]);
        assert_rule_precisions(&SpectralNorm, &[a.view()]);
    }
}

// ----------------------------------------------------------------- oracles

#[test]
fn sym_eig_reconstructs_a_with_orthonormal_ascending_eigenvectors() {
    let mut rng = random::rng(40);
    for n in [1, 4, 72] {
        let g = random::randn::<f64>(n, n, &mut rng);
        let a = (&g + &g.t()) / 2.0;
        for p in conventions() {
            let x = input_for(&p, &a, 41);
            let eig = p.apply([x.view()]).unwrap();
            let (lam, v) = (&eig.outputs()[0], &eig.outputs()[1]);
            let scale = a.iter().fold(1.0f64, |m, x| m.max(x.abs()));
            let tol = 1e-13 * n as f64 * scale;
            assert_close(
                v.dot(&diag(lam.view())).dot(&v.t()).view(),
                a.view(),
                tol,
                "VΛVᵀ = A",
            );
            assert_close(
                v.t().dot(v).view(),
                Array2::eye(n).view(),
                1e-13 * n as f64,
                "VᵀV = I",
            );
            assert!(
                lam.column(0).windows(2).into_iter().all(|w| w[0] <= w[1]),
                "ascending: {lam}"
            );
            for col in v.columns() {
                let big = col
                    .iter()
                    .fold(0.0f64, |m, &x| if x.abs() > m.abs() { x } else { m });
                assert!(
                    big > 0.0,
                    "the largest entry of each eigenvector is positive"
                );
            }
        }
    }
}

#[test]
fn sym_eig_of_a_2x2_matches_the_closed_form() {
    let (p, q, r) = (1.5f64, -0.7f64, 0.25f64);
    let a = array![[p, q], [q, r]];
    let mid = (p + r) / 2.0;
    let rad = (((p - r) / 2.0) * ((p - r) / 2.0) + q * q).sqrt();
    let eig = SymEig::new().apply([a.view()]).unwrap();
    let lam = &eig.outputs()[0];
    assert!((lam[(0, 0)] - (mid - rad)).abs() < 1e-15 * 4.0);
    assert!((lam[(1, 0)] - (mid + rad)).abs() < 1e-15 * 4.0);
    // And the eigenvalue-only gradients: ∂λ±/∂A = v±v±ᵀ.
    let v = &eig.outputs()[1];
    let e1 = array![[0.0], [1.0]];
    let abar = &eig.backward_all(&[Some(e1.view()), None]).unwrap()[0];
    let top = v.column(1).insert_axis(ndarray::Axis(1));
    assert_close(abar.view(), top.dot(&top.t()).view(), 1e-15 * 4.0, "∂λ₊/∂A");
}

#[test]
fn svd_reconstructs_a_with_orthonormal_factors_and_descending_values() {
    let mut rng = random::rng(50);
    for (m, n) in [(1, 1), (5, 3), (3, 5), (4, 4), (75, 72), (70, 74)] {
        let a = random::randn::<f64>(m, n, &mut rng);
        let svd = Svd.apply([a.view()]).unwrap();
        let (u, s, v) = (&svd.outputs()[0], &svd.outputs()[1], &svd.outputs()[2]);
        let k = m.min(n);
        assert_eq!((u.dim(), s.dim(), v.dim()), ((m, k), (k, 1), (n, k)));
        let tol = 1e-13 * (m + n) as f64;
        assert_close(
            u.dot(&diag(s.view())).dot(&v.t()).view(),
            a.view(),
            tol * 4.0,
            "USVᵀ = A",
        );
        assert_close(u.t().dot(u).view(), Array2::eye(k).view(), tol, "UᵀU = I");
        assert_close(v.t().dot(v).view(), Array2::eye(k).view(), tol, "VᵀV = I");
        assert!(
            s.column(0).windows(2).into_iter().all(|w| w[0] >= w[1]),
            "descending: {s}"
        );
        assert!(s.iter().all(|&x| x >= 0.0));
        // Cross-check: s² are the k largest eigenvalues of AᵀA, in reverse order.
        let ata = a.t().dot(&a);
        let lam = SymEig::new().apply([ata.view()]).unwrap().outputs()[0].to_owned();
        for i in 0..k {
            let l = lam[(n - 1 - i, 0)];
            assert!((s[(i, 0)] * s[(i, 0)] - l).abs() <= 1e-12 * (1.0 + lam[(n - 1, 0)]));
        }
    }
}

#[test]
fn norms_agree_with_their_definitions() {
    let mut rng = random::rng(60);
    for (m, n) in [(1, 1), (5, 3), (3, 5), (72, 72)] {
        let a = random::randn::<f64>(m, n, &mut rng);
        let s = Svd.apply([a.view()]).unwrap().outputs()[1].to_owned();
        let fro = FrobeniusNorm.apply([a.view()]).unwrap().into_value()[(0, 0)];
        let nuc = NuclearNorm.apply([a.view()]).unwrap().into_value()[(0, 0)];
        let spec = SpectralNorm.apply([a.view()]).unwrap().into_value()[(0, 0)];
        let naive = a.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((fro - naive).abs() <= 1e-14 * naive);
        assert!((fro - s.iter().map(|x| x * x).sum::<f64>().sqrt()).abs() <= 1e-13 * fro);
        assert!((nuc - s.sum()).abs() <= 1e-14 * nuc);
        assert_eq!(spec, s[(0, 0)]);
    }
    // The Frobenius norm neither overflows nor underflows where the norm does not.
    let big = array![[3e200, 4e200]];
    let tiny = array![[3e-200], [4e-200]];
    let f = |x: &Array2<f64>| FrobeniusNorm.apply([x.view()]).unwrap().into_value()[(0, 0)];
    assert!((f(&big) / 5e200 - 1.0).abs() < 1e-15);
    assert!((f(&tiny) / 5e-200 - 1.0).abs() < 1e-15);
}

// ------------------------------------------- repeated and zero eigenvalues

/// `diag(1, 1, 2)` rotated: a repeated eigenvalue, well separated from the third.
fn repeated() -> Array2<f64> {
    with_spectrum(&[1.0, 1.0, 2.0], 70)
}

/// Central difference of `f` at `a` along the symmetric direction `e`.
fn central(f: impl Fn(&Array2<f64>) -> f64, a: &Array2<f64>, e: &Array2<f64>, h: f64) -> f64 {
    (f(&(a + &(e * h))) - f(&(a - &(e * h)))) / (2.0 * h)
}

fn inner(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    (a * b).sum()
}

fn symmetric_direction(n: usize, seed: u64) -> Array2<f64> {
    let mut rng = random::rng(seed);
    let g = random::randn::<f64>(n, n, &mut rng);
    (&g + &g.t()) / 2.0
}

#[test]
fn eigenvalue_only_losses_are_exact_at_a_repeated_eigenvalue() {
    let a = repeated();
    let eig = SymEig::new().apply([a.view()]).unwrap();
    let lam = eig.outputs()[0].to_owned();
    assert!(
        (lam[(1, 0)] - lam[(0, 0)]).abs() < 1e-14,
        "the eigenvalue is repeated: {lam}"
    );
    let sum_l = |x: &Array2<f64>| SymEig::new().apply([x.view()]).unwrap().outputs()[0].sum();
    let sum_l2 = |x: &Array2<f64>| {
        let l = SymEig::new().apply([x.view()]).unwrap().outputs()[0].to_owned();
        l.iter().map(|v| v * v).sum::<f64>()
    };
    // Σλ: λ̄ = 1; Σλ²: λ̄ = 2λ, constant on the repeated pair.
    let ones = Array2::<f64>::ones((3, 1));
    let twice = &lam * 2.0;
    for (f, lbar, exact) in [
        (
            &sum_l as &dyn Fn(&Array2<f64>) -> f64,
            &ones,
            Array2::<f64>::eye(3),
        ),
        (&sum_l2, &twice, &a * 2.0),
    ] {
        let abar = eig
            .backward_all(&[Some(lbar.view()), None])
            .unwrap()
            .remove(0);
        assert_close(abar.view(), exact.view(), 1e-13, "the closed-form gradient");
        for seed in 0..3 {
            let e = symmetric_direction(3, 71 + seed);
            let fd = central(f, &a, &e, 1e-5);
            assert!(
                (inner(&abar, &e) - fd).abs() <= 1e-8 * (1.0 + fd.abs()),
                "⟨Ā, E⟩ = {} vs finite difference {fd}",
                inner(&abar, &e)
            );
        }
    }
    // The lower convention too: the same derivative in lower-triangle coordinates.
    let lower = SymEig::new().convention(Convention::Lower);
    let abar = lower
        .apply([a.view()])
        .unwrap()
        .backward_all(&[Some(ones.view()), None])
        .unwrap();
    assert_close(
        abar[0].view(),
        Array2::<f64>::eye(3).view(),
        1e-13,
        "lower: Σλ",
    );
}

#[test]
fn an_invariant_eigenvector_loss_at_a_repeated_eigenvalue_is_exact() {
    // L = tr(P B), P the projector onto the repeated pair's eigenspace: it does not see
    // rotations inside the eigenspace, so (VᵀV̄)ᵢⱼ = (VᵀV̄)ⱼᵢ on the pair and its gradient
    // is defined, and smooth, since the pair is 1 away from the third eigenvalue.
    let a = repeated();
    let b = symmetric_direction(3, 72);
    let loss = |x: &Array2<f64>| {
        let v = SymEig::new().apply([x.view()]).unwrap().outputs()[1].to_owned();
        let vs = v.slice(ndarray::s![.., ..2]);
        (vs.t().dot(&b).dot(&vs)).diag().sum()
    };
    let eig = SymEig::new().apply([a.view()]).unwrap();
    let v = eig.outputs()[1].to_owned();
    let mut vbar = b.dot(&v) * 2.0;
    vbar.column_mut(2).fill(0.0);
    let abar = eig
        .backward_all(&[None, Some(vbar.view())])
        .unwrap()
        .remove(0);
    for seed in 0..3 {
        let e = symmetric_direction(3, 73 + seed);
        let fd = central(loss, &a, &e, 1e-5);
        assert!(
            (inner(&abar, &e) - fd).abs() <= 1e-8 * (1.0 + fd.abs()),
            "⟨Ā, E⟩ = {} vs finite difference {fd}",
            inner(&abar, &e)
        );
    }
}

#[test]
fn an_eigenvector_loss_inside_a_repeated_eigenspace_is_a_typed_error() {
    let a = repeated();
    for p in conventions() {
        let eig = p.apply([a.view()]).unwrap();
        let mut rng = random::rng(74);
        let vbar = random::randn::<f64>(3, 3, &mut rng);
        let err = eig.backward_all(&[None, Some(vbar.view())]).unwrap_err();
        assert_eq!(
            err,
            Error::DegenerateEigenvalues {
                op: Rule::<f64>::name(&p),
                i: 0,
                j: 1
            },
            "{err}"
        );
        assert!(err.to_string().contains("values 0 and 1 coincide"), "{err}");
        // The forward mode: a tangent that splits the eigenspace has no derivative …
        let t = symmetric_direction(3, 75);
        let err = eig.jvp_all(&[Some(t.view())]).unwrap_err();
        assert!(
            matches!(err, Error::DegenerateEigenvalues { i: 0, j: 1, .. }),
            "{err}"
        );
        // … one that keeps it (Ȧ = A: P = VᵀAV = Λ) has one.
        let ydot = eig.jvp_all(&[Some(a.view())]).unwrap();
        assert_close(
            ydot[0].view(),
            eig.outputs()[0].view(),
            1e-13,
            "λ̇ for Ȧ = A",
        );
        assert!(
            ydot[1].iter().all(|x| x.abs() < 1e-12),
            "V̇ for Ȧ = A: {}",
            ydot[1]
        );
        // Nothing in either mode is inf or NaN: the outputs are errors, not numbers.
    }
    // Single precision follows the same policy with its own epsilon.
    let a32 = a.mapv(|x| x as f32);
    let eig = SymEig::new().apply([a32.view()]).unwrap();
    let vbar = Array2::<f32>::from_shape_fn((3, 3), |(i, j)| (i + 2 * j) as f32 - 2.0);
    let err = eig.backward_all(&[None, Some(vbar.view())]).unwrap_err();
    assert!(
        matches!(err, Error::DegenerateEigenvalues { i: 0, j: 1, .. }),
        "{err}"
    );
    assert_eq!(DEGENERACY, 1e3);

    // The tolerance is inclusive: a skew (VᵀV̄)₀₁ − (VᵀV̄)₁₀ of exactly
    // τ = DEGENERACY·ε·max|VᵀV̄| counts as zero, the next number up does not. At
    // A = diag(1, 1, 3) the eigenvectors are signed unit vectors, so V̄ = V·M gives
    // VᵀV̄ = M to the last bit.
    let d = Array2::from_diag(&ndarray::arr1(&[1.0f64, 1.0, 3.0]));
    let eig = SymEig::new().apply([d.view()]).unwrap();
    let v = eig.outputs()[1].to_owned();
    assert!(v.iter().all(|&x| x == 0.0 || x.abs() == 1.0), "{v}");
    let tau = DEGENERACY * f64::EPSILON;
    for (skew, ok) in [(tau, true), (tau * (1.0 + f64::EPSILON), false)] {
        let mut m = Array2::<f64>::zeros((3, 3));
        m[(2, 2)] = 1.0;
        m[(0, 1)] = skew;
        let vbar = v.dot(&m);
        let got = eig.backward_all(&[None, Some(vbar.view())]);
        match ok {
            true => assert!(got.unwrap()[0].iter().all(|&x| x == 0.0)),
            false => assert!(
                matches!(got, Err(Error::DegenerateEigenvalues { i: 0, j: 1, .. })),
                "{got:?}"
            ),
        }
    }
}

/// The forward mode at a repeated eigenvalue needs both conditions on `P = VᵀȦV`: a
/// tangent with `P₀₁ = 0` but `P₀₀ ≠ P₁₁` splits the eigenspace, one with `P₀₀ = P₁₁`
/// but `P₀₁ ≠ 0` rotates it, and each is an error on its own; with both met the
/// derivative exists. `Ȧ = VMVᵀ` makes `P = M` to rounding.
#[test]
fn a_forward_mode_tangent_must_neither_split_nor_rotate_a_repeated_eigenspace() {
    let a = repeated();
    for p in conventions() {
        let eig = p.apply([a.view()]).unwrap();
        let v = eig.outputs()[1].to_owned();
        let tangent = |m: Array2<f64>| {
            let t = v.dot(&m).dot(&v.t());
            (&t + &t.t()) / 2.0
        };
        let split = array![[0.7, 0.0, 0.3], [0.0, 1.9, -0.6], [0.3, -0.6, 0.4]];
        let rotate = array![[1.3, 0.8, 0.3], [0.8, 1.3, -0.6], [0.3, -0.6, 0.4]];
        let keep = array![[1.3, 0.0, 0.3], [0.0, 1.3, -0.6], [0.3, -0.6, 0.4]];
        for (name, m) in [("split", split), ("rotate", rotate)] {
            let got = eig.jvp_all(&[Some(tangent(m).view())]);
            assert!(
                matches!(got, Err(Error::DegenerateEigenvalues { i: 0, j: 1, .. })),
                "{name}: {got:?}"
            );
        }
        let ydot = eig.jvp_all(&[Some(tangent(keep).view())]).unwrap();
        assert_close(
            ydot[0].view(),
            array![[1.3], [1.3], [0.4]].view(),
            1e-13,
            "λ̇ for a tangent that keeps the eigenspace",
        );
    }
}

/// The forward mode's tolerance for a degenerate pair is `τ = DEGENERACY·ε·max|P|`, and
/// inclusive: `P₀₁` or `P₁₁ − P₀₀` of exactly `τ` counts as zero, the next number up does
/// not. Here `max|P| = P₂₂ = 4`, so that a tolerance not scaled by it, or divided by it,
/// moves the boundary. At `A = diag(1, 1, 3)` the eigenvectors are signed unit vectors,
/// so `Ȧ = VMVᵀ` gives `P = M` to the last bit.
#[test]
fn the_forward_mode_degeneracy_tolerance_is_inclusive_and_relative_to_the_tangent() {
    let d = Array2::from_diag(&ndarray::arr1(&[1.0f64, 1.0, 3.0]));
    let eig = SymEig::new().apply([d.view()]).unwrap();
    let v = eig.outputs()[1].to_owned();
    assert!(v.iter().all(|&x| x == 0.0 || x.abs() == 1.0), "{v}");
    let tau = DEGENERACY * f64::EPSILON * 4.0;
    let tangent = |off: f64, diag: f64| {
        let m = array![[1.0, off, 0.0], [off, diag, 0.0], [0.0, 0.0, 4.0]];
        v.dot(&m).dot(&v.t())
    };
    let up = |x: f64| f64::from_bits(x.to_bits() + 1);
    let cases = [
        ("P₀₁ = τ", tangent(tau, 1.0), true),
        ("P₀₁ above τ", tangent(up(tau), 1.0), false),
        ("P₁₁ − P₀₀ = τ", tangent(0.0, 1.0 + tau), true),
        ("P₁₁ − P₀₀ above τ", tangent(0.0, up(1.0 + tau)), false),
    ];
    for (name, t, ok) in cases {
        let got = eig.jvp_all(&[Some(t.view())]);
        match ok {
            true => assert!(got.is_ok(), "{name}: {got:?}"),
            false => assert!(
                matches!(got, Err(Error::DegenerateEigenvalues { i: 0, j: 1, .. })),
                "{name}: {got:?}"
            ),
        }
    }
}

/// The pair an error names is the first offending one in row order, `(i, j)` with
/// `i < j`, even when the rule goes through the pairs by blocks: here the cluster
/// `λ₀ = … = λ₁₀₀` spans two blocks, and the cotangent `V̄ = V(E₀,₁₀₀ + E₁,₂)` rotates
/// it in the pairs (0, 100) and (1, 2) only.
#[test]
fn a_degenerate_error_names_the_first_offending_pair_in_row_order() {
    let n = 130;
    let lam: Vec<f64> = (0..n)
        .map(|i| {
            if i <= 100 {
                1.0
            } else {
                1.0 + (i - 100) as f64
            }
        })
        .collect();
    let a = with_spectrum(&lam, 131);
    for p in conventions() {
        let eig = p.apply([a.view()]).unwrap();
        let v = eig.outputs()[1].to_owned();
        let mut k = Array2::<f64>::zeros((n, n));
        k[(0, 100)] = 1.0;
        k[(1, 2)] = 1.0;
        let vbar = v.dot(&k);
        let err = eig.backward_all(&[None, Some(vbar.view())]).unwrap_err();
        assert!(
            matches!(err, Error::DegenerateEigenvalues { i: 0, j: 100, .. }),
            "{err}"
        );
    }
}

#[test]
fn repeated_and_zero_singular_values_follow_the_same_policy() {
    let mut rng = random::rng(80);
    // Repeated: s = (2, 2, 1), tall.
    let a = with_singular_values(5, 3, &[2.0, 2.0, 1.0], 81);
    let svd = Svd.apply([a.view()]).unwrap();
    let ones = Array2::<f64>::ones((3, 1));
    let [u, _, v] = [0, 1, 2].map(|k| svd.outputs()[k].to_owned());
    let abar = svd
        .backward_all(&[None, Some(ones.view()), None])
        .unwrap()
        .remove(0);
    assert_close(abar.view(), u.dot(&v.t()).view(), 1e-13, "Σs: Ā = UVᵀ");
    let ubar = random::randn::<f64>(5, 3, &mut rng);
    let err = svd
        .backward_all(&[Some(ubar.view()), None, None])
        .unwrap_err();
    assert_eq!(
        err,
        Error::DegenerateEigenvalues {
            op: "Svd",
            i: 0,
            j: 1
        }
    );
    let t = random::randn::<f64>(5, 3, &mut rng);
    let err = svd.jvp_all(&[Some(t.view())]).unwrap_err();
    assert!(
        matches!(err, Error::DegenerateEigenvalues { i: 0, j: 1, .. }),
        "{err}"
    );
    // A tangent that keeps the pair together has a forward derivative: along Ȧ = A,
    // which scales every singular value, UᵀȦV = S has equal entries at (0, 0) and
    // (1, 1), and d/dt SVD((1 + t)A) is Ṡ = s, U̇ = 0, V̇ = 0.
    let [du, ds, dv] = <[Array2<f64>; 3]>::try_from(svd.jvp_all(&[Some(a.view())]).unwrap())
        .unwrap_or_else(|_| panic!("three tangents"));
    assert_close(ds.view(), svd.outputs()[1].view(), 1e-13, "Ṡ = s");
    // So does one outside U's range, where UᵀȦV is exactly 0 (nothing to measure a
    // split against): at A = diag(2, −2, 1) stacked on zeros, U's columns are unit
    // vectors, and Ȧ in the last two rows gives U̇ = ȦVS⁻¹, Ṡ = 0, V̇ = 0.
    let mut d = Array2::<f64>::zeros((5, 3));
    d[(0, 0)] = 2.0;
    d[(1, 1)] = -2.0;
    d[(2, 2)] = 1.0;
    let dsvd = Svd.apply([d.view()]).unwrap();
    let mut out = Array2::<f64>::zeros((5, 3));
    out.slice_mut(ndarray::s![3.., ..])
        .assign(&random::randn::<f64>(2, 3, &mut rng));
    let [ou, os, ov] = <[Array2<f64>; 3]>::try_from(dsvd.jvp_all(&[Some(out.view())]).unwrap())
        .unwrap_or_else(|_| panic!("three tangents"));
    let (v, sv) = (&dsvd.outputs()[2], &dsvd.outputs()[1]);
    let want = out.dot(v) / sv.t();
    assert_close(ou.view(), want.view(), 1e-14, "U̇ = ȦVS⁻¹ outside U's range");
    assert!(os.iter().chain(ov.iter()).all(|&x| x == 0.0), "{os} {ov}");
    // One that splits it, even with no off-diagonal part (UᵀȦV = diag(1, 0, 0)), is.
    let split = u
        .column(0)
        .insert_axis(Axis(1))
        .dot(&v.column(0).insert_axis(Axis(0)));
    let err = svd.jvp_all(&[Some(split.view())]).unwrap_err();
    assert!(
        matches!(err, Error::DegenerateEigenvalues { i: 0, j: 1, .. }),
        "{err}"
    );
    for (name, d) in [("U̇", du), ("V̇", dv)] {
        let worst = d.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        assert!(
            worst <= 1e-13,
            "{name} = 0 along Ȧ = A: largest entry {worst:e}"
        );
    }
    // And Σs matches finite differences there (the nuclear norm is smooth at full rank).
    let nuc = |x: &Array2<f64>| Svd.apply([x.view()]).unwrap().outputs()[1].sum();
    for seed in 0..2 {
        let mut r = random::rng(82 + seed);
        let e = random::randn::<f64>(5, 3, &mut r);
        let fd = central(nuc, &a, &e, 1e-5);
        assert!((inner(&abar, &e) - fd).abs() <= 1e-8 * (1.0 + fd.abs()));
    }

    // Zero: s = (2, 1, 0), tall: the term (I − UUᵀ)ŪS⁻¹Vᵀ needs 1/s₂.
    let a = with_singular_values(5, 3, &[2.0, 1.0, 0.0], 83);
    let svd = Svd.apply([a.view()]).unwrap();
    svd.backward_all(&[None, Some(ones.view()), None]).unwrap();
    let ubar = random::randn::<f64>(5, 3, &mut rng);
    let err = svd
        .backward_all(&[Some(ubar.view()), None, None])
        .unwrap_err();
    assert_eq!(
        err,
        Error::ZeroSingularValue {
            op: "Svd",
            index: 2
        }
    );
    assert!(
        err.to_string().contains("singular value 2 is zero"),
        "{err}"
    );
    // V̄ alone needs no 1/s₂ when A is tall (V is square): a finite gradient.
    let vbar = random::randn::<f64>(3, 3, &mut rng);
    let g = svd
        .backward_all(&[None, None, Some(vbar.view())])
        .unwrap()
        .remove(0);
    assert!(g.iter().all(|x| x.is_finite()));
    let t = random::randn::<f64>(5, 3, &mut rng);
    let err = svd.jvp_all(&[Some(t.view())]).unwrap_err();
    assert!(
        matches!(err, Error::ZeroSingularValue { index: 2, .. }),
        "{err}"
    );
    // Wide: the term US⁻¹V̄ᵀ(I − VVᵀ).
    let a = with_singular_values(3, 5, &[2.0, 1.0, 0.0], 84);
    let svd = Svd.apply([a.view()]).unwrap();
    let vbar = random::randn::<f64>(5, 3, &mut rng);
    let err = svd
        .backward_all(&[None, None, Some(vbar.view())])
        .unwrap_err();
    assert_eq!(
        err,
        Error::ZeroSingularValue {
            op: "Svd",
            index: 2
        }
    );
    // The zero matrix: every pair is degenerate, only s̄ goes through.
    let z = Array2::<f64>::zeros((3, 2));
    let svd = Svd.apply([z.view()]).unwrap();
    let g = svd
        .backward_all(&[None, Some(array![[1.0], [1.0]].view()), None])
        .unwrap();
    assert!(g[0].iter().all(|x| x.is_finite()));
    let ubar = random::randn::<f64>(3, 2, &mut rng);
    assert!(svd.backward_all(&[Some(ubar.view()), None, None]).is_err());
}

#[test]
fn norms_at_their_kinks_use_the_documented_subgradients() {
    let one = array![[1.0]];
    let z = Array2::<f64>::zeros((3, 4));
    let t = Array2::<f64>::from_shape_fn((3, 4), |(i, j)| (i + j) as f64 - 2.0);
    for g in [
        FrobeniusNorm
            .apply([z.view()])
            .unwrap()
            .backward(one.view())
            .unwrap(),
        NuclearNorm
            .apply([z.view()])
            .unwrap()
            .backward(one.view())
            .unwrap(),
        SpectralNorm
            .apply([z.view()])
            .unwrap()
            .backward(one.view())
            .unwrap(),
    ] {
        assert_eq!(
            g[0],
            Array2::<f64>::zeros((3, 4)),
            "zero subgradient at A = 0"
        );
    }
    assert_eq!(
        FrobeniusNorm
            .apply([z.view()])
            .unwrap()
            .jvp([t.view()])
            .unwrap()[(0, 0)],
        0.0
    );
    assert_eq!(
        SpectralNorm
            .apply([z.view()])
            .unwrap()
            .jvp([t.view()])
            .unwrap()[(0, 0)],
        0.0
    );

    // Nuclear norm at rank 2 (4×3): the minimum-norm subgradient U_rV_rᵀ, which is a
    // subgradient (⟨G, A⟩ = ‖A‖_*, ‖G‖₂ ≤ 1) with no component along the null spaces.
    let a = with_singular_values(4, 3, &[3.0, 1.5, 0.0], 90);
    let nuc = NuclearNorm.apply([a.view()]).unwrap();
    let [g] = nuc.backward(one.view()).unwrap();
    let c = nuc.value()[(0, 0)];
    assert!((inner(&g, &a) - c).abs() < 1e-12 && (c - 4.5).abs() < 1e-12);
    let gs = Svd.apply([g.view()]).unwrap().outputs()[1].to_owned();
    assert!((gs[(0, 0)] - 1.0).abs() < 1e-12 && (gs[(1, 0)] - 1.0).abs() < 1e-12);
    assert!(gs[(2, 0)].abs() < 1e-12, "rank 2: {gs}");

    // Spectral norm with σ₁ = σ₂: a typed error in both modes.
    let a = with_singular_values(4, 3, &[2.0, 2.0, 1.0], 91);
    let spec = SpectralNorm.apply([a.view()]).unwrap();
    assert!((spec.value()[(0, 0)] - 2.0).abs() < 1e-12);
    let err = spec.backward(one.view()).unwrap_err();
    assert_eq!(
        err,
        Error::DegenerateEigenvalues {
            op: "SpectralNorm",
            i: 0,
            j: 1
        }
    );
    let err = spec.jvp([t.t().slice(ndarray::s![.., ..3]).to_owned().view()]);
    assert!(
        matches!(err, Err(Error::DegenerateEigenvalues { i: 0, j: 1, .. })),
        "{err:?}"
    );
}

// ------------------------------------------------------------ typed errors

#[test]
fn bad_input_is_a_typed_error() {
    let mut a = symmetric_direction(3, 100);
    a[(0, 2)] = f64::NAN; // above the diagonal: not read
    let eig = SymEig::new().apply([a.view()]).unwrap();
    assert!(eig
        .outputs()
        .iter()
        .all(|o| o.iter().all(|x| x.is_finite())));
    a[(2, 0)] = f64::INFINITY;
    let err = SymEig::new().apply([a.view()]).err().unwrap();
    assert_eq!(
        err,
        Error::NonFinite {
            op: "SymEig(symmetric)",
            name: "A",
            row: 2,
            col: 0
        }
    );
    let err = Svd.apply([a.view()]).err().unwrap();
    assert_eq!(
        err,
        Error::NonFinite {
            op: "Svd",
            name: "A",
            row: 0,
            col: 2
        }
    );
    for r in [
        NuclearNorm.apply([a.view()]).err(),
        SpectralNorm.apply([a.view()]).err(),
        FrobeniusNorm.apply([a.view()]).err(),
    ] {
        assert!(
            matches!(r, Some(Error::NonFinite { row: 0, col: 2, .. })),
            "{r:?}"
        );
    }
    let wide = Array2::<f64>::zeros((2, 3));
    let err = SymEig::new()
        .convention(Convention::Lower)
        .apply([wide.view()])
        .err()
        .unwrap();
    assert_eq!(
        err,
        Error::NotSquare {
            op: "SymEig(lower)",
            name: "A",
            got: Shape(2, 3)
        }
    );
    assert!(err.to_string().contains("SymEig(lower)") && err.to_string().contains("2×3"));
    // A cotangent of the wrong shape names the output.
    let svd = Svd.apply([wide.view()]).unwrap();
    let bad = Array2::<f64>::zeros((3, 2));
    let err = svd
        .backward_all(&[Some(bad.view()), None, None])
        .unwrap_err();
    assert!(matches!(err, Error::WrongShape { of: "U", .. }), "{err}");
}

#[test]
fn empty_matrices_have_empty_decompositions() {
    let e = Array2::<f64>::zeros((0, 0));
    let eig = SymEig::new().apply([e.view()]).unwrap();
    assert_eq!(eig.outputs()[1].dim(), (0, 0));
    let e = Array2::<f64>::zeros((0, 3));
    let svd = Svd.apply([e.view()]).unwrap();
    assert_eq!(svd.outputs()[2].dim(), (3, 0));
    for e in [Array2::<f64>::zeros((0, 3)), Array2::<f64>::zeros((3, 0))] {
        let svd = Svd.apply([e.view()]).unwrap();
        let ybar: Vec<Array2<f64>> = svd.outputs().iter().map(|y| y.mapv(|_| 1.0)).collect();
        let g = svd
            .backward_all(&[
                Some(ybar[0].view()),
                Some(ybar[1].view()),
                Some(ybar[2].view()),
            ])
            .unwrap();
        assert_eq!(g[0].dim(), e.dim());
    }
    let [g] = SpectralNorm
        .apply([e.view()])
        .unwrap()
        .backward(array![[1.0]].view())
        .unwrap();
    assert_eq!(g.dim(), (0, 3));
}

// ------------------------------------------------------------------- views

#[test]
fn views_of_any_layout_give_the_same_results() {
    let a = with_spectrum(&spread(5), 110);
    for p in conventions() {
        assert_same_on_views(&p, &[&input_for(&p, &a, 111)], 112);
    }
    let mut rng = random::rng(113);
    for (m, n) in [(5, 3), (3, 5), (4, 4)] {
        let a = random::randn::<f64>(m, n, &mut rng);
        assert_same_on_views(&Svd, &[&a], 114);
        assert_same_on_views(&FrobeniusNorm, &[&a], 115);
        assert_same_on_views(&NuclearNorm, &[&a], 116);
        assert_same_on_views(&SpectralNorm, &[&a], 117);
    }
}
