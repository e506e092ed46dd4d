//! The BLAS-backed primitives against the scalar loops of `matgrad::naive`, forward
//! and backward, on random non-square data, in f64 and f32, for every transpose flag
//! and for operands and gradient buffers (accumulated into, or first-written) that are
//! transposed, step-sliced or negatively strided views.

use matgrad::check::random;
use matgrad::naive;
use matgrad::prelude::*;
use ndarray::{s, Array2, ArrayView2, ArrayViewMut2};

/// Largest entry-wise difference relative to the largest entry of `want`.
fn rel_err<T: Real>(got: ArrayView2<'_, T>, want: ArrayView2<'_, T>) -> f64 {
    assert_eq!(got.dim(), want.dim(), "shapes differ");
    let scale = want.iter().fold(1e-300_f64, |m, x| m.max(x.to64().abs()));
    let diff = got
        .iter()
        .zip(want.iter())
        .fold(0.0_f64, |m, (g, w)| m.max((g.to64() - w.to64()).abs()));
    diff / scale
}

fn assert_close<T: Real>(what: &str, got: ArrayView2<'_, T>, want: ArrayView2<'_, T>, tol: f64) {
    let e = rel_err(got, want);
    assert!(
        e <= tol,
        "{what} ({}): relative error {e:.3e} > {tol:.1e}",
        T::NAME
    );
}

/// The four ways the same logical operand can be laid out in memory.
#[derive(Clone, Copy, Debug)]
enum Layout {
    Contiguous,
    Transposed,
    Stepped,
    Reversed,
}

const LAYOUTS: [Layout; 4] = [
    Layout::Contiguous,
    Layout::Transposed,
    Layout::Stepped,
    Layout::Reversed,
];

/// Storage holding `x` so that `view` shows exactly `x` through the given layout.
struct Laid<T> {
    store: Array2<T>,
    layout: Layout,
}

impl<T: Real> Laid<T> {
    fn new(x: &Array2<T>, layout: Layout) -> Self {
        let (r, c) = x.dim();
        let store = match layout {
            Layout::Contiguous => x.clone(),
            Layout::Transposed => x.t().as_standard_layout().into_owned().reversed_axes(),
            Layout::Stepped => {
                let mut big = Array2::from_elem((2 * r, 3 * c), T::of(f64::NAN));
                big.slice_mut(s![..;2, ..;3]).assign(x);
                big
            }
            Layout::Reversed => x.slice(s![..;-1, ..]).to_owned(),
        };
        Laid { store, layout }
    }
    fn view(&self) -> ArrayView2<'_, T> {
        match self.layout {
            Layout::Contiguous | Layout::Transposed => self.store.view(),
            Layout::Stepped => self.store.slice(s![..;2, ..;3]),
            Layout::Reversed => self.store.slice(s![..;-1, ..]),
        }
    }
    fn view_mut(&mut self) -> ArrayViewMut2<'_, T> {
        match self.layout {
            Layout::Contiguous | Layout::Transposed => self.store.view_mut(),
            Layout::Stepped => self.store.slice_mut(s![..;2, ..;3]),
            Layout::Reversed => self.store.slice_mut(s![..;-1, ..]),
        }
    }
}

fn op_view<'v, T>(x: ArrayView2<'v, T>, t: Trans) -> ArrayView2<'v, T> {
    match t {
        Trans::No => x,
        Trans::Yes => x.reversed_axes(),
    }
}

fn flags() -> [(Trans, Trans); 4] {
    [
        (Trans::No, Trans::No),
        (Trans::Yes, Trans::No),
        (Trans::No, Trans::Yes),
        (Trans::Yes, Trans::Yes),
    ]
}

