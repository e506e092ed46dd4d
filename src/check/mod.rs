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
//! A primitive `(Y₀, …) = f(X₀, …)` with any number of inputs and outputs is checked at
//! one point, with one random cotangent `Ȳₖ` per output, in seeded random directions
//! that respect each input's declared [`Structure`](crate::Structure).
//! [`Checker::check`] runs these passes, each filling its own fields of the [`Report`]:
//!
//! - **shapes**: the reverse rule for each input alone and the forward-mode rule for
//!   each tangent alone run on the shapes the shape rule accepts (a shape error there is
//!   a bug in the rule, reported, and ends the check); the outputs are finite; a
//!   symmetric input gets a symmetric gradient, a lower-triangular one a gradient with
//!   zero strict upper triangle;
//! - **directional**: the VJP `⟨X̄ᵢ, U⟩` against `Σₖ⟨Ȳₖ, (f(X+hU) − f(X−hU))ₖ/2h⟩`,
//!   and the JVP, output by output, against the same difference, Richardson-extrapolated
//!   over `h` and `h/2` so the `h²` error cancels; a wrong gradient is diagnosed
//!   ([`Mistake`]). `h` is [`Tolerances::step`] times the largest magnitude among the
//!   entries the input's structure declares independent (when above 1), and a
//!   difference within the rounding the finite differences carry passes: an absolute
//!   floor under the relative errors, for derivatives near zero (`docs/math.md`);
//! - **adjoint**: `Σₖ⟨Ȳₖ, Ẏₖ⟩ = Σᵢ⟨X̄ᵢ, Ẋᵢ⟩`, exact up to rounding;
//! - **missing cotangent** (several outputs): a `None` cotangent counts as zero, so the
//!   gradients with it missing plus those with only it given are those with every
//!   cotangent given;
//! - **accumulation**: `Grad::Add` adds exactly `backward`'s gradient to what a buffer
//!   held, with every input wanted, with the others skipped, and next to first writes;
//! - **first write**: `Grad::Write` into a NaN-filled buffer gives `backward`'s gradient
//!   (so the buffer is not read), likewise `forward_into` (residuals included: they must
//!   be written) and `jvp_into` into NaN-filled output buffers;
//! - **workspace**: the three passes give the same results with a NaN-filled caller
//!   workspace of exactly [`crate::Rule::workspace`] elements;
//! - **saves**: for the all-wanted mask and each single-input mask, every input and
//!   output that [`crate::Rule::saves`] does not declare is replaced by NaN and the
//!   gradients must not change; a failure names the value read;
//! - optionally (automatically for small inputs) the **full Jacobian** over every
//!   output, naming the worst element.
//!
//! Residual outputs ([`crate::Rule::residuals`]) take no cotangent and no tangent: the
//! finite-difference, adjoint, missing-cotangent and Jacobian passes cover the
//! differentiable outputs only. The residuals are handed to every rule, must be finite
//! and written by `forward_into` without being read, and count as outputs in the saves
//! pass (an undeclared one is replaced by NaN like any other).
//!
//! Every comparison that produces NaN or infinity fails; settings that could not fail
//! (a zero, negative or NaN tolerance or step, no directions) are errors.
//!
//! When a gradient is wrong the report says what it looks like ([`Mistake`]): the
//! transpose of the right answer, the sign flipped, a factor 2 or ½, only the symmetric
//! part, only the lower triangle, or zero. Each hypothesis `X̄ = τ(G)` is tested without
//! knowing the true gradient `G`, through `⟨τ(G), U⟩ = ⟨G, τ*(U)⟩` and a finite
//! difference in the direction `τ*(U)` (`docs/math.md`, "Checking a rule").

mod passes;
mod report;
#[cfg(test)]
mod tests;

pub mod random;

pub use report::{
    InputReport, Mistake, OutputReport, PrecisionReport, Report, UndeclaredRead, Value, Worst,
};

use crate::error::{Error, Result};
use crate::primitive::expect_count;
use crate::{Primitive, Real, Rule};
use ndarray::{Array2, ArrayView2};
use passes::{matrix_rel, somes, views, Run};

