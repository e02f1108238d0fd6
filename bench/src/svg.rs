//! Latency CDF plots as standalone SVG, written by hand: a few polylines, axes and a legend
//! need no plotting library (see `docs/dependencies.md`).

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::results::Cdf;

const W: f64 = 900.0;
const PANEL_H: f64 = 300.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = 300.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
const COLORS: [&str; 6] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Height (0 to 1) of quantile `q` on an axis that gives each "nine" the same room, so the
/// tail where datapaths differ is as visible as the median.
fn tail_scale(q: f64) -> f64 {
    let q = q.clamp(0.0, MAX_Q);
    (1.0 / (1.0 - q)).log10() / (1.0 / (1.0 - MAX_Q)).log10()
}

/// The highest quantile drawn.
const MAX_Q: f64 = 0.9999;

/// Axis ticks 1-2-5 per decade covering `[lo, hi]`.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let mut t = Vec::new();
    let mut decade = 10f64.powf(lo.log10().floor());
    while decade <= hi * 10.0 && t.len() < 40 {
        for m in [1.0, 2.0, 5.0] {
            let v = decade * m;
            if v >= lo && v <= hi {
                t.push(v);
            }
        }
        decade *= 10.0;
    }
    t
}

/// One panel per CDF, latency on a log x axis, fraction of requests on y; `labels` maps
/// column ids to legend text.
pub fn latency_cdfs(title: &str, cdfs: &[Cdf], labels: &BTreeMap<String, String>) -> String {
    let panels: Vec<&Cdf> =
        cdfs.iter().filter(|c| c.series.values().any(|p| !p.is_empty())).collect();
    let h = TOP + panels.len() as f64 * (PANEL_H + BOTTOM + 30.0) + 10.0;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" viewBox="0 0 {W} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(s, r#"<rect width="{W}" height="{h}" fill="white"/>"#);
    let _ = write!(
        s,
        r#"<text x="{}" y="22" font-size="15" text-anchor="middle">{}</text>"#,
        W / 2.0,
        esc(title)
    );
    let ids: Vec<&String> = labels.keys().collect();
    for (i, cdf) in panels.iter().enumerate() {
        let y0 = TOP + i as f64 * (PANEL_H + BOTTOM + 30.0) + 20.0;
        let (x0, pw) = (LEFT, W - LEFT - RIGHT);
        let pts = cdf.series.values().flatten().map(|p| p.0).filter(|v| *v > 0.0);
        let (lo, hi) = pts.fold((f64::MAX, 0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
        let (lo, hi) = if lo <= hi { (lo * 0.9, hi * 1.1) } else { (1.0, 10.0) };
        let (llo, lhi) = (lo.log10(), hi.log10().max(lo.log10() + 0.1));
        let x = |v: f64| x0 + (v.max(lo).log10() - llo) / (lhi - llo) * pw;
        let y = |q: f64| y0 + (1.0 - tail_scale(q)) * PANEL_H;
        let _ = write!(
            s,
            r#"<text x="{x0}" y="{}" font-size="13">{}</text>"#,
            y0 - 6.0,
            esc(&cdf.title)
        );
        let _ = write!(
            s,
            r##"<rect x="{x0}" y="{y0}" width="{pw}" height="{PANEL_H}" fill="none" stroke="#444"/>"##
        );
        for t in ticks(lo, hi) {
            let xt = x(t);
            let _ = write!(
                s,
                r##"<line x1="{xt:.1}" y1="{y0}" x2="{xt:.1}" y2="{}" stroke="#ddd"/>"##,
                y0 + PANEL_H
            );
            let _ = write!(
                s,
                r#"<text x="{xt:.1}" y="{}" text-anchor="middle">{t}</text>"#,
                y0 + PANEL_H + 16.0
            );
        }
        for q in [0.0, 0.5, 0.9, 0.99, 0.999, 0.9999] {
            let yq = y(q);
            let _ = write!(
                s,
                r##"<line x1="{x0}" y1="{yq:.1}" x2="{}" y2="{yq:.1}" stroke="#eee"/>"##,
                x0 + pw
            );
            let _ = write!(
                s,
                r#"<text x="{}" y="{:.1}" text-anchor="end">{q}</text>"#,
                x0 - 6.0,
                yq + 4.0
            );
        }
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">round-trip latency, µs (log scale)</text>"#,
            x0 + pw / 2.0,
            y0 + PANEL_H + 36.0
        );
        let _ = write!(
            s,
            r#"<text transform="translate({},{}) rotate(-90)" text-anchor="middle">fraction of requests at or below (tail-stretched)</text>"#,
            x0 - 62.0,
            y0 + PANEL_H / 2.0
        );
        let mut legend = 0;
        for (id, points) in &cdf.series {
            if points.is_empty() {
                continue;
            }
            let k = ids.iter().position(|i| *i == id).unwrap_or(legend);
            let color = COLORS[k % COLORS.len()];
            let mut path = String::new();
            for (v, q) in points {
                let _ = write!(path, "{:.1},{:.1} ", x(*v), y(*q));
            }
            let _ = write!(
                s,
                r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
                path.trim_end()
            );
            let ly = y0 + 16.0 + legend as f64 * 18.0;
            let lx = x0 + pw + 12.0;
            let _ = write!(
                s,
                r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="3"/>"#,
                lx + 20.0
            );
            let label = labels.get(id).map_or(id.as_str(), String::as_str);
            let _ = write!(s, r#"<text x="{}" y="{}">{}</text>"#, lx + 26.0, ly + 4.0, esc(label));
            legend += 1;
        }
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_scale_spaces_nines_evenly() {
        assert_eq!(tail_scale(0.0), 0.0);
        assert!((tail_scale(0.9) - 0.25).abs() < 1e-9);
        assert!((tail_scale(0.99) - 0.5).abs() < 1e-9);
        assert_eq!(tail_scale(1.0), 1.0);
    }

    #[test]
    fn ticks_are_1_2_5() {
        assert_eq!(ticks(3.0, 60.0), vec![5.0, 10.0, 20.0, 50.0]);
        assert_eq!(ticks(1.0, 2.0), vec![1.0, 2.0]);
    }

    #[test]
    fn plots_every_series_with_its_label() {
        let mut series = BTreeMap::new();
        series.insert("kernel".to_string(), vec![(5.0, 0.0), (10.0, 0.5), (100.0, 1.0)]);
        series.insert("podswitch".to_string(), vec![(20.0, 0.0), (40.0, 0.5), (90.0, 1.0)]);
        let cdfs = [
            Cdf { title: "UDP <rr>".into(), series },
            Cdf { title: "empty".into(), series: BTreeMap::new() },
        ];
        let labels: BTreeMap<String, String> =
            [("kernel", "kernel bridge"), ("podswitch", "podswitch & co")]
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();
        let svg = latency_cdfs("Latency", &cdfs, &labels);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("kernel bridge") && svg.contains("podswitch &amp; co"));
        assert!(svg.contains("UDP &lt;rr&gt;") && !svg.contains("empty"));
    }
}
