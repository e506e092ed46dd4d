//! One fuzz case: a primitive, its inputs in some layouts and value classes, and a
//! scenario of calls, each outcome judged as a typed error for an invalid input, an
//! answer that agrees with the references and invariants, or a failure.

use crate::gen::{self, apply_class, randn, to64, to_t, Layout, Stored, Values};
use crate::linalg::{self, mm};
use crate::prims::{kind, Kinds, Ref, Spec, Verdict};
use matgrad::check::Checker;
use matgrad::prelude::*;
use matgrad::{Error, Real, Rule, Shape};
use ndarray::{Array2, ArrayView2, ArrayViewMut2, ShapeBuilder, Zip};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Multiple of `ε·bound` accepted against a reference.
const C: f64 = 64.0;

/// Every value error kind: allowed when a value the call reads is not finite.
const VALUE_KINDS: [&str; 7] = [
    "NotPositiveDefinite",
    "Singular",
    "NonFinite",
    "DegenerateEigenvalues",
    "ZeroSingularValue",
    "InvalidArgument",
    "Lapack",
];

/// What went wrong in one call.
#[derive(Clone, Debug)]
pub struct Failure {
    /// The class of failure.
    pub what: &'static str,
    /// The method called.
    pub method: &'static str,
    /// Details: the error, the worst entry.
    pub detail: String,
}

/// The result of one case.
pub struct Case {
    pub spec: String,
    pub prim: String,
    pub shapes: Vec<Shape>,
    pub layouts: Vec<Layout>,
    pub classes: Vec<Values>,
    pub scenario: &'static str,
    pub calls: u64,
    /// How the calls ended: "ok" (checked against the references), "rejected" (a typed
    /// error the harness expected), "unchecked" (an answer the harness cannot judge:
    /// hostile arguments, non-finite values).
    pub outcomes: Vec<&'static str>,
    pub failures: Vec<Failure>,
    pub log: Vec<String>,
}

struct Ctx<'s, T: Real> {
    spec: &'s Spec,
    op: Box<dyn Rule<T>>,
    shapes: Vec<Shape>,
    expected: Result<Vec<Shape>, Kinds>,
    /// The inputs as stored (layouts), and the matrices they show.
    stored: Vec<Stored<T>>,
    x: Vec<Array2<T>>,
    x64: Vec<Array2<f64>>,
    classes: Vec<Values>,
    rng: StdRng,
    calls: u64,
    outcomes: Vec<&'static str>,
    failures: Vec<Failure>,
    log: Vec<String>,
    verbose: bool,
    eps: f64,
    layouts: Vec<Layout>,
}

fn views<T>(a: &[Array2<T>]) -> Vec<ArrayView2<'_, T>> {
    a.iter().map(|x| x.view()).collect()
}

fn opt_views<T>(a: &[Option<Array2<T>>]) -> Vec<Option<ArrayView2<'_, T>>> {
    a.iter().map(|x| x.as_ref().map(|x| x.view())).collect()
}

fn shape_of<T>(a: &Array2<T>) -> Shape {
    Shape(a.nrows(), a.ncols())
}

/// A shape that differs from `s`.
fn wrong(s: Shape, rng: &mut StdRng) -> Shape {
    match rng.gen_range(0..3) {
        0 if s.0 != s.1 => Shape(s.1, s.0),
        1 => Shape(s.0, s.1 + 1),
        _ => Shape(s.0 + 1, s.1),
    }
}

/// Largest entrywise difference relative to the largest finite magnitude; NaN where
/// exactly one side is NaN or the infinities differ.
/// The largest entrywise difference relative to the largest finite entry, NaN where
/// one side is NaN or infinite and the other not. Near the overflow threshold `edge`
/// of the precision, whether a partial sum overflows depends on the order of the
/// terms: an infinity facing a finite value within a factor 64 of `edge`, with its sign,
/// counts as equal.
fn rel_diff(a: ArrayView2<'_, f64>, b: ArrayView2<'_, f64>, edge: f64) -> f64 {
    let mut d = 0.0f64;
    let mut s = 0.0f64;
    let near = |inf: f64, fin: f64| {
        inf.is_infinite()
            && fin.is_finite()
            && fin.abs() >= edge / 64.0
            && inf.signum() == fin.signum()
    };
    Zip::from(a).and(b).for_each(|&x, &y| {
        if near(x, y) || near(y, x) {
            return;
        }
        if x.is_nan() != y.is_nan() || (x.is_infinite() || y.is_infinite()) && x != y {
            d = f64::NAN;
        } else if !(x.is_nan() || x == y || d.is_nan()) {
            d = d.max((x - y).abs());
        }
        if x.is_finite() {
            s = s.max(x.abs());
        }
        if y.is_finite() {
            s = s.max(y.abs());
        }
    });
    if d.is_nan() {
        f64::NAN
    } else if s > 0.0 {
        d / s
    } else {
        d
    }
}

fn inner(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    Zip::from(a).and(b).fold(0.0, |s, x, y| s + x * y)
}

fn norm(a: &Array2<f64>) -> f64 {
    linalg::fro(a)
}

/// Whether a class keeps values moderate (finite differences and the finiteness of
/// gradients without a reference are judged only there).
fn moderate(v: Values) -> bool {
    matches!(v, Values::Natural | Values::Integers | Values::Zeros)
}

/// The primitive, its configuration and shapes of the case `seed`: the first draws of
/// [`run_case`], for a case that panicked.
pub fn describe(seed: u64) -> (String, String) {
    let (spec, shapes, _) = draw(seed);
    (spec.prim(), format!("{} shapes {shapes:?}", spec.name()))
}

fn draw(seed: u64) -> (Spec, Vec<Shape>, StdRng) {
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut spec, mut shapes) = Spec::random(&mut rng);
    if rng.gen_bool(0.12) {
        spec.mutate(&mut shapes, &mut rng);
    }
    (spec, shapes, rng)
}

/// Runs one case in precision `T` from its seed.
pub fn run_case<T: Real>(seed: u64, verbose: bool) -> Case {
    let (mut spec, shapes, mut rng) = draw(seed);
    // Configuration in f64 (polynomial coefficients) as the primitive rounds it.
    if let Spec::MatPoly(c) = &mut spec {
        c.iter_mut().for_each(|v| *v = T::of(*v).to64());
    }
    let expected = spec.expect(&shapes);
    let natural = if expected.is_ok() {
        spec.gen(&shapes, &mut rng)
    } else {
        shapes.iter().map(|s| randn(s.0, s.1, &mut rng)).collect()
    };
    let mut classes = Vec::new();
    let mut stored = Vec::new();
    for mut v in natural {
        let class = Values::random(&mut rng);
        apply_class::<T>(&mut v, class, &mut rng);
        classes.push(class);
        stored.push(Stored::new(&to_t::<T>(&v), Layout::random(&mut rng, true)));
    }
    // The matrices the views show (a broadcast repeats the first row).
    let x: Vec<Array2<T>> = stored.iter().map(|s| s.view().to_owned()).collect();
    let x64: Vec<Array2<f64>> = x.iter().map(|v| to64(v.view())).collect();
    let op = spec.build::<T>();
    let mut ctx = Ctx {
        spec: &spec,
        op,
        shapes: shapes.clone(),
        expected,
        stored,
        x,
        x64,
        classes: classes.clone(),
        rng,
        calls: 0,
        outcomes: Vec::new(),
        failures: Vec::new(),
        log: Vec::new(),
        verbose,
        eps: T::epsilon().to64(),
        layouts: Vec::new(),
    };
    ctx.layouts = ctx.stored.iter().map(|s| s.layout()).collect();
    let small = ctx.x.iter().map(|v| v.len()).sum::<usize>() <= 30;
    let scenario = match ctx.rng.gen_range(0..100) {
        0..=38 => "forward",
        39..=85 => "gradient",
        86..=96 => "hostile",
        97 => "huge",
        _ if small => "checker",
        _ => "forward",
    };
    if verbose {
        ctx.log.push(format!(
            "{} [{}] {scenario}: shapes {shapes:?}, classes {classes:?}, layouts {:?}, expected {:?}",
            spec.name(),
            T::NAME,
            ctx.layouts(),
            ctx.expected
        ));
        for (i, v) in ctx.x64.iter().enumerate() {
            if v.len() <= 64 {
                ctx.log.push(format!("input {i} =\n{v:e}"));
            }
        }
    }
    match scenario {
        "forward" => ctx.forward_scenario(),
        "gradient" => ctx.gradient_scenario(),
        "hostile" => ctx.hostile_scenario(),
        "huge" => ctx.huge_scenario(),
        _ => ctx.checker_scenario(),
    }
    let layouts = ctx.layouts();
    Case {
        spec: spec.name(),
        prim: spec.prim(),
        shapes,
        layouts,
        classes,
        scenario,
        calls: ctx.calls,
        outcomes: ctx.outcomes,
        failures: ctx.failures,
        log: ctx.log,
    }
}

impl<'s, T: Real> Ctx<'s, T> {
    fn note(&mut self, s: impl FnOnce() -> String) {
        if self.verbose {
            self.log.push(s());
        }
    }

    fn fail(&mut self, what: &'static str, method: &'static str, detail: String) {
        self.note(|| format!("FAILURE {what} in {method}: {detail}"));
        self.failures.push(Failure {
            what,
            method,
            detail,
        });
    }

