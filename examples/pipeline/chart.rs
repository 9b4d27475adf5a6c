//! The main job's chart: bytes held and p99 call latency over time, one line per store, as
//! a hand-written SVG (two panels sharing the time axis).

use std::fmt::Write;

const WIDTH: f64 = 900.0;
const PANEL: f64 = 240.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 130.0;
const TOP: f64 = 60.0;
const GAP: f64 = 60.0;
const COLORS: [&str; 4] = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd"];

/// One store's lines.
pub struct Series<'a> {
    pub name: &'a str,
    /// (seconds, bytes held)
    pub bytes: &'a [(f64, u64)],
    /// (seconds, p99 in nanoseconds)
    pub p99: &'a [(f64, u64)],
}

/// The SVG text: `title` in bold, `subtitle` (the setup) below it. `load_seconds` marks where the pushes stopped and the drain began.
pub fn svg(title: &str, subtitle: &str, series: &[Series], load_seconds: f64) -> String {
    let end = series
        .iter()
        .flat_map(|s| s.bytes.iter().map(|p| p.0).chain(s.p99.iter().map(|p| p.0)))
        .fold(load_seconds, f64::max)
        .max(1.0);
    let max_bytes = series.iter().flat_map(|s| s.bytes.iter().map(|p| p.1)).max().unwrap_or(1).max(1) as f64;
    let p99s = || series.iter().flat_map(|s| s.p99.iter().map(|p| p.1 as f64));
    let low = p99s().fold(f64::INFINITY, f64::min).clamp(1.0, 1e12); // no points: 1 ns
    let high = p99s().fold(1.0, f64::max);
    let (low_decade, high_decade) = (low.log10().floor(), high.log10().ceil().max(low.log10().floor() + 1.0));
    let plot = WIDTH - LEFT - RIGHT;
    let x = |t: f64| LEFT + plot * t / end;
    let top2 = TOP + PANEL + GAP;
    let y_bytes = |bytes: f64| TOP + PANEL - PANEL * bytes / max_bytes;
    let y_p99 = |ns: f64| top2 + PANEL - PANEL * (ns.max(1.0).log10() - low_decade) / (high_decade - low_decade);
    let height = top2 + PANEL + 50.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">"
    );
    let _ = writeln!(out, "<rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>");
    let _ = writeln!(out, "<text x=\"{LEFT}\" y=\"20\" font-size=\"15\" font-weight=\"bold\">{}</text>", escape(title));
    let _ = writeln!(out, "<text x=\"{LEFT}\" y=\"36\" font-size=\"10\" fill=\"#555\">{}</text>", escape(subtitle));
    for (panel_top, label) in [
        (TOP, "payload bytes held, all servers (logical: replicas share the bytes)"),
        (top2, "p99 latency of every call (log scale)"),
    ] {
        let _ = writeln!(
            out,
            "<rect x=\"{LEFT}\" y=\"{panel_top}\" width=\"{plot}\" height=\"{PANEL}\" fill=\"none\" stroke=\"#999\"/>"
        );
        let _ = writeln!(out, "<text x=\"{LEFT}\" y=\"{}\" fill=\"#333\">{label}</text>", panel_top - 6.0);
        let drain = x(load_seconds);
        let _ = writeln!(
            out,
            "<line x1=\"{drain:.1}\" y1=\"{panel_top}\" x2=\"{drain:.1}\" y2=\"{}\" stroke=\"#999\" stroke-dasharray=\"4 3\"/>",
            panel_top + PANEL
        );
        let _ =
            writeln!(out, "<text x=\"{:.1}\" y=\"{}\" fill=\"#666\">pushes stop</text>", drain + 4.0, panel_top + 14.0);
    }
    for i in 0..=4 {
        let bytes = max_bytes * i as f64 / 4.0;
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LEFT - 6.0,
            y_bytes(bytes) + 4.0,
            size(bytes)
        );
    }
    let mut decade = low_decade;
    while decade <= high_decade {
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LEFT - 6.0,
            y_p99(10f64.powf(decade)) + 4.0,
            nanos(10f64.powf(decade))
        );
        decade += 1.0;
    }
    let step = (end / 10.0).ceil().max(1.0);
    let mut t = 0.0;
    while t <= end {
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{t:.0} s</text>",
            x(t),
            top2 + PANEL + 18.0
        );
        t += step;
    }
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let bytes: Vec<String> =
            s.bytes.iter().map(|&(t, b)| format!("{:.1},{:.1}", x(t), y_bytes(b as f64))).collect();
        let p99: Vec<String> = s.p99.iter().map(|&(t, ns)| format!("{:.1},{:.1}", x(t), y_p99(ns as f64))).collect();
        for points in [bytes, p99] {
            let _ = writeln!(
                out,
                "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"{}\"/>",
                points.join(" ")
            );
        }
        let legend = TOP + 10.0 + 20.0 * i as f64;
        let _ = writeln!(
            out,
            "<line x1=\"{0}\" y1=\"{legend}\" x2=\"{1}\" y2=\"{legend}\" stroke=\"{color}\" stroke-width=\"3\"/>\
             <text x=\"{2}\" y=\"{3}\">{4}</text>",
            WIDTH - RIGHT + 10.0,
            WIDTH - RIGHT + 30.0,
            WIDTH - RIGHT + 36.0,
            legend + 4.0,
            escape(s.name)
        );
    }
    out.push_str("</svg>\n");
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Bytes with a binary unit.
pub fn size(bytes: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 || value >= 100.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Nanoseconds with a unit.
pub fn nanos(ns: f64) -> String {
    if ns < 1e3 {
        format!("{ns:.0} ns")
    } else if ns < 1e4 {
        format!("{:.1} µs", ns / 1e3)
    } else if ns < 1e6 {
        format!("{:.0} µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.1} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}
