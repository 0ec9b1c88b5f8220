//! A hand-written SVG line chart of a simulation's series (no plotting dependency).
//!
//! x is trace time (UTC), y is demand in the trace's unit. Drawn: the forecast band
//! (`forecast_low..forecast_high`) as a translucent area, the demand as a grey line, and each
//! policy's mean ready capacity per step as a step line. Long series are cut into at most
//! [`MAX_POINTS`] buckets of consecutive steps and each bucket drawn by its maximum (the band
//! by its lowest low and highest high), so a day of one-minute points and a month of them
//! both give files of a few hundred kilobytes; steps without a forecast (NaN) leave gaps.

use std::fmt::Write as _;
use std::ops::Range;

use recalloc_alloc::simulate::Series;

/// Most buckets (x positions) per line.
pub const MAX_POINTS: usize = 2000;

const WIDTH: f64 = 1200.0;
const HEIGHT: f64 = 540.0;
const LEFT: f64 = 78.0;
const RIGHT: f64 = 200.0;
const TOP: f64 = 46.0;
const BOTTOM: f64 = 64.0;
const PLOT_W: f64 = WIDTH - LEFT - RIGHT;
const PLOT_H: f64 = HEIGHT - TOP - BOTTOM;

const DEMAND_COLOUR: &str = "#6b6b6b";
const BAND_COLOUR: &str = "#9467bd";
const PALETTE: [&str; 7] = [
    "#1f77b4", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f", "#000000",
];

/// The colour of a policy's capacity line: fixed for the three known policies, else the next
/// one of a palette.
fn policy_colour(name: &str, other_index: &mut usize) -> &'static str {
    match name {
        "hpa" => "#d62728",
        "seed" => "#ff7f0e",
        "recalloc" => "#2ca02c",
        _ => {
            let c = PALETTE[*other_index % PALETTE.len()];
            *other_index += 1;
            c
        }
    }
}

