//! The candidate forecasting rules, their running state, and the backtest that walks a rule
//! through a history.

/// A forecasting rule with its parameters (no state).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Method {
    /// y_{t+h} = y_{t+h−m·⌈h/m⌉}; m = 1 is the naive last-value rule.
    SeasonalNaive { m: usize },
    /// Additive Holt–Winters with damped trend; m ≤ 1 means no seasonal component.
    HoltWinters {
        m: usize,
        alpha: f64,
        beta: f64,
        gamma: f64,
        phi: f64,
    },
    /// The last value plus the seasonal increments: y_{t+h} = y_t + the mean, over the last
    /// `k` seasons, of how much the series rose from phase t to phase t + h. It follows the
    /// current level like the naive rule and the daily shape like the seasonal one (a daily
    /// spike at 00:03 is anticipated, yet a busier-than-usual day is not forecast as usual).
    /// `reach` = ⌈max horizon / m⌉ seasons are kept for horizons beyond one season.
    SeasonalDrift { m: usize, k: usize, reach: usize },
    /// The maximum of the last `window` points, flat.
    RecentPeak { window: usize },
}

impl Method {
    pub(super) fn name(&self) -> String {
        match *self {
            Method::SeasonalNaive { m: 1 } => "naive".into(),
            Method::SeasonalNaive { m } => format!("seasonal-naive(m={m})"),
            Method::HoltWinters {
                m,
                alpha,
                beta,
                gamma,
                phi,
            } if m > 1 => {
                format!("holt-winters(m={m},alpha={alpha},beta={beta},gamma={gamma},phi={phi})")
            }
            Method::HoltWinters {
                alpha, beta, phi, ..
            } => format!("holt-damped(alpha={alpha},beta={beta},phi={phi})"),
            Method::SeasonalDrift { m, k, .. } => format!("seasonal-drift(m={m},k={k})"),
            Method::RecentPeak { window } => format!("recent-peak(window={window})"),
        }
    }

    /// Points consumed before the first forecast can be made.
    pub(super) fn warmup(&self) -> usize {
        match *self {
            Method::SeasonalNaive { m } => m,
            Method::HoltWinters { m, .. } if m > 1 => 2 * m,
            Method::HoltWinters { .. } => 1,
            Method::SeasonalDrift { m, k, reach } => (k + reach - 1) * m + 1,
            Method::RecentPeak { .. } => 1,
        }
    }

