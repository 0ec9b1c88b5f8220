//! Demand forecasts with calibrated quantiles, cheap enough to refit every hour of a replay.
//!
//! The planner needs "how much load might there be h steps from now, with probability τ", not a
//! single number, because the cost of too few replicas (missed SLO) and of too many (idle pods)
//! are not symmetric. The candidates are deliberately simple and fast (`methods`): the naive
//! and seasonal-naive rules, additive Holt–Winters with a damped trend (parameters by a grid
//! search on one-step error), seasonal drift (the last value plus the usual seasonal increment)
//! and a recent-peak rule for short or erratic history. Their quantiles come from their own
//! backtested h-step errors (`errors`: empirical quantiles of residuals, taken as absolute,
//! relative to the level, or relative to its square root), so a model that errs widely gets a
//! wide band instead of a false promise. Which candidate and error model win is decided by
//! pinball loss on a held-out tail of the history; the winner is refitted on all of it.
//!
//! Seasonality (a day or a week, `season`) is detected from the autocorrelation, at the lag
//! of one period, of the series minus its centred moving average over that period (minus a
//! straight line while the history is shorter than two and a half periods); a weak peak (below
//! [`SEASONALITY_THRESHOLD`]) means no seasonal model is tried. Detection may err on the side of
//! a season: seasonal candidates still have to win on the holdout.

mod errors;
mod methods;
mod season;

use serde::Serialize;
use thiserror::Error;

pub use errors::{ErrorKind, VOLATILITY_WEIGHT};
pub use season::{Seasonality, detect_seasonality};

use errors::{ERROR_KINDS, ErrorModel, Volatility, collect_errors};
use methods::{Method, State, grid_search, run_backtest};

/// Minimum detrended autocorrelation at the seasonal lag for a season to count as present.
pub const SEASONALITY_THRESHOLD: f64 = 0.3;

/// Below this many points there is nothing to backtest: only the recent peak is used.
pub const MIN_HISTORY: usize = 16;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum ForecastError {
    #[error("history is empty")]
    EmptyHistory,
    #[error("history value at index {index} is {value}, not a finite number")]
    BadValue { index: usize, value: f64 },
    #[error("step must be at least one second")]
    ZeroStep,
    #[error("quantile {0} is outside (0, 1)")]
    BadQuantile(f64),
}

/// Knobs of a fit; the defaults suit minute-level load series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FitOptions {
    /// Horizons (in steps) whose residuals are backtested; later horizons reuse the last one.
    pub max_horizon: usize,
    /// Quantiles whose mean pinball loss on the holdout picks the candidate.
    pub eval_quantiles: Vec<f64>,

    /// Fraction of the history held out to score candidates.
    pub holdout_fraction: f64,
    /// Cap on forecast-residual pairs per backtest (origins are thinned to fit), for speed.
    pub backtest_budget: usize,
}

impl Default for FitOptions {
    fn default() -> Self {
        Self {
            max_horizon: 30,
            eval_quantiles: vec![0.5, 0.9, 0.99],
            holdout_fraction: 0.2,
            backtest_budget: 24_000,
        }
    }
}

/// Pinball (quantile) loss of predicting `q` for the τ-quantile when `y` happened.
pub fn pinball(y: f64, q: f64, tau: f64) -> f64 {
    let d = y - q;
    if d >= 0.0 { tau * d } else { (tau - 1.0) * d }
}

/// Mean pinball loss over paired series.
pub fn mean_pinball(actual: &[f64], predicted: &[f64], tau: f64) -> f64 {
    let n = actual.len().min(predicted.len());
    if n == 0 {
        return 0.0;
    }
    (0..n)
        .map(|i| pinball(actual[i], predicted[i], tau))
        .sum::<f64>()
        / n as f64
}

/// Mean absolute percentage error as a fraction (0.05 = 5 %), over points whose actual is not
/// zero; `None` when every actual is zero.
pub fn mape(actual: &[f64], predicted: &[f64]) -> Option<f64> {
    let (sum, n) = actual
        .iter()
        .zip(predicted)
        .filter(|(a, _)| **a != 0.0)
        .fold((0.0, 0usize), |(s, n), (a, p)| {
            (s + ((a - p) / a).abs(), n + 1)
        });
    (n > 0).then(|| sum / n as f64)
}