/// Renders `series` as a standalone SVG document titled `title`.
pub fn svg(series: &Series, title: &str) -> String {
    let n = series.ts.len();
    let mut out = String::with_capacity(64 * 1024);
    let _ = write!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="Helvetica, Arial, sans-serif" font-size="12">
<title>{t}</title>
<rect width="{w}" height="{h}" fill="#ffffff"/>
<text x="{cx:.1}" y="26" text-anchor="middle" font-size="16" font-weight="bold">{t}</text>
"##,
        w = WIDTH,
        h = HEIGHT,
        cx = WIDTH / 2.0,
        t = escape(title),
    );
    if n == 0 {
        let _ = write!(
            out,
            r##"<rect x="{LEFT}" y="{TOP}" width="{PLOT_W}" height="{PLOT_H}" fill="none" stroke="#999999"/>
<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="20" fill="#666666">no data</text>
</svg>
"##,
            LEFT + PLOT_W / 2.0,
            TOP + PLOT_H / 2.0,
        );
        return out;
    }

    // Time range: the last step lasts as long as the one before it.
    let t0 = series.ts[0];
    let last_step = if n >= 2 {
        series.ts[n - 1] - series.ts[n - 2]
    } else {
        60
    };
    let t_end = series.ts[n - 1].saturating_add(last_step.max(1));
    let span = (t_end - t0).max(1) as f64;
    let x_of = |t: i64| LEFT + (t - t0) as f64 / span * PLOT_W;

    let buckets = buckets(n, MAX_POINTS);
    let bucket_x = |r: &Range<usize>| {
        let end = if r.end < n { series.ts[r.end] } else { t_end };
        (x_of(series.ts[r.start]), x_of(end))
    };

    let demand = bucket_max(&series.demand, &buckets);
    let capacity: Vec<(&str, Vec<Option<f64>>)> = series
        .capacity
        .iter()
        .map(|(name, c)| (name.as_str(), bucket_max(c, &buckets)))
        .collect();
    let band = bucket_band(&series.forecast_low, &series.forecast_high, &buckets);

    // y range: demand and capacity; the band counts up to twice their peak, so that one wild
    // forecast does not flatten everything else (the plot area clips what sticks out).
    let peak = demand
        .iter()
        .chain(capacity.iter().flat_map(|c| c.1.iter()))
        .flatten()
        .fold(0.0_f64, |a, &b| a.max(b));
    let band_peak = band.iter().flatten().fold(0.0_f64, |a, b| a.max(b.1));
    let band_cap = if peak > 0.0 {
        2.0 * peak
    } else {
        f64::INFINITY
    };
    let y_data = peak.max(band_peak.min(band_cap));
    let (y_step, y_top) = nice_axis(if y_data > 0.0 { y_data * 1.02 } else { 1.0 });
    let y_of = |v: f64| TOP + PLOT_H - (v.clamp(0.0, y_top * 1.5) / y_top) * PLOT_H;

    // Grid, ticks and labels.
    out.push_str("<g stroke=\"#e6e6e6\" stroke-width=\"1\">\n");
    let y_ticks: Vec<f64> = (0..)
        .map(|i| i as f64 * y_step)
        .take_while(|v| *v <= y_top * (1.0 + 1e-9))
        .collect();
    for v in &y_ticks {
        let y = y_of(*v);
        let _ = writeln!(
            out,
            r#"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}"/>"#,
            LEFT + PLOT_W
        );
    }
    let x_ticks = time_ticks(t0, t_end);
    for &(t, _) in &x_ticks.ticks {
        let x = x_of(t);
        let _ = writeln!(
            out,
            r#"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}"/>"#,
            TOP + PLOT_H
        );
    }
    out.push_str("</g>\n<g fill=\"#333333\">\n");
    for v in &y_ticks {
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            LEFT - 8.0,
            y_of(*v) + 4.0,
            escape(&format_value(*v, y_step))
        );
    }
    for (t, label) in &x_ticks.ticks {
        let x = x_of(*t);
        let _ = write!(
            out,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{}"#,
            TOP + PLOT_H + 18.0,
            escape(&label.0)
        );
        if let Some(date) = &label.1 {
            let _ = write!(out, r#"<tspan x="{x:.1}" dy="15">{}</tspan>"#, escape(date));
        }
        out.push_str("</text>\n");
    }
    let _ = write!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">time (UTC)</text>
<text transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle">demand (trace unit)</text>
</g>
"#,
        LEFT + PLOT_W / 2.0,
        HEIGHT - 8.0,
        TOP + PLOT_H / 2.0,
    );

    // Data, clipped to the plot area.
    let _ = write!(
        out,
        r#"<defs><clipPath id="plot-area"><rect x="{LEFT}" y="{TOP}" width="{PLOT_W}" height="{PLOT_H}"/></clipPath></defs>
<g clip-path="url(#plot-area)" fill="none" stroke-linejoin="round">
"#
    );
    let has_band = band.iter().any(Option::is_some);
    if has_band {
        let mut d = String::new();
        let mut i = 0;
        while i < band.len() {
            if band[i].is_none() {
                i += 1;
                continue;
            }
            let start = i;
            while i < band.len() && band[i].is_some() {
                i += 1;
            }
            // Upper edge left to right, lower edge back, as steps.
            d.push('M');
            for (r, b) in buckets[start..i].iter().zip(&band[start..i]) {
                let (x0, x1) = bucket_x(r);
                let hi = y_of(b.expect("run of some").1);
                push_point(&mut d, x0, hi);
                push_point(&mut d, x1, hi);
            }
            for (r, b) in buckets[start..i].iter().zip(&band[start..i]).rev() {
                let (x0, x1) = bucket_x(r);
                let lo = y_of(b.expect("run of some").0);
                push_point(&mut d, x1, lo);
                push_point(&mut d, x0, lo);
            }
            d.push('Z');
        }
        let _ = writeln!(
            out,
            r#"<path class="band" d="{}" fill="{BAND_COLOUR}" fill-opacity="0.3" stroke="none"/>"#,
            d.trim_end()
        );
    }

    let mut other = 0;
    let mut colours = Vec::with_capacity(capacity.len());
    for (name, values) in &capacity {
        let colour = policy_colour(name, &mut other);
        colours.push(colour);
        let mut d = String::new();
        let mut drawing = false;
        for (r, v) in buckets.iter().zip(values) {
            match v {
                Some(v) => {
                    let (x0, x1) = bucket_x(r);
                    let y = y_of(*v);
                    if !drawing {
                        d.push('M');
                        drawing = true;
                    }
                    push_point(&mut d, x0, y);
                    push_point(&mut d, x1, y);
                }
                None => drawing = false,
            }
        }
        let _ = writeln!(
            out,
            r#"<path class="capacity" data-policy="{}" d="{}" stroke="{colour}" stroke-width="1.5"/>"#,
            escape(name),
            d.trim_end()
        );
    }
    // Demand last, on top of the capacity lines.
    let mut d = String::new();
    let mut drawing = false;
    for (r, v) in buckets.iter().zip(&demand) {
        match v {
            Some(v) => {
                if !drawing {
                    d.push('M');
                    drawing = true;
                }
                push_point(&mut d, x_of(series.ts[r.start]), y_of(*v));
            }
            None => drawing = false,
        }
    }
    let _ = writeln!(
        out,
        r#"<path class="demand" d="{}" stroke="{DEMAND_COLOUR}" stroke-width="1.2"/>"#,
        d.trim_end()
    );

    let _ = write!(
        out,
        r##"</g>
<rect x="{LEFT}" y="{TOP}" width="{PLOT_W}" height="{PLOT_H}" fill="none" stroke="#999999"/>
"##
    );

    // Legend.
    let lx = LEFT + PLOT_W + 18.0;
    let mut ly = TOP + 10.0;
    out.push_str("<g class=\"legend\">\n");
    let line = |y: f64, colour: &str, width: f64| {
        format!(
            r#"<line x1="{lx:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{colour}" stroke-width="{width}"/>"#,
            lx + 24.0
        )
    };
    let swatch = line(ly, DEMAND_COLOUR, 2.0);
    legend_entry(&mut out, lx, &mut ly, &swatch, "demand");
    if has_band {
        let swatch = format!(
            r#"<rect x="{lx:.1}" y="{:.1}" width="24" height="10" fill="{BAND_COLOUR}" fill-opacity="0.3"/>"#,
            ly - 5.0
        );
        legend_entry(&mut out, lx, &mut ly, &swatch, "forecast band");
    }
    if !capacity.is_empty() {
        let _ = writeln!(
            out,
            r##"<text x="{lx:.1}" y="{:.1}" fill="#555555">ready capacity:</text>"##,
            ly + 8.0
        );
        ly += 26.0;
    }
    for ((name, _), colour) in capacity.iter().zip(&colours) {
        let swatch = line(ly, colour, 2.5);
        legend_entry(&mut out, lx, &mut ly, &swatch, name);
    }
    let per = buckets.first().map_or(1, |r| r.len());
    if per > 1 {
        let _ = writeln!(
            out,
            r##"<text x="{lx:.1}" y="{:.1}" fill="#777777" font-size="10">each point: max of {per} steps</text>"##,
            ly + 10.0
        );
    }
    out.push_str("</g>\n</svg>\n");
    out
}

