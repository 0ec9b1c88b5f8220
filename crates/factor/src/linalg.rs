//! The small dense kernels the models need: dot products, symmetric solves (Cholesky) and a
//! conjugate-gradient step on `A x = b` with `A` given as a function. Row-major `k × k`.

#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent accumulators over exact chunks: no bounds checks, so the compiler
    // vectorises it, and the additions do not wait on each other.
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s = (acc[0] + acc[4]) + (acc[1] + acc[5]) + (acc[2] + acc[6]) + (acc[3] + acc[7]);
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// y += alpha · x
#[inline(always)]
pub fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    y.iter_mut().zip(x).for_each(|(y, x)| *y += alpha * x);
}

/// `XᵀX` of the rows of `x` (n × k, row-major), as f64 for a well-conditioned accumulation.
pub fn gram(x: &[f32], k: usize) -> Vec<f64> {
    let mut g = vec![0f64; k * k];
    for row in x.chunks_exact(k) {
        for a in 0..k {
            let ra = row[a] as f64;
            if ra == 0.0 {
                continue;
            }
            let ga = &mut g[a * k..(a + 1) * k];
            for b in a..k {
                ga[b] += ra * row[b] as f64;
            }
        }
    }
    for a in 0..k {
        for b in 0..a {
            g[a * k + b] = g[b * k + a];
        }
    }
    g
}

/// Solves `A x = b` for symmetric positive definite `A` (k × k, row-major) by Cholesky.
/// Returns `None` when `A` is not positive definite.
pub fn cholesky_solve(a: &[f64], b: &[f64], k: usize) -> Option<Vec<f64>> {
    let mut l = vec![0f64; k * k];
    for i in 0..k {
        for j in 0..=i {
            let mut s = a[i * k + j];
            for p in 0..j {
                s -= l[i * k + p] * l[j * k + p];
            }
            if i == j {
                if s <= 0.0 || !s.is_finite() {
                    return None;
                }
                l[i * k + i] = s.sqrt();
            } else {
                l[i * k + j] = s / l[j * k + j];
            }
        }
    }
    let mut y = vec![0f64; k];
    for i in 0..k {
        let mut s = b[i];
        for p in 0..i {
            s -= l[i * k + p] * y[p];
        }
        y[i] = s / l[i * k + i];
    }
    let mut x = vec![0f64; k];
    for i in (0..k).rev() {
        let mut s = y[i];
        for p in i + 1..k {
            s -= l[p * k + i] * x[p];
        }
        x[i] = s / l[i * k + i];
    }
    Some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cholesky_solves_a_known_system() {
        // A = [[4, 2], [2, 3]], b = [2, 1] → x = [0.5, 0].
        let x = cholesky_solve(&[4.0, 2.0, 2.0, 3.0], &[2.0, 1.0], 2).unwrap();
        assert!((x[0] - 0.5).abs() < 1e-12 && x[1].abs() < 1e-12);
        assert!(cholesky_solve(&[1.0, 2.0, 2.0, 1.0], &[1.0, 1.0], 2).is_none());
    }

    #[test]
    fn gram_and_dot() {
        let x = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(gram(&x, 2), vec![10.0, 14.0, 14.0, 20.0]);
        let a: Vec<f32> = (0..11).map(|i| i as f32).collect();
        assert_eq!(dot(&a, &a), (0..11).map(|i| (i * i) as f32).sum::<f32>());
    }
}

/// `out[i] = rows[i] · x` for the `k`-wide rows of `rows`: the scoring kernel of top-k. Uses
/// AVX2 and FMA when the CPU has them (chosen at run time, so one binary runs everywhere).
pub fn mat_vec(rows: &[f32], k: usize, x: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports the features the function is compiled for.
        unsafe { simd::mat_vec(rows, k, x, out) };
        return;
    }
    for (o, r) in out.iter_mut().zip(rows.chunks_exact(k)) {
        *o = dot(r, x);
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut i = 0;
        let mut s = 0f32;
        // SAFETY: every load reads 8 floats at offsets below `n`.
        unsafe {
            let mut acc0 = _mm256_setzero_ps();
            let mut acc1 = _mm256_setzero_ps();
            while i + 16 <= n {
                acc0 =
                    _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
                acc1 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(pa.add(i + 8)),
                    _mm256_loadu_ps(pb.add(i + 8)),
                    acc1,
                );
                i += 16;
            }
            while i + 8 <= n {
                acc0 =
                    _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
                i += 8;
            }
            let acc = _mm256_add_ps(acc0, acc1);
            let q = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
            let q = _mm_add_ps(q, _mm_movehl_ps(q, q));
            let q = _mm_add_ss(q, _mm_shuffle_ps(q, q, 0x55));
            s += _mm_cvtss_f32(q);
        }
        while i < n {
            s += a[i] * b[i];
            i += 1;
        }
        s
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn mat_vec(rows: &[f32], k: usize, x: &[f32], out: &mut [f32]) {
        for (o, r) in out.iter_mut().zip(rows.chunks_exact(k)) {
            // SAFETY: same features as this function.
            *o = unsafe { dot(r, x) };
        }
    }
}

#[cfg(test)]
mod mat_vec_tests {
    use super::*;

    #[test]
    fn matches_the_portable_dot() {
        for k in [1usize, 7, 8, 16, 33, 64, 100] {
            let rows: Vec<f32> = (0..5 * k).map(|i| ((i * 37) % 11) as f32 - 5.0).collect();
            let x: Vec<f32> = (0..k).map(|i| (i % 5) as f32 * 0.5).collect();
            let mut out = vec![0f32; 5];
            mat_vec(&rows, k, &x, &mut out);
            for (o, r) in out.iter().zip(rows.chunks_exact(k)) {
                assert!((o - dot(r, &x)).abs() < 1e-3, "k {k}");
            }
        }
    }
}
