//! What the checker found, readable by a person and by a test.

use super::Tolerances;
use crate::error::{Error, Shape};
use crate::primitive::Structure;
use std::fmt;

/// The common mistake a wrong gradient matches, tested against finite differences.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum Mistake {
    /// The reverse rule computed a result of the gradient buffer's shape transposed (it
    /// failed with a shape error whose two shapes are transposes of each other).
    TransposedShape,
    /// The gradient is the transpose of the right answer.
    Transposed,
    /// The gradient is the right answer with its sign flipped.
    SignFlipped,
    /// The gradient is twice the right answer.
    Doubled,
    /// The gradient is half the right answer.
    Halved,
    /// The gradient is only the symmetric part `(G + Gᵀ)/2` of the right answer.
    SymmetricPartOnly,
    /// The gradient is only the lower triangle of the right answer.
    LowerTriangleOnly,
    /// The gradient is zero and the function is not flat.
    Zero,
    /// Close to the finite differences (within 10⁻³) but not within the tolerance:
    /// rounding, an ill-conditioned point or too large a step rather than a wrong rule.
    Inaccurate,
    /// Wrong, and none of the above.
    Unrecognised,
}

impl fmt::Display for Mistake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mistake::TransposedShape => "has the transposed shape: a transpose is missing or extra in the rule",
            Mistake::Transposed => "is the transpose of the right answer",
            Mistake::SignFlipped => "has the wrong sign",
            Mistake::Doubled => "is twice the right answer",
            Mistake::Halved => "is half the right answer",
            Mistake::SymmetricPartOnly => "is only the symmetric part (G + Gᵀ)/2 of the right answer",
            Mistake::LowerTriangleOnly => "is only the lower triangle of the right answer",
            Mistake::Zero => "is zero, but the function is not flat in that input",
            Mistake::Inaccurate => "agrees with finite differences to 1e-3 but not to the tolerance: rounding or an ill-conditioned point rather than a wrong rule (try another step or tolerance)",
            Mistake::Unrecognised => "is wrong, and matches none of the common mistakes (transpose, sign, factor 2 or ½, symmetric part, lower triangle, zero)",
        })
    }
}

/// The worst element of the full-Jacobian comparison for one input.
#[derive(Clone, Copy, PartialEq, Debug, Default)]
pub struct Worst {
    /// Element `(i, j)` of the input.
    pub input_index: (usize, usize),
    /// Which output.
    pub output: usize,
    /// Element `(k, l)` of that output.
    pub output_index: (usize, usize),
    /// `∂Y_kl/∂X_ij` from the reverse rule.
    pub analytic: f64,
    /// The same by finite differences.
    pub numeric: f64,
    /// `|analytic − numeric|`.
    pub abs_error: f64,
    /// The absolute error relative to the largest Jacobian entry, floored by the
    /// element's finite-difference rounding (`docs/math.md`, "Checking a rule"): the
    /// element with the largest such error is the one named, and among equal errors
    /// the first, by output element and then input element in row-major order.
    pub error: f64,
}

/// An input or an output of a primitive.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum Value {
    /// Input `i`.
    Input(usize),
    /// Output `k`.
    Output(usize),
}

/// A value the reverse rule reads although [`crate::Rule::saves`] does not declare it:
/// replacing it by a NaN placeholder changed the gradients (or made the rule fail).
#[derive(Clone, Debug, PartialEq)]
pub struct UndeclaredRead {
    /// Which gradients were asked for (one flag per input).
    pub wanted: Vec<bool>,
    /// The value read, or `None` when only replacing all undeclared values together
    /// changed the gradients.
    pub value: Option<Value>,
    /// Its name (`""` when `value` is `None`).
    pub name: &'static str,
    /// The error the rule returned on the placeholder, when it returned one.
    pub error: Option<Error>,
}

/// Per-output results, for a differentiable output or a residual.
#[derive(Clone, Debug)]
pub struct OutputReport {
    /// `C`, or the primitive's own name for the output.
    pub name: &'static str,
    /// The output's shape.
    pub shape: Shape,
    /// Whether the forward output was free of NaN and infinity.
    pub finite: bool,
    /// `forward_into` and `jvp_into` into NaN-filled buffers against `forward` and `jvp`:
    /// not zero when the forward or forward-mode rule reads its output buffer (for a
    /// residual, `forward_into` only: also not zero when it leaves the buffer unwritten).
    pub first_write_error: f64,
    /// Gradients with this output's cotangent missing (`None`) against a zero one;
    /// `None` when the primitive has one differentiable output (a missing sole
    /// cotangent never reaches the rule), and for a residual.
    pub missing_cotangent_error: Option<f64>,
}

