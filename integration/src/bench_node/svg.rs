//! A grouped bar chart as SVG text, written by hand: three panels (CPU % of one core, RSS mean,
//! RSS peak), one bar per agent in each, a colour per agent and a legend; each panel has its own
//! scale from zero, so the bars read as ratios without the numbers (which are printed on top).
//! Hand-written because it is ~80 lines; a plotting crate would add a font stack for the same.

use std::fmt::Write;

use super::{RunFigures, MIB};

const COLOURS: [&str; 4] = ["#2b7bba", "#e07b39", "#59a14f", "#b07aa1"];

/// A panel's title and the figure it plots.
type Panel = (&'static str, fn(&RunFigures) -> f64);

/// The chart of `rows` (agent name, median figures) under `title`.
pub fn grouped_bars(title: &str, rows: &[(String, RunFigures)]) -> String {
    let panels: [Panel; 3] = [
        ("CPU % of one core", |f| f.cpu_percent),
        ("RSS mean (MiB)", |f| f.rss_mean / MIB),
        ("RSS peak (MiB)", |f| f.rss_peak / MIB),
    ];
    let (pw, ph, top, left) = (260.0, 260.0, 60.0, 20.0);
    let width = left * 2.0 + pw * panels.len() as f64;
    let height = top + ph + 70.0;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ =
        write!(s, r#"<text x="{}" y="24" text-anchor="middle" font-size="14">{}</text>"#, width / 2.0, escape(title));
    let n = rows.len().max(1) as f64;
    for (p, (label, value)) in panels.iter().enumerate() {
        let x0 = left + pw * p as f64 + 20.0;
        let base = top + ph - 30.0;
        let plot_h = ph - 60.0;
        let max = rows.iter().map(|(_, f)| value(f)).fold(0.0, f64::max).max(f64::MIN_POSITIVE);
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle" font-weight="bold">{}</text>"#,
            x0 + (pw - 40.0) / 2.0,
            top,
            escape(label)
        );
        let _ = write!(s, r##"<line x1="{x0}" y1="{base}" x2="{}" y2="{base}" stroke="#333"/>"##, x0 + pw - 40.0);
        let bw = (pw - 40.0) / n * 0.7;
        for (i, (_, f)) in rows.iter().enumerate() {
            let v = value(f);
            let h = plot_h * v / max;
            let x = x0 + (pw - 40.0) / n * (i as f64 + 0.15);
            let _ = write!(
                s,
                r#"<rect x="{x:.1}" y="{:.1}" width="{bw:.1}" height="{h:.1}" fill="{}"/>"#,
                base - h,
                COLOURS[i % COLOURS.len()]
            );
            let _ = write!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                x + bw / 2.0,
                base - h - 4.0,
                if v >= 10.0 { format!("{v:.0}") } else { format!("{v:.1}") }
            );
        }
    }
    for (i, (name, _)) in rows.iter().enumerate() {
        let x = left + 20.0 + 180.0 * i as f64;
        let y = top + ph + 10.0;
        let _ = write!(s, r#"<rect x="{x}" y="{y}" width="14" height="14" fill="{}"/>"#, COLOURS[i % COLOURS.len()]);
        let _ = write!(s, r#"<text x="{}" y="{}">{}</text>"#, x + 20.0, y + 12.0, escape(name));
    }
    s.push_str("</svg>\n");
    s
}

fn escape(t: &str) -> String {
    t.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_largest_in_each_panel() {
        let f = |cpu: f64| RunFigures {
            cpu_percent: cpu,
            rss_mean: 10.0 * MIB,
            rss_peak: 20.0 * MIB,
            ..Default::default()
        };
        let svg = grouped_bars("t <1>", &[("a".into(), f(5.0)), ("b".into(), f(50.0))]);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("t &lt;1&gt;"));
        // The larger CPU bar is the full plot height (200), the smaller a tenth of it.
        assert!(svg.contains(r##"height="200.0" fill="#e07b39""##), "{svg}");
        assert!(svg.contains(r##"height="20.0" fill="#2b7bba""##), "{svg}");
    }
}
