//! Elementwise functions and the Hadamard product: every rule passes the checker at
//! degenerate and non-square shapes in both precisions, the scalar functions agree
//! with the standard library, edge cases neither panic nor lose precision, bad
//! shapes are typed errors, and strided views agree with contiguous arrays.

mod support {
    pub mod views;
}

use matgrad::check::{random, Checker, Mistake};
use matgrad::prelude::*;
use ndarray::{array, Array2, ArrayView2};
use support::views::assert_same_on_views;

/// 1×1, a row, a column, wide and tall.
const SHAPES: [(usize, usize); 5] = [(1, 1), (1, 6), (6, 1), (3, 5), (4, 2)];

/// Richardson-extrapolated differences of smooth functions at step 1e-3 are accurate
/// to about 1e-12 here.
const TOL: f64 = 1e-9;

/// The checker's whole check in both precisions (`f64` at [`TOL`], `f32` at its
/// defaults, `f32` against `f64`): `assert_rule_precisions` at this file's tolerance.
/// Inputs this small must get the full Jacobian.
#[track_caller]
fn passes<P: Primitive<f32> + Primitive<f64>>(p: &P, inputs: &[ArrayView2<'_, f64>]) {
    let r = Checker::new().tol(TOL).assert_precisions(p, inputs);
    assert!(
        r.inputs.iter().all(|x| x.jacobian.is_some()),
        "small inputs run the full Jacobian"
    );
}

fn randn(m: usize, n: usize, seed: u64) -> Array2<f64> {
    random::randn(m, n, &mut random::rng(seed))
}

/// Gaussian entries pushed at least 0.25 away from zero, for the kink of Relu.
fn away_from_zero(m: usize, n: usize, seed: u64) -> Array2<f64> {
    randn(m, n, seed).mapv(|x| x.signum() * (x.abs() + 0.25))
}

fn positive(m: usize, n: usize, seed: u64) -> Array2<f64> {
    random::uniform(m, n, 0.5, 2.0, &mut random::rng(seed)).unwrap()
}

#[test]
fn every_function_and_hadamard_pass_the_checker() {
    for (i, &(m, n)) in SHAPES.iter().enumerate() {
        let s = 10 * i as u64;
        let a = randn(m, n, s);
        passes(&Map(Tanh), &[a.view()]);
        passes(&Map(Sigmoid), &[a.view()]);
        passes(&Map(Relu), &[away_from_zero(m, n, s + 1).view()]);
        passes(&Map(Exp), &[a.view()]);
        passes(&Map(Log), &[positive(m, n, s + 2).view()]);
        passes(&Map(Sin), &[a.view()]);
        passes(&Map(Cos), &[a.view()]);
        passes(&Map(Square), &[a.view()]);
        passes(&Hadamard, &[a.view(), randn(m, n, s + 3).view()]);
    }
}

#[test]
fn larger_inputs_pass_without_the_full_jacobian() {
    let a = randn(17, 23, 1);
    let b = randn(17, 23, 2);
    let check = |p: &dyn Primitive<f64>, x: &Array2<f64>| {
        Checker::new()
            .tol(TOL)
            .check(p, &[x.view()])
            .unwrap()
            .assert_passed();
    };
    check(&Map(Tanh), &a);
    check(&Map(Sigmoid), &a);
    check(&Map(Relu), &away_from_zero(17, 23, 3));
    check(&Map(Log), &positive(17, 23, 4));
    Checker::new()
        .tol(TOL)
        .check(&Hadamard, &[a.view(), b.view()])
        .unwrap()
        .assert_passed();
}

/// `g(x) = x³`, defined outside the crate.
struct Cube;
impl<T: Real> ElemFn<T> for Cube {
    fn name(&self) -> &'static str {
        "Cube"
    }
    fn reads(&self) -> Deriv {
        Deriv::Input
    }
    fn f(&self, x: T) -> T {
        x * x * x
    }
    fn df(&self, x: T, _y: T) -> T {
        T::of(3.0) * x * x
    }
}

