//! The matrix exponential, the trace and matrix polynomials pass the checker in both
//! precisions and agree with independent oracles; the quadratic forms of Giles 2008
//! ("First quadratic form") and of the seed note are compositions of `MatMul`, checked
//! by hand against their closed forms and, wrapped as small rules, by the checker.

mod support {
    pub mod views;
}

use matgrad::check::{assert_rule_precisions, check_precision, random};
use matgrad::prelude::*;
use ndarray::{array, s, Array2, ArrayView2, ArrayViewMut2};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use support::views::assert_same_on_views;

// ---------------------------------------------------------------------------------
// Helpers

/// `‖A‖₁`, the largest column sum of magnitudes.
fn norm1(a: &Array2<f64>) -> f64 {
    a.columns()
        .into_iter()
        .map(|c| c.iter().map(|v| v.abs()).sum::<f64>())
        .fold(0.0, f64::max)
}

/// A Gaussian `n×n` matrix scaled to `‖A‖₁ = norm`.
fn scaled_randn(n: usize, norm: f64, seed: u64) -> Array2<f64> {
    let mut rng = random::rng(seed);
    let a = random::randn::<f64>(n, n, &mut rng);
    let k = norm / norm1(&a);
    a * k
}

/// Frobenius-relative difference `‖a − b‖/‖b‖`.
fn rel(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    let d = (a - b).mapv(|v| v * v).sum().sqrt();
    let nb = b.mapv(|v| v * v).sum().sqrt();
    if nb > 0.0 {
        d / nb
    } else {
        d
    }
}

fn eye(n: usize) -> Array2<f64> {
    Array2::eye(n)
}

fn expm(a: &Array2<f64>) -> Array2<f64> {
    Expm.apply([a.view()]).unwrap().into_value()
}

/// `L(A, E)`, the forward-mode rule of `Expm`.
fn frechet(a: &Array2<f64>, e: &Array2<f64>) -> Array2<f64> {
    Expm.apply([a.view()]).unwrap().jvp([e.view()]).unwrap()
}

/// `Σₖ₌₀²⁹ Aᵏ/k!`, the Taylor sum.
fn taylor_exp(a: &Array2<f64>) -> Array2<f64> {
    let n = a.nrows();
    let mut term = eye(n);
    let mut sum = eye(n);
    for k in 1..30 {
        term = term.dot(a) / k as f64;
        sum += &term;
    }
    sum
}

// ---------------------------------------------------------------------------------
// Expm: the checker

const SIZES: [usize; 4] = [1, 3, 8, 70];

/// The whole check (`f64`, `f32`, `f32` against `f64`) with the default tolerances at
/// every size and at `‖A‖₁ = 0.1, 1, 10, 50`. No tolerance had to be loosened for the
/// large norms: measured worst cases over this grid (printed with `--nocapture`) are
/// `f64` finite differences `5·10⁻¹⁰` (tolerance `10⁻⁸`, at `n = 1`, `a = ±50`, where
/// the step `10⁻⁴·50` makes the `h⁴` term of the extrapolated difference dominate),
/// the `f64` adjoint identity `5·10⁻¹⁶` (`10⁻¹¹`), the `f32` one `2·10⁻⁷` (`10⁻⁴`), `f32` finite differences `3·10⁻³`
/// (`2·10⁻²`, again `n = 1`: the `f32` step is `10⁻²·|a|`), and `f32` against `f64`
/// `2·10⁻⁵` (`10⁻³`). The reverse and forward rules scale by `2⁻ˢ` from `‖A‖₁` alone,
/// so their accuracy does not depend on `‖C̄‖` or `‖Ȧ‖`.
#[test]
fn expm_passes_the_checker_in_both_precisions_at_norms_up_to_50() {
    for (i, &n) in SIZES.iter().enumerate() {
        for (j, &norm) in [0.1, 1.0, 10.0, 50.0].iter().enumerate() {
            let a = scaled_randn(n, norm, 100 + 10 * i as u64 + j as u64);
            assert_rule_precisions(&Expm, &[a.view()]);
            let p = check_precision(&Expm, &[a.view()]).unwrap();
            println!("n = {n}, ‖A‖₁ = {norm}: {p}");
        }
    }
}

/// A large cotangent must not change the scaling (a block-matrix method that scales
/// `[[Aᵀ, C̄], [0, Aᵀ]]` by its norm would over-scale): `L` is linear in `C̄` to
/// rounding whatever its size.
#[test]
fn expm_reverse_rule_is_linear_in_a_huge_cotangent() {
    let a = scaled_randn(6, 10.0, 150);
    let mut rng = random::rng(151);
    let cbar = random::randn::<f64>(6, 6, &mut rng);
    let c = Expm.apply([a.view()]).unwrap();
    let [g1] = c.backward(cbar.view()).unwrap();
    let [g2] = c.backward((&cbar * 1e12).view()).unwrap();
    assert!(rel(&(g2 / 1e12), &g1) < 1e-15);
}