/// One candidate's holdout score.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CandidateScore {
    pub method: String,
    pub errors: ErrorKind,
    /// Mean pinball loss over the evaluation quantiles on the holdout.
    pub pinball: f64,
    /// MAPE (fraction) of the one-step point forecast on the holdout, when defined.
    pub mape: Option<f64>,
}

/// A forecast: the point path and one path per requested quantile.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Forecast {
    pub method: String,
    pub point: Vec<f64>,
    pub quantiles: Vec<(f64, Vec<f64>)>,
}

impl Forecast {
    /// The path of quantile `tau`, if it was requested.
    pub fn quantile(&self, tau: f64) -> Option<&[f64]> {
        self.quantiles
            .iter()
            .find(|(q, _)| (q - tau).abs() < 1e-12)
            .map(|(_, v)| v.as_slice())
    }
}

/// Entry point for fitting; see [`FittedForecaster`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Forecaster;

impl Forecaster {
    /// Fits with [`FitOptions::default`].
    pub fn fit(history: &[f64], step_seconds: u64) -> Result<FittedForecaster, ForecastError> {
        Self::fit_with(history, step_seconds, &FitOptions::default())
    }

    /// Detects seasonality, scores every candidate on a holdout, and refits the winner on the
    /// whole history with residuals from all of it.
    pub fn fit_with(
        history: &[f64],
        step_seconds: u64,
        options: &FitOptions,
    ) -> Result<FittedForecaster, ForecastError> {
        if step_seconds == 0 {
            return Err(ForecastError::ZeroStep);
        }
        if history.is_empty() {
            return Err(ForecastError::EmptyHistory);
        }
        if let Some((index, &value)) = history.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(ForecastError::BadValue { index, value });
        }
        for &q in &options.eval_quantiles {
            check_quantile(q)?;
        }
        let y = history;
        let n = y.len();
        let horizon = options.max_horizon.max(1);
        let peak = Method::RecentPeak {
            window: ((3600.0 / step_seconds as f64).round() as usize).clamp(3, 120),
        };
        let seasonality = detect_seasonality(y, step_seconds);
        if n < MIN_HISTORY {
            return Ok(finish(
                peak,
                ErrorKind::Absolute,
                y,
                horizon,
                options,
                seasonality,
                Vec::new(),
            ));
        }

        let holdout = ((n as f64 * options.holdout_fraction) as usize).clamp(2, n / 2);
        let n_train = n - holdout;
        let train = &y[..n_train];
        let mut candidates = vec![Method::SeasonalNaive { m: 1 }, peak];
        // Each candidate needs its warm-up plus some residuals inside the training part.
        let room = |warm: usize| n_train >= warm + horizon.min(n_train / 4).max(4);
        if let Some(m) = seasonality.steps() {
            if room(m) {
                candidates.push(Method::SeasonalNaive { m });
            }
            if room(2 * m) {
                candidates.push(grid_search(train, m));
            }
            // Seasonal drift over one season, and over as many as fit (up to four).
            let reach = horizon.div_ceil(m);
            let drift = |k| Method::SeasonalDrift { m, k, reach };
            if let Some(k) = (1..=4).rev().find(|&k| room(drift(k).warmup())) {
                if k > 1 {
                    candidates.push(drift(1));
                }
                candidates.push(drift(k));
            }
        }
        if room(1) {
            candidates.push(grid_search(train, 1));
        }

        let mut scores = Vec::new();
        let mut best: Option<(f64, Method, ErrorKind)> = None;
        for method in candidates {
            for score in score_candidate(method, y, n_train, horizon, options) {
                if best.is_none_or(|(b, _, _)| score.pinball < b) {
                    best = Some((score.pinball, method, score.errors));
                }
                scores.push(score);
            }
        }
        let (chosen, errors) = match best {
            // Refit the winner's parameters on all the history.
            Some((_, Method::HoltWinters { m, .. }, e)) => (grid_search(y, m), e),
            Some((_, m, e)) => (m, e),
            None => (peak, ErrorKind::Absolute),
        };
        Ok(finish(
            chosen,
            errors,
            y,
            horizon,
            options,
            seasonality,
            scores,
        ))
    }
}

fn check_quantile(q: f64) -> Result<(), ForecastError> {
    if q > 0.0 && q < 1.0 {
        Ok(())
    } else {
        Err(ForecastError::BadQuantile(q))
    }
}

