//! Add, AddBias, Transpose, the masks and the rearrangements: every rule passes the
//! checker at degenerate and non-square shapes in both precisions, the forward
//! semantics match small hand-written examples, bad shapes are typed errors, and
//! strided views agree with contiguous arrays.

mod support {
    pub mod views;
}

use matgrad::check::{random, Checker};
use matgrad::prelude::*;
use ndarray::{array, Array2, ArrayView2, ArrayViewMut2, Order};
use support::views::assert_same_on_views;

/// 1×1, a row, a column, wide and tall.
const SHAPES: [(usize, usize); 5] = [(1, 1), (1, 6), (6, 1), (3, 5), (4, 2)];

/// Linear rules: central differences are exact up to rounding.
const TOL: f64 = 1e-10;

/// The checker's whole check in both precisions (`f64` at [`TOL`], `f32` at its
/// defaults, `f32` against `f64`): `assert_rule_precisions` at this file's tolerance.
/// Inputs this small must get the full Jacobian.
#[track_caller]
fn passes<P: Primitive<f32> + Primitive<f64> + ?Sized>(p: &P, inputs: &[ArrayView2<'_, f64>]) {
    let r = Checker::new().tol(TOL).assert_precisions(p, inputs);
    assert!(
        r.inputs.iter().all(|x| x.jacobian.is_some()),
        "small inputs run the full Jacobian"
    );
}

fn randn(m: usize, n: usize, seed: u64) -> Array2<f64> {
    random::randn(m, n, &mut random::rng(seed))
}

fn random_mask(m: usize, n: usize, seed: u64) -> Mask {
    Mask::new(
        random::uniform::<f64>(m, n, 0.0, 1.0, &mut random::rng(seed))
            .unwrap()
            .mapv(|u| u < 0.6),
    )
}

/// Target shapes with the same number of entries as `m×n`, other than `m×n` itself
/// where there is one.
fn reshape_targets(m: usize, n: usize) -> Vec<(usize, usize)> {
    let mut t = vec![(n, m), (m * n, 1), (1, m * n)];
    if m * n == 8 {
        t.push((2, 4));
    }
    t
}

#[test]
fn add_and_add_bias_pass_the_checker() {
    for (i, &(m, n)) in SHAPES.iter().enumerate() {
        let s = 10 * i as u64;
        passes(&Add, &[randn(m, n, s).view(), randn(m, n, s + 1).view()]);
        passes(
            &AddBias,
            &[randn(m, n, s + 2).view(), randn(m, 1, s + 3).view()],
        );
    }
}

#[test]
fn transpose_passes_the_checker() {
    for (i, &(m, n)) in SHAPES.iter().enumerate() {
        passes(&Transpose, &[randn(m, n, i as u64).view()]);
    }
}

#[test]
fn masks_pass_the_checker() {
    for (i, &(m, n)) in SHAPES.iter().enumerate() {
        let a = randn(m, n, i as u64);
        for k in [-2, -1, 0, 1, 3] {
            passes(&Tril::new(k), &[a.view()]);
            passes(&Triu::new(k), &[a.view()]);
        }
        passes(&random_mask(m, n, 100 + i as u64), &[a.view()]);
    }
}

#[test]
fn rearrangements_pass_the_checker() {
    for (i, &(m, n)) in SHAPES.iter().enumerate() {
        let a = randn(m, n, i as u64);
        for (r, c) in reshape_targets(m, n) {
            passes(&Reshape::row_major(r, c), &[a.view()]);
            passes(&Reshape::col_major(r, c), &[a.view()]);
        }
        passes(&Vectorize, &[a.view()]);
        passes(&Unvec::new(m, n), &[randn(m * n, 1, 50 + i as u64).view()]);
    }
}

#[test]
fn larger_inputs_pass_without_the_full_jacobian() {
    let a = randn(17, 23, 1);
    let b = randn(17, 23, 2);
    let bias = randn(17, 1, 3);
    let check = |p: &dyn Primitive<f64>, inputs: &[ArrayView2<'_, f64>]| {
        Checker::new()
            .tol(TOL)
            .check(p, inputs)
            .unwrap()
            .assert_passed();
    };
    check(&Add, &[a.view(), b.view()]);
    check(&AddBias, &[a.view(), bias.view()]);
    for p in [
        &Transpose as &dyn Primitive<f64>,
        &Tril::new(-3),
        &Triu::new(2),
        &Reshape::col_major(23, 17),
        &Reshape::row_major(1, 17 * 23),
        &Vectorize,
    ] {
        check(p, &[a.view()]);
    }
}

fn forward<P: Primitive<f64>>(p: &P, inputs: &[ArrayView2<'_, f64>]) -> Array2<f64> {
    p.forward(inputs).unwrap().remove(0)
}

fn m34() -> Array2<f64> {
    array![[1., 2., 3., 4.], [5., 6., 7., 8.], [9., 10., 11., 12.]]
}

#[test]
fn tril_and_triu_follow_numpy_offsets() {
    let a = m34();
    let v = [a.view()];
    assert_eq!(
        forward(&Tril::new(-1), &v),
        array![[0., 0., 0., 0.], [5., 0., 0., 0.], [9., 10., 0., 0.]]
    );
    assert_eq!(
        forward(&Tril::new(0), &v),
        array![[1., 0., 0., 0.], [5., 6., 0., 0.], [9., 10., 11., 0.]]
    );
    assert_eq!(
        forward(&Tril::new(1), &v),
        array![[1., 2., 0., 0.], [5., 6., 7., 0.], [9., 10., 11., 12.]]
    );
    assert_eq!(
        forward(&Triu::new(1), &v),
        array![[0., 2., 3., 4.], [0., 0., 7., 8.], [0., 0., 0., 12.]]
    );
    assert_eq!(
        forward(&Triu::new(-1), &v),
        array![[1., 2., 3., 4.], [5., 6., 7., 8.], [0., 10., 11., 12.]]
    );
    assert_eq!(forward(&Triu::new(4), &v), Array2::<f64>::zeros((3, 4)));
    assert_eq!(forward(&Tril::new(-3), &v), Array2::<f64>::zeros((3, 4)));
    assert_eq!(forward(&Tril::new(3), &v), a);
    assert_eq!(forward(&Triu::new(-2), &v), a);

    let tall = array![[1., 2.], [3., 4.], [5., 6.], [7., 8.]];
    assert_eq!(
        forward(&Triu::new(0), &[tall.view()]),
        array![[1., 2.], [0., 4.], [0., 0.], [0., 0.]]
    );
    assert_eq!(
        forward(&Tril::new(-2), &[tall.view()]),
        array![[0., 0.], [0., 0.], [5., 0.], [7., 8.]]
    );
}

#[test]
fn mask_backward_and_jvp_are_the_same_mask() {
    let cbar = array![
        [1., -2., 3., -4.],
        [5., -6., 7., -8.],
        [9., -10., 11., -12.]
    ];
    let a = m34();
    let out = Tril::new(-1).apply([a.view()]).unwrap();
    let [abar] = out.backward(cbar.view()).unwrap();
    assert_eq!(
        abar,
        array![[0., 0., 0., 0.], [5., 0., 0., 0.], [9., -10., 0., 0.]]
    );
    assert_eq!(out.jvp([cbar.view()]).unwrap(), abar);

    let keep = array![
        [true, false, false, true],
        [false, true, true, false],
        [true, true, false, false]
    ];
    let mask = Mask::new(keep);
    let c = (&mask).apply([a.view()]).unwrap();
    assert_eq!(
        c.value(),
        &array![[1., 0., 0., 4.], [0., 6., 7., 0.], [9., 10., 0., 0.]]
    );
    assert_eq!(
        c.backward(cbar.view()).unwrap(),
        [array![
            [1., 0., 0., -4.],
            [0., -6., 7., 0.],
            [9., -10., 0., 0.]
        ]]
    );
    let zero_one = array![[1., 0., 0., 1.], [0., 1., 1., 0.], [1., 1., 0., 0.]];
    assert_eq!(Mask::nonzero(zero_one.view()), mask);
    // `keeps` reads the mask, and keeps nothing outside it.
    let kept: Vec<bool> = [(0, 0), (0, 1), (1, 2), (2, 3), (3, 0), (0, 4)]
        .iter()
        .map(|&(i, j)| mask.keeps(i, j))
        .collect();
    assert_eq!(kept, [true, false, true, false, false, false]);
}

#[test]
fn vec_stacks_columns_and_unvec_undoes_it() {
    let a = array![[1., 2., 3.], [4., 5., 6.]];
    let v = Vectorize.apply([a.view()]).unwrap();
    assert_eq!(v.value(), &array![[1.], [4.], [2.], [5.], [3.], [6.]]);
    let back = Unvec::new(2, 3).apply([v.value()]).unwrap();
    assert_eq!(back.value(), &a);

    // The adjoint of vec is unvec.
    let cbar = array![[10.], [40.], [20.], [50.], [30.], [60.]];
    assert_eq!(
        v.backward(cbar.view()).unwrap(),
        [array![[10., 20., 30.], [40., 50., 60.]]]
    );
    assert_eq!(
        back.backward(a.view()).unwrap(),
        [array![[1.], [4.], [2.], [5.], [3.], [6.]]]
    );

    // vec of a transposed view is vec of the matrix it shows, Aᵀ.
    let at = Vectorize.apply([a.t()]).unwrap();
    assert_eq!(at.value(), &array![[1.], [2.], [3.], [4.], [5.], [6.]]);
}

#[test]
fn reshape_reads_and_writes_in_its_order() {
    let a = array![[1., 2., 3.], [4., 5., 6.]];
    let row = Reshape::row_major(3, 2).apply([a.view()]).unwrap();
    assert_eq!(row.value(), &array![[1., 2.], [3., 4.], [5., 6.]]);
    let col = Reshape::col_major(3, 2).apply([a.view()]).unwrap();
    assert_eq!(col.value(), &array![[1., 5.], [4., 3.], [2., 6.]]);
    assert_eq!(
        forward(&Reshape::new(1, 6, Order::RowMajor), &[a.view()]),
        array![[1., 2., 3., 4., 5., 6.]]
    );
    assert_eq!(
        forward(&Reshape::new(6, 1, Order::ColumnMajor), &[a.view()]),
        forward(&Vectorize, &[a.view()])
    );
    assert!(row.value().is_standard_layout() && col.value().is_standard_layout());

    // Ā puts each C̄ entry back where its C entry came from.
    let cbar = array![[10., 20.], [30., 40.], [50., 60.]];
    assert_eq!(
        row.backward(cbar.view()).unwrap(),
        [array![[10., 20., 30.], [40., 50., 60.]]]
    );
    assert_eq!(
        col.backward(cbar.view()).unwrap(),
        [array![[10., 50., 40.], [30., 20., 60.]]]
    );
}

/// `Reshape` hashes its shape and order (by hand: `ndarray::Order` is not `Hash`), so
/// reshapes that differ in any of them, kept as keys of a map, do not all collide.
#[test]
fn reshapes_hash_their_shape_and_order() {
    use std::collections::HashSet;
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    let hash = |r: Reshape| BuildHasherDefault::<DefaultHasher>::default().hash_one(r);
    let all = [
        Reshape::row_major(3, 2),
        Reshape::row_major(2, 3),
        Reshape::col_major(3, 2),
        Reshape::col_major(2, 3),
        Reshape::row_major(6, 1),
    ];
    let hashes: HashSet<u64> = all.iter().map(|&r| hash(r)).collect();
    assert_eq!(hashes.len(), all.len(), "{all:?}");
    assert_eq!(
        hash(Reshape::col_major(3, 2)),
        hash(Reshape::new(3, 2, Order::ColumnMajor))
    );
}

#[test]
fn transpose_add_and_bias_by_hand() {
    let a = array![[1., 2., 3.], [4., 5., 6.]];
    let t = Transpose.apply([a.view()]).unwrap();
    assert_eq!(t.value(), &array![[1., 4.], [2., 5.], [3., 6.]]);
    assert!(t.value().is_standard_layout());
    let cbar = array![[1., 2.], [3., 4.], [5., 6.]];
    assert_eq!(
        t.backward(cbar.view()).unwrap(),
        [array![[1., 3., 5.], [2., 4., 6.]]]
    );
    let tt = Transpose.apply([a.t()]).unwrap();
    assert_eq!(tt.value(), &a);
    assert!(tt.value().is_standard_layout());

    let b = array![[10., 20., 30.], [40., 50., 60.]];
    let s = Add.apply([a.view(), b.view()]).unwrap();
    assert_eq!(s.value(), &array![[11., 22., 33.], [44., 55., 66.]]);

    let bias = array![[100.], [200.]];
    let c = AddBias.apply([a.view(), bias.view()]).unwrap();
    assert_eq!(c.value(), &array![[101., 102., 103.], [204., 205., 206.]]);
    let [xbar, bbar] = c.backward(b.view()).unwrap();
    assert_eq!(xbar, b);
    assert_eq!(bbar, array![[60.], [150.]]);
    assert_eq!(
        c.jvp([b.view(), bias.view()]).unwrap(),
        array![[110., 120., 130.], [240., 250., 260.]]
    );
}

#[test]
fn mismatched_inputs_are_typed_errors_naming_both_shapes() {
    let a = randn(3, 5, 1);
    let err = Add.apply([a.view(), randn(5, 3, 2).view()]).err().unwrap();
    assert!(
        matches!(err, Error::ShapeMismatch { op: "Add", .. }),
        "{err}"
    );
    assert_eq!(err.to_string(), "Add: shapes differ, A is 3×5, B is 5×3");

    for (r, c) in [(3, 2), (4, 1), (1, 3), (5, 1)] {
        let err = AddBias
            .apply([a.view(), randn(r, c, 3).view()])
            .err()
            .unwrap();
        assert!(
            matches!(err, Error::ShapeMismatch { op: "AddBias", lhs: Shape(3, 5), rhs, .. } if rhs == Shape(r, c)),
            "{err}"
        );
    }

    let mask = random_mask(5, 3, 4);
    let err = (&mask).apply([a.view()]).err().unwrap();
    assert!(
        matches!(
            err,
            Error::ShapeMismatch {
                op: "Mask",
                lhs: Shape(3, 5),
                rhs: Shape(5, 3),
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("3×5") && err.to_string().contains("5×3"),
        "{err}"
    );
}

#[test]
fn bad_reshapes_are_typed_errors() {
    let a = randn(3, 5, 1);
    let err = Reshape::row_major(4, 4).apply([a.view()]).err().unwrap();
    assert_eq!(
        err,
        Error::BadReshape {
            op: "Reshape",
            from: Shape(3, 5),
            to: Shape(4, 4)
        }
    );
    assert_eq!(
        err.to_string(),
        "Reshape: cannot reshape 3×5 (15 elements) into 4×4 (16 elements)"
    );
    let err = Unvec::new(2, 3)
        .apply([randn(5, 1, 2).view()])
        .err()
        .unwrap();
    assert!(
        matches!(err, Error::BadReshape { op: "Unvec", .. }),
        "{err}"
    );
    let err = Unvec::new(2, 3)
        .apply([randn(1, 6, 2).view()])
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            Error::WrongShape {
                op: "Unvec",
                expected: Shape(6, 1),
                got: Shape(1, 6),
                ..
            }
        ),
        "{err}"
    );
    let err = Reshape::col_major(usize::MAX, 2)
        .apply([a.view()])
        .err()
        .unwrap();
    assert!(matches!(err, Error::BadReshape { .. }), "{err}");
}

/// Every rule rejects a cotangent, a tangent and a gradient buffer of the wrong shape.
fn rejects_wrong_shapes<P: Primitive<f64> + ?Sized>(p: &P, inputs: &[&Array2<f64>]) {
    let name = p.name();
    let v: Vec<ArrayView2<'_, f64>> = inputs.iter().map(|x| x.view()).collect();
    let c = p.forward(&v).unwrap().remove(0);
    let bad = randn(c.nrows() + 1, c.ncols(), 9);
    let err = p
        .backward(&v, &[c.view()], &[Some(bad.view())])
        .err()
        .unwrap();
    assert!(
        matches!(err, Error::WrongShape { op, name: "cotangent", of: "C", .. } if op == name),
        "{name}: {err}"
    );
    let mut bufs: Vec<Array2<f64>> = inputs.iter().map(|x| Array2::zeros(x.raw_dim())).collect();
    let mut views: Vec<Option<ArrayViewMut2<'_, f64>>> =
        bufs.iter_mut().map(|b| Some(b.view_mut())).collect();
    let err = p
        .backward_add(&v, &[c.view()], &[Some(bad.view())], &mut views)
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            Error::WrongShape {
                name: "cotangent",
                ..
            }
        ),
        "{name}: {err}"
    );
    drop(views);
    assert!(
        bufs.iter().all(|b| b.iter().all(|&x| x == 0.0)),
        "{name}: an error leaves buffers untouched"
    );

    let cbar = randn(c.nrows(), c.ncols(), 10);
    for i in 0..inputs.len() {
        let mut bufs: Vec<Array2<f64>> =
            inputs.iter().map(|x| Array2::zeros(x.raw_dim())).collect();
        bufs[i] = Array2::zeros((inputs[i].nrows(), inputs[i].ncols() + 1));
        let mut views: Vec<Option<ArrayViewMut2<'_, f64>>> =
            bufs.iter_mut().map(|b| Some(b.view_mut())).collect();
        let err = p
            .backward_add(&v, &[c.view()], &[Some(cbar.view())], &mut views)
            .err()
            .unwrap();
        assert!(
            matches!(
                err,
                Error::WrongShape { op, name: "gradient buffer", of, got, .. }
                    if op == name && of == p.input_name(i)
                        && got == Shape(inputs[i].nrows(), inputs[i].ncols() + 1)
            ),
            "{name}: {err}"
        );

        let mut tangents: Vec<Array2<f64>> = inputs
            .iter()
            .map(|x| randn(x.nrows(), x.ncols(), 12))
            .collect();
        tangents[i] = randn(inputs[i].nrows() + 1, inputs[i].ncols(), 11);
        let tv: Vec<Option<ArrayView2<'_, f64>>> =
            tangents.iter().map(|t| Some(t.view())).collect();
        let err = p.jvp(&v, &[c.view()], &tv).err().unwrap();
        assert!(
            matches!(
                err,
                Error::WrongShape { op, name: "tangent", of, .. }
                    if op == name && of == p.input_name(i)
            ),
            "{name}: {err}"
        );
    }
    let err = p.forward(&v[..v.len() - 1]).err().unwrap();
    assert!(
        matches!(err, Error::Arity { op, what: "inputs", .. } if op == name),
        "{name}: {err}"
    );
}

