//! The shared gradient checker: proves any [`Primitive`], the crate's own or one
//! defined in another crate, in a few lines of a test.
//!
//! ```
//! use matgrad::prelude::*;
//! use matgrad::check::random;
//!
//! let mut rng = random::rng(1);
//! let a = random::randn::<f64>(3, 4, &mut rng);
//! let b = random::randn::<f64>(4, 2, &mut rng);
//! let report = Checker::new().check(&MatMul::nn(), &[a.view(), b.view()])?;
//! report.assert_passed();
//! # Ok::<(), matgrad::Error>(())
//! ```
//!
//! What it checks, for each input `Xᵢ` and in seeded random directions that respect
//! the input's declared [`Structure`]:
//! - **VJP against finite differences**: `⟨X̄ᵢ, U⟩` against `⟨C̄, (f(X+hU) − f(X−hU))/2h⟩`,
//!   Richardson-extrapolated over `h` and `h/2` so the `h²` error cancels;
//! - **JVP against finite differences**: `Ċ` for `Ẋᵢ = U` against the same difference;
//! - **the adjoint identity** `⟨C̄, Ċ⟩ = Σᵢ⟨X̄ᵢ, Ẋᵢ⟩`, exact up to rounding;
//! - **accumulation**: `backward_into` adds exactly `backward`'s result to what a buffer
//!   held, also when other inputs are skipped;
//! - **structure**: a symmetric input gets a symmetric gradient, a lower-triangular one
//!   a gradient with zero strict upper triangle;
//! - optionally (automatically for small inputs) the **full Jacobian**, naming the worst
//!   element.
//!
//! When a gradient is wrong the report says what it looks like ([`Mistake`]): the
//! transpose of the right answer, the sign flipped, a factor 2 or ½, only the symmetric
//! part, only the lower triangle, or zero. Each hypothesis `X̄ = τ(G)` is tested without
//! knowing the true gradient `G`, through `⟨τ(G), U⟩ = ⟨G, τ*(U)⟩` and a finite
//! difference in the direction `τ*(U)`.

mod report;

pub mod random;

pub use report::{InputReport, Mistake, PrecisionReport, Report, Worst};

use crate::error::{shape_of, Error, Result, Shape};
use crate::primitive::Structure;
use crate::{Primitive, Real};
use ndarray::{Array2, ArrayView2, ArrayViewMut2, Zip};
use rand::rngs::StdRng;

/// Default input names in reports: `A`, `B`, `D`, … (`C` is the output), then `X6`, ….
pub(crate) fn default_input_name(i: usize) -> String {
    const LETTERS: [&str; 6] = ["A", "B", "D", "E", "F", "G"];
    LETTERS
        .get(i)
        .map_or_else(|| format!("X{i}"), |s| s.to_string())
}

/// Configures and runs the checks. Defaults come from the precision ([`Real`]).
#[derive(Clone, Debug)]
pub struct Checker {
    seed: u64,
    tol: Option<f64>,
    exact_tol: Option<f64>,
    step: Option<f64>,
    directions: usize,
    full_jacobian: Option<bool>,
}

impl Default for Checker {
    fn default() -> Self {
        Checker {
            seed: 0x6d61_7467_7261_6421,
            tol: None,
            exact_tol: None,
            step: None,
            directions: 3,
            full_jacobian: None,
        }
    }
}

/// Largest total number of input elements for which the full Jacobian runs by default.
const AUTO_JACOBIAN_ELEMENTS: usize = 100;

impl Checker {
    /// A checker with the default seed and per-precision tolerances.
    pub fn new() -> Self {
        Self::default()
    }
    /// Seed of the random cotangent, directions and buffers.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
    /// Relative error accepted for the finite-difference comparisons.
    pub fn tol(mut self, tol: f64) -> Self {
        self.tol = Some(tol);
        self
    }
    /// Relative error accepted for the exact identities (adjoint, accumulation, structure).
    pub fn exact_tol(mut self, tol: f64) -> Self {
        self.exact_tol = Some(tol);
        self
    }
    /// Finite-difference step `h` (scaled by the input's largest magnitude when above 1).
    pub fn step(mut self, h: f64) -> Self {
        self.step = Some(h);
        self
    }
    /// Number of random directions per input (at least 1).
    pub fn directions(mut self, n: usize) -> Self {
        self.directions = n.max(1);
        self
    }
    /// Forces the full-Jacobian comparison on or off (by default it runs when the
    /// inputs hold at most 100 elements in all).
    pub fn full_jacobian(mut self, on: bool) -> Self {
        self.full_jacobian = Some(on);
        self
    }

