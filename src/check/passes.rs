//! The passes of [`super::Checker::check`], each filling its own fields of the
//! [`Report`], and the arithmetic they share.

use super::random;
use super::report::{InputReport, Mistake, OutputReport, Report, UndeclaredRead, Value, Worst};
use super::Tolerances;
use crate::error::{shape_of, Error, Result, Shape};
use crate::primitive::{Grad, Structure};
use crate::{Primitive, Real};
use ndarray::{Array2, ArrayView2, ArrayViewMut2, Zip};
use rand::rngs::StdRng;

/// Views of owned arrays.
pub(super) fn views<T>(a: &[Array2<T>]) -> Vec<ArrayView2<'_, T>> {
    a.iter().map(|x| x.view()).collect()
}

/// Every slot given.
pub(super) fn somes<T>(a: &[Array2<T>]) -> Vec<Option<ArrayView2<'_, T>>> {
    a.iter().map(|x| Some(x.view())).collect()
}

fn mut_views<T>(a: &mut [Array2<T>]) -> Vec<ArrayViewMut2<'_, T>> {
    a.iter_mut().map(|x| x.view_mut()).collect()
}

/// A matrix of NaN: a buffer or placeholder whose entries must not be read.
fn nan<T: Real>(s: Shape) -> Array2<T> {
    Array2::from_elem((s.0, s.1), T::nan())
}

/// The maximum of two errors, where NaN (a comparison that produced NaN) wins.
fn worse(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

/// Whether an error is within a tolerance (NaN never is).
fn within(err: f64, tol: f64) -> bool {
    err <= tol
}

/// An error that only a rule disagreeing with its own shape rule can return.
fn is_shape_error(e: &Error) -> bool {
    matches!(
        e,
        Error::ShapeMismatch { .. }
            | Error::WrongShape { .. }
            | Error::NotSquare { .. }
            | Error::BadReshape { .. }
            | Error::Arity { .. }
    )
}

/// A rule that wrote a result of the transposed shape into a buffer.
fn transposed_shape(e: &Error) -> Option<Mistake> {
    match e {
        Error::WrongShape { expected, got, .. }
            if expected != got && *expected == Shape(got.1, got.0) =>
        {
            Some(Mistake::TransposedShape)
        }
        _ => None,
    }
}

/// What `backward_into` is asked to do with one input's buffer.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Skip,
    /// The buffer starts as NaN.
    Write,
    /// The buffer starts as random numbers.
    Add,
}

/// Every input in mode `this`; then, with several inputs, each alone in `this` with
/// the others skipped, and each in `this` with the others in `other`.
fn mode_sets(n: usize, this: Mode, other: Mode) -> Vec<Vec<Mode>> {
    let mut sets = vec![vec![this; n]];
    if n > 1 {
        for fill in [Mode::Skip, other] {
            for i in 0..n {
                sets.push((0..n).map(|j| if j == i { this } else { fill }).collect());
            }
        }
    }
    sets
}

/// The primitive at one point, its outputs, the random cotangents and `backward`'s
/// gradients, which every pass compares against.
pub(super) struct Run<'c, 'x, T: Real, P: ?Sized> {
    p: &'c P,
    x: &'c [ArrayView2<'x, T>],
    shapes: Vec<Shape>,
    /// Every output, the residuals last.
    y: Vec<Array2<T>>,
    /// One cotangent per differentiable output.
    ybar: Vec<Array2<T>>,
    /// Filled by the shapes pass.
    grads: Vec<Array2<T>>,
    tol: Tolerances,
}

