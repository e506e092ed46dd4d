//! The one trait every rule implements, so that the checker (and a tape) can drive
//! any primitive, the crate's own and those defined in other crates, of any arity.

use crate::error::{expect_shape, shape_of, Error, Result};
use crate::Real;
use ndarray::{Array2, ArrayView2, ArrayViewMut2, Zip};

/// What perturbations of an input are meaningful, so that the checker respects it.
///
/// A rule whose forward pass reads only part of an input (Cholesky reads the lower
/// triangle) has a gradient defined only on that part: the checker must perturb
/// only there, or a correct rule fails (see MATH.md on the two Cholesky conventions).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, Default)]
pub enum Structure {
    /// Any entry may change independently.
    #[default]
    General,
    /// Perturbations are symmetric, `U = Uᵀ`; the gradient should be symmetric too.
    Symmetric,
    /// Only the lower triangle (with the diagonal) is an input; the gradient's strict
    /// upper triangle should be zero.
    LowerTriangular,
}

impl Structure {
    /// Projects a matrix onto this structure (the orthogonal projection for
    /// `Symmetric`, masking for `LowerTriangular`).
    pub fn project<T: Real>(self, mut u: Array2<T>) -> Array2<T> {
        match self {
            Structure::General => u,
            Structure::Symmetric => {
                let n = u.nrows().min(u.ncols());
                let half = T::of(0.5);
                for i in 0..n {
                    for j in 0..i {
                        let s = (u[(i, j)] + u[(j, i)]) * half;
                        u[(i, j)] = s;
                        u[(j, i)] = s;
                    }
                }
                u
            }
            Structure::LowerTriangular => {
                for ((i, j), x) in u.indexed_iter_mut() {
                    if j > i {
                        *x = T::zero();
                    }
                }
                u
            }
        }
    }
}

/// A differentiable primitive `C = f(X₀, …, Xₙ₋₁)` on 2-D arrays.
///
/// `backward` and `jvp` receive the inputs and the output of `forward`, so a rule can
/// reuse the output (`tanh`, `exp`, Cholesky) instead of recomputing it. Vectors are
/// `n×1` columns and scalars `1×1`.
///
/// Implement [`Primitive::forward`], [`Primitive::backward`] and [`Primitive::jvp`];
/// override [`Primitive::backward_into`] when the rule can accumulate without a
/// temporary (GEMM with beta = 1), which is what the crate's own rules do.
pub trait Primitive<T: Real> {
    /// Name used in reports and errors.
    fn name(&self) -> String;
    /// Number of inputs.
    fn arity(&self) -> usize;
    /// Name of input `i` in reports; the default is `A`, `B`, `D`, … (`C` is the output).
    fn input_name(&self, input: usize) -> String {
        crate::check::default_input_name(input)
    }
    /// Structure of input `i`; the default is [`Structure::General`].
    fn structure(&self, _input: usize) -> Structure {
        Structure::General
    }
    /// `C = f(X…)`.
    fn forward(&self, inputs: &[ArrayView2<'_, T>]) -> Result<Array2<T>>;
    /// Reverse mode: the gradients `X̄ᵢ` (each shaped like `Xᵢ`) for the cotangent `C̄`.
    fn backward(
        &self,
        inputs: &[ArrayView2<'_, T>],
        output: ArrayView2<'_, T>,
        cbar: ArrayView2<'_, T>,
    ) -> Result<Vec<Array2<T>>>;
    /// Forward mode: the tangent `Ċ` for input tangents `Ẋᵢ` (Giles' dot rules).
    fn jvp(
        &self,
        inputs: &[ArrayView2<'_, T>],
        output: ArrayView2<'_, T>,
        tangents: &[ArrayView2<'_, T>],
    ) -> Result<Array2<T>>;
    /// Accumulating reverse mode: `X̄ᵢ += ∂…` for each `Some` buffer; `None` skips that
    /// input. The default adds the result of [`Primitive::backward`].
    fn backward_into(
        &self,
        inputs: &[ArrayView2<'_, T>],
        output: ArrayView2<'_, T>,
        cbar: ArrayView2<'_, T>,
        grads: &mut [Option<ArrayViewMut2<'_, T>>],
    ) -> Result<()> {
        let name = self.name();
        check_arity(&name, "gradient buffers", inputs.len(), grads.len())?;
        let gs = self.backward(inputs, output, cbar)?;
        for ((g, buf), x) in gs.iter().zip(grads.iter_mut()).zip(inputs) {
            if let Some(buf) = buf {
                expect_shape(
                    "backward_into",
                    "gradient buffer",
                    "its input",
                    shape_of(x),
                    shape_of(buf),
                )?;
                Zip::from(buf).and(g).for_each(|b, &d| *b += d);
            }
        }
        Ok(())
    }
}

pub(crate) fn check_arity(
    name: &str,
    what: &'static str,
    expected: usize,
    got: usize,
) -> Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(Error::Arity {
            op: name.to_string(),
            what,
            expected,
            got,
        })
    }
}

/// A reference to a primitive is the same primitive, so that one holding data can be
/// applied without a copy.
impl<T: Real, P: Primitive<T> + ?Sized> Primitive<T> for &P {
    fn name(&self) -> String {
        (**self).name()
    }
    fn arity(&self) -> usize {
        (**self).arity()
    }
    fn input_name(&self, input: usize) -> String {
        (**self).input_name(input)
    }
    fn structure(&self, input: usize) -> Structure {
        (**self).structure(input)
    }
    fn forward(&self, inputs: &[ArrayView2<'_, T>]) -> Result<Array2<T>> {
        (**self).forward(inputs)
    }
    fn backward(
        &self,
        inputs: &[ArrayView2<'_, T>],
        output: ArrayView2<'_, T>,
        cbar: ArrayView2<'_, T>,
    ) -> Result<Vec<Array2<T>>> {
        (**self).backward(inputs, output, cbar)
    }
    fn jvp(
        &self,
        inputs: &[ArrayView2<'_, T>],
        output: ArrayView2<'_, T>,
        tangents: &[ArrayView2<'_, T>],
    ) -> Result<Array2<T>> {
        (**self).jvp(inputs, output, tangents)
    }
    fn backward_into(
        &self,
        inputs: &[ArrayView2<'_, T>],
        output: ArrayView2<'_, T>,
        cbar: ArrayView2<'_, T>,
        grads: &mut [Option<ArrayViewMut2<'_, T>>],
    ) -> Result<()> {
        (**self).backward_into(inputs, output, cbar, grads)
    }
}