/// Scores `method` with each error model: errors from the training part, pinball loss of the
/// resulting quantiles on the holdout. One score per error kind.
fn score_candidate(
    method: Method,
    y: &[f64],
    n_train: usize,
    horizon: usize,
    options: &FitOptions,
) -> Vec<CandidateScore> {
    let (models, _) = collect_errors(
        method,
        &y[..n_train],
        n_train,
        horizon,
        options.backtest_budget,
        &ERROR_KINDS,
        Some(&options.eval_quantiles),
    );
    // Loss per error kind and horizon, averaged per horizon first (the last origins reach
    // fewer horizons).
    let mut loss = vec![vec![0.0; horizon]; models.len()];
    let mut count = vec![0usize; horizon];
    let (mut actual1, mut pred1) = (Vec::new(), Vec::new());
    let vol = Volatility::path(y);
    let ran = run_backtest(
        method,
        y,
        n_train - 1,
        y.len(),
        horizon,
        options.backtest_budget,
        |origin, pts| {
            for (i, &p) in pts.iter().enumerate() {
                let actual = y[origin + 1 + i];
                for (m, l) in models.iter().zip(&mut loss) {
                    for (j, &tau) in options.eval_quantiles.iter().enumerate() {
                        l[i] += pinball(actual, m.quantile_at(p, vol[origin], i + 1, j), tau);
                    }
                }
                count[i] += 1;
            }
            actual1.push(y[origin + 1]);
            pred1.push(pts[0]);
        },
    );
    let scored = count.iter().filter(|&&c| c > 0).count();
    if ran.is_none() || scored == 0 {
        return Vec::new();
    }
    let taus = options.eval_quantiles.len().max(1) as f64;
    let mape = mape(&actual1, &pred1);
    models
        .iter()
        .zip(loss)
        .map(|(m, l)| {
            let per_h: f64 = l
                .iter()
                .zip(&count)
                .filter(|(_, c)| **c > 0)
                .map(|(l, c)| l / (*c as f64 * taus))
                .sum();
            CandidateScore {
                method: method.name(),
                errors: m.kind,
                pinball: per_h / scored as f64,
                mape,
            }
        })
        .collect()
}

fn finish(
    method: Method,
    errors: ErrorKind,
    y: &[f64],
    horizon: usize,
    options: &FitOptions,
    seasonality: Seasonality,
    candidates: Vec<CandidateScore>,
) -> FittedForecaster {
    let (mut models, state) = collect_errors(
        method,
        y,
        y.len(),
        horizon,
        options.backtest_budget,
        &[errors],
        None,
    );
    let (method, state) = match state {
        Some(s) => (method, s),
        None => {
            // Too short for the chosen method: the recent peak needs one point.
            let peak = Method::RecentPeak { window: 3 };
            let mut s = peak.init(y);
            for &v in &y[1..] {
                s.observe(v);
            }
            (peak, s)
        }
    };
    let errors = models.pop().unwrap_or(ErrorModel {
        kind: errors,
        floor: 1.0,
        by_h: Vec::new(),
        pooled: Vec::new(),
    });
    let mut vol = Volatility::new();
    for &v in y {
        vol.observe(v);
    }
    FittedForecaster {
        method,
        state,
        errors,
        vol,
        seasonality,
        candidates,
    }
}

/// A fitted model: the chosen method's state after the history, and its backtested errors.
#[derive(Debug, Clone)]
pub struct FittedForecaster {
    method: Method,
    state: State,
    errors: ErrorModel,
    /// Recent volatility, for [`ErrorKind::Volatility`].
    vol: Volatility,
    seasonality: Seasonality,
    candidates: Vec<CandidateScore>,
}

impl FittedForecaster {
    /// The chosen method, with its parameters.
    pub fn method(&self) -> String {
        self.method.name()
    }

    /// Whether the quantiles scale errors with the level.
    pub fn error_kind(&self) -> ErrorKind {
        self.errors.kind
    }

    pub fn seasonality(&self) -> Seasonality {
        self.seasonality
    }

    /// Every candidate's holdout score (empty for a short history).
    pub fn candidates(&self) -> &[CandidateScore] {
        &self.candidates
    }

    /// Feeds one new observation without refitting parameters or residuals: O(1) for every
    /// method but the recent peak (O(window)). A non-finite value is ignored.
    pub fn observe(&mut self, y: f64) {
        if y.is_finite() {
            self.state.observe(y);
            self.vol.observe(y);
        }
    }

