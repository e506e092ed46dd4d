//! Property tests: the rules hold at every shape, seed and offset proptest draws,
//! not only at the hand-picked ones.

use matgrad::check::{random, Checker};
use matgrad::prelude::*;
use ndarray::{Array2, Order};
use proptest::prelude::*;

fn flag(t: bool) -> Trans {
    if t {
        Trans::Yes
    } else {
        Trans::No
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn matmul_passes_the_checker_at_any_shape(
        m in 1usize..7, k in 1usize..7, n in 1usize..7, ta: bool, tb: bool, seed: u64,
    ) {
        let op = MatMul::new(flag(ta), flag(tb));
        let mut rng = random::rng(seed);
        let (ar, ac) = op.ta.dims((m, k));
        let (br, bc) = op.tb.dims((k, n));
        let a = random::randn::<f64>(ar, ac, &mut rng);
        let b = random::randn::<f64>(br, bc, &mut rng);
        let r = Checker::new().seed(seed).check(&op, &[a.view(), b.view()]).unwrap();
        prop_assert!(r.passed(), "{}", r);
    }

    #[test]
    fn masks_and_reshapes_pass_the_checker(
        m in 1usize..6, n in 1usize..6, k in -6isize..6, seed: u64,
    ) {
        let mut rng = random::rng(seed);
        let a = random::randn::<f64>(m, n, &mut rng);
        let prims: Vec<Box<dyn Rule<f64>>> = vec![
            Box::new(Tril::new(k)),
            Box::new(Triu::new(k)),
            Box::new(Transpose),
            Box::new(Vectorize),
            Box::new(Reshape::new(n, m, Order::RowMajor)),
            Box::new(Reshape::new(1, m * n, Order::ColumnMajor)),
        ];
        for p in &prims {
            let r = Checker::new().seed(seed).check(p, &[a.view()]).unwrap();
            prop_assert!(r.passed(), "{}", r);
        }
    }

    #[test]
    fn vec_then_unvec_is_the_identity(m in 1usize..8, n in 1usize..8, seed: u64) {
        let mut rng = random::rng(seed);
        let a: Array2<f64> = random::randn(m, n, &mut rng);
        let v = Vectorize.apply([a.view()]).unwrap();
        let back = Unvec::new(m, n).apply([v.value()]).unwrap();
        prop_assert_eq!(back.value().view(), a.view());
        // Column-major: consecutive entries of vec(A) walk down a column.
        prop_assert_eq!(v.value()[(1 % (m * n), 0)], if m > 1 { a[(1, 0)] } else if n > 1 { a[(0, 1)] } else { a[(0, 0)] });
    }
}
