//! Error models: how a method's backtested errors become quantile forecasts.

use serde::Serialize;

use super::methods::{Method, State, run_backtest};

/// How forecast errors scale: load errors often grow with the load (a busy hour errs by more
/// requests than a quiet one), so both an absolute and a relative error model are scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorKind {
    /// Quantile = point + Q_τ(y − ŷ).
    Absolute,
    /// Quantile = point + max(|ŷ|, floor) · Q_τ((y − ŷ) / max(|ŷ|, floor)).
    Relative,
    /// Errors scaled by √max(|ŷ|, floor): counts of independent requests (Poisson-like)
    /// have a spread that grows with the square root of the level.
    SquareRoot,
    /// Errors scaled by the recent volatility at the forecast origin: an exponentially
    /// weighted mean of |y_t − y_{t−1}| ([`VOLATILITY_WEIGHT`]). Load alternates between calm
    /// and bursty spells; this widens the band in a burst and narrows it in calm instead of
    /// pricing every step at the history's worst spells (filtered historical simulation).
    Volatility,
}

/// Weight of the newest change in the volatility estimate: RiskMetrics' decay of 0.94.
pub const VOLATILITY_WEIGHT: f64 = 0.06;

/// Recent volatility of a series, updated one observation at a time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Volatility {
    last: Option<f64>,
    ewma: f64,
}

impl Volatility {
    pub(super) fn new() -> Self {
        Self {
            last: None,
            ewma: 0.0,
        }
    }

    pub(super) fn observe(&mut self, y: f64) {
        if let Some(last) = self.last {
            self.ewma += VOLATILITY_WEIGHT * ((y - last).abs() - self.ewma);
        }
        self.last = Some(y);
    }

    pub(super) fn value(&self) -> f64 {
        self.ewma
    }

    /// The volatility after each point of `y`: out[t] has seen y[..=t].
    pub(super) fn path(y: &[f64]) -> Vec<f64> {
        let mut v = Self::new();
        y.iter()
            .map(|&x| {
                v.observe(x);
                v.value()
            })
            .collect()
    }
}

/// Backtested errors of one method under one [`ErrorKind`], sorted per horizon.
#[derive(Debug, Clone)]
pub(super) struct ErrorModel {
    pub(super) kind: ErrorKind,
    /// Smallest scale for relative errors (5 % of the mean level), so that near-zero
    /// forecasts do not blow them up.
    pub(super) floor: f64,
    pub(super) by_h: Vec<Vec<f64>>,
    pub(super) pooled: Vec<f64>,
}

impl ErrorModel {
    /// Sorts the samples, for quantiles at any τ.
    pub(super) fn new(kind: ErrorKind, floor: f64, mut by_h: Vec<Vec<f64>>) -> Self {
        for r in &mut by_h {
            r.sort_by(f64::total_cmp);
        }
        let mut pooled: Vec<f64> = by_h.iter().flatten().copied().collect();
        pooled.sort_by(f64::total_cmp);
        Self {
            kind,
            floor,
            by_h,
            pooled,
        }
    }

    /// Keeps only the quantiles `taus` of each horizon's sample (by selection, no sort): a
    /// cheap model for scoring at fixed quantiles. Query it with the index of τ in `taus`
    /// through [`ErrorModel::quantile_at`].
    pub(super) fn at_quantiles(
        kind: ErrorKind,
        floor: f64,
        mut by_h: Vec<Vec<f64>>,
        taus: &[f64],
    ) -> Self {
        let mut pooled: Vec<f64> = by_h.iter().flatten().copied().collect();
        let pick = |sample: &mut [f64]| -> Vec<f64> {
            taus.iter().map(|&t| select_quantile(sample, t)).collect()
        };
        let pooled_q = pick(&mut pooled);
        let by_h = by_h
            .iter_mut()
            .map(|r| {
                if r.len() >= 20 {
                    pick(r)
                } else {
                    pooled_q.clone()
                }
            })
            .collect();
        Self {
            kind,
            floor,
            by_h,
            pooled: pooled_q,
        }
    }