impl OutputReport {
    pub(crate) fn new(name: &'static str, shape: Shape, finite: bool) -> Self {
        OutputReport {
            name,
            shape,
            finite,
            first_write_error: 0.0,
            missing_cotangent_error: None,
        }
    }
}

/// Per-input results. Errors are relative; NaN means the comparison produced NaN, a failure.
#[derive(Clone, Debug)]
pub struct InputReport {
    /// `A`, `B`, … or the primitive's own name for the input.
    pub name: &'static str,
    /// The input's shape.
    pub shape: Shape,
    /// Its declared structure.
    pub structure: Structure,
    /// The shape error the reverse rule returned for this input, on shapes its shape
    /// rule accepts (a bug in the rule: the other checks did not run).
    pub pullback_error: Option<Error>,
    /// The same for the forward-mode rule with only this input's tangent.
    pub pushforward_error: Option<Error>,
    /// VJP against finite differences, worst over the directions.
    pub vjp_error: f64,
    /// JVP against finite differences, worst over the directions and outputs.
    pub jvp_error: f64,
    /// JVP against finite differences, worst over the directions, per output.
    pub jvp_errors: Vec<f64>,
    /// `Grad::Add` against `backward` added to the buffer's contents.
    pub accumulate_error: f64,
    /// `Grad::Write` into a NaN-filled buffer against `backward`.
    pub first_write_error: f64,
    /// The gradient with every value not declared in `saves` replaced by NaN, against
    /// `backward`.
    pub saves_error: f64,
    /// How far the gradient is from the declared structure.
    pub structure_error: f64,
    /// The full-Jacobian comparison, when it ran.
    pub jacobian: Option<Worst>,
    /// What the gradient looks like, when it is wrong.
    pub mistake: Option<Mistake>,
}

impl InputReport {
    pub(crate) fn new(
        name: &'static str,
        shape: Shape,
        structure: Structure,
        outputs: usize,
    ) -> Self {
        InputReport {
            name,
            shape,
            structure,
            pullback_error: None,
            pushforward_error: None,
            vjp_error: f64::NAN,
            jvp_error: f64::NAN,
            jvp_errors: vec![f64::NAN; outputs],
            accumulate_error: 0.0,
            first_write_error: 0.0,
            saves_error: 0.0,
            structure_error: f64::NAN,
            jacobian: None,
            mistake: None,
        }
    }
    /// Whether a rule failed on this input with a shape error (then nothing else ran).
    pub fn rule_failed(&self) -> bool {
        self.pullback_error.is_some() || self.pushforward_error.is_some()
    }
}

/// The checker's findings for one primitive at one point.
#[derive(Clone, Debug)]
pub struct Report {
    /// The primitive's name.
    pub name: &'static str,
    /// `f32` or `f64`.
    pub precision: &'static str,
    /// One entry per input.
    pub inputs: Vec<InputReport>,
    /// One entry per differentiable output.
    pub outputs: Vec<OutputReport>,
    /// One entry per residual output ([`crate::Rule::residuals`]): its finiteness and
    /// the `forward_into` first write.
    pub residuals: Vec<OutputReport>,
    /// `Σₖ⟨Ȳₖ, Ẏₖ⟩` against `Σᵢ⟨X̄ᵢ, Ẋᵢ⟩`.
    pub adjoint_error: f64,
    /// Elements of scratch space the rule declares ([`crate::Rule::workspace`]).
    pub workspace: usize,
    /// The three passes with a NaN-filled workspace of exactly that length, against
    /// the same passes with a fresh one (0 when no workspace is declared).
    pub workspace_error: f64,
    /// Values the reverse rule reads without declaring them in `saves`.
    pub undeclared_reads: Vec<UndeclaredRead>,
    /// Errors a rule returned in one buffer mode only (say, while accumulating), which
    /// the same rule did not return otherwise.
    pub rule_errors: Vec<String>,
    /// The tolerances used.
    pub tolerances: Tolerances,
}

fn ok(err: f64, tol: f64) -> bool {
    err <= tol
}