/// MatMul forward, backward and backward_into against the naive loops, for one
/// transpose pair and one pair of operand layouts.
fn matmul_case<T: Real>(
    ta: Trans,
    tb: Trans,
    la: Layout,
    lb: Layout,
    dims: (usize, usize, usize),
    seed: u64,
    tol: f64,
) {
    let (m, k, n) = dims;
    let mut rng = random::rng(seed);
    let (ar, ac) = ta.dims((m, k));
    let (br, bc) = tb.dims((k, n));
    let a = random::randn::<T>(ar, ac, &mut rng);
    let b = random::randn::<T>(br, bc, &mut rng);
    let cbar = random::randn::<T>(m, n, &mut rng);
    let (la_, lb_) = (Laid::new(&a, la), Laid::new(&b, lb));
    let (av, bv) = (la_.view(), lb_.view());
    assert_eq!((av, bv), (a.view(), b.view()));
    let what = format!("MatMul({ta:?},{tb:?}) A {la:?} B {lb:?}");

    let op = MatMul::new(ta, tb);
    let c = op.apply([av, bv]).unwrap();
    let (opa, opb) = (op_view(a.view(), ta), op_view(b.view(), tb));
    let want_c = naive::matmul_ijk(opa, opb).unwrap();
    assert_close(
        &format!("{what} forward vs ijk"),
        c.value().view(),
        want_c.view(),
        tol,
    );
    let want_c2 = naive::matmul_ikj(opa, opb).unwrap();
    assert_close(
        &format!("{what} ijk vs ikj"),
        want_c2.view(),
        want_c.view(),
        tol,
    );

    let [abar, bbar] = c.backward(cbar.view()).unwrap();
    let (g_opa, g_opb) = naive::matmul_backward(opa, opb, cbar.view()).unwrap();
    // The naive loop differentiates with respect to op(A); Ā is that gradient undone.
    let want_abar = op_view(g_opa.view(), ta).to_owned();
    let want_bbar = op_view(g_opb.view(), tb).to_owned();
    assert_close(&format!("{what} Ā"), abar.view(), want_abar.view(), tol);
    assert_close(&format!("{what} B̄"), bbar.view(), want_bbar.view(), tol);

    let mut acc_a = random::randn::<T>(a.nrows(), a.ncols(), &mut rng);
    let mut acc_b = random::randn::<T>(b.nrows(), b.ncols(), &mut rng);
    let (want_acc_a, want_acc_b) = (&acc_a + &want_abar, &acc_b + &want_bbar);
    c.backward_add(
        cbar.view(),
        &mut [Some(acc_a.view_mut()), Some(acc_b.view_mut())],
    )
    .unwrap();
    assert_close(
        &format!("{what} Ā accumulated"),
        acc_a.view(),
        want_acc_a.view(),
        tol,
    );
    assert_close(
        &format!("{what} B̄ accumulated"),
        acc_b.view(),
        want_acc_b.view(),
        tol,
    );

    // First writes into NaN-filled buffers laid out as the operands: never read.
    let nan = T::of(f64::NAN);
    let mut wa = Laid::new(&Array2::from_elem(a.raw_dim(), nan), la);
    let mut wb = Laid::new(&Array2::from_elem(b.raw_dim(), nan), lb);
    c.backward_into(
        &[Some(cbar.view())],
        &mut [Grad::Write(wa.view_mut()), Grad::Write(wb.view_mut())],
        None,
    )
    .unwrap();
    assert_close(
        &format!("{what} Ā first write"),
        wa.view(),
        want_abar.view(),
        tol,
    );
    assert_close(
        &format!("{what} B̄ first write"),
        wb.view(),
        want_bbar.view(),
        tol,
    );
}

fn matmul_all<T: Real>(tol: f64) {
    let mut seed = 100;
    for (ta, tb) in flags() {
        for la in LAYOUTS {
            for lb in LAYOUTS {
                seed += 1;
                matmul_case::<T>(ta, tb, la, lb, (5, 7, 3), seed, tol);
            }
        }
        // Large enough for OpenBLAS to take its blocked kernels and edge cases.
        matmul_case::<T>(
            ta,
            tb,
            Layout::Contiguous,
            Layout::Contiguous,
            (67, 131, 45),
            seed + 1000,
            tol,
        );
    }
}

