//! Cholesky: both gradient conventions pass the checker with every reverse-pass
//! algorithm in both precisions; the three algorithms agree, and the production scalar
//! loop agrees with the naive module's independent copy; failures are typed errors at
//! the right index; any view of `A` gives the same `L`; the blocked reverse pass
//! allocates nothing of the order of its input.

use matgrad::check::{check_precision, random, Checker};
use matgrad::naive;
use matgrad::ops::cholesky::{backward_blocked, backward_symbolic, cholesky};
use matgrad::prelude::*;
use ndarray::{s, Array2, ArrayView2, ArrayViewMut2};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

const CONVENTIONS: [Convention; 2] = [Convention::Symmetric, Convention::Lower];
const METHODS: [Method; 6] = [
    Method::Auto,
    Method::Recursive,
    Method::Blocked { block: 16 },
    Method::Blocked { block: 7 },
    Method::Symbolic,
    Method::Unblocked,
];
const SIZES: [usize; 5] = [1, 2, 5, 17, 70];

/// A positive definite matrix in the lower triangle, with unrelated numbers above the
/// diagonal: the factorisation must never read them. They are kept within the range of
/// the entries below the diagonal because the checker scales its step by the largest one.
fn spd_with_junk<T: Real>(n: usize, seed: u64) -> Array2<T> {
    let mut rng = random::rng(seed);
    let mut a = random::spd::<T>(n, &mut rng);
    let junk = random::uniform::<T>(n, n, -1.0, 1.0, &mut rng).unwrap();
    for i in 0..n {
        for j in i + 1..n {
            a[(i, j)] = junk[(i, j)];
        }
    }
    a
}

fn rel(a: ArrayView2<'_, f64>, b: ArrayView2<'_, f64>) -> f64 {
    let diff = (&a - &b).mapv(|x| x * x).sum().sqrt();
    diff / b.mapv(|x| x * x).sum().sqrt().max(f64::MIN_POSITIVE)
}

macro_rules! checker_tests {
    ($name:ident, $t:ty, $tol:expr) => {
        #[test]
        fn $name() {
            for conv in CONVENTIONS {
                for method in METHODS {
                    let op = Cholesky::new().convention(conv).method(method);
                    for (seed, n) in SIZES.into_iter().enumerate() {
                        let a = spd_with_junk::<$t>(n, seed as u64);
                        let report = Checker::new().tol($tol).check(&op, &[a.view()]).unwrap();
                        assert!(report.passed(), "{conv:?} {method:?} n = {n}\n{report}");
                    }
                }
            }
        }
    };
}

checker_tests!(checker_passes_every_convention_and_method_f64, f64, 1e-7);
checker_tests!(checker_passes_every_convention_and_method_f32, f32, 2e-2);

#[test]
fn f32_agrees_with_f64() {
    for conv in CONVENTIONS {
        for n in [5, 40] {
            let a = spd_with_junk::<f64>(n, 3);
            let op = Cholesky::new()
                .convention(conv)
                .method(Method::Blocked { block: 16 });
            check_precision(&op, &[a.view()]).unwrap().assert_passed();
        }
    }
}