/// One legend row: its swatch, then its label; moves `ly` to the next row.
fn legend_entry(out: &mut String, lx: f64, ly: &mut f64, swatch: &str, label: &str) {
    out.push_str(swatch);
    let _ = writeln!(
        out,
        "\n<text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
        lx + 32.0,
        *ly + 4.0,
        escape(label)
    );
    *ly += 20.0;
}

/// At most `max` ranges of equal length (the last may be shorter) covering `0..n`.
fn buckets(n: usize, max: usize) -> Vec<Range<usize>> {
    let size = n.div_ceil(max.max(1)).max(1);
    (0..n).step_by(size).map(|s| s..(s + size).min(n)).collect()
}

/// Each bucket's largest finite value (None when it has none).
fn bucket_max(values: &[f64], buckets: &[Range<usize>]) -> Vec<Option<f64>> {
    buckets
        .iter()
        .map(|r| {
            values
                .get(r.start..r.end.min(values.len()))
                .unwrap_or(&[])
                .iter()
                .copied()
                .filter(|v| v.is_finite())
                .reduce(f64::max)
        })
        .collect()
}

/// Each bucket's lowest low and highest high over the steps where both are finite.
fn bucket_band(low: &[f64], high: &[f64], buckets: &[Range<usize>]) -> Vec<Option<(f64, f64)>> {
    buckets
        .iter()
        .map(|r| {
            r.clone()
                .filter_map(|i| match (low.get(i), high.get(i)) {
                    (Some(&l), Some(&h)) if l.is_finite() && h.is_finite() => {
                        Some((l.min(h), l.max(h)))
                    }
                    _ => None,
                })
                .reduce(|a, b| (a.0.min(b.0), a.1.max(b.1)))
        })
        .collect()
}