    fn layouts(&self) -> Vec<Layout> {
        self.layouts.clone()
    }

    fn xv(&self) -> Vec<ArrayView2<'_, T>> {
        self.stored.iter().map(|s| s.view()).collect()
    }

    fn inputs_finite(&self) -> bool {
        let coeffs = match self.spec {
            Spec::MatPoly(c) => c.iter().all(|v| v.is_finite()),
            _ => true,
        };
        coeffs && self.x64.iter().all(gen::finite)
    }

    fn tmax(&self) -> f64 {
        T::max_value().to64()
    }

    fn floor(&self) -> f64 {
        1e3 * T::min_positive_value().to64()
    }

    /// An error: one of `allowed`, or a failure.
    fn judge_err(&mut self, method: &'static str, e: &Error, allowed: &[&str]) {
        self.note(|| format!("{method} -> error {e}"));
        // A pivot too small to divide by is a numerically singular matrix.
        let numerically_singular = kind(e) == "IllConditioned" && allowed.contains(&"Singular");
        if allowed.contains(&kind(e)) || numerically_singular {
            self.outcomes.push("rejected");
        } else {
            let what = if allowed.is_empty() {
                "valid input rejected"
            } else {
                "wrong error kind"
            };
            self.fail(what, method, format!("{e} (allowed: {allowed:?})"));
        }
    }

    /// Judges a call whose arguments the harness knows to be invalid (`invalid` is
    /// `Some`) or valid, where `allowed` are the value errors it may end in. Returns the
    /// answer when the call succeeded and should have.
    fn judge<R>(
        &mut self,
        method: &'static str,
        res: Result<R, Error>,
        invalid: Option<&Kinds>,
        allowed: &[&'static str],
    ) -> Option<R> {
        match (res, invalid) {
            (Ok(_), Some(k)) => {
                let k = k.clone();
                self.fail(
                    "invalid input accepted",
                    method,
                    format!("should give one of {k:?}; shapes {:?}", self.shapes),
                );
                None
            }
            (Ok(v), None) => Some(v),
            (Err(e), Some(k)) => {
                let k = k.clone();
                self.judge_err(method, &e, &k);
                None
            }
            (Err(e), None) => {
                self.judge_err(method, &e, allowed);
                None
            }
        }
    }

    // ------------------------------------------------------------------ forward

    /// Compares the outputs of a forward pass with the reference, the residual and
    /// property checks and the finiteness rule.
    fn judge_outputs(
        &mut self,
        method: &'static str,
        y: &[Array2<f64>],
        verdict: &Verdict,
        r: Option<&Ref>,
    ) {
        let expected = self.expected.clone().unwrap_or_default();
        let got: Vec<Shape> = y.iter().map(shape_of).collect();
        if got != expected {
            self.fail(
                "wrong output shapes",
                method,
                format!("expected {expected:?}, got {got:?}"),
            );
            return;
        }
        if let Some(kinds) = &verdict.must {
            let kinds = kinds.clone();
            self.fail(
                "invalid input accepted",
                method,
                format!(
                    "values should give one of {kinds:?}; classes {:?}",
                    self.classes
                ),
            );
            return;
        }
        let Some(r) = r else {
            self.outcomes.push("unchecked");
            return;
        };
        let m = self.spec.outputs();
        let tmax = self.tmax();
        let in_range = r
            .plain
            .iter()
            .flatten()
            .chain(r.y.iter().flatten().map(|v| &v.0))
            .all(|v| v.iter().all(|x| x.abs() < tmax * 1e-3));
        if r.finite && in_range && self.inputs_finite() && !verdict.may.contains(&"InvalidArgument")
        {
            // Residual outputs (LU factors) may overflow where the differentiable ones
            // do not: they are held to finiteness only where their exact value is in
            // range.
            let outputs = if self.spec.residuals_in_range::<T>(&self.x64) {
                y.len()
            } else {
                m
            };
            if let Some((k, _)) = y
                .iter()
                .take(outputs)
                .enumerate()
                .find(|(_, y)| !gen::finite(y))
            {
                self.fail(
                    "non-finite from finite",
                    method,
                    format!("output {k} has NaN or infinity where the reference is finite; classes {:?}", self.classes),
                );
                return;
            }
        }
        for (k, (got, want)) in y.iter().zip(&r.y).take(m).enumerate() {
            if let Some((v, b)) = want {
                if let Some(msg) = self.compare(got.view(), v, b) {
                    self.fail(
                        "mismatch with the reference",
                        method,
                        format!("output {k}: {msg}"),
                    );
                    return;
                }
            }
        }
        if self.inputs_finite() && y.iter().take(m).all(gen::finite) {
            if let Err(msg) = self.property_check(y, r) {
                self.fail("mismatch with the reference", method, msg);
                return;
            }
        }
        self.outcomes.push("ok");
    }

    /// `None` if `got` is within `C·ε·bound + floor` of `want` wherever `want` is finite
    /// and in range, else the worst entry.
    fn compare(
        &self,
        got: ArrayView2<'_, f64>,
        want: &Array2<f64>,
        bound: &Array2<f64>,
    ) -> Option<String> {
        if got.dim() != want.dim() {
            return Some(format!("shape {:?}, reference {:?}", got.dim(), want.dim()));
        }
        let floor = self.floor();
        let tmax = self.tmax();
        let mut worst: Option<(f64, (usize, usize))> = None;
        for ((ij, &g), (&w, &b)) in got.indexed_iter().zip(want.iter().zip(bound.iter())) {
            if !w.is_finite() || w.abs() >= tmax * 1e-3 || !b.is_finite() {
                continue;
            }
            // A GEMM's partial sums out of range (`Spec::gemm_sums`).
            if !g.is_finite() && self.spec.gemm_sums() && b >= tmax {
                continue;
            }
            let allowed = C * self.eps * b + if b > 0.0 || w != 0.0 { floor } else { 0.0 };
            let err = (g - w).abs();
            if !(err <= allowed) {
                let ratio = if allowed > 0.0 {
                    err / allowed
                } else {
                    f64::INFINITY
                };
                if worst.map_or(true, |(r, _)| ratio > r || ratio.is_nan()) {
                    worst = Some((ratio, ij));
                }
            }
        }
        worst.map(|(ratio, ij)| {
            format!(
                "entry {ij:?}: got {:e}, reference {:e}, error {ratio:.3e}× the allowed",
                got[ij], want[ij]
            )
        })
    }

    /// The checks of outputs determined only up to a choice, or best checked by a
    /// residual: solves, factorisations, decompositions.
    fn property_check(&self, y: &[Array2<f64>], r: &Ref) -> Result<(), String> {
        let x = &self.x64;
        let eps = self.eps;
        let floor = self.floor();
        let tol = |bound: f64, n: usize| C * eps * bound * (n as f64 + 1.0) + floor;
        match self.spec {
            Spec::Inverse | Spec::LuSolve(_) | Spec::ChoSolve | Spec::TriSolve { .. } => {
                // The residual of a backward-stable solve, relative to |A||X|.
                let (a, b, left) = match self.spec {
                    Spec::Inverse => (x[0].clone(), linalg::eye(x[0].nrows()), true),
                    Spec::LuSolve(t) => (
                        if *t {
                            x[0].t().to_owned()
                        } else {
                            x[0].clone()
                        },
                        x[1].clone(),
                        true,
                    ),
                    Spec::ChoSolve => {
                        let l = linalg::lower_part(&x[0]);
                        (mm(l.view(), l.t()), x[1].clone(), true)
                    }
                    Spec::TriSolve { left, trans, lower } => {
                        let t = if *lower {
                            linalg::lower_part(&x[0])
                        } else {
                            linalg::upper_part(&x[0])
                        };
                        (
                            if *trans { t.t().to_owned() } else { t },
                            x[1].clone(),
                            *left,
                        )
                    }
                    _ => unreachable!(),
                };
                if !gen::finite(&a) {
                    return Ok(());
                }
                let n = a.nrows();
                let (ax, scale) = if let Spec::ChoSolve = self.spec {
                    // A·X as L(LᵀX), scaled by |L|(|Lᵀ||X|), the bound of the two
                    // triangular solves: LLᵀ itself may underflow where the solve is exact
                    // (L ≈ 10⁻³⁰⁴ in f64: LLᵀ ≈ 10⁻⁶⁰⁸ rounds to 0, X ≈ B/L² ≈ 10³⁰³ is
                    // finite, and (LLᵀ)X would be 0 against B ≈ 10⁻³⁰⁴).
                    let l = linalg::lower_part(&x[0]);
                    let ltx = mm(l.t(), y[0].view());
                    let ltx_abs = linalg::mm_abs(l.t(), y[0].view());
                    (
                        mm(l.view(), ltx.view()),
                        linalg::mm_abs(l.view(), ltx_abs.view()),
                    )
                } else if left {
                    (
                        mm(a.view(), y[0].view()),
                        linalg::mm_abs(a.view(), y[0].view()),
                    )
                } else {
                    (
                        mm(y[0].view(), a.view()),
                        linalg::mm_abs(y[0].view(), a.view()),
                    )
                };
                // Pivoting's growth: the normwise bound, the largest |A||X| times n; and
                // entries of X below the normal range, which are rounded to its spacing.
                let big = linalg::max_abs(&scale);
                if !big.is_finite() && gen::finite(&y[0]) {
                    // |A||X| overflows f64 itself: the residual cannot be formed here.
                    return Ok(());
                }
                let under = 1e3
                    * T::min_positive_value().to64()
                    * linalg::norm1(&a).max(linalg::norm1(&a.t().to_owned()));
                for ((ij, &v), &bv) in ax.indexed_iter().zip(b.iter()) {
                    let allowed = tol(scale[ij] + big * n as f64 + bv.abs(), n) + under;
                    if !((v - bv).abs() <= allowed) {
                        return Err(format!(
                            "residual entry {ij:?}: A·X = {v:e}, B = {bv:e} (allowed {allowed:e})"
                        ));
                    }
                }
                Ok(())
            }
            Spec::Cholesky { .. } => {
                let l = &y[0];
                let n = l.nrows();
                for ((i, j), &v) in l.indexed_iter() {
                    if j > i && v != 0.0 {
                        return Err(format!("L has {v:e} above the diagonal at ({i}, {j})"));
                    }
                    if i == j && !(v > 0.0) {
                        return Err(format!("L has diagonal {v:e} at {i}"));
                    }
                }
                let llt = mm(l.view(), l.t());
                let scale = linalg::mm_abs(l.view(), l.t());
                let a = linalg::sym_from_lower(&x[0]);
                for ((ij, &v), &av) in llt.indexed_iter().zip(a.iter()) {
                    if !((v - av).abs() <= tol(scale[ij] + av.abs(), n)) {
                        return Err(format!("LLᵀ entry {ij:?} is {v:e}, A has {av:e}"));
                    }
                }
                Ok(())
            }
            Spec::SymEig { .. } => {
                let (lam, v) = (&y[0], &y[1]);
                let n = v.nrows();
                if lam.iter().zip(lam.iter().skip(1)).any(|(a, b)| a > b) {
                    return Err("eigenvalues not ascending".into());
                }
                orthonormal(v, tol(1.0, n))?;
                let a = linalg::sym_from_lower(&x[0]);
                let norm = linalg::max_abs(&a);
                let av = mm(a.view(), v.view());
                for ((i, j), &e) in av.indexed_iter() {
                    let d = (e - v[(i, j)] * lam[(j, 0)]).abs();
                    if !(d <= tol(norm * n as f64, n)) {
                        return Err(format!("A·v{j} − λ{j}·v{j} has {d:e} at row {i}"));
                    }
                }
                sign_rule(v, tol(1.0, n))
            }
            Spec::Svd => {
                let (u, s, v) = (&y[0], &y[1], &y[2]);
                let (m, n) = x[0].dim();
                if s.iter().zip(s.iter().skip(1)).any(|(a, b)| a < b) || s.iter().any(|&v| v < 0.0)
                {
                    return Err("singular values not descending and non-negative".into());
                }
                orthonormal(u, tol(1.0, m + n))?;
                orthonormal(v, tol(1.0, m + n))?;
                let s1 = s.iter().copied().fold(0.0, f64::max);
                let us = Array2::from_shape_fn(u.dim(), |(i, j)| u[(i, j)] * s[(j, 0)]);
                let rec = mm(us.view(), v.t());
                for (ij, &e) in rec.indexed_iter() {
                    let d = (e - x[0][ij]).abs();
                    if !(d <= tol(s1 * (m + n) as f64, m + n)) {
                        return Err(format!("U·diag(s)·Vᵀ − A has {d:e} at {ij:?}"));
                    }
                }
                sign_rule(u, tol(1.0, m + n))
            }
            _ => {
                let _ = r;
                Ok(())
            }
        }
    }

    /// How far a result on views may be from the one on contiguous arrays.
    fn invariance_tol(&self, cond: f64) -> f64 {
        let cond = if cond.is_nan() {
            1e6
        } else {
            cond.clamp(1.0, 1e6)
        };
        let n = self.shapes.iter().map(|s| s.0.max(s.1)).max().unwrap_or(1) as f64 + 1.0;
        1e2 * self.eps * n * n * cond
    }

    /// For each output `k` of a JVP, the size its tangent has in general:
    /// `max|Ẋᵢ|·max|Yₖ|/max|Xᵢ|` at its largest over the inputs, `‖J‖` estimated by the
    /// ratio of output to input sizes (as in [`Self::adjoint`]). Where `Ẏₖ` is zero in
    /// exact arithmetic (the SVD of a rank-one `A` along a rank-one `Ȧ`: `U̇ = 0`, as
    /// `uⱼᵀȦ = 0` for the null columns `j > 1`), what is computed is noise of
    /// `ε·max|Ẋ|·‖J‖`, and a second route gives another noise, differing from the
    /// first by O(1) relative to either.
    fn tangent_scales(&self, y: &[Array2<T>], xdot: &[Option<Array2<T>>]) -> Vec<f64> {
        let ratio: f64 = self
            .x64
            .iter()
            .zip(xdot)
            .filter_map(|(x, xd)| {
                let (xm, dm) = (
                    linalg::max_abs(x),
                    linalg::max_abs(&to64(xd.as_ref()?.view())),
                );
                (xm > 0.0 && xm.is_finite() && dm.is_finite()).then(|| dm / xm)
            })
            .fold(0.0, f64::max);
        // det A is homogeneous of degree n: at a singular A (det A = 0, the ratio 0)
        // ċ = ⟨adj(A)ᵀ, Ȧ⟩ has the size of its terms, |adj(A)ᵢⱼ| ≤ (√n·max|A|)ⁿ⁻¹
        // (Hadamard). At a rank-one 3×3 A, adj(A) = 0 and ċ = 0 is computed as noise
        // near 10⁻³², another route giving other noise.
        let det_size = match (self.spec, xdot.first()) {
            (Spec::Det, Some(Some(ad))) => {
                let n = self.x64[0].nrows() as f64;
                let a = linalg::max_abs(&self.x64[0]);
                n * n * linalg::max_abs(&to64(ad.view())) * (n.sqrt() * a).powf(n - 1.0)
            }
            _ => 0.0,
        };
        y.iter()
            .enumerate()
            .map(|(k, v)| {
                let s = ratio * linalg::max_abs(&to64(v.view()));
                let s = if k == 0 { s.max(det_size) } else { s };
                if s.is_finite() {
                    s
                } else {
                    0.0
                }
            })
            .collect()
    }

    /// Compares two results of the same computation by different routes.
    fn same(
        &mut self,
        what: &'static str,
        method: &'static str,
        got: ArrayView2<'_, T>,
        want: ArrayView2<'_, T>,
        tol: f64,
    ) -> bool {
        self.same_above(what, method, got, want, tol, 0.0)
    }

    /// [`Self::same`] with differences taken relative to at least `floor`, the size the
    /// result has in general, for one that is zero in exact arithmetic at this point and
    /// rounding noise as computed (two routes give two different noises).
    fn same_above(
        &mut self,
        what: &'static str,
        method: &'static str,
        got: ArrayView2<'_, T>,
        want: ArrayView2<'_, T>,
        tol: f64,
        floor: f64,
    ) -> bool {
        let (mut g, w) = (to64(got.view()), to64(want.view()));
        if !self.inputs_finite() {
            // A sum with an infinite term whose other partial sums overflow is NaN or
            // ±∞ as the order of the terms has it (∞ + (−∞) = NaN): with non-finite
            // inputs, a non-finite entry agrees with any non-finite entry.
            Zip::from(&mut g).and(&w).for_each(|g, &w| {
                if !g.is_finite() && !w.is_finite() {
                    *g = w;
                }
            });
        }
        let top = linalg::max_abs(&g).max(linalg::max_abs(&w));
        let d = rel_diff(g.view(), w.view(), T::max_value().to64());
        // rel_diff is relative to `top` (its largest finite entry).
        let d = if top.is_finite() && top > 0.0 && floor > top {
            d * top / floor
        } else {
            d
        };
        if d <= tol {
            true
        } else {
            self.note(|| format!("got\n{}\nwant\n{}", to64(got.view()), to64(want.view())));
            let layouts = self.layouts();
            self.fail(
                what,
                method,
                format!("relative difference {d:e} (allowed {tol:e}); input layouts {layouts:?}"),
            );
            false
        }
    }

    fn forward_scenario(&mut self) {
        let variant = self.rng.gen_range(0..4);
        let method = ["forward", "forward_into", "apply", "output_shapes"][variant];
        let arity_wrong = variant != 2 && self.rng.gen_bool(0.04);
        let stored = std::mem::take(&mut self.stored);
        let mut xv: Vec<ArrayView2<'_, T>> = stored.iter().map(|s| s.view()).collect();
        if arity_wrong {
            if xv.len() > 1 && self.rng.gen_bool(0.5) {
                xv.pop();
            } else {
                let first = xv[0];
                xv.push(first);
            }
        }
        let invalid: Option<Kinds> = if arity_wrong {
            Some(vec!["Arity"])
        } else {
            self.expected.clone().err()
        };
        let verdict = if invalid.is_none() {
            self.spec.verdict::<T>(&self.x64)
        } else {
            Verdict::default()
        };
        self.note(|| format!("{method}; verdict {verdict:?}"));
        let mut allowed: Kinds = verdict.must.clone().unwrap_or_default();
        allowed.extend(verdict.may.iter());
        self.calls += 1;
        let result: Option<Vec<Array2<f64>>> = match variant {
            0 => {
                let r = self
                    .op
                    .forward(&xv)
                    .map(|y| y.iter().map(|y| to64(y.view())).collect());
                self.judge(method, r, invalid.as_ref(), &allowed)
            }
            1 => self.forward_into(&xv, invalid, &allowed),
            2 => {
                let r = apply_forward(&*self.op, &xv);
                self.judge(method, r, invalid.as_ref(), &allowed)
            }
            _ => {
                let r = self.op.output_shapes(&xv);
                if let Some(s) = self.judge(method, r, invalid.as_ref(), &[]) {
                    if s.to_vec() != self.expected.clone().unwrap_or_default() {
                        self.fail(
                            "wrong output shapes",
                            method,
                            format!("expected {:?}, got {s:?}", self.expected),
                        );
                    } else {
                        self.outcomes.push("ok");
                    }
                }
                None
            }
        };
        drop(xv);
        self.stored = stored;
        let Some(y) = result else { return };
        let r = self.spec.reference(&self.x64);
        self.judge_outputs(method, &y, &verdict, r.as_ref());
        // The same on contiguous copies.
        if self.stored.iter().any(|s| s.layout() != Layout::Contiguous) || variant == 1 {
            self.calls += 1;
            match self.op.forward(&views(&self.x)) {
                Ok(yc) => {
                    let tol = self.invariance_tol(r.as_ref().map_or(1.0, |r| r.cond));
                    for (a, b) in y.iter().zip(&yc) {
                        let a = a.mapv(T::of);
                        if !self.same(
                            "view differs from contiguous",
                            method,
                            a.view(),
                            b.view(),
                            tol,
                        ) {
                            break;
                        }
                    }
                }
                Err(e) => self.fail(
                    "view differs from contiguous",
                    method,
                    format!("the contiguous copy failed: {e}"),
                ),
            }
        }
    }

    /// `forward_into` with output buffers in random layouts (NaN-filled), sometimes a
    /// caller workspace, sometimes one wrong argument.
    fn forward_into(
        &mut self,
        xv: &[ArrayView2<'_, T>],
        mut invalid: Option<Kinds>,
        allowed: &[&'static str],
    ) -> Option<Vec<Array2<f64>>> {
        let mut shapes: Vec<Shape> = match &self.expected {
            Ok(s) => s.clone(),
            Err(_) => self.shapes.clone(),
        };
        if invalid.is_none() && self.rng.gen_bool(0.1) {
            match self.rng.gen_range(0..3) {
                0 => {
                    shapes.pop();
                    invalid = Some(vec!["Arity"]);
                }
                1 => {
                    shapes.push(Shape(1, 1));
                    invalid = Some(vec!["Arity"]);
                }
                _ => {
                    let k = self.rng.gen_range(0..shapes.len());
                    shapes[k] = wrong(shapes[k], &mut self.rng);
                    invalid = Some(vec!["WrongShape"]);
                }
            }
        }
        let mut bufs: Vec<Stored<T>> = shapes
            .iter()
            .map(|s| Stored::nan((s.0, s.1), Layout::random(&mut self.rng, false)))
            .collect();
        let need = if self.expected.is_ok() {
            self.op.workspace(&self.shapes)
        } else {
            0
        };
        let mut ws: Option<Vec<T>> = match self.rng.gen_range(0..10) {
            0..=5 => None,
            6..=7 => Some(vec![T::nan(); need]),
            8 => Some(vec![T::nan(); need + 5]),
            _ if need > 0 => {
                if invalid.is_none() {
                    invalid = Some(vec!["Workspace"]);
                }
                Some(vec![T::nan(); need - 1])
            }
            _ => None,
        };
        let r = {
            let mut outs: Vec<ArrayViewMut2<'_, T>> =
                bufs.iter_mut().map(|b| b.view_mut()).collect();
            self.op.forward_into(xv, &mut outs, ws.as_deref_mut())
        };
        self.judge("forward_into", r, invalid.as_ref(), allowed)?;
        Some(bufs.iter().map(|b| to64(b.view())).collect())
    }

    // ----------------------------------------------------------------- gradient

    /// Random cotangents (one per differentiable output) or tangents, some missing.
    fn partials(
        &mut self,
        shapes: &[Shape],
        structure: Option<&dyn Fn(usize) -> Structure>,
    ) -> (Vec<Option<Array2<T>>>, Vec<Values>) {
        let mut out = Vec::new();
        let mut classes = Vec::new();
        for (i, s) in shapes.iter().enumerate() {
            if shapes.len() > 1 && self.rng.gen_bool(0.15) {
                out.push(None);
                classes.push(Values::Natural);
                continue;
            }
            let mut v = randn(s.0, s.1, &mut self.rng);
            if let Some(f) = structure {
                if self.rng.gen_bool(0.7) {
                    v = f(i).project(v);
                }
            }
            let class = Values::random(&mut self.rng);
            apply_class::<T>(&mut v, class, &mut self.rng);
            if self.rng.gen_bool(0.1) {
                gen::repeat_first_row(&mut v);
            }
            out.push(Some(to_t(&v)));
            classes.push(class);
        }
        (out, classes)
    }

    fn gradient_scenario(&mut self) {
        let Ok(out_shapes) = self.expected.clone() else {
            // Shapes the primitive must refuse, whatever the other arguments.
            let kinds = self.expected.clone().err();
            self.calls += 1;
            let xv = self.xv();
            let y: Vec<Array2<T>> = self.x.to_vec();
            let ybar: Vec<Option<ArrayView2<'_, T>>> = (0..self.spec.outputs())
                .map(|_| Some(self.x[0].view()))
                .collect();
            let xdot: Vec<Option<ArrayView2<'_, T>>> =
                self.x.iter().map(|v| Some(v.view())).collect();
            let r = if self.shapes.len() % 2 == 0 {
                self.op.backward(&xv, &views(&y), &ybar).map(|_| ())
            } else {
                self.op.jvp(&xv, &views(&y), &xdot).map(|_| ())
            };
            drop(xv);
            self.judge("backward/jvp", r, kinds.as_ref(), &[]);
            return;
        };
        let verdict = self.spec.verdict::<T>(&self.x64);
        let mut allowed = verdict.must.clone().unwrap_or_default();
        allowed.extend(verdict.may.iter());
        self.calls += 1;
        let y = match self.op.forward(&views(&self.x)) {
            Ok(y) => y,
            Err(e) => {
                self.judge_err("forward", &e, &allowed);
                return;
            }
        };
        if verdict.must.is_some() {
            let y64: Vec<Array2<f64>> = y.iter().map(|v| to64(v.view())).collect();
            self.judge_outputs("forward", &y64, &verdict, None);
            return;
        }
        let m = self.spec.outputs();
        let structures: Vec<Structure> = (0..self.shapes.len())
            .map(|i| Rule::<T>::structure(&*self.op, i))
            .collect();
        let op_structure = |i: usize| structures[i];
        let (ybar, ybar_classes) = self.partials(&out_shapes[..m], None);
        let (xdot, xdot_classes) = self.partials(&self.shapes.clone(), Some(&op_structure));
        let all_finite = self.inputs_finite()
            && y.iter().all(|v| v.iter().all(|x| x.is_finite()))
            && ybar
                .iter()
                .flatten()
                .all(|v| v.iter().all(|x| x.is_finite()))
            && xdot
                .iter()
                .flatten()
                .all(|v| v.iter().all(|x| x.is_finite()));
        let mut rules_allowed: Kinds = verdict.rules_may.clone();
        if !all_finite {
            rules_allowed.extend(VALUE_KINDS);
        }
        // Spectral derivatives scale with (cotangent or tangent)/gap: where that
        // overflows, a degeneracy error is the honest answer.
        let mag = ybar
            .iter()
            .chain(xdot.iter())
            .flatten()
            .flat_map(|v| v.iter())
            .fold(1.0f64, |m, x| m.max(x.to64().abs()));
        if matches!(self.spec, Spec::SymEig { .. } | Spec::Svd | Spec::Spectral) {
            let cond = self
                .spec
                .reference(&self.x64)
                .map_or(f64::INFINITY, |r| r.cond);
            let scale = self.x64[0].iter().fold(0.0f64, |m, x| m.max(x.abs()));
            if !(mag * cond / scale.max(f64::MIN_POSITIVE) < 1e-6 * self.tmax()) {
                rules_allowed.extend(["DegenerateEigenvalues", "ZeroSingularValue"]);
            }
        }
        self.note(|| format!("gradient: verdict {verdict:?}; cotangent classes {ybar_classes:?}, tangent classes {xdot_classes:?}"));

        // The plain calls on contiguous arrays, which the variants are compared with.
        let yv = views(&y);
        self.calls += 2;
        let g = self.op.backward(&views(&self.x), &yv, &opt_views(&ybar));
        let g = self.judge("backward", g, None, &rules_allowed);
        let d = self.op.jvp(&views(&self.x), &yv, &opt_views(&xdot));
        let d = self.judge("jvp", d, None, &rules_allowed);
        let r = self.spec.reference(&self.x64);
        if let Some(g) = &g {
            let ok = self.check_gradients(g, &ybar, &ybar_classes, r.as_ref(), &verdict);
            if ok {
                self.outcomes.push("ok");
            }
        }
        if let Some(d) = &d {
            let got: Vec<Shape> = d.iter().map(shape_of).collect();
            if got != out_shapes[..m] {
                self.fail(
                    "wrong output shapes",
                    "jvp",
                    format!("expected {:?}, got {got:?}", &out_shapes[..m]),
                );
            } else if xdot.iter().all(Option::is_none)
                && d.iter().any(|v| v.iter().any(|x| *x != T::zero()))
            {
                self.fail(
                    "mismatch with the reference",
                    "jvp",
                    "all tangents missing, the result is not zero".into(),
                );
            } else {
                self.outcomes.push("ok");
            }
        }
        let plain = |c: &Values| moderate(*c) || *c == Values::Scaled;
        let plain_classes = self.classes.iter().all(plain)
            && ybar_classes.iter().all(plain)
            && xdot_classes.iter().all(plain);
        if let (Some(g), Some(d), true) = (&g, &d, all_finite && plain_classes) {
            self.adjoint(g, d, &ybar, &xdot, r.as_ref());
        }
        if let (Some(d), Some(r)) = (&d, &r) {
            let tame = self.classes.iter().all(|c| *c == Values::Natural)
                && xdot_classes.iter().all(|c| *c == Values::Natural)
                && self.spec.smooth(&self.x64, r);
            if tame && all_finite {
                self.finite_differences(d, &xdot, r);
            }
        }

        // One variant on layouts and buffers, against the plain calls: compared where
        // those are finite (an overflowing gradient may overflow differently).
        let fin = |v: &Option<Vec<Array2<T>>>| {
            v.as_ref()
                .is_some_and(|v| v.iter().all(|m| m.iter().all(|x| x.is_finite())))
        };
        let g = if fin(&g) { g } else { None };
        let d = if fin(&d) { d } else { None };
        let tol = self.invariance_tol(r.as_ref().map_or(1.0, |r| r.cond));
        match self.rng.gen_range(0..6) {
            0 | 1 => {
                if let Some(g) = &g {
                    self.backward_variant(&y, &ybar, g, tol, &rules_allowed);
                }
            }
            2 => {
                if let Some(d) = &d {
                    let floors = self.tangent_scales(&y, &xdot);
                    self.jvp_variant(&y, &xdot, d, (tol, &floors), &rules_allowed);
                }
            }
            3 => {
                if let Some(g) = &g {
                    self.applied_backward(&ybar, g, tol, &rules_allowed);
                }
            }
            4 => {
                if let Some(d) = &d {
                    let floors = self.tangent_scales(&y, &xdot);
                    self.applied_jvp(&xdot, d, (tol, &floors), &rules_allowed);
                }
            }
            _ => {
                if let Some(g) = &g {
                    self.backward_add(&y, &ybar, g, tol, &rules_allowed);
                }
            }
        }
    }

    /// Shapes, zero for missing cotangents, finiteness and the scalar-loop reference
    /// of the gradients from `backward`.
    fn check_gradients(
        &mut self,
        g: &[Array2<T>],
        ybar: &[Option<Array2<T>>],
        ybar_classes: &[Values],
        r: Option<&Ref>,
        verdict: &Verdict,
    ) -> bool {
        let got: Vec<Shape> = g.iter().map(shape_of).collect();
        if got != self.shapes {
            self.fail(
                "wrong output shapes",
                "backward",
                format!("gradients {got:?} for inputs {:?}", self.shapes),
            );
            return false;
        }
        if ybar.iter().all(Option::is_none) {
            if g.iter().any(|v| v.iter().any(|x| *x != T::zero())) {
                self.fail(
                    "mismatch with the reference",
                    "backward",
                    "all cotangents missing, the gradient is not zero".into(),
                );
                return false;
            }
            return true;
        }
        let ybar64: Vec<Option<Array2<f64>>> = ybar
            .iter()
            .map(|v| v.as_ref().map(|v| to64(v.view())))
            .collect();
        let cot_finite = ybar64.iter().flatten().all(gen::finite);
        let g64: Vec<Array2<f64>> = g.iter().map(|v| to64(v.view())).collect();
        let refg = if self.inputs_finite() && cot_finite {
            let p_floor = T::min_positive_value().to64() / (C * self.eps);
            self.spec.vjp_ref(&self.x64, &ybar64, p_floor)
        } else {
            None
        };
        let tmax = self.tmax();
        let no_rule_errors = verdict.rules_may.is_empty();
        // Finite inputs and cotangents give a finite gradient where the reference one is
        // finite, or, without one, where the values are moderate and the point benign.
        let must_be_finite = self.inputs_finite()
            && cot_finite
            && no_rule_errors
            && match &refg {
                Some(refg) => refg
                    .iter()
                    .all(|(v, _)| v.iter().all(|x| x.abs() < tmax * 1e-3)),
                None => {
                    // The gradient's size: at most max|C̄|·n·‖J‖ (n its dimension).
                    let cmax = ybar64
                        .iter()
                        .flatten()
                        .map(linalg::max_abs)
                        .fold(0.0, f64::max);
                    let n = self.shapes.iter().map(|s| s.0.max(s.1)).max().unwrap_or(1);
                    let size = cmax * n as f64 * self.spec.jacobian_bound(&self.x64);
                    size < tmax * 1e-3
                        && self.classes.iter().all(|c| moderate(*c))
                        && ybar_classes
                            .iter()
                            .all(|c| moderate(*c) || *c == Values::Scaled)
                        && r.is_some_and(|r| r.finite && r.cond < 1e6)
                }
            };
        if must_be_finite {
            if let Some((i, _)) = g64.iter().enumerate().find(|(_, v)| !gen::finite(v)) {
                let cc = self.classes.clone();
                self.fail(
                    "non-finite from finite",
                    "backward",
                    format!("gradient {i} has NaN or infinity; input classes {cc:?}, cotangent classes {ybar_classes:?}"),
                );
                return false;
            }
        }
        if let Some(refg) = refg {
            for (i, (got, (v, b))) in g64.iter().zip(&refg).enumerate() {
                if let Some(msg) = self.compare(got.view(), v, b) {
                    self.fail(
                        "mismatch with the reference",
                        "backward",
                        format!("gradient {i}: {msg}"),
                    );
                    return false;
                }
            }
        }
        true
    }

    /// `Σₖ⟨Ȳₖ, Ẏₖ⟩ = Σᵢ⟨X̄ᵢ, Ẋᵢ⟩`.
    fn adjoint(
        &mut self,
        g: &[Array2<T>],
        d: &[Array2<T>],
        ybar: &[Option<Array2<T>>],
        xdot: &[Option<Array2<T>>],
        r: Option<&Ref>,
    ) {
        let cond = r.map_or(1.0, |r| r.cond);
        if !(cond * self.eps < 1e-6) {
            return;
        }
        let (mut lhs, mut rhs, mut scale) = (0.0, 0.0, 0.0);
        let (mut ybar_norm, mut xdot_norm) = (0.0, 0.0);
        for (yb, yd) in ybar.iter().zip(d) {
            if let Some(yb) = yb {
                let (a, b) = (to64(yb.view()), to64(yd.view()));
                lhs += inner(&a, &b);
                scale += norm(&a) * norm(&b);
                ybar_norm += norm(&a);
            }
        }
        for (xb, xd) in g.iter().zip(xdot) {
            if let Some(xd) = xd {
                let (a, b) = (to64(xb.view()), to64(xd.view()));
                rhs += inner(&a, &b);
                scale += norm(&a) * norm(&b);
                xdot_norm += norm(&b);
            }
        }
        // Both sides may cancel to rounding noise: the size of ⟨Ȳ, JẊ⟩'s terms, with
        // ‖J‖ estimated by the ratio of output to input sizes.
        let xn: f64 = self.x64.iter().map(norm).sum();
        let yn: f64 = self
            .spec
            .reference(&self.x64)
            .and_then(|r| r.plain)
            .map_or(0.0, |p| p.iter().map(norm).sum());
        // At X = 0 the ratio says nothing (yn/0); ‖J‖ is then taken as 1, the floor the
        // ratio has elsewhere. LogSoftmax at X = 0 (f32, 3×4) with tangent and cotangent
        // constant down each column has Ẏ = X̄ = 0 exactly, as P = 1/3; rounding
        // P = exp(−log 3) leaves entries of ε·|Ẋ| ≈ 10⁻⁷, both sides ≈ 10⁻⁶, and
        // ‖Ȳ‖‖Ẏ‖ + ‖X̄‖‖Ẋ‖ ≈ 10⁻⁶ alone: the check would ask noise to match noise.
        if yn.is_finite() {
            let j = if xn > 0.0 { (yn / xn).max(1.0) } else { 1.0 };
            scale += ybar_norm * xdot_norm * j;
        }
        // Near the underflow threshold the products have lost their precision.
        let tiny = 1e20 * T::min_positive_value().to64();
        if !scale.is_finite() || !lhs.is_finite() || !rhs.is_finite() || scale < tiny {
            return;
        }
        let n = self.shapes.iter().map(|s| s.0 + s.1).sum::<usize>() as f64 + 1.0;
        let tol = 1e2 * self.eps * n * cond.max(1.0);
        if !((lhs - rhs).abs() <= tol * scale) {
            self.fail(
                "adjoint identity",
                "backward/jvp",
                format!(
                    "⟨Ȳ, Ẏ⟩ = {lhs:e}, ⟨X̄, Ẋ⟩ = {rhs:e}, relative {:e} (allowed {tol:e})",
                    (lhs - rhs).abs() / scale
                ),
            );
        }
    }

    /// The JVP against Richardson-extrapolated central differences of the reference.
    fn finite_differences(&mut self, d: &[Array2<T>], xdot: &[Option<Array2<T>>], r: &Ref) {
        let max_cond = if T::NAME == "f64" { 1e6 } else { 1e3 };
        if !(r.cond <= max_cond) || r.plain.is_none() {
            return;
        }
        let u: Vec<Array2<f64>> = xdot
            .iter()
            .zip(&self.x64)
            .enumerate()
            .map(|(i, (t, x))| match t {
                Some(t) => Rule::<T>::structure(&*self.op, i).project(to64(t.view())),
                None => Array2::zeros(x.raw_dim()),
            })
            .collect();
        let umax = u.iter().map(linalg::max_abs).fold(0.0, f64::max);
        let xmax = self.x64.iter().map(linalg::max_abs).fold(1.0, f64::max);
        if umax == 0.0 {
            return;
        }
        let h = 1e-4 * xmax / umax;
        let eval = |t: f64| -> Option<Vec<Array2<f64>>> {
            let xs: Vec<Array2<f64>> = self.x64.iter().zip(&u).map(|(x, u)| x + &(u * t)).collect();
            let r = self.spec.reference(&xs)?;
            r.plain
        };
        let central = |h: f64| -> Option<Vec<Array2<f64>>> {
            let (p, q) = (eval(h)?, eval(-h)?);
            Some(p.iter().zip(&q).map(|(p, q)| (p - q) / (2.0 * h)).collect())
        };
        let (Some(d1), Some(d2)) = (central(h), central(h / 2.0)) else {
            return;
        };
        let plain0 = r.plain.clone().unwrap_or_default();
        let m = self.spec.outputs();
        for k in 0..m.min(d1.len()) {
            if d1[k].dim() != d[k].dim() {
                continue;
            }
            let rich = (&d2[k] * 4.0 - &d1[k]) / 3.0;
            let scale = linalg::max_abs(&rich);
            // A derivative that changes at the scale of the step is not smooth here.
            if linalg::max_abs(&(&d1[k] - &d2[k])) > 1e-3 * scale + 1e-9 {
                continue;
            }
            let got = to64(d[k].view());
            let tol = if T::NAME == "f64" { 1e-6 } else { 1e-2 } * (1.0 + r.cond * 1e-2);
            let err = linalg::max_abs(&(&got - &rich));
            // Rounding of a derivative that cancels to zero: the size of its terms.
            let ymax = plain0.get(k).map_or(0.0, linalg::max_abs);
            let floor = 1e2 * self.eps * umax * (1.0 + r.cond) * (1.0f64).max(ymax / xmax)
                + 1e5 * f64::EPSILON * umax * ymax.max(1.0) / xmax;
            if !(err <= tol * scale.max(linalg::max_abs(&got)) + floor) {
                self.fail(
                    "mismatch with finite differences",
                    "jvp",
                    format!(
                        "output {k}: max error {err:e}, scale {scale:e} (allowed relative {tol:e})"
                    ),
                );
                return;
            }
        }
    }

    /// `backward` on views in random layouts, or `backward_into` with per-input skip,
    /// first write (NaN-filled) or add into buffers of random layouts, with or without
    /// a caller workspace.
    fn backward_variant(
        &mut self,
        y: &[Array2<T>],
        ybar: &[Option<Array2<T>>],
        g: &[Array2<T>],
        tol: f64,
        allowed: &[&'static str],
    ) {
        let ys: Vec<Stored<T>> = y
            .iter()
            .map(|v| Stored::new(v, gen::layout_for(v, &mut self.rng)))
            .collect();
        let ybs: Vec<Option<Stored<T>>> = ybar
            .iter()
            .map(|v| {
                v.as_ref()
                    .map(|v| Stored::new(v, gen::layout_for(v, &mut self.rng)))
            })
            .collect();
        let yv: Vec<ArrayView2<'_, T>> = ys.iter().map(|s| s.view()).collect();
        let ybv: Vec<Option<ArrayView2<'_, T>>> =
            ybs.iter().map(|s| s.as_ref().map(|s| s.view())).collect();
        let stored = std::mem::take(&mut self.stored);
        let xv: Vec<ArrayView2<'_, T>> = stored.iter().map(|s| s.view()).collect();
        self.calls += 1;
        if self.rng.gen_bool(0.3) {
            let r = self.op.backward(&xv, &yv, &ybv);
            if let Some(got) = self.judge("backward (views)", r, None, allowed) {
                for (a, b) in got.iter().zip(g) {
                    if !self.same(
                        "view differs from contiguous",
                        "backward",
                        a.view(),
                        b.view(),
                        tol,
                    ) {
                        break;
                    }
                }
            }
        } else {
            // 0 skip, 1 first write, 2 add.
            let modes: Vec<u8> = (0..g.len()).map(|_| self.rng.gen_range(0..3)).collect();
            let before: Vec<Array2<T>> = g
                .iter()
                .zip(&modes)
                .map(|(v, &md)| {
                    if md == 2 {
                        to_t(&randn(v.nrows(), v.ncols(), &mut self.rng))
                    } else {
                        Array2::from_elem(v.raw_dim(), T::nan())
                    }
                })
                .collect();
            let mut bufs: Vec<Stored<T>> = before
                .iter()
                .map(|b| Stored::new(b, Layout::random(&mut self.rng, false)))
                .collect();
            let need = self.op.workspace(&self.shapes);
            let mut ws: Option<Vec<T>> = if self.rng.gen_bool(0.4) {
                Some(vec![T::nan(); need + self.rng.gen_range(0..3)])
            } else {
                None
            };
            let r = {
                let mut grads: Vec<Grad<'_, T>> = bufs
                    .iter_mut()
                    .zip(&modes)
                    .map(|(b, &md)| match md {
                        0 => Grad::Skip,
                        1 => Grad::Write(b.view_mut()),
                        _ => Grad::Add(b.view_mut()),
                    })
                    .collect();
                self.op
                    .backward_into(&xv, &yv, &ybv, &mut grads, ws.as_deref_mut())
            };
            if self.judge("backward_into", r, None, allowed).is_some() {
                for (i, md) in modes.iter().enumerate() {
                    let got = bufs[i].view().to_owned();
                    match md {
                        0 => {
                            if got.iter().any(|v| !v.is_nan()) {
                                self.fail(
                                    "skipped gradient written",
                                    "backward_into",
                                    format!("input {i}"),
                                );
                            }
                        }
                        1 => {
                            if !self.same(
                                "first write differs from backward",
                                "backward_into",
                                got.view(),
                                g[i].view(),
                                tol,
                            ) {
                                break;
                            }
                        }
                        _ => {
                            let want = &before[i] + &g[i];
                            if !self.same(
                                "accumulation differs from backward",
                                "backward_into",
                                got.view(),
                                want.view(),
                                tol,
                            ) {
                                break;
                            }
                        }
                    }
                }
            }
        }
        drop(xv);
        self.stored = stored;
    }

    /// `backward_add` into buffers holding random values, and into zeros (which must
    /// give the first write's result).
    fn backward_add(
        &mut self,
        y: &[Array2<T>],
        ybar: &[Option<Array2<T>>],
        g: &[Array2<T>],
        tol: f64,
        allowed: &[&'static str],
    ) {
        let zeros = self.rng.gen_bool(0.5);
        let mut bufs: Vec<Array2<T>> = g
            .iter()
            .map(|v| {
                if zeros {
                    Array2::zeros(v.raw_dim())
                } else {
                    to_t(&randn(v.nrows(), v.ncols(), &mut self.rng))
                }
            })
            .collect();
        let before = bufs.clone();
        self.calls += 1;
        let r = {
            let mut grads: Vec<Option<ArrayViewMut2<'_, T>>> =
                bufs.iter_mut().map(|b| Some(b.view_mut())).collect();
            self.op
                .backward_add(&views(&self.x), &views(y), &opt_views(ybar), &mut grads)
        };
        if self.judge("backward_add", r, None, allowed).is_some() {
            for (i, b) in bufs.iter().enumerate() {
                let want = &before[i] + &g[i];
                let what = if zeros {
                    "add into zeros differs from first write"
                } else {
                    "accumulation differs from backward"
                };
                if !self.same(what, "backward_add", b.view(), want.view(), tol) {
                    break;
                }
            }
        }
    }

    /// `jvp` on views, or `jvp_into` NaN-filled buffers of random layouts.
    fn jvp_variant(
        &mut self,
        y: &[Array2<T>],
        xdot: &[Option<Array2<T>>],
        d: &[Array2<T>],
        (tol, floors): (f64, &[f64]),
        allowed: &[&'static str],
    ) {
        let ys: Vec<Stored<T>> = y
            .iter()
            .map(|v| Stored::new(v, gen::layout_for(v, &mut self.rng)))
            .collect();
        let xds: Vec<Option<Stored<T>>> = xdot
            .iter()
            .map(|v| {
                v.as_ref()
                    .map(|v| Stored::new(v, gen::layout_for(v, &mut self.rng)))
            })
            .collect();
        let yv: Vec<ArrayView2<'_, T>> = ys.iter().map(|s| s.view()).collect();
        let xdv: Vec<Option<ArrayView2<'_, T>>> =
            xds.iter().map(|s| s.as_ref().map(|s| s.view())).collect();
        let stored = std::mem::take(&mut self.stored);
        let xv: Vec<ArrayView2<'_, T>> = stored.iter().map(|s| s.view()).collect();
        self.calls += 1;
        if self.rng.gen_bool(0.4) {
            let r = self.op.jvp(&xv, &yv, &xdv);
            if let Some(got) = self.judge("jvp (views)", r, None, allowed) {
                for ((a, b), &floor) in got.iter().zip(d).zip(floors) {
                    if !self.same_above(
                        "view differs from contiguous",
                        "jvp",
                        a.view(),
                        b.view(),
                        tol,
                        floor,
                    ) {
                        break;
                    }
                }
            }
        } else {
            let mut bufs: Vec<Stored<T>> = d
                .iter()
                .map(|v| Stored::nan(v.dim(), Layout::random(&mut self.rng, false)))
                .collect();
            let need = self.op.workspace(&self.shapes);
            let mut ws: Option<Vec<T>> = if self.rng.gen_bool(0.4) {
                Some(vec![T::nan(); need + self.rng.gen_range(0..3)])
            } else {
                None
            };
            let r = {
                let mut outs: Vec<ArrayViewMut2<'_, T>> =
                    bufs.iter_mut().map(|b| b.view_mut()).collect();
                self.op
                    .jvp_into(&xv, &yv, &xdv, &mut outs, ws.as_deref_mut())
            };
            if self.judge("jvp_into", r, None, allowed).is_some() {
                for ((b, want), &floor) in bufs.iter().zip(d).zip(floors) {
                    let got = b.view().to_owned();
                    if !self.same_above(
                        "first write differs from jvp",
                        "jvp_into",
                        got.view(),
                        want.view(),
                        tol,
                        floor,
                    ) {
                        break;
                    }
                }
            }
        }
        drop(xv);
        self.stored = stored;
    }

    /// The typed layer: `apply`, then `backward` (first cotangent only) or
    /// `backward_all`.
    fn applied_backward(
        &mut self,
        ybar: &[Option<Array2<T>>],
        g: &[Array2<T>],
        tol: f64,
        allowed: &[&'static str],
    ) {
        let stored = std::mem::take(&mut self.stored);
        let xv: Vec<ArrayView2<'_, T>> = stored.iter().map(|s| s.view()).collect();
        let only_first = ybar.len() == 1 || ybar.iter().skip(1).all(Option::is_none);
        self.calls += 2;
        let r = match (only_first, &ybar[0]) {
            (true, Some(c)) => applied_backward(&*self.op, &xv, None, Some(c.view())),
            _ => applied_backward(&*self.op, &xv, Some(&opt_views(ybar)), None),
        };
        if let Some(got) = self.judge("apply + backward", r, None, allowed) {
            for (a, b) in got.iter().zip(g) {
                if !self.same(
                    "typed layer differs",
                    "Applied::backward",
                    a.view(),
                    b.view(),
                    tol,
                ) {
                    break;
                }
            }
        }
        drop(xv);
        self.stored = stored;
    }

    fn applied_jvp(
        &mut self,
        xdot: &[Option<Array2<T>>],
        d: &[Array2<T>],
        (tol, floors): (f64, &[f64]),
        allowed: &[&'static str],
    ) {
        let stored = std::mem::take(&mut self.stored);
        let xv: Vec<ArrayView2<'_, T>> = stored.iter().map(|s| s.view()).collect();
        self.calls += 2;
        let r = applied_jvp(&*self.op, &xv, &opt_views(xdot));
        if let Some(got) = self.judge("apply + jvp_all", r, None, allowed) {
            for ((a, b), &floor) in got.iter().zip(d).zip(floors) {
                if !self.same_above(
                    "typed layer differs",
                    "Applied::jvp_all",
                    a.view(),
                    b.view(),
                    tol,
                    floor,
                ) {
                    break;
                }
            }
        }
        drop(xv);
        self.stored = stored;
    }

    // ------------------------------------------------------------------ hostile

    /// Outputs that are not the forward pass's, or one argument of the wrong count or
    /// shape: a typed error (for the wrong arguments) or any answer, never a panic.
    fn hostile_scenario(&mut self) {
        let Ok(out_shapes) = self.expected.clone() else {
            return self.gradient_scenario();
        };
        self.calls += 1;
        let y = match self.op.forward(&views(&self.x)) {
            Ok(y) => y,
            Err(_) => {
                self.outcomes.push("unchecked");
                return;
            }
        };
        let m = self.spec.outputs();
        let n = self.shapes.len();
        let mut yv: Vec<Array2<T>> = y.clone();
        let mut ybar: Vec<Option<Array2<T>>> = out_shapes[..m]
            .iter()
            .map(|s| Some(to_t(&randn(s.0, s.1, &mut self.rng))))
            .collect();
        let mut xdot: Vec<Option<Array2<T>>> = self
            .shapes
            .iter()
            .map(|s| Some(to_t(&randn(s.0, s.1, &mut self.rng))))
            .collect();
        let mut grad_shapes = self.shapes.clone();
        let mut ydot_shapes: Vec<Shape> = out_shapes[..m].to_vec();
        let mut ws_short = false;
        let mut xv_extra = false;
        let injection = self.rng.gen_range(0..15);
        let expect: Option<&'static str> = match injection {
            0 => {
                // Outputs that are not the forward pass's: random, zero, NaN.
                for v in yv.iter_mut() {
                    let mut r = randn(v.nrows(), v.ncols(), &mut self.rng);
                    apply_class::<T>(&mut r, Values::random(&mut self.rng), &mut self.rng);
                    *v = to_t(&r);
                }
                None
            }
            1 => {
                if self.rng.gen_bool(0.5) {
                    ybar.push(None);
                } else {
                    ybar.pop();
                }
                Some("Arity")
            }
            2 => {
                yv.pop();
                Some("Arity")
            }
            3 => {
                grad_shapes.push(Shape(1, 1));
                Some("Arity")
            }
            4 => {
                let k = self.rng.gen_range(0..m);
                let s = wrong(out_shapes[k], &mut self.rng);
                ybar[k] = Some(to_t(&randn(s.0, s.1, &mut self.rng)));
                Some("WrongShape")
            }
            5 => {
                let k = self.rng.gen_range(0..yv.len());
                let s = wrong(shape_of(&yv[k]), &mut self.rng);
                yv[k] = to_t(&randn(s.0, s.1, &mut self.rng));
                Some("WrongShape")
            }
            6 => {
                let i = self.rng.gen_range(0..n);
                grad_shapes[i] = wrong(grad_shapes[i], &mut self.rng);
                Some("WrongShape")
            }
            7 if self.op.workspace(&self.shapes) > 0 => {
                ws_short = true;
                Some("Workspace")
            }
            8 => {
                if self.rng.gen_bool(0.5) {
                    xdot.push(None);
                } else {
                    xdot.pop();
                }
                Some("Arity")
            }
            9 => {
                let i = self.rng.gen_range(0..n);
                let s = wrong(self.shapes[i], &mut self.rng);
                xdot[i] = Some(to_t(&randn(s.0, s.1, &mut self.rng)));
                Some("WrongShape")
            }
            10 => {
                ydot_shapes.push(Shape(1, 1));
                Some("Arity")
            }
            11 => {
                let k = self.rng.gen_range(0..m);
                ydot_shapes[k] = wrong(ydot_shapes[k], &mut self.rng);
                Some("WrongShape")
            }
            12 if self.op.workspace(&self.shapes) > 0 => {
                ws_short = true;
                Some("Workspace")
            }
            13 => {
                xv_extra = true;
                Some("Arity")
            }
            _ => {
                // The typed layer with a cotangent of the wrong shape.
                let s = wrong(out_shapes[0], &mut self.rng);
                let c = to_t::<T>(&randn(s.0, s.1, &mut self.rng));
                let stored = std::mem::take(&mut self.stored);
                let xv: Vec<ArrayView2<'_, T>> = stored.iter().map(|s| s.view()).collect();
                self.calls += 2;
                let r = applied_backward(&*self.op, &xv, None, Some(c.view()));
                drop(xv);
                self.stored = stored;
                self.judge("Applied::backward", r, Some(&vec!["WrongShape"]), &[]);
                return;
            }
        };
        let forward_mode = matches!(injection, 8..=12)
            || (injection == 0 || injection == 13) && self.rng.gen_bool(0.5);
        let need = self.op.workspace(&self.shapes);
        let mut ws: Option<Vec<T>> = if ws_short {
            Some(vec![T::nan(); need - 1])
        } else {
            None
        };
        let mut xv = views(&self.x);
        if xv_extra {
            xv.push(self.x[0].view());
        }
        let yvv = views(&yv);
        self.calls += 1;
        let (method, r): (&'static str, Result<(), Error>) = if forward_mode {
            let mut bufs: Vec<Array2<T>> = ydot_shapes
                .iter()
                .map(|s| Array2::from_elem((s.0, s.1), T::nan()))
                .collect();
            let mut outs: Vec<ArrayViewMut2<'_, T>> =
                bufs.iter_mut().map(|b| b.view_mut()).collect();
            (
                "jvp_into",
                self.op
                    .jvp_into(&xv, &yvv, &opt_views(&xdot), &mut outs, ws.as_deref_mut()),
            )
        } else {
            let mut bufs: Vec<Array2<T>> = grad_shapes
                .iter()
                .map(|s| Array2::from_elem((s.0, s.1), T::nan()))
                .collect();
            let mut grads: Vec<Grad<'_, T>> =
                bufs.iter_mut().map(|b| Grad::Write(b.view_mut())).collect();
            (
                "backward_into",
                self.op
                    .backward_into(&xv, &yvv, &opt_views(&ybar), &mut grads, ws.as_deref_mut()),
            )
        };
        drop((xv, yvv));
        match expect {
            Some(k) => {
                self.judge(method, r, Some(&vec![k]), &[]);
            }
            None => {
                self.note(|| format!("{method} on outputs that are not the forward pass's: {r:?}"));
                self.outcomes.push("unchecked");
            }
        }
    }

    // --------------------------------------------------------------------- huge

    /// Dimensions beyond the 32-bit BLAS integers, shown by zero-stride broadcasts of
    /// one value: the shape rule must answer without allocating, a typed error
    /// (`TooLarge`, `BadReshape`) where the harness expects one.
    fn huge_scenario(&mut self) {
        let sizes = [1usize << 31, (1 << 31) + 7, 1 << 33];
        let mut shapes = self.shapes.clone();
        for s in shapes.iter_mut() {
            for d in [&mut s.0, &mut s.1] {
                if *d > 0 && self.rng.gen_bool(0.5) {
                    *d = sizes[self.rng.gen_range(0..sizes.len())];
                }
            }
            // A broadcast view holds at most isize::MAX elements.
            if s.0.checked_mul(s.1).map_or(true, |t| t > 1 << 62) {
                s.1 = 1;
            }
        }
        // The same change to both operands of a shape rule that pairs them.
        if shapes.len() == 2 && self.shapes[0] == self.shapes[1] {
            shapes[1] = shapes[0];
        }
        let one = [T::one()];
        let views: Vec<ArrayView2<'_, T>> = shapes
            .iter()
            .map(|s| {
                ArrayView2::from_shape((s.0, s.1).strides((0, 0)), &one[..])
                    .expect("a broadcast of one value")
            })
            .collect();
        let expected = self.spec.expect(&shapes);
        // A dimension beyond the 32-bit BLAS integers is `TooLarge` (or, for a size in
        // bytes, `CannotAllocate`) before any other check, whatever the shape rule says.
        let beyond = shapes
            .iter()
            .any(|s| s.0 > i32::MAX as usize || s.1 > i32::MAX as usize);
        let too_large = |r: &matgrad::Result<_>| matches!(r, Err(e) if beyond && matches!(kind(e), "TooLarge" | "CannotAllocate"));
        self.calls += 1;
        let r = self.op.output_shapes(&views);
        self.shapes = shapes;
        if too_large(&r) {
            self.outcomes.push("rejected");
            return;
        }
        match (r, &expected) {
            (Ok(got), Ok(want)) => {
                if got.to_vec() != *want {
                    self.fail(
                        "wrong output shapes",
                        "output_shapes",
                        format!("expected {want:?}, got {got:?}"),
                    );
                } else {
                    self.outcomes.push("ok");
                }
            }
            (r, _) => {
                let kinds = expected.clone().err();
                self.judge("output_shapes", r, kinds.as_ref(), &[]);
            }
        }
        // Where the shapes are refused, every method must refuse them before allocating.
        if let Err(kinds) = expected {
            self.calls += 1;
            let r = self.op.forward(&views);
            self.judge("forward", r, Some(&kinds), &[]);
        }
    }

    // ------------------------------------------------------------------ checker

    /// The checker at this point with random (some hostile) options: any report or a
    /// typed error, never a panic.
    fn checker_scenario(&mut self) {
        let mut c = Checker::new().seed(self.rng.gen());
        let hostile = [f64::NAN, -1.0, 0.0, f64::INFINITY, 1e300, 1e-300];
        if self.rng.gen_bool(0.3) {
            c = c.tol(hostile[self.rng.gen_range(0..hostile.len())]);
        }
        if self.rng.gen_bool(0.3) {
            c = c.exact_tol(hostile[self.rng.gen_range(0..hostile.len())]);
        }
        if self.rng.gen_bool(0.3) {
            c = c.step(hostile[self.rng.gen_range(0..hostile.len())]);
        }
        c = c
            .directions(self.rng.gen_range(0..3))
            .full_jacobian(self.rng.gen_bool(0.5));
        let stored = std::mem::take(&mut self.stored);
        let xv: Vec<ArrayView2<'_, T>> = stored.iter().map(|s| s.view()).collect();
        self.calls += 1;
        let r = c.check(&*self.op, &xv);
        drop(xv);
        self.stored = stored;
        match r {
            Ok(report) => {
                let _ = report.to_string();
                let _ = report.failures();
                self.outcomes.push("unchecked");
            }
            Err(e) => {
                self.note(|| format!("checker -> {e}"));
                self.outcomes.push("rejected");
            }
        }
    }
}

/// `apply` on 1 or 2 inputs, every output (residuals last) in `f64`.
fn apply_forward<T: Real>(
    op: &dyn Rule<T>,
    x: &[ArrayView2<'_, T>],
) -> Result<Vec<Array2<f64>>, Error> {
    let all = |o: &[ndarray::ArcArray2<T>], r: &[ndarray::ArcArray2<T>]| -> Vec<Array2<f64>> {
        o.iter().chain(r).map(|v| to64(v.view())).collect()
    };
    match x.len() {
        1 => {
            let a = op.apply([x[0].view()])?;
            Ok(all(a.outputs(), a.residuals()))
        }
        _ => {
            let a = op.apply([x[0].view(), x[1].view()])?;
            Ok(all(a.outputs(), a.residuals()))
        }
    }
}

/// `apply`, then `backward(cbar)` or `backward_all(ybar)`.
fn applied_backward<T: Real>(
    op: &dyn Rule<T>,
    x: &[ArrayView2<'_, T>],
    ybar: Option<&[Option<ArrayView2<'_, T>>]>,
    cbar: Option<ArrayView2<'_, T>>,
) -> Result<Vec<Array2<T>>, Error> {
    match x.len() {
        1 => {
            let a = op.apply([x[0].view()])?;
            match cbar {
                Some(c) => Ok(a.backward(c)?.to_vec()),
                None => a.backward_all(ybar.unwrap_or(&[])),
            }
        }
        _ => {
            let a = op.apply([x[0].view(), x[1].view()])?;
            match cbar {
                Some(c) => Ok(a.backward(c)?.to_vec()),
                None => a.backward_all(ybar.unwrap_or(&[])),
            }
        }
    }
}

/// `apply`, then `jvp_all`, or `jvp` when every tangent is given and there is one
/// output.
fn applied_jvp<T: Real>(
    op: &dyn Rule<T>,
    x: &[ArrayView2<'_, T>],
    xdot: &[Option<ArrayView2<'_, T>>],
) -> Result<Vec<Array2<T>>, Error> {
    let all_given = xdot.iter().all(Option::is_some);
    let single = Rule::<T>::outputs(op) == 1;
    match x.len() {
        1 => {
            let a = op.apply([x[0].view()])?;
            match (&xdot[0], all_given && single) {
                (Some(t), true) => Ok(vec![a.jvp([t.view()])?]),
                _ => a.jvp_all(xdot),
            }
        }
        _ => {
            let a = op.apply([x[0].view(), x[1].view()])?;
            match (&xdot[0], &xdot[1], all_given && single) {
                (Some(t0), Some(t1), true) => Ok(vec![a.jvp([t0.view(), t1.view()])?]),
                _ => a.jvp_all(xdot),
            }
        }
    }
}

/// Columns of `v` orthonormal within `tol`.
fn orthonormal(v: &Array2<f64>, tol: f64) -> Result<(), String> {
    let g = mm(v.t(), v.view());
    for ((i, j), &e) in g.indexed_iter() {
        let want = if i == j { 1.0 } else { 0.0 };
        if !((e - want).abs() <= tol) {
            return Err(format!("columns not orthonormal: (VᵀV)[{i}, {j}] = {e:e}"));
        }
    }
    Ok(())
}

/// The documented sign rule: in each column of `v` the entry of largest magnitude is
/// positive (checked where the two largest magnitudes differ by more than `tol`).
fn sign_rule(v: &Array2<f64>, tol: f64) -> Result<(), String> {
    for (j, c) in v.columns().into_iter().enumerate() {
        let mut m: Vec<(f64, f64)> = c.iter().map(|x| (x.abs(), *x)).collect();
        m.sort_by(|a, b| b.0.total_cmp(&a.0));
        if m.is_empty() || m[0].0 == 0.0 {
            continue;
        }
        if m.len() > 1 && m[0].0 - m[1].0 <= tol {
            continue;
        }
        if m[0].1 < 0.0 {
            return Err(format!(
                "column {j}: the entry of largest magnitude is negative"
            ));
        }
    }
    Ok(())
}