/// A user function with the derivative's sign wrong.
struct BadCube;
impl<T: Real> ElemFn<T> for BadCube {
    fn name(&self) -> &'static str {
        "BadCube"
    }
    fn reads(&self) -> Deriv {
        Deriv::Input
    }
    fn f(&self, x: T) -> T {
        x * x * x
    }
    fn df(&self, x: T, _y: T) -> T {
        T::of(-3.0) * x * x
    }
}

#[test]
fn user_functions_get_the_same_rules_and_checks() {
    let a = randn(3, 5, 7);
    passes(&Map::new(Cube), &[a.view()]);
    let r = Checker::new().check(&Map(BadCube), &[a.view()]).unwrap();
    assert!(!r.passed());
    assert_eq!(r.mistake(0), Some(Mistake::SignFlipped), "{r}");
}

fn matches_std(p: &dyn Primitive<f64>, x: &Array2<f64>, f: fn(f64) -> f64) {
    let c = p.forward(&[x.view()]).unwrap().remove(0);
    for (got, want) in c.iter().zip(&x.mapv(f)) {
        assert!(
            (got - want).abs() <= 1e-15 * want.abs().max(1.0),
            "{}: {got} vs {want}",
            p.name()
        );
    }
}

#[test]
fn forward_matches_the_standard_library() {
    let a = randn(4, 3, 5);
    matches_std(&Map(Tanh), &a, f64::tanh);
    matches_std(&Map(Sigmoid), &a, |x| 1.0 / (1.0 + (-x).exp()));
    matches_std(&Map(Relu), &a, |x| x.max(0.0));
    matches_std(&Map(Exp), &a, f64::exp);
    matches_std(&Map(Log), &positive(4, 3, 6), f64::ln);
    matches_std(&Map(Sin), &a, f64::sin);
    matches_std(&Map(Cos), &a, f64::cos);
    matches_std(&Map(Square), &a, |x| x * x);
    let b = randn(4, 3, 8);
    assert_eq!(
        Hadamard.forward(&[a.view(), b.view()]).unwrap(),
        vec![&a * &b]
    );
}

#[test]
fn derivatives_reuse_the_output_where_it_is_cheaper() {
    // A deliberately inconsistent y shows which argument each derivative reads.
    let (x, y) = (0.3f64, 0.5f64);
    assert_eq!(ElemFn::<f64>::df(&Tanh, x, y), 1.0 - y * y);
    assert_eq!(ElemFn::<f64>::df(&Sigmoid, x, y), y * (1.0 - y));
    assert_eq!(ElemFn::<f64>::df(&Exp, x, y), y);
    assert_eq!(ElemFn::<f64>::df(&Log, x, y), 1.0 / x);
    assert_eq!(ElemFn::<f64>::df(&Square, x, y), 2.0 * x);
}

#[test]
fn sigmoid_is_stable_for_large_inputs() {
    let a: Array2<f64> = array![[-1000.0, -740.0, -40.0, 0.0, 40.0, 1000.0]];
    let c = Map(Sigmoid).apply([a.view()]).unwrap();
    assert!(
        c.value()
            .iter()
            .all(|y| y.is_finite() && (0.0..=1.0).contains(y)),
        "{}",
        c.value()
    );
    // e⁻⁷⁴⁰ is subnormal but not zero; computing e⁺⁷⁴⁰ first would overflow and give 0.
    assert!(c.value()[(0, 1)] > 0.0, "{}", c.value());
    assert_eq!(c.value()[(0, 0)], 0.0);
    assert_eq!(c.value()[(0, 3)], 0.5);
    assert_eq!(c.value()[(0, 5)], 1.0);
    // In the left tail σ(x) ≈ eˣ to full relative precision.
    let rel = (c.value()[(0, 2)] - (-40.0f64).exp()).abs() / (-40.0f64).exp();
    assert!(rel < 1e-14, "{rel}");
    let [g] = c.backward(array![[1.0; 6]].view()).unwrap();
    assert!(g.iter().all(|d| d.is_finite() && *d >= 0.0), "{g}");

    let a32 = array![[-100.0f32, -30.0, 30.0, 100.0]];
    let c32 = Map(Sigmoid).apply([a32.view()]).unwrap();
    assert!(
        c32.value()[(0, 0)] > 0.0,
        "f32 tail underflowed early: {}",
        c32.value()
    );
    let rel = (c32.value()[(0, 1)] - (-30.0f32).exp()).abs() / (-30.0f32).exp();
    assert!(rel < 1e-6, "{rel}");
    assert_eq!(c32.value()[(0, 3)], 1.0);
}