/// At `A = 709.5·I`, `e^A = e⁷⁰⁹·⁵I` is within a factor 1.4 of the largest `f64` and
/// `L(A, E) = e⁷⁰⁹·⁵E` exactly (`A` commutes with every `E`). The rule evaluates the
/// Fréchet derivative at the direction scaled to entries in `[½, 1)` (and scales back):
/// at `[2, 4)` the two halves `e⁷⁰⁹·⁵E/2` of its last squaring would overflow here. The
/// same through the reverse rule, `Ā = e⁷⁰⁹·⁵C̄`.
#[test]
fn expm_derivatives_near_the_overflow_threshold_are_finite_where_the_answer_is() {
    let a = eye(4) * 709.5;
    let mut rng = random::rng(152);
    let e = random::randn::<f64>(4, 4, &mut rng);
    // Largest entry 0.9: at [2, 4) it would be 3.6, and the last squaring's halves
    // e⁷⁰⁹·⁵·3.6/2 overflow.
    let e = &e * (0.9 / e.iter().fold(0.0f64, |m, v| m.max(v.abs())));
    // Compared as L(A, E)/e⁷⁰⁹·⁵ against E: the squares in `rel` would overflow.
    let big = 709.5f64.exp();
    let got = frechet(&a, &e);
    assert!(got.iter().all(|v| v.is_finite()), "{got}");
    assert!(rel(&(got / big), &e) < 1e-12);
    let c = Expm.apply([a.view()]).unwrap();
    let [g] = c.backward(e.view()).unwrap();
    assert!(g.iter().all(|v| v.is_finite()), "{g}");
    assert!(rel(&(g / big), &e) < 1e-12);
}

#[test]
fn expm_gives_the_same_results_on_strided_and_transposed_views() {
    for (k, &norm) in [0.5, 20.0].iter().enumerate() {
        let a = scaled_randn(5, norm, 300 + k as u64);
        assert_same_on_views(&Expm, &[&a], 7);
    }
}

// ---------------------------------------------------------------------------------
// Expm: oracles

#[test]
fn expm_matches_the_taylor_sum_at_small_norm() {
    for (k, &n) in [1usize, 2, 5, 12].iter().enumerate() {
        let a = scaled_randn(n, 0.1, 400 + k as u64);
        let e = rel(&expm(&a), &taylor_exp(&a));
        assert!(e < 1e-15, "n = {n}: relative error {e:e}");
    }
}

#[test]
fn expm_of_a_diagonal_matrix_is_the_exponential_of_its_entries() {
    // Norms up to 50: e⁵⁰ ≈ 5·10²¹ and e⁻⁵⁰ ≈ 2·10⁻²², each entry to a few ulps
    // times the number of squarings (s = 4 here).
    let d = [50.0, -50.0, 3.7, -0.2, 0.0, 12.5];
    let a = Array2::from_diag(&ndarray::arr1(&d));
    let c = expm(&a);
    for (i, &di) in d.iter().enumerate() {
        for j in 0..d.len() {
            if i == j {
                let e = (c[(i, i)] - di.exp()).abs() / di.exp();
                assert!(e < 1e-14, "exp({di}): relative error {e:e}");
            } else {
                assert_eq!(c[(i, j)], 0.0, "off-diagonal ({i}, {j})");
            }
        }
    }
    // Daleckiĭ–Kreĭn: L(D, E)ᵢⱼ = Eᵢⱼ (e^{dᵢ} − e^{dⱼ})/(dᵢ − dⱼ), Eᵢᵢe^{dᵢ} on the
    // diagonal. Accurate at ‖D‖ = 50: the reverse rule is the same code at Dᵀ = D.
    let mut rng = random::rng(401);
    let e = random::randn::<f64>(d.len(), d.len(), &mut rng);
    let l = frechet(&a, &e);
    for i in 0..d.len() {
        for j in 0..d.len() {
            let dd = if d[i] == d[j] {
                d[i].exp()
            } else {
                (d[i].exp() - d[j].exp()) / (d[i] - d[j])
            };
            let want = e[(i, j)] * dd;
            let err = (l[(i, j)] - want).abs() / want.abs().max(1e-300);
            assert!(err < 1e-13, "L[{i},{j}] = {} vs {want}", l[(i, j)]);
        }
    }
}

#[test]
fn expm_of_a_minus_a_is_the_inverse() {
    // exp(A)exp(−A) = I. The product's rounding error is u·‖e^A‖·‖e^{−A}‖ whatever
    // the algorithm, so the residual is measured against that scale.
    for (k, &(n, norm)) in [(3, 1.0), (8, 1.0), (8, 10.0), (30, 10.0), (8, 50.0)]
        .iter()
        .enumerate()
    {
        let a = scaled_randn(n, norm, 500 + k as u64);
        let (e, f) = (expm(&a), expm(&(-&a)));
        let resid = norm1(&(e.dot(&f) - eye(n)));
        let scale = norm1(&e) * norm1(&f) * f64::EPSILON;
        println!(
            "n = {n}, ‖A‖₁ = {norm}: ‖e^A e^-A − I‖₁ = {resid:.1e} = {:.1} u‖e^A‖‖e^-A‖",
            resid / scale
        );
        assert!(resid <= 100.0 * scale, "n = {n}, ‖A‖₁ = {norm}: {resid:e}");
    }
}

#[test]
fn expm_of_a_rotation_generator_and_of_a_jordan_block_at_large_norms() {
    // A normal matrix with ‖A‖₁ = 50: exp is the rotation by 50 radians.
    let t = 50.0f64;
    let c = expm(&array![[0.0, t], [-t, 0.0]]);
    let want = array![[t.cos(), t.sin()], [-t.sin(), t.cos()]];
    assert!(rel(&c, &want) < 1e-13, "{c} vs {want}");
    // A non-normal one: λI + N with N = 10·(ones on the superdiagonal), 4×4,
    // exp = e^λ Σₖ Nᵏ/k! exactly (N⁴ = 0).
    let (lam, nu) = (-10.0f64, 10.0f64);
    let mut nil = Array2::<f64>::zeros((4, 4));
    for i in 0..3 {
        nil[(i, i + 1)] = nu;
    }
    let a = &nil + &(eye(4) * lam);
    let mut want = eye(4);
    let mut term = eye(4);
    for k in 1..4 {
        term = term.dot(&nil) / k as f64;
        want += &term;
    }
    want *= lam.exp();
    let e = rel(&expm(&a), &want);
    assert!(e < 1e-13, "Jordan block: relative error {e:e}");
}