impl<'c, 'x, T: Real, P: Primitive<T> + ?Sized> Run<'c, 'x, T, P> {
    pub(super) fn new(
        p: &'c P,
        x: &'c [ArrayView2<'x, T>],
        y: Vec<Array2<T>>,
        ybar: Vec<Array2<T>>,
        tol: Tolerances,
    ) -> Self {
        Run {
            p,
            x,
            shapes: x.iter().map(shape_of).collect(),
            y,
            ybar,
            grads: Vec::new(),
            tol,
        }
    }

    /// A report with the names, shapes and finiteness filled and no check run.
    pub(super) fn empty_report(&self) -> Report {
        let k = self.m();
        let output = |(k, y): (usize, &Array2<T>)| {
            OutputReport::new(
                self.p.output_name(k),
                shape_of(y),
                y.iter().all(|v| v.is_finite()),
            )
        };
        Report {
            name: self.p.name(),
            precision: T::NAME,
            inputs: self
                .x
                .iter()
                .enumerate()
                .map(|(i, x)| {
                    InputReport::new(self.p.input_name(i), shape_of(x), self.p.structure(i), k)
                })
                .collect(),
            outputs: self.y.iter().enumerate().take(k).map(output).collect(),
            residuals: self.y.iter().enumerate().skip(k).map(output).collect(),
            adjoint_error: f64::NAN,
            workspace: self.p.workspace(&self.shapes),
            workspace_error: 0.0,
            undeclared_reads: Vec::new(),
            rule_errors: Vec::new(),
            tolerances: self.tol,
        }
    }

    fn n(&self) -> usize {
        self.x.len()
    }

    /// Number of differentiable outputs (the residuals follow them in `y`).
    fn m(&self) -> usize {
        self.ybar.len()
    }

    fn random_tangents(&self, rng: &mut StdRng) -> Vec<Array2<T>> {
        self.shapes
            .iter()
            .enumerate()
            .map(|(i, s)| {
                self.p
                    .structure(i)
                    .project(random::randn::<T>(s.0, s.1, rng))
            })
            .collect()
    }

    // ---------------------------------------------------------------- shapes

    /// Runs the reverse rule for each input alone and the forward-mode rule for each
    /// tangent alone. A shape error from either, on shapes the shape rule accepts, is a
    /// bug in the rule: it is recorded and the check ends (`Ok(false)`). Otherwise
    /// computes `backward`'s gradients, which the other passes compare against, and
    /// how far each is from its input's declared structure.
    pub(super) fn shapes_pass(&mut self, report: &mut Report) -> Result<bool> {
        let n = self.n();
        let mut ran = true;
        {
            let y = views(&self.y);
            let ybar = somes(&self.ybar);
            for i in 0..n {
                let r = &mut report.inputs[i];
                let mut buf = Array2::<T>::zeros(self.x[i].raw_dim());
                let mut grads: Vec<Grad<'_, T>> = (0..n).map(|_| Grad::Skip).collect();
                grads[i] = Grad::Write(buf.view_mut());
                if let Err(e) = self.p.backward_into(self.x, &y, &ybar, &mut grads, None) {
                    if !is_shape_error(&e) {
                        return Err(e);
                    }
                    r.mistake = transposed_shape(&e);
                    r.pullback_error = Some(e);
                    ran = false;
                }
                let mut xdot: Vec<Option<ArrayView2<'_, T>>> = vec![None; n];
                xdot[i] = Some(self.x[i].view());
                if let Err(e) = self.p.jvp(self.x, &y, &xdot) {
                    if !is_shape_error(&e) {
                        return Err(e);
                    }
                    r.pushforward_error = Some(e);
                    ran = false;
                }
            }
        }
        if !ran {
            return Ok(false);
        }
        let grads = self
            .p
            .backward(self.x, &views(&self.y), &somes(&self.ybar))?;
        for (r, g) in report.inputs.iter_mut().zip(&grads) {
            r.structure_error = structure_error(g.view(), r.structure);
        }
        self.grads = grads;
        Ok(true)
    }

    // ----------------------------------------------------------- directional

    /// Every differentiable output with input `i` replaced by `Xᵢ + t·U`, widened to
    /// f64 (the residuals are not differentiated). An error there, or an output whose
    /// shape differs from the one at the point, is [`Error::Perturbed`].
    fn eval_shifted(&self, i: usize, u: &Array2<T>, t: f64) -> Result<Vec<Array2<f64>>> {
        let perturbed = |e: Error| Error::Perturbed {
            op: self.p.name(),
            input: self.p.input_name(i),
            step: t,
            source: Box::new(e),
        };
        let mut xi = self.x[i].to_owned();
        xi.scaled_add(T::of(t), u);
        let mut x: Vec<ArrayView2<'_, T>> = self.x.iter().map(|x| x.view()).collect();
        x[i] = xi.view();
        let y = self.p.forward(&x).map_err(perturbed)?;
        for (k, (got, want)) in y.iter().zip(&self.y).enumerate() {
            let (got, expected) = (shape_of(got), shape_of(want));
            if got != expected {
                return Err(perturbed(Error::WrongShape {
                    op: self.p.name(),
                    name: "the output",
                    of: self.p.output_name(k),
                    expected,
                    got,
                }));
            }
        }
        Ok(y.into_iter()
            .take(self.m())
            .map(|y| y.mapv(T::to64))
            .collect())
    }

    /// Step for input `i`, relative to the magnitude of the entries its structure
    /// declares independent (the others are not read, and may hold anything).
    fn h(&self, i: usize) -> f64 {
        let s = self.p.structure(i);
        let scale = self.x[i]
            .indexed_iter()
            .filter(|&((r, c), _)| s.independent(r, c))
            .fold(1.0f64, |m, (_, x)| m.max(x.to64().abs()));
        self.tol.step * scale
    }

    /// Richardson-extrapolated central difference of every differentiable output in
    /// direction `U` of input `i`.
    fn fd(&self, i: usize, u: &Array2<T>) -> Result<Diff> {
        let h = self.h(i);
        // Entrywise, the largest magnitude each output takes at the four points.
        let mut size: Vec<Array2<f64>> = self.y[..self.m()]
            .iter()
            .map(|y| Array2::zeros(y.raw_dim()))
            .collect();
        let mut central = |h: f64| -> Result<Vec<Array2<f64>>> {
            let plus = self.eval_shifted(i, u, h)?;
            let minus = self.eval_shifted(i, u, -h)?;
            for y in [&plus, &minus] {
                for (m, yk) in size.iter_mut().zip(y) {
                    m.zip_mut_with(yk, |m, v| *m = worse(*m, v.abs()));
                }
            }
            Ok(plus
                .into_iter()
                .zip(minus)
                .map(|(p, m)| (p - m) / (2.0 * h))
                .collect())
        };
        let d1 = central(h)?;
        let d2 = central(h / 2.0)?;
        let eps = T::epsilon().to64();
        Ok(Diff {
            d: d1
                .into_iter()
                .zip(d2)
                .map(|(d1, d2)| (d2 * 4.0 - d1) / 3.0)
                .collect(),
            noise: size.into_iter().map(|m| m * (NOISE * eps / h)).collect(),
        })
    }

    /// `Σₖ⟨Ȳₖ, Dₖ⟩`, its Cauchy–Schwarz scale `Σₖ‖Ȳₖ‖‖Dₖ‖`, and the rounding noise it
    /// can carry, `Σₖ⟨|Ȳₖ|, noiseₖ⟩`.
    fn pair(&self, d: &Diff) -> (f64, f64, f64) {
        self.ybar.iter().zip(&d.d).zip(&d.noise).fold(
            (0.0, 0.0, 0.0),
            |(s, n, f), ((yb, dk), nk)| {
                (
                    s + inner64(yb.view(), dk.view()),
                    n + norm(yb.view()) * norm64(dk.view()),
                    f + inner64(yb.mapv(|v| v.abs()).view(), nk.view()),
                )
            },
        )
    }

    /// `Ẏ` when only input `i` moves, along `U` (the other tangents missing).
    fn jvp_single(&self, i: usize, u: &Array2<T>) -> Result<Vec<Array2<T>>> {
        let mut xdot: Vec<Option<ArrayView2<'_, T>>> = vec![None; self.n()];
        xdot[i] = Some(u.view());
        self.p.jvp(self.x, &views(&self.y), &xdot)
    }

    /// Per input, the VJP `⟨X̄ᵢ, U⟩` against `Σₖ⟨Ȳₖ, Dₖ⟩` and the JVP `Ẏₖ` against
    /// `Dₖ`, output by output, where `D` is the finite difference along a random
    /// structured direction `U`; a wrong VJP is diagnosed.
    pub(super) fn directional_pass(
        &self,
        report: &mut Report,
        directions: usize,
        rng: &mut StdRng,
    ) -> Result<()> {
        let k = self.m();
        for i in 0..self.n() {
            let (s, shape) = (report.inputs[i].structure, report.inputs[i].shape);
            let g = self.grads[i].view();
            let mut vjp = 0.0f64;
            let mut jvp = vec![0.0f64; k];
            let mut dirs = Vec::with_capacity(directions);
            for _ in 0..directions {
                let u = s.project(random::randn::<T>(shape.0, shape.1, rng));
                let d = self.fd(i, &u)?;
                let (fd, scale, noise) = self.pair(&d);
                let an = inner(g, u.view());
                let tol = self.tol.fd;
                vjp = worse(vjp, floored(scalar_rel(an, fd, scale), an - fd, noise, tol));
                let ydot = self.jvp_single(i, &u)?;
                for (k, (e, yd)) in jvp.iter_mut().zip(&ydot).enumerate() {
                    let rel = matrix_rel_floored(yd.view(), d.d[k].view(), d.noise[k].view());
                    *e = worse(*e, rel);
                }
                dirs.push((u, an, fd));
            }
            let mistake = if within(vjp, self.tol.fd) {
                None
            } else {
                Some(self.diagnose(i, g, &dirs, s)?)
            };
            let r = &mut report.inputs[i];
            r.vjp_error = vjp;
            r.jvp_error = jvp.iter().copied().fold(0.0, worse);
            r.jvp_errors = jvp;
            r.mistake = mistake;
        }
        Ok(())
    }

    /// Which common mistake `X̄ᵢ = τ(G)` the gradient `g` matches, tested through
    /// `⟨τ(G), U⟩ = ⟨G, τ*(U)⟩` with one finite difference along `τ*(U)` per direction.
    fn diagnose(
        &self,
        i: usize,
        g: ArrayView2<'_, T>,
        dirs: &[(Array2<T>, f64, f64)],
        s: Structure,
    ) -> Result<Mistake> {
        let any_fd = dirs.iter().any(|(_, _, fd)| fd.abs() > 0.0);
        if g.iter().all(|x| *x == T::zero()) && any_fd {
            return Ok(Mistake::Zero);
        }
        let tol = 1e-3_f64.max(self.tol.fd * 10.0);
        let close = |an: f64, fd: f64| within(scalar_rel(an, fd, an.abs().max(fd.abs())), tol);
        let scalar = |k: f64| dirs.iter().all(|(_, an, fd)| close(*an, k * fd));
        // Checked first: on some shapes a hypothesis below is the identity (the lower
        // triangle of a column, the transpose of a 1×1), which would name a mistake
        // for a gradient that is merely imprecise.
        if scalar(1.0) {
            return Ok(Mistake::Inaccurate);
        }
        if scalar(-1.0) {
            return Ok(Mistake::SignFlipped);
        }
        if scalar(2.0) {
            return Ok(Mistake::Doubled);
        }
        if scalar(0.5) {
            return Ok(Mistake::Halved);
        }
        let square = g.nrows() == g.ncols() && g.nrows() > 1;
        let has_upper = g.ncols() > 1;
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
                has_upper,
            ),
        ];
        for (mistake, adjoint, applies) in maps {
            if !applies {
                continue;
            }
            let mut all = true;
            for (u, an, _) in dirs {
                let v = s.project(adjoint(u.clone()));
                let fd = self.pair(&self.fd(i, &v)?).0;
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

    // --------------------------------------------------------------- adjoint

    /// `Σₖ⟨Ȳₖ, Ẏₖ⟩ = Σᵢ⟨X̄ᵢ, Ẋᵢ⟩` for random structured tangents of every input.
    pub(super) fn adjoint_pass(&self, report: &mut Report, rng: &mut StdRng) -> Result<()> {
        let xdot = self.random_tangents(rng);
        let ydot = self.p.jvp(self.x, &views(&self.y), &somes(&xdot))?;
        let (mut lhs, mut rhs, mut scale) = (0.0, 0.0, 0.0);
        for (yb, yd) in self.ybar.iter().zip(&ydot) {
            lhs += inner(yb.view(), yd.view());
            scale += norm(yb.view()) * norm(yd.view());
        }
        for (g, t) in self.grads.iter().zip(&xdot) {
            rhs += inner(g.view(), t.view());
            scale += norm(g.view()) * norm(t.view());
        }
        report.adjoint_error = scalar_rel(lhs, rhs, scale);
        Ok(())
    }

    // ----------------------------------------------------- missing cotangent

    /// With several differentiable outputs, for each: a missing cotangent must count as
    /// zero, so by linearity the gradients with it missing (the others given) plus those
    /// with only it given add up to `backward`'s gradients with every cotangent given.
    /// (A cotangent that is entirely zero reaches the rule as missing, so comparing
    /// with a zero one would test nothing.)
    pub(super) fn missing_cotangent_pass(&self, report: &mut Report) -> Result<()> {
        if self.m() < 2 {
            return Ok(());
        }
        let y = views(&self.y);
        for k in 0..self.m() {
            let mut missing = somes(&self.ybar);
            missing[k] = None;
            let mut alone: Vec<Option<ArrayView2<'_, T>>> = vec![None; self.m()];
            alone[k] = Some(self.ybar[k].view());
            let parts = self
                .p
                .backward(self.x, &y, &missing)
                .and_then(|g| Ok((g, self.p.backward(self.x, &y, &alone)?)));
            let err = match parts {
                Ok((g, h)) => g
                    .iter()
                    .zip(&h)
                    .zip(&self.grads)
                    .map(|((a, b), all)| sum_error(a.view(), b.view(), all.view()))
                    .fold(0.0, worse),
                Err(e) => {
                    report.rule_errors.push(format!(
                        "backward with the cotangent of {} missing, or with only it given, returned an error it does not return with every cotangent given: {e}",
                        self.p.output_name(k)
                    ));
                    f64::NAN
                }
            };
            report.outputs[k].missing_cotangent_error = Some(err);
        }
        Ok(())
    }

    // ------------------------------------------------ accumulation and first write

    /// `backward_into` with one mode per input: `Write` buffers start as NaN, `Add`
    /// buffers as random numbers. Per input, the error against what the buffer should
    /// hold (`None` for a skipped input).
    fn run_modes(&self, modes: &[Mode], rng: &mut StdRng) -> Result<Vec<Option<f64>>> {
        let before: Vec<Array2<T>> = self
            .shapes
            .iter()
            .zip(modes)
            .map(|(&s, m)| match m {
                Mode::Add => random::randn::<T>(s.0, s.1, rng),
                Mode::Write => nan(s),
                Mode::Skip => Array2::zeros((0, 0)),
            })
            .collect();
        let mut bufs = before.clone();
        let mut grads: Vec<Grad<'_, T>> = bufs
            .iter_mut()
            .zip(modes)
            .map(|(b, m)| match m {
                Mode::Skip => Grad::Skip,
                Mode::Write => Grad::Write(b.view_mut()),
                Mode::Add => Grad::Add(b.view_mut()),
            })
            .collect();
        self.p.backward_into(
            self.x,
            &views(&self.y),
            &somes(&self.ybar),
            &mut grads,
            None,
        )?;
        drop(grads);
        Ok(modes
            .iter()
            .enumerate()
            .map(|(i, m)| match m {
                Mode::Skip => None,
                Mode::Write => Some(buffer_error(bufs[i].view(), self.grads[i].view())),
                Mode::Add => {
                    let expected = &before[i] + &self.grads[i];
                    Some(buffer_error(bufs[i].view(), expected.view()))
                }
            })
            .collect())
    }

    fn modes_text(&self, report: &Report, modes: &[Mode]) -> String {
        let parts: Vec<String> = report
            .inputs
            .iter()
            .zip(modes)
            .map(|(r, m)| format!("{}: {m:?}", r.name))
            .collect();
        parts.join(", ")
    }

    /// Runs [`Run::run_modes`] for each set of modes and records, in the field `field`
    /// picks, the errors of the inputs in mode `this`.
    fn modes_pass(
        &self,
        report: &mut Report,
        rng: &mut StdRng,
        this: Mode,
        other: Mode,
        field: fn(&mut InputReport) -> &mut f64,
    ) -> Result<()> {
        for modes in mode_sets(self.n(), this, other) {
            let errs = match self.run_modes(&modes, rng) {
                Ok(errs) => errs,
                Err(e) => {
                    let text = self.modes_text(report, &modes);
                    report.rule_errors.push(format!(
                        "backward_into ({text}) returned an error it does not return otherwise: {e}"
                    ));
                    vec![Some(f64::NAN); modes.len()]
                }
            };
            for ((r, m), e) in report.inputs.iter_mut().zip(&modes).zip(errs) {
                if let (true, Some(e)) = (*m == this, e) {
                    let f = field(r);
                    *f = worse(*f, e);
                }
            }
        }
        Ok(())
    }

    /// `Grad::Add` adds exactly `backward`'s gradient to random buffer contents: every
    /// input at once, each alone with the others skipped, and each next to first writes.
    pub(super) fn accumulation_pass(&self, report: &mut Report, rng: &mut StdRng) -> Result<()> {
        self.modes_pass(report, rng, Mode::Add, Mode::Write, |r| {
            &mut r.accumulate_error
        })
    }

    /// `Grad::Write` into NaN-filled buffers gives `backward`'s gradient (every input at
    /// once, each alone, each next to accumulations), which proves the buffer is not
    /// read; likewise `forward_into` into NaN-filled buffers for every output, residuals
    /// included (so each is written, and not read), and `jvp_into` for the
    /// differentiable outputs.
    pub(super) fn first_write_pass(&self, report: &mut Report, rng: &mut StdRng) -> Result<()> {
        self.modes_pass(report, rng, Mode::Write, Mode::Add, |r| {
            &mut r.first_write_error
        })?;
        let y = views(&self.y);
        let mut outs: Vec<Array2<T>> = self.y.iter().map(|c| nan(shape_of(c))).collect();
        let res = self.p.forward_into(self.x, &mut mut_views(&mut outs), None);
        self.record_outputs(report, res, &outs, &self.y, "forward_into");

        let xdot = self.random_tangents(rng);
        let reference = self.p.jvp(self.x, &y, &somes(&xdot))?;
        let mut outs: Vec<Array2<T>> = reference.iter().map(|c| nan(shape_of(c))).collect();
        let res = self
            .p
            .jvp_into(self.x, &y, &somes(&xdot), &mut mut_views(&mut outs), None);
        self.record_outputs(report, res, &outs, &reference, "jvp_into");
        Ok(())
    }

    fn record_outputs(
        &self,
        report: &mut Report,
        res: Result<()>,
        got: &[Array2<T>],
        expected: &[Array2<T>],
        what: &str,
    ) {
        if let Err(e) = res {
            report.rule_errors.push(format!(
                "{what} into NaN-filled buffers returned an error it does not return otherwise: {e}"
            ));
        }
        // `got` holds every output for `forward_into`, the differentiable ones for
        // `jvp_into`: the residuals' reports follow the outputs'.
        let reports = report.outputs.iter_mut().chain(report.residuals.iter_mut());
        for (o, (g, e)) in reports.zip(got.iter().zip(expected)) {
            o.first_write_error = worse(o.first_write_error, buffer_error(g.view(), e.view()));
        }
    }

    // ------------------------------------------------------------- workspace

    /// With a declared workspace: the forward pass, the reverse pass (every gradient a
    /// first write) and the forward-mode pass with a caller-owned NaN-filled workspace
    /// of exactly the declared length give the results they give with a fresh one.
    pub(super) fn workspace_pass(&self, report: &mut Report, rng: &mut StdRng) -> Result<()> {
        let need = report.workspace;
        if need == 0 {
            return Ok(());
        }
        let y = views(&self.y);
        let ybar = somes(&self.ybar);
        let mut ws = vec![T::nan(); need];
        let mut err = 0.0f64;
        let mut failed = Vec::new();
        let mut compare = |got: &[Array2<T>], expected: &[Array2<T>]| {
            for (g, e) in got.iter().zip(expected) {
                err = worse(err, buffer_error(g.view(), e.view()));
            }
        };

        let mut outs: Vec<Array2<T>> = self.y.iter().map(|c| Array2::zeros(c.raw_dim())).collect();
        match self
            .p
            .forward_into(self.x, &mut mut_views(&mut outs), Some(&mut ws))
        {
            Ok(()) => compare(&outs, &self.y),
            Err(e) => failed.push(format!("forward_into: {e}")),
        }

        ws.fill(T::nan());
        let mut bufs: Vec<Array2<T>> = self.x.iter().map(|x| Array2::zeros(x.raw_dim())).collect();
        let mut grads: Vec<Grad<'_, T>> =
            bufs.iter_mut().map(|b| Grad::Write(b.view_mut())).collect();
        let res = self
            .p
            .backward_into(self.x, &y, &ybar, &mut grads, Some(&mut ws));
        drop(grads);
        match res {
            Ok(()) => compare(&bufs, &self.grads),
            Err(e) => failed.push(format!("backward_into: {e}")),
        }

        ws.fill(T::nan());
        let xdot = self.random_tangents(rng);
        let reference = self.p.jvp(self.x, &y, &somes(&xdot))?;
        let mut outs: Vec<Array2<T>> = reference
            .iter()
            .map(|c| Array2::zeros(c.raw_dim()))
            .collect();
        match self.p.jvp_into(
            self.x,
            &y,
            &somes(&xdot),
            &mut mut_views(&mut outs),
            Some(&mut ws),
        ) {
            Ok(()) => compare(&outs, &reference),
            Err(e) => failed.push(format!("jvp_into: {e}")),
        }

        if !failed.is_empty() {
            err = f64::NAN;
        }
        for f in failed {
            report.rule_errors.push(format!(
                "{f} (with a NaN-filled workspace of the declared {need} elements)"
            ));
        }
        report.workspace_error = err;
        Ok(())
    }

    // ----------------------------------------------------------------- saves

    fn value_name(&self, v: Value) -> &'static str {
        match v {
            Value::Input(i) => self.p.input_name(i),
            Value::Output(k) => self.p.output_name(k),
        }
    }

    /// The wanted gradients with the values in `hidden` replaced by NaN placeholders,
    /// as `(input, error against backward's gradient)`.
    fn with_placeholders(&self, wanted: &[bool], hidden: &[Value]) -> Result<Vec<(usize, f64)>> {
        let px: Vec<Option<Array2<T>>> = (0..self.n())
            .map(|i| {
                hidden
                    .contains(&Value::Input(i))
                    .then(|| nan(self.shapes[i]))
            })
            .collect();
        let py: Vec<Option<Array2<T>>> = (0..self.y.len())
            .map(|k| {
                hidden
                    .contains(&Value::Output(k))
                    .then(|| nan(shape_of(&self.y[k])))
            })
            .collect();
        let x: Vec<ArrayView2<'_, T>> = self
            .x
            .iter()
            .zip(&px)
            .map(|(x, p)| p.as_ref().map_or_else(|| x.view(), |p| p.view()))
            .collect();
        let y: Vec<ArrayView2<'_, T>> = self
            .y
            .iter()
            .zip(&py)
            .map(|(y, p)| p.as_ref().unwrap_or(y).view())
            .collect();
        let mut bufs: Vec<Array2<T>> = self.x.iter().map(|x| Array2::zeros(x.raw_dim())).collect();
        let mut grads: Vec<Grad<'_, T>> = bufs
            .iter_mut()
            .zip(wanted)
            .map(|(b, &w)| {
                if w {
                    Grad::Write(b.view_mut())
                } else {
                    Grad::Skip
                }
            })
            .collect();
        self.p
            .backward_into(&x, &y, &somes(&self.ybar), &mut grads, None)?;
        drop(grads);
        Ok((0..self.n())
            .filter(|&i| wanted[i])
            .map(|i| (i, buffer_error(bufs[i].view(), self.grads[i].view())))
            .collect())
    }

    /// For every gradient wanted and for each one alone: every input and output
    /// (residuals included) that `saves` does not declare is replaced by NaN, and the
    /// gradients must not change.
    /// A change (or an error) is traced to the values read, one at a time.
    pub(super) fn saves_pass(&self, report: &mut Report) -> Result<()> {
        let (n, k) = (self.n(), self.y.len());
        let mut masks = vec![vec![true; n]];
        if n > 1 {
            masks.extend((0..n).map(|i| (0..n).map(|j| j == i).collect::<Vec<bool>>()));
        }
        let exact = self.tol.exact;
        for wanted in masks {
            let saves = self.p.saves(&wanted);
            let hidden: Vec<Value> = (0..n)
                .filter(|&i| !saves.reads_input(i))
                .map(Value::Input)
                .chain(
                    (0..k)
                        .filter(|&o| !saves.reads_output(o))
                        .map(Value::Output),
                )
                .collect();
            if hidden.is_empty() {
                continue;
            }
            let all = self.with_placeholders(&wanted, &hidden);
            let failed = match &all {
                Ok(errs) => {
                    for &(i, e) in errs {
                        let r = &mut report.inputs[i];
                        r.saves_error = worse(r.saves_error, e);
                    }
                    errs.iter().any(|&(_, e)| !within(e, exact))
                }
                Err(_) => {
                    for (r, _) in report.inputs.iter_mut().zip(&wanted).filter(|(_, &w)| w) {
                        r.saves_error = f64::NAN;
                    }
                    true
                }
            };
            if !failed {
                continue;
            }
            let mut found = false;
            for &v in &hidden {
                let (bad, error) = match self.with_placeholders(&wanted, &[v]) {
                    Ok(errs) => (errs.iter().any(|&(_, e)| !within(e, exact)), None),
                    Err(e) => (true, Some(e)),
                };
                if bad {
                    found = true;
                    report.undeclared_reads.push(UndeclaredRead {
                        wanted: wanted.clone(),
                        value: Some(v),
                        name: self.value_name(v),
                        error,
                    });
                }
            }
            if !found {
                report.undeclared_reads.push(UndeclaredRead {
                    wanted: wanted.clone(),
                    value: None,
                    name: "",
                    error: all.err(),
                });
            }
        }
        Ok(())
    }

    // -------------------------------------------------------------- jacobian

    /// The full Jacobian of every differentiable output with respect to every input: one
    /// finite difference per (structured) input element against one reverse pass per
    /// output element (a one-hot cotangent, the other outputs' missing); records per
    /// input the worst element.
    pub(super) fn jacobian_pass(&self, report: &mut Report) -> Result<()> {
        let n = self.n();
        type Column = ((usize, usize), Diff);
        let mut columns: Vec<Vec<Column>> = Vec::with_capacity(n);
        for i in 0..n {
            let s = self.p.structure(i);
            let Shape(rows, cols) = self.shapes[i];
            let mut v = Vec::new();
            for r in 0..rows {
                for c in 0..cols {
                    if !s.independent(r, c) {
                        continue;
                    }
                    let mut e = Array2::<T>::zeros((rows, cols));
                    e[(r, c)] = T::one();
                    if s == Structure::Symmetric {
                        e[(c, r)] = T::one();
                    }
                    v.push(((r, c), self.fd(i, &e)?));
                }
            }
            columns.push(v);
        }
        // One reverse pass per output element (a one-hot cotangent, the other outputs'
        // missing), kept: the scale of each input's Jacobian is known only after all.
        let y = views(&self.y);
        // ((output, its element), every input's gradient for that one-hot cotangent)
        type Row<T> = ((usize, (usize, usize)), Vec<Array2<T>>);
        let mut rows: Vec<Row<T>> = Vec::new();
        for (o, yo) in self.y.iter().enumerate().take(self.m()) {
            for ((ko, lo), _) in yo.indexed_iter() {
                let mut e = Array2::<T>::zeros(yo.raw_dim());
                e[(ko, lo)] = T::one();
                let mut ybar: Vec<Option<ArrayView2<'_, T>>> = vec![None; self.m()];
                ybar[o] = Some(e.view());
                rows.push(((o, (ko, lo)), self.p.backward(self.x, &y, &ybar)?));
            }
        }
        let analytic = |i: usize, g: &[Array2<T>], (r, c): (usize, usize)| {
            if self.p.structure(i) == Structure::Symmetric && r != c {
                g[i][(r, c)].to64() + g[i][(c, r)].to64()
            } else {
                g[i][(r, c)].to64()
            }
        };
        let tol = self.tol.fd;
        for (i, column) in columns.iter().enumerate() {
            let mut scale = 0.0f64;
            for ((o, at), g) in &rows {
                for (rc, col) in column {
                    let a = analytic(i, g, *rc);
                    scale = scale.max(a.abs()).max(col.d[*o][*at].abs());
                }
            }
            let mut worst: Option<Worst> = None;
            for ((o, at), g) in &rows {
                for (rc, col) in column {
                    let (a, num) = (analytic(i, g, *rc), col.d[*o][*at]);
                    let err = (a - num).abs();
                    let rel = if scale > 0.0 { err / scale } else { err };
                    // The floor is this element's own rounding noise.
                    let e = floored(rel, err, col.noise[*o][*at], tol);
                    let replace =
                        worst.map_or(true, |w| (e.is_nan() && !w.error.is_nan()) || e > w.error);
                    if replace {
                        worst = Some(Worst {
                            input_index: *rc,
                            output: *o,
                            output_index: *at,
                            analytic: a,
                            numeric: num,
                            abs_error: err,
                            error: e,
                        });
                    }
                }
            }
            report.inputs[i].jacobian = Some(worst.unwrap_or_default());
        }
        Ok(())
    }
}

