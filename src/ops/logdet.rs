//! Log-determinant from a Cholesky factor, `c = log det(LLᵀ) = 2 Σᵢ log Lᵢᵢ`.
//!
//! Only the diagonal enters: `ċ = 2 Σᵢ L̇ᵢᵢ/Lᵢᵢ` and `L̄ = diag(2c̄/Lᵢᵢ)` (the
//! elementwise rule for `log` on the diagonal, Giles 2008, §3.1; chained with
//! Cholesky it gives `Ā = c̄A⁻¹`, Giles' determinant rule).
//!
//! ```
//! use matgrad::prelude::*;
//! use ndarray::array;
//!
//! let l = array![[2.0f64, 0.0], [7.0, 0.5]];
//! let c = CholLogDet.apply(l.view())?;
//! assert!(c.value()[(0, 0)].abs() < 1e-15);              // det(LLᵀ) = (2·0.5)² = 1
//! let lbar = c.backward(array![[1.0]].view())?;
//! assert_eq!(lbar, array![[1.0, 0.0], [0.0, 4.0]]);
//! # Ok::<(), matgrad::Error>(())
//! ```

use super::triangular::square;
use super::{one, Unary};
use crate::error::{expect_shape, shape_of, Error, Result, Shape};
use crate::primitive::{check_arity, Primitive, Structure};
use crate::Real;
use ndarray::{Array2, ArrayView2, ArrayViewMut2};

const OP: &str = "CholLogDet";

/// `c = 2 Σᵢ log Lᵢᵢ` as a `1×1` matrix: `log det(LLᵀ)` for a Cholesky factor `L`.
///
/// Forward `ċ = 2 Σᵢ L̇ᵢᵢ/Lᵢᵢ`; reverse `L̄ = diag(2c̄/Lᵢᵢ)` (Giles 2008, §3.1).
/// The diagonal must be positive. Input 0 is [`Structure::LowerTriangular`].
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Hash)]
pub struct CholLogDet;

/// The order of `L` after checking that its diagonal has a logarithm.
fn positive_diagonal<T: Real>(l: &ArrayView2<'_, T>) -> Result<usize> {
    let n = square(OP, "L", l)?;
    for (i, &d) in l.diag().iter().enumerate() {
        if d > T::zero() {
            continue;
        }
        return Err(if d == T::zero() {
            Error::Singular { op: OP, index: i }
        } else if d.is_nan() {
            Error::NonFinite {
                op: OP,
                name: "L",
                row: i,
                col: i,
            }
        } else {
            Error::InvalidArgument {
                op: OP,
                msg: format!("diagonal entry {i} of L is {d}, its logarithm is undefined"),
            }
        });
    }
    Ok(n)
}

fn scalar_cbar<T: Real>(cbar: &ArrayView2<'_, T>) -> Result<T> {
    expect_shape(OP, "c̄", "c", Shape(1, 1), shape_of(cbar))?;
    Ok(cbar[(0, 0)])
}

impl<T: Real> Primitive<T> for CholLogDet {
    fn name(&self) -> String {
        format!("{OP}(2Σ log Lᵢᵢ)")
    }
    fn arity(&self) -> usize {
        1
    }
    fn input_name(&self, input: usize) -> String {
        ["L"].get(input).map_or_else(
            || crate::check::default_input_name(input),
            |s| s.to_string(),
        )
    }
    fn structure(&self, _input: usize) -> Structure {
        Structure::LowerTriangular
    }
    fn forward(&self, inputs: &[ArrayView2<'_, T>]) -> Result<Array2<T>> {
        let l = one(OP, "inputs", inputs)?;
        positive_diagonal(l)?;
        let two = T::one() + T::one();
        let c = l.diag().iter().map(|d| d.ln()).sum::<T>() * two;
        Ok(Array2::from_elem((1, 1), c))
    }
    fn backward(
        &self,
        inputs: &[ArrayView2<'_, T>],
        output: ArrayView2<'_, T>,
        cbar: ArrayView2<'_, T>,
    ) -> Result<Vec<Array2<T>>> {
        let l = one(OP, "inputs", inputs)?;
        let mut lbar = Array2::zeros(l.dim());
        self.backward_into(inputs, output, cbar, &mut [Some(lbar.view_mut())])?;
        Ok(vec![lbar])
    }
    fn backward_into(
        &self,
        inputs: &[ArrayView2<'_, T>],
        _output: ArrayView2<'_, T>,
        cbar: ArrayView2<'_, T>,
        grads: &mut [Option<ArrayViewMut2<'_, T>>],
    ) -> Result<()> {
        let l = one(OP, "inputs", inputs)?;
        check_arity(OP, "gradient buffers", 1, grads.len())?;
        positive_diagonal(l)?;
        let c2 = scalar_cbar(&cbar)? * (T::one() + T::one());
        if let Some(g) = grads[0].as_mut() {
            expect_shape(OP, "L̄ buffer", "L", shape_of(l), shape_of(g))?;
            for (gi, &d) in g.diag_mut().iter_mut().zip(l.diag()) {
                *gi += c2 / d;
            }
        }
        Ok(())
    }
    fn jvp(
        &self,
        inputs: &[ArrayView2<'_, T>],
        _output: ArrayView2<'_, T>,
        tangents: &[ArrayView2<'_, T>],
    ) -> Result<Array2<T>> {
        let l = one(OP, "inputs", inputs)?;
        let ld = one(OP, "tangents", tangents)?;
        positive_diagonal(l)?;
        expect_shape(OP, "L̇", "L", shape_of(l), shape_of(ld))?;
        let two = T::one() + T::one();
        let c = l
            .diag()
            .iter()
            .zip(ld.diag())
            .map(|(&d, &dd)| dd / d)
            .sum::<T>()
            * two;
        Ok(Array2::from_elem((1, 1), c))
    }
}

impl<T: Real> Unary<T> for CholLogDet {}
