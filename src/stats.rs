//! Small numerical helpers for the inspection commands.

/// The standard normal quantile (inverse CDF), Acklam's rational approximation
/// (relative error below 1.2e-9 over (0, 1)). `p` outside (0, 1) gives +-infinity or NaN.
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] =
        [-3.969683028665376e1, 2.209460984245205e2, -2.759285104469687e2, 1.38357751867269e2, -3.066479806614716e1, 2.506628277459239];
    const B: [f64; 5] = [-5.447609879822406e1, 1.615858368580409e2, -1.556989798598866e2, 6.680131188771972e1, -1.328068155288572e1];
    const C: [f64; 6] =
        [-7.784894002430293e-3, -3.223964580411365e-1, -2.400758277161838, -2.549732539343734, 4.374664141464968, 2.938163982698783];
    const D: [f64; 4] = [7.784695709041462e-3, 3.224671290700398e-1, 2.445134137142996, 3.754408661907416];
    const LOW: f64 = 0.02425;
    if p.is_nan() || !(0.0..=1.0).contains(&p) {
        return f64::NAN;
    }
    if p == 0.0 {
        return f64::NEG_INFINITY;
    }
    if p == 1.0 {
        return f64::INFINITY;
    }
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5]) / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < LOW {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - LOW {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

/// n evenly spaced values from a to b inclusive (NumPy's linspace).
pub fn linspace(a: f64, b: f64, n: usize) -> Vec<f64> {
    match n {
        0 => Vec::new(),
        1 => vec![a],
        _ => (0..n).map(|i| a + (b - a) * i as f64 / (n - 1) as f64).collect(),
    }
}

/// log(sum(exp(v))) without overflow.
pub fn logsumexp(v: &[f64]) -> f64 {
    let m = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !m.is_finite() {
        return m;
    }
    m + v.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
}

/// The mean and the first two principal directions (unit vectors, with the
/// standard deviation along each) of rows of `dim` values.
pub fn pca2(rows: &[f32], dim: usize) -> (Vec<f64>, [(Vec<f64>, f64); 2]) {
    let (mean, mut dirs) = pca(rows, dim, 2);
    let second = dirs.pop().expect("two directions");
    let first = dirs.pop().expect("two directions");
    (mean, [first, second])
}

/// The mean and the first `k` principal directions (unit vectors, each with the
/// standard deviation along it, largest first) of rows of `dim` values: power
/// iteration on the covariance, deflating after each direction.
pub fn pca(rows: &[f32], dim: usize, k: usize) -> (Vec<f64>, Vec<(Vec<f64>, f64)>) {
    let n = (rows.len() / dim).max(1);
    let mut mean = vec![0.0f64; dim];
    for r in rows.chunks_exact(dim) {
        for (m, &v) in mean.iter_mut().zip(r) {
            *m += v as f64 / n as f64;
        }
    }
    let mut cov = vec![0.0f64; dim * dim];
    for r in rows.chunks_exact(dim) {
        for i in 0..dim {
            let di = r[i] as f64 - mean[i];
            for j in 0..dim {
                cov[i * dim + j] += di * (r[j] as f64 - mean[j]) / n as f64;
            }
        }
    }
    let mut out: Vec<(Vec<f64>, f64)> = Vec::new();
    for d in 0..k.min(dim) {
        let mut v: Vec<f64> = (0..dim).map(|i| if i == d { 1.0 } else { 0.1 / (1.0 + i as f64) }).collect();
        let mut lambda = 0.0;
        for _ in 0..500 {
            let mut w: Vec<f64> = (0..dim).map(|i| (0..dim).map(|j| cov[i * dim + j] * v[j]).sum()).collect();
            let norm = w.iter().map(|x| x * x).sum::<f64>().sqrt();
            if norm == 0.0 {
                break;
            }
            w.iter_mut().for_each(|x| *x /= norm);
            lambda = norm;
            v = w;
        }
        for i in 0..dim {
            for j in 0..dim {
                cov[i * dim + j] -= lambda * v[i] * v[j];
            }
        }
        out.push((v, lambda.max(0.0).sqrt()));
    }
    (mean, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_match_known_values() {
        // Reference values of the standard normal quantile (to 9 digits).
        for (p, z) in [
            (0.5, 0.0),
            (0.975, 1.959963985),
            (0.05, -1.644853627),
            (0.95, 1.644853627),
            (0.999, 3.090232306),
            (1e-6, -4.753424309),
            (0.3, -0.524400513),
        ] {
            let got = normal_quantile(p);
            assert!((got - z).abs() < 1e-8 * z.abs().max(1.0), "quantile({p}) = {got}, expected {z}");
        }
        assert_eq!(normal_quantile(0.0), f64::NEG_INFINITY);
        assert!(normal_quantile(1.5).is_nan());
    }

    #[test]
    fn linspace_and_logsumexp() {
        // As NumPy: start + i * (stop - start) / (n - 1), so the middle is 0.5 less an ulp.
        let v = linspace(0.05, 0.95, 3);
        assert!(v.len() == 3 && v[0] == 0.05 && (v[1] - 0.5).abs() < 1e-15 && v[2] == 0.95, "{v:?}");
        assert!((logsumexp(&[1000.0, 1000.0]) - (1000.0 + 2f64.ln())).abs() < 1e-9);
    }

    #[test]
    fn pca_finds_the_long_axis() {
        let mut rows = Vec::new();
        for i in 0..200 {
            let t = (i as f32 - 100.0) / 10.0;
            rows.extend_from_slice(&[t, 0.5 * t + 0.01 * (i % 3) as f32, 1.0]);
        }
        let (mean, [(v1, s1), (_, s2)]) = pca2(&rows, 3);
        assert!(mean[2] > 0.99);
        assert!((v1[1] / v1[0] - 0.5).abs() < 0.01 && s1 > 10.0 * s2, "{v1:?} {s1} {s2}");
    }
}
