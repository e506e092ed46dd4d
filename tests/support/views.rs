//! A primitive must give the same forward, backward, accumulating backward and JVP
//! on views of any layout as on contiguous arrays holding the same matrices.

use matgrad::check::random;
use matgrad::Primitive;
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
    /// Both axes reversed, the columns with a step too: `s![..;-1, ..;-1]` of a wider array.
    BothReversed,
}

pub const LAYOUTS: [Layout; 4] = [
    Layout::Transposed,
    Layout::Stepped,
    Layout::RowsReversed,
    Layout::BothReversed,
];

/// Memory that holds `x` so that [`view`] shows it, padded with other values where the
/// layout skips entries.
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

/// Runs forward, backward, backward_into and jvp on contiguous `inputs` and on every
/// [`Layout`] of them (inputs, output, cotangent, tangents and gradient buffers alike),
/// and asserts the results agree.
pub fn assert_same_on_views<P: Primitive<f64> + ?Sized>(p: &P, inputs: &[&Array2<f64>], seed: u64) {
    let name = p.name();
    let contiguous: Vec<ArrayView2<'_, f64>> = inputs.iter().map(|x| x.view()).collect();
    let c = p.forward(&contiguous).unwrap();
    let mut rng = random::rng(seed);
    let cbar = random::randn::<f64>(c.nrows(), c.ncols(), &mut rng);
    let tangents: Vec<Array2<f64>> = inputs
        .iter()
        .map(|x| random::randn(x.nrows(), x.ncols(), &mut rng))
        .collect();
    let before: Vec<Array2<f64>> = inputs
        .iter()
        .map(|x| random::randn(x.nrows(), x.ncols(), &mut rng))
        .collect();
    let grads = p.backward(&contiguous, c.view(), cbar.view()).unwrap();
    let tv: Vec<ArrayView2<'_, f64>> = tangents.iter().map(|t| t.view()).collect();
    let cdot = p.jvp(&contiguous, c.view(), &tv).unwrap();

    for layout in LAYOUTS {
        let bases: Vec<Array2<f64>> = inputs.iter().map(|x| store(x, layout)).collect();
        let views: Vec<ArrayView2<'_, f64>> = bases.iter().map(|b| view(b, layout)).collect();
        for (v, x) in views.iter().zip(inputs) {
            assert_eq!(v, x, "the {layout:?} view must show the same matrix");
        }
        let c_v = p.forward(&views).unwrap();
        assert_close(c_v.view(), &c, &format!("{name} forward"), layout);

        let c_base = store(&c, layout);
        let cbar_base = store(&cbar, layout);
        let g_v = p
            .backward(&views, view(&c_base, layout), view(&cbar_base, layout))
            .unwrap();
        for (g, e) in g_v.iter().zip(&grads) {
            assert_close(g.view(), e, &format!("{name} backward"), layout);
        }

        let t_bases: Vec<Array2<f64>> = tangents.iter().map(|t| store(t, layout)).collect();
        let t_views: Vec<ArrayView2<'_, f64>> = t_bases.iter().map(|b| view(b, layout)).collect();
        let cdot_v = p.jvp(&views, view(&c_base, layout), &t_views).unwrap();
        assert_close(cdot_v.view(), &cdot, &format!("{name} jvp"), layout);

        let mut buf_bases: Vec<Array2<f64>> = before.iter().map(|b| store(b, layout)).collect();
        {
            let mut bufs: Vec<Option<ArrayViewMut2<'_, f64>>> = buf_bases
                .iter_mut()
                .map(|b| Some(view_mut(b, layout)))
                .collect();
            p.backward_into(
                &views,
                view(&c_base, layout),
                view(&cbar_base, layout),
                &mut bufs,
            )
            .unwrap();
        }
        for ((buf, b), g) in buf_bases.iter().zip(&before).zip(&grads) {
            assert_close(
                view(buf, layout),
                &(b + g),
                &format!("{name} backward_into"),
                layout,
            );
        }
    }
}