fn push_point(d: &mut String, x: f64, y: f64) {
    let _ = write!(d, "{x:.1},{y:.1} ");
}

/// A 1, 2, 2.5 or 5 × 10^k step giving about five ticks, and the top tick ≥ `max`.
fn nice_axis(max: f64) -> (f64, f64) {
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    (step, (max / step).ceil() * step)
}

/// A tick value with as many decimals as the step needs; thousands as k, millions as M.
fn format_value(v: f64, step: f64) -> String {
    let (v, step, suffix) = if step >= 1e6 {
        (v / 1e6, step / 1e6, "M")
    } else if step >= 1e3 {
        (v / 1e3, step / 1e3, "k")
    } else {
        (v, step, "")
    };
    // The fewest decimals that write the step exactly.
    let decimals = (0..9)
        .find(|&d| {
            let s = step * 10f64.powi(d);
            (s - s.round()).abs() < 1e-6 * s.abs().max(1.0)
        })
        .unwrap_or(9) as usize;
    format!("{v:.decimals$}{suffix}")
}

struct TimeTicks {
    /// (time, (main label, date line when the date changes)).
    ticks: Vec<(i64, (String, Option<String>))>,
}

/// Ticks at round UTC times, about 6 to 10 over the range: clock times with the date under the
/// first one of each day, or dates when a tick is a day or more.
fn time_ticks(t0: i64, t_end: i64) -> TimeTicks {
    const STEPS: [i64; 22] = [
        1,
        5,
        10,
        15,
        30,
        60,
        300,
        600,
        900,
        1800,
        3600,
        2 * 3600,
        3 * 3600,
        6 * 3600,
        12 * 3600,
        86_400,
        2 * 86_400,
        7 * 86_400,
        14 * 86_400,
        28 * 86_400,
        91 * 86_400,
        364 * 86_400,
    ];
    let span = (t_end - t0).max(1);
    let step = STEPS
        .iter()
        .copied()
        .find(|s| span / s <= 9)
        .unwrap_or_else(|| (span / 8 / (364 * 86_400) + 1) * 364 * 86_400);
    // Weeks and longer start on Mondays (1970-01-05 was one).
    let offset = if step >= 7 * 86_400 { 4 * 86_400 } else { 0 };
    let first = (t0 - offset).div_euclid(step) * step + offset;
    let first = if first < t0 { first + step } else { first };
    let mut ticks = Vec::new();
    let mut last_date = None;
    let mut t = first;
    while t <= t_end {
        let (date, clock) = utc(t);
        let label = if step >= 86_400 {
            (date, None)
        } else {
            let clock = if step < 60 {
                clock
            } else {
                clock[..5].to_string()
            };
            let shown = (last_date.as_ref() != Some(&date)).then(|| date.clone());
            last_date = Some(date);
            (clock, shown)
        };
        ticks.push((t, label));
        t += step;
    }
    TimeTicks { ticks }
}