    /// The forecast at the `j`-th τ of a model made by [`ErrorModel::at_quantiles`].
    pub(super) fn quantile_at(&self, point: f64, vol: f64, h: usize, j: usize) -> f64 {
        let i = h.min(self.by_h.len()).saturating_sub(1);
        let q = self
            .by_h
            .get(i)
            .unwrap_or(&self.pooled)
            .get(j)
            .copied()
            .unwrap_or(0.0);
        (point + self.scale(point, vol) * q).max(0.0)
    }

    /// The error scale around `point` when the volatility at the origin is `vol`.
    pub(super) fn scale(&self, point: f64, vol: f64) -> f64 {
        match self.kind {
            ErrorKind::Absolute => 1.0,
            ErrorKind::Relative => point.abs().max(self.floor),
            ErrorKind::SquareRoot => point.abs().max(self.floor).sqrt(),
            // A fifth of the level floor: calm spells may be calmer than 5 % of the mean.
            ErrorKind::Volatility => vol.max(0.2 * self.floor),
        }
    }

    /// The τ-quantile forecast for horizon h (1-based) around `point`, clamped at zero.
    pub(super) fn quantile(&self, point: f64, vol: f64, h: usize, tau: f64) -> f64 {
        // A horizon's own sample when large enough, otherwise all horizons pooled.
        let i = h.min(self.by_h.len()).saturating_sub(1);
        let sample = match self.by_h.get(i) {
            Some(r) if r.len() >= 20 => r,
            _ => &self.pooled,
        };
        (point + self.scale(point, vol) * empirical_quantile(sample, tau)).max(0.0)
    }
}

/// The floor of relative errors for a series.
fn relative_floor(y: &[f64]) -> f64 {
    let mean = y.iter().map(|v| v.abs()).sum::<f64>() / y.len().max(1) as f64;
    (0.05 * mean).max(1e-9)
}

/// Every error model, in scoring order.
pub(super) const ERROR_KINDS: [ErrorKind; 4] = [
    ErrorKind::Absolute,
    ErrorKind::Relative,
    ErrorKind::SquareRoot,
    ErrorKind::Volatility,
];

/// Backtests `method` on `y[..to]` and returns one error model per kind in `kinds`, plus the
/// state after all of `y`. With `taus`, the models keep only those quantiles (for scoring);
/// without, the full sorted samples.
pub(super) fn collect_errors(
    method: Method,
    y: &[f64],
    to: usize,
    horizon: usize,
    budget: usize,
    kinds: &[ErrorKind],
    taus: Option<&[f64]>,
) -> (Vec<ErrorModel>, Option<State>) {
    let floor = relative_floor(&y[..to]);
    let shells: Vec<ErrorModel> = kinds
        .iter()
        .map(|&kind| ErrorModel {
            kind,
            floor,
            by_h: Vec::new(),
            pooled: Vec::new(),
        })
        .collect();
    let mut samples = vec![vec![Vec::new(); horizon]; kinds.len()];
    let vol = Volatility::path(&y[..to]);
    let state = run_backtest(method, y, 0, to, horizon, budget, |origin, pts| {
        for (i, &p) in pts.iter().enumerate() {
            if origin + 1 + i < to {
                let e = y[origin + 1 + i] - p;
                for (m, s) in shells.iter().zip(&mut samples) {
                    s[i].push(e / m.scale(p, vol[origin]));
                }
            }
        }
    });
    let models = kinds
        .iter()
        .zip(samples)
        .map(|(&kind, s)| match taus {
            Some(t) => ErrorModel::at_quantiles(kind, floor, s, t),
            None => ErrorModel::new(kind, floor, s),
        })
        .collect();
    (models, state)
}

/// The `tau`-quantile of an unsorted sample by selection (same interpolation as
/// [`empirical_quantile`]); reorders the sample.
fn select_quantile(sample: &mut [f64], tau: f64) -> f64 {
    if sample.is_empty() {
        return 0.0;
    }
    let pos = tau * (sample.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let (_, &mut a, rest) = sample.select_nth_unstable_by(lo, f64::total_cmp);
    let frac = pos - lo as f64;
    if frac == 0.0 || rest.is_empty() {
        return a;
    }
    let b = rest.iter().copied().fold(f64::INFINITY, f64::min);
    a + (b - a) * frac
}

/// The empirical `tau`-quantile of a sorted sample (linear interpolation).
fn empirical_quantile(sorted: &[f64], tau: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let pos = tau * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}