    /// Runs every check on `p` at the point `inputs`.
    ///
    /// Returns `Err` only when the primitive itself returns an error; a wrong gradient,
    /// including one of the wrong shape, is reported in the [`Report`].
    pub fn check<T: Real, P: Primitive<T> + ?Sized>(
        &self,
        p: &P,
        inputs: &[ArrayView2<'_, T>],
    ) -> Result<Report> {
        let name = p.name();
        if inputs.len() != p.arity() {
            return Err(Error::Arity {
                op: name,
                what: "inputs",
                expected: p.arity(),
                got: inputs.len(),
            });
        }
        let tol = self.tol.unwrap_or(T::FD_TOL);
        let exact_tol = self.exact_tol.unwrap_or(T::EXACT_TOL);
        let mut rng = random::rng(self.seed);
        let ctx = Ctx {
            p,
            inputs,
            step: self.step.unwrap_or(T::FD_STEP),
        };

        let c = p.forward(inputs)?;
        let cbar = random::randn::<T>(c.nrows(), c.ncols(), &mut rng);
        let grads = p.backward(inputs, c.view(), cbar.view())?;
        let mut reports: Vec<InputReport> = inputs
            .iter()
            .enumerate()
            .map(|(i, x)| InputReport::new(p.input_name(i), shape_of(x), p.structure(i)))
            .collect();
        if grads.len() != inputs.len() {
            return Err(Error::Arity {
                op: name,
                what: "gradients from backward",
                expected: inputs.len(),
                got: grads.len(),
            });
        }
        let mut shapes_ok = true;
        for (r, g) in reports.iter_mut().zip(&grads) {
            let gs = shape_of(g);
            if gs != r.shape {
                shapes_ok = false;
                r.gradient_shape = Some(gs);
                r.mistake = Some(if gs == Shape(r.shape.1, r.shape.0) {
                    Mistake::TransposedShape
                } else {
                    Mistake::Unrecognised
                });
            }
        }
        let mut report = Report {
            name,
            precision: T::NAME,
            output_shape: shape_of(&c),
            inputs: reports,
            adjoint_error: f64::NAN,
            tol,
            exact_tol,
            output_finite: c.iter().all(|x| x.is_finite()),
        };
        if !shapes_ok {
            return Ok(report);
        }

        for (i, r) in report.inputs.iter_mut().enumerate() {
            let g = &grads[i];
            r.structure_error = structure_error(g.view(), r.structure);
            let mut vjp_err = 0.0f64;
            let mut jvp_err = 0.0f64;
            let mut dirs = Vec::with_capacity(self.directions);
            for _ in 0..self.directions {
                let u = r
                    .structure
                    .project(random::randn::<T>(r.shape.0, r.shape.1, &mut rng));
                let d = ctx.fd(i, &u)?;
                let fd = inner64(cbar.view(), d.view());
                let an = inner(g.view(), u.view());
                vjp_err = vjp_err.max(scalar_rel(an, fd, norm(cbar.view()) * norm64(d.view())));
                let cdot = ctx.jvp_single(i, &u, c.view())?;
                jvp_err = jvp_err.max(matrix_rel(cdot.view(), d.view()));
                dirs.push((u, an, fd));
            }
            r.vjp_error = vjp_err;
            r.jvp_error = jvp_err;
            if vjp_err > tol {
                r.mistake = Some(diagnose(
                    &ctx,
                    i,
                    g.view(),
                    cbar.view(),
                    &dirs,
                    r.structure,
                )?);
            }
        }

        report.adjoint_error = adjoint_error(&ctx, c.view(), cbar.view(), &grads, &mut rng)?;
        accumulation_errors(
            &ctx,
            c.view(),
            cbar.view(),
            &grads,
            &mut report.inputs,
            &mut rng,
        )?;

        let total: usize = inputs.iter().map(|x| x.len()).sum();
        if self
            .full_jacobian
            .unwrap_or(total <= AUTO_JACOBIAN_ELEMENTS)
        {
            for (i, r) in report.inputs.iter_mut().enumerate() {
                r.jacobian = Some(ctx.jacobian_worst(i, c.view(), r.structure)?);
            }
        }
        Ok(report)
    }
}

/// Compares a primitive's `f32` results (forward, backward, jvp) with its `f64` results
/// at the same point, as MATH.md advises: check in `f64`, then check `f32` against it.
pub fn check_precision<P>(p: &P, inputs: &[ArrayView2<'_, f64>]) -> Result<PrecisionReport>
where
    P: Primitive<f32> + Primitive<f64> + ?Sized,
{
    let mut rng = random::rng(0x7072_6563);
    let in32: Vec<Array2<f32>> = inputs.iter().map(|x| x.mapv(|v| v as f32)).collect();
    // Evaluate f64 at the f32-rounded point, so only the arithmetic differs.
    let in64: Vec<Array2<f64>> = in32.iter().map(|x| x.mapv(f64::from)).collect();
    let v64: Vec<ArrayView2<'_, f64>> = in64.iter().map(|x| x.view()).collect();
    let v32: Vec<ArrayView2<'_, f32>> = in32.iter().map(|x| x.view()).collect();
    let c64 = Primitive::<f64>::forward(p, &v64)?;
    let c32 = Primitive::<f32>::forward(p, &v32)?;
    let cbar32 = random::randn::<f32>(c64.nrows(), c64.ncols(), &mut rng);
    let cbar64 = cbar32.mapv(f64::from);
    let g64 = Primitive::<f64>::backward(p, &v64, c64.view(), cbar64.view())?;
    let g32 = Primitive::<f32>::backward(p, &v32, c32.view(), cbar32.view())?;
    let t32: Vec<Array2<f32>> = inputs
        .iter()
        .enumerate()
        .map(|(i, x)| {
            let s = Primitive::<f32>::structure(p, i);
            s.project(random::randn::<f32>(x.nrows(), x.ncols(), &mut rng))
        })
        .collect();
    let t64: Vec<Array2<f64>> = t32.iter().map(|x| x.mapv(f64::from)).collect();
    let tv32: Vec<ArrayView2<'_, f32>> = t32.iter().map(|x| x.view()).collect();
    let tv64: Vec<ArrayView2<'_, f64>> = t64.iter().map(|x| x.view()).collect();
    let j64 = Primitive::<f64>::jvp(p, &v64, c64.view(), &tv64)?;
    let j32 = Primitive::<f32>::jvp(p, &v32, c32.view(), &tv32)?;
    let rel32 = |a: &Array2<f32>, b: &Array2<f64>| -> f64 {
        if a.dim() != b.dim() {
            return f64::INFINITY;
        }
        matrix_rel(a.view(), b.view())
    };
    Ok(PrecisionReport {
        name: Primitive::<f64>::name(p),
        forward_error: rel32(&c32, &c64),
        backward_errors: g32.iter().zip(&g64).map(|(a, b)| rel32(a, b)).collect(),
        jvp_error: rel32(&j32, &j64),
        tol: <f32 as Real>::EXACT_TOL * 10.0,
    })
}

/// Runs [`Checker::new`]`.check(p, inputs)` and panics with the report unless it passes.
pub fn assert_rule<T: Real, P: Primitive<T> + ?Sized>(p: &P, inputs: &[ArrayView2<'_, T>]) {
    match Checker::new().check(p, inputs) {
        Ok(r) => r.assert_passed(),
        Err(e) => panic!("{}: the primitive returned an error: {e}", p.name()),
    }
}

struct Ctx<'c, 'x, T: Real, P: ?Sized> {
    p: &'c P,
    inputs: &'c [ArrayView2<'x, T>],
    step: f64,
}

impl<T: Real, P: Primitive<T> + ?Sized> Ctx<'_, '_, T, P> {
    /// `f` with input `i` replaced by `Xᵢ + t·U`, widened to f64.
    fn eval_shifted(&self, i: usize, u: &Array2<T>, t: f64) -> Result<Array2<f64>> {
        let mut xi = self.inputs[i].to_owned();
        xi.scaled_add(T::of(t), u);
        let mut views: Vec<ArrayView2<'_, T>> = self.inputs.iter().map(|x| x.view()).collect();
        views[i] = xi.view();
        Ok(self.p.forward(&views)?.mapv(T::to64))
    }

    /// Step for input `i`, relative to its magnitude.
    fn h(&self, i: usize) -> f64 {
        let scale = self.inputs[i]
            .iter()
            .fold(1.0f64, |m, x| m.max(x.to64().abs()));
        self.step * scale
    }

    /// Richardson-extrapolated central difference of `f` in direction `U` of input `i`.
    fn fd(&self, i: usize, u: &Array2<T>) -> Result<Array2<f64>> {
        let h = self.h(i);
        let central = |h: f64| -> Result<Array2<f64>> {
            let plus = self.eval_shifted(i, u, h)?;
            let minus = self.eval_shifted(i, u, -h)?;
            Ok((plus - minus) / (2.0 * h))
        };
        let d1 = central(h)?;
        let d2 = central(h / 2.0)?;
        Ok((d2 * 4.0 - d1) / 3.0)
    }

    /// `Ċ` when only input `i` moves, along `U`.
    fn jvp_single(&self, i: usize, u: &Array2<T>, c: ArrayView2<'_, T>) -> Result<Array2<T>> {
        let zeros: Vec<Array2<T>> = self
            .inputs
            .iter()
            .map(|x| Array2::zeros(x.raw_dim()))
            .collect();
        let mut tangents: Vec<ArrayView2<'_, T>> = zeros.iter().map(|z| z.view()).collect();
        tangents[i] = u.view();
        self.p.jvp(self.inputs, c, &tangents)
    }

    /// Full Jacobian of input `i` by finite differences against one VJP per output element.
    fn jacobian_worst(&self, i: usize, c: ArrayView2<'_, T>, s: Structure) -> Result<Worst> {
        let (rows, cols) = self.inputs[i].dim();
        let basis: Vec<(usize, usize)> = (0..rows)
            .flat_map(|r| (0..cols).map(move |k| (r, k)))
            .filter(|&(r, k)| match s {
                Structure::General => true,
                Structure::Symmetric | Structure::LowerTriangular => r >= k,
            })
            .collect();
        let fd_cols: Vec<Array2<f64>> = basis
            .iter()
            .map(|&(r, k)| {
                let mut e = Array2::<T>::zeros((rows, cols));
                e[(r, k)] = T::one();
                if s == Structure::Symmetric {
                    e[(k, r)] = T::one();
                }
                self.fd(i, &e)
            })
            .collect::<Result<_>>()?;
        let mut worst = Worst::default();
        let mut scale = 0.0f64;
        for ((ko, lo), _) in c.indexed_iter() {
            let mut cbar = Array2::<T>::zeros(c.raw_dim());
            cbar[(ko, lo)] = T::one();
            let g = self.p.backward(self.inputs, c, cbar.view())?;
            for (&(r, k), col) in basis.iter().zip(&fd_cols) {
                let analytic = if s == Structure::Symmetric && r != k {
                    g[i][(r, k)].to64() + g[i][(k, r)].to64()
                } else {
                    g[i][(r, k)].to64()
                };
                let numeric = col[(ko, lo)];
                scale = scale.max(analytic.abs()).max(numeric.abs());
                let err = (analytic - numeric).abs();
                if err > worst.abs_error || worst.abs_error.is_nan() {
                    worst = Worst {
                        input_index: (r, k),
                        output_index: (ko, lo),
                        analytic,
                        numeric,
                        abs_error: err,
                        error: 0.0,
                    };
                }
            }
        }
        worst.error = if scale > 0.0 {
            worst.abs_error / scale
        } else {
            worst.abs_error
        };
        Ok(worst)
    }
}

/// The adjoint `τ*` of a hypothesised mistake `X̄ = τ(G)`, applied to a direction.
type AdjointMap<T> = fn(Array2<T>) -> Array2<T>;

/// What the checker tests as "the gradient is `τ(G)`", with `τ*` the adjoint map
/// applied to a direction.
fn diagnose<T: Real, P: Primitive<T> + ?Sized>(
    ctx: &Ctx<'_, '_, T, P>,
    i: usize,
    g: ArrayView2<'_, T>,
    cbar: ArrayView2<'_, T>,
    dirs: &[(Array2<T>, f64, f64)],
    s: Structure,
) -> Result<Mistake> {
    let any_fd = dirs.iter().any(|(_, _, fd)| fd.abs() > 0.0);
    if g.iter().all(|x| *x == T::zero()) && any_fd {
        return Ok(Mistake::Zero);
    }
    let close = |an: f64, fd: f64| {
        scalar_rel(an, fd, an.abs().max(fd.abs())) < 1e-3_f64.max(T::FD_TOL * 10.0)
    };
    let scalar = |k: f64| dirs.iter().all(|(_, an, fd)| close(*an, k * fd));
    if scalar(-1.0) {
        return Ok(Mistake::SignFlipped);
    }
    if scalar(2.0) {
        return Ok(Mistake::Doubled);
    }
    if scalar(0.5) {
        return Ok(Mistake::Halved);
    }
    let square = g.nrows() == g.ncols();
    let maps: [(Mistake, AdjointMap<T>, bool); 3] = [
        (Mistake::Transposed, |u| u.t().to_owned(), square),
        (
            Mistake::SymmetricPartOnly,
            |u| Structure::Symmetric.project(u),
            square,
        ),
        (
            Mistake::LowerTriangleOnly,
            |u| Structure::LowerTriangular.project(u),
            true,
        ),
    ];
    for (mistake, adjoint, applies) in maps {
        if !applies {
            continue;
        }
        let mut all = true;
        for (u, an, _) in dirs {
            let v = s.project(adjoint(u.clone()));
            let fd = inner64(cbar, ctx.fd(i, &v)?.view());
            if !close(*an, fd) {
                all = false;
                break;
            }
        }
        if all {
            return Ok(mistake);
        }
    }
    Ok(Mistake::Unrecognised)
}

fn adjoint_error<T: Real, P: Primitive<T> + ?Sized>(
    ctx: &Ctx<'_, '_, T, P>,
    c: ArrayView2<'_, T>,
    cbar: ArrayView2<'_, T>,
    grads: &[Array2<T>],
    rng: &mut StdRng,
) -> Result<f64> {
    let tangents: Vec<Array2<T>> = ctx
        .inputs
        .iter()
        .enumerate()
        .map(|(i, x)| {
            ctx.p
                .structure(i)
                .project(random::randn::<T>(x.nrows(), x.ncols(), rng))
        })
        .collect();
    let tv: Vec<ArrayView2<'_, T>> = tangents.iter().map(|t| t.view()).collect();
    let cdot = ctx.p.jvp(ctx.inputs, c, &tv)?;
    if cdot.dim() != c.dim() {
        return Ok(f64::INFINITY);
    }
    let lhs = inner(cbar, cdot.view());
    let mut rhs = 0.0;
    let mut scale = norm(cbar) * norm(cdot.view());
    for (g, t) in grads.iter().zip(&tangents) {
        rhs += inner(g.view(), t.view());
        scale += norm(g.view()) * norm(t.view());
    }
    Ok(scalar_rel(lhs, rhs, scale))
}

fn accumulation_errors<T: Real, P: Primitive<T> + ?Sized>(
    ctx: &Ctx<'_, '_, T, P>,
    c: ArrayView2<'_, T>,
    cbar: ArrayView2<'_, T>,
    grads: &[Array2<T>],
    reports: &mut [InputReport],
    rng: &mut StdRng,
) -> Result<()> {
    let n = ctx.inputs.len();
    // One pass with every buffer, then one per input with the others skipped.
    let passes: Vec<Vec<bool>> = std::iter::once(vec![true; n])
        .chain(
            (0..n)
                .filter(|_| n > 1)
                .map(|i| (0..n).map(|j| j == i).collect()),
        )
        .collect();
    for wanted in passes {
        let before: Vec<Array2<T>> = ctx
            .inputs
            .iter()
            .map(|x| random::randn::<T>(x.nrows(), x.ncols(), rng))
            .collect();
        let mut bufs = before.clone();
        let mut views: Vec<Option<ArrayViewMut2<'_, T>>> = bufs
            .iter_mut()
            .zip(&wanted)
            .map(|(b, &w)| if w { Some(b.view_mut()) } else { None })
            .collect();
        ctx.p.backward_into(ctx.inputs, c, cbar, &mut views)?;
        drop(views);
        for i in 0..n {
            let expected = if wanted[i] {
                &before[i] + &grads[i]
            } else {
                before[i].clone()
            };
            let mut diff = 0.0f64;
            Zip::from(&bufs[i]).and(&expected).for_each(|a, b| {
                let d = (a.to64() - b.to64()).abs();
                diff = if d.is_nan() { f64::NAN } else { diff.max(d) };
            });
            let scale = expected.iter().fold(0.0f64, |m, x| m.max(x.to64().abs()));
            let err = if scale > 0.0 { diff / scale } else { diff };
            let r = &mut reports[i];
            r.accumulate_error = if err.is_nan() || r.accumulate_error.is_nan() {
                f64::NAN
            } else {
                r.accumulate_error.max(err)
            };
        }
    }
    Ok(())
}

fn structure_error<T: Real>(g: ArrayView2<'_, T>, s: Structure) -> f64 {
    let scale = g.iter().fold(0.0f64, |m, x| m.max(x.to64().abs()));
    if scale == 0.0 {
        return 0.0;
    }
    let mut worst = 0.0f64;
    match s {
        Structure::General => {}
        Structure::Symmetric => {
            if g.nrows() != g.ncols() {
                return f64::INFINITY;
            }
            for ((r, k), x) in g.indexed_iter() {
                worst = worst.max((x.to64() - g[(k, r)].to64()).abs());
            }
        }
        Structure::LowerTriangular => {
            for ((r, k), x) in g.indexed_iter() {
                if k > r {
                    worst = worst.max(x.to64().abs());
                }
            }
        }
    }
    worst / scale
}

fn inner<T: Real>(a: ArrayView2<'_, T>, b: ArrayView2<'_, T>) -> f64 {
    let mut s = 0.0;
    Zip::from(a)
        .and(b)
        .for_each(|x, y| s += x.to64() * y.to64());
    s
}

fn inner64<T: Real>(a: ArrayView2<'_, T>, b: ArrayView2<'_, f64>) -> f64 {
    let mut s = 0.0;
    Zip::from(a).and(b).for_each(|x, y| s += x.to64() * y);
    s
}

fn norm<T: Real>(a: ArrayView2<'_, T>) -> f64 {
    a.iter().map(|x| x.to64() * x.to64()).sum::<f64>().sqrt()
}

fn norm64(a: ArrayView2<'_, f64>) -> f64 {
    a.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// `|a − b|` relative to `scale` (a Cauchy–Schwarz bound on the terms' size), or to the
/// larger of `|a|`, `|b|` if that is larger; NaN stays NaN so it cannot pass.
fn scalar_rel(a: f64, b: f64, scale: f64) -> f64 {
    let d = (a - b).abs();
    let s = scale.max(a.abs()).max(b.abs());
    if d.is_nan() {
        f64::NAN
    } else if s > 0.0 {
        d / s
    } else {
        d
    }
}

/// `‖A − B‖_F / max(‖A‖_F, ‖B‖_F)` with `A` in any precision and `B` in f64.
fn matrix_rel<T: Real>(a: ArrayView2<'_, T>, b: ArrayView2<'_, f64>) -> f64 {
    if a.dim() != b.dim() {
        return f64::INFINITY;
    }
    let mut d = 0.0;
    let mut na = 0.0;
    let mut nb = 0.0;
    Zip::from(a).and(b).for_each(|x, y| {
        let x = x.to64();
        d += (x - y) * (x - y);
        na += x * x;
        nb += y * y;
    });
    let s = na.max(nb).sqrt();
    if d.is_nan() {
        f64::NAN
    } else if s > 0.0 {
        d.sqrt() / s
    } else {
        d.sqrt()
    }
}
