//! Drawings of the architecture weights: a heatmap of the final softmaxed alphas (edges by ops)
//! and small multiples of how each edge's weights moved over the epochs.

use super::chart::{line_chart, Chart, Series, Ticks};
use super::edges::Edge;
use super::svg::{document, esc, op_colour, px, MONO};
use crate::nas::primitives::Primitive;

const CELL_W: f64 = 60.0;
const CELL_H: f64 = 20.0;
const NODE_GAP: f64 = 6.0;
const ROW_LABEL_W: f64 = 74.0;
const MARGIN_W: f64 = 52.0;

/// Heatmap of one cell's softmaxed alphas: a row per edge of `edges` (grouped by the node it
/// goes into), a column per op, each cell coloured on a scale from the smallest to the largest
/// weight and printed, and a last column with each row's margin (the leading op's weight over
/// the runner-up's; `None` where a row has no runner-up). `kept` lists the (row, column) pairs
/// the genotype kept; they are outlined.
pub(crate) fn heatmap(
    title: &str,
    alphas: &[Vec<f64>],
    primitives: &[Primitive],
    edges: &[Edge],
    kept: &[(usize, usize)],
    margins: &[Option<f64>],
) -> String {
    // Scaled from the smallest weight, not from 0: early in a search all weights sit near
    // 1 / ops and a scale from 0 would paint them one flat colour. The printed values and the
    // colour bar keep the scale honest.
    let (vmin, vmax) = alphas
        .iter()
        .flatten()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    let span = (vmax - vmin).max(1e-9);
    let top = 62.0;
    let row_y = |r: usize| top + r as f64 * CELL_H + edges[r].group as f64 * NODE_GAP;
    let grid_w = CELL_W * primitives.len() as f64;
    let grid_h = row_y(edges.len() - 1) + CELL_H - top;

    let mut out = format!(
        "<text x=\"4\" y=\"17\" font-size=\"14\" font-weight=\"bold\" fill=\"#222\">{}</text>",
        esc(title)
    );
    // Op names on two lines ("sep_conv" / "3x3") so the columns stay narrow.
    for (c, &op) in primitives.iter().enumerate() {
        let x = ROW_LABEL_W + (c as f64 + 0.5) * CELL_W;
        let name = op.name();
        let (a, b) = name.rsplit_once('_').unwrap_or((name, ""));
        out += &format!(
            "<text x=\"{}\" y=\"36\" text-anchor=\"middle\" font-family=\"{MONO}\" font-size=\"10.5\" \
             fill=\"{colour}\">{a}<tspan x=\"{}\" dy=\"13\">{b}</tspan></text>\
             <rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"3\" fill=\"{colour}\"/>",
            px(x),
            px(x),
            px(x - CELL_W / 2.0 + 2.0),
            px(top - 6.0),
            px(CELL_W - 4.0),
            colour = op_colour(op)
        );
    }
    for (r, (row, edge)) in alphas.iter().zip(edges).enumerate() {
        let y = row_y(r);
        out += &format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\" dominant-baseline=\"central\" font-size=\"12\" \
             fill=\"#333\">{}</text>",
            px(ROW_LABEL_W - 8.0),
            px(y + CELL_H / 2.0),
            edge.label
        );
        for (c, &v) in row.iter().enumerate() {
            let x = ROW_LABEL_W + c as f64 * CELL_W;
            let t = ((v - vmin) / span).clamp(0.0, 1.0);
            let ink = if t > 0.55 { "#fff" } else { "#222" };
            out += &format!(
                "<rect x=\"{}\" y=\"{}\" width=\"{CELL_W}\" height=\"{CELL_H}\" fill=\"{}\"/>\
                 <text x=\"{}\" y=\"{}\" text-anchor=\"middle\" dominant-baseline=\"central\" \
                 font-size=\"11\" fill=\"{ink}\">{v:.3}</text>",
                px(x),
                px(y),
                blues(t),
                px(x + CELL_W / 2.0),
                px(y + CELL_H / 2.0)
            );
        }
    }
    out += &format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"10.5\" fill=\"#444\">margin</text>",
        px(ROW_LABEL_W + grid_w + MARGIN_W / 2.0),
        px(top - 10.0)
    );
    for (r, m) in margins.iter().enumerate() {
        let Some(m) = m else { continue };
        out += &format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" dominant-baseline=\"central\" \
             font-size=\"11\" fill=\"#333\">+{m:.3}</text>",
            px(ROW_LABEL_W + grid_w + MARGIN_W / 2.0),
            px(row_y(r) + CELL_H / 2.0)
        );
    }
    for &(r, c) in kept {
        out += &format!(
            "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#e8175d\" \
             stroke-width=\"2.5\"/>",
            px(ROW_LABEL_W + c as f64 * CELL_W + 1.25),
            px(row_y(r) + 1.25),
            px(CELL_W - 2.5),
            px(CELL_H - 2.5)
        );
    }
    // Colour bar: stacked bands rather than a gradient, which would need a document-unique id.
    let bar_x = ROW_LABEL_W + grid_w + MARGIN_W + 18.0;
    let bands = 48;
    for i in 0..bands {
        let band_h = grid_h / bands as f64;
        out += &format!(
            "<rect x=\"{}\" y=\"{}\" width=\"12\" height=\"{}\" fill=\"{}\"/>",
            px(bar_x),
            px(top + grid_h - (i + 1) as f64 * band_h),
            px(band_h + 0.5),
            blues((i as f64 + 0.5) / bands as f64)
        );
    }
    for frac in [0.0, 0.5, 1.0] {
        let value = vmin + frac * span;
        out += &format!(
            "<text x=\"{}\" y=\"{}\" dominant-baseline=\"central\" font-size=\"10.5\" fill=\"#444\">{value:.3}</text>",
            px(bar_x + 16.0),
            px(top + grid_h * (1.0 - frac))
        );
    }
    document(bar_x + 54.0, top + grid_h + 8.0, &out)
}