/// ("YYYY-MM-DD", "HH:MM:SS") of a unix time, UTC.
fn utc(t: i64) -> (String, String) {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    (
        format!("{y:04}-{m:02}-{d:02}"),
        format!(
            "{:02}:{:02}:{:02}",
            secs / 3600,
            secs % 3600 / 60,
            secs % 60
        ),
    )
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Text made safe for XML character data and attribute values (control characters, which
/// XML 1.0 does not allow, are dropped).
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// One-minute steps from 2021-08-11 00:00 UTC, a daily wave, capacity per policy above it.
    fn series(n: usize, policies: &[&str]) -> Series {
        let ts: Vec<i64> = (0..n as i64).map(|i| 1_628_640_000 + 60 * i).collect();
        let demand: Vec<f64> = (0..n)
            .map(|i| 50.0 + 40.0 * (i as f64 * std::f64::consts::TAU / 1440.0).sin())
            .collect();
        let forecast: Vec<f64> = demand
            .iter()
            .enumerate()
            .map(|(i, d)| if i < 30 { f64::NAN } else { *d })
            .collect();
        let capacity: BTreeMap<String, Vec<f64>> = policies
            .iter()
            .enumerate()
            .map(|(k, p)| {
                let c = demand.iter().map(|d| d * (1.1 + 0.1 * k as f64)).collect();
                (p.to_string(), c)
            })
            .collect();
        Series {
            ts,
            forecast_low: forecast.iter().map(|f| f * 0.9).collect(),
            forecast_high: forecast.iter().map(|f| f * 1.2).collect(),
            forecast,
            demand,
            capacity,
        }
    }

    /// Checks that tags nest properly (a small stand-in for an XML parser: no comments, CDATA
    /// or processing instructions are written) and that every `&` starts an entity.
    fn assert_well_formed(svg: &str) {
        assert!(svg.starts_with("<svg "), "starts with <svg");
        assert!(svg.trim_end().ends_with("</svg>"), "ends with </svg>");
        let mut stack: Vec<&str> = Vec::new();
        let mut rest = svg;
        while let Some(open) = rest.find('<') {
            let close = rest[open..].find('>').expect("unterminated tag") + open;
            let tag = &rest[open + 1..close];
            assert!(!tag.contains('<'), "`<` inside tag {tag:?}");
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop(), Some(name.trim()), "mismatched </{name}>");
            } else if !tag.ends_with('/') {
                let name = tag.split_whitespace().next().expect("tag name");
                stack.push(name);
            }
            if stack.is_empty() {
                assert!(rest[close + 1..].trim().is_empty(), "content after root");
            }
            rest = &rest[close + 1..];
        }
        assert!(stack.is_empty(), "unclosed tags: {stack:?}");
        for (i, _) in svg.match_indices('&') {
            let ent = &svg[i..];
            assert!(
                ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"]
                    .iter()
                    .any(|e| ent.starts_with(e)),
                "bare & at {i}"
            );
        }
        for class in ["band", "demand", "capacity"] {
            for d in paths(svg, class) {
                assert!(
                    d.chars()
                        .all(|c| c.is_ascii_digit() || " .,-MZ".contains(c)),
                    "{class} path has only numbers: {d:.80}"
                );
            }
        }
    }

    /// The `d` attribute of every path of a class.
    fn paths<'a>(svg: &'a str, class: &str) -> Vec<&'a str> {
        svg.lines()
            .filter(|l| l.starts_with(&format!("<path class=\"{class}\"")))
            .map(|l| {
                let start = l.find(" d=\"").expect("d attribute") + 4;
                let end = l[start..].find('"').expect("closing quote") + start;
                &l[start..end]
            })
            .collect()
    }

    fn points(d: &str) -> usize {
        d.split(|c: char| c.is_whitespace() || c == 'M' || c == 'Z')
            .filter(|p| p.contains(','))
            .count()
    }

    #[test]
    fn output_is_a_well_formed_svg_document() {
        let svg = svg(&series(600, &["hpa", "recalloc", "seed"]), "input0.csv");
        assert_well_formed(&svg);
        assert!(svg.contains("<title>input0.csv</title>"));
        assert!(svg.contains(">time (UTC)<"));
    }

    #[test]
    fn one_capacity_line_per_policy_and_legend_names() {
        let policies = ["hpa", "recalloc", "seed", "custom"];
        let svg = svg(&series(300, &policies), "t");
        let lines: Vec<&str> = svg
            .lines()
            .filter(|l| l.starts_with("<path class=\"capacity\""))
            .collect();
        assert_eq!(lines.len(), policies.len());
        for p in policies {
            assert_eq!(
                lines
                    .iter()
                    .filter(|l| l.contains(&format!("data-policy=\"{p}\"")))
                    .count(),
                1,
                "{p}"
            );
            assert!(svg.contains(&format!(">{p}</text>")), "legend names {p}");
        }
        assert!(svg.contains(">demand</text>") && svg.contains(">forecast band</text>"));
        // Distinct colours.
        let colours: std::collections::BTreeSet<&str> = lines
            .iter()
            .map(|l| {
                l.split("stroke=\"")
                    .nth(1)
                    .unwrap()
                    .split('"')
                    .next()
                    .unwrap()
            })
            .collect();
        assert_eq!(colours.len(), policies.len());
        assert_eq!(paths(&svg, "demand").len(), 1);
    }

    #[test]
    fn downsampling_bounds_the_points_and_the_size() {
        let n = 23_040; // 16 days of minutes
        let s = series(n, &["hpa", "recalloc", "seed"]);
        let svg = svg(&s, "big");
        assert_well_formed(&svg);
        let demand = paths(&svg, "demand");
        assert!(points(demand[0]) <= MAX_POINTS, "{}", points(demand[0]));
        assert!(points(demand[0]) >= MAX_POINTS / 2);
        for d in paths(&svg, "capacity") {
            // Two points (a step) per bucket.
            assert!(points(d) <= 2 * MAX_POINTS, "{}", points(d));
        }
        for d in paths(&svg, "band") {
            assert!(points(d) <= 4 * MAX_POINTS, "{}", points(d));
        }
        assert!(svg.len() < 1_000_000, "{} bytes", svg.len());
        assert!(svg.contains("each point: max of 12 steps"));
        // The bucket maximum keeps the peak, 90 at 06:00 every day (the axis tops the highest
        // capacity, 1.3 × 90).
        let top = nice_axis(1.3 * 90.0 * 1.02).1;
        let peak_y = TOP + PLOT_H - 90.0 / top * PLOT_H;
        let highest = demand[0]
            .split(|c: char| c.is_whitespace() || c == 'M')
            .filter_map(|p| p.split(',').nth(1))
            .map(|y| y.parse::<f64>().unwrap())
            .fold(f64::INFINITY, f64::min);
        assert!((highest - peak_y).abs() < 0.06, "{highest} vs {peak_y}");
    }

    #[test]
    fn bucket_max_keeps_spikes_and_skips_nan() {
        let b = buckets(10, 3);
        assert_eq!(b, vec![0..4, 4..8, 8..10]);
        let v = [
            1.0,
            9.0,
            f64::NAN,
            2.0,
            f64::NAN,
            f64::NAN,
            f64::NAN,
            f64::NAN,
            3.0,
            4.0,
        ];
        assert_eq!(bucket_max(&v, &b), vec![Some(9.0), None, Some(4.0)]);
        assert_eq!(buckets(0, 5), Vec::<Range<usize>>::new());
        assert_eq!(buckets(3, 2000).len(), 3);
    }

    #[test]
    fn nan_forecast_segments_are_skipped() {
        let mut s = series(200, &["hpa"]);
        // The first 30 steps have no forecast; also punch a hole in the middle.
        for i in 100..120 {
            s.forecast_low[i] = f64::NAN;
            s.forecast_high[i] = f64::NAN;
        }
        let svg = svg(&s, "gaps");
        assert_well_formed(&svg);
        let band = paths(&svg, "band");
        assert_eq!(band.len(), 1);
        assert_eq!(
            band[0].matches('M').count(),
            2,
            "two runs: 30..100, 120..200"
        );
        assert_eq!(band[0].matches('Z').count(), 2);
        // Each run: 2 points per step on each edge.
        assert_eq!(points(band[0]), 4 * (70 + 80));
        // The band starts at step 30, not at the chart's left edge.
        let first_x: f64 = band[0][1..].split(',').next().unwrap().parse().unwrap();
        assert!(
            (first_x - (LEFT + 30.0 / 200.0 * PLOT_W)).abs() < 0.06,
            "{first_x}"
        );

        // No forecast at all: no band, no legend entry.
        for v in s.forecast_low.iter_mut().chain(s.forecast_high.iter_mut()) {
            *v = f64::NAN;
        }
        let svg = super::svg(&s, "none");
        assert_well_formed(&svg);
        assert!(paths(&svg, "band").is_empty());
        assert!(!svg.contains("forecast band"));
    }

    #[test]
    fn nan_demand_breaks_the_line() {
        let mut s = series(50, &["hpa"]);
        s.demand[20] = f64::NAN;
        s.capacity.get_mut("hpa").unwrap()[20] = f64::NAN;
        let svg = svg(&s, "holes");
        assert_well_formed(&svg);
        assert_eq!(paths(&svg, "demand")[0].matches('M').count(), 2);
        assert_eq!(paths(&svg, "capacity")[0].matches('M').count(), 2);
    }

    #[test]
    fn empty_series_gives_a_no_data_chart() {
        let svg = svg(&Series::default(), "empty <trace>");
        assert_well_formed(&svg);
        assert!(svg.contains(">no data</text>"));
        assert!(svg.contains("empty &lt;trace&gt;"));
        assert!(!svg.contains("<path"));
    }

    #[test]
    fn single_point_and_mismatched_lengths_do_not_panic() {
        let mut s = series(1, &["hpa"]);
        assert_well_formed(&svg(&s, "one"));
        s = series(40, &["hpa"]);
        s.capacity.get_mut("hpa").unwrap().truncate(10);
        s.forecast_high.truncate(5);
        assert_well_formed(&svg(&s, "short"));
    }

    #[test]
    fn title_is_escaped() {
        let svg = svg(&series(10, &["hpa"]), "a & b <c> \"d\" 'e'\u{1}");
        assert_well_formed(&svg);
        assert!(svg.contains("a &amp; b &lt;c&gt; &quot;d&quot; &apos;e&apos;</text>"));
    }

    #[test]
    fn axes_have_labelled_ticks() {
        // 16 days of minutes: daily (or two-daily) date ticks.
        let svg = svg(&series(23_040, &["hpa"]), "t");
        assert!(svg.contains(">2021-08-13<"), "date ticks");
        // A day of minutes: clock ticks with the date under the first.
        let svg = super::svg(&series(1440, &["hpa"]), "t");
        assert!(
            svg.contains(">03:00<") || svg.contains(">06:00<"),
            "clock ticks"
        );
        assert!(svg.contains(">2021-08-11</tspan>"), "date line");
        assert!(
            svg.contains(">0</text>") && svg.contains(">100</text>"),
            "value ticks"
        );
    }

    #[test]
    fn utc_dates_and_nice_axes() {
        assert_eq!(utc(1_628_640_000), ("2021-08-11".into(), "00:00:00".into()));
        assert_eq!(utc(0), ("1970-01-01".into(), "00:00:00".into()));
        assert_eq!(utc(951_827_696), ("2000-02-29".into(), "12:34:56".into()));
        assert_eq!(utc(-1), ("1969-12-31".into(), "23:59:59".into()));
        assert_eq!(nice_axis(91.8), (20.0, 100.0));
        assert_eq!(nice_axis(1.0), (0.2, 1.0));
        assert_eq!(format_value(2500.0, 500.0), "2500");
        assert_eq!(format_value(25_000.0, 5000.0), "25k");
        assert_eq!(format_value(0.4, 0.2), "0.4");
        assert_eq!(format_value(0.75, 0.25), "0.75");
        assert_eq!(format_value(2_500_000.0, 2_500_000.0), "2.5M");
    }
}