impl Report {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.failures().is_empty()
    }

    /// The diagnosis for input `i`, when its gradient is wrong.
    pub fn mistake(&self, i: usize) -> Option<Mistake> {
        self.inputs.get(i).and_then(|r| r.mistake)
    }

    /// Whether the passes after the shapes pass ran: no rule failed with a shape error
    /// on shapes its shape rule accepts.
    pub fn checked(&self) -> bool {
        self.inputs.iter().all(|r| !r.rule_failed())
    }

    /// Shape of output `k` (0 for a primitive with one output).
    pub fn output_shape(&self, k: usize) -> Option<Shape> {
        self.outputs.get(k).map(|o| o.shape)
    }

    fn output_name(&self, k: usize) -> &'static str {
        self.outputs.get(k).map_or("?", |o| o.name)
    }

    /// "when only the gradient of A is wanted", for a failure line.
    pub(crate) fn wanted_text(&self, wanted: &[bool]) -> String {
        let names: Vec<&str> = self
            .inputs
            .iter()
            .zip(wanted)
            .filter(|(_, &w)| w)
            .map(|(r, _)| r.name)
            .collect();
        if names.len() == self.inputs.len() {
            "when every gradient is wanted".to_string()
        } else if names.len() == 1 {
            format!("when only the gradient of {} is wanted", names[0])
        } else {
            format!("when the gradients of {} are wanted", names.join(", "))
        }
    }

    fn undeclared_text(&self, u: &UndeclaredRead) -> String {
        let when = self.wanted_text(&u.wanted);
        let what = match u.value {
            Some(Value::Input(_)) => format!("input {}", u.name),
            Some(Value::Output(k)) if k >= self.outputs.len() => format!("residual {}", u.name),
            Some(Value::Output(_)) => format!("output {}", u.name),
            None => {
                return format!(
                    "reads a value it does not declare in saves: replacing all undeclared values by NaN together changes the gradients ({when}){}",
                    u.error.as_ref().map_or(String::new(), |e| format!(": {e}"))
                )
            }
        };
        match &u.error {
            Some(e) => format!(
                "returns an error when {what}, which it does not declare in saves, is a NaN placeholder ({when}): {e}"
            ),
            None => format!("reads {what} which it does not declare in saves ({when})"),
        }
    }

    /// One line per failed check.
    pub fn failures(&self) -> Vec<String> {
        let t = &self.tolerances;
        let several = self.outputs.len() > 1;
        let mut out = Vec::new();
        for o in &self.outputs {
            if !o.finite {
                out.push(if several {
                    format!("the forward output {} contains NaN or infinity", o.name)
                } else {
                    "the forward output contains NaN or infinity".to_string()
                });
            }
        }
        for o in self.residuals.iter().filter(|o| !o.finite) {
            out.push(format!("the residual {} contains NaN or infinity", o.name));
        }
        for r in &self.inputs {
            if let Some(e) = &r.pullback_error {
                out.push(format!(
                    "{}: the reverse rule fails on shapes its shape rule accepts: {e}",
                    r.name
                ));
            }
            if let Some(e) = &r.pushforward_error {
                out.push(format!(
                    "{}: the forward-mode rule fails on shapes its shape rule accepts: {e}",
                    r.name
                ));
            }
            if !self.checked() {
                continue;
            }
            if !ok(r.vjp_error, t.fd) {
                out.push(format!(
                    "{}: VJP vs finite differences error {:.2e} > {:.1e}",
                    r.name, r.vjp_error, t.fd
                ));
            }
            for (k, &e) in r.jvp_errors.iter().enumerate() {
                if !ok(e, t.fd) {
                    let of = if several {
                        format!(" of {}", self.output_name(k))
                    } else {
                        String::new()
                    };
                    out.push(format!(
                        "{}: JVP{of} vs finite differences error {e:.2e} > {:.1e}",
                        r.name, t.fd
                    ));
                }
            }
            let checks = [
                ("accumulating backward (Grad::Add)", r.accumulate_error),
                (
                    "first-writing backward (Grad::Write into NaN)",
                    r.first_write_error,
                ),
                ("gradient structure", r.structure_error),
            ];
            for (what, err) in checks {
                if !ok(err, t.exact) {
                    out.push(format!(
                        "{}: {what} error {err:.2e} > {:.1e}",
                        r.name, t.exact
                    ));
                }
            }
            if let Some(w) = &r.jacobian {
                if !ok(w.error, t.fd) {
                    out.push(format!(
                        "{}: full Jacobian error {:.2e} at input ({}, {}), output {}({}, {})",
                        r.name,
                        w.error,
                        w.input_index.0,
                        w.input_index.1,
                        if several {
                            self.output_name(w.output)
                        } else {
                            ""
                        },
                        w.output_index.0,
                        w.output_index.1
                    ));
                }
            }
        }
        let rules_ran = self.checked();
        if rules_ran {
            for o in &self.outputs {
                if !ok(o.first_write_error, t.exact) {
                    out.push(format!(
                        "output {}: forward or forward-mode rule reads its output buffer (NaN-filled buffer error {:.2e} > {:.1e})",
                        o.name, o.first_write_error, t.exact
                    ));
                }
                if let Some(e) = o.missing_cotangent_error.filter(|&e| !ok(e, t.exact)) {
                    out.push(format!(
                        "a missing cotangent of {} is not treated as zero: the gradients differ by {e:.2e} > {:.1e}",
                        o.name, t.exact
                    ));
                }
            }
            for o in self
                .residuals
                .iter()
                .filter(|o| !ok(o.first_write_error, t.exact))
            {
                out.push(format!(
                    "residual {}: the forward rule leaves its buffer unwritten or reads it (NaN-filled buffer error {:.2e} > {:.1e})",
                    o.name, o.first_write_error, t.exact
                ));
            }
            if !ok(self.adjoint_error, t.exact) {
                out.push(format!(
                    "adjoint identity error {:.2e} > {:.1e}",
                    self.adjoint_error, t.exact
                ));
            }
            if !ok(self.workspace_error, t.exact) {
                out.push(format!(
                    "the rule reads its workspace before writing it (declared {} elements, filled with NaN: error {:.2e} > {:.1e})",
                    self.workspace, self.workspace_error, t.exact
                ));
            }
        }
        for u in &self.undeclared_reads {
            out.push(self.undeclared_text(u));
        }
        if rules_ran && self.undeclared_reads.is_empty() {
            // Reached only if a saves error was not attributed (it always is).
            for r in self.inputs.iter().filter(|r| !ok(r.saves_error, t.exact)) {
                out.push(format!(
                    "{}: gradient with undeclared values replaced by NaN, error {:.2e} > {:.1e}",
                    r.name, r.saves_error, t.exact
                ));
            }
        }
        out.extend(self.rule_errors.iter().cloned());
        out
    }

    /// Panics with the whole report unless every check passed.
    #[track_caller]
    pub fn assert_passed(&self) {
        if !self.passed() {
            panic!("gradient check failed\n{self}");
        }
    }
}