    /// Point forecast and the requested quantiles for steps 1..=horizon after the last
    /// observation. Quantile paths are clamped at zero (demand cannot be negative).
    pub fn forecast(&self, horizon: usize, quantiles: &[f64]) -> Result<Forecast, ForecastError> {
        for &q in quantiles {
            check_quantile(q)?;
        }
        let mut point = Vec::with_capacity(horizon);
        self.state.points(horizon, &mut point);
        let quantiles = quantiles
            .iter()
            .map(|&tau| {
                let path = point
                    .iter()
                    .enumerate()
                    .map(|(i, &p)| self.errors.quantile(p, self.vol.value(), i + 1, tau))
                    .collect();
                (tau, path)
            })
            .collect();
        Ok(Forecast {
            method: self.method.name(),
            point: point.iter().map(|p| p.max(0.0)).collect(),
            quantiles,
        })
    }
}

/// The demand a receding-horizon planner should provision for, from a forecast's point path
/// and its service-level quantile path, when capacity takes `lead` steps to arrive: the
/// quantile itself up to the lead time, then the point forecast plus the quantile's margin *at
/// the lead time*, not the ever-wider h-step quantile. Capacity for step k + h is committed
/// only `lead` steps before it, by a later re-plan that forecasts it as well as a lead-step
/// forecast; planning on h-step quantiles would hold capacity for uncertainty those re-plans
/// resolve.
pub fn planning_path(point: &[f64], high: &[f64], lead: usize) -> Vec<f64> {
    let h = lead.max(1) - 1;
    let margin = match (high.get(h), point.get(h)) {
        (Some(q), Some(p)) => q - p,
        _ => 0.0,
    };
    point
        .iter()
        .zip(high)
        .enumerate()
        .map(|(i, (p, q))| if i <= h { *q } else { p + margin })
        .collect()
}

/// Rolling-origin accuracy of the forecaster on a series: fit on the first `train_fraction`,
/// then step through the rest feeding observations (no refit), scoring each origin's forecasts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Accuracy {
    pub method: String,
    pub seasonality: Seasonality,
    pub horizon: usize,
    /// Mean pinball loss per requested quantile.
    pub pinball: Vec<(f64, f64)>,
    /// Share of actuals at or below each quantile forecast (should be close to τ).
    pub coverage: Vec<(f64, f64)>,
    /// MAPE (fraction) of the point forecast over all horizons.
    pub mape: Option<f64>,
    pub origins: usize,
}

/// Computes [`Accuracy`] (see its docs); `None` when the series is too short to split.
pub fn evaluate(
    series: &[f64],
    step_seconds: u64,
    train_fraction: f64,
    horizon: usize,
    quantiles: &[f64],
) -> Result<Option<Accuracy>, ForecastError> {
    let n_train = (series.len() as f64 * train_fraction.clamp(0.0, 1.0)) as usize;
    if n_train < MIN_HISTORY || n_train + 1 >= series.len() || horizon == 0 {
        return Ok(None);
    }
    let options = FitOptions {
        max_horizon: horizon,
        ..FitOptions::default()
    };
    let mut model = Forecaster::fit_with(&series[..n_train], step_seconds, &options)?;
    let mut loss = vec![0.0; quantiles.len()];
    let mut below = vec![0usize; quantiles.len()];
    let (mut actual, mut predicted) = (Vec::new(), Vec::new());
    let mut count = 0usize;
    let mut origins = 0usize;
    let stride = ((series.len() - n_train) * horizon / 200_000).max(1);
    for t in n_train..series.len() {
        if (t - n_train).is_multiple_of(stride) {
            let h = horizon.min(series.len() - t);
            let f = model.forecast(h, quantiles)?;
            for i in 0..h {
                let y = series[t + i];
                for (k, (tau, path)) in f.quantiles.iter().enumerate() {
                    loss[k] += pinball(y, path[i], *tau);
                    below[k] += usize::from(y <= path[i]);
                }
                actual.push(y);
                predicted.push(f.point[i]);
                count += 1;
            }
            origins += 1;
        }
        model.observe(series[t]);
    }
    let c = count.max(1) as f64;
    Ok(Some(Accuracy {
        method: model.method(),
        seasonality: model.seasonality(),
        horizon,
        pinball: quantiles
            .iter()
            .zip(&loss)
            .map(|(&q, &l)| (q, l / c))
            .collect(),
        coverage: quantiles
            .iter()
            .zip(&below)
            .map(|(&q, &b)| (q, b as f64 / c))
            .collect(),
        mape: mape(&actual, &predicted),
        origins,
    }))
}

#[cfg(test)]
mod tests;