#[test]
fn frechet_derivative_matches_the_block_triangular_identity_and_commuting_directions() {
    // exp([[A, E], [0, A]]) = [[e^A, L(A, E)], [0, e^A]], computed by the forward pass
    // on the 2n×2n matrix: an independent route to L at ‖A‖₁ = 10 and 50.
    for (k, &(n, norm)) in [(3, 1.0), (6, 10.0), (6, 50.0), (20, 10.0)]
        .iter()
        .enumerate()
    {
        let a = scaled_randn(n, norm, 600 + k as u64);
        let mut rng = random::rng(610 + k as u64);
        let e = random::randn::<f64>(n, n, &mut rng);
        let mut big = Array2::<f64>::zeros((2 * n, 2 * n));
        big.slice_mut(s![..n, ..n]).assign(&a);
        big.slice_mut(s![n.., n..]).assign(&a);
        big.slice_mut(s![..n, n..]).assign(&e);
        let block = expm(&big).slice(s![..n, n..]).to_owned();
        let l = frechet(&a, &e);
        let err = rel(&l, &block);
        println!("n = {n}, ‖A‖₁ = {norm}: L vs block identity {err:.1e}");
        assert!(err < 1e-11, "n = {n}, ‖A‖₁ = {norm}: {err:e}");
        // The reverse rule is L(Aᵀ, ·): the same identity on Aᵀ.
        let [abar] = Expm.apply([a.view()]).unwrap().backward(e.view()).unwrap();
        let mut bigt = Array2::<f64>::zeros((2 * n, 2 * n));
        bigt.slice_mut(s![..n, ..n]).assign(&a.t());
        bigt.slice_mut(s![n.., n..]).assign(&a.t());
        bigt.slice_mut(s![..n, n..]).assign(&e);
        let blockt = expm(&bigt).slice(s![..n, n..]).to_owned();
        assert!(
            rel(&abar, &blockt) < 1e-11,
            "reverse, n = {n}, ‖A‖₁ = {norm}"
        );
        // E = A commutes with A: L(A, A) = Ae^A.
        let la = frechet(&a, &a);
        let want = a.dot(&expm(&a));
        assert!(rel(&la, &want) < 1e-12, "L(A, A), n = {n}, ‖A‖₁ = {norm}");
    }
}

