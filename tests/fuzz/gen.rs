//! Random inputs: shapes, value classes and memory layouts.

use matgrad::Real;
use ndarray::{s, Array2, ArrayView2, ArrayViewMut2};
use rand::rngs::StdRng;
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

/// A standard normal number.
pub fn normal(rng: &mut StdRng) -> f64 {
    StandardNormal.sample(rng)
}

/// `rows×cols` standard normal entries.
pub fn randn(rows: usize, cols: usize, rng: &mut StdRng) -> Array2<f64> {
    Array2::from_shape_simple_fn((rows, cols), || normal(rng))
}

/// A dimension: mostly small, sometimes 0 or 1, now and then large enough to reach
/// the blocked code paths.
pub fn dim(rng: &mut StdRng) -> usize {
    match rng.gen_range(0..100) {
        0..=4 => 0,
        5..=19 => 1,
        20..=84 => rng.gen_range(2..=6),
        85..=96 => rng.gen_range(7..=24),
        _ => rng.gen_range(25..=72),
    }
}

/// A dimension of at least one.
pub fn dim1(rng: &mut StdRng) -> usize {
    dim(rng).max(1)
}

/// What the entries of a matrix look like.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Values {
    /// As the primitive's generator made them (standard normal, positive definite, ...).
    Natural,
    /// Scaled down into the subnormal range of the precision.
    Subnormal,
    /// Scaled down to a little above the smallest normal number.
    Tiny,
    /// Scaled up close to the overflow threshold.
    Huge,
    /// Scaled by `1e±k` for a moderate `k`.
    Scaled,
    /// Small integers: exact ties, repeated values, singular matrices.
    Integers,
    /// All zero.
    Zeros,
    /// One or two entries replaced by NaN, `+∞` or `−∞`.
    NonFinite,
}

impl Values {
    /// Mostly natural values, the other classes a quarter of the time between them.
    pub fn random(rng: &mut StdRng) -> Values {
        match rng.gen_range(0..100) {
            0..=69 => Values::Natural,
            70..=73 => Values::Subnormal,
            74..=76 => Values::Tiny,
            77..=81 => Values::Huge,
            82..=86 => Values::Scaled,
            87..=91 => Values::Integers,
            92..=93 => Values::Zeros,
            _ => Values::NonFinite,
        }
    }
}

/// Applies a value class to natural values, in the range of the precision `T`.
pub fn apply_class<T: Real>(x: &mut Array2<f64>, class: Values, rng: &mut StdRng) {
    let max_abs = x.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let rescale = |x: &mut Array2<f64>, target: f64| {
        if max_abs > 0.0 && max_abs.is_finite() {
            let f = target / max_abs;
            x.mapv_inplace(|v| v * f);
        }
    };
    let tmin = T::min_positive_value().to64();
    let tmax = T::max_value().to64();
    match class {
        Values::Natural => {}
        Values::Subnormal => rescale(x, tmin * 2f64.powi(-rng.gen_range(1..12))),
        Values::Tiny => rescale(x, tmin * 2f64.powi(rng.gen_range(1..20))),
        Values::Huge => {
            let target = match rng.gen_range(0..4) {
                0 => tmax * 0.5,
                1 => tmax * 1e-3,
                2 => tmax.sqrt(),
                _ => tmax.sqrt() * 1e-2,
            };
            rescale(x, target);
        }
        Values::Scaled => {
            let e = rng.gen_range(-12..=12) as f64;
            x.mapv_inplace(|v| v * 10f64.powf(e));
        }
        Values::Integers => x.mapv_inplace(|v| (v * 1.5).round()),
        Values::Zeros => x.fill(0.0),
        Values::NonFinite => {
            if !x.is_empty() {
                for _ in 0..rng.gen_range(1..=2) {
                    let i = rng.gen_range(0..x.nrows());
                    let j = rng.gen_range(0..x.ncols());
                    x[(i, j)] = match rng.gen_range(0..3) {
                        0 => f64::NAN,
                        1 => f64::INFINITY,
                        _ => f64::NEG_INFINITY,
                    };
                }
            }
        }
    }
}

/// Rounds to `T`.
pub fn to_t<T: Real>(x: &Array2<f64>) -> Array2<T> {
    x.mapv(T::of)
}

/// Widens to `f64`.
pub fn to64<T: Real>(x: ArrayView2<'_, T>) -> Array2<f64> {
    x.mapv(T::to64)
}

/// How a matrix is laid out in memory behind its view.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Layout {
    /// Standard (row-major) layout.
    Contiguous,
    /// `.t()` of the stored transpose: column-major.
    Transposed,
    /// Every other row of a taller array.
    Stepped,
    /// Rows in reverse order.
    RowsReversed,
    /// Both axes reversed, the columns with a step too.
    BothReversed,
    /// A window inside a larger array (a leading dimension above the row length).
    Window,
    /// A zero-stride broadcast of one row (read-only views only; the matrix shown has
    /// equal rows).
    Broadcast,
}

