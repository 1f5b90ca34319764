//! Line charts of a desktop's metrics as inline SVG, drawn on the server from the stored
//! time series: no chart library, no script. Each chart is an image with a text
//! alternative that gives its last, lowest and highest values.

use deskfleet_core::clock::Millis;
use maud::{Markup, html};

const WIDTH: f64 = 560.0;
const HEIGHT: f64 = 140.0;
const PAD: f64 = 4.0;

/// One point of a chart: when, and the value then.
pub type Point = (Millis, f64);

/// A value with its unit, short.
pub fn figure(v: f64, unit: &str) -> String {
    match unit {
        "bit/s" if v >= 1e6 => format!("{:.1} Mbit/s", v / 1e6),
        "bit/s" if v >= 1e3 => format!("{:.1} kbit/s", v / 1e3),
        "%" => format!("{v:.1}%"),
        "" => format!("{v:.2}"),
        u => format!("{v:.1} {u}"),
    }
}

/// The chart of `points` (oldest first) over `[from, to)`. Percentages are drawn on a
/// 0-100 scale; other units from 0 to their highest value.
pub fn line_chart(title: &str, unit: &str, points: &[Point], from: Millis, to: Millis) -> Markup {
    let id = title
        .to_lowercase()
        .replace(|c: char| !c.is_ascii_alphanumeric(), "-");
    let Some(&(_, last)) = points.last() else {
        return html! {
            figure class="chart" {
                figcaption { (title) }
                p { "No data in this period." }
            }
        };
    };
    let min = points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let max = points.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    let top = if unit == "%" {
        100.0
    } else {
        max.max(1e-9) * 1.1
    };
    let span = (to - from).max(1) as f64;
    let x = |t: Millis| PAD + (t - from) as f64 / span * (WIDTH - 2.0 * PAD);
    let y = |v: f64| HEIGHT - PAD - (v.max(0.0) / top).min(1.0) * (HEIGHT - 2.0 * PAD);
    let line: Vec<String> = points
        .iter()
        .map(|&(t, v)| format!("{:.1},{:.1}", x(t), y(v)))
        .collect();
    let summary = format!(
        "{title}: last {}, lowest {}, highest {} over {} points",
        figure(last, unit),
        figure(min, unit),
        figure(max, unit),
        points.len()
    );
    html! {
        figure class="chart" {
            figcaption id={(id) "-caption"} { (title) ": " strong { (figure(last, unit)) } }
            svg viewBox={"0 0 " (WIDTH) " " (HEIGHT)} role="img" aria-label=(summary)
                preserveAspectRatio="none" data-points=(points.len()) {
                title { (summary) }
                line x1="0" y1=(HEIGHT - PAD) x2=(WIDTH) y2=(HEIGHT - PAD) class="axis" {}
                @if points.len() == 1 {
                    circle cx=(format!("{:.1}", x(points[0].0))) cy=(format!("{:.1}", y(last))) r="3" {}
                } @else {
                    polyline points=(line.join(" ")) fill="none" {}
                }
            }
            p class="range" { "lowest " (figure(min, unit)) ", highest " (figure(max, unit)) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_draws_every_point_and_says_its_figures() {
        let points = [(0, 10.0), (500, 50.0), (1000, 30.0)];
        let svg = line_chart("CPU usage", "%", &points, 0, 1000).into_string();
        assert!(
            svg.contains("<polyline points=\"4.0,122.8 280.0,70.0 556.0,96.4\""),
            "{svg}"
        );
        assert!(svg.contains("last 30.0%, lowest 10.0%, highest 50.0% over 3 points"));
        let empty = line_chart("CPU usage", "%", &[], 0, 1000).into_string();
        assert!(empty.contains("No data"));
    }

    #[test]
    fn network_figures_read_in_bits_per_second() {
        assert_eq!(figure(2_500_000.0, "bit/s"), "2.5 Mbit/s");
        assert_eq!(figure(1_500.0, "bit/s"), "1.5 kbit/s");
    }
}