fn structural_all<T: Real>(tol: f64) {
    // Below one 8×8 block of the transposing copy (`matgrad::blas::copy`); 70×45 and
    // 130×72 cross its 64×64 tiles with partial blocks at the edges; 64×64 and 128×256
    // have the power-of-two strides at which the blocks line up with the cache lines.
    structural_at::<T>(6, 4, tol);
    structural_at::<T>(70, 45, tol);
    structural_at::<T>(130, 72, tol);
    structural_at::<T>(64, 64, tol);
    structural_at::<T>(128, 256, tol);
}

fn structural_at<T: Real>(m: usize, n: usize, tol: f64) {
    let mut rng = random::rng(300 + m as u64);
    for (i, la) in LAYOUTS.into_iter().enumerate() {
        let a = random::randn::<T>(m, n, &mut rng);
        let b = random::randn::<T>(m, n, &mut rng);
        let (a_, b_) = (Laid::new(&a, la), Laid::new(&b, LAYOUTS[(i + 1) % 4]));
        let (av, bv) = (a_.view(), b_.view());
        let what = |p: &str| format!("{p} A {la:?}");

        let t = Transpose.apply([av]).unwrap();
        assert_close(
            &what("Transpose"),
            t.value().view(),
            naive::transpose(a.view()).view(),
            0.0,
        );
        let cbar = random::randn::<T>(n, m, &mut rng);
        let [got] = t.backward(cbar.view()).unwrap();
        let want = naive::transpose_backward(cbar.view());
        assert_close(&what("Transpose Ā"), got.view(), want.view(), 0.0);

        let c = Add.apply([av, bv]).unwrap();
        let want = naive::add(a.view(), b.view()).unwrap();
        assert_close(&what("Add"), c.value().view(), want.view(), tol);
        let cbar = random::randn::<T>(m, n, &mut rng);
        let [ga, gb] = c.backward(cbar.view()).unwrap();
        let (wa, wb) = naive::add_backward(cbar.view());
        assert_close(&what("Add Ā"), ga.view(), wa.view(), 0.0);
        assert_close(&what("Add B̄"), gb.view(), wb.view(), 0.0);

        for k in [-2, -1, 0, 1, 3] {
            let c = Tril { k }.apply([av]).unwrap();
            let what = |p: &str| format!("Tril(k={k}) {p} A {la:?}");
            assert_close(
                &what("forward"),
                c.value().view(),
                naive::tril(a.view(), k).view(),
                0.0,
            );
            let [got] = c.backward(cbar.view()).unwrap();
            let want = naive::tril_backward(cbar.view(), k);
            assert_close(&what("Ā"), got.view(), want.view(), 0.0);
        }

        let v = Vectorize.apply([av]).unwrap();
        assert_close(
            &what("Vec"),
            v.value().view(),
            naive::vec(a.view()).view(),
            0.0,
        );
        let cbar = random::randn::<T>(m * n, 1, &mut rng);
        let [got] = v.backward(cbar.view()).unwrap();
        let want = naive::vec_backward(cbar.view(), m, n).unwrap();
        assert_close(&what("Vec Ā"), got.view(), want.view(), 0.0);
    }
}

macro_rules! oracle {
    ($modname:ident, $t:ty, $tol:expr) => {
        mod $modname {
            use super::*;

            #[test]
            fn matmul_every_flag_and_layout_matches_the_loops() {
                matmul_all::<$t>($tol);
            }

            #[test]
            fn transpose_add_tril_vec_match_the_loops() {
                structural_all::<$t>($tol);
            }
        }
    };
}

oracle!(f64_, f64, 1e-12);
oracle!(f32_, f32, 1e-4);
