//! Scalar-loop linear algebra in `f64` for the references: no BLAS, no LAPACK, so it
//! shares no code with what it checks (products come from `matgrad::naive`).

use matgrad::naive;
use ndarray::{Array2, ArrayView2};

/// `AB` by the naive loop.
pub fn mm(a: ArrayView2<'_, f64>, b: ArrayView2<'_, f64>) -> Array2<f64> {
    naive::matmul_ikj(a, b).expect("the references multiply conforming matrices")
}

/// `|A||B|`: the scale of the rounding error of `AB`, entry by entry.
pub fn mm_abs(a: ArrayView2<'_, f64>, b: ArrayView2<'_, f64>) -> Array2<f64> {
    mm(a.mapv(f64::abs).view(), b.mapv(f64::abs).view())
}

pub fn eye(n: usize) -> Array2<f64> {
    Array2::eye(n)
}

/// Largest column sum of magnitudes.
pub fn norm1(a: &Array2<f64>) -> f64 {
    a.columns()
        .into_iter()
        .map(|c| c.iter().map(|v| v.abs()).sum::<f64>())
        .fold(0.0, f64::max)
}

pub fn max_abs(a: &Array2<f64>) -> f64 {
    a.iter().fold(0.0f64, |m, v| m.max(v.abs()))
}

pub fn fro(a: &Array2<f64>) -> f64 {
    let s = max_abs(a);
    if s == 0.0 || !s.is_finite() {
        return s;
    }
    s * a.iter().map(|v| (v / s) * (v / s)).sum::<f64>().sqrt()
}

/// `A = PLU` with partial pivoting: the factors packed, the row order, the sign of the
/// permutation, and whether a pivot was exactly zero.
pub struct Lu {
    pub lu: Array2<f64>,
    pub perm: Vec<usize>,
    pub sign: f64,
    pub singular: bool,
}

pub fn lu(a: &Array2<f64>) -> Lu {
    let n = a.nrows();
    let mut lu = a.clone();
    let mut perm: Vec<usize> = (0..n).collect();
    let mut sign = 1.0;
    let mut singular = false;
    for k in 0..n {
        let p = (k..n)
            .max_by(|&i, &j| lu[(i, k)].abs().total_cmp(&lu[(j, k)].abs()))
            .unwrap_or(k);
        if p != k {
            for j in 0..n {
                lu.swap((k, j), (p, j));
            }
            perm.swap(k, p);
            sign = -sign;
        }
        let d = lu[(k, k)];
        if d == 0.0 {
            singular = true;
            continue;
        }
        for i in k + 1..n {
            let f = lu[(i, k)] / d;
            lu[(i, k)] = f;
            for j in k + 1..n {
                lu[(i, j)] -= f * lu[(k, j)];
            }
        }
    }
    Lu {
        lu,
        perm,
        sign,
        singular,
    }
}

impl Lu {
    /// `A⁻¹B`, or `None` for an exactly singular factor.
    pub fn solve(&self, b: &Array2<f64>) -> Option<Array2<f64>> {
        if self.singular {
            return None;
        }
        let n = self.lu.nrows();
        let k = b.ncols();
        let mut x = Array2::zeros((n, k));
        for c in 0..k {
            let mut y = vec![0.0; n];
            for i in 0..n {
                let mut s = b[(self.perm[i], c)];
                for (j, yj) in y.iter().enumerate().take(i) {
                    s -= self.lu[(i, j)] * yj;
                }
                y[i] = s;
            }
            for i in (0..n).rev() {
                let mut s = y[i];
                for j in i + 1..n {
                    s -= self.lu[(i, j)] * x[(j, c)];
                }
                x[(i, c)] = s / self.lu[(i, i)];
            }
        }
        Some(x)
    }
    pub fn det(&self) -> f64 {
        (0..self.lu.nrows()).fold(self.sign, |d, i| d * self.lu[(i, i)])
    }
    /// `(sign det A, log|det A|)`.
    pub fn slogdet(&self) -> (f64, f64) {
        let mut s = self.sign;
        let mut l = 0.0;
        for i in 0..self.lu.nrows() {
            let d = self.lu[(i, i)];
            s *= d.signum();
            l += d.abs().ln();
        }
        (s, l)
    }
}

/// `A⁻¹`, or `None` when a pivot is exactly zero.
pub fn inverse(a: &Array2<f64>) -> Option<Array2<f64>> {
    lu(a).solve(&eye(a.nrows()))
}

/// `‖A‖₁‖A⁻¹‖₁`, infinite for a singular or non-finite `A`; 1 for `0×0`.
pub fn cond(a: &Array2<f64>) -> f64 {
    if a.is_empty() {
        return 1.0;
    }
    match inverse(a) {
        Some(inv) => {
            let c = norm1(a) * norm1(&inv);
            if c.is_finite() {
                c.max(1.0)
            } else {
                f64::INFINITY
            }
        }
        None => f64::INFINITY,
    }
}

