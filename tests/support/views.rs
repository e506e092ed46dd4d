//! A primitive must give the same forward pass, reverse pass (allocating, first write
//! and accumulating) and forward-mode pass on views of any layout as on contiguous
//! arrays holding the same matrices.

use matgrad::check::random;
use matgrad::{Grad, Primitive};
use ndarray::{s, Array2, ArrayView2, ArrayViewMut2};

/// The ways a matrix is stored behind a view.
#[derive(Clone, Copy, Debug)]
pub enum Layout {
    /// A `.t()` of the stored transpose: column-major.
    Transposed,
    /// Every other row of a taller array: `s![..;2, ..]`.
    Stepped,
    /// Rows in reverse order: `s![..;-1, ..]`.
    RowsReversed,
    /// Both axes reversed, the columns with a step too: `s![..;-1, ..;-2]` of a wider array.
    BothReversed,
}

pub const LAYOUTS: [Layout; 4] = [
    Layout::Transposed,
    Layout::Stepped,
    Layout::RowsReversed,
    Layout::BothReversed,
];

/// Memory that holds `x` so that [`view`] shows it, padded with NaN where the layout
/// skips entries (a rule that reads past its view then gives NaN).
pub fn store(x: &Array2<f64>, layout: Layout) -> Array2<f64> {
    let (m, n) = x.dim();
    match layout {
        Layout::Transposed => x.t().as_standard_layout().into_owned(),
        Layout::Stepped => {
            let mut base = Array2::from_elem((2 * m, n), f64::NAN);
            base.slice_mut(s![..;2, ..]).assign(x);
            base
        }
        Layout::RowsReversed => x.slice(s![..;-1, ..]).as_standard_layout().into_owned(),
        Layout::BothReversed => {
            let mut base = Array2::from_elem((m, 2 * n), f64::NAN);
            base.slice_mut(s![..;-1, ..;-2]).assign(x);
            base
        }
    }
}

/// The logical matrix stored in `base` by [`store`].
pub fn view(base: &Array2<f64>, layout: Layout) -> ArrayView2<'_, f64> {
    match layout {
        Layout::Transposed => base.t(),
        Layout::Stepped => base.slice(s![..;2, ..]),
        Layout::RowsReversed => base.slice(s![..;-1, ..]),
        Layout::BothReversed => base.slice(s![..;-1, ..;-2]),
    }
}

/// [`view`], mutable.
pub fn view_mut(base: &mut Array2<f64>, layout: Layout) -> ArrayViewMut2<'_, f64> {
    match layout {
        Layout::Transposed => base.view_mut().reversed_axes(),
        Layout::Stepped => base.slice_mut(s![..;2, ..]),
        Layout::RowsReversed => base.slice_mut(s![..;-1, ..]),
        Layout::BothReversed => base.slice_mut(s![..;-1, ..;-2]),
    }
}

fn assert_close(got: ArrayView2<'_, f64>, expected: &Array2<f64>, what: &str, layout: Layout) {
    assert_eq!(
        got.dim(),
        expected.dim(),
        "{what} on {layout:?} views: shape"
    );
    let scale = expected.iter().fold(1.0f64, |m, x| m.max(x.abs()));
    for (g, e) in got.iter().zip(expected) {
        assert!(
            (g - e).abs() <= 1e-13 * scale,
            "{what} on {layout:?} views differs from contiguous arrays:\n{got}\nvs\n{expected}"
        );
    }
}

fn views_of(bases: &[Array2<f64>], layout: Layout) -> Vec<ArrayView2<'_, f64>> {
    bases.iter().map(|b| view(b, layout)).collect()
}

fn somes_of(bases: &[Array2<f64>], layout: Layout) -> Vec<Option<ArrayView2<'_, f64>>> {
    bases.iter().map(|b| Some(view(b, layout))).collect()
}

fn nan_like(x: &Array2<f64>) -> Array2<f64> {
    Array2::from_elem(x.raw_dim(), f64::NAN)
}

