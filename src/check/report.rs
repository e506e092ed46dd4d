//! What the checker found, readable by a person and by a test.

use crate::error::Shape;
use crate::primitive::Structure;
use std::fmt;

/// The common mistake a wrong gradient matches, tested against finite differences.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum Mistake {
    /// The gradient has the input's shape transposed.
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
            Mistake::Unrecognised => "is wrong, and matches none of the common mistakes (transpose, sign, factor 2 or ½, symmetric part, lower triangle, zero)",
        })
    }
}

/// The worst element of the full-Jacobian comparison for one input.
#[derive(Clone, Copy, PartialEq, Debug, Default)]
pub struct Worst {
    /// Element `(i, j)` of the input.
    pub input_index: (usize, usize),
    /// Element `(k, l)` of the output.
    pub output_index: (usize, usize),
    /// `∂C_kl/∂X_ij` from the backward rule.
    pub analytic: f64,
    /// The same by finite differences.
    pub numeric: f64,
    /// `|analytic − numeric|`.
    pub abs_error: f64,
    /// The absolute error relative to the largest Jacobian entry.
    pub error: f64,
}

/// Per-input results. Errors are relative; NaN means the comparison produced NaN, a failure.
#[derive(Clone, Debug)]
pub struct InputReport {
    /// `A`, `B`, ….
    pub name: String,
    /// The input's shape.
    pub shape: Shape,
    /// Its declared structure.
    pub structure: Structure,
    /// The gradient's shape, when it is not the input's.
    pub gradient_shape: Option<Shape>,
    /// VJP against finite differences, worst over the directions.
    pub vjp_error: f64,
    /// JVP against finite differences, worst over the directions.
    pub jvp_error: f64,
    /// `backward_into` against `backward` added to the buffer's contents.
    pub accumulate_error: f64,
    /// How far the gradient is from the declared structure.
    pub structure_error: f64,
    /// The full-Jacobian comparison, when it ran.
    pub jacobian: Option<Worst>,
    /// What the gradient looks like, when it is wrong.
    pub mistake: Option<Mistake>,
}

impl InputReport {
    pub(crate) fn new(name: String, shape: Shape, structure: Structure) -> Self {
        InputReport {
            name,
            shape,
            structure,
            gradient_shape: None,
            vjp_error: f64::NAN,
            jvp_error: f64::NAN,
            accumulate_error: 0.0,
            structure_error: f64::NAN,
            jacobian: None,
            mistake: None,
        }
    }
}

/// The checker's findings for one primitive at one point.
#[derive(Clone, Debug)]
pub struct Report {
    /// The primitive's name.
    pub name: String,
    /// `f32` or `f64`.
    pub precision: &'static str,
    /// Shape of the output.
    pub output_shape: Shape,
    /// One entry per input.
    pub inputs: Vec<InputReport>,
    /// `⟨C̄, Ċ⟩` against `Σ⟨X̄ᵢ, Ẋᵢ⟩`.
    pub adjoint_error: f64,
    /// Tolerance of the finite-difference comparisons.
    pub tol: f64,
    /// Tolerance of the exact identities.
    pub exact_tol: f64,
    /// Whether the forward output was free of NaN and infinity.
    pub output_finite: bool,
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