/// `op(L)⁻¹B` (left) or `B·op(L)⁻¹` (right), reading only the `lower` (or upper)
/// triangle of `L`, by substitution; `None` for a zero on the diagonal.
pub fn tri_solve(
    l: &Array2<f64>,
    b: &Array2<f64>,
    left: bool,
    trans: bool,
    lower: bool,
) -> Option<Array2<f64>> {
    let n = l.nrows();
    if (0..n).any(|i| l[(i, i)] == 0.0) {
        return None;
    }
    // The triangle, then A = op(L) as a dense matrix.
    let mut t = Array2::zeros((n, n));
    for i in 0..n {
        for j in 0..n {
            if (lower && j <= i) || (!lower && j >= i) {
                t[(i, j)] = l[(i, j)];
            }
        }
    }
    let a = if trans { t.t().to_owned() } else { t };
    let a_lower = lower != trans;
    // Right solves X = B A⁻¹ are left solves Xᵀ = A⁻ᵀ Bᵀ.
    let (a, rhs, a_lower) = if left {
        (a, b.clone(), a_lower)
    } else {
        (a.t().to_owned(), b.t().to_owned(), !a_lower)
    };
    let k = rhs.ncols();
    let mut x = Array2::zeros((n, k));
    for c in 0..k {
        let order: Vec<usize> = if a_lower {
            (0..n).collect()
        } else {
            (0..n).rev().collect()
        };
        for &i in &order {
            let mut s = rhs[(i, c)];
            for j in 0..n {
                if j != i && ((a_lower && j < i) || (!a_lower && j > i)) {
                    s -= a[(i, j)] * x[(j, c)];
                }
            }
            x[(i, c)] = s / a[(i, i)];
        }
    }
    Some(if left { x } else { x.t().to_owned() })
}

/// The entry of largest magnitude (the first on ties) of column `j`, made positive by
/// flipping the column of `v` and, when given, of `w` with it.
fn fix_signs(v: &mut Array2<f64>, mut w: Option<&mut Array2<f64>>) {
    for j in 0..v.ncols() {
        let mut best = 0;
        for i in 0..v.nrows() {
            if v[(i, j)].abs() > v[(best, j)].abs() {
                best = i;
            }
        }
        if v.nrows() > 0 && v[(best, j)] < 0.0 {
            v.column_mut(j).mapv_inplace(|x| -x);
            if let Some(w) = w.as_deref_mut() {
                w.column_mut(j).mapv_inplace(|x| -x);
            }
        }
    }
}

/// How far the sign rule is from flipping: per column, the gap between the two largest
/// magnitudes, relative to the largest (1 for a single entry).
pub fn sign_margin(v: &Array2<f64>) -> f64 {
    let mut worst = 1.0f64;
    for c in v.columns() {
        let mut m: Vec<f64> = c.iter().map(|x| x.abs()).collect();
        m.sort_by(|a, b| b.total_cmp(a));
        if m.len() > 1 && m[0] > 0.0 {
            worst = worst.min((m[0] - m[1]) / m[0]);
        }
    }
    worst
}

/// `a / max|a|` and the scale, so that squares neither underflow nor overflow.
fn normalised(a: &Array2<f64>) -> (Array2<f64>, f64) {
    let s = max_abs(a);
    if s > 0.0 && s.is_finite() {
        (a.mapv(|v| v / s), s)
    } else {
        (a.clone(), 1.0)
    }
}

/// Symmetric eigendecomposition by cyclic Jacobi rotations: `λ` ascending, `V` with the
/// sign rule of `SymEig`.
pub fn eigh(a: &Array2<f64>) -> (Vec<f64>, Array2<f64>) {
    let (a, s) = normalised(a);
    let (l, v) = eigh_unscaled(&a);
    (l.into_iter().map(|x| x * s).collect(), v)
}

fn eigh_unscaled(a: &Array2<f64>) -> (Vec<f64>, Array2<f64>) {
    let n = a.nrows();
    let mut a = a.clone();
    let mut v = eye(n);
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[(i, j)] * a[(i, j)])
            .sum();
        let total: f64 = a.iter().map(|x| x * x).sum();
        if off <= 1e-32 * total || off == 0.0 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[(p, q)];
                if apq == 0.0 {
                    continue;
                }
                let theta = (a[(q, q)] - a[(p, p)]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let akp = a[(k, p)];
                    let akq = a[(k, q)];
                    a[(k, p)] = c * akp - s * akq;
                    a[(k, q)] = s * akp + c * akq;
                }
                for k in 0..n {
                    let apk = a[(p, k)];
                    let aqk = a[(q, k)];
                    a[(p, k)] = c * apk - s * aqk;
                    a[(q, k)] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let vkp = v[(k, p)];
                    let vkq = v[(k, q)];
                    v[(k, p)] = c * vkp - s * vkq;
                    v[(k, q)] = s * vkp + c * vkq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| a[(i, i)].total_cmp(&a[(j, j)]));
    let lambda: Vec<f64> = order.iter().map(|&i| a[(i, i)]).collect();
    let mut vs = Array2::zeros((n, n));
    for (dst, &src) in order.iter().enumerate() {
        vs.column_mut(dst).assign(&v.column(src));
    }
    fix_signs(&mut vs, None);
    (lambda, vs)
}