/// Runs forward, forward_into, backward, backward_into (every gradient a first write
/// into NaN, then every gradient added), jvp and jvp_into on contiguous `inputs` and
/// on every [`Layout`] of them (inputs, outputs, cotangents, tangents, output and
/// gradient buffers alike), and asserts the results agree. Every differentiable
/// output gets a cotangent (residuals none); tangents respect each input's declared structure.
pub fn assert_same_on_views<P: Primitive<f64> + ?Sized>(p: &P, inputs: &[&Array2<f64>], seed: u64) {
    let name = p.name();
    let contiguous: Vec<ArrayView2<'_, f64>> = inputs.iter().map(|x| x.view()).collect();
    let y = p.forward(&contiguous).unwrap();
    let yv: Vec<ArrayView2<'_, f64>> = y.iter().map(|c| c.view()).collect();
    let mut rng = random::rng(seed);
    // One cotangent per differentiable output; residuals take none.
    let ybar: Vec<Array2<f64>> = y
        .iter()
        .take(p.outputs())
        .map(|c| random::randn::<f64>(c.nrows(), c.ncols(), &mut rng))
        .collect();
    let tangents: Vec<Array2<f64>> = inputs
        .iter()
        .enumerate()
        .map(|(i, x)| {
            p.structure(i)
                .project(random::randn(x.nrows(), x.ncols(), &mut rng))
        })
        .collect();
    let before: Vec<Array2<f64>> = inputs
        .iter()
        .map(|x| random::randn(x.nrows(), x.ncols(), &mut rng))
        .collect();
    let ybar_c: Vec<Option<ArrayView2<'_, f64>>> = ybar.iter().map(|c| Some(c.view())).collect();
    let grads = p.backward(&contiguous, &yv, &ybar_c).unwrap();
    let t_c: Vec<Option<ArrayView2<'_, f64>>> = tangents.iter().map(|t| Some(t.view())).collect();
    let ydot = p.jvp(&contiguous, &yv, &t_c).unwrap();

    for layout in LAYOUTS {
        let bases: Vec<Array2<f64>> = inputs.iter().map(|x| store(x, layout)).collect();
        let views = views_of(&bases, layout);
        for (v, x) in views.iter().zip(inputs) {
            assert_eq!(v, x, "the {layout:?} view must show the same matrix");
        }

        // Forward, allocating and into NaN-filled output buffers of this layout.
        let y_v = p.forward(&views).unwrap();
        for (got, want) in y_v.iter().zip(&y) {
            assert_close(got.view(), want, &format!("{name} forward"), layout);
        }
        let mut out_bases: Vec<Array2<f64>> =
            y.iter().map(|c| store(&nan_like(c), layout)).collect();
        {
            let mut outs: Vec<ArrayViewMut2<'_, f64>> =
                out_bases.iter_mut().map(|b| view_mut(b, layout)).collect();
            p.forward_into(&views, &mut outs, None).unwrap();
        }
        for (b, want) in out_bases.iter().zip(&y) {
            assert_close(
                view(b, layout),
                want,
                &format!("{name} forward_into"),
                layout,
            );
        }

        // Outputs and cotangents in this layout too.
        let y_bases: Vec<Array2<f64>> = y.iter().map(|c| store(c, layout)).collect();
        let ybar_bases: Vec<Array2<f64>> = ybar.iter().map(|c| store(c, layout)).collect();
        let y_l = views_of(&y_bases, layout);
        let ybar_l = somes_of(&ybar_bases, layout);

        let g_v = p.backward(&views, &y_l, &ybar_l).unwrap();
        for (g, e) in g_v.iter().zip(&grads) {
            assert_close(g.view(), e, &format!("{name} backward"), layout);
        }

        // First writes into NaN-filled gradient buffers of this layout.
        let mut w_bases: Vec<Array2<f64>> =
            inputs.iter().map(|x| store(&nan_like(x), layout)).collect();
        {
            let mut bufs: Vec<Grad<'_, f64>> = w_bases
                .iter_mut()
                .map(|b| Grad::Write(view_mut(b, layout)))
                .collect();
            p.backward_into(&views, &y_l, &ybar_l, &mut bufs, None)
                .unwrap();
        }
        for (buf, g) in w_bases.iter().zip(&grads) {
            assert_close(
                view(buf, layout),
                g,
                &format!("{name} backward_into (Grad::Write)"),
                layout,
            );
        }

        // Accumulation into gradient buffers of this layout.
        let mut a_bases: Vec<Array2<f64>> = before.iter().map(|b| store(b, layout)).collect();
        {
            let mut bufs: Vec<Grad<'_, f64>> = a_bases
                .iter_mut()
                .map(|b| Grad::Add(view_mut(b, layout)))
                .collect();
            p.backward_into(&views, &y_l, &ybar_l, &mut bufs, None)
                .unwrap();
        }
        for ((buf, b), g) in a_bases.iter().zip(&before).zip(&grads) {
            assert_close(
                view(buf, layout),
                &(b + g),
                &format!("{name} backward_into (Grad::Add)"),
                layout,
            );
        }

        // Forward mode, allocating and into NaN-filled tangent buffers of this layout.
        let t_bases: Vec<Array2<f64>> = tangents.iter().map(|t| store(t, layout)).collect();
        let t_l = somes_of(&t_bases, layout);
        let ydot_v = p.jvp(&views, &y_l, &t_l).unwrap();
        for (got, want) in ydot_v.iter().zip(&ydot) {
            assert_close(got.view(), want, &format!("{name} jvp"), layout);
        }
        let mut d_bases: Vec<Array2<f64>> =
            ydot.iter().map(|c| store(&nan_like(c), layout)).collect();
        {
            let mut outs: Vec<ArrayViewMut2<'_, f64>> =
                d_bases.iter_mut().map(|b| view_mut(b, layout)).collect();
            p.jvp_into(&views, &y_l, &t_l, &mut outs, None).unwrap();
        }
        for (b, want) in d_bases.iter().zip(&ydot) {
            assert_close(view(b, layout), want, &format!("{name} jvp_into"), layout);
        }
    }
}
