//! Seasonality detection: is there a daily or weekly period, and how strong is it?

use serde::Serialize;

use super::SEASONALITY_THRESHOLD;

/// A detected seasonal period.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Seasonality {
    None,
    Daily { steps: usize, strength: f64 },
    Weekly { steps: usize, strength: f64 },
}

impl Seasonality {
    /// The period in steps, if any.
    pub fn steps(&self) -> Option<usize> {
        match *self {
            Seasonality::None => None,
            Seasonality::Daily { steps, .. } | Seasonality::Weekly { steps, .. } => Some(steps),
        }
    }
}

/// Detects a daily or weekly season (see the module docs).
pub fn detect_seasonality(history: &[f64], step_seconds: u64) -> Seasonality {
    if step_seconds == 0 {
        return Seasonality::None;
    }
    let mut best = Seasonality::None;
    let mut best_strength = SEASONALITY_THRESHOLD;
    for (period, weekly) in [(86_400u64, false), (604_800, true)] {
        let m = (period as f64 / step_seconds as f64).round() as usize;
        let n = history.len();
        let strength = if m < 2 || n < m + (m / 4).max(8) {
            None
        } else if n < 2 * m + (m / 2).max(8) {
            linear_detrended_acf(history, m)
        } else {
            detrended_acf(history, m)
        };
        let Some(strength) = strength else {
            continue;
        };
        // A week also repeats every day's shape: prefer it only when clearly stronger.
        let margin = if weekly && best != Seasonality::None {
            0.05
        } else {
            0.0
        };
        if strength > best_strength + margin {
            best_strength = strength;
            best = if weekly {
                Seasonality::Weekly { steps: m, strength }
            } else {
                Seasonality::Daily { steps: m, strength }
            };
        }
    }
    best
}

/// Autocorrelation at lag `m` of the series minus its least-squares line.
fn linear_detrended_acf(y: &[f64], m: usize) -> Option<f64> {
    let n = y.len() as f64;
    let mean_x = (n - 1.0) / 2.0;
    let mean_y = y.iter().sum::<f64>() / n;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (i, v) in y.iter().enumerate() {
        let dx = i as f64 - mean_x;
        sxy += dx * (v - mean_y);
        sxx += dx * dx;
    }
    let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    let r: Vec<f64> = y
        .iter()
        .enumerate()
        .map(|(i, v)| v - mean_y - slope * (i as f64 - mean_x))
        .collect();
    lag_correlation(&r, m)
}

/// Autocorrelation at lag `m` of the series minus its centred moving average of width `m`.
fn detrended_acf(y: &[f64], m: usize) -> Option<f64> {
    let n = y.len();
    let half = m / 2;
    let mut prefix = Vec::with_capacity(n + 1);
    prefix.push(0.0);
    for v in y {
        prefix.push(prefix.last().unwrap_or(&0.0) + v);
    }
    // Residual r_i for i in [half, n − (m − half)).
    let lo = half;
    let hi = n.checked_sub(m - half)?;
    if hi <= lo + m {
        return None;
    }
    let r: Vec<f64> = (lo..hi)
        .map(|i| y[i] - (prefix[i - half + m] - prefix[i - half]) / m as f64)
        .collect();
    lag_correlation(&r, m)
}

/// Pearson correlation between r[i] and r[i + m].
fn lag_correlation(r: &[f64], m: usize) -> Option<f64> {
    if r.len() <= m + 1 {
        return None;
    }
    let (a, b) = (&r[..r.len() - m], &r[m..]);
    let k = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / k, b.iter().sum::<f64>() / k);
    let (mut cov, mut va, mut vb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        cov += (x - ma) * (y - mb);
        va += (x - ma) * (x - ma);
        vb += (y - mb) * (y - mb);
    }
    if va <= 1e-12 * k || vb <= 1e-12 * k {
        return None;
    }
    Some(cov / (va * vb).sqrt())
}