#[test]
fn relu_has_zero_derivative_at_zero() {
    let a: Array2<f64> = array![[-1.5, 0.0, 2.0]];
    let c = Map(Relu).apply([a.view()]).unwrap();
    assert_eq!(c.value(), &array![[0.0, 0.0, 2.0]]);
    assert_eq!(
        c.backward(array![[3.0, 3.0, 3.0]].view()).unwrap(),
        [array![[0.0, 0.0, 3.0]]]
    );
    assert_eq!(
        c.jvp([array![[3.0, 3.0, 3.0]].view()]).unwrap(),
        array![[0.0, 0.0, 3.0]]
    );
}

#[test]
fn log_of_non_positive_input_is_nan_or_minus_infinity_without_panicking() {
    let a: Array2<f64> = array![[-1.0, 0.0, 1.0]];
    let c = Map(Log).apply([a.view()]).unwrap();
    assert!(c.value()[(0, 0)].is_nan());
    assert_eq!(c.value()[(0, 1)], f64::NEG_INFINITY);
    assert_eq!(c.value()[(0, 2)], 0.0);
    let [g] = c.backward(array![[1.0, 1.0, 1.0]].view()).unwrap();
    assert_eq!(g, array![[-1.0, f64::INFINITY, 1.0]]);
}

#[test]
fn wrong_shapes_are_typed_errors() {
    let a = randn(3, 5, 1);
    let err = Hadamard
        .apply([a.view(), randn(5, 3, 2).view()])
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            Error::ShapeMismatch {
                op: "Hadamard",
                lhs: Shape(3, 5),
                rhs: Shape(5, 3),
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "Hadamard: shapes differ, A is 3×5, B is 5×3"
    );

    let bad = randn(5, 3, 3);
    let out = Map(Tanh).apply([a.view()]).unwrap();
    let err = out.backward(bad.view()).err().unwrap();
    assert!(
        matches!(
            err,
            Error::WrongShape {
                op: "Tanh",
                name: "cotangent",
                of: "C",
                expected: Shape(3, 5),
                got: Shape(5, 3),
            }
        ),
        "{err}"
    );
    let err = out.jvp([bad.view()]).err().unwrap();
    assert!(
        matches!(
            err,
            Error::WrongShape {
                op: "Tanh",
                name: "tangent",
                of: "A",
                expected: Shape(3, 5),
                got: Shape(5, 3),
            }
        ),
        "{err}"
    );
    let mut buf = Array2::zeros((5, 3));
    let err = out
        .backward_add(a.view(), &mut [Some(buf.view_mut())])
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            Error::WrongShape {
                op: "Tanh",
                name: "gradient buffer",
                of: "A",
                expected: Shape(3, 5),
                got: Shape(5, 3),
            }
        ),
        "{err}"
    );

    // An output C that is not this primitive's output is caught, not indexed out of bounds.
    let err = Map(Exp)
        .backward(&[a.view()], &[bad.view()], &[Some(a.view())])
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            Error::WrongShape {
                op: "Exp",
                name: "output",
                of: "C",
                expected: Shape(3, 5),
                got: Shape(5, 3),
            }
        ),
        "{err}"
    );
    let err = Map(Exp)
        .jvp(&[a.view()], &[bad.view()], &[Some(a.view())])
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            Error::WrongShape {
                op: "Exp",
                name: "output",
                of: "C",
                ..
            }
        ),
        "{err}"
    );

    let b = randn(3, 5, 4);
    let h = Hadamard.apply([a.view(), b.view()]).unwrap();
    let err = h.backward(bad.view()).err().unwrap();
    assert!(
        matches!(
            err,
            Error::WrongShape {
                op: "Hadamard",
                name: "cotangent",
                of: "C",
                ..
            }
        ),
        "{err}"
    );
    let err = h.jvp([a.view(), bad.view()]).err().unwrap();
    assert!(
        matches!(
            err,
            Error::WrongShape {
                op: "Hadamard",
                name: "tangent",
                of: "B",
                expected: Shape(3, 5),
                got: Shape(5, 3),
            }
        ),
        "{err}"
    );
    let err = h
        .backward_add(a.view(), &mut [None, Some(buf.view_mut())])
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            Error::WrongShape {
                op: "Hadamard",
                name: "gradient buffer",
                of: "B",
                ..
            }
        ),
        "{err}"
    );
    let err = Hadamard.forward(&[a.view()]).err().unwrap();
    assert!(
        matches!(
            err,
            Error::Arity {
                op: "Hadamard",
                what: "inputs",
                expected: 2,
                got: 1,
            }
        ),
        "{err}"
    );
}

