use super::*;
use crate::seed::SplitMix64;

fn daily_series(days: usize, step: u64, noise: f64, seed: u64) -> Vec<f64> {
    let per_day = (86_400 / step) as usize;
    let mut rng = SplitMix64(seed);
    (0..days * per_day)
        .map(|i| {
            let phase = (i % per_day) as f64 / per_day as f64;
            (100.0 + 50.0 * (std::f64::consts::TAU * phase).sin() + noise * rng.normal()).max(0.0)
        })
        .collect()
}

#[test]
fn pinball_and_mape() {
    assert_eq!(pinball(10.0, 8.0, 0.9), 0.9 * 2.0);
    assert!((pinball(8.0, 10.0, 0.9) - 0.1 * 2.0).abs() < 1e-12);
    assert_eq!(mean_pinball(&[1.0, 3.0], &[1.0, 3.0], 0.5), 0.0);
    assert_eq!(mape(&[100.0, 0.0, 50.0], &[110.0, 5.0, 50.0]), Some(0.05));
    assert_eq!(mape(&[0.0], &[1.0]), None);
}

#[test]
fn detects_daily_season_and_none_in_noise() {
    let y = daily_series(4, 300, 3.0, 1);
    match detect_seasonality(&y, 300) {
        Seasonality::Daily { steps, strength } => {
            assert_eq!(steps, 288);
            assert!(strength > 0.8, "{strength}");
        }
        other => panic!("expected daily, got {other:?}"),
    }
    let mut rng = SplitMix64(3);
    let noise: Vec<f64> = (0..288 * 4).map(|_| 50.0 + rng.normal()).collect();
    assert_eq!(detect_seasonality(&noise, 300), Seasonality::None);
    // Too short for a season: none.
    assert_eq!(detect_seasonality(&y[..300], 300), Seasonality::None);
}

#[test]
fn seasonal_model_wins_on_seasonal_data_and_quantiles_are_calibrated() {
    let y = daily_series(6, 300, 2.0, 5);
    let acc = evaluate(&y, 300, 0.7, 12, &[0.1, 0.5, 0.9])
        .unwrap()
        .unwrap();
    assert!(acc.method != "naive" && !acc.method.starts_with("recent-peak"));
    for (tau, cov) in &acc.coverage {
        assert!(
            (cov - tau).abs() < 0.12,
            "coverage {cov} for {tau}: {acc:?}"
        );
    }
    let mape = acc.mape.unwrap();
    assert!(mape < 0.05, "{mape}");
}

#[test]
fn quantiles_are_ordered_and_non_negative() {
    let y = daily_series(3, 600, 10.0, 9);
    let f = Forecaster::fit(&y, 600).unwrap();
    let fc = f.forecast(50, &[0.05, 0.5, 0.95]).unwrap();
    assert_eq!(fc.point.len(), 50);
    let (lo, mid, hi) = (
        fc.quantile(0.05).unwrap(),
        fc.quantile(0.5).unwrap(),
        fc.quantile(0.95).unwrap(),
    );
    for i in 0..50 {
        assert!(lo[i] <= mid[i] && mid[i] <= hi[i]);
        assert!(lo[i] >= 0.0);
    }
}

#[test]
fn short_history_falls_back_to_recent_peak() {
    let f = Forecaster::fit(&[3.0, 7.0, 5.0], 60).unwrap();
    assert!(f.method().starts_with("recent-peak"), "{}", f.method());
    let fc = f.forecast(2, &[0.9]).unwrap();
    assert_eq!(fc.point, vec![7.0, 7.0]);
    let one = Forecaster::fit(&[4.0], 60).unwrap();
    assert_eq!(one.forecast(1, &[]).unwrap().point, vec![4.0]);
}

#[test]
fn bad_input_is_an_error() {
    assert_eq!(
        Forecaster::fit(&[], 60).unwrap_err(),
        ForecastError::EmptyHistory
    );
    assert!(matches!(
        Forecaster::fit(&[1.0, f64::NAN], 60),
        Err(ForecastError::BadValue { index: 1, .. })
    ));
    assert_eq!(
        Forecaster::fit(&[1.0], 0).unwrap_err(),
        ForecastError::ZeroStep
    );
    let f = Forecaster::fit(&[1.0, 2.0], 60).unwrap();
    assert_eq!(
        f.forecast(3, &[1.5]).unwrap_err(),
        ForecastError::BadQuantile(1.5)
    );
}

#[test]
fn observe_tracks_new_data_without_refit() {
    let y = daily_series(3, 600, 1.0, 2);
    let mut f = Forecaster::fit(&y[..300], 600).unwrap();
    for &v in &y[300..] {
        f.observe(v);
    }
    let fresh = Forecaster::fit(&y, 600).unwrap();
    let a = f.forecast(1, &[]).unwrap().point[0];
    let b = fresh.forecast(1, &[]).unwrap().point[0];
    assert!((a - b).abs() < 15.0, "{a} vs {b}");
}

/// Two weeks of minutes is the most history a simulator refit uses
/// (`RecallocParams::max_history_steps`): the daily season must be found in it. (How long the
/// fit takes is a benchmark's question, not a test's: these machines are shared and noisy.)
#[test]
fn two_weeks_of_minutes_reveal_the_daily_season() {
    let y = daily_series(14, 60, 5.0, 11);
    let f = Forecaster::fit(&y, 60).unwrap();
    println!(
        "fit on {} points: method {}, candidates {:?}",
        y.len(),
        f.method(),
        f.candidates()
    );
    assert_eq!(f.seasonality().steps(), Some(1440));
}

#[test]
fn volatility_errors_widen_the_band_in_bursts_only() {
    // Calm spells (noise 0.2) and bursty ones (noise 10) alternating every 1000 steps: the
    // volatility model wins on the holdout, and its band follows the spell it is in.
    let mut rng = SplitMix64(9);
    let y: Vec<f64> = (0..6000)
        .map(|i| {
            let noise = if (i / 1000) % 2 == 0 { 0.2 } else { 10.0 };
            (20.0 + noise * rng.normal()).max(0.0)
        })
        .collect();
    let options = FitOptions {
        max_horizon: 5,
        eval_quantiles: vec![0.5, 0.99],
        // The holdout spans a calm and a bursty spell.
        holdout_fraction: 0.4,
        ..FitOptions::default()
    };
    let band = |history: &[f64]| {
        let m = Forecaster::fit_with(history, 60, &options).unwrap();
        assert_eq!(
            m.error_kind(),
            ErrorKind::Volatility,
            "{:?}",
            m.candidates()
        );
        let f = m.forecast(1, &[0.99]).unwrap();
        f.quantiles[0].1[0] - f.point[0]
    };
    let calm = band(&y[..5000]); // ends in a calm spell
    let burst = band(&y[..6000]); // ends in a bursty one
    assert!(burst > 5.0 * calm, "calm {calm}, burst {burst}");
}