/// How close the checker's comparisons must be, and the finite-difference step.
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct Tolerances {
    /// Relative error accepted for the finite-difference comparisons (VJP, JVP, full
    /// Jacobian).
    pub fd: f64,
    /// Relative error accepted for the exact identities (adjoint, accumulation, first
    /// write, saves, workspace, structure, missing cotangent).
    pub exact: f64,
    /// Finite-difference step `h`, scaled by the largest magnitude among the entries
    /// of the input its structure declares independent, when above 1.
    pub step: f64,
}

impl Tolerances {
    /// For `f64`.
    pub const F64: Tolerances = Tolerances {
        fd: 1e-8,
        exact: 1e-11,
        step: 1e-4,
    };
    /// For `f32`.
    pub const F32: Tolerances = Tolerances {
        fd: 2e-2,
        exact: 1e-4,
        step: 1e-2,
    };
    /// The defaults for the precision `T`.
    pub fn for_precision<T: Real>() -> Self {
        if T::NAME == <f32 as Real>::NAME {
            Self::F32
        } else {
            Self::F64
        }
    }
}

/// Configures and runs the checks. Tolerances default to
/// [`Tolerances::for_precision`] of the type checked.
#[derive(Clone, Debug)]
pub struct Checker {
    seed: u64,
    fd: Option<f64>,
    exact: Option<f64>,
    step: Option<f64>,
    directions: usize,
    full_jacobian: Option<bool>,
}

