//! A latency strip plot as SVG (one column of points per runtime, the median as a bar). The
//! comparison script turns it into PNG with rsvg-convert (Debian's librsvg2-bin): no plotting
//! library, no font handling in the benchmarks.

use std::fmt::Write;
use std::path::Path;

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 440.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;
const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#7f7f7f",
];

/// Writes the plot of `series` (label, samples in ms) to `path`.
pub fn latency_strip(
    path: &Path,
    title: &str,
    series: &[(String, Vec<f64>)],
) -> std::io::Result<()> {
    std::fs::write(path, latency_strip_svg(title, series))
}

pub fn latency_strip_svg(title: &str, series: &[(String, Vec<f64>)]) -> String {
    let max = series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .fold(1.0_f64, f64::max);
    let top = nice_ceiling(max);
    let plot_h = HEIGHT - TOP - BOTTOM;
    let plot_w = WIDTH - LEFT - RIGHT;
    let y = |v: f64| TOP + plot_h * (1.0 - v / top);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="DejaVu Sans, sans-serif" font-size="13">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="28" text-anchor="middle" font-size="16">{}</text>
"#,
        WIDTH / 2.0,
        escape(title)
    );
    for i in 0..=5 {
        let v = top * i as f64 / 5.0;
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{v:.1}</text>"##,
            WIDTH - RIGHT,
            LEFT - 8.0,
            y(v) + 4.0,
            y = y(v)
        );
    }
    let slot = plot_w / series.len().max(1) as f64;
    for (i, (label, values)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let cx = LEFT + slot * (i as f64 + 0.5);
        for (j, v) in values.iter().enumerate() {
            // Deterministic jitter spreads equal values sideways.
            let jitter = ((j * 37) % 21) as f64 - 10.0;
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{color}" fill-opacity="0.55"/>"#,
                cx + jitter * slot / 80.0,
                y(*v)
            );
        }
        let median = median(values);
        let _ = write!(
            s,
            r#"<line x1="{:.1}" x2="{:.1}" y1="{m:.1}" y2="{m:.1}" stroke="{color}" stroke-width="3"/>
<text x="{cx:.1}" y="{:.1}" text-anchor="middle">{}</text>
<text x="{cx:.1}" y="{:.1}" text-anchor="middle" fill="{color}">median {median:.2}</text>
"#,
            cx - slot * 0.3,
            cx + slot * 0.3,
            HEIGHT - BOTTOM + 22.0,
            escape(label),
            HEIGHT - BOTTOM + 40.0,
            m = y(median)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// 1, 2 or 5 times a power of ten, at or above `v`.
fn nice_ceiling(v: f64) -> f64 {
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * p)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svg_has_every_series() {
        let svg = latency_strip_svg(
            "t <1>",
            &[
                ("berth".into(), vec![7.0, 8.0, 9.0]),
                ("crun".into(), vec![10.0]),
            ],
        );
        assert!(svg.contains(">berth<") && svg.contains(">crun<"));
        assert!(svg.contains("median 8.00"));
        assert!(svg.contains("t &lt;1&gt;"));
        assert_eq!(svg.matches("<circle").count(), 4);
    }

    #[test]
    fn ceilings() {
        assert_eq!(nice_ceiling(7.3), 10.0);
        assert_eq!(nice_ceiling(13.0), 20.0);
        assert_eq!(nice_ceiling(41.0), 50.0);
    }
}
