//! Hostile inputs, one test per class: every public function returns a typed error or
//! the correct result (no panic on any input, no silent NaN or infinity where the
//! answer is finite), and the checker cannot be fooled or misled.

use matgrad::check::{random, Checker, Tolerances};
use matgrad::prelude::*;
use ndarray::{array, Array2, ArrayView2, ArrayViewMut2, ShapeBuilder};
use std::cell::Cell;

/// `rows×cols` copies of one value: a view of any size that costs one element.
fn broadcast<T>(v: &T, rows: usize, cols: usize) -> ArrayView2<'_, T> {
    ArrayView2::from_shape((rows, cols).strides((0, 0)), std::slice::from_ref(v)).unwrap()
}

fn randn(m: usize, n: usize, seed: u64) -> Array2<f64> {
    random::randn(m, n, &mut random::rng(seed))
}

fn is_too_large(e: &Error) -> bool {
    matches!(e, Error::TooLarge { .. } | Error::CannotAllocate { .. })
}

/// `c = A₀₀` as a `1×1` matrix: a forward pass that costs nothing whatever `A`'s size.
struct Corner;

impl Rule<f64> for Corner {
    fn name(&self) -> &'static str {
        "Corner"
    }
    fn arity(&self) -> usize {
        1
    }
    fn shapes(&self, _x: &[Shape]) -> matgrad::Result<Shapes> {
        Ok(smallvec![Shape(1, 1)])
    }
    fn saves(&self, _: &[bool]) -> Saves {
        Saves::NONE
    }
    fn eval(
        &self,
        x: &[ArrayView2<'_, f64>],
        y: &mut [ArrayViewMut2<'_, f64>],
        _: &mut [f64],
    ) -> matgrad::Result<()> {
        y[0][(0, 0)] = x[0].first().copied().unwrap_or(0.0);
        Ok(())
    }
    fn pullback(
        &self,
        _x: &[ArrayView2<'_, f64>],
        _y: &[ArrayView2<'_, f64>],
        ybar: &Partials<'_, '_, f64>,
        grads: &mut [Grad<'_, f64>],
        _: &mut [f64],
    ) -> matgrad::Result<()> {
        if let Some((mut g, acc)) = grads[0].target() {
            if acc == Accum::Replace {
                g.fill(0.0);
            }
            if let Some(g0) = g.first_mut() {
                *g0 += ybar.view(0)[(0, 0)];
            }
        }
        Ok(())
    }
    fn pushforward(
        &self,
        _x: &[ArrayView2<'_, f64>],
        _y: &[ArrayView2<'_, f64>],
        xdot: &Partials<'_, '_, f64>,
        ydot: &mut [ArrayViewMut2<'_, f64>],
        _: &mut [f64],
    ) -> matgrad::Result<()> {
        ydot[0][(0, 0)] = xdot.view(0).first().copied().unwrap_or(0.0);
        Ok(())
    }
}

// ------------------------------------------------ sizes: typed errors, not panics

#[test]
fn a_reshape_to_zero_elements_with_a_huge_dimension_is_too_large() {
    let a = Array2::<f64>::zeros((0, 3));
    for r in [
        Reshape::row_major(0, usize::MAX),
        Reshape::col_major(usize::MAX, 0),
    ] {
        let e = r.forward(&[a.view()]).unwrap_err();
        assert!(is_too_large(&e), "{e}");
        let e = r.apply([a.view()]).unwrap_err();
        assert!(is_too_large(&e), "{e}");
        assert!(is_too_large(&r.output_shapes(&[a.view()]).unwrap_err()));
    }
    let e = Unvec::new(usize::MAX, 0)
        .forward(&[Array2::<f64>::zeros((0, 1)).view()])
        .unwrap_err();
    assert!(is_too_large(&e), "{e}");
}

#[test]
fn reverse_passes_and_jvps_of_huge_shapes_are_too_large_before_allocating() {
    let v = 1.5f64;
    let one = array![[1.0]];
    // 2³¹ rows: beyond BLAS's 32-bit integers; 2³⁰ × 2³⁰: 2⁶³ bytes of f64, more than
    // an address space holds.
    for (m, n) in [
        (1usize << 31, 1usize << 31),
        (1 << 30, 1 << 30),
        (1 << 31, 3),
    ] {
        let huge = broadcast(&v, m, n);
        let r = Corner
            .apply([huge])
            .and_then(|c| c.backward(one.view()).map(|_| ()));
        assert!(matches!(&r, Err(e) if is_too_large(e)), "{m}×{n}: {r:?}");
        let r = Corner.backward(&[huge], &[one.view()], &[Some(one.view())]);
        assert!(matches!(&r, Err(e) if is_too_large(e)), "{m}×{n}: {r:?}");
        // A jvp whose output is 1×1 but whose workspace grows with the input.
        let r = Primitive::<f64>::jvp(&SpectralNorm, &[huge], &[one.view()], &[Some(huge)]);
        assert!(matches!(&r, Err(e) if is_too_large(e)), "{m}×{n}: {r:?}");
    }
    // A reverse pass whose workspace holds a copy of a huge broadcast cotangent.
    let l = array![[2.0]];
    let wide = broadcast(&v, 1, 1usize << 61);
    let mut lbar = Array2::<f64>::zeros((1, 1));
    let r = TriSolve::lower().backward_into(
        &[l.view(), wide],
        &[wide],
        &[Some(wide)],
        &mut [Grad::Write(lbar.view_mut()), Grad::Skip],
        None,
    );
    assert!(matches!(&r, Err(e) if is_too_large(e)), "{r:?}");
}

#[test]
fn a_reshape_error_with_huge_dimensions_prints_the_true_counts() {
    let a = Array2::<f64>::zeros((2, 3));
    let e = Reshape::row_major(usize::MAX, 3)
        .forward(&[a.view()])
        .unwrap_err();
    let text = e.to_string();
    let count = (usize::MAX as u128 * 3).to_string();
    assert!(text.contains(&count), "{text}");
    assert!(text.contains("(6 elements)"), "{text}");
}

// -------------------------------------- a user rule that breaks its own contract

/// A rule whose shape rule returns `count` shapes for one output.
struct ShapeCount(usize);

impl Rule<f64> for ShapeCount {
    fn name(&self) -> &'static str {
        "ShapeCount"
    }
    fn arity(&self) -> usize {
        1
    }
    fn shapes(&self, x: &[Shape]) -> matgrad::Result<Shapes> {
        Ok((0..self.0).map(|_| x[0]).collect())
    }
    fn eval(
        &self,
        x: &[ArrayView2<'_, f64>],
        y: &mut [ArrayViewMut2<'_, f64>],
        _: &mut [f64],
    ) -> matgrad::Result<()> {
        y[0].assign(&x[0]);
        Ok(())
    }
    fn pullback(
        &self,
        _x: &[ArrayView2<'_, f64>],
        _y: &[ArrayView2<'_, f64>],
        ybar: &Partials<'_, '_, f64>,
        grads: &mut [Grad<'_, f64>],
        _: &mut [f64],
    ) -> matgrad::Result<()> {
        if let Some((g, acc)) = grads[0].target() {
            acc.assign(g, ybar.view(0));
        }
        Ok(())
    }
    fn pushforward(
        &self,
        _x: &[ArrayView2<'_, f64>],
        _y: &[ArrayView2<'_, f64>],
        xdot: &Partials<'_, '_, f64>,
        ydot: &mut [ArrayViewMut2<'_, f64>],
        _: &mut [f64],
    ) -> matgrad::Result<()> {
        ydot[0].assign(&xdot.view(0));
        Ok(())
    }
}

/// `C = A` with as many rows as… whether `A₀₀` still has the value the first forward
/// pass saw: an output shape that depends on the input's values, through state the
/// shape rule reads.
struct ValueShaped {
    first: Cell<Option<f64>>,
    moved: Cell<bool>,
}

impl Rule<f64> for ValueShaped {
    fn name(&self) -> &'static str {
        "ValueShaped"
    }
    fn arity(&self) -> usize {
        1
    }
    fn shapes(&self, _x: &[Shape]) -> matgrad::Result<Shapes> {
        Ok(smallvec![Shape(if self.moved.get() { 2 } else { 1 }, 1)])
    }
    fn eval(
        &self,
        x: &[ArrayView2<'_, f64>],
        y: &mut [ArrayViewMut2<'_, f64>],
        _: &mut [f64],
    ) -> matgrad::Result<()> {
        let v = x[0][(0, 0)];
        match self.first.get() {
            None => self.first.set(Some(v)),
            Some(f) => self.moved.set(f != v),
        }
        y[0].fill(v);
        Ok(())
    }
    fn pullback(
        &self,
        _x: &[ArrayView2<'_, f64>],
        _y: &[ArrayView2<'_, f64>],
        ybar: &Partials<'_, '_, f64>,
        grads: &mut [Grad<'_, f64>],
        _: &mut [f64],
    ) -> matgrad::Result<()> {
        if let Some((mut g, acc)) = grads[0].target() {
            acc.store(&mut g[(0, 0)], ybar.view(0).sum());
        }
        Ok(())
    }
    fn pushforward(
        &self,
        _x: &[ArrayView2<'_, f64>],
        _y: &[ArrayView2<'_, f64>],
        xdot: &Partials<'_, '_, f64>,
        ydot: &mut [ArrayViewMut2<'_, f64>],
        _: &mut [f64],
    ) -> matgrad::Result<()> {
        ydot[0].fill(xdot.view(0)[(0, 0)]);
        Ok(())
    }
}

#[test]
fn a_user_shape_rule_with_the_wrong_number_of_shapes_is_a_typed_error_naming_it() {
    let a = randn(2, 3, 1);
    let cbar = randn(2, 3, 2);
    for count in [0, 2] {
        let p = ShapeCount(count);
        let named = |e: Error| {
            matches!(
                e,
                Error::Arity {
                    op: "ShapeCount",
                    ..
                }
            )
        };
        assert!(named(p.forward(&[a.view()]).unwrap_err()));
        assert!(named((&p).apply([a.view()]).unwrap_err()));
        assert!(named(p.output_shapes(&[a.view()]).unwrap_err()));
        let e = p
            .backward(&[a.view()], &[a.view()], &[Some(cbar.view())])
            .unwrap_err();
        assert!(named(e));
        assert!(named(
            p.jvp(&[a.view()], &[a.view()], &[Some(a.view())])
                .unwrap_err()
        ));
        assert!(named(Checker::new().check(&p, &[a.view()]).unwrap_err()));
    }
}

#[test]
fn the_checker_reports_an_output_shape_that_changes_at_a_perturbed_point() {
    let a = randn(1, 1, 3);
    let p = ValueShaped {
        first: Cell::new(None),
        moved: Cell::new(false),
    };
    let e = Checker::new().check(&p, &[a.view()]).unwrap_err();
    let text = e.to_string();
    assert!(text.contains("ValueShaped"), "{text}");
    assert!(text.contains("perturbed point"), "{text}");
}

#[test]
fn a_random_matrix_of_an_empty_or_invalid_range_is_an_error() {
    let mut rng = random::rng(4);
    for (lo, hi) in [
        (1.0, 1.0),
        (2.0, 1.0),
        (f64::NAN, 1.0),
        (0.0, f64::INFINITY),
    ] {
        let e = random::uniform::<f64>(2, 3, lo, hi, &mut rng).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    }
    let u = random::uniform::<f32>(2, 3, -1.0, 1.0, &mut rng).unwrap();
    assert!(u.iter().all(|v| (-1.0..1.0).contains(v)));
}

// ------------------------------------------ every argument validated, every time

#[test]
fn an_accumulating_backward_with_every_buffer_skipped_still_validates_its_arguments() {
    let a = random::spd::<f64>(3, &mut random::rng(5));
    let chol = Cholesky::new();
    let l = chol.forward(&[a.view()]).unwrap().remove(0);
    let wrong = randn(2, 3, 6);
    let e = chol
        .backward_add(&[a.view()], &[l.view()], &[Some(wrong.view())], &mut [None])
        .unwrap_err();
    assert!(matches!(e, Error::WrongShape { .. }), "{e}");
    let rect = randn(3, 4, 7);
    let e = chol
        .backward_add(&[rect.view()], &[l.view()], &[Some(l.view())], &mut [None])
        .unwrap_err();
    assert!(matches!(e, Error::NotSquare { .. }), "{e}");
    let c = chol.apply([a.view()]).unwrap();
    let e = c.backward_add(wrong.view(), &mut [None]).unwrap_err();
    assert!(matches!(e, Error::WrongShape { .. }), "{e}");
    let e = chol
        .jvp(&[a.view()], &[l.view()], &[Some(wrong.view())])
        .unwrap_err();
    assert!(matches!(e, Error::WrongShape { .. }), "{e}");
}

/// A jvp at a singular factor must be an error, not NaN.
#[track_caller]
fn singular_or_finite(r: matgrad::Result<Vec<Array2<f64>>>) {
    match r {
        Ok(t) => assert!(t.iter().flatten().all(|v| v.is_finite()), "{t:?}"),
        Err(e) => assert!(matches!(e, Error::Singular { .. }), "{e}"),
    }
}

#[test]
fn forward_mode_rules_reject_a_singular_factor() {
    let mut rng = random::rng(8);
    let mut l = random::lower::<f64>(3, &mut rng);
    let b = randn(3, 2, 9);
    let x = randn(3, 2, 10);
    l[(1, 1)] = 0.0;
    let (ld, bd) = (randn(3, 3, 11), randn(3, 2, 12));
    let t = [Some(ld.view()), Some(bd.view())];
    singular_or_finite(TriSolve::lower().jvp(&[l.view(), b.view()], &[x.view()], &t));
    // ChoSolve's outputs: X and its residual L⁻¹B, here any matrices of their shape.
    let half = randn(3, 2, 13);
    singular_or_finite(ChoSolve.jvp(&[l.view(), b.view()], &[x.view(), half.view()], &t));
    singular_or_finite(CholLogDet.jvp(&[l.view()], &[array![[0.5]].view()], &t[..1]));
    let a = random::spd::<f64>(3, &mut rng);
    singular_or_finite(Cholesky::new().jvp(&[a.view()], &[l.view()], &t[..1]));
    // LuSolve's forward-mode rule solves with its residual factors.
    let lu = random::lower::<f64>(3, &mut rng) + random::lower::<f64>(3, &mut rng).t();
    let mut lu = lu;
    lu[(2, 2)] = 0.0;
    let ipiv = array![[1.0], [2.0], [3.0]];
    let sq = randn(3, 3, 13);
    singular_or_finite(LuSolve::new().jvp(
        &[sq.view(), b.view()],
        &[x.view(), lu.view(), ipiv.view()],
        &[Some(ld.view()), Some(bd.view())],
    ));
}

/// The name a rule gives (`Rule::name`) is how checker reports, tape records and
/// errors identify it: one name per primitive and variant, as documented, and the
/// primitive named by its shape errors is that one (up to the parenthesised variant).
#[test]
fn every_primitive_and_variant_has_its_own_name_which_its_errors_carry() {
    fn name<R: Rule<f64>>(r: R) -> &'static str {
        r.name()
    }
    let (lo, up, left, right) = (Uplo::Lower, Uplo::Upper, Side::Left, Side::Right);
    let (no, yes) = (Trans::No, Trans::Yes);
    let names = [
        (name(Add), "Add"),
        (name(AddBias), "AddBias"),
        (name(Hadamard), "Hadamard"),
        (name(Map(Tanh)), "Tanh"),
        (name(MatMul::nn()), "MatMul(A·B)"),
        (name(MatMul::tn()), "MatMul(Aᵀ·B)"),
        (name(MatMul::nt()), "MatMul(A·Bᵀ)"),
        (name(MatMul::tt()), "MatMul(Aᵀ·Bᵀ)"),
        (name(Sum), "Sum"),
        (name(Mean), "Mean"),
        (name(LogSumExp), "LogSumExp"),
        (name(LogSoftmax), "LogSoftmax"),
        (name(Trace), "Trace"),
        (name(FrobeniusNorm), "FrobeniusNorm"),
        (name(NuclearNorm), "NuclearNorm"),
        (name(SpectralNorm), "SpectralNorm"),
        (name(MatPoly::new([1.0, 2.0])), "MatPoly"),
        (name(Expm), "Expm"),
        (name(Svd), "Svd"),
        (name(SymEig::new()), "SymEig(symmetric)"),
        (
            name(SymEig::new().convention(Convention::Lower)),
            "SymEig(lower)",
        ),
        (name(Cholesky::new()), "Cholesky(symmetric)"),
        (
            name(Cholesky::new().convention(Convention::Lower)),
            "Cholesky(lower)",
        ),
        (name(CholLogDet), "CholLogDet(2Σ log Lᵢᵢ)"),
        (name(ChoSolve), "ChoSolve((LLᵀ)⁻¹·B)"),
        (name(Inverse), "Inverse(A⁻¹)"),
        (name(Det), "Det"),
        (name(SlogDet), "SlogDet"),
        (name(LuSolve::new()), "LuSolve(A⁻¹·B)"),
        (name(LuSolve::transposed()), "LuSolve(A⁻ᵀ·B)"),
        (name(TriSolve::new(left, no, lo)), "TriSolve(L⁻¹·B)"),
        (name(TriSolve::new(left, yes, lo)), "TriSolve(L⁻ᵀ·B)"),
        (name(TriSolve::new(left, no, up)), "TriSolve(U⁻¹·B)"),
        (name(TriSolve::new(left, yes, up)), "TriSolve(U⁻ᵀ·B)"),
        (name(TriSolve::new(right, no, lo)), "TriSolve(B·L⁻¹)"),
        (name(TriSolve::new(right, yes, lo)), "TriSolve(B·L⁻ᵀ)"),
        (name(TriSolve::new(right, no, up)), "TriSolve(B·U⁻¹)"),
        (name(TriSolve::new(right, yes, up)), "TriSolve(B·U⁻ᵀ)"),
        (
            name(SoftmaxCrossEntropy::new(vec![0, 1])),
            "SoftmaxCrossEntropy",
        ),
        (name(MeanSquaredError), "MeanSquaredError"),
    ];
    for (k, &(got, want)) in names.iter().enumerate() {
        assert_eq!(got, want);
        assert!(
            names[..k].iter().all(|&(other, _)| other != got),
            "{got} twice"
        );
    }
    // A shape error from each primitive that has one names the primitive.
    let (a23, a32, a22) = (randn(2, 3, 1), randn(3, 2, 2), randn(2, 2, 3));
    let (a, b, sq) = (a23.view(), a32.view(), a22.view());
    let errors: Vec<(&str, Error)> = vec![
        (name(Add), Add.apply([a, b]).unwrap_err()),
        (name(AddBias), AddBias.apply([a, b]).unwrap_err()),
        (name(Hadamard), Hadamard.apply([a, b]).unwrap_err()),
        (name(MatMul::nn()), MatMul::nn().apply([a, a]).unwrap_err()),
        (name(MatMul::tt()), MatMul::tt().apply([a, a]).unwrap_err()),
        (name(Trace), Trace.apply([a]).unwrap_err()),
        (
            name(MatPoly::new([1.0])),
            MatPoly::new([1.0]).apply([a]).unwrap_err(),
        ),
        (name(Expm), Expm.apply([a]).unwrap_err()),
        (name(SymEig::new()), SymEig::new().apply([a]).unwrap_err()),
        (
            name(Cholesky::new()),
            Cholesky::new().apply([a]).unwrap_err(),
        ),
        (name(CholLogDet), CholLogDet.apply([a]).unwrap_err()),
        (name(ChoSolve), ChoSolve.apply([a, b]).unwrap_err()),
        (name(Inverse), Inverse.apply([a]).unwrap_err()),
        (name(Det), Det.apply([a]).unwrap_err()),
        (name(SlogDet), SlogDet.apply([a]).unwrap_err()),
        (
            name(LuSolve::new()),
            LuSolve::new().apply([sq, b]).unwrap_err(),
        ),
        (
            name(TriSolve::lower()),
            TriSolve::lower().apply([sq, b]).unwrap_err(),
        ),
        (
            name(SoftmaxCrossEntropy::new(vec![0])),
            SoftmaxCrossEntropy::new(vec![0]).apply([a]).unwrap_err(),
        ),
        (
            name(MeanSquaredError),
            MeanSquaredError.apply([a, b]).unwrap_err(),
        ),
    ];
    // An applied primitive's `Debug` (what `unwrap_err` prints on success) names it.
    let shown = format!("{:?}", MatMul::tn().apply([a, a]).unwrap());
    assert!(
        shown.starts_with("Applied { op: \"MatMul(Aᵀ·B)\", inputs: ["),
        "{shown}"
    );
    for (name, e) in errors {
        let (stem, msg) = (name.split('(').next().unwrap_or(name), e.to_string());
        assert!(
            msg.starts_with(&format!("{name}: ")) || msg.starts_with(&format!("{stem}: ")),
            "{name}: {msg}"
        );
    }
}

/// The names of inputs and outputs (residuals included) are what errors and checker
/// reports call them: the documented ones, one per slot.
#[test]
fn primitives_name_their_inputs_and_outputs_as_documented() {
    fn slots<R: Rule<f64>>(r: R, inputs: &[&str], outputs: &[&str]) {
        let name = r.name();
        assert_eq!(r.arity(), inputs.len(), "{name}");
        assert_eq!(r.outputs() + r.residuals(), outputs.len(), "{name}");
        for (i, &want) in inputs.iter().enumerate() {
            assert_eq!(r.input_name(i), want, "{name}: input {i}");
        }
        for (k, &want) in outputs.iter().enumerate() {
            assert_eq!(r.output_name(k), want, "{name}: output {k}");
        }
    }
    slots(Sum, &["A"], &["c"]);
    slots(Mean, &["A"], &["c"]);
    slots(LogSumExp, &["A"], &["c"]);
    slots(AddBias, &["X", "b"], &["C"]);
    slots(CholLogDet, &["L"], &["C"]);
    slots(TriSolve::lower(), &["L", "B"], &["C"]);
    slots(ChoSolve, &["L", "B"], &["C", "L⁻¹B"]);
    slots(LuSolve::new(), &["A", "B"], &["X", "LU", "ipiv"]);
    slots(Det, &["A"], &["det", "LU", "ipiv"]);
    slots(SlogDet, &["A"], &["sign", "logabsdet", "LU", "ipiv"]);
    slots(SymEig::new(), &["A"], &["λ", "V"]);
    slots(Svd, &["A"], &["U", "s", "V"]);
    slots(NuclearNorm, &["A"], &["C", "U", "s", "V"]);
    slots(SpectralNorm, &["A"], &["C", "u₁", "v₁", "σ₂"]);
    slots(SoftmaxCrossEntropy::new(vec![0]), &["Z"], &["c", "P"]);
    slots(MeanSquaredError, &["Y", "T"], &["c"]);
}

// ------------------------------------ finite answers where the answer is finite

/// `X = L⁻¹B` by forward substitution with divisions, in f64.
fn substitute(l: &Array2<f64>, b: &Array2<f64>) -> Array2<f64> {
    let mut x = b.clone();
    for c in 0..b.ncols() {
        for i in 0..l.nrows() {
            let s: f64 = (0..i).map(|k| l[(i, k)] * x[(k, c)]).sum();
            x[(i, c)] = (b[(i, c)] - s) / l[(i, i)];
        }
    }
    x
}

#[test]
fn a_triangular_solve_with_a_subnormal_diagonal_is_exact_or_a_typed_error() {
    let mut rng = random::rng(14);
    let mut l = random::lower::<f64>(3, &mut rng);
    // Nonzero, but its reciprocal overflows; the exact solution is finite.
    l[(1, 1)] = 3e-309;
    let b = randn(3, 2, 15) * 1e-300;
    let want = substitute(&l, &b);
    assert!(want.iter().all(|v| v.is_finite()));
    let check = |r: matgrad::Result<Vec<Array2<f64>>>, what: &str| match r {
        Ok(x) => assert!(x.iter().flatten().all(|v| v.is_finite()), "{what}: {x:?}"),
        Err(e) => assert!(
            matches!(e, Error::IllConditioned { index: 1, .. }),
            "{what}: {e}"
        ),
    };
    match TriSolve::lower().forward(&[l.view(), b.view()]) {
        Ok(x) => {
            let x = &x[0];
            assert!(x.iter().all(|v| v.is_finite()), "{x:?}");
            let err = (x - &want).mapv(f64::abs).sum() / want.mapv(f64::abs).sum();
            assert!(err < 1e-12, "{err}");
        }
        Err(e) => assert!(matches!(e, Error::IllConditioned { index: 1, .. }), "{e}"),
    }
    let xbar = randn(3, 2, 16);
    let x = substitute(&l, &b);
    check(
        TriSolve::lower().backward(&[l.view(), b.view()], &[x.view()], &[Some(xbar.view())]),
        "TriSolve backward",
    );
    check(
        ChoSolve.backward(
            &[l.view(), b.view()],
            &[x.view(), substitute(&l, &x).view()],
            &[Some(xbar.view())],
        ),
        "ChoSolve backward",
    );
    // Cholesky's reverse and forward-mode rules solve with the factor L.
    let a = l.dot(&l.t());
    let lbar = randn(3, 3, 17);
    check(
        Cholesky::new().backward(&[a.view()], &[l.view()], &[Some(lbar.view())]),
        "Cholesky backward",
    );
    check(
        Cholesky::new().jvp(&[a.view()], &[l.view()], &[Some(lbar.view())]),
        "Cholesky jvp",
    );
    // f32: 1/1e-39 overflows too.
    let l32 = array![[1e-39f32]];
    let b32 = array![[1e-30f32]];
    match TriSolve::lower().forward(&[l32.view(), b32.view()]) {
        Ok(x) => assert!((x[0][(0, 0)] - 1e9).abs() < 1e3, "{x:?}"),
        Err(e) => assert!(matches!(e, Error::IllConditioned { index: 0, .. }), "{e}"),
    }
}

#[test]
fn an_lu_solve_whose_pivot_is_tiny_but_not_zero_does_not_call_it_zero() {
    let a = array![[2.0, 1.0, 0.0], [0.0, 3e-309, 0.0], [1.0, 0.0, 4.0]];
    let b = array![[1e-300], [1e-300], [2e-300]];
    for r in [
        LuSolve::new().forward(&[a.view(), b.view()]),
        Inverse.forward(&[a.view()]),
    ] {
        match r {
            Ok(x) => assert!(x[0].iter().all(|v: &f64| v.is_finite()), "{x:?}"),
            Err(e) => {
                assert!(matches!(e, Error::IllConditioned { .. }), "{e}");
                assert!(!e.to_string().contains("is zero"), "{e}");
            }
        }
    }
}

#[test]
fn the_singular_error_fits_every_primitive_that_returns_it() {
    let a = array![[1.0, 2.0], [2.0, 4.0]];
    let e = Inverse.forward(&[a.view()]).unwrap_err();
    assert!(matches!(e, Error::Singular { .. }), "{e}");
    let text = e.to_string();
    assert!(!text.contains("triangular matrix is singular"), "{text}");
    assert!(text.contains("singular"), "{text}");
}

/// `Ā` and `Ċ` of `Map(g)` at `x` for a cotangent and tangent that are zero where `g'`
/// overflows.
fn zero_where_derivative_overflows<T: Real, G: ElemFn<T> + Copy>(
    g: G,
    x: Array2<T>,
    dir: Array2<T>,
) -> (Array2<T>, Array2<T>)
where
    Map<G>: Primitive<T>,
{
    let map = Map(g);
    let y = map.forward(&[x.view()]).unwrap().remove(0);
    let abar = map
        .backward(&[x.view()], &[y.view()], &[Some(dir.view())])
        .unwrap()
        .remove(0);
    let ydot = map
        .jvp(&[x.view()], &[y.view()], &[Some(dir.view())])
        .unwrap()
        .remove(0);
    // Accumulated into a buffer: the zero contribution leaves it as it was.
    let mut buf = Array2::from_elem(x.dim(), T::of(5.0));
    map.backward_add(
        &[x.view()],
        &[y.view()],
        &[Some(dir.view())],
        &mut [Some(buf.view_mut())],
    )
    .unwrap();
    assert_eq!(buf[(0, 0)], T::of(5.0));
    (abar, ydot)
}

#[test]
fn a_zero_cotangent_or_tangent_gives_zero_where_the_derivative_overflows() {
    let dir = array![[0.0, 1.0]];
    // exp(1000) overflows, so exp'(1000)·0 would be NaN.
    let (abar, ydot) = zero_where_derivative_overflows(Exp, array![[1000.0, 1.0]], dir.clone());
    assert_eq!(abar, array![[0.0, 1f64.exp()]]);
    assert_eq!(ydot, abar);
    // log'(x) = 1/x overflows at a subnormal x.
    let (abar, ydot) = zero_where_derivative_overflows(Log, array![[1e-320, 2.0]], dir.clone());
    assert_eq!(abar, array![[0.0, 0.5]]);
    assert_eq!(ydot, abar);
    // (x²)' = 2x overflows near the largest f64.
    let (abar, _) = zero_where_derivative_overflows(Square, array![[1.5e308, 2.0]], dir);
    assert_eq!(abar, array![[0.0, 4.0]]);
    let dir32 = array![[0.0f32, 1.0]];
    let (abar, ydot) = zero_where_derivative_overflows(Exp, array![[100.0f32, 1.0]], dir32.clone());
    assert_eq!(abar[(0, 0)], 0.0);
    assert_eq!(ydot[(0, 0)], 0.0);
    let (abar, _) = zero_where_derivative_overflows(Log, array![[1e-45f32, 2.0]], dir32);
    assert_eq!(abar[(0, 0)], 0.0);
}

#[test]
fn an_all_zero_cotangent_or_tangent_gives_zero_gradients_and_tangents() {
    // A subnormal matrix: the SVD's reverse rule divides by differences of squared
    // singular values that underflow to zero, so 0·∞ would leak NaN.
    let a = randn(3, 2, 18) * 1e-310;
    let y = Svd.forward(&[a.view()]).unwrap();
    let y: Vec<ArrayView2<'_, f64>> = y.iter().map(|v| v.view()).collect();
    let zeros: Vec<Array2<f64>> = y.iter().map(|v| Array2::zeros(v.raw_dim())).collect();
    let ybar: Vec<Option<ArrayView2<'_, f64>>> = zeros.iter().map(|z| Some(z.view())).collect();
    let g = Svd.backward(&[a.view()], &y, &ybar).unwrap();
    assert!(g[0].iter().all(|&v| v == 0.0), "{g:?}");
    let z = Array2::<f64>::zeros(a.raw_dim());
    let t = Svd.jvp(&[a.view()], &y, &[Some(z.view())]).unwrap();
    assert!(t.iter().flatten().all(|&v| v == 0.0), "{t:?}");
    let c = Svd.apply([a.view()]).unwrap();
    let [abar] = c.backward(zeros[0].view()).unwrap();
    assert!(abar.iter().all(|&v| v == 0.0), "{abar:?}");
}

/// Relative difference of an f32 result from the f64 one.
fn rel32(got: &Array2<f32>, want: &Array2<f64>) -> f64 {
    let d: f64 = got
        .iter()
        .zip(want)
        .map(|(&g, &w)| (f64::from(g) - w).powi(2))
        .sum();
    let s: f64 = want.iter().map(|w| w * w).sum();
    (d / s).sqrt()
}

/// Whether every entry is finite in f32 (so the exact value is representable there).
fn fits32(a: &Array2<f64>) -> bool {
    a.iter().all(|&v| v.abs() < f64::from(f32::MAX))
}

/// Forward, reverse and forward-mode results in f32, wherever the f64 results fit f32:
/// they must be finite and agree.
#[track_caller]
fn agrees_in_f32<P: Primitive<f32> + Primitive<f64>>(
    p: &P,
    x: &[Array2<f64>],
    cbar: &Array2<f64>,
    xdot: &[Array2<f64>],
) {
    let to32 = |a: &Array2<f64>| a.mapv(|v| v as f32);
    let x32: Vec<Array2<f32>> = x.iter().map(to32).collect();
    let x64: Vec<Array2<f64>> = x32.iter().map(|a| a.mapv(f64::from)).collect();
    let v32: Vec<ArrayView2<'_, f32>> = x32.iter().map(|a| a.view()).collect();
    let v64: Vec<ArrayView2<'_, f64>> = x64.iter().map(|a| a.view()).collect();
    let name = Rule::<f64>::name(p);
    let y64 = Primitive::<f64>::forward(p, &v64).unwrap();
    let y32 = Primitive::<f32>::forward(p, &v32).unwrap_or_else(|e| panic!("{name}: {e}"));
    if fits32(&y64[0]) {
        assert!(
            rel32(&y32[0], &y64[0]) < 1e-5,
            "{name}: {:?} {:?}",
            y32[0],
            y64[0]
        );
    }
    let (c32, c64) = (to32(cbar), to32(cbar).mapv(f64::from));
    let yv32: Vec<ArrayView2<'_, f32>> = y32.iter().map(|a| a.view()).collect();
    let yv64: Vec<ArrayView2<'_, f64>> = y64.iter().map(|a| a.view()).collect();
    let g64 = Primitive::<f64>::backward(p, &v64, &yv64, &[Some(c64.view())]).unwrap();
    let g32 = Primitive::<f32>::backward(p, &v32, &yv32, &[Some(c32.view())])
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    for (g32, g64) in g32.iter().zip(&g64).filter(|(_, g)| fits32(g)) {
        assert!(rel32(g32, g64) < 1e-5, "{name} backward: {g32:?} {g64:?}");
    }
    let t32: Vec<Array2<f32>> = xdot.iter().map(to32).collect();
    let t64: Vec<Array2<f64>> = t32.iter().map(|a| a.mapv(f64::from)).collect();
    let s32: Vec<Option<ArrayView2<'_, f32>>> = t32.iter().map(|a| Some(a.view())).collect();
    let s64: Vec<Option<ArrayView2<'_, f64>>> = t64.iter().map(|a| Some(a.view())).collect();
    let d64 = Primitive::<f64>::jvp(p, &v64, &yv64, &s64).unwrap();
    let d32 = Primitive::<f32>::jvp(p, &v32, &yv32, &s32).unwrap_or_else(|e| panic!("{name}: {e}"));
    if fits32(&d64[0]) {
        assert!(
            rel32(&d32[0], &d64[0]) < 1e-5,
            "{name} jvp: {:?} {:?}",
            d32[0],
            d64[0]
        );
    }
}

#[test]
fn operations_are_ordered_so_that_they_overflow_only_when_the_answer_does() {
    // (x²)' c̄ = 2x·c̄ with 2x beyond f32's range.
    let x = array![[2e38, -3e38, 1.0]];
    agrees_in_f32(
        &Map(Square),
        &[x],
        &array![[0.25, 0.1, 1.0]],
        &[array![[0.5, 0.25, 1.0]]],
    );
    // log'(x) c̄ = c̄/x with 1/x beyond f32's range at a subnormal x.
    let x = array![[1e-40, 2.0]];
    agrees_in_f32(
        &Map(Log),
        &[x],
        &array![[1e-5, 1.0]],
        &[array![[1e-6, 1.0]]],
    );
    // ‖A‖_F of subnormal entries, its reverse rule with a large c̄ at small entries,
    // its forward-mode rule with a large tangent at large entries.
    let a = randn(3, 4, 19);
    agrees_in_f32(
        &FrobeniusNorm,
        &[&a * 1e-40],
        &array![[1.0]],
        std::slice::from_ref(&a),
    );
    agrees_in_f32(
        &FrobeniusNorm,
        &[&a * 1e-30],
        &array![[1e30]],
        &[&a * 1e-30],
    );
    agrees_in_f32(&FrobeniusNorm, &[&a * 1e18], &array![[1.0]], &[&a * 1e30]);
    // The mean squared error whose squares overflow but whose mean does not.
    let b = randn(3, 4, 20);
    agrees_in_f32(
        &MeanSquaredError,
        &[&a * 1e19, &b * 1e19],
        &array![[1.0]],
        &[a.clone(), b.clone()],
    );
    // Its rescaling takes the largest |y − t|, which here is not the largest |y + t| (0).
    let mut y = a.clone();
    y[(0, 0)] = 2.9e19;
    agrees_in_f32(
        &MeanSquaredError,
        &[y.clone(), -&y],
        &array![[1.0]],
        &[a.clone(), b.clone()],
    );
    // A sum whose huge entries cancel, though their partial sums overflow: summed
    // again at an exact scale, its small entries must come back whole, not flushed
    // below the normal range (3·10⁻⁹⁰ and 10⁻⁹⁰ are 2⁻²⁹⁷ and 2⁻²⁹⁹).
    let m = f64::MAX;
    let a = array![[m, m, -m], [-m, 3e-90, 1e-90]];
    let sum = Sum.apply([a.view()]).unwrap().value()[(0, 0)];
    assert!((sum - 4e-90).abs() <= 4e-90 * f64::EPSILON, "{sum:e}");
    let mean = Mean.apply([a.view()]).unwrap().value()[(0, 0)];
    assert!(
        (mean - 4e-90 / 6.0).abs() <= 4e-90 * f64::EPSILON,
        "{mean:e}"
    );
    // det diag(10³⁰, 10³⁰, 10⁻³⁰) = 10³⁰, whose partial product 10⁶⁰ overflows.
    let d = array![[1e30, 0.0, 0.0], [0.0, 1e30, 0.0], [0.0, 0.0, 1e-30]];
    agrees_in_f32(
        &Det,
        std::slice::from_ref(&d),
        &array![[1.0]],
        &[&d * 1e-30],
    );
    // exp's Fréchet derivative is linear in the direction: a large one must not overflow
    // the Padé coefficients (b₀ ≈ 6·10¹⁶).
    let s = randn(3, 3, 21) * 0.5;
    agrees_in_f32(
        &Expm,
        &[s],
        &(randn(3, 3, 22) * 1e30),
        &[randn(3, 3, 23) * 1e30],
    );
}

// ------------------------------------------------------------------- the checker

fn wrong_in_settings(c: Checker) {
    let a = randn(3, 4, 30);
    let b = randn(4, 2, 31);
    let e = c.check(&MatMul::nn(), &[a.view(), b.view()]).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
}

#[test]
fn invalid_checker_settings_are_typed_errors() {
    for bad in [0.0, -1e-4, f64::NAN, f64::INFINITY] {
        wrong_in_settings(Checker::new().step(bad));
        wrong_in_settings(Checker::new().tol(bad));
        wrong_in_settings(Checker::new().exact_tol(bad));
        wrong_in_settings(Checker::new().tolerances(Tolerances {
            step: bad,
            ..Tolerances::F64
        }));
    }
    wrong_in_settings(Checker::new().directions(0));
    let a = randn(3, 4, 30);
    let b = randn(4, 2, 31);
    let x = [a.mapv(|v| v as f32), b.mapv(|v| v as f32)];
    let e = Checker::new()
        .step(0.0)
        .check(&MatMul::nn(), &[x[0].view(), x[1].view()])
        .unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
}

/// `c = Σᵢⱼ sin Aᵢⱼ` with `Ā = c̄ cos A`, scaled by `1 + grad_error`, and an
/// accumulating pass that adds `1 + add_error` times that.
#[derive(Clone, Copy)]
struct SumSin {
    grad_error: f64,
    add_error: f64,
    nan_at: Option<(usize, usize)>,
}

const SUM_SIN: SumSin = SumSin {
    grad_error: 0.0,
    add_error: 0.0,
    nan_at: None,
};

thread_local! {
    static EVALS: Cell<usize> = const { Cell::new(0) };
}

impl Rule<f64> for SumSin {
    fn name(&self) -> &'static str {
        "SumSin"
    }
    fn arity(&self) -> usize {
        1
    }
    fn shapes(&self, _x: &[Shape]) -> matgrad::Result<Shapes> {
        Ok(smallvec![Shape(1, 1)])
    }
    fn saves(&self, _: &[bool]) -> Saves {
        Saves::NONE.input(0)
    }
    fn eval(
        &self,
        x: &[ArrayView2<'_, f64>],
        y: &mut [ArrayViewMut2<'_, f64>],
        _: &mut [f64],
    ) -> matgrad::Result<()> {
        EVALS.with(|c| c.set(c.get() + 1));
        y[0][(0, 0)] = x[0].iter().map(|v| v.sin()).sum();
        Ok(())
    }
    fn pullback(
        &self,
        x: &[ArrayView2<'_, f64>],
        _y: &[ArrayView2<'_, f64>],
        ybar: &Partials<'_, '_, f64>,
        grads: &mut [Grad<'_, f64>],
        _: &mut [f64],
    ) -> matgrad::Result<()> {
        let c = ybar.view(0)[(0, 0)] * (1.0 + self.grad_error);
        if let Some((mut g, acc)) = grads[0].target() {
            let k = match acc {
                Accum::Replace => 1.0,
                Accum::Add => 1.0 + self.add_error,
            };
            for ((i, j), g) in g.indexed_iter_mut() {
                let v = if self.nan_at == Some((i, j)) {
                    f64::NAN
                } else {
                    c * x[0][(i, j)].cos() * k
                };
                acc.store(g, v);
            }
        }
        Ok(())
    }
    fn pushforward(
        &self,
        x: &[ArrayView2<'_, f64>],
        _y: &[ArrayView2<'_, f64>],
        xdot: &Partials<'_, '_, f64>,
        ydot: &mut [ArrayViewMut2<'_, f64>],
        _: &mut [f64],
    ) -> matgrad::Result<()> {
        let d = xdot.view(0);
        ydot[0][(0, 0)] = x[0]
            .iter()
            .zip(d.iter())
            .map(|(v, t)| v.cos() * t)
            .sum::<f64>()
            * (1.0 + self.grad_error);
        Ok(())
    }
}

#[test]
fn a_nan_anywhere_in_the_comparisons_is_a_failure() {
    let a = randn(3, 4, 32);
    let rule = SumSin {
        nan_at: Some((1, 2)),
        ..SUM_SIN
    };
    for full in [true, false] {
        let r = Checker::new()
            .full_jacobian(full)
            .check(&rule, &[a.view()])
            .unwrap();
        assert!(!r.passed(), "{r}");
        assert!(r.inputs[0].vjp_error.is_nan(), "{r}");
    }
    let r = Checker::new().check(&SUM_SIN, &[a.view()]).unwrap();
    r.assert_passed();
}

#[test]
fn the_step_is_scaled_by_the_entries_a_structured_input_reads() {
    let mut rng = random::rng(33);
    let a = random::spd::<f64>(4, &mut rng);
    let l = random::lower::<f64>(4, &mut rng);
    let b = randn(4, 3, 34);
    for junk in [1e300, f64::INFINITY, f64::NAN] {
        let mut a = a.clone();
        let mut l = l.clone();
        for i in 0..4 {
            for j in i + 1..4 {
                a[(i, j)] = junk;
                l[(i, j)] = junk;
            }
        }
        let lower = Cholesky::new().convention(Convention::Lower);
        Checker::new()
            .check(&lower, &[a.view()])
            .unwrap()
            .assert_passed();
        Checker::new()
            .check(&TriSolve::lower(), &[l.view(), b.view()])
            .unwrap()
            .assert_passed();
        Checker::new()
            .check(&ChoSolve, &[l.view(), b.view()])
            .unwrap()
            .assert_passed();
        Checker::new()
            .check(&CholLogDet, &[l.view()])
            .unwrap()
            .assert_passed();
    }
    // A non-finite entry the primitive reads is named.
    let mut bad = a.clone();
    bad[(2, 1)] = f64::INFINITY;
    let lower = Cholesky::new().convention(Convention::Lower);
    let e = Checker::new().check(&lower, &[bad.view()]).unwrap_err();
    assert!(matches!(e, Error::NonFinite { row: 2, col: 1, .. }), "{e}");
}

/// The first non-finite entry in row-major order is the one named, whatever order the
/// matrix and the output buffer are stored in: with both column-major, (1, 1) comes
/// before (2, 0) although (2, 0) is met first in memory.
#[test]
fn the_first_non_finite_entry_is_named_in_row_major_order_for_column_major_buffers() {
    let mut a = random::spd::<f64>(4, &mut random::rng(131));
    a[(2, 0)] = f64::NAN;
    a[(1, 1)] = f64::INFINITY;
    let mut af = Array2::<f64>::zeros((4, 4).f());
    af.assign(&a);
    let mut l = Array2::<f64>::zeros((4, 4).f());
    let e = Cholesky::new()
        .forward_into(&[af.view()], &mut [l.view_mut()], None)
        .unwrap_err();
    assert!(matches!(e, Error::NonFinite { row: 1, col: 1, .. }), "{e}");
}

#[test]
fn derivatives_near_zero_have_an_absolute_floor() {
    // At entries of 10⁻²², (x²)' = 2x is far below what differences of (x ± h)² ≈ h²
    // resolve (about ε·h²/h): without a floor their rounding is a relative error of 1.
    let a = randn(2, 3, 35) * 1e-22;
    let r = Checker::new().check(&Map(Square), &[a.view()]).unwrap();
    r.assert_passed();
    // tanh' rounds to 0 at 20, as do its finite differences.
    let a = randn(2, 3, 35).mapv(|v| 20.0 + v.abs());
    Checker::new()
        .check(&Map(Tanh), &[a.view()])
        .unwrap()
        .assert_passed();
    // The floor does not hide a wrong gradient of ordinary size.
    let b = randn(2, 3, 36);
    let wrong = SumSin {
        grad_error: 1e-3,
        ..SUM_SIN
    };
    assert!(!Checker::new().check(&wrong, &[b.view()]).unwrap().passed());
}

/// `C = A ⊙ A` plus `10¹²` in entry `(0, 0)`, with `Ā = 2(1 + back)A ⊙ C̄` and
/// `Ċ = 2(1 + fwd)A ⊙ Ȧ`: one entry whose finite differences are rounding, next to
/// others that are exact.
struct Spiked {
    back: f64,
    fwd: f64,
}

impl Rule<f64> for Spiked {
    fn name(&self) -> &'static str {
        "Spiked"
    }
    fn arity(&self) -> usize {
        1
    }
    fn shapes(&self, x: &[Shape]) -> matgrad::Result<Shapes> {
        Ok(smallvec![x[0]])
    }
    fn eval(
        &self,
        x: &[ArrayView2<'_, f64>],
        y: &mut [ArrayViewMut2<'_, f64>],
        _: &mut [f64],
    ) -> matgrad::Result<()> {
        y[0].zip_mut_with(&x[0], |c, &a| *c = a * a);
        y[0][(0, 0)] += 1e12;
        Ok(())
    }
    fn pullback(
        &self,
        x: &[ArrayView2<'_, f64>],
        _y: &[ArrayView2<'_, f64>],
        ybar: &Partials<'_, '_, f64>,
        grads: &mut [Grad<'_, f64>],
        _: &mut [f64],
    ) -> matgrad::Result<()> {
        let k = 2.0 * (1.0 + self.back);
        if let Some((mut g, acc)) = grads[0].target() {
            ndarray::Zip::from(&mut g)
                .and(&x[0])
                .and(&ybar.view(0))
                .for_each(|g, &a, &c| acc.store(g, k * a * c));
        }
        Ok(())
    }
    fn pushforward(
        &self,
        x: &[ArrayView2<'_, f64>],
        _y: &[ArrayView2<'_, f64>],
        xdot: &Partials<'_, '_, f64>,
        ydot: &mut [ArrayViewMut2<'_, f64>],
        _: &mut [f64],
    ) -> matgrad::Result<()> {
        let k = 2.0 * (1.0 + self.fwd);
        ndarray::Zip::from(&mut ydot[0])
            .and(&x[0])
            .and(&xdot.view(0))
            .for_each(|d, &a, &t| *d = k * a * t);
        Ok(())
    }
}

#[test]
fn the_floor_of_one_noisy_entry_does_not_hide_an_error_in_the_others() {
    let a = randn(3, 4, 38);
    for full in [true, false] {
        let check = |back, fwd| {
            Checker::new()
                .full_jacobian(full)
                .check(&Spiked { back, fwd }, &[a.view()])
                .unwrap()
        };
        // Correct: the differences of entry (0, 0) are rounding, which the floor allows.
        check(0.0, 0.0).assert_passed();
        // The JVP is compared entry by entry, each against its own rounding.
        let r = check(1e-3, 1e-3);
        assert!(!r.passed(), "{r}");
        assert!(r.inputs[0].jvp_error > 1e-6, "{r}");
        if full {
            assert!(r.inputs[0].jacobian.unwrap().error > 1e-6, "{r}");
        }
        // The VJP is one number, ⟨X̄, U⟩, whose finite difference carries (0, 0)'s
        // rounding; a wrong reverse rule alone fails the adjoint identity.
        let r = check(1e-3, 0.0);
        assert!(!r.passed(), "{r}");
        assert!(r.adjoint_error > 1e-6, "{r}");
    }
}

#[test]
fn an_error_at_a_perturbed_point_says_so() {
    // Positive definite, but so nearly singular that a step of 10⁻⁴ leaves the cone.
    let mut rng = random::rng(37);
    let q = random::randn::<f64>(3, 3, &mut rng);
    let v = q.column(0).to_owned();
    let a = Array2::from_shape_fn((3, 3), |(i, j)| {
        v[i] * v[j] + if i == j { 1e-9 } else { 0.0 }
    });
    assert!(Cholesky::new().forward(&[a.view()]).is_ok());
    let e = Checker::new()
        .check(&Cholesky::new(), &[a.view()])
        .unwrap_err();
    let text = e.to_string();
    assert!(text.contains("perturbed point"), "{text}");
    assert!(matches!(e, Error::Perturbed { .. }), "{e}");
}

// ---------------------------------------------------------- the checker's options

#[test]
fn the_seed_chooses_the_directions() {
    let a = randn(5, 6, 40);
    let err = |c: Checker| c.check(&Map(Sin), &[a.view()]).unwrap().inputs[0].vjp_error;
    assert_eq!(
        err(Checker::new().seed(1)).to_bits(),
        err(Checker::new().seed(1)).to_bits()
    );
    assert_ne!(
        err(Checker::new().seed(1)).to_bits(),
        err(Checker::new().seed(2)).to_bits()
    );
    assert_ne!(
        err(Checker::new()).to_bits(),
        err(Checker::new().seed(2)).to_bits()
    );
}

#[test]
fn the_tolerances_decide_what_passes() {
    let a = randn(3, 4, 41);
    let imprecise = SumSin {
        grad_error: 1e-5,
        ..SUM_SIN
    };
    assert!(!Checker::new()
        .check(&imprecise, &[a.view()])
        .unwrap()
        .passed());
    let r = Checker::new()
        .tol(1e-3)
        .check(&imprecise, &[a.view()])
        .unwrap();
    // The adjoint identity holds exactly: only the finite-difference tolerance matters.
    r.assert_passed();
    assert_eq!(r.tolerances.fd, 1e-3);

    let adds_more = SumSin {
        add_error: 1e-9,
        ..SUM_SIN
    };
    let r = Checker::new().check(&adds_more, &[a.view()]).unwrap();
    assert!(!r.passed(), "{r}");
    assert!(r.inputs[0].accumulate_error > 1e-11, "{r}");
    let r = Checker::new()
        .exact_tol(1e-7)
        .check(&adds_more, &[a.view()])
        .unwrap();
    r.assert_passed();
    assert_eq!(r.tolerances.exact, 1e-7);

    let both = SumSin {
        grad_error: 1e-5,
        add_error: 1e-9,
        ..SUM_SIN
    };
    let t = Tolerances {
        fd: 1e-3,
        exact: 1e-7,
        step: 1e-3,
    };
    let r = Checker::new()
        .tolerances(t)
        .check(&both, &[a.view()])
        .unwrap();
    r.assert_passed();
    assert_eq!(r.tolerances, t);
    assert_eq!(Checker::new().tolerances(t).tolerances_for::<f32>(), t);
}

#[test]
fn the_step_sets_the_finite_differences() {
    let a = randn(3, 4, 42);
    Checker::new()
        .check(&Map(Exp), &[a.view()])
        .unwrap()
        .assert_passed();
    // A step of 0.5 leaves an h⁴ error of about 10⁻³ after Richardson extrapolation.
    let r = Checker::new()
        .step(0.5)
        .check(&Map(Exp), &[a.view()])
        .unwrap();
    assert!(!r.passed(), "{r}");
    assert_eq!(r.tolerances.step, 0.5);
    assert!(r.inputs[0].vjp_error > 1e-6, "{r}");
}

#[test]
fn the_number_of_directions_is_the_number_of_finite_differences() {
    let a = randn(12, 12, 43);
    let evals = |c: Checker| {
        EVALS.with(|c| c.set(0));
        c.full_jacobian(false)
            .check(&SUM_SIN, &[a.view()])
            .unwrap()
            .assert_passed();
        EVALS.with(Cell::get)
    };
    // Each direction costs two central differences (h and h/2) of two evaluations.
    assert_eq!(
        evals(Checker::new().directions(5)) - evals(Checker::new().directions(1)),
        16
    );
    assert_eq!(evals(Checker::new().directions(3)), evals(Checker::new()));
}

#[test]
fn the_full_jacobian_runs_when_asked_and_only_then() {
    let small = randn(2, 3, 44);
    let large = randn(12, 12, 45);
    let jac = |c: Checker, a: &Array2<f64>| {
        c.check(&Map(Sin), &[a.view()]).unwrap().inputs[0]
            .jacobian
            .is_some()
    };
    assert!(jac(Checker::new(), &small));
    assert!(!jac(Checker::new(), &large));
    assert!(jac(Checker::new().full_jacobian(true), &large));
    assert!(!jac(Checker::new().full_jacobian(false), &small));
}

#[test]
fn the_full_jacobian_names_the_wrong_element() {
    let a = randn(3, 4, 46);
    let r = Checker::new()
        .full_jacobian(true)
        .check(
            &SumSin {
                nan_at: Some((2, 1)),
                ..SUM_SIN
            },
            &[a.view()],
        )
        .unwrap();
    let w = r.inputs[0].jacobian.unwrap();
    assert_eq!(w.input_index, (2, 1), "{r}");
    assert!(
        r.failures().iter().any(|f| f.contains("at input (2, 1)")),
        "{r}"
    );
}

#[test]
#[should_panic(expected = "gradient check failed")]
fn assert_rule_panics_on_a_wrong_rule() {
    let a = randn(3, 4, 47);
    let wrong = SumSin {
        grad_error: 1e-3,
        ..SUM_SIN
    };
    matgrad::check::assert_rule(&wrong, &[a.view()]);
}

#[test]
fn assert_rule_accepts_a_right_rule() {
    let a = randn(3, 4, 48);
    matgrad::check::assert_rule(&SUM_SIN, &[a.view()]);
}

/// `c = Σ sin A` in both precisions, wrong by a relative `1e-3` in `Ā`.
struct WrongBoth;

impl<T: Real> Rule<T> for WrongBoth {
    fn name(&self) -> &'static str {
        "WrongBoth"
    }
    fn arity(&self) -> usize {
        1
    }
    fn shapes(&self, _x: &[Shape]) -> matgrad::Result<Shapes> {
        Ok(smallvec![Shape(1, 1)])
    }
    fn eval(
        &self,
        x: &[ArrayView2<'_, T>],
        y: &mut [ArrayViewMut2<'_, T>],
        _: &mut [T],
    ) -> matgrad::Result<()> {
        y[0][(0, 0)] = x[0].iter().map(|v| v.sin()).sum();
        Ok(())
    }
    fn pullback(
        &self,
        x: &[ArrayView2<'_, T>],
        _y: &[ArrayView2<'_, T>],
        ybar: &Partials<'_, '_, T>,
        grads: &mut [Grad<'_, T>],
        _: &mut [T],
    ) -> matgrad::Result<()> {
        let c = ybar.view(0)[(0, 0)] * T::of(1.1);
        if let Some((mut g, acc)) = grads[0].target() {
            for (g, v) in g.iter_mut().zip(x[0].iter()) {
                acc.store(g, c * v.cos());
            }
        }
        Ok(())
    }
    fn pushforward(
        &self,
        x: &[ArrayView2<'_, T>],
        _y: &[ArrayView2<'_, T>],
        xdot: &Partials<'_, '_, T>,
        ydot: &mut [ArrayViewMut2<'_, T>],
        _: &mut [T],
    ) -> matgrad::Result<()> {
        let d = xdot.view(0);
        ydot[0][(0, 0)] = x[0].iter().zip(d.iter()).map(|(v, t)| v.cos() * *t).sum();
        Ok(())
    }
}

#[test]
#[should_panic(expected = "gradient check failed")]
fn assert_rule_precisions_panics_on_a_wrong_rule() {
    let a = randn(3, 4, 49);
    matgrad::check::assert_rule_precisions(&WrongBoth, &[a.view()]);
}

#[test]
#[should_panic(expected = "gradient check failed")]
fn checker_assert_precisions_panics_on_a_wrong_rule() {
    let a = randn(3, 4, 50);
    Checker::new().assert_precisions(&WrongBoth, &[a.view()]);
}

// ------------------------------------------------------------- subnormal inputs

/// `2ᵏ`, exact for `|k| ≤ 1000`.
fn pow2(k: i32) -> f64 {
    2f64.powi(k)
}

/// The largest relative difference of `got` from `want`, entry by entry.
fn worst_rel(got: &Array2<f64>, want: &Array2<f64>) -> f64 {
    got.iter()
        .zip(want)
        .map(|(&g, &w)| {
            if w == 0.0 {
                g.abs()
            } else {
                ((g - w) / w).abs()
            }
        })
        .fold(0.0, f64::max)
}

#[test]
fn the_frobenius_norm_of_subnormal_entries_and_its_gradient_are_accurate() {
    let a = randn(3, 5, 40);
    let cbar = 0.37;
    for k in [1030, 1040, 1060] {
        let tiny = a.mapv(|v| v * pow2(-500) * pow2(500 - k));
        // ‖2⁻ᵏA‖ = 2⁻ᵏ‖A‖ and ∂‖A‖/∂A = A/‖A‖ is invariant under the scale: the
        // reference is computed in the normal range, from the entries as rounded.
        let back = tiny.mapv(|v| v * pow2(500) * pow2(k - 500));
        let c_ref = back.iter().map(|v| v * v).sum::<f64>().sqrt();
        let g_ref = back.mapv(|v| cbar * v / c_ref);
        let c = FrobeniusNorm.apply([tiny.view()]).unwrap();
        let want = c_ref * pow2(-500) * pow2(500 - k);
        let got = c.value()[(0, 0)];
        // One rounding at the subnormal spacing 2⁻¹⁰⁷⁴.
        assert!(
            (got - want).abs() <= pow2(-1000) * pow2(-74),
            "k = {k}: {got:e}, want {want:e}"
        );
        let [g] = c.backward(array![[cbar]].view()).unwrap();
        assert!(
            worst_rel(&g, &g_ref) < 4.0 * f64::EPSILON,
            "k = {k}: {} {g:?} {g_ref:?}",
            worst_rel(&g, &g_ref)
        );
        // The tangent ⟨A/‖A‖, Ȧ⟩ at the same point.
        let adot = randn(3, 5, 41);
        let t = c.jvp([adot.view()]).unwrap();
        let t_ref: f64 = back.iter().zip(&adot).map(|(x, d)| x * d).sum::<f64>() / c_ref;
        assert!(
            ((t[(0, 0)] - t_ref) / t_ref).abs() < 8.0 * f64::EPSILON,
            "{t:?}"
        );
    }
    // A huge norm and a subnormal cotangent: c̄·A/c is subnormal, not zero; a tiny norm
    // and a huge cotangent: c̄·A/c is finite.
    for (e, cbar) in [(997, 1e-310), (-997, 1e300), (-1040, 1e-5)] {
        let x = a.mapv(|v| v * pow2(e / 2) * pow2(e - e / 2));
        let c = FrobeniusNorm.apply([x.view()]).unwrap();
        let [g] = c.backward(array![[cbar]].view()).unwrap();
        let back = x.mapv(|v| v * pow2(-e / 2) * pow2(e / 2 - e));
        let c_ref = back.iter().map(|v| v * v).sum::<f64>().sqrt();
        let want = back.mapv(|v| v / c_ref * cbar);
        let err = g
            .iter()
            .zip(&want)
            .map(|(&g, &w)| {
                (g - w).abs() / (w.abs() * f64::EPSILON * 4.0 + pow2(-1000) * pow2(-73))
            })
            .fold(0.0, f64::max);
        assert!(err <= 1.0, "2^{e}, c̄ {cbar:e}: {g:?} want {want:?}");
    }
}

#[test]
fn lu_primitives_factor_a_matrix_of_subnormal_numbers() {
    let (a0, b0) = (randn(4, 4, 42), randn(4, 3, 43));
    let k = 1040;
    let down = |x: &Array2<f64>| x.mapv(|v| v * pow2(-500) * pow2(500 - k));
    let up = |x: &Array2<f64>| x.mapv(|v| v * pow2(500) * pow2(k - 500));
    let (a, b) = (down(&a0), down(&b0));
    // The same matrices in the normal range, as rounded: the references.
    let (an, bn) = (up(&a), up(&b));
    // det A = 2⁻⁴¹⁶⁰ det Aₙ underflows to zero: a value, not an overflow.
    let d = Det.apply([a.view()]).unwrap();
    assert_eq!(d.value()[(0, 0)], 0.0);
    let s = SlogDet.apply([a.view()]).unwrap();
    let sn = SlogDet.apply([an.view()]).unwrap();
    assert_eq!(s.outputs()[0][(0, 0)], sn.outputs()[0][(0, 0)]);
    let want = sn.outputs()[1][(0, 0)] - 4.0 * f64::from(k) * std::f64::consts::LN_2;
    let got = s.outputs()[1][(0, 0)];
    assert!(((got - want) / want).abs() < 1e-14, "{got} {want}");
    // X = A⁻¹B = Aₙ⁻¹Bₙ, normal; its residual factors are finite.
    for solve in [LuSolve::new(), LuSolve::transposed()] {
        let x = solve.apply([a.view(), b.view()]).unwrap();
        let xn = solve.apply([an.view(), bn.view()]).unwrap();
        assert!(
            worst_rel(&x.value().to_owned(), &xn.value().to_owned()) < 1e-13,
            "{:?}",
            x.value()
        );
        assert!(x
            .residuals()
            .iter()
            .flat_map(|r| r.iter())
            .all(|v| v.is_finite()));
    }
    // In f32, 2⁻¹⁴⁰ puts the entries below f32's normal range.
    let a32 = a0.mapv(|v| (v * pow2(-140)) as f32);
    let an32 = a32.mapv(|v| f64::from(v) * pow2(140));
    let s = SlogDet.apply([a32.view()]).unwrap();
    let sn = SlogDet.apply([an32.view()]).unwrap();
    let want = sn.outputs()[1][(0, 0)] - 4.0 * 140.0 * std::f64::consts::LN_2;
    let got = f64::from(s.outputs()[1][(0, 0)]);
    assert!(((got - want) / want).abs() < 1e-6, "{got} {want}");
    assert_eq!(Det.apply([a32.view()]).unwrap().value()[(0, 0)], 0.0);
}

#[test]
fn lu_primitives_keep_small_entries_of_a_matrix_with_huge_ones() {
    // A = P·U with U's diagonal 2¹⁰⁰⁰, 2¹⁰⁰⁰, 1.5·2⁻⁹⁷⁷: det A = −1.5·2¹⁰²³ is finite
    // and A is invertible, though A scaled by 2⁻¹⁰⁰⁰ (to bring its largest entry near
    // 1) has an entry of 1.5·2⁻¹⁹⁷⁷, which is zero in f64.
    let (p, t) = (pow2(1000), 1.5 * pow2(-977));
    let a = array![[0.0, p, 0.75], [p, 3.25, -1.5], [0.0, 0.0, t]];
    let d = Det.apply([a.view()]).unwrap();
    assert_eq!(d.value()[(0, 0)], -1.5 * pow2(1000) * pow2(23));
    let s = SlogDet.apply([a.view()]).unwrap();
    assert_eq!(s.outputs()[0][(0, 0)], -1.0);
    let want = 1.5f64.ln() + 1023.0 * std::f64::consts::LN_2;
    assert!(((s.outputs()[1][(0, 0)] - want) / want).abs() < 1e-15);
    // A⁻¹ by back substitution on U, rows of P·U swapped back: exact in binary.
    let inv = Inverse.apply([a.view()]).unwrap();
    let (ip, it) = (pow2(-1000), 1.0 / t);
    let u_inv = array![
        [ip, -3.25 * ip * ip, (3.25 * ip * 0.75 + 1.5) * ip * it],
        [0.0, ip, -0.75 * ip * it],
        [0.0, 0.0, it]
    ];
    let want = array![
        [u_inv[(0, 1)], u_inv[(0, 0)], u_inv[(0, 2)]],
        [u_inv[(1, 1)], u_inv[(1, 0)], u_inv[(1, 2)]],
        [u_inv[(2, 1)], u_inv[(2, 0)], u_inv[(2, 2)]]
    ];
    assert!(
        worst_rel(&inv.value().to_owned(), &want) < 4.0 * f64::EPSILON,
        "{:?}",
        inv.value()
    );
    // X = A⁻¹B with B = A·X₀ for an X₀ of moderate entries.
    let x0 = randn(3, 2, 67);
    let b = a.dot(&x0);
    let x = LuSolve::new().apply([a.view(), b.view()]).unwrap();
    assert!(
        normwise(&x.value().to_owned(), &x0) < 1e-12,
        "{:?}",
        x.value()
    );
}

#[test]
fn an_lu_solve_keeps_columns_of_b_far_smaller_than_its_largest() {
    // B's first column is near 2¹⁰⁰⁰, its second near 2⁻¹⁰⁰⁰: each column of X = A⁻¹B
    // is its own solve, and B scaled by 2⁻¹⁰⁰⁰ as a whole would flush the second to 0.
    let a = randn(4, 4, 68) + Array2::<f64>::eye(4) * 3.0;
    let c = randn(4, 2, 69);
    let mut b = c.clone();
    b.column_mut(0).mapv_inplace(|v| v * pow2(1000));
    b.column_mut(1).mapv_inplace(|v| v * pow2(-1000));
    for solve in [LuSolve::new(), LuSolve::transposed()] {
        let x = solve
            .apply([a.view(), b.view()])
            .unwrap()
            .value()
            .to_owned();
        let xc = solve
            .apply([a.view(), c.view()])
            .unwrap()
            .value()
            .to_owned();
        for (j, k) in [(0, 1000), (1, -1000)] {
            let got = x.column(j).mapv(|v| v * pow2(-k));
            let want = xc.column(j).to_owned();
            let err = normwise(
                &got.insert_axis(ndarray::Axis(1)),
                &want.insert_axis(ndarray::Axis(1)),
            );
            assert!(err < 1e-14, "{solve:?} column {j}: {err:e} {x:?}");
        }
    }
}

// ------------------------------------------------- entries near the overflow threshold

/// `x` scaled so that its largest magnitude is `top`, rounded to `f32`.
fn scaled_f32(x: &Array2<f64>, top: f64) -> Array2<f32> {
    let m = x.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    x.mapv(|v| (v * (top / m)) as f32)
}

/// `max|got − want| / max|want|`.
fn normwise(got: &Array2<f64>, want: &Array2<f64>) -> f64 {
    let d = (got - want).iter().fold(0.0f64, |m, v| m.max(v.abs()));
    d / want.iter().fold(0.0f64, |m, v| m.max(v.abs()))
}

fn wide(x: &Array2<f32>) -> Array2<f64> {
    x.mapv(f64::from)
}

#[test]
fn lu_primitives_factor_a_matrix_of_entries_near_the_overflow_threshold() {
    // f32 entries up to 3·10³⁸ (f32::MAX ≈ 3.4·10³⁸): getrf's updates would overflow.
    let a = scaled_f32(&randn(8, 8, 60), 3e38);
    let b = randn(8, 5, 61).mapv(|v| v as f32);
    // The references: the same rounded values in f64, far from its overflow threshold.
    let (a64, b64) = (wide(&a), wide(&b));
    let s = SlogDet.apply([a.view()]).unwrap();
    let s64 = SlogDet.apply([a64.view()]).unwrap();
    assert_eq!(f64::from(s.outputs()[0][(0, 0)]), s64.outputs()[0][(0, 0)]);
    let (got, want) = (f64::from(s.outputs()[1][(0, 0)]), s64.outputs()[1][(0, 0)]);
    assert!(((got - want) / want).abs() < 1e-6, "{got} {want}");
    for solve in [LuSolve::new(), LuSolve::transposed()] {
        let x = solve.apply([a.view(), b.view()]).unwrap();
        let x64 = solve.apply([a64.view(), b64.view()]).unwrap();
        let err = normwise(&wide(&x.value().to_owned()), &x64.value().to_owned());
        assert!(err < 1e-4, "{solve:?}: {err:e}");
    }
    let c = Inverse.apply([a.view()]).unwrap();
    let c64 = Inverse.apply([a64.view()]).unwrap();
    let err = normwise(&wide(&c.value().to_owned()), &c64.value().to_owned());
    assert!(err < 1e-4, "inverse: {err:e}");

    // Moderate A (10¹⁹), B near the threshold: X ≈ 10¹⁹ is finite, the unscaled
    // substitution with B is not.
    let a = scaled_f32(&randn(5, 5, 62), 1.8e19);
    let b = scaled_f32(&randn(5, 7, 63), 1.7e38);
    let (a64, b64) = (wide(&a), wide(&b));
    for solve in [LuSolve::new(), LuSolve::transposed()] {
        let x = solve.apply([a.view(), b.view()]).unwrap();
        let x64 = solve.apply([a64.view(), b64.view()]).unwrap();
        let err = normwise(&wide(&x.value().to_owned()), &x64.value().to_owned());
        assert!(err < 1e-4, "{solve:?}: {err:e}");
    }
}

#[test]
fn lu_residual_factors_that_overflow_are_refused_by_the_rules() {
    // A = [[t, t], [−t, t]] with t = 3·10³⁸: U₂₂ = 2t overflows f32, while X = A⁻¹B and
    // log|det A| do not.
    let t = 3e38f32;
    let a = array![[t, t], [-t, t]];
    let b = scaled_f32(&randn(2, 3, 64), 1e38);
    let x = LuSolve::new().apply([a.view(), b.view()]).unwrap();
    let (a64, b64) = (wide(&a), wide(&b));
    let want = LuSolve::new().apply([a64.view(), b64.view()]).unwrap();
    let err = normwise(&wide(&x.value().to_owned()), &want.value().to_owned());
    assert!(err < 1e-6, "{err:e}");
    assert!(x.residuals()[0].iter().any(|v| v.is_infinite()));
    let xbar = randn(2, 3, 65).mapv(|v| v as f32);
    let e = x.backward(xbar.view()).unwrap_err();
    assert!(matches!(e, Error::NonFinite { name: "LU", .. }), "{e}");
    let e = x.jvp([a.view(), b.view()]).unwrap_err();
    assert!(matches!(e, Error::NonFinite { name: "LU", .. }), "{e}");
    let s = SlogDet.apply([a.view()]).unwrap();
    let l = f64::from(s.outputs()[1][(0, 0)]);
    let want = (2.0 * 3e38f64 * 3e38).ln();
    assert!(((l - want) / want).abs() < 1e-6, "{l} {want}");
}

#[test]
fn a_triangular_solve_with_a_right_side_near_the_overflow_threshold_is_exact() {
    // f32, X = B·L⁻¹ with L of entries near 10¹², B near 1.7·10³⁸: X ≈ 10²⁷.
    let mut rng = random::rng(66);
    let l = random::lower::<f64>(24, &mut rng).mapv(|v| v * 1e12);
    let l32 = l.mapv(|v| v as f32);
    let b = scaled_f32(&randn(5, 24, 67), 1.7e38);
    for op in [
        TriSolve::lower().right(),
        TriSolve::lower_t().right(),
        TriSolve::lower(),
    ] {
        let b = if op.side == Side::Left {
            b.t().to_owned()
        } else {
            b.clone()
        };
        let x = op.apply([l32.view(), b.view()]).unwrap();
        let (l64, b64) = (wide(&l32), wide(&b));
        let want = op.apply([l64.view(), b64.view()]).unwrap();
        let err = normwise(&wide(&x.value().to_owned()), &want.value().to_owned());
        assert!(err < 1e-4, "{op:?}: {err:e}");
    }
    // f32, L near the threshold, B moderate: X ≈ 10⁻³⁸·B is scaled, not substituted.
    let lh = scaled_f32(&random::lower::<f64>(6, &mut rng), 1.7e38);
    let bh = randn(6, 4, 68).mapv(|v| v as f32);
    let x = TriSolve::lower().apply([lh.view(), bh.view()]).unwrap();
    let (lh64, bh64) = (wide(&lh), wide(&bh));
    let want = TriSolve::lower().apply([lh64.view(), bh64.view()]).unwrap();
    let got = wide(&x.value().to_owned());
    let floor = 1e3 * f64::from(f32::MIN_POSITIVE);
    let d = (&got - &want.value().to_owned())
        .iter()
        .fold(0.0f64, |m, v| m.max(v.abs()));
    let top = want.value().iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(d <= 1e-4 * top + floor, "{d:e} of {top:e}");
    // f64, X = B·L⁻ᵀ whose exact value overflows: a typed error, not NaN.
    let l = random::lower::<f64>(43, &mut rng);
    let b = randn(3, 43, 69).mapv(|v| v * 1e307);
    // X·10⁻¹⁰ from B·10⁻¹⁰ has an entry beyond 10⁻¹⁰·MAX.
    let small = b.mapv(|v| v * 1e-10);
    let want = TriSolve::lower_t().right().apply([l.view(), small.view()]);
    assert!(want
        .unwrap()
        .value()
        .iter()
        .any(|v| v.abs() > 1e-10 * f64::MAX));
    let e = TriSolve::lower_t()
        .right()
        .forward(&[l.view(), b.view()])
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Overflow {
                name: "X",
                dtype: "f64",
                ..
            }
        ),
        "{e}"
    );
}

/// A matrix with a huge entry beside small ones is factored as it is, so a solve whose
/// answer is representable returns it: `A = diag(2¹⁰⁰⁰, 1)` scaled by `2⁻¹⁰⁰⁰` would be
/// `diag(1, 2⁻¹⁰⁰⁰)`, whose solve with `B = (1, 2¹⁰⁰)` overflows at the second pivot.
/// When the factors do overflow and so are taken of the scaled matrix, and the scaled
/// solve overflows too, the error names the pivot of `A` itself, not of `2ᵉA`.
#[test]
fn an_overflowing_scaled_solve_names_the_pivot_of_the_unscaled_matrix() {
    let a = array![[2f64.powi(1000), 0.0], [0.0, 1.0]];
    let b = array![[1.0], [2f64.powi(100)]];
    let x = LuSolve::new().apply([a.view(), b.view()]).unwrap();
    assert_eq!(x.value(), array![[2f64.powi(-1000)], [2f64.powi(100)]]);
    // U₂₂ = 2t overflows unscaled; scaled by 2⁻¹⁰⁰⁰, the third pivot is 2⁻¹⁰⁰⁰ and the
    // solve for B₃ = 2¹⁰⁰ reaches 2¹¹⁰⁰ before the scale is taken back. (X = 2¹⁰⁰e₃ is
    // representable: a limit of the scaled solve, typed rather than an infinity.)
    let t = 1.5e308;
    let a = array![[t, t, 0.0], [-t, t, 0.0], [0.0, 0.0, 1.0]];
    let b = array![[0.0], [0.0], [2f64.powi(100)]];
    match LuSolve::new().forward(&[a.view(), b.view()]) {
        Err(Error::IllConditioned { index, value, .. }) => {
            assert_eq!((index, value), (2, 1.0));
        }
        r => panic!("{r:?}"),
    }
}