#[test]
fn wrong_cotangent_tangent_and_buffer_shapes_are_typed_errors() {
    let a = randn(3, 5, 1);
    let b = randn(3, 5, 2);
    rejects_wrong_shapes(&Add, &[&a, &b]);
    rejects_wrong_shapes(&AddBias, &[&a, &randn(3, 1, 3)]);
    rejects_wrong_shapes(&Transpose, &[&a]);
    rejects_wrong_shapes(&Tril::new(0), &[&a]);
    rejects_wrong_shapes(&Triu::new(1), &[&a]);
    rejects_wrong_shapes(&random_mask(3, 5, 4), &[&a]);
    rejects_wrong_shapes(&Reshape::row_major(5, 3), &[&a]);
    rejects_wrong_shapes(&Reshape::col_major(15, 1), &[&a]);
    rejects_wrong_shapes(&Vectorize, &[&a]);
    rejects_wrong_shapes(&Unvec::new(3, 5), &[&randn(15, 1, 5)]);
}

#[test]
fn strided_views_agree_with_contiguous_arrays() {
    for (i, &(m, n)) in [(3, 5), (4, 2), (1, 6), (6, 1)].iter().enumerate() {
        let s = 10 * i as u64;
        let a = randn(m, n, s);
        assert_same_on_views(&Add, &[&a, &randn(m, n, s + 1)], s);
        assert_same_on_views(&AddBias, &[&a, &randn(m, 1, s + 2)], s);
        assert_same_on_views(&Transpose, &[&a], s);
        assert_same_on_views(&Tril::new(-1), &[&a], s);
        assert_same_on_views(&Triu::new(1), &[&a], s);
        assert_same_on_views(&random_mask(m, n, s + 3), &[&a], s);
        for (r, c) in reshape_targets(m, n) {
            assert_same_on_views(&Reshape::row_major(r, c), &[&a], s);
            assert_same_on_views(&Reshape::col_major(r, c), &[&a], s);
        }
        assert_same_on_views(&Vectorize, &[&a], s);
        assert_same_on_views(&Unvec::new(m, n), &[&randn(m * n, 1, s + 4)], s);
    }
}

#[test]
fn strided_views_agree_at_the_sizes_of_the_tiled_copy() {
    // One 8×8 block; odd sizes across 64×64 tiles; powers of two.
    for (i, &(m, n)) in [(8, 8), (13, 70), (65, 129), (64, 64), (128, 32)]
        .iter()
        .enumerate()
    {
        let s = 100 + 10 * i as u64;
        let a = randn(m, n, s);
        assert_same_on_views(&Transpose, &[&a], s);
        assert_same_on_views(&Vectorize, &[&a], s);
        assert_same_on_views(&Unvec::new(m, n), &[&randn(m * n, 1, s + 1)], s);
        assert_same_on_views(&Reshape::col_major(n, m), &[&a], s);
        assert_same_on_views(&Reshape::row_major(n, m), &[&a], s);
    }
}
