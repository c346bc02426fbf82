//! Line charts as SVG: axes with round-numbered ticks, a light grid, a legend, and markers on
//! the points when there are few of them (a one-epoch run is a single dot, not an empty plot).

use super::svg::{esc, px, sans_width};

/// One line of a chart.
pub(crate) struct Series {
    pub name: String,
    pub colour: &'static str,
    /// (x, y) in data units; only finite values.
    pub points: Vec<(f64, f64)>,
    pub dashed: bool,
}

/// A shaded range behind the lines (e.g. mean ± std over runs).
pub(crate) struct Band {
    pub colour: &'static str,
    /// (x, low, high) in data units; only finite values.
    pub points: Vec<(f64, f64, f64)>,
}

/// What a chart shows besides its series.
pub(crate) struct Chart<'a> {
    /// SVG text content (may hold tspans), written as is: callers pass trusted markup.
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub width: f64,
    pub height: f64,
    /// A fixed y domain, so small multiples share one scale; from the data otherwise.
    pub y_range: Option<(f64, f64)>,
    pub legend: bool,
    /// Frame colour and width around the plot area, to single out a chart.
    pub frame: Option<(&'a str, f64)>,
    pub font: f64,
}

/// The chart as an SVG fragment whose origin is its top-left corner.
pub(crate) fn line_chart(c: &Chart, series: &[Series]) -> String {
    banded_chart(c, series, &[])
}