/// Thin SVD by one-sided Jacobi: `U` (`m×k`), `s` descending, `V` (`n×k`), signed as
/// `Svd` signs them. Columns of `U` for a zero singular value are zero.
pub fn svd(a: &Array2<f64>) -> (Array2<f64>, Vec<f64>, Array2<f64>) {
    let (a, scale) = normalised(a);
    let (u, s, v) = svd_unscaled(&a);
    (u, s.into_iter().map(|x| x * scale).collect(), v)
}

fn svd_unscaled(a: &Array2<f64>) -> (Array2<f64>, Vec<f64>, Array2<f64>) {
    let (m, n) = a.dim();
    if m < n {
        let (u, s, v) = svd_unscaled(&a.t().to_owned());
        let (mut u2, mut v2) = (v, u);
        fix_signs(&mut u2, Some(&mut v2));
        return (u2, s, v2);
    }
    // m ≥ n: orthogonalise the columns of W = AV.
    let mut w = a.clone();
    let mut v = eye(n);
    for _sweep in 0..100 {
        let mut rotated = false;
        for p in 0..n {
            for q in p + 1..n {
                let (mut alpha, mut beta, mut gamma) = (0.0, 0.0, 0.0);
                for i in 0..m {
                    alpha += w[(i, p)] * w[(i, p)];
                    beta += w[(i, q)] * w[(i, q)];
                    gamma += w[(i, p)] * w[(i, q)];
                }
                if gamma == 0.0 || gamma.abs() <= 1e-17 * (alpha * beta).sqrt() {
                    continue;
                }
                rotated = true;
                let zeta = (beta - alpha) / (2.0 * gamma);
                let t = zeta.signum() / (zeta.abs() + (1.0 + zeta * zeta).sqrt());
                let t = if zeta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (1.0 + t * t).sqrt();
                let s = c * t;
                for i in 0..m {
                    let x = w[(i, p)];
                    let y = w[(i, q)];
                    w[(i, p)] = c * x - s * y;
                    w[(i, q)] = s * x + c * y;
                }
                for i in 0..n {
                    let x = v[(i, p)];
                    let y = v[(i, q)];
                    v[(i, p)] = c * x - s * y;
                    v[(i, q)] = s * x + c * y;
                }
            }
        }
        if !rotated {
            break;
        }
    }
    let norms: Vec<f64> = (0..n)
        .map(|j| w.column(j).iter().map(|x| x * x).sum::<f64>().sqrt())
        .collect();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| norms[j].total_cmp(&norms[i]));
    let mut u = Array2::zeros((m, n));
    let mut vs = Array2::zeros((n, n));
    let mut s = Vec::with_capacity(n);
    for (dst, &src) in order.iter().enumerate() {
        let sj = norms[src];
        s.push(sj);
        if sj > 0.0 {
            for i in 0..m {
                u[(i, dst)] = w[(i, src)] / sj;
            }
        }
        vs.column_mut(dst).assign(&v.column(src));
    }
    fix_signs(&mut u, Some(&mut vs));
    (u, s, vs)
}

/// `exp(A)` by scaling, a Taylor series and squaring.
pub fn expm(a: &Array2<f64>) -> Array2<f64> {
    let n = a.nrows();
    let norm = norm1(a);
    if !(norm < 1e6) {
        // Far beyond the overflow of exp for any precision: no reference.
        return Array2::from_elem((n, n), f64::NAN);
    }
    let s = if norm > 0.25 {
        (norm / 0.25).log2().ceil() as i32
    } else {
        0
    };
    let x = a.mapv(|v| v * 2f64.powi(-s));
    let mut sum = eye(n);
    let mut term = eye(n);
    for k in 1..60 {
        term = mm(term.view(), x.view()).mapv(|v| v / k as f64);
        sum += &term;
        if max_abs(&term) <= 1e-18 * max_abs(&sum) {
            break;
        }
    }
    for _ in 0..s {
        sum = mm(sum.view(), sum.view());
    }
    sum
}

/// The lower triangle of `a` mirrored onto the upper: the symmetric matrix that
/// routines reading only the lower triangle see.
pub fn sym_from_lower(a: &Array2<f64>) -> Array2<f64> {
    let n = a.nrows();
    Array2::from_shape_fn((n, n), |(i, j)| if j <= i { a[(i, j)] } else { a[(j, i)] })
}

/// The lower triangle of `a`, zero above.
pub fn lower_part(a: &Array2<f64>) -> Array2<f64> {
    let (m, n) = a.dim();
    Array2::from_shape_fn((m, n), |(i, j)| if j <= i { a[(i, j)] } else { 0.0 })
}

/// The upper triangle of `a`, zero below.
pub fn upper_part(a: &Array2<f64>) -> Array2<f64> {
    let (m, n) = a.dim();
    Array2::from_shape_fn((m, n), |(i, j)| if j >= i { a[(i, j)] } else { 0.0 })
}
