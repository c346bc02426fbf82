//! Helpers shared by the report's drawings: escaping, the op palette, cell-state names and
//! text-width estimates. We lay text out ourselves (no font engine), so widths are estimates
//! from fixed per-character advances, generous enough that labels never collide.

use crate::nas::primitives::Primitive;

/// Font stack for op names. Monospace, so a label's width is exactly its length times the
/// advance and the layout can reserve room for it.
pub(crate) const MONO: &str = "DejaVu Sans Mono, Menlo, Consolas, monospace";
/// Font stack for everything else.
pub(crate) const SANS: &str = "DejaVu Sans, Helvetica, Arial, sans-serif";
/// Colour of the unlabelled concat edges into c_{k} and of neutral chart ink.
pub(crate) const GREY: &str = "#9a9a9a";

/// Room around a drawing's contents.
pub(crate) const MARGIN: f64 = 10.0;
/// Font size of the op names on edges and in legends.
pub(crate) const LABEL_SIZE: f64 = 11.0;
/// Height of the white box behind an op name on an edge.
pub(crate) const LABEL_H: f64 = 16.0;

/// Escapes text for use inside XML/HTML element content and attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// One colour per op, used by every drawing in the report so a colour means the same op
/// everywhere. Category-10 hues, darkened where needed to stay readable as text on white.
pub(crate) fn op_colour(op: Primitive) -> &'static str {
    match op {
        Primitive::None => "#7f7f7f",
        Primitive::MaxPool3x3 => "#d62728",
        Primitive::AvgPool3x3 => "#e07b00",
        Primitive::SkipConnect => "#2ca02c",
        Primitive::SepConv3x3 => "#1f77b4",
        Primitive::SepConv5x5 => "#0e8a96",
        Primitive::DilConv3x3 => "#9467bd",
        Primitive::DilConv5x5 => "#8c564b",
        Primitive::NorConv1x1 => "#b8860b",
        Primitive::NorConv3x3 => "#c2185b",
    }
}

/// A standalone SVG document of the given size around `body`, on a white background (so it
/// reads the same when opened on its own as inside the report).
pub(crate) fn document(width: f64, height: f64, body: &str) -> String {
    let (w, h) = (px(width), px(height));
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
         viewBox=\"0 0 {w} {h}\" font-family=\"{SANS}\">\
         <rect width=\"{w}\" height=\"{h}\" fill=\"#fff\"/>{body}</svg>"
    )
}

/// A legend for a drawing `width` wide: a row (wrapping) of (name, colour, dashed) line
/// swatches. Returns the SVG fragment and its height.
pub(crate) fn legend_svg(entries: &[(&str, &str, bool)], width: f64) -> (String, f64) {
    let (mut x, mut y, row_h) = (MARGIN, 14.0, 20.0);
    let mut out = String::new();
    for &(name, colour, dashed) in entries {
        let w = 26.0 + mono_width(name, LABEL_SIZE) + 18.0;
        if x + w > width && x > MARGIN {
            x = MARGIN;
            y += row_h;
        }
        let dash = if dashed {
            " stroke-dasharray=\"5 3\""
        } else {
            ""
        };
        out += &format!(
            "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{colour}\" stroke-width=\"2.5\"{dash}/>\
             <text x=\"{}\" y=\"{}\" font-family=\"{MONO}\" font-size=\"{LABEL_SIZE}\" \
             dominant-baseline=\"central\" fill=\"#333\">{}</text>",
            px(x),
            px(y),
            px(x + 20.0),
            px(y),
            px(x + 26.0),
            px(y),
            esc(name)
        );
        x += w;
    }
    (out, y + 14.0)
}

/// A coordinate with one decimal: enough for screen pixels, and keeps the files small.
pub(crate) fn px(x: f64) -> String {
    format!("{x:.1}")
}

/// Width of `text` in the monospace stack at `size` px (DejaVu Sans Mono advances 0.602 em).
pub(crate) fn mono_width(text: &str, size: f64) -> f64 {
    text.chars().count() as f64 * 0.61 * size
}

/// A generous estimate of `text`'s width in the sans stack at `size` px.
pub(crate) fn sans_width(text: &str, size: f64) -> f64 {
    text.chars().count() as f64 * 0.62 * size
}

/// SVG text content for `c` with subscript `sub`. `dy` shifts rather than `baseline-shift`,
/// which not every renderer supports; the trailing empty tspan returns to the baseline so
/// text appended afterwards sits where it should.
pub(crate) fn subscript_svg(sub: &str) -> String {
    format!("c<tspan dy=\"0.3em\" font-size=\"75%\">{sub}</tspan><tspan dy=\"-0.3em\"></tspan>")
}

/// SVG text content naming cell state `s`, with a real subscript for the inputs.
pub(crate) fn state_svg(s: usize) -> String {
    match s {
        0 => subscript_svg("k-2"),
        1 => subscript_svg("k-1"),
        _ => (s - 2).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(esc("<a & 'b'>"), "&lt;a &amp; &#39;b&#39;&gt;");
        assert_eq!(esc("\""), "&quot;");
    }
}