/// [`line_chart`] with `bands` shaded behind the lines; the axes hold the bands too.
pub(crate) fn banded_chart(c: &Chart, series: &[Series], bands: &[Band]) -> String {
    let points = || series.iter().flat_map(|s| s.points.iter().copied());
    let band_points = || {
        bands
            .iter()
            .flat_map(|b| b.points.iter().flat_map(|&(x, lo, hi)| [(x, lo), (x, hi)]))
    };
    let (x_lo, x_hi) = bounds(points().chain(band_points()).map(|p| p.0));
    let (y_lo, y_hi) = c
        .y_range
        .unwrap_or_else(|| bounds(points().chain(band_points()).map(|p| p.1)));
    let xs = Ticks::new(x_lo, x_hi, (c.width / 55.0).max(2.0) as usize, true, true);
    let fixed = c.y_range.is_some();
    let ys = Ticks::new(
        y_lo,
        y_hi,
        (c.height / 40.0).max(2.0) as usize,
        false,
        fixed,
    );
    let f = c.font;

    let legend_w: f64 = series.iter().map(|s| sans_width(&s.name, f) + 30.0).sum();
    let title_w = sans_width(c.title, f + 1.0).min(c.width);
    let legend_row = c.legend && title_w + legend_w + 20.0 > c.width;
    let top = f * 2.4 + if legend_row { f * 1.6 } else { 0.0 };
    let y_label_w = if c.y_label.is_empty() { 0.0 } else { f * 1.5 };
    let tick_w = ys
        .labels()
        .iter()
        .map(|l| sans_width(l, f * 0.9))
        .fold(0.0, f64::max);
    let left = y_label_w + tick_w + 8.0;
    let bottom = f * 1.6 + if c.x_label.is_empty() { 0.0 } else { f * 1.4 };
    let (pw, ph) = (
        (c.width - left - 10.0).max(10.0),
        (c.height - top - bottom).max(10.0),
    );
    let sx = |x: f64| left + (x - xs.lo) / (xs.hi - xs.lo) * pw;
    let sy = |y: f64| top + ph - (y - ys.lo) / (ys.hi - ys.lo) * ph;

    let mut out = format!(
        "<text x=\"0\" y=\"{}\" font-size=\"{}\" font-weight=\"bold\" fill=\"#222\">{}</text>",
        px(f * 1.2),
        px(f + 1.0),
        c.title
    );
    if c.legend {
        let (mut x, y) = if legend_row {
            (left, f * 2.7)
        } else {
            (c.width - legend_w, f * 0.8)
        };
        for s in series {
            let dash = if s.dashed {
                " stroke-dasharray=\"5 3\""
            } else {
                ""
            };
            out += &format!(
                "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{}\" stroke-width=\"2.5\"{dash}/>\
                 <text x=\"{}\" y=\"{}\" font-size=\"{}\" dominant-baseline=\"central\" fill=\"#333\">{}</text>",
                px(x),
                px(y),
                px(x + 20.0),
                px(y),
                s.colour,
                px(x + 24.0),
                px(y),
                px(f),
                esc(&s.name)
            );
            x += sans_width(&s.name, f) + 30.0;
        }
    }
    for (t, label) in ys.values().into_iter().zip(ys.labels()) {
        let y = sy(t);
        out += &format!(
            "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#e6e6e6\"/>\
             <text x=\"{}\" y=\"{}\" font-size=\"{}\" text-anchor=\"end\" dominant-baseline=\"central\" \
             fill=\"#555\">{label}</text>",
            px(left),
            px(y),
            px(left + pw),
            px(y),
            px(left - 4.0),
            px(y),
            px(f * 0.9)
        );
    }
    for (t, label) in xs.values().into_iter().zip(xs.labels()) {
        let x = sx(t);
        out += &format!(
            "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#f0f0f0\"/>\
             <line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#888\"/>\
             <text x=\"{}\" y=\"{}\" font-size=\"{}\" text-anchor=\"middle\" fill=\"#555\">{label}</text>",
            px(x),
            px(top),
            px(x),
            px(top + ph),
            px(x),
            px(top + ph),
            px(x),
            px(top + ph + 4.0),
            px(x),
            px(top + ph + f * 1.3),
            px(f * 0.9)
        );
    }
    let (frame, frame_w) = c.frame.unwrap_or(("#888", 1.0));
    out += &format!(
        "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"{frame}\" \
         stroke-width=\"{frame_w}\"/>",
        px(left),
        px(top),
        px(pw),
        px(ph)
    );
    if !c.x_label.is_empty() {
        out += &format!(
            "<text x=\"{}\" y=\"{}\" font-size=\"{}\" text-anchor=\"middle\" fill=\"#444\">{}</text>",
            px(left + pw / 2.0),
            px(c.height - 3.0),
            px(f),
            esc(c.x_label)
        );
    }
    if !c.y_label.is_empty() {
        let (x, y) = (f, top + ph / 2.0);
        out += &format!(
            "<text transform=\"translate({},{}) rotate(-90)\" font-size=\"{}\" text-anchor=\"middle\" \
             fill=\"#444\">{}</text>",
            px(x),
            px(y),
            px(f),
            esc(c.y_label)
        );
    }
    for b in bands.iter().filter(|b| !b.points.is_empty()) {
        // Along the upper edge, then back along the lower one.
        let upper = b.points.iter().map(|&(x, _, hi)| (x, hi));
        let lower = b.points.iter().rev().map(|&(x, lo, _)| (x, lo));
        let d: Vec<String> = upper
            .chain(lower)
            .map(|(x, y)| format!("{},{}", px(sx(x)), px(sy(y))))
            .collect();
        out += &format!(
            "<polygon points=\"{}\" fill=\"{}\" fill-opacity=\"0.18\" stroke=\"none\"/>",
            d.join(" "),
            b.colour
        );
    }
    for s in series.iter().filter(|s| !s.points.is_empty()) {
        let d: Vec<String> = s
            .points
            .iter()
            .map(|&(x, y)| format!("{},{}", px(sx(x)), px(sy(y))))
            .collect();
        let dash = if s.dashed {
            " stroke-dasharray=\"5 3\""
        } else {
            ""
        };
        out += &format!(
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"{}\" \
             stroke-linejoin=\"round\"{dash}/>",
            d.join(" "),
            s.colour,
            px(if c.font < 11.0 { 1.4 } else { 2.0 })
        );
        // Dots show where the epochs are; past a few dozen (a dozen in a small chart) they clutter.
        if s.points.len() <= if c.font < 11.0 { 12 } else { 40 } {
            let r = if s.points.len() == 1 { 3.5 } else { 2.2 };
            for &(x, y) in &s.points {
                out += &format!(
                    "<circle cx=\"{}\" cy=\"{}\" r=\"{r}\" fill=\"{}\"/>",
                    px(sx(x)),
                    px(sy(y)),
                    s.colour
                );
            }
        }
    }
    out
}