/// A sequential white-to-navy colour scale (ColorBrewer "Blues") at `t` in 0..=1.
fn blues(t: f64) -> String {
    const STOPS: [[f64; 3]; 5] = [
        [247.0, 251.0, 255.0],
        [198.0, 219.0, 239.0],
        [107.0, 174.0, 214.0],
        [33.0, 113.0, 181.0],
        [8.0, 48.0, 107.0],
    ];
    let x = t.clamp(0.0, 1.0) * (STOPS.len() - 1) as f64;
    let i = (x.floor() as usize).min(STOPS.len() - 2);
    let f = x - i as f64;
    let c: Vec<u8> = (0..3)
        .map(|k| (STOPS[i][k] + (STOPS[i + 1][k] - STOPS[i][k]) * f).round() as u8)
        .collect();
    format!("#{:02x}{:02x}{:02x}", c[0], c[1], c[2])
}

/// One cell's alphas at one epoch: (epoch, rows of softmaxed weights).
pub(crate) type AlphaSnapshot<'a> = (usize, &'a [Vec<f64>]);

/// Small multiples of the weights over the epochs: one chart per edge of `edges`, a row of
/// charts per node they go into, one line per op, all on one y scale so the charts
/// compare. Edges the genotype kept (`kept`, as for [`heatmap`]) get a dark frame and the kept
/// op's name in their title.
pub(crate) fn evolution(
    title: &str,
    history: &[AlphaSnapshot],
    primitives: &[Primitive],
    edges: &[Edge],
    kept: &[(usize, usize)],
) -> String {
    let (cw, ch, gap) = (228.0, 140.0, 12.0);
    let top = 28.0;
    let ymax = history
        .iter()
        .flat_map(|h| h.1.iter().flatten())
        .copied()
        .fold(0.0, f64::max);
    let y_range = {
        let t = Ticks::new(0.0, ymax.max(1e-6), 3, false, false);
        (t.lo, t.hi)
    };
    let mut out = format!(
        "<text x=\"4\" y=\"17\" font-size=\"14\" font-weight=\"bold\" fill=\"#222\">{}</text>",
        esc(title)
    );
    for (row, edge) in edges.iter().enumerate() {
        let series: Vec<Series> = primitives
            .iter()
            .enumerate()
            .map(|(c, &op)| Series {
                name: op.name().to_string(),
                colour: op_colour(op),
                points: history
                    .iter()
                    .filter_map(|&(epoch, rows)| Some((epoch as f64, *rows.get(row)?.get(c)?)))
                    .collect(),
                dashed: op == Primitive::None,
            })
            .collect();
        let kept_ops: String = kept
            .iter()
            .filter(|k| k.0 == row)
            .filter_map(|k| primitives.get(k.1))
            .map(|&op| format!(" · <tspan fill=\"{}\">{}</tspan>", op_colour(op), op.name()))
            .collect();
        let chart = Chart {
            title: &format!("{}{kept_ops}", edge.label),
            x_label: "",
            y_label: "",
            width: cw,
            height: ch,
            y_range: Some(y_range),
            legend: false,
            frame: (!kept_ops.is_empty()).then_some(("#222", 2.0)),
            font: 10.0,
        };
        out += &format!(
            "<g transform=\"translate({},{})\">{}</g>",
            px(edge.from as f64 * (cw + gap)),
            px(top + edge.group as f64 * (ch + gap)),
            line_chart(&chart, &series)
        );
    }
    let extent = |at: fn(&Edge) -> usize| edges.iter().map(at).max().map_or(0, |m| m + 1) as f64;
    let (cols, rows) = (extent(|e| e.from), extent(|e| e.group));
    document(cols * (cw + gap), top + rows * (ch + gap), &out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_scale_ends() {
        assert_eq!(blues(0.0), "#f7fbff");
        assert_eq!(blues(1.0), "#08306b");
        assert_eq!(blues(2.0), "#08306b");
        assert_eq!(blues(0.5), "#6baed6");
    }
}