    /// A state initialised from `y[..self.warmup()]` (caller guarantees the length).
    pub(super) fn init(&self, y: &[f64]) -> State {
        match *self {
            Method::SeasonalNaive { m } => State::SeasonalNaive {
                ring: y[..m].to_vec(),
                t: m,
            },
            Method::HoltWinters {
                m,
                alpha,
                beta,
                gamma,
                phi,
            } => {
                let (level, trend, season) = if m > 1 {
                    let mean1 = y[..m].iter().sum::<f64>() / m as f64;
                    let mean2 = y[m..2 * m].iter().sum::<f64>() / m as f64;
                    let trend = (mean2 - mean1) / m as f64;
                    // Ring slot i % m holds the latest seasonal term of phase i.
                    let season = (0..m)
                        .map(|i| 0.5 * ((y[i] - mean1) + (y[m + i] - mean2)))
                        .collect();
                    (mean2 + trend * (m as f64 - 1.0) / 2.0, trend, season)
                } else {
                    (y[0], 0.0, Vec::new())
                };
                State::HoltWinters {
                    hw: Hw {
                        alpha,
                        beta,
                        gamma,
                        phi,
                        m,
                        level,
                        trend,
                        season,
                        slot: 0,
                    },
                }
            }
            Method::SeasonalDrift { m, k, reach } => {
                let len = self.warmup();
                State::SeasonalDrift {
                    m,
                    k,
                    reach,
                    ring: y[..len].to_vec(),
                    t: len,
                }
            }
            Method::RecentPeak { window } => {
                let mut ring = std::collections::VecDeque::with_capacity(window);
                ring.push_back(y[0]);
                State::RecentPeak { ring, window }
            }
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct Hw {
    alpha: f64,
    beta: f64,
    gamma: f64,
    phi: f64,
    m: usize,
    level: f64,
    trend: f64,
    season: Vec<f64>,
    /// Ring slot of the next observation's phase (its index modulo m).
    slot: usize,
}

impl Hw {
    #[inline]
    pub(super) fn observe(&mut self, y: f64) {
        let seasonal = self.m > 1;
        let slot = self.slot;
        let s_old = if seasonal { self.season[slot] } else { 0.0 };
        let predicted = self.level + self.phi * self.trend;
        let level = self.alpha * (y - s_old) + (1.0 - self.alpha) * predicted;
        self.trend = self.beta * (level - self.level) + (1.0 - self.beta) * self.phi * self.trend;
        if seasonal {
            self.season[slot] = self.gamma * (y - predicted) + (1.0 - self.gamma) * s_old;
        }
        self.level = level;
        if seasonal {
            self.slot = if slot + 1 == self.m { 0 } else { slot + 1 };
        }
    }
}

/// A method's running state, updated one observation at a time.
#[derive(Debug, Clone)]
pub(super) enum State {
    SeasonalNaive {
        ring: Vec<f64>,
        t: usize,
    },
    HoltWinters {
        hw: Hw,
    },
    SeasonalDrift {
        m: usize,
        k: usize,
        reach: usize,
        /// The last ring.len() observations; index i lives in slot i % len.
        ring: Vec<f64>,
        /// Observations seen.
        t: usize,
    },
    RecentPeak {
        ring: std::collections::VecDeque<f64>,
        window: usize,
    },
}

impl State {
    pub(super) fn observe(&mut self, y: f64) {
        match self {
            State::SeasonalNaive { ring, t } => {
                let m = ring.len();
                ring[*t % m] = y;
                *t += 1;
            }
            State::HoltWinters { hw } => hw.observe(y),
            State::SeasonalDrift { ring, t, .. } => {
                let len = ring.len();
                ring[*t % len] = y;
                *t += 1;
            }
            State::RecentPeak { ring, window } => {
                if ring.len() == *window {
                    ring.pop_front();
                }
                ring.push_back(y);
            }
        }
    }

    /// Point forecasts for h = 1..=horizon into `out`.
    pub(super) fn points(&self, horizon: usize, out: &mut Vec<f64>) {
        out.clear();
        match self {
            State::SeasonalNaive { ring, t } => {
                let m = ring.len();
                // Target index t−1+h shares its phase with ring slot (t−1+h) % m.
                out.extend((1..=horizon).map(|h| ring[(t - 1 + h) % m]));
            }
            State::HoltWinters { hw } => {
                let mut damp = 0.0;
                let mut phi_h = 1.0;
                let mut slot = hw.slot;
                for _ in 0..horizon {
                    phi_h *= hw.phi;
                    damp += phi_h;
                    let s = if hw.m > 1 {
                        let s = hw.season[slot];
                        slot = if slot + 1 == hw.m { 0 } else { slot + 1 };
                        s
                    } else {
                        0.0
                    };
                    out.push(hw.level + damp * hw.trend + s);
                }
            }
            State::SeasonalDrift {
                m,
                k,
                reach,
                ring,
                t,
            } => {
                let (m, k, len) = (*m, *k, ring.len());
                let at = |i: usize| ring[i % len];
                let mut level = at(t - 1);
                for i in 1..=horizon {
                    let inc = if i <= reach * m {
                        // Seasons back far enough that the phase of t−1+i has been observed.
                        let c = i.div_ceil(m);
                        let u = t - 1 + i;
                        (1..=k)
                            .map(|j| {
                                let back = u - (j + c - 1) * m;
                                at(back) - at(back - 1)
                            })
                            .sum::<f64>()
                            / k as f64
                    } else {
                        // Beyond the kept seasons the increments repeat with the season.
                        out[i - 1 - m]
                            - if i - 1 - m == 0 {
                                at(t - 1)
                            } else {
                                out[i - 2 - m]
                            }
                    };
                    level += inc;
                    out.push(level);
                }
            }
            State::RecentPeak { ring, .. } => {
                let peak = ring.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                out.extend(std::iter::repeat_n(peak, horizon));
            }
        }
    }
}

/// Chooses Holt–Winters parameters by one-step squared error over a small grid. All grid points
/// run in one pass over the data, side by side, so the per-point dependency chains of the
/// recursions overlap instead of running one after another (several times faster).
pub(super) fn grid_search(y: &[f64], m: usize) -> Method {
    const ALPHAS: [f64; 5] = [0.1, 0.3, 0.6, 0.9, 1.0];
    const BETAS: [f64; 3] = [0.0, 0.02, 0.1];
    const PHIS: [f64; 2] = [0.9, 0.98];
    let gammas: &[f64] = if m > 1 { &[0.05, 0.2, 0.5] } else { &[0.0] };
    let base = Method::HoltWinters {
        m,
        alpha: 0.5,
        beta: 0.0,
        gamma: 0.0,
        phi: 0.9,
    };
    let warm = base.warmup();
    if y.len() <= warm + 1 {
        return base;
    }
    let State::HoltWinters { hw: init } = base.init(y) else {
        return base;
    };
    let mut grid = Vec::new();
    for &alpha in &ALPHAS {
        for &beta in &BETAS {
            for &gamma in gammas {
                for &phi in &PHIS {
                    grid.push((alpha, beta, gamma, phi));
                }
            }
        }
    }
    let k = grid.len();
    let alpha: Vec<f64> = grid.iter().map(|g| g.0).collect();
    let beta: Vec<f64> = grid.iter().map(|g| g.1).collect();
    let gamma: Vec<f64> = grid.iter().map(|g| g.2).collect();
    let phi: Vec<f64> = grid.iter().map(|g| g.3).collect();
    let mut level = vec![init.level; k];
    let mut trend = vec![init.trend; k];
    let mut sse = vec![0.0; k];
    let seasonal = m > 1;
    // Slot-major: the k seasonal terms of one phase are contiguous.
    let mut season: Vec<f64> = if seasonal {
        init.season
            .iter()
            .flat_map(|&s| std::iter::repeat_n(s, k))
            .collect()
    } else {
        vec![0.0; k]
    };
    let mut slot = 0;
    let (alpha, beta, gamma, phi) = (&alpha[..k], &beta[..k], &gamma[..k], &phi[..k]);
    let (level, trend, sse) = (&mut level[..k], &mut trend[..k], &mut sse[..k]);
    for &v in &y[warm..] {
        let ss = &mut season[slot * k..slot * k + k];
        for j in 0..k {
            let s_old = ss[j];
            let predicted = level[j] + phi[j] * trend[j];
            let e = v - predicted - s_old;
            sse[j] += e * e;
            let l = alpha[j] * (v - s_old) + (1.0 - alpha[j]) * predicted;
            trend[j] = beta[j] * (l - level[j]) + (1.0 - beta[j]) * phi[j] * trend[j];
            // γ = 0 keeps the (zero) seasonal terms of the non-seasonal model at zero.
            ss[j] = gamma[j] * (v - predicted) + (1.0 - gamma[j]) * s_old;
            level[j] = l;
        }
        if seasonal {
            slot = if slot + 1 == m { 0 } else { slot + 1 };
        }
    }
    let best = (0..k)
        .min_by(|&a, &b| sse[a].total_cmp(&sse[b]))
        .unwrap_or(0);
    let (alpha, beta, gamma, phi) = grid[best];
    Method::HoltWinters {
        m,
        alpha,
        beta,
        gamma,
        phi,
    }
}

/// Residuals y − ŷ by horizon (index h−1), each sorted, from origins in `[from, to)`, thinned
/// so that their count stays within `budget`. Returns the state after all of `y` as well.
pub(super) fn run_backtest(
    method: Method,
    y: &[f64],
    from: usize,
    to: usize,
    horizon: usize,
    budget: usize,
    mut visit: impl FnMut(usize, &[f64]),
) -> Option<State> {
    let warm = method.warmup();
    if y.len() < warm {
        return None;
    }
    let mut state = method.init(y);
    let origins = to.saturating_sub(from.max(warm));
    let stride = (origins * horizon / budget.max(1)).max(1);
    let mut buf = Vec::with_capacity(horizon);
    for t in warm..y.len() {
        // The state has seen y[..t]; the origin is t − 1.
        let origin = t - 1;
        if origin >= from && origin < to {
            let h_max = horizon.min(y.len() - 1 - origin);
            if (origin - from).is_multiple_of(stride) && h_max > 0 {
                state.points(h_max, &mut buf);
                visit(origin, &buf);
            }
        }
        state.observe(y[t]);
    }
    Some(state)
}