/// The smallest and largest of `values`, or (0, 1) when there are none.
fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values
        .fold(None, |acc: Option<(f64, f64)>, v| {
            Some(acc.map_or((v, v), |(lo, hi)| (lo.min(v), hi.max(v))))
        })
        .unwrap_or((0.0, 1.0))
}

/// Evenly spaced axis ticks at round numbers (1, 2 or 5 times a power of ten).
pub(crate) struct Ticks {
    pub lo: f64,
    pub hi: f64,
    step: f64,
    /// The first and last tick in steps; ticks are whole multiples of `step`, so zero is exactly
    /// zero.
    first: f64,
    last: f64,
    decimals: usize,
}

impl Ticks {
    /// About `target` ticks over `lo..=hi`, whole numbers only if `integer` (epochs). Unless
    /// `fixed`, the range grows to the ticks just outside it, so the data sits inside round
    /// bounds; a fixed range (epochs, a scale shared by small multiples) is kept as given. An
    /// empty range is widened so the single value sits mid-axis.
    pub fn new(mut lo: f64, mut hi: f64, target: usize, integer: bool, fixed: bool) -> Ticks {
        if hi - lo < 1e-12 {
            let pad = if integer || lo == 0.0 {
                1.0
            } else {
                lo.abs() * 0.1
            };
            (lo, hi) = (lo - pad, hi + pad);
        }
        let raw = (hi - lo) / target.max(1) as f64;
        let magnitude = 10f64.powf(raw.log10().floor());
        let mut step = [1.0, 2.0, 5.0, 10.0]
            .into_iter()
            .map(|m| m * magnitude)
            .find(|&s| s >= raw * 0.999)
            .unwrap_or(10.0 * magnitude);
        if integer {
            step = step.max(1.0).round();
        }
        let decimals = (-step.log10().floor()).max(0.0) as usize;
        let (first, last) = if fixed {
            ((lo / step - 1e-9).ceil(), (hi / step + 1e-9).floor())
        } else {
            let (first, last) = ((lo / step).floor(), (hi / step).ceil());
            (lo, hi) = (first * step, last * step);
            (first, last)
        };
        Ticks {
            lo,
            hi,
            step,
            first,
            last,
            decimals,
        }
    }

    pub fn values(&self) -> Vec<f64> {
        let n = (self.last - self.first).max(0.0).round() as usize;
        (0..=n)
            .map(|k| (self.first + k as f64) * self.step)
            .collect()
    }

    pub fn labels(&self) -> Vec<String> {
        // `+ 0.0` turns -0.0 into 0.0, so no tick reads "-0".
        self.values()
            .iter()
            .map(|v| format!("{:.*}", self.decimals, v + 0.0))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round() {
        let t = Ticks::new(0.13, 0.87, 5, false, false);
        assert_eq!(t.labels(), ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]);
        assert_eq!((t.lo, t.hi), (0.0, 1.0));
        let t = Ticks::new(0.13, 0.87, 5, false, true);
        assert_eq!(t.labels(), ["0.2", "0.4", "0.6", "0.8"]);
        assert_eq!((t.lo, t.hi), (0.13, 0.87));
        let t = Ticks::new(1.0, 30.0, 6, true, true);
        assert_eq!(t.labels(), ["5", "10", "15", "20", "25", "30"]);
        // one epoch: an integer axis around it
        let t = Ticks::new(1.0, 1.0, 6, true, true);
        assert_eq!(t.labels(), ["0", "1", "2"]);
        let t = Ticks::new(2.3, 2.3, 4, false, false);
        assert!(t.lo < 2.3 && t.hi > 2.3, "{} {}", t.lo, t.hi);
        let t = Ticks::new(-0.04, 0.02, 3, false, false);
        assert_eq!(t.labels(), ["-0.04", "-0.02", "0.00", "0.02"]);
    }

    #[test]
    fn bounds_of_nothing() {
        assert_eq!(bounds([].into_iter()), (0.0, 1.0));
        assert_eq!(bounds([3.0, -1.0].into_iter()), (-1.0, 3.0));
    }
}