/// A finite-difference check that perturbs every entry of `A` on its own measures the
/// derivative with respect to the entries this forward pass happens to read, the lower
/// triangle: it reproduces the lower-triangle convention and rejects the symmetric one,
/// whose upper triangle is not zero (the disagreement of PyTorch issue 18825). A wrapper
/// that declares `A` general makes the checker do exactly that.
#[test]
fn full_matrix_finite_differences_see_only_the_lower_triangle() {
    /// The same rule with `A` declared [`Structure::General`] (the default).
    struct General(Cholesky);
    impl Rule<f64> for General {
        fn name(&self) -> &'static str {
            "Cholesky as general"
        }
        fn arity(&self) -> usize {
            1
        }
        fn shapes(&self, x: &[Shape]) -> Result<Shapes, Error> {
            Rule::<f64>::shapes(&self.0, x)
        }
        fn saves(&self, wanted: &[bool]) -> Saves {
            Rule::<f64>::saves(&self.0, wanted)
        }
        fn workspace(&self, x: &[Shape]) -> usize {
            Rule::<f64>::workspace(&self.0, x)
        }
        fn eval(
            &self,
            x: &[ArrayView2<'_, f64>],
            y: &mut [ArrayViewMut2<'_, f64>],
            ws: &mut [f64],
        ) -> Result<(), Error> {
            self.0.eval(x, y, ws)
        }
        fn pullback(
            &self,
            x: &[ArrayView2<'_, f64>],
            y: &[ArrayView2<'_, f64>],
            ybar: &Partials<'_, '_, f64>,
            grads: &mut [Grad<'_, f64>],
            ws: &mut [f64],
        ) -> Result<(), Error> {
            self.0.pullback(x, y, ybar, grads, ws)
        }
        fn pushforward(
            &self,
            x: &[ArrayView2<'_, f64>],
            y: &[ArrayView2<'_, f64>],
            xdot: &Partials<'_, '_, f64>,
            ydot: &mut [ArrayViewMut2<'_, f64>],
            ws: &mut [f64],
        ) -> Result<(), Error> {
            self.0.pushforward(x, y, xdot, ydot, ws)
        }
    }
    assert_eq!(
        Rule::<f64>::structure(&General(Cholesky::new()), 0),
        Structure::General
    );
    let a = spd_with_junk::<f64>(6, 8);
    let check = |conv| {
        Checker::new()
            .check(&General(Cholesky::new().convention(conv)), &[a.view()])
            .unwrap()
    };
    let symmetric = check(Convention::Symmetric);
    assert!(
        !symmetric.passed(),
        "the symmetric gradient must fail a full-matrix check\n{symmetric}"
    );
    assert!(symmetric.mistake(0).is_some(), "{symmetric}");
    check(Convention::Lower).assert_passed();
}

/// Below this order `Method::Auto` runs the production scalar loop.
const AUTO_UNBLOCKED_BELOW: usize = 40;

#[test]
fn symbolic_blocked_and_unblocked_agree_f64() {
    for (seed, n) in [1, 3, 16, 17, 50, 70, 130].into_iter().enumerate() {
        let a = spd_with_junk::<f64>(n, 100 + seed as u64);
        let l = cholesky(a.view()).unwrap();
        let lbar = random::randn::<f64>(n, n, &mut random::rng(200 + seed as u64));
        // The naive module's scalar loop: an implementation independent of the rule's.
        let lower = naive::cholesky::cholesky_backward(l.view(), lbar.view()).unwrap();
        assert!(lower.iter().all(|x| x.is_finite()));
        for conv in CONVENTIONS {
            let reference = backward_symbolic(l.view(), lbar.view(), conv).unwrap();
            let expected_from_naive = match conv {
                Convention::Lower => lower.clone(),
                Convention::Symmetric => {
                    let strict = naive::tril(lower.view(), -1);
                    (&strict + &strict.t()) * 0.5 + Array2::from_diag(&lower.diag())
                }
            };
            let e = rel(reference.view(), expected_from_naive.view());
            assert!(e < 1e-10, "{conv:?} n = {n}: symbolic vs naive {e:e}");
            for block in [1, 7, 16, 32, 64, 200] {
                let blocked = backward_blocked(l.view(), lbar.clone(), block, conv).unwrap();
                let e = rel(blocked.view(), reference.view());
                assert!(
                    e < 1e-10,
                    "{conv:?} n = {n} block {block}: blocked vs symbolic {e:e}"
                );
            }
            for method in METHODS {
                let op = Cholesky::new().convention(conv).method(method);
                let [abar] = op.apply([a.view()]).unwrap().backward(lbar.view()).unwrap();
                let e = rel(abar.view(), reference.view());
                assert!(
                    e < 1e-10,
                    "{conv:?} {method:?} n = {n}: primitive vs symbolic {e:e}"
                );
                // The production scalar loop (Unblocked, and Auto at small n) against
                // the naive copy: two implementations of the same loop.
                let scalar_loop = method == Method::Unblocked
                    || (method == Method::Auto && n < AUTO_UNBLOCKED_BELOW);
                if scalar_loop {
                    let e = rel(abar.view(), expected_from_naive.view());
                    assert!(
                        e < 1e-10,
                        "{conv:?} {method:?} n = {n}: production scalar loop vs naive {e:e}"
                    );
                }
            }
        }
    }
}

#[test]
fn conventions_differ_by_the_doubled_off_diagonal() {
    let n = 9;
    let a = spd_with_junk::<f64>(n, 21);
    let l = cholesky(a.view()).unwrap();
    let lbar = random::randn::<f64>(n, n, &mut random::rng(22));
    let sym = backward_symbolic(l.view(), lbar.view(), Convention::Symmetric).unwrap();
    let low = backward_symbolic(l.view(), lbar.view(), Convention::Lower).unwrap();
    assert_eq!(sym, sym.t());
    for i in 0..n {
        for j in 0..n {
            let expected = match i.cmp(&j) {
                std::cmp::Ordering::Greater => 2.0 * sym[(i, j)],
                std::cmp::Ordering::Equal => sym[(i, i)],
                std::cmp::Ordering::Less => 0.0,
            };
            assert!(
                (low[(i, j)] - expected).abs() <= 1e-12 * expected.abs().max(1.0),
                "({i}, {j})"
            );
        }
    }
}

#[test]
fn naive_forward_agrees_with_lapack() {
    for (seed, n) in [1, 2, 5, 17, 70].into_iter().enumerate() {
        let a = spd_with_junk::<f64>(n, 300 + seed as u64);
        let l = cholesky(a.view()).unwrap();
        let ln = naive::cholesky::cholesky(a.view()).unwrap();
        assert!(rel(ln.view(), l.view()) < 1e-13, "n = {n}");
        assert!(
            (0..n).all(|i| (i + 1..n).all(|j| l[(i, j)] == 0.0)),
            "strict upper of L is zero"
        );
        let llt = l.dot(&l.t());
        assert!(
            rel(
                naive::tril(llt.view(), 0).view(),
                naive::tril(a.view(), 0).view()
            ) < 1e-13
        );

        let a32 = a.mapv(|x| x as f32);
        let l32 = cholesky(a32.view()).unwrap();
        let ln32 = naive::cholesky::cholesky(a32.view()).unwrap();
        assert!(
            rel(l32.mapv(f64::from).view(), ln32.mapv(f64::from).view()) < 1e-5,
            "f32 n = {n}"
        );
    }
}

#[test]
fn not_positive_definite_names_the_failing_pivot() {
    let n = 5;
    let mut a = spd_with_junk::<f64>(n, 40);
    let l = cholesky(a.view()).unwrap();
    // Lowering A₂₂ by L₂₂² + 1 leaves the first two leading minors alone and makes the
    // third one negative: the pivot at index 2 becomes −1.
    a[(2, 2)] -= l[(2, 2)] * l[(2, 2)] + 1.0;
    let e = cholesky(a.view()).unwrap_err();
    assert_eq!(
        e,
        Error::NotPositiveDefinite {
            op: "Cholesky",
            index: 2
        }
    );
    assert_eq!(
        e.to_string(),
        "Cholesky: matrix is not positive definite, the leading minor of order 3 is not positive (pivot 2)"
    );
    assert!(matches!(
        naive::cholesky::cholesky(a.view()),
        Err(Error::NotPositiveDefinite { index: 2, .. })
    ));
    assert!(matches!(
        Cholesky::new().apply([a.mapv(|x| x as f32).view()]),
        Err(Error::NotPositiveDefinite {
            op: "Cholesky",
            index: 2
        })
    ));
}

#[test]
fn bad_inputs_are_typed_errors() {
    let a = random::randn::<f64>(3, 4, &mut random::rng(50));
    let e = cholesky(a.view()).unwrap_err();
    assert_eq!(
        e,
        Error::NotSquare {
            op: "Cholesky",
            name: "A",
            got: Shape(3, 4)
        }
    );
    assert_eq!(e.to_string(), "Cholesky: A must be square, got 3×4");
    assert!(matches!(
        naive::cholesky::cholesky(a.view()),
        Err(Error::NotSquare { .. })
    ));

    let mut a = spd_with_junk::<f64>(6, 51);
    a[(1, 4)] = f64::NAN; // above the diagonal: never read
    assert!(cholesky(a.view()).is_ok());
    a[(4, 0)] = f64::INFINITY;
    a[(3, 1)] = f64::NAN;
    let e = cholesky(a.view()).unwrap_err();
    assert_eq!(
        e,
        Error::NonFinite {
            op: "Cholesky",
            name: "A",
            row: 3,
            col: 1
        }
    );
    // In the transposed view those two are above the diagonal, and the NaN that was
    // ignored above is below it.
    assert_eq!(
        cholesky(a.t()).unwrap_err(),
        Error::NonFinite {
            op: "Cholesky",
            name: "A",
            row: 4,
            col: 1
        }
    );

    let a = spd_with_junk::<f64>(6, 52);
    let l = cholesky(a.view()).unwrap();
    let lbar = random::randn::<f64>(6, 5, &mut random::rng(53));
    assert!(matches!(
        backward_symbolic(l.view(), lbar.view(), Convention::Lower),
        Err(Error::WrongShape { op: "Cholesky", .. })
    ));
    assert!(matches!(
        backward_blocked(l.view(), lbar.clone(), 4, Convention::Lower),
        Err(Error::WrongShape { .. })
    ));
    let lbar = random::randn::<f64>(6, 6, &mut random::rng(54));
    assert!(matches!(
        backward_blocked(l.view(), lbar.clone(), 0, Convention::Lower),
        Err(Error::InvalidArgument { .. })
    ));
    let mut singular = l.clone();
    singular[(3, 3)] = 0.0;
    assert_eq!(
        backward_symbolic(singular.view(), lbar.view(), Convention::Symmetric).unwrap_err(),
        Error::Singular {
            op: "Cholesky",
            index: 3
        }
    );
    let op = Cholesky::new();
    let out = op.apply([a.view()]).unwrap();
    let err = out.backward(lbar.slice(s![..5, ..])).unwrap_err();
    assert!(
        matches!(
            err,
            Error::WrongShape {
                op: "Cholesky(symmetric)",
                name: "cotangent",
                expected: Shape(6, 6),
                got: Shape(5, 6),
                ..
            }
        ),
        "{err}"
    );
    let err = out.jvp([lbar.slice(s![.., ..4])]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::WrongShape {
                name: "tangent",
                expected: Shape(6, 6),
                got: Shape(6, 4),
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn every_view_of_a_gives_the_same_factor() {
    let n = 13;
    let a = spd_with_junk::<f64>(n, 60);
    let l = cholesky(a.view()).unwrap();

    // `to_owned` would keep the transposed view's column-major order; force row-major.
    let stored_transposed = a.t().as_standard_layout().into_owned();
    assert_eq!(stored_transposed.t().strides(), &[1, n as isize]);
    assert_eq!(cholesky(stored_transposed.t()).unwrap(), l);

    let mut big = Array2::<f64>::from_elem((2 * n, 3 * n), f64::NAN);
    big.slice_mut(s![..;2, ..;3]).assign(&a);
    assert_eq!(cholesky(big.slice(s![..;2, ..;3])).unwrap(), l);

    let mut reversed = Array2::<f64>::zeros((n, n));
    reversed.slice_mut(s![..;-1, ..;-1]).assign(&a);
    assert_eq!(cholesky(reversed.slice(s![..;-1, ..;-1])).unwrap(), l);
    assert_eq!(
        naive::cholesky::cholesky(reversed.slice(s![..;-1, ..;-1])).unwrap(),
        naive::cholesky::cholesky(a.view()).unwrap()
    );
}

#[test]
fn every_view_of_l_and_lbar_gives_the_same_gradient() {
    let n = 37;
    let a = spd_with_junk::<f64>(n, 61);
    let l = cholesky(a.view()).unwrap();
    let lbar = random::randn::<f64>(n, n, &mut random::rng(62));
    let l_t = l.t().as_standard_layout().into_owned();
    let mut l_rev = Array2::<f64>::zeros((n, n));
    l_rev.slice_mut(s![..;-1, ..]).assign(&l);
    let mut lbar_big = Array2::<f64>::zeros((2 * n, 2 * n));
    lbar_big.slice_mut(s![..;2, ..;2]).assign(&lbar);
    let mut lbar_rev = Array2::<f64>::zeros((n, n));
    lbar_rev.slice_mut(s![..;-1, ..;-1]).assign(&lbar);
    for conv in CONVENTIONS {
        let expected = backward_symbolic(l.view(), lbar.view(), conv).unwrap();
        let views = [
            (l_t.t(), lbar_big.slice(s![..;2, ..;2])),
            (l_rev.slice(s![..;-1, ..]), lbar_rev.slice(s![..;-1, ..;-1])),
            (l.view(), lbar.t().reversed_axes()),
        ];
        for (lv, lbv) in views {
            assert!(
                rel(
                    backward_symbolic(lv, lbv, conv).unwrap().view(),
                    expected.view()
                ) < 1e-13
            );
            let blocked = backward_blocked(lv, lbv.to_owned(), 8, conv).unwrap();
            assert!(rel(blocked.view(), expected.view()) < 1e-12);
            let naive_lower = naive::cholesky::cholesky_backward(lv, lbv).unwrap();
            let naive_expected =
                backward_symbolic(l.view(), lbar.view(), Convention::Lower).unwrap();
            assert!(rel(naive_lower.view(), naive_expected.view()) < 1e-10);
        }
        // An owned L̄ whose strides BLAS cannot use (reversed rows) is copied once, not misread.
        let mut lbar_owned_rev = lbar_rev.clone();
        lbar_owned_rev.invert_axis(ndarray::Axis(0));
        lbar_owned_rev.invert_axis(ndarray::Axis(1));
        assert_eq!(lbar_owned_rev, lbar);
        let blocked = backward_blocked(l.view(), lbar_owned_rev, 8, conv).unwrap();
        assert!(rel(blocked.view(), expected.view()) < 1e-12);
    }
}

#[test]
fn jvp_reads_the_tangent_as_the_convention_says() {
    let n = 8;
    let a = spd_with_junk::<f64>(n, 70);
    let adot = random::randn::<f64>(n, n, &mut random::rng(71));
    let lower_sym = {
        let strict = naive::tril(adot.view(), -1);
        &strict + &strict.t() + Array2::from_diag(&adot.diag())
    };
    let sym = (&adot + &adot.t()) * 0.5;
    let out_lower = Cholesky::new()
        .convention(Convention::Lower)
        .apply([a.view()])
        .unwrap();
    let out_sym = Cholesky::new().apply([a.view()]).unwrap();
    let expected_lower = out_sym.jvp([lower_sym.view()]).unwrap();
    assert!(
        rel(
            out_lower.jvp([adot.view()]).unwrap().view(),
            expected_lower.view()
        ) < 1e-13
    );
    assert!(
        rel(
            out_sym.jvp([adot.view()]).unwrap().view(),
            out_sym.jvp([sym.view()]).unwrap().view()
        ) < 1e-13
    );
    let ldot = out_sym.jvp([sym.view()]).unwrap();
    assert!((0..n).all(|i| (i + 1..n).all(|j| ldot[(i, j)] == 0.0)));
}

#[test]
fn backward_add_adds_to_what_the_buffer_holds() {
    let n = 20;
    let a = spd_with_junk::<f64>(n, 80);
    let lbar = random::randn::<f64>(n, n, &mut random::rng(81));
    let start = random::randn::<f64>(n, n, &mut random::rng(82));
    for conv in CONVENTIONS {
        for method in METHODS {
            let out = Cholesky::new()
                .convention(conv)
                .method(method)
                .apply([a.view()])
                .unwrap();
            let [g] = out.backward(lbar.view()).unwrap();
            // A column-major buffer: the accumulation must follow its indices, not its memory.
            let mut buf = start.t().to_owned();
            out.backward_add(lbar.view(), &mut [Some(buf.view_mut())])
                .unwrap();
            let expected = &start.t() + &g;
            assert!(
                rel(buf.view(), expected.view()) < 1e-14,
                "{conv:?} {method:?}"
            );
        }
    }
}

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
    static TOTAL: Cell<usize> = const { Cell::new(0) };
}

/// Records, on the thread that asked for it, the largest and the total allocation.
struct Counting;

fn note(size: usize) {
    let _ = TRACKING.try_with(|t| {
        if t.get() {
            LARGEST.with(|m| m.set(m.get().max(size)));
            TOTAL.with(|m| m.set(m.get() + size));
        }
    });
}

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// `(largest, total)` bytes allocated by `f` on this thread.
fn allocations<R>(f: impl FnOnce() -> R) -> ((usize, usize), R) {
    LARGEST.with(|m| m.set(0));
    TOTAL.with(|m| m.set(0));
    TRACKING.with(|t| t.set(true));
    let r = f();
    TRACKING.with(|t| t.set(false));
    ((LARGEST.with(Cell::get), TOTAL.with(Cell::get)), r)
}

#[test]
fn blocked_backward_allocates_nothing_of_the_order_of_its_input() {
    let n = 300;
    let matrix = n * n * std::mem::size_of::<f64>();
    let a = spd_with_junk::<f64>(n, 90);
    let l = cholesky(a.view()).unwrap();
    let lbar = random::randn::<f64>(n, n, &mut random::rng(91));
    let ((largest, _), symbolic) =
        allocations(|| backward_symbolic(l.view(), lbar.view(), Convention::Symmetric));
    assert!(
        largest >= matrix,
        "the counter sees the symbolic rule's n×n output ({largest} bytes)"
    );
    for conv in CONVENTIONS {
        for block in [16, 64, 100] {
            let input = lbar.clone();
            let ptr = input.as_ptr();
            let ((largest, total), blocked) =
                allocations(|| backward_blocked(l.view(), input, block, conv));
            let blocked = blocked.unwrap();
            assert_eq!(blocked.as_ptr(), ptr, "the result is the L̄ buffer itself");
            assert_eq!(
                total, 0,
                "block {block}: {total} bytes allocated, the largest {largest} (n×n is {matrix})"
            );
            if conv == Convention::Symmetric {
                assert!(rel(blocked.view(), symbolic.as_ref().unwrap().view()) < 1e-10);
            }
        }
    }
}

/// The default reverse pass writing into the caller's buffer with the caller's
/// workspace allocates nothing: the buffer is its own scratch, the inverted diagonal
/// blocks live on the stack. The first call on a thread is not counted: faer's
/// triangular products (the lower-triangle updates) keep their scratch per thread and
/// make it then.
#[test]
fn the_recursive_pass_into_a_caller_buffer_allocates_nothing() {
    let n = 300;
    let a = spd_with_junk::<f64>(n, 92);
    let l = cholesky(a.view()).unwrap();
    let lbar = random::randn::<f64>(n, n, &mut random::rng(93));
    for conv in CONVENTIONS {
        let op = Cholesky::new().convention(conv);
        let want = backward_symbolic(l.view(), lbar.view(), conv).unwrap();
        let mut ws = vec![f64::NAN; Rule::<f64>::workspace(&op, &[Shape(n, n)])];
        let mut g = Array2::from_elem((n, n), f64::NAN);
        let mut run = |g: ndarray::ArrayViewMut2<'_, f64>| {
            op.backward_into(
                &[a.view()],
                &[l.view()],
                &[Some(lbar.view())],
                &mut [Grad::Write(g)],
                Some(&mut ws),
            )
        };
        run(g.view_mut()).unwrap();
        g.fill(f64::NAN);
        let ((largest, total), done) = allocations(|| run(g.view_mut()));
        done.unwrap();
        assert_eq!(total, 0, "{conv:?}: {total} bytes, the largest {largest}");
        assert!(
            ws.iter().all(|x| x.is_nan()),
            "the workspace is not touched"
        );
        assert!(rel(g.view(), want.view()) < 1e-10);
    }
}

#[test]
fn the_empty_matrix_has_an_empty_factor_and_gradient() {
    let a = Array2::<f64>::zeros((0, 0));
    for conv in CONVENTIONS {
        for method in METHODS {
            let out = Cholesky::new()
                .convention(conv)
                .method(method)
                .apply([a.view()])
                .unwrap();
            assert_eq!(out.value().dim(), (0, 0));
            let [abar] = out.backward(a.view()).unwrap();
            assert_eq!(abar.dim(), (0, 0));
            assert_eq!(out.jvp([a.view()]).unwrap().dim(), (0, 0));
        }
    }
}

/// The level-3 wrappers the rules are built on, against ndarray's `dot`, with the
/// triangular operand stored transposed and the output reversed (not BLAS-addressable).
/// The rank-k update the old rules used (SYRK) is gone: the triangular-output product
/// `gemm_tri` took its place, and is checked here the same way.
#[test]
fn triangular_and_rank_k_wrappers_match_dense_products() {
    use matgrad::blas::{gemm_tri, trmm, trsm, Side, Tri, Uplo, GEMM_TRI_LEAF};
    let (m, n) = (5, 3);
    let mut rng = random::rng(95);
    let b = random::randn::<f64>(m, n, &mut rng);
    for side in [Side::Left, Side::Right] {
        let k = if side == Side::Left { m } else { n };
        for uplo in [Uplo::Lower, Uplo::Upper] {
            let mut t = random::lower::<f64>(k, &mut rng);
            if uplo == Uplo::Upper {
                t = t.t().to_owned();
            }
            let stored = t.t().as_standard_layout().into_owned();
            for ta in [Trans::No, Trans::Yes] {
                let op = if ta == Trans::Yes {
                    t.t().to_owned()
                } else {
                    t.clone()
                };
                let product = if side == Side::Left {
                    op.dot(&b)
                } else {
                    b.dot(&op)
                };
                let tri = Tri::new(stored.t(), uplo).op(ta);
                let mut out = Array2::<f64>::zeros((m, n));
                out.slice_mut(s![..;-1, ..]).assign(&b);
                let view = out.slice_mut(s![..;-1, ..]);
                trmm(view, side, tri, 2.0).unwrap();
                let got = out.slice(s![..;-1, ..]).to_owned();
                assert!(
                    rel(got.view(), (&product * 2.0).view()) < 1e-14,
                    "trmm {side:?} {uplo:?} {ta:?}"
                );
                let view = out.slice_mut(s![..;-1, ..]);
                trsm(view, side, tri, 0.5).unwrap();
                let got = out.slice(s![..;-1, ..]).to_owned();
                assert!(
                    rel(got.view(), b.view()) < 1e-13,
                    "trsm {side:?} {uplo:?} {ta:?}"
                );
            }
        }
    }
    let wrong = trsm(b.clone().view_mut(), Side::Left, Tri::lower(b.view()), 1.0);
    assert!(matches!(wrong, Err(Error::NotSquare { .. })), "{wrong:?}");

    // Orders of one diagonal block of gemm_tri and of several (`GEMM_TRI_LEAF`).
    for m in [m, 70, GEMM_TRI_LEAF + 30] {
        let b = random::randn::<f64>(m, n, &mut rng);
        let expected = b.dot(&b.t());
        for ta in [Trans::No, Trans::Yes] {
            let a = if ta == Trans::No {
                b.clone()
            } else {
                b.t().to_owned()
            };
            let lhs = ta.view(a.view());
            let rhs = lhs.t();
            for uplo in [Uplo::Lower, Uplo::Upper] {
                // The output is the transposed view: its `uplo` triangle is the other one of `c`.
                let written = |i: usize, j: usize| uplo.contains(j, i);
                let mut c = random::randn::<f64>(m, m, &mut rng);
                let before = c.clone();
                gemm_tri(
                    c.view_mut().reversed_axes(),
                    uplo,
                    Accum::Add,
                    lhs,
                    rhs,
                    1.0,
                )
                .unwrap();
                for i in 0..m {
                    for j in 0..m {
                        let want = if written(i, j) {
                            before[(i, j)] + expected[(j, i)]
                        } else {
                            before[(i, j)]
                        };
                        assert!(
                            (c[(i, j)] - want).abs() < 1e-13,
                            "gemm_tri add m = {m} {ta:?} {uplo:?} ({i}, {j})"
                        );
                    }
                }
                // A first write reads nothing: NaN in the buffer does not matter, and
                // the other triangle is zeroed.
                let mut c = Array2::<f64>::from_elem((m, m), f64::NAN);
                gemm_tri(
                    c.view_mut().reversed_axes(),
                    uplo,
                    Accum::Replace,
                    lhs,
                    rhs,
                    1.0,
                )
                .unwrap();
                for i in 0..m {
                    for j in 0..m {
                        let want = if written(i, j) { expected[(j, i)] } else { 0.0 };
                        assert!(
                            (c[(i, j)] - want).abs() < 1e-13,
                            "gemm_tri write m = {m} {ta:?} {uplo:?} ({i}, {j})"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn auto_agrees_with_symbolic_on_both_sides_of_its_size_thresholds() {
    // Auto switches from the scalar loop to the recursive pass at n = 40; 1030 halves
    // into every leaf the recursive pass has.
    for n in [39, 40, 1030] {
        let a = spd_with_junk::<f64>(n, 70 + n as u64);
        let l = cholesky(a.view()).unwrap();
        let mut rng = random::rng(n as u64);
        let lbar = random::randn::<f64>(n, n, &mut rng);
        for conv in [Convention::Symmetric, Convention::Lower] {
            let [auto] = Cholesky::new()
                .convention(conv)
                .apply([a.view()])
                .unwrap()
                .backward(lbar.view())
                .unwrap();
            let symbolic = backward_symbolic(l.view(), lbar.view(), conv).unwrap();
            assert!(
                rel(auto.view(), symbolic.view()) < 1e-10,
                "n = {n}, {conv:?}"
            );
        }
    }
}
