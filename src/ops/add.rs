//! Sums: `C = A + B`, and the bias broadcast of a layer, `C = X + b1ᵀ`.
//!
//! Both rules are copies and row sums, done elementwise with `Zip`; accumulation
//! adds into the caller's buffers in the same pass.

use super::{two, Binary};
use crate::error::{expect_shape, shape_of, Error, Result, Shape};
use crate::primitive::{check_arity, Primitive};
use crate::Real;
use ndarray::{Array2, ArrayView2, ArrayViewMut2, Axis, Zip};

const ADD: &str = "Add";
const ADD_BIAS: &str = "AddBias";

/// Errors unless `a` and `b` have the same shape, naming both.
pub(crate) fn same_shape<T>(
    op: &'static str,
    lhs_name: &'static str,
    a: &ArrayView2<'_, T>,
    rhs_name: &'static str,
    b: &ArrayView2<'_, T>,
) -> Result<()> {
    if a.dim() == b.dim() {
        Ok(())
    } else {
        Err(Error::ShapeMismatch {
            op,
            what: "shapes differ",
            lhs_name,
            lhs: shape_of(a),
            rhs_name,
            rhs: shape_of(b),
        })
    }
}

/// `C = A + B` for `A`, `B` of the same shape.
///
/// Forward `Ċ = Ȧ + Ḃ`; reverse `Ā = C̄`, `B̄ = C̄` (Giles 2008, §3.1).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Hash)]
pub struct Add;