#[test]
fn expm_errors_are_typed() {
    let mut a = scaled_randn(3, 1.0, 700);
    a[(1, 2)] = f64::NAN;
    match Expm.apply([a.view()]) {
        Err(Error::NonFinite {
            op: "Expm",
            name: "A",
            row: 1,
            col: 2,
        }) => {}
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("NaN accepted"),
    }
    a[(1, 2)] = f64::INFINITY;
    assert!(matches!(
        Expm.apply([a.view()]),
        Err(Error::NonFinite { op: "Expm", .. })
    ));
    // The reverse and forward rules check their saved input too.
    let good = scaled_randn(3, 1.0, 701);
    let y = Primitive::<f64>::forward(&Expm, &[good.view()]).unwrap();
    let cbar = Array2::<f64>::ones((3, 3));
    let bad = Primitive::<f64>::backward(&Expm, &[a.view()], &[y[0].view()], &[Some(cbar.view())]);
    assert!(matches!(bad, Err(Error::NonFinite { .. })), "{bad:?}");
    let bad = Primitive::<f64>::jvp(&Expm, &[a.view()], &[y[0].view()], &[Some(cbar.view())]);
    assert!(matches!(bad, Err(Error::NonFinite { .. })), "{bad:?}");
    // Not square.
    let r = random::randn::<f64>(2, 3, &mut random::rng(702));
    match Expm.apply([r.view()]) {
        Err(e @ Error::NotSquare { op: "Expm", .. }) => {
            assert_eq!(e.to_string(), "Expm: A must be square, got 2×3")
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("2×3 accepted"),
    }
    // exp(800) overflows f64: a typed error, not infinity.
    let huge = array![[800.0]];
    assert!(matches!(
        Expm.apply([huge.view()]),
        Err(Error::InvalidArgument { op: "Expm", .. })
    ));
    // ... but exp(−800 I) = 0 and exp(100) in f64 are finite and returned.
    let tiny = expm(&(eye(3) * -800.0));
    assert!(tiny.iter().all(|&v| v == 0.0));
    let e100 = expm(&array![[100.0]]);
    assert!((e100[(0, 0)] / 100f64.exp() - 1.0).abs() < 1e-13);
    // exp(100) overflows f32.
    let e32 = array![[100.0f32]];
    assert!(matches!(
        Expm.apply([e32.view()]),
        Err(Error::InvalidArgument { .. })
    ));
    // The empty matrix.
    let empty = Array2::<f64>::zeros((0, 0));
    assert_eq!(expm(&empty).dim(), (0, 0));
}

// ---------------------------------------------------------------------------------
// Trace

#[test]
fn trace_passes_the_checker_and_its_rules_are_the_identity() {
    let mut rng = random::rng(800);
    for n in [1usize, 4, 9] {
        let a = random::randn::<f64>(n, n, &mut rng);
        assert_rule_precisions(&Trace, &[a.view()]);
        let c = Trace.apply([a.view()]).unwrap();
        assert!((c.value()[(0, 0)] - a.diag().sum()).abs() < 1e-14);
        let [abar] = c.backward(array![[-1.5]].view()).unwrap();
        assert_eq!(abar, eye(n) * -1.5);
        let adot = random::randn::<f64>(n, n, &mut rng);
        assert_eq!(c.jvp([adot.view()]).unwrap()[(0, 0)], adot.diag().sum());
    }
    let r = random::randn::<f64>(3, 2, &mut rng);
    assert!(matches!(
        Trace.apply([r.view()]),
        Err(Error::NotSquare { op: "Trace", .. })
    ));
    assert_same_on_views(&Trace, &[&random::randn::<f64>(4, 4, &mut rng)], 3);
}

#[test]
fn the_gradient_of_the_trace_of_expm_is_expm_transposed() {
    // d tr exp(A) = tr(e^A dA), so chained by hand the gradient of tr exp(A) is
    // exp(A)ᵀ.
    let a = scaled_randn(5, 3.0, 801);
    let e = Expm.apply([a.view()]).unwrap();
    let t = Trace.apply([e.value()]).unwrap();
    let [ebar] = t.backward(array![[1.0]].view()).unwrap();
    let [abar] = e.backward(ebar.view()).unwrap();
    assert!(rel(&abar, &e.value().t().to_owned()) < 1e-13);
}

// ---------------------------------------------------------------------------------
// MatPoly

fn powers_poly(coeffs: &[f64], a: &Array2<f64>) -> Array2<f64> {
    let n = a.nrows();
    let mut sum = Array2::<f64>::zeros((n, n));
    let mut pw = eye(n);
    for &c in coeffs {
        sum += &(&pw * c);
        pw = pw.dot(a);
    }
    sum
}

#[test]
fn matpoly_passes_the_checker_at_degrees_0_1_and_4_and_the_others() {
    let cases: [&[f64]; 6] = [
        &[1.7],
        &[0.5, -2.0],
        &[0.3, -1.1, 0.7, 2.0, -0.45],
        &[1.0, 0.5, -0.25],
        &[-0.2, 1.3, 0.0, 0.9],
        &[
            1.0,
            1.0,
            0.5,
            1.0 / 6.0,
            1.0 / 24.0,
            1.0 / 120.0,
            1.0 / 720.0,
        ],
    ];
    for (k, c) in cases.iter().enumerate() {
        let p = MatPoly::new(*c);
        for (j, &n) in [1usize, 4, 9].iter().enumerate() {
            let a = scaled_randn(n, 1.5, 900 + 10 * k as u64 + j as u64);
            assert_rule_precisions(&p, &[a.view()]);
        }
        assert_same_on_views(&p, &[&scaled_randn(5, 1.5, 950 + k as u64)], 5);
    }
    // The empty list is the zero polynomial.
    let a = scaled_randn(3, 1.0, 960);
    assert_rule_precisions(&MatPoly::new([]), &[a.view()]);
    assert_eq!(
        (&MatPoly::default())
            .apply([a.view()])
            .unwrap()
            .into_value(),
        Array2::<f64>::zeros((3, 3))
    );
}

#[test]
fn matpoly_matches_explicit_powers_and_its_rules_their_closed_forms() {
    let c = [0.3, -1.1, 0.7, 2.0, -0.45];
    let p = MatPoly::new(c);
    let a = scaled_randn(6, 2.0, 970);
    let out = (&p).apply([a.view()]).unwrap();
    assert!(rel(&out.value().to_owned(), &powers_poly(&c, &a)) < 1e-14);
    // Ċ = Σₖ cₖ Σ_{i+j=k−1} AⁱȦAʲ; Ā = Σₖ cₖ Σ_{i+j=k−1} (Aᵀ)ⁱC̄(Aᵀ)ʲ.
    let mut rng = random::rng(971);
    let adot = random::randn::<f64>(6, 6, &mut rng);
    let cbar = random::randn::<f64>(6, 6, &mut rng);
    let (mut jvp, mut vjp) = (Array2::<f64>::zeros((6, 6)), Array2::<f64>::zeros((6, 6)));
    let pw: Vec<Array2<f64>> = (0..c.len())
        .scan(eye(6), |m, _| {
            let cur = m.clone();
            *m = m.dot(&a);
            Some(cur)
        })
        .collect();
    for (k, &ck) in c.iter().enumerate().skip(1) {
        for i in 0..k {
            let j = k - 1 - i;
            jvp += &(pw[i].dot(&adot).dot(&pw[j]) * ck);
            vjp += &(pw[i].t().dot(&cbar).dot(&pw[j].t()) * ck);
        }
    }
    assert!(rel(&out.jvp([adot.view()]).unwrap(), &jvp) < 1e-13);
    let [abar] = out.backward(cbar.view()).unwrap();
    assert!(rel(&abar, &vjp) < 1e-13);
    // The degree-6 Taylor polynomial of exp agrees with Expm at small norm.
    let taylor: Vec<f64> = (0..=12)
        .scan(1.0, |f, k| {
            let v = 1.0 / *f;
            *f *= (k + 1) as f64;
            Some(v)
        })
        .collect();
    let small = scaled_randn(5, 0.05, 972);
    let tp = MatPoly::new(taylor);
    let tp = (&tp).apply([small.view()]).unwrap();
    assert!(rel(&tp.value().to_owned(), &expm(&small)) < 1e-15);
    // Not square.
    assert!(matches!(
        (&p).apply([random::randn::<f64>(2, 3, &mut rng).view()]),
        Err(Error::NotSquare { op: "MatPoly", .. })
    ));
}

// ---------------------------------------------------------------------------------
// Quadratic forms as compositions of MatMul (docs/math.md, "Quadratic forms")

/// `c = xᵀAy` as `t = xᵀA` (`MatMul::tn`), `c = ty` (`MatMul::nn`), so that the
/// checker can prove the chain; the rules are `MatMul`'s, called in sequence.
struct XtAy;

impl<T: Real> Rule<T> for XtAy {
    fn name(&self) -> &'static str {
        "xᵀAy by MatMul"
    }
    fn arity(&self) -> usize {
        3
    }
    fn input_name(&self, i: usize) -> &'static str {
        ["x", "A", "y"][i.min(2)]
    }
    fn shapes(&self, x: &[Shape]) -> Result<Shapes, Error> {
        let t = Rule::<T>::shapes(&MatMul::tn(), &x[..2])?;
        Rule::<T>::shapes(&MatMul::nn(), &[t[0], x[2]])
    }
    fn saves(&self, _wanted: &[bool]) -> Saves {
        Saves::NONE.input(0).input(1).input(2)
    }
    /// `t` and `t̄` (`1×n` each).
    fn workspace(&self, x: &[Shape]) -> usize {
        2 * x[1].1
    }
    fn eval(
        &self,
        x: &[ArrayView2<'_, T>],
        y: &mut [ArrayViewMut2<'_, T>],
        ws: &mut [T],
    ) -> Result<(), Error> {
        let n = x[1].ncols();
        let mut t = ArrayViewMut2::from_shape((1, n), &mut ws[..n]).unwrap();
        MatMul::tn().forward_into(&x[..2], &mut [t.view_mut()], None)?;
        MatMul::nn().forward_into(&[t.view(), x[2].view()], y, None)
    }
    fn pullback(
        &self,
        x: &[ArrayView2<'_, T>],
        y: &[ArrayView2<'_, T>],
        ybar: &Partials<'_, '_, T>,
        grads: &mut [Grad<'_, T>],
        ws: &mut [T],
    ) -> Result<(), Error> {
        let n = x[1].ncols();
        let (t, tbar) = ws.split_at_mut(n);
        let mut t = ArrayViewMut2::from_shape((1, n), t).unwrap();
        let mut tbar = ArrayViewMut2::from_shape((1, n), &mut tbar[..n]).unwrap();
        MatMul::tn().forward_into(&x[..2], &mut [t.view_mut()], None)?;
        // c = ty: t̄ = c̄yᵀ, ȳ = tᵀc̄.
        let (gx, rest) = grads.split_at_mut(1);
        let (ga, gy) = rest.split_at_mut(1);
        MatMul::nn().backward_into(
            &[t.view(), x[2].view()],
            y,
            &[ybar.get(0)],
            &mut [Grad::Write(tbar.view_mut()), reborrow(&mut gy[0])],
            None,
        )?;
        // t = xᵀA: x̄ = At̄ᵀ, Ā = xt̄.
        MatMul::tn().backward_into(
            &x[..2],
            &[t.view()],
            &[Some(tbar.view())],
            &mut [reborrow(&mut gx[0]), reborrow(&mut ga[0])],
            None,
        )
    }
    fn pushforward(
        &self,
        x: &[ArrayView2<'_, T>],
        y: &[ArrayView2<'_, T>],
        xdot: &Partials<'_, '_, T>,
        ydot: &mut [ArrayViewMut2<'_, T>],
        ws: &mut [T],
    ) -> Result<(), Error> {
        let n = x[1].ncols();
        let (t, tdot) = ws.split_at_mut(n);
        let mut t = ArrayViewMut2::from_shape((1, n), t).unwrap();
        let mut tdot = ArrayViewMut2::from_shape((1, n), &mut tdot[..n]).unwrap();
        MatMul::tn().forward_into(&x[..2], &mut [t.view_mut()], None)?;
        MatMul::tn().jvp_into(
            &x[..2],
            &[t.view()],
            &[xdot.get(0), xdot.get(1)],
            &mut [tdot.view_mut()],
            None,
        )?;
        MatMul::nn().jvp_into(
            &[t.view(), x[2].view()],
            y,
            &[Some(tdot.view()), xdot.get(2)],
            ydot,
            None,
        )
    }
}

/// The same kind of gradient, reborrowed for one inner call.
fn reborrow<'b, T>(g: &'b mut Grad<'_, T>) -> Grad<'b, T> {
    match g {
        Grad::Skip => Grad::Skip,
        Grad::Write(b) => Grad::Write(b.view_mut()),
        Grad::Add(b) => Grad::Add(b.view_mut()),
    }
}

/// After a first contribution, later ones add.
fn then_add<'b, T>(g: &'b mut Grad<'_, T>) -> Grad<'b, T> {
    match g {
        Grad::Skip => Grad::Skip,
        Grad::Write(b) | Grad::Add(b) => Grad::Add(b.view_mut()),
    }
}

/// `c = xᵀAx`: `XtAy` with `y = x`, the gradient of `x` summed over its two uses.
struct XtAx;

impl<T: Real> Rule<T> for XtAx {
    fn name(&self) -> &'static str {
        "xᵀAx by MatMul"
    }
    fn arity(&self) -> usize {
        2
    }
    fn input_name(&self, i: usize) -> &'static str {
        ["x", "A"][i.min(1)]
    }
    fn shapes(&self, x: &[Shape]) -> Result<Shapes, Error> {
        Rule::<T>::shapes(&XtAy, &[x[0], x[1], x[0]])
    }
    fn saves(&self, _wanted: &[bool]) -> Saves {
        Saves::NONE.input(0).input(1)
    }
    fn workspace(&self, x: &[Shape]) -> usize {
        Rule::<T>::workspace(&XtAy, &[x[0], x[1], x[0]])
    }
    fn eval(
        &self,
        x: &[ArrayView2<'_, T>],
        y: &mut [ArrayViewMut2<'_, T>],
        ws: &mut [T],
    ) -> Result<(), Error> {
        XtAy.eval(&[x[0].view(), x[1].view(), x[0].view()], y, ws)
    }
    fn pullback(
        &self,
        x: &[ArrayView2<'_, T>],
        y: &[ArrayView2<'_, T>],
        ybar: &Partials<'_, '_, T>,
        grads: &mut [Grad<'_, T>],
        ws: &mut [T],
    ) -> Result<(), Error> {
        // x̄ gets both contributions: the y-use first, in the caller's mode (write or
        // add), then the x-use, added.
        let (gx, ga) = grads.split_at_mut(1);
        let xs = [x[0].view(), x[1].view(), x[0].view()];
        // ȳ part: into x̄ with the caller's mode.
        XtAy.pullback(
            &xs,
            y,
            ybar,
            &mut [Grad::Skip, Grad::Skip, reborrow(&mut gx[0])],
            ws,
        )?;
        // x̄ and Ā parts: x̄ now adds.
        XtAy.pullback(
            &xs,
            y,
            ybar,
            &mut [then_add(&mut gx[0]), reborrow(&mut ga[0]), Grad::Skip],
            ws,
        )
    }
    fn pushforward(
        &self,
        x: &[ArrayView2<'_, T>],
        y: &[ArrayView2<'_, T>],
        xdot: &Partials<'_, '_, T>,
        ydot: &mut [ArrayViewMut2<'_, T>],
        ws: &mut [T],
    ) -> Result<(), Error> {
        let xs = [x[0].view(), x[1].view(), x[0].view()];
        let given = [xdot.get(0), xdot.get(1), xdot.get(0)];
        // Through the slice layer, which takes optional tangents.
        XtAy.jvp_into(&xs, y, &given, ydot, Some(ws))
    }
}

/// `C = BᵀAB` (Giles 2008, "First quadratic form") as `T = AB` (`MatMul::nn`),
/// `C = BᵀT` (`MatMul::tn`).
struct BtAB;

impl<T: Real> Rule<T> for BtAB {
    fn name(&self) -> &'static str {
        "BᵀAB by MatMul"
    }
    fn arity(&self) -> usize {
        2
    }
    fn shapes(&self, x: &[Shape]) -> Result<Shapes, Error> {
        let t = Rule::<T>::shapes(&MatMul::nn(), x)?;
        Rule::<T>::shapes(&MatMul::tn(), &[x[1], t[0]])
    }
    fn saves(&self, _wanted: &[bool]) -> Saves {
        Saves::NONE.input(0).input(1)
    }
    /// `T`, `T̄` (`n×k` each).
    fn workspace(&self, x: &[Shape]) -> usize {
        2 * x[0].0 * x[1].1
    }
    fn eval(
        &self,
        x: &[ArrayView2<'_, T>],
        y: &mut [ArrayViewMut2<'_, T>],
        ws: &mut [T],
    ) -> Result<(), Error> {
        let (n, k) = (x[0].nrows(), x[1].ncols());
        let mut t = ArrayViewMut2::from_shape((n, k), &mut ws[..n * k]).unwrap();
        MatMul::nn().forward_into(x, &mut [t.view_mut()], None)?;
        MatMul::tn().forward_into(&[x[1].view(), t.view()], y, None)
    }
    fn pullback(
        &self,
        x: &[ArrayView2<'_, T>],
        y: &[ArrayView2<'_, T>],
        ybar: &Partials<'_, '_, T>,
        grads: &mut [Grad<'_, T>],
        ws: &mut [T],
    ) -> Result<(), Error> {
        let (n, k) = (x[0].nrows(), x[1].ncols());
        let (t, tbar) = ws.split_at_mut(n * k);
        let mut t = ArrayViewMut2::from_shape((n, k), t).unwrap();
        let mut tbar = ArrayViewMut2::from_shape((n, k), &mut tbar[..n * k]).unwrap();
        MatMul::nn().forward_into(x, &mut [t.view_mut()], None)?;
        let (ga, gb) = grads.split_at_mut(1);
        // C = BᵀT: B̄ = TC̄ᵀ (first contribution), T̄ = BC̄.
        MatMul::tn().backward_into(
            &[x[1].view(), t.view()],
            y,
            &[ybar.get(0)],
            &mut [reborrow(&mut gb[0]), Grad::Write(tbar.view_mut())],
            None,
        )?;
        // T = AB: Ā = T̄Bᵀ, B̄ += AᵀT̄.
        MatMul::nn().backward_into(
            x,
            &[t.view()],
            &[Some(tbar.view())],
            &mut [reborrow(&mut ga[0]), then_add(&mut gb[0])],
            None,
        )
    }
    fn pushforward(
        &self,
        x: &[ArrayView2<'_, T>],
        y: &[ArrayView2<'_, T>],
        xdot: &Partials<'_, '_, T>,
        ydot: &mut [ArrayViewMut2<'_, T>],
        ws: &mut [T],
    ) -> Result<(), Error> {
        let (n, k) = (x[0].nrows(), x[1].ncols());
        let (t, tdot) = ws.split_at_mut(n * k);
        let mut t = ArrayViewMut2::from_shape((n, k), t).unwrap();
        let mut tdot = ArrayViewMut2::from_shape((n, k), &mut tdot[..n * k]).unwrap();
        MatMul::nn().forward_into(x, &mut [t.view_mut()], None)?;
        // Ṫ = ȦB + AḂ, Ċ = ḂᵀT + BᵀṪ.
        MatMul::nn().jvp_into(
            x,
            &[t.view()],
            &[xdot.get(0), xdot.get(1)],
            &mut [tdot.view_mut()],
            None,
        )?;
        MatMul::tn().jvp_into(
            &[x[1].view(), t.view()],
            y,
            &[xdot.get(1), Some(tdot.view())],
            ydot,
            None,
        )
    }
}

#[test]
fn quadratic_forms_as_matmul_compositions_pass_the_checker() {
    let mut rng = random::rng(1000);
    for (m, n) in [(1, 1), (4, 3), (2, 6)] {
        let x = random::randn::<f64>(m, 1, &mut rng);
        let a = random::randn::<f64>(m, n, &mut rng);
        let y = random::randn::<f64>(n, 1, &mut rng);
        assert_rule_precisions(&XtAy, &[x.view(), a.view(), y.view()]);
    }
    for n in [1, 3, 5] {
        let x = random::randn::<f64>(n, 1, &mut rng);
        let a = random::randn::<f64>(n, n, &mut rng);
        assert_rule_precisions(&XtAx, &[x.view(), a.view()]);
    }
    for (n, k) in [(1, 1), (4, 2), (3, 5)] {
        let a = random::randn::<f64>(n, n, &mut rng);
        let b = random::randn::<f64>(n, k, &mut rng);
        assert_rule_precisions(&BtAB, &[a.view(), b.view()]);
    }
}

#[test]
fn quadratic_forms_chained_by_hand_match_their_closed_forms() {
    let mut rng = random::rng(1001);
    // xᵀAy: x̄ = c̄Ay, Ā = c̄xyᵀ, ȳ = c̄Aᵀx; ċ = ẋᵀAy + xᵀȦy + xᵀAẏ.
    let x = random::randn::<f64>(4, 1, &mut rng);
    let a = random::randn::<f64>(4, 3, &mut rng);
    let y = random::randn::<f64>(3, 1, &mut rng);
    let cb = 0.7;
    let t = MatMul::tn().apply([x.view(), a.view()]).unwrap();
    let c = MatMul::nn()
        .apply([Arg::from(t.value()), Arg::from(&y)])
        .unwrap();
    let [tbar, ybar] = c.backward(array![[cb]].view()).unwrap();
    let [xbar, abar] = t.backward(tbar.view()).unwrap();
    assert!(rel(&xbar, &(a.dot(&y) * cb)) < 1e-15);
    assert!(rel(&abar, &(x.dot(&y.t()) * cb)) < 1e-15);
    assert!(rel(&ybar, &(a.t().dot(&x) * cb)) < 1e-15);
    let (xd, ad, yd) = (
        random::randn::<f64>(4, 1, &mut rng),
        random::randn::<f64>(4, 3, &mut rng),
        random::randn::<f64>(3, 1, &mut rng),
    );
    let td = t.jvp([xd.view(), ad.view()]).unwrap();
    let cd = c.jvp([td.view(), yd.view()]).unwrap()[(0, 0)];
    let want = xd.t().dot(&a).dot(&y)[(0, 0)]
        + x.t().dot(&ad).dot(&y)[(0, 0)]
        + x.t().dot(&a).dot(&yd)[(0, 0)];
    assert!((cd - want).abs() < 1e-13 * want.abs().max(1.0));
    // The wrapped rule gives the same.
    let w = XtAy.apply([x.view(), a.view(), y.view()]).unwrap();
    let [wx, wa, wy] = w.backward(array![[cb]].view()).unwrap();
    assert!(rel(&wx, &xbar) < 1e-15 && rel(&wa, &abar) < 1e-15 && rel(&wy, &ybar) < 1e-15);

    // xᵀAx: x̄ = c̄(A + Aᵀ)x, Ā = c̄xxᵀ; x's two uses summed, the first writes.
    let x = random::randn::<f64>(5, 1, &mut rng);
    let a = random::randn::<f64>(5, 5, &mut rng);
    let t = MatMul::tn().apply([x.view(), a.view()]).unwrap();
    let c = MatMul::nn()
        .apply([Arg::from(t.value()), Arg::from(&x)])
        .unwrap();
    let mut xbar = Array2::<f64>::from_elem((5, 1), f64::NAN);
    let mut abar = Array2::<f64>::from_elem((5, 5), f64::NAN);
    let mut tbar = Array2::<f64>::from_elem((1, 5), f64::NAN);
    c.backward_into(
        &[Some(array![[cb]].view())],
        &mut [Grad::Write(tbar.view_mut()), Grad::Write(xbar.view_mut())],
        None,
    )
    .unwrap();
    t.backward_into(
        &[Some(tbar.view())],
        &mut [Grad::Add(xbar.view_mut()), Grad::Write(abar.view_mut())],
        None,
    )
    .unwrap();
    assert!(rel(&xbar, &((&a + &a.t()).dot(&x) * cb)) < 1e-15);
    assert!(rel(&abar, &(x.dot(&x.t()) * cb)) < 1e-15);
    let w = XtAx.apply([x.view(), a.view()]).unwrap();
    let [wx, wa] = w.backward(array![[cb]].view()).unwrap();
    assert!(rel(&wx, &xbar) < 1e-15 && rel(&wa, &abar) < 1e-15);

    // BᵀAB: Ā = BC̄Bᵀ, B̄ = ABC̄ᵀ + AᵀBC̄; Ċ = ḂᵀAB + BᵀȦB + BᵀAḂ.
    let a = random::randn::<f64>(4, 4, &mut rng);
    let b = random::randn::<f64>(4, 3, &mut rng);
    let cbar = random::randn::<f64>(3, 3, &mut rng);
    let t = MatMul::nn().apply([a.view(), b.view()]).unwrap();
    let c = MatMul::tn()
        .apply([Arg::from(&b), Arg::from(t.value())])
        .unwrap();
    let [mut bbar, tbar] = c.backward(cbar.view()).unwrap();
    let [abar, _] = t.backward(tbar.view()).unwrap();
    t.backward_add(tbar.view(), &mut [None, Some(bbar.view_mut())])
        .unwrap();
    assert!(rel(&abar, &b.dot(&cbar).dot(&b.t())) < 1e-14);
    let want_b = a.dot(&b).dot(&cbar.t()) + a.t().dot(&b).dot(&cbar);
    assert!(rel(&bbar, &want_b) < 1e-14);
    let (adot, bdot) = (
        random::randn::<f64>(4, 4, &mut rng),
        random::randn::<f64>(4, 3, &mut rng),
    );
    let tdot = t.jvp([adot.view(), bdot.view()]).unwrap();
    let cdot = c.jvp([bdot.view(), tdot.view()]).unwrap();
    let want = bdot.t().dot(&a).dot(&b) + b.t().dot(&adot).dot(&b) + b.t().dot(&a).dot(&bdot);
    assert!(rel(&cdot, &want) < 1e-14);
    let w = BtAB.apply([a.view(), b.view()]).unwrap();
    let [wa, wb] = w.backward(cbar.view()).unwrap();
    assert!(rel(&wa, &abar) < 1e-15 && rel(&wb, &bbar) < 1e-15);
    // Symmetric A: Ā = BC̄Bᵀ and B̄ = AB(C̄ + C̄ᵀ).
    let s = &a + &a.t();
    let w = BtAB.apply([s.view(), b.view()]).unwrap();
    let [_, wb] = w.backward(cbar.view()).unwrap();
    assert!(rel(&wb, &s.dot(&b).dot(&(&cbar + &cbar.t()))) < 1e-14);
}

// ---------------------------------------------------------------------------------
// Steady state: caller buffers and workspace, no allocation

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.try_with(Cell::get).unwrap_or(false) {
            let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        }
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations(f: impl FnOnce()) -> usize {
    ALLOCATIONS.with(|c| c.set(0));
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.with(Cell::get)
}

/// Forward, reverse (first write and add) and forward mode into caller buffers with a
/// caller workspace, twice; the second round is counted.
fn steady_state<P: Primitive<f64>>(p: &P, a: &Array2<f64>) -> usize {
    let n = a.nrows();
    let x = [a.view()];
    let shapes = p.output_shapes(&x).unwrap();
    let mut ws = vec![0.0; p.workspace(&[Shape(n, n)])];
    let mut y = Array2::<f64>::zeros((shapes[0].0, shapes[0].1));
    let cbar = Array2::<f64>::ones(y.raw_dim());
    let mut g = Array2::<f64>::zeros((n, n));
    let mut ydot = y.clone();
    let mut round = |y: &mut Array2<f64>| {
        p.forward_into(&x, &mut [y.view_mut()], Some(&mut ws))
            .unwrap();
        for mode in [Accum::Replace, Accum::Add] {
            p.backward_into(
                &x,
                &[y.view()],
                &[Some(cbar.view())],
                &mut [Grad::new(g.view_mut(), mode)],
                Some(&mut ws),
            )
            .unwrap();
        }
        p.jvp_into(
            &x,
            &[y.view()],
            &[Some(a.view())],
            &mut [ydot.view_mut()],
            Some(&mut ws),
        )
        .unwrap();
    };
    round(&mut y);
    allocations(|| round(&mut y))
}

#[test]
fn repeated_calls_with_a_caller_workspace_allocate_nothing() {
    for (k, &norm) in [0.5, 30.0].iter().enumerate() {
        let a = scaled_randn(12, norm, 1100 + k as u64);
        assert_eq!(steady_state(&Expm, &a), 0, "Expm, ‖A‖₁ = {norm}");
    }
    let a = scaled_randn(12, 1.0, 1102);
    assert_eq!(steady_state(&Trace, &a), 0, "Trace");
    for c in [
        &[1.0][..],
        &[1.0, 2.0],
        &[0.5, -1.0, 2.0],
        &[1.0, 0.3, -0.2, 0.1, 0.05],
    ] {
        let p = MatPoly::new(c);
        assert_eq!(steady_state(&p, &a), 0, "MatPoly of degree {}", p.degree());
    }
}