    /// One line per failed check.
    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.output_finite {
            out.push("the forward output contains NaN or infinity".to_string());
        }
        for r in &self.inputs {
            if let Some(g) = r.gradient_shape {
                out.push(format!(
                    "gradient of {} is {g}, the input is {}",
                    r.name, r.shape
                ));
                continue;
            }
            let checks = [
                ("VJP vs finite differences", r.vjp_error, self.tol),
                ("JVP vs finite differences", r.jvp_error, self.tol),
                ("accumulating backward", r.accumulate_error, self.exact_tol),
                ("gradient structure", r.structure_error, self.exact_tol),
            ];
            for (what, err, tol) in checks {
                if !ok(err, tol) {
                    out.push(format!("{}: {what} error {err:.2e} > {tol:.1e}", r.name));
                }
            }
            if let Some(w) = &r.jacobian {
                if !ok(w.error, self.tol) {
                    out.push(format!(
                        "{}: full Jacobian error {:.2e} at input ({}, {}), output ({}, {})",
                        r.name,
                        w.error,
                        w.input_index.0,
                        w.input_index.1,
                        w.output_index.0,
                        w.output_index.1
                    ));
                }
            }
        }
        if self.inputs.iter().all(|r| r.gradient_shape.is_none())
            && !ok(self.adjoint_error, self.exact_tol)
        {
            out.push(format!(
                "adjoint identity error {:.2e} > {:.1e}",
                self.adjoint_error, self.exact_tol
            ));
        }
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

fn cell(err: f64, tol: f64) -> String {
    let mark = if ok(err, tol) { " " } else { "✗" };
    format!("{err:>9.2e}{mark}")
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shapes: Vec<String> = self.inputs.iter().map(|r| r.shape.to_string()).collect();
        writeln!(
            f,
            "{} [{}]  ({}) → {}   {}",
            self.name,
            self.precision,
            shapes.join(", "),
            self.output_shape,
            if self.passed() { "PASSED" } else { "FAILED" }
        )?;
        writeln!(
            f,
            "  input  shape      structure   vjp-vs-fd   jvp-vs-fd  accumulate   structure   jacobian"
        )?;
        for r in &self.inputs {
            if let Some(g) = r.gradient_shape {
                writeln!(
                    f,
                    "  {:<5}  {:<9}  gradient has shape {g}",
                    r.name,
                    r.shape.to_string()
                )?;
                continue;
            }
            let jac = r
                .jacobian
                .map_or("        -".to_string(), |w| cell(w.error, self.tol));
            writeln!(
                f,
                "  {:<5}  {:<9}  {:<9} {} {} {} {} {}",
                r.name,
                r.shape.to_string(),
                structure_name(r.structure),
                cell(r.vjp_error, self.tol),
                cell(r.jvp_error, self.tol),
                cell(r.accumulate_error, self.exact_tol),
                cell(r.structure_error, self.exact_tol),
                jac
            )?;
        }
        writeln!(
            f,
            "  adjoint identity ⟨C̄,Ċ⟩ = Σ⟨X̄ᵢ,Ẋᵢ⟩: {}   (tolerances: finite differences {:.0e}, exact {:.0e})",
            cell(self.adjoint_error, self.exact_tol).trim(),
            self.tol,
            self.exact_tol
        )?;
        for r in &self.inputs {
            if let Some(m) = r.mistake {
                writeln!(f, "  diagnosis: the gradient of {} {m}", r.name)?;
            }
            if let Some(w) = r.jacobian.filter(|w| !ok(w.error, self.tol)) {
                writeln!(
                    f,
                    "  worst Jacobian element of {}: ∂C[{},{}]/∂{}[{},{}] = {:.6e} by the rule, {:.6e} by finite differences",
                    r.name, w.output_index.0, w.output_index.1, r.name, w.input_index.0, w.input_index.1, w.analytic, w.numeric
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
    pub name: String,
    /// Relative difference of the outputs.
    pub forward_error: f64,
    /// Relative difference of each input's gradient.
    pub backward_errors: Vec<f64>,
    /// Relative difference of the tangents.
    pub jvp_error: f64,
    /// Accepted relative difference.
    pub tol: f64,
}

impl PrecisionReport {
    /// Whether all differences are within the tolerance.
    pub fn passed(&self) -> bool {
        ok(self.forward_error, self.tol)
            && ok(self.jvp_error, self.tol)
            && self.backward_errors.iter().all(|&e| ok(e, self.tol))
    }
    /// Panics with the report unless it passed.
    #[track_caller]
    pub fn assert_passed(&self) {
        if !self.passed() {
            panic!("f32 against f64 check failed\n{self}");
        }
    }
}

impl fmt::Display for PrecisionReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b: Vec<String> = self
            .backward_errors
            .iter()
            .map(|e| format!("{e:.2e}"))
            .collect();
        writeln!(
            f,
            "{} f32 vs f64: forward {:.2e}, backward [{}], jvp {:.2e} (tol {:.0e}) {}",
            self.name,
            self.forward_error,
            b.join(", "),
            self.jvp_error,
            self.tol,
            if self.passed() { "PASSED" } else { "FAILED" }
        )
    }
}