fn structure_name(s: Structure) -> &'static str {
    match s {
        Structure::General => "general",
        Structure::Symmetric => "symmetric",
        Structure::LowerTriangular => "lower",
    }
}

/// A right-aligned error in 11 columns, with a mark when it fails.
fn cell(err: f64, tol: f64) -> String {
    let mark = if ok(err, tol) { " " } else { "✗" };
    format!("{err:>10.2e}{mark}")
}

const DASH: &str = "         - ";

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = &self.tolerances;
        let several = self.outputs.len() > 1;
        let shapes: Vec<String> = self.inputs.iter().map(|r| r.shape.to_string()).collect();
        let outs = if several {
            let o: Vec<String> = self
                .outputs
                .iter()
                .map(|o| format!("{}: {}", o.name, o.shape))
                .collect();
            format!("({})", o.join(", "))
        } else {
            self.outputs
                .first()
                .map_or_else(String::new, |o| o.shape.to_string())
        };
        writeln!(
            f,
            "{} [{}]  ({}) → {}   {}",
            self.name,
            self.precision,
            shapes.join(", "),
            outs,
            if self.passed() { "PASSED" } else { "FAILED" }
        )?;
        writeln!(
            f,
            "  {:<6} {:<9}  {:<9} {:>11}{:>11}{:>11}{:>11}{:>11}{:>11}{:>11}",
            "input",
            "shape",
            "structure",
            "vjp-vs-fd ",
            "jvp-vs-fd ",
            "accumulate ",
            "first-write ",
            "saves ",
            "structure ",
            "jacobian "
        )?;
        let checked = self.checked();
        for r in &self.inputs {
            if !checked {
                let what = if r.rule_failed() {
                    "a rule fails on these shapes (see below)"
                } else {
                    "not checked"
                };
                writeln!(f, "  {:<6} {:<9}  {what}", r.name, r.shape.to_string())?;
                continue;
            }
            let jac = r.jacobian.map_or(DASH.to_string(), |w| cell(w.error, t.fd));
            writeln!(
                f,
                "  {:<6} {:<9}  {:<9} {}{}{}{}{}{}{}",
                r.name,
                r.shape.to_string(),
                structure_name(r.structure),
                cell(r.vjp_error, t.fd),
                cell(r.jvp_error, t.fd),
                cell(r.accumulate_error, t.exact),
                cell(r.first_write_error, t.exact),
                cell(r.saves_error, t.exact),
                cell(r.structure_error, t.exact),
                jac
            )?;
        }
        writeln!(
            f,
            "  {:<6} {:<9}  {:>11}{:>11}",
            "output", "shape", "first-write ", "None = 0 "
        )?;
        for o in &self.outputs {
            if !checked {
                writeln!(f, "  {:<6} {:<9}  not checked", o.name, o.shape.to_string())?;
                continue;
            }
            let missing = o
                .missing_cotangent_error
                .map_or(DASH.to_string(), |e| cell(e, t.exact));
            writeln!(
                f,
                "  {:<6} {:<9}  {}{}{}",
                o.name,
                o.shape.to_string(),
                cell(o.first_write_error, t.exact),
                missing,
                if o.finite { "" } else { "  (not finite)" }
            )?;
        }
        if !self.residuals.is_empty() {
            writeln!(
                f,
                "  {:<6} {:<9}  {:>11}   (not differentiated)",
                "resid.", "shape", "first-write "
            )?;
        }
        for o in &self.residuals {
            let first_write = if checked {
                cell(o.first_write_error, t.exact)
            } else {
                DASH.to_string()
            };
            writeln!(
                f,
                "  {:<6} {:<9}  {}{}",
                o.name,
                o.shape.to_string(),
                first_write,
                if o.finite { "" } else { "  (not finite)" }
            )?;
        }
        let identity = if several {
            "Σₖ⟨Ȳₖ,Ẏₖ⟩ = Σᵢ⟨X̄ᵢ,Ẋᵢ⟩"
        } else {
            "⟨C̄,Ċ⟩ = Σ⟨X̄ᵢ,Ẋᵢ⟩"
        };
        if checked {
            writeln!(
                f,
                "  adjoint identity {identity}: {}   (tolerances: finite differences {:.0e}, exact {:.0e}, step {:.0e})",
                cell(self.adjoint_error, t.exact).trim(),
                t.fd,
                t.exact,
                t.step
            )?;
        }
        if checked && self.workspace > 0 {
            writeln!(
                f,
                "  workspace of {} element{}, filled with NaN: {}",
                self.workspace,
                if self.workspace == 1 { "" } else { "s" },
                cell(self.workspace_error, t.exact).trim()
            )?;
        }
        for r in &self.inputs {
            if let Some(m) = r.mistake {
                writeln!(f, "  diagnosis: the gradient of {} {m}", r.name)?;
            }
            if let Some(w) = r.jacobian.filter(|w| !ok(w.error, t.fd)) {
                writeln!(
                    f,
                    "  worst Jacobian element of {}: ∂{}[{},{}]/∂{}[{},{}] = {:.6e} by the rule, {:.6e} by finite differences",
                    r.name,
                    self.output_name(w.output),
                    w.output_index.0,
                    w.output_index.1,
                    r.name,
                    w.input_index.0,
                    w.input_index.1,
                    w.analytic,
                    w.numeric
                )?;
            }
        }
        for line in self.failures() {
            writeln!(f, "  failed: {line}")?;
        }
        Ok(())
    }
}