impl Layout {
    /// A layout for a view; `read_only` allows a broadcast.
    pub fn random(rng: &mut StdRng, read_only: bool) -> Layout {
        match rng.gen_range(0..if read_only { 15 } else { 14 }) {
            0..=7 => Layout::Contiguous,
            8 => Layout::Transposed,
            9 => Layout::Stepped,
            10 => Layout::RowsReversed,
            11 => Layout::BothReversed,
            12 | 13 => Layout::Window,
            _ => Layout::Broadcast,
        }
    }
}

/// A layout for a read-only view of `x`: a broadcast only when `x`'s rows are equal.
pub fn layout_for<T: PartialEq>(x: &Array2<T>, rng: &mut StdRng) -> Layout {
    let equal_rows = x.nrows() > 0 && x.rows().into_iter().all(|r| r == x.row(0));
    Layout::random(rng, equal_rows)
}

/// Makes every row equal to the first (a matrix a zero-stride broadcast can show).
pub fn repeat_first_row(x: &mut Array2<f64>) {
    if x.nrows() > 1 {
        let first = x.row(0).to_owned();
        for mut r in x.rows_mut() {
            r.assign(&first);
        }
    }
}

/// A matrix stored in some layout, with NaN wherever the view does not look.
pub struct Stored<T> {
    base: Array2<T>,
    layout: Layout,
    shape: (usize, usize),
}

impl<T: Real> Stored<T> {
    /// Stores `x` so that [`Stored::view`] shows it (for a broadcast: its first row,
    /// or zeros when it has none, repeated).
    pub fn new(x: &Array2<T>, layout: Layout) -> Self {
        let (m, n) = x.dim();
        let nan = T::nan();
        let base = match layout {
            Layout::Contiguous => x.clone(),
            Layout::Transposed => x.t().as_standard_layout().into_owned(),
            Layout::Stepped => {
                let mut b = Array2::from_elem((2 * m, n), nan);
                b.slice_mut(s![..;2, ..]).assign(x);
                b
            }
            Layout::RowsReversed => x.slice(s![..;-1, ..]).as_standard_layout().into_owned(),
            Layout::BothReversed => {
                let mut b = Array2::from_elem((m, 2 * n), nan);
                b.slice_mut(s![..;-1, ..;-2]).assign(x);
                b
            }
            Layout::Window => {
                let mut b = Array2::from_elem((m + 2, n + 3), nan);
                b.slice_mut(s![1..m + 1, 2..n + 2]).assign(x);
                b
            }
            Layout::Broadcast => {
                if m > 0 {
                    x.slice(s![0..1, ..]).to_owned()
                } else {
                    Array2::zeros((1, n))
                }
            }
        };
        Stored {
            base,
            layout,
            shape: (m, n),
        }
    }

    /// NaN of this shape, in this layout (an output or gradient buffer).
    pub fn nan(shape: (usize, usize), layout: Layout) -> Self {
        Self::new(&Array2::from_elem(shape, T::nan()), layout)
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The matrix.
    pub fn view(&self) -> ArrayView2<'_, T> {
        let (m, n) = self.shape;
        match self.layout {
            Layout::Contiguous => self.base.view(),
            Layout::Transposed => self.base.t(),
            Layout::Stepped => self.base.slice(s![..;2, ..]),
            Layout::RowsReversed => self.base.slice(s![..;-1, ..]),
            Layout::BothReversed => self.base.slice(s![..;-1, ..;-2]),
            Layout::Window => self.base.slice(s![1..m + 1, 2..n + 2]),
            Layout::Broadcast => self
                .base
                .broadcast((m, n))
                .expect("a row broadcasts to any number of rows"),
        }
    }

    /// The matrix, mutable (not for a broadcast).
    pub fn view_mut(&mut self) -> ArrayViewMut2<'_, T> {
        let (m, n) = self.shape;
        match self.layout {
            Layout::Contiguous => self.base.view_mut(),
            Layout::Transposed => self.base.view_mut().reversed_axes(),
            Layout::Stepped => self.base.slice_mut(s![..;2, ..]),
            Layout::RowsReversed => self.base.slice_mut(s![..;-1, ..]),
            Layout::BothReversed => self.base.slice_mut(s![..;-1, ..;-2]),
            Layout::Window => self.base.slice_mut(s![1..m + 1, 2..n + 2]),
            Layout::Broadcast => panic!("a broadcast view is read-only"),
        }
    }
}

/// Whether every entry is finite.
pub fn finite(x: &Array2<f64>) -> bool {
    x.iter().all(|v| v.is_finite())
}
