//! Sums: `C = A + B`, and the bias broadcast of a layer, `C = X + b1ᵀ`.
//!
//! Both rules are copies and row sums, done elementwise with `Zip` straight into the
//! caller's buffers; neither reverse rule reads an input or the output.

use super::same_shape;
use crate::error::{Error, Result, Shape};
use crate::primitive::{Grad, Partials, Rule, Saves, Shapes};
use crate::Real;
use ndarray::{ArrayView2, ArrayViewMut2, Zip};
use smallvec::smallvec;

const ADD: &str = "Add";
const ADD_BIAS: &str = "AddBias";

/// `C = A + B` for `A`, `B` of the same shape.
///
/// Forward `Ċ = Ȧ + Ḃ`; reverse `Ā = C̄`, `B̄ = C̄` (Giles 2008, §3.1; `docs/math.md`).
/// The reverse rule reads nothing but `C̄`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Hash)]
pub struct Add;

impl<T: Real> Rule<T> for Add {
    fn name(&self) -> &'static str {
        ADD
    }
    fn arity(&self) -> usize {
        2
    }
    fn shapes(&self, x: &[Shape]) -> Result<Shapes> {
        same_shape(ADD, "A", x[0], "B", x[1])?;
        Ok(smallvec![x[0]])
    }
    fn saves(&self, _wanted: &[bool]) -> Saves {
        Saves::NONE
    }
    fn eval(
        &self,
        x: &[ArrayView2<'_, T>],
        y: &mut [ArrayViewMut2<'_, T>],
        _: &mut [T],
    ) -> Result<()> {
        Zip::from(&mut y[0])
            .and(&x[0])
            .and(&x[1])
            .for_each(|c, &a, &b| *c = a + b);
        Ok(())
    }
    fn pullback(
        &self,
        _x: &[ArrayView2<'_, T>],
        _y: &[ArrayView2<'_, T>],
        ybar: &Partials<'_, '_, T>,
        grads: &mut [Grad<'_, T>],
        _: &mut [T],
    ) -> Result<()> {
        let cbar = ybar.view(0);
        for g in grads.iter_mut() {
            if let Some((g, acc)) = g.target() {
                acc.assign(g, cbar.view());
            }
        }
        Ok(())
    }
    fn pushforward(
        &self,
        _x: &[ArrayView2<'_, T>],
        _y: &[ArrayView2<'_, T>],
        xdot: &Partials<'_, '_, T>,
        ydot: &mut [ArrayViewMut2<'_, T>],
        _: &mut [T],
    ) -> Result<()> {
        Zip::from(&mut ydot[0])
            .and(&xdot.view(0))
            .and(&xdot.view(1))
            .for_each(|c, &a, &b| *c = a + b);
        Ok(())
    }
}

/// `C = X + b1ᵀ`: the column `b` (`m×1`) added to every column of `X` (`m×n`), the
/// bias of a layer `A = WH + b1ᵀ`.
///
/// Forward `Ċ = Ẋ + ḃ1ᵀ`; reverse `X̄ = C̄`, `b̄ = C̄1`, the row sums of `C̄`
/// (Giles 2008, §3.1, with the broadcast written as a product by `1ᵀ`;
/// `docs/math.md`). The reverse rule reads nothing but `C̄`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Hash)]
pub struct AddBias;

impl<T: Real> Rule<T> for AddBias {
    fn name(&self) -> &'static str {
        ADD_BIAS
    }
    fn arity(&self) -> usize {
        2
    }
    fn input_name(&self, i: usize) -> &'static str {
        ["X", "b"].get(i).copied().unwrap_or("X")
    }
    fn shapes(&self, x: &[Shape]) -> Result<Shapes> {
        let (xs, bs) = (x[0], x[1]);
        if bs != Shape(xs.0, 1) {
            return Err(Error::ShapeMismatch {
                op: ADD_BIAS,
                what: "b must be a column with one entry per row of X",
                lhs_name: "X",
                lhs: xs,
                rhs_name: "b",
                rhs: bs,
            });
        }
        Ok(smallvec![xs])
    }
    fn saves(&self, _wanted: &[bool]) -> Saves {
        Saves::NONE
    }
    fn eval(
        &self,
        x: &[ArrayView2<'_, T>],
        y: &mut [ArrayViewMut2<'_, T>],
        _: &mut [T],
    ) -> Result<()> {
        Zip::from(&mut y[0])
            .and(&x[0])
            .and_broadcast(&x[1])
            .for_each(|c, &x, &b| *c = x + b);
        Ok(())
    }
    fn pullback(
        &self,
        _x: &[ArrayView2<'_, T>],
        _y: &[ArrayView2<'_, T>],
        ybar: &Partials<'_, '_, T>,
        grads: &mut [Grad<'_, T>],
        _: &mut [T],
    ) -> Result<()> {
        let cbar = ybar.view(0);
        if let Some((g, acc)) = grads[0].target() {
            acc.assign(g, cbar.view());
        }
        if let Some((mut g, acc)) = grads[1].target() {
            Zip::from(g.column_mut(0))
                .and(cbar.rows())
                .for_each(|g, row| acc.store(g, row.sum()));
        }
        Ok(())
    }
    fn pushforward(
        &self,
        _x: &[ArrayView2<'_, T>],
        _y: &[ArrayView2<'_, T>],
        xdot: &Partials<'_, '_, T>,
        ydot: &mut [ArrayViewMut2<'_, T>],
        _: &mut [T],
    ) -> Result<()> {
        Zip::from(&mut ydot[0])
            .and(&xdot.view(0))
            .and_broadcast(&xdot.view(1))
            .for_each(|c, &x, &b| *c = x + b);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::primitive::Primitive;
    use ndarray::{array, Array2};

    #[test]
    fn add_bias_writes_without_reading_then_adds() {
        let x = array![[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]];
        let b = array![[10.0], [20.0]];
        let c = AddBias.forward(&[x.view(), b.view()]).unwrap().remove(0);
        assert_eq!(c, array![[11.0, 12.0, 13.0], [24.0, 25.0, 26.0]]);
        assert_eq!(Rule::<f64>::saves(&AddBias, &[true, true]), Saves::NONE);

        // Placeholders for the unsaved inputs and output: NaN everywhere.
        let (xn, bn, cn) = (
            x.mapv(|_| f64::NAN),
            b.mapv(|_| f64::NAN),
            c.mapv(|_| f64::NAN),
        );
        let cbar = array![[1.0, 2.0, 3.0], [-1.0, 0.5, 0.5]];
        let mut xbar = Array2::from_elem((2, 3), f64::NAN);
        let mut bbar = Array2::from_elem((2, 1), f64::NAN);
        let mut grads = [Grad::Write(xbar.view_mut()), Grad::Write(bbar.view_mut())];
        AddBias
            .backward_into(
                &[xn.view(), bn.view()],
                &[cn.view()],
                &[Some(cbar.view())],
                &mut grads,
                None,
            )
            .unwrap();
        assert_eq!(xbar, cbar);
        assert_eq!(bbar, array![[6.0], [0.0]]);

        let mut grads = [Grad::Skip, Grad::Add(bbar.view_mut())];
        AddBias
            .backward_into(
                &[xn.view(), bn.view()],
                &[cn.view()],
                &[Some(cbar.view())],
                &mut grads,
                None,
            )
            .unwrap();
        assert_eq!(bbar, array![[12.0], [0.0]]);
    }

    #[test]
    fn add_bias_rejects_a_bias_that_is_not_one_column_per_row() {
        let err = Rule::<f64>::shapes(&AddBias, &[Shape(3, 4), Shape(4, 1)]).unwrap_err();
        assert!(
            matches!(err, Error::ShapeMismatch { op: "AddBias", .. }),
            "{err}"
        );
    }
}