impl<T: Real> Primitive<T> for Add {
    fn name(&self) -> String {
        ADD.to_string()
    }
    fn arity(&self) -> usize {
        2
    }
    fn forward(&self, inputs: &[ArrayView2<'_, T>]) -> Result<Array2<T>> {
        let (a, b) = two(ADD, "inputs", inputs)?;
        same_shape(ADD, "A", a, "B", b)?;
        Ok(Zip::from(a).and(b).map_collect(|&x, &y| x + y))
    }
    fn backward(
        &self,
        inputs: &[ArrayView2<'_, T>],
        _output: ArrayView2<'_, T>,
        cbar: ArrayView2<'_, T>,
    ) -> Result<Vec<Array2<T>>> {
        let (a, b) = two(ADD, "inputs", inputs)?;
        same_shape(ADD, "A", a, "B", b)?;
        expect_shape(ADD, "C̄", "C", shape_of(a), shape_of(&cbar))?;
        Ok(vec![cbar.to_owned(), cbar.to_owned()])
    }
    fn backward_into(
        &self,
        inputs: &[ArrayView2<'_, T>],
        _output: ArrayView2<'_, T>,
        cbar: ArrayView2<'_, T>,
        grads: &mut [Option<ArrayViewMut2<'_, T>>],
    ) -> Result<()> {
        let (a, b) = two(ADD, "inputs", inputs)?;
        check_arity(ADD, "gradient buffers", 2, grads.len())?;
        same_shape(ADD, "A", a, "B", b)?;
        expect_shape(ADD, "C̄", "C", shape_of(a), shape_of(&cbar))?;
        for (g, (name, of)) in grads.iter_mut().zip([("Ā buffer", "A"), ("B̄ buffer", "B")]) {
            if let Some(g) = g.as_mut() {
                expect_shape(ADD, name, of, shape_of(a), shape_of(g))?;
                Zip::from(g).and(&cbar).for_each(|g, &c| *g += c);
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
        let (a, b) = two(ADD, "inputs", inputs)?;
        let (ad, bd) = two(ADD, "tangents", tangents)?;
        same_shape(ADD, "A", a, "B", b)?;
        expect_shape(ADD, "Ȧ", "A", shape_of(a), shape_of(ad))?;
        expect_shape(ADD, "Ḃ", "B", shape_of(b), shape_of(bd))?;
        Ok(Zip::from(ad).and(bd).map_collect(|&x, &y| x + y))
    }
}

impl<T: Real> Binary<T> for Add {}

/// `C = X + b1ᵀ`: the column `b` (`m×1`) added to every column of `X` (`m×n`), the
/// bias of a layer `A = WH + b1ᵀ`.
///
/// Forward `Ċ = Ẋ + ḃ1ᵀ`; reverse `X̄ = C̄`, `b̄ = C̄1`, the row sums of `C̄`
/// (Giles 2008, §3.1, with the broadcast written as a product by `1ᵀ`).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Hash)]
pub struct AddBias;

impl AddBias {
    fn check<T>(x: &ArrayView2<'_, T>, b: &ArrayView2<'_, T>) -> Result<()> {
        if b.dim() == (x.nrows(), 1) {
            Ok(())
        } else {
            Err(Error::ShapeMismatch {
                op: ADD_BIAS,
                what: "b must be a column with one entry per row of X",
                lhs_name: "X",
                lhs: shape_of(x),
                rhs_name: "b",
                rhs: shape_of(b),
            })
        }
    }
}

impl<T: Real> Primitive<T> for AddBias {
    fn name(&self) -> String {
        ADD_BIAS.to_string()
    }
    fn arity(&self) -> usize {
        2
    }
    fn input_name(&self, input: usize) -> String {
        ["X", "b"].get(input).map_or_else(
            || crate::check::default_input_name(input),
            |s| s.to_string(),
        )
    }
    fn forward(&self, inputs: &[ArrayView2<'_, T>]) -> Result<Array2<T>> {
        let (x, b) = two(ADD_BIAS, "inputs", inputs)?;
        Self::check(x, b)?;
        Ok(Zip::from(x).and_broadcast(b).map_collect(|&x, &b| x + b))
    }
    fn backward(
        &self,
        inputs: &[ArrayView2<'_, T>],
        _output: ArrayView2<'_, T>,
        cbar: ArrayView2<'_, T>,
    ) -> Result<Vec<Array2<T>>> {
        let (x, b) = two(ADD_BIAS, "inputs", inputs)?;
        Self::check(x, b)?;
        expect_shape(ADD_BIAS, "C̄", "C", shape_of(x), shape_of(&cbar))?;
        let bbar = cbar.sum_axis(Axis(1)).insert_axis(Axis(1));
        Ok(vec![cbar.to_owned(), bbar])
    }
    fn backward_into(
        &self,
        inputs: &[ArrayView2<'_, T>],
        _output: ArrayView2<'_, T>,
        cbar: ArrayView2<'_, T>,
        grads: &mut [Option<ArrayViewMut2<'_, T>>],
    ) -> Result<()> {
        let (x, b) = two(ADD_BIAS, "inputs", inputs)?;
        check_arity(ADD_BIAS, "gradient buffers", 2, grads.len())?;
        Self::check(x, b)?;
        expect_shape(ADD_BIAS, "C̄", "C", shape_of(x), shape_of(&cbar))?;
        if let Some(g) = grads[0].as_mut() {
            expect_shape(ADD_BIAS, "X̄ buffer", "X", shape_of(x), shape_of(g))?;
            Zip::from(g).and(&cbar).for_each(|g, &c| *g += c);
        }
        if let Some(g) = grads[1].as_mut() {
            expect_shape(ADD_BIAS, "b̄ buffer", "b", shape_of(b), shape_of(g))?;
            Zip::from(g.column_mut(0))
                .and(cbar.rows())
                .for_each(|g, row| *g += row.sum());
        }
        Ok(())
    }
    fn jvp(
        &self,
        inputs: &[ArrayView2<'_, T>],
        _output: ArrayView2<'_, T>,
        tangents: &[ArrayView2<'_, T>],
    ) -> Result<Array2<T>> {
        let (x, b) = two(ADD_BIAS, "inputs", inputs)?;
        let (xd, bd) = two(ADD_BIAS, "tangents", tangents)?;
        Self::check(x, b)?;
        expect_shape(ADD_BIAS, "Ẋ", "X", shape_of(x), shape_of(xd))?;
        expect_shape(ADD_BIAS, "ḃ", "b", Shape(x.nrows(), 1), shape_of(bd))?;
        Ok(Zip::from(xd).and_broadcast(bd).map_collect(|&x, &b| x + b))
    }
}

impl<T: Real> Binary<T> for AddBias {}
