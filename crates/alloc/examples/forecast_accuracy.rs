//! Rolling-origin forecast accuracy on a trace: fitted on the first 75 %, scored over the rest
//! at horizons 1..=H (pinball per quantile, coverage, MAPE), as one JSON object.
//! `cargo run --release -p recalloc-alloc --example forecast_accuracy -- TRACE.csv [H]`

use recalloc_alloc::forecast::evaluate;
use recalloc_alloc::trace::Trace;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or("usage: forecast_accuracy TRACE.csv [HORIZON]")?;
    let horizon: usize = args.next().map(|h| h.parse()).transpose()?.unwrap_or(30);
    let file = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
    let trace =
        Trace::from_reader(std::io::BufReader::new(file)).map_err(|e| format!("{path}: {e}"))?;
    let acc = evaluate(
        trace.values(),
        trace.step_seconds(),
        0.75,
        horizon,
        &[0.5, 0.9, 0.99],
    )?
    .ok_or("trace too short to split")?;
    println!("{}", serde_json::to_string(&acc)?);
    Ok(())
}
