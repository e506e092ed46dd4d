//! Transpose, `C = Aᵀ`, materialised in standard (row-major) layout.
//!
//! Inside products a transpose is a BLAS flag and never needs this primitive; it is
//! for graphs where `Aᵀ` is a node of its own.

use super::{one, Unary};
use crate::error::{expect_shape, shape_of, Result, Shape};
use crate::primitive::{check_arity, Primitive};
use crate::Real;
use ndarray::{Array2, ArrayView2, ArrayViewMut2, Zip};

const OP: &str = "Transpose";

/// `C = Aᵀ`, returned in standard layout.
///
/// Forward `Ċ = Ȧᵀ`; reverse `Ā = C̄ᵀ` (Giles 2008; a rearrangement's
/// adjoint is its inverse).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Hash)]
pub struct Transpose;

fn transposed<T: Real>(x: ArrayView2<'_, T>) -> Array2<T> {
    x.reversed_axes().as_standard_layout().into_owned()
}

fn t_shape<T>(a: &ArrayView2<'_, T>) -> Shape {
    Shape(a.ncols(), a.nrows())
}

impl<T: Real> Primitive<T> for Transpose {
    fn name(&self) -> String {
        OP.to_string()
    }
    fn arity(&self) -> usize {
        1
    }
    fn forward(&self, inputs: &[ArrayView2<'_, T>]) -> Result<Array2<T>> {
        let a = one(OP, "inputs", inputs)?;
        Ok(transposed(a.view()))
    }
    fn backward(
        &self,
        inputs: &[ArrayView2<'_, T>],
        _output: ArrayView2<'_, T>,
        cbar: ArrayView2<'_, T>,
    ) -> Result<Vec<Array2<T>>> {
        let a = one(OP, "inputs", inputs)?;
        expect_shape(OP, "C̄", "C", t_shape(a), shape_of(&cbar))?;
        Ok(vec![transposed(cbar)])
    }
    fn backward_into(
        &self,
        inputs: &[ArrayView2<'_, T>],
        _output: ArrayView2<'_, T>,
        cbar: ArrayView2<'_, T>,
        grads: &mut [Option<ArrayViewMut2<'_, T>>],
    ) -> Result<()> {
        let a = one(OP, "inputs", inputs)?;
        check_arity(OP, "gradient buffers", 1, grads.len())?;
        expect_shape(OP, "C̄", "C", t_shape(a), shape_of(&cbar))?;
        if let Some(g) = grads[0].as_mut() {
            expect_shape(OP, "Ā buffer", "A", shape_of(a), shape_of(g))?;
            Zip::from(g).and(cbar.t()).for_each(|g, &c| *g += c);
        }
        Ok(())
    }
    fn jvp(
        &self,
        inputs: &[ArrayView2<'_, T>],
        _output: ArrayView2<'_, T>,
        tangents: &[ArrayView2<'_, T>],
    ) -> Result<Array2<T>> {
        let a = one(OP, "inputs", inputs)?;
        let ad = one(OP, "tangents", tangents)?;
        expect_shape(OP, "Ȧ", "A", shape_of(a), shape_of(ad))?;
        Ok(transposed(ad.view()))
    }
}

impl<T: Real> Unary<T> for Transpose {}