/// `f32` results against `f64` results of the same primitive at the same point.
#[derive(Clone, Debug)]
pub struct PrecisionReport {
    /// The primitive's name.
    pub name: &'static str,
    /// Relative difference of each output.
    pub forward_errors: Vec<f64>,
    /// Relative difference of each input's gradient.
    pub backward_errors: Vec<f64>,
    /// Relative difference of each output's tangent.
    pub jvp_errors: Vec<f64>,
    /// Accepted relative difference.
    pub tol: f64,
}

impl PrecisionReport {
    /// Whether all differences are within the tolerance.
    pub fn passed(&self) -> bool {
        self.forward_errors
            .iter()
            .chain(&self.backward_errors)
            .chain(&self.jvp_errors)
            .all(|&e| ok(e, self.tol))
    }
    /// Panics with the report unless it passed.
    #[track_caller]
    pub fn assert_passed(&self) {
        if !self.passed() {
            panic!("f32 against f64 check failed\n{self}");
        }
    }
}

fn list(errors: &[f64]) -> String {
    let v: Vec<String> = errors.iter().map(|e| format!("{e:.2e}")).collect();
    format!("[{}]", v.join(", "))
}

impl fmt::Display for PrecisionReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} f32 vs f64: forward {}, backward {}, jvp {} (tol {:.0e}) {}",
            self.name,
            list(&self.forward_errors),
            list(&self.backward_errors),
            list(&self.jvp_errors),
            self.tol,
            if self.passed() { "PASSED" } else { "FAILED" }
        )
    }
}