#[test]
fn strided_views_agree_with_contiguous_arrays() {
    for (i, &(m, n)) in [(3, 5), (4, 2), (1, 6), (6, 1)].iter().enumerate() {
        let s = 10 * i as u64;
        let a = randn(m, n, s);
        assert_same_on_views(&Map(Tanh), &[&a], s);
        assert_same_on_views(&Map(Sigmoid), &[&a], s);
        assert_same_on_views(&Map(Relu), &[&away_from_zero(m, n, s)], s);
        assert_same_on_views(&Map(Exp), &[&a], s);
        assert_same_on_views(&Map(Log), &[&positive(m, n, s)], s);
        assert_same_on_views(&Map(Sin), &[&a], s);
        assert_same_on_views(&Map(Cos), &[&a], s);
        assert_same_on_views(&Map(Square), &[&a], s);
        assert_same_on_views(&Map(Cube), &[&a], s);
        assert_same_on_views(&Hadamard, &[&a, &randn(m, n, s + 1)], s);
    }
}

/// Distance in units in the last place between two finite `f64` of the same sign.
fn ulps(a: f64, b: f64) -> u64 {
    let key = |x: f64| {
        let b = x.to_bits() as i64;
        if b < 0 {
            i64::MIN - b
        } else {
            b
        }
    };
    key(a).abs_diff(key(b))
}

#[test]
fn vector_tanh_is_within_four_units_in_the_last_place_of_the_c_library() {
    use matgrad::blas::vmath;
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(31);
    // Every binade from the subnormals to past the clamp, both signs, uniform within it.
    let mut xs: Vec<f64> = (0..200_000)
        .map(|_| {
            let e = rng.gen_range(-1074..=6);
            let x = rng.gen_range(1.0..2.0) * 2f64.powi(e);
            if rng.gen_bool(0.5) {
                -x
            } else {
                x
            }
        })
        .collect();
    // Dense where the reduction switches k and near the clamp.
    xs.extend((0..20_000).map(|i| i as f64 * 1e-3));
    xs.extend([
        0.0,
        -0.0,
        19.0,
        19.06,
        19.1,
        20.0,
        20.5,
        700.0,
        1e300,
        f64::MAX,
    ]);
    xs.extend([f64::MIN_POSITIVE, 5e-324, -5e-324, f64::EPSILON]);
    let mut worst = (0, 0.0);
    for &x in &xs {
        let (got, want) = (vmath::tanh(x), x.tanh());
        assert_eq!(
            got.is_sign_negative(),
            want.is_sign_negative(),
            "tanh({x:e})"
        );
        let d = ulps(got, want);
        if d > worst.0 {
            worst = (d, x);
        }
    }
    assert!(worst.0 <= 4, "{} ulps at x = {:e}", worst.0, worst.1);
    for x in [f64::INFINITY, f64::NEG_INFINITY] {
        assert_eq!(vmath::tanh(x), x.signum());
    }
    assert!(vmath::tanh(f64::NAN).is_nan());

    // The slice kernel (vectorised) gives the scalar function's bits, in f32 too.
    let mut ys = vec![0.0; xs.len()];
    vmath::tanh_slice(&xs, &mut ys);
    for (&x, &y) in xs.iter().zip(&ys) {
        assert_eq!(y.to_bits(), vmath::tanh(x).to_bits(), "tanh({x:e})");
    }
    let xf: Vec<f32> = xs.iter().map(|&x| x as f32).collect();
    let mut yf = vec![0f32; xf.len()];
    vmath::tanh_slice(&xf, &mut yf);
    for (&x, &y) in xf.iter().zip(&yf) {
        let want = x.tanh();
        assert!(
            (y - want).abs() <= 2.0 * f32::EPSILON * want.abs() || y.to_bits() == want.to_bits(),
            "tanh({x:e}) in f32: {y} vs {want}"
        );
    }
}