impl Default for Checker {
    fn default() -> Self {
        Checker {
            seed: 0x6d61_7467_7261_6421,
            fd: None,
            exact: None,
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
    /// Seed of the random cotangents, directions and buffers.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
    /// Relative error accepted for the finite-difference comparisons.
    pub fn tol(mut self, tol: f64) -> Self {
        self.fd = Some(tol);
        self
    }
    /// Relative error accepted for the exact identities (adjoint, accumulation, first
    /// write, saves, workspace, structure, missing cotangent).
    pub fn exact_tol(mut self, tol: f64) -> Self {
        self.exact = Some(tol);
        self
    }
    /// Finite-difference step `h`, scaled by the largest magnitude among the entries of
    /// the input its structure declares independent (only the lower triangle of a
    /// symmetric or lower-triangular input), when above 1.
    pub fn step(mut self, h: f64) -> Self {
        self.step = Some(h);
        self
    }
    /// All three tolerances at once.
    pub fn tolerances(mut self, t: Tolerances) -> Self {
        self.fd = Some(t.fd);
        self.exact = Some(t.exact);
        self.step = Some(t.step);
        self
    }
    /// Number of random directions per input, at least 1 ([`Checker::check`] returns
    /// [`Error::InvalidArgument`] for 0).
    pub fn directions(mut self, n: usize) -> Self {
        self.directions = n;
        self
    }
    /// Forces the full-Jacobian comparison on or off (by default it runs when the
    /// inputs hold at most 100 elements in all).
    pub fn full_jacobian(mut self, on: bool) -> Self {
        self.full_jacobian = Some(on);
        self
    }
    /// The tolerances a check in precision `T` uses: those set, else the defaults.
    pub fn tolerances_for<T: Real>(&self) -> Tolerances {
        let d = Tolerances::for_precision::<T>();
        Tolerances {
            fd: self.fd.unwrap_or(d.fd),
            exact: self.exact.unwrap_or(d.exact),
            step: self.step.unwrap_or(d.step),
        }
    }

    /// Errors unless the settings can decide anything: every tolerance and the step
    /// finite and positive, at least one direction.
    fn validate(&self, tol: &Tolerances) -> Result<()> {
        let bad = |what: &str, v: f64| Error::InvalidArgument {
            op: "Checker",
            msg: format!("{what} must be finite and positive, got {v}"),
        };
        for (what, v) in [
            ("the finite-difference tolerance", tol.fd),
            ("the exact tolerance", tol.exact),
            ("the finite-difference step", tol.step),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(bad(what, v));
            }
        }
        if self.directions == 0 {
            return Err(Error::InvalidArgument {
                op: "Checker",
                msg: "the number of directions must be at least 1".into(),
            });
        }
        Ok(())
    }

    /// Runs every pass (see the [module documentation](self)) on `p` at the point
    /// `inputs`.
    ///
    /// Returns `Err` for settings that cannot decide anything (a tolerance or step that
    /// is zero, negative, infinite or NaN, no directions: [`Error::InvalidArgument`]),
    /// for a NaN or infinity among the entries of an input that its structure declares
    /// independent ([`Error::NonFinite`]; the other triangle of a structured input is
    /// not read), and when the primitive returns an error a correct rule could return:
    /// its forward pass at the point, or at a point the checker perturbed, which the
    /// error then says ([`Error::Perturbed`]). A wrong gradient, a shape error of a rule
    /// on shapes its shape rule accepts, an undeclared read or an error in only one
    /// buffer mode is reported in the [`Report`].
    pub fn check<T: Real, P: Primitive<T> + ?Sized>(
        &self,
        p: &P,
        inputs: &[ArrayView2<'_, T>],
    ) -> Result<Report> {
        expect_count(p.name(), "inputs", p.arity(), inputs.len())?;
        let tol = self.tolerances_for::<T>();
        self.validate(&tol)?;
        for (i, x) in inputs.iter().enumerate() {
            let s = p.structure(i);
            let bad = x
                .indexed_iter()
                .find(|&((r, c), v)| s.independent(r, c) && !v.is_finite());
            if let Some(((row, col), _)) = bad {
                return Err(Error::NonFinite {
                    op: p.name(),
                    name: p.input_name(i),
                    row,
                    col,
                });
            }
        }
        let mut rng = random::rng(self.seed);
        let y = p.forward(inputs)?;
        // One cotangent per differentiable output; residuals take none.
        let ybar: Vec<Array2<T>> = y
            .iter()
            .take(p.outputs())
            .map(|c| random::randn::<T>(c.nrows(), c.ncols(), &mut rng))
            .collect();
        let mut run = Run::new(p, inputs, y, ybar, tol);
        let mut report = run.empty_report();
        if !run.shapes_pass(&mut report)? {
            return Ok(report);
        }
        run.directional_pass(&mut report, self.directions, &mut rng)?;
        run.adjoint_pass(&mut report, &mut rng)?;
        run.missing_cotangent_pass(&mut report)?;
        run.accumulation_pass(&mut report, &mut rng)?;
        run.first_write_pass(&mut report, &mut rng)?;
        run.workspace_pass(&mut report, &mut rng)?;
        run.saves_pass(&mut report)?;
        let total: usize = inputs.iter().map(|x| x.len()).sum();
        if self
            .full_jacobian
            .unwrap_or(total <= AUTO_JACOBIAN_ELEMENTS)
        {
            run.jacobian_pass(&mut report)?;
        }
        Ok(report)
    }

    /// Checks `p` in `f64` with this checker, in `f32` at the same point rounded (with
    /// the same seed, directions and Jacobian setting, but `f32`'s default tolerances:
    /// tolerances set here are for `f64`), and the `f32` results against the `f64` ones
    /// ([`check_precision`]); panics with the failing report. Returns the `f64` report.
    #[track_caller]
    pub fn assert_precisions<P>(&self, p: &P, inputs: &[ArrayView2<'_, f64>]) -> Report
    where
        P: Primitive<f32> + Primitive<f64> + ?Sized,
    {
        let name = Rule::<f64>::name(p);
        let r64 = self
            .check(p, inputs)
            .unwrap_or_else(|e| panic!("{name} [f64]: the primitive returned an error: {e}"));
        r64.assert_passed();
        let x32: Vec<Array2<f32>> = inputs.iter().map(|x| x.mapv(|v| v as f32)).collect();
        let f32_checker = Checker {
            fd: None,
            exact: None,
            step: None,
            ..self.clone()
        };
        f32_checker
            .check(p, &views(&x32))
            .unwrap_or_else(|e| panic!("{name} [f32]: the primitive returned an error: {e}"))
            .assert_passed();
        check_precision(p, inputs)
            .unwrap_or_else(|e| panic!("{name} f32 vs f64: the primitive returned an error: {e}"))
            .assert_passed();
        r64
    }
}

/// Compares a primitive's `f32` results (forward, backward, jvp, every differentiable
/// output; residuals only through the gradients and tangents) with its `f64` results
/// at the same point, as `docs/math.md` advises: check in `f64`, then
/// check `f32` against it.
pub fn check_precision<P>(p: &P, inputs: &[ArrayView2<'_, f64>]) -> Result<PrecisionReport>
where
    P: Primitive<f32> + Primitive<f64> + ?Sized,
{
    let mut rng = random::rng(0x7072_6563);
    let in32: Vec<Array2<f32>> = inputs.iter().map(|x| x.mapv(|v| v as f32)).collect();
    // Evaluate f64 at the f32-rounded point, so only the arithmetic differs.
    let in64: Vec<Array2<f64>> = in32.iter().map(|x| x.mapv(f64::from)).collect();
    let (v64, v32) = (views(&in64), views(&in32));
    let y64 = Primitive::<f64>::forward(p, &v64)?;
    let y32 = Primitive::<f32>::forward(p, &v32)?;
    // Residuals are compared only through the gradients and tangents that use them.
    let m = Rule::<f64>::outputs(p);
    let ybar32: Vec<Array2<f32>> = y64
        .iter()
        .take(m)
        .map(|c| random::randn::<f32>(c.nrows(), c.ncols(), &mut rng))
        .collect();
    let ybar64: Vec<Array2<f64>> = ybar32.iter().map(|x| x.mapv(f64::from)).collect();
    let g64 = Primitive::<f64>::backward(p, &v64, &views(&y64), &somes(&ybar64))?;
    let g32 = Primitive::<f32>::backward(p, &v32, &views(&y32), &somes(&ybar32))?;
    let t32: Vec<Array2<f32>> = inputs
        .iter()
        .enumerate()
        .map(|(i, x)| {
            let s = Rule::<f32>::structure(p, i);
            s.project(random::randn::<f32>(x.nrows(), x.ncols(), &mut rng))
        })
        .collect();
    let t64: Vec<Array2<f64>> = t32.iter().map(|x| x.mapv(f64::from)).collect();
    let j64 = Primitive::<f64>::jvp(p, &v64, &views(&y64), &somes(&t64))?;
    let j32 = Primitive::<f32>::jvp(p, &v32, &views(&y32), &somes(&t32))?;
    let rel = |a: &[Array2<f32>], b: &[Array2<f64>]| -> Vec<f64> {
        a.iter()
            .zip(b)
            .map(|(a, b)| matrix_rel(a.view(), b.view()))
            .collect()
    };
    Ok(PrecisionReport {
        name: Rule::<f64>::name(p),
        forward_errors: rel(&y32[..m], &y64[..m]),
        backward_errors: rel(&g32, &g64),
        jvp_errors: rel(&j32, &j64),
        tol: Tolerances::F32.exact * 10.0,
    })
}

/// Runs [`Checker::new`]`.check(p, inputs)` and panics with the report unless it passes.
#[track_caller]
pub fn assert_rule<T: Real, P: Primitive<T> + ?Sized>(p: &P, inputs: &[ArrayView2<'_, T>]) {
    match Checker::new().check(p, inputs) {
        Ok(r) => r.assert_passed(),
        Err(e) => panic!("{}: the primitive returned an error: {e}", p.name()),
    }
}

/// The whole check in both precisions with the default checker: `f64`, `f32` at the
/// same point rounded, and `f32` against `f64` ([`Checker::assert_precisions`]); panics
/// with the failing report.
#[track_caller]
pub fn assert_rule_precisions<P>(p: &P, inputs: &[ArrayView2<'_, f64>])
where
    P: Primitive<f32> + Primitive<f64> + ?Sized,
{
    Checker::new().assert_precisions(p, inputs);
}