/// Bound on the rounding error of a forward evaluation, in units of `ε·max|Y|`: the
/// finite differences cannot resolve less than about `3ε·max|Y|/h` after Richardson
/// extrapolation, and a primitive's own rounding adds a modest factor to that.
const NOISE: f64 = 64.0;

/// Finite differences of every differentiable output, and the rounding noise each
/// entry can carry.
struct Diff {
    d: Vec<Array2<f64>>,
    noise: Vec<Array2<f64>>,
}

/// The relative error `rel = |diff|/scale` of a comparison with an absolute floor:
/// `|diff|/max(scale, noise/tol)`, within `tol` exactly when `|diff|` is within
/// `tol·scale` or within the finite differences' rounding `noise`. A relative error
/// cannot judge what the differences cannot resolve (a derivative near zero, where
/// `scale` is itself rounding). NaN stays NaN.
fn floored(rel: f64, diff: f64, noise: f64, tol: f64) -> f64 {
    if diff.is_nan() || rel.is_nan() || !noise.is_finite() {
        f64::NAN
    } else if noise > 0.0 {
        rel.min(diff.abs() * tol / noise)
    } else {
        rel
    }
}

/// [`matrix_rel`] of a tangent `A` against finite differences `B` with an absolute
/// floor per entry: each entry's difference counts only beyond that entry's rounding
/// `noise`, so one noisy entry (a large output) hides nothing in the others.
fn matrix_rel_floored<T: Real>(
    a: ArrayView2<'_, T>,
    b: ArrayView2<'_, f64>,
    noise: ArrayView2<'_, f64>,
) -> f64 {
    if a.dim() != b.dim() || b.dim() != noise.dim() {
        return f64::INFINITY;
    }
    let (mut d, mut na, mut nb) = (0.0, 0.0, 0.0);
    let mut bad = false;
    Zip::from(a).and(b).and(noise).for_each(|x, &y, &f| {
        let x = x.to64();
        let excess = ((x - y).abs() - f).max(0.0);
        bad |= !f.is_finite() || (x - y).is_nan();
        d += excess * excess;
        na += x * x;
        nb += y * y;
    });
    let s = f64::max(na, nb).sqrt();
    if bad || d.is_nan() {
        f64::NAN
    } else if s > 0.0 {
        d.sqrt() / s
    } else {
        d.sqrt()
    }
}