#[test]
fn map_tanh_on_every_layout_gives_the_same_bits() {
    use support::views::{store, view, LAYOUTS};
    let a = randn(37, 23, 41) * 3.0;
    let y = Map(Tanh).forward(&[a.view()]).unwrap().remove(0);
    for layout in LAYOUTS {
        let base = store(&a, layout);
        let yl = Map(Tanh).forward(&[view(&base, layout)]).unwrap().remove(0);
        for ((&p, &q), &x) in y.iter().zip(&yl).zip(&a) {
            assert_eq!(p.to_bits(), q.to_bits(), "tanh({x}) in {layout:?}");
        }
    }
    for (&p, &x) in y.iter().zip(&a) {
        assert!((p - x.tanh()).abs() <= 4.0 * f64::EPSILON * p.abs());
    }
}

#[test]
fn exp_derivatives_are_finite_where_the_output_overflows_but_the_product_does_not() {
    // f32: eˣ overflows above 88.7; with cotangents and tangents near 10⁻⁴⁰ (subnormal)
    // the products eˣ·v, up to e¹⁰⁰·10⁻⁴⁰ ≈ 3·10³ here, are finite.
    let x = random::uniform::<f64>(3, 5, 89.0, 100.0, &mut random::rng(70))
        .unwrap()
        .mapv(|v| v as f32);
    let v = randn(3, 5, 71).mapv(|v| (v * 1e-40) as f32);
    let y = Map(Exp).forward(&[x.view()]).unwrap().remove(0);
    assert!(y.iter().all(|y| y.is_infinite()));
    let want = Array2::from_shape_fn(x.dim(), |ij| f64::from(x[ij]).exp() * f64::from(v[ij]));
    let abar = Map(Exp)
        .backward(&[x.view()], &[y.view()], &[Some(v.view())])
        .unwrap()
        .remove(0);
    let ydot = Map(Exp)
        .jvp(&[x.view()], &[y.view()], &[Some(v.view())])
        .unwrap()
        .remove(0);
    for got in [abar, ydot] {
        for (g, w) in got.iter().zip(&want) {
            assert!(((f64::from(*g) - w) / w).abs() < 1e-6, "{g} vs {w}");
        }
    }
    // f64: eˣ overflows above 709.8; e⁷⁵⁰·10⁻³⁰⁰ ≈ 10²⁵.
    let x = randn(2, 3, 72).mapv(|v| 750.0 + v);
    let v = randn(2, 3, 73).mapv(|v| v * 1e-300);
    let y = Map(Exp).forward(&[x.view()]).unwrap().remove(0);
    let abar = Map(Exp)
        .backward(&[x.view()], &[y.view()], &[Some(v.view())])
        .unwrap()
        .remove(0);
    for ((g, &x), &v) in abar.iter().zip(&x).zip(&v) {
        let w = (x - 300.0 * std::f64::consts::LN_10).exp() * (v * 1e300);
        assert!(((g - w) / w).abs() < 1e-12, "{g} vs {w}");
    }
}