/// The adjoint `τ*` of a hypothesised mistake `X̄ = τ(G)`, applied to a direction.
type AdjointMap<T> = fn(Array2<T>) -> Array2<T>;

/// How far a gradient is from its declared structure, relative to its largest entry.
fn structure_error<T: Real>(g: ArrayView2<'_, T>, s: Structure) -> f64 {
    let scale = g.iter().fold(0.0f64, |m, x| worse(m, x.to64().abs()));
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
                worst = worse(worst, (x.to64() - g[(k, r)].to64()).abs());
            }
        }
        Structure::LowerTriangular => {
            for ((r, k), x) in g.indexed_iter() {
                if k > r {
                    worst = worse(worst, x.to64().abs());
                }
            }
        }
    }
    worst / scale
}

/// `max|A + B − S|` relative to the largest entry of the three (the parts of a sum may
/// be larger than the sum); NaN anywhere gives NaN.
fn sum_error<T: Real>(a: ArrayView2<'_, T>, b: ArrayView2<'_, T>, sum: ArrayView2<'_, T>) -> f64 {
    if a.dim() != sum.dim() || b.dim() != sum.dim() {
        return f64::INFINITY;
    }
    let (mut diff, mut scale) = (0.0f64, 0.0f64);
    Zip::from(a).and(b).and(sum).for_each(|a, b, s| {
        let (a, b, s) = (a.to64(), b.to64(), s.to64());
        diff = worse(diff, (a + b - s).abs());
        scale = worse(worse(worse(scale, a.abs()), b.abs()), s.abs());
    });
    if scale > 0.0 {
        diff / scale
    } else {
        diff
    }
}

/// Largest entrywise difference relative to the largest entry of `expected`; NaN
/// anywhere gives NaN.
fn buffer_error<T: Real>(got: ArrayView2<'_, T>, expected: ArrayView2<'_, T>) -> f64 {
    if got.dim() != expected.dim() {
        return f64::INFINITY;
    }
    let mut diff = 0.0f64;
    Zip::from(got)
        .and(expected)
        .for_each(|a, b| diff = worse(diff, (a.to64() - b.to64()).abs()));
    let scale = expected
        .iter()
        .fold(0.0f64, |m, x| worse(m, x.to64().abs()));
    if scale > 0.0 {
        diff / scale
    } else {
        diff
    }
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

/// `‖A − B‖_F / max(‖A‖_F, ‖B‖_F)` with `A` in any precision and `B` in f64; different
/// shapes are infinitely far apart.
pub(super) fn matrix_rel<T: Real>(a: ArrayView2<'_, T>, b: ArrayView2<'_, f64>) -> f64 {
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
    let s = f64::max(na, nb).sqrt();
    if d.is_nan() {
        f64::NAN
    } else if s > 0.0 {
        d.sqrt() / s
    } else {
        d.sqrt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn a_tangent_entry_counts_only_beyond_its_own_rounding_noise() {
        let a = array![[1.0, 2.0], [0.0, 4.0]];
        // Entry (0, 0) is off by 1e-3 within its noise 2e-3; the others are exact.
        let b = array![[1.0 + 1e-3, 2.0], [0.0, 4.0]];
        let noise = array![[2e-3, 0.0], [0.0, 0.0]];
        assert_eq!(matrix_rel_floored(a.view(), b.view(), noise.view()), 0.0);
        // Beyond it by 1e-3, relative to the larger Frobenius norm (|b| here).
        let b = array![[1.0 + 3e-3, 2.0], [0.0, 4.0]];
        let want = 1e-3 / (b.iter().map(|v| v * v).sum::<f64>()).sqrt();
        let got = matrix_rel_floored(a.view(), b.view(), noise.view());
        assert!((got - want).abs() <= 1e-12 * want, "{got} vs {want}");
        // Another entry's noise hides nothing here.
        let noise = array![[0.0, 1.0], [1.0, 1.0]];
        let got = matrix_rel_floored(a.view(), b.view(), noise.view());
        let want = 3e-3 / (b.iter().map(|v| v * v).sum::<f64>()).sqrt();
        assert!((got - want).abs() <= 1e-12 * want, "{got} vs {want}");
    }

    #[test]
    fn infinities_in_a_tangent_and_its_differences_are_no_agreement() {
        // ∞ − ∞ is NaN, and NaN.max(0) would be 0: the comparison must see the NaN.
        let inf = array![[f64::INFINITY, 1.0]];
        let zero = Array2::<f64>::zeros((1, 2));
        assert!(matrix_rel_floored(inf.view(), inf.view(), zero.view()).is_nan());
        let ninf = array![[f64::NEG_INFINITY, 1.0]];
        assert!(matrix_rel_floored(ninf.view(), ninf.view(), zero.view()).is_nan());
    }

    #[test]
    fn a_tangent_of_another_shape_is_infinitely_wrong() {
        let a = Array2::<f64>::ones((2, 3));
        let b = Array2::<f64>::ones((3, 2));
        assert_eq!(
            matrix_rel_floored(a.view(), b.view(), Array2::zeros((3, 2)).view()),
            f64::INFINITY
        );
        assert_eq!(
            matrix_rel_floored(a.view(), a.view(), Array2::zeros((3, 2)).view()),
            f64::INFINITY
        );
    }

    #[test]
    fn the_structure_error_is_relative_to_the_largest_entry() {
        // Not symmetric by |1 − 3| = 2, largest entry 100.
        let g = array![[0.0, 1.0], [3.0, 100.0]];
        assert_eq!(structure_error(g.view(), Structure::Symmetric), 0.02);
        assert_eq!(structure_error(g.view(), Structure::LowerTriangular), 0.01);
        assert_eq!(structure_error(g.view(), Structure::General), 0.0);
        assert_eq!(
            structure_error(Array2::<f64>::zeros((2, 2)).view(), Structure::Symmetric),
            0.0
        );
    }

    #[test]
    fn the_accumulation_error_is_relative_to_the_largest_part() {
        // |A + B − S| = 1 against parts of 10⁸: relative error 10⁻⁸, whatever the sum.
        let a = array![[1e8, -2.0], [3.0, 5e7]];
        let b = array![[-1e8, 1.0], [1.0, 5e7]];
        let s = array![[1.0, -1.0], [4.0, 1e8]];
        assert_eq!(sum_error(a.view(), b.view(), s.view()), 1e-8);
        // All zero: nothing to be relative to, and no error.
        let z = Array2::<f64>::zeros((2, 2));
        assert_eq!(sum_error(z.view(), z.view(), z.view()), 0.0);
        // Not a sum of these shapes at all, whichever part is of another shape.
        assert_eq!(
            sum_error(a.view(), b.view(), Array2::zeros((2, 1)).view()),
            f64::INFINITY
        );
        let narrow = Array2::<f64>::zeros((2, 1));
        assert_eq!(sum_error(a.view(), narrow.view(), s.view()), f64::INFINITY);
        assert_eq!(sum_error(narrow.view(), b.view(), s.view()), f64::INFINITY);
    }

    #[test]
    fn a_buffer_error_is_relative_to_the_largest_expected_entry() {
        // Off by 1 where the expected entries reach 10⁸: 10⁻⁸.
        let expected = array![[1e8, -2.0], [3.0, 5e7]];
        let got = array![[1e8 + 1.0, -2.0], [3.0, 5e7]];
        assert_eq!(buffer_error(got.view(), expected.view()), 1e-8);
        // Nothing to be relative to: the difference itself.
        let z = Array2::<f64>::zeros((2, 2));
        assert_eq!(buffer_error(z.view(), z.view()), 0.0);
        assert_eq!(
            buffer_error(array![[0.5, 0.0]].view(), array![[0.0, 0.0]].view()),
            0.5
        );
        assert_eq!(
            buffer_error(got.view(), Array2::zeros((1, 2)).view()),
            f64::INFINITY
        );
    }

    #[test]
    fn two_zero_matrices_are_no_distance_apart() {
        let z = Array2::<f64>::zeros((2, 3));
        assert_eq!(matrix_rel(z.view(), z.view()), 0.0);
        // Otherwise the Frobenius distance over the larger norm: 5 over 5 here.
        let a = array![[3.0, 0.0], [0.0, 4.0]];
        assert_eq!(matrix_rel(a.view(), Array2::zeros((2, 2)).view()), 1.0);
        assert_eq!(
            matrix_rel(z.view(), Array2::zeros((3, 2)).view()),
            f64::INFINITY
        );
    }
}
