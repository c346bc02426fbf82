//! A genotype's cells drawn as graphs, like the figures of the DARTS paper: inputs c_{k-2} and
//! c_{k-1} on the left, the intermediate nodes in the middle, c_{k} on the right, each edge
//! labelled with its op. The layout (`layout.rs`) is a small layered (Sugiyama-style) one,
//! computed here so the report needs no graphviz: nodes go in columns by longest path from the
//! inputs; every edge gets a waypoint in each column it crosses, and its label is a waypoint of
//! its own just before its target, so labels and long edges take space like nodes do and nothing
//! is drawn on top of anything else.

use super::layout::{Kind, Layout};
use super::svg::{
    document, esc, legend_svg, op_colour, px, state_svg, subscript_svg, GREY, LABEL_H, LABEL_SIZE,
    MARGIN, MONO,
};
use crate::error::{Error, Result};
use crate::nas::genotype::{validate_cell, validate_concat};
use crate::nas::primitives::Primitive;
use crate::nas::Genotype;

/// Horizontal room between a node column and the next (label) column, and from a label column
/// into the next node column: more on the way in, where edges bend to reach their port.
const GAP_OUT: f64 = 24.0;
const GAP_IN: f64 = 30.0;
const ARROW: f64 = 7.0;
const TITLE_H: f64 = 26.0;

/// One cell of `genotype` (the reduction cell if `reduce`) as a self-contained SVG document
/// titled "normal cell" or "reduction cell".
///
/// The number of intermediate nodes is taken from the cell itself (two pairs per node), so any
/// valid cell draws; an invalid one (an input from a later node, a concat state out of range,
/// an odd number of pairs, `none` ops) is an [`Error::InvalidArgument`].
///
/// ```
/// use darts::nas::Genotype;
/// let svg = darts::report::cell_svg(&Genotype::named("DARTS_V2").unwrap(), false).unwrap();
/// assert!(svg.starts_with("<svg") && svg.contains("sep_conv_3x3") && svg.contains("normal cell"));
/// ```
pub fn cell_svg(genotype: &Genotype, reduce: bool) -> Result<String> {
    let cell = Drawing::new(genotype, reduce)?;
    Ok(document(cell.width, cell.height, &cell.body))
}

/// Both cells of `genotype` side by side ("normal cell", "reduction cell") above a legend of
/// the ops they use, as one self-contained SVG document. Errors as [`cell_svg`].
pub fn genotype_svg(genotype: &Genotype) -> Result<String> {
    let normal = Drawing::new(genotype, false)?;
    let reduce = Drawing::new(genotype, true)?;
    let gap = 30.0;
    let width = normal.width + gap + reduce.width;
    let cells_h = normal.height.max(reduce.height);
    let (legend, legend_h) = legend_svg(&legend_entries(genotype), width);
    let body = format!(
        "{}<g transform=\"translate({},0)\">{}</g><g transform=\"translate(0,{})\">{legend}</g>",
        normal.body,
        px(normal.width + gap),
        reduce.body,
        px(cells_h)
    );
    Ok(document(width, cells_h + legend_h, &body))
}

/// The legend of a genotype's drawings as (name, colour, dashed): the ops it uses, each once,
/// in the DARTS order, then the grey concat edge.
pub(crate) fn legend_entries(genotype: &Genotype) -> Vec<(&'static str, &'static str, bool)> {
    let mut ops: Vec<Primitive> = genotype
        .normal
        .iter()
        .chain(&genotype.reduce)
        .map(|p| p.0)
        .collect();
    // Declaration order is the DARTS order, the NB201-only ops after it.
    ops.sort();
    ops.dedup();
    ops.into_iter()
        .map(|op| (op.name(), op_colour(op), false))
        .chain([("concat into output", GREY, false)])
        .collect()
}

/// A laid-out cell: the SVG body (no `<svg>` wrapper) and its size.
struct Drawing {
    body: String,
    width: f64,
    height: f64,
}

impl Drawing {
    fn new(genotype: &Genotype, reduce: bool) -> Result<Drawing> {
        let g = genotype;
        let (name, pairs, concat_name, concat, title) = if reduce {
            (
                "reduce",
                &g.reduce,
                "reduce_concat",
                &g.reduce_concat,
                "reduction cell",
            )
        } else {
            (
                "normal",
                &g.normal,
                "normal_concat",
                &g.normal_concat,
                "normal cell",
            )
        };
        if pairs.is_empty() || pairs.len() % 2 == 1 {
            return Err(Error::InvalidArgument(format!(
                "{name} cell: has {} (op, input) pairs; a cell needs 2 per intermediate node",
                pairs.len()
            )));
        }
        let steps = pairs.len() / 2;
        validate_cell(name, pairs, steps)?;
        validate_concat(concat_name, concat, steps)?;
        let mut layout = Layout::new(pairs, concat);
        layout.order();
        layout.place();
        Ok(layout.draw(title))
    }
}

impl Layout {
    fn draw(&self, title: &str) -> Drawing {
        let widths: Vec<f64> = self
            .cols
            .iter()
            .enumerate()
            .map(|(c, col)| {
                let w = col.iter().map(|&id| self.items[id].w).fold(0.0, f64::max);
                if c % 2 == 1 {
                    w.max(24.0)
                } else {
                    w
                }
            })
            .collect();
        let mut xs = Vec::with_capacity(widths.len());
        let mut x = MARGIN;
        for (c, w) in widths.iter().enumerate() {
            if c > 0 {
                x += if c % 2 == 0 { GAP_IN } else { GAP_OUT };
            }
            xs.push(x + w / 2.0);
            x += w;
        }
        let width = x + MARGIN;
        let top = self
            .items
            .iter()
            .map(|i| i.y - i.h / 2.0)
            .fold(f64::INFINITY, f64::min);
        let bottom = self
            .items
            .iter()
            .map(|i| i.y + i.h / 2.0)
            .fold(f64::NEG_INFINITY, f64::max);
        let dy = TITLE_H + MARGIN - top;
        let at = |id: usize| (xs[self.items[id].col], self.items[id].y + dy);
        let ports = self.ports();

        let mut lines = String::new();
        let mut labels = String::new();
        // Concat edges first, so the op edges are drawn over them.
        let mut edges: Vec<usize> = (0..self.edges.len()).collect();
        edges.sort_by_key(|&e| self.edges[e].1.is_some());
        for e in edges {
            let (chain, op) = &self.edges[e];
            let colour = op.map_or(GREY, op_colour);
            let (from, to) = (chain[0], chain[chain.len() - 1]);
            let (fx, fy) = at(from);
            let mut points = vec![(fx + self.items[from].w / 2.0, fy + ports[e].0)];
            for &id in &chain[1..chain.len() - 1] {
                let (x, y) = at(id);
                // Straight across the whole column: bends happen only between columns, where
                // there are no labels or nodes for an edge to run through.
                let across = widths[self.items[id].col] / 2.0;
                points.extend([(x - across, y), (x + across, y)]);
                let half = self.items[id].w / 2.0;
                if let Kind::Way { label: Some(op) } = self.items[id].kind {
                    labels += &format!(
                        "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{LABEL_H}\" rx=\"3\" fill=\"#fff\"/>\
                         <text x=\"{}\" y=\"{}\" text-anchor=\"middle\" dominant-baseline=\"central\" \
                         font-family=\"{MONO}\" font-size=\"{LABEL_SIZE}\" fill=\"{colour}\">{}</text>",
                        px(x - half),
                        px(y - LABEL_H / 2.0),
                        px(2.0 * half),
                        px(x),
                        px(y),
                        op.name()
                    );
                }
            }
            let (tx, ty) = at(to);
            let (ex, ey) = (tx - self.items[to].w / 2.0 - ARROW, ty + ports[e].1);
            points.push((ex, ey));
            let mut d = format!("M{},{}", px(points[0].0), px(points[0].1));
            for p in points.windows(2) {
                let ((x0, y0), (x1, y1)) = (p[0], p[1]);
                let mid = (x0 + x1) / 2.0;
                d += &format!(
                    "C{},{} {},{} {},{}",
                    px(mid),
                    px(y0),
                    px(mid),
                    px(y1),
                    px(x1),
                    px(y1)
                );
            }
            let width = if op.is_some() { 1.6 } else { 1.2 };
            lines += &format!(
                "<path d=\"{d}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"{width}\"/>\
                 <path d=\"M{},{}L{},{}L{},{}Z\" fill=\"{colour}\"/>",
                px(ex),
                px(ey - ARROW / 2.0),
                px(ex + ARROW),
                px(ey),
                px(ex),
                px(ey + ARROW / 2.0)
            );
        }

        let mut nodes = String::new();
        let out = self
            .items
            .iter()
            .filter(|i| matches!(i.kind, Kind::Node(_)))
            .count()
            - 1;
        for (id, item) in self.items.iter().enumerate() {
            let Kind::Node(s) = item.kind else { continue };
            let (x, y) = at(id);
            let (fill, stroke, text) = match s {
                0 | 1 => ("#d9ead3", "#6a8f5e", state_svg(s)),
                _ if s == out => ("#fff2cc", "#b8962e", subscript_svg("k")),
                _ => ("#dae8fc", "#6c8ebf", state_svg(s)),
            };
            nodes += &format!(
                "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" rx=\"6\" fill=\"{fill}\" \
                 stroke=\"{stroke}\" stroke-width=\"1.2\"/>\
                 <text x=\"{}\" y=\"{}\" text-anchor=\"middle\" dominant-baseline=\"central\" \
                 font-size=\"13\" fill=\"#222\">{text}</text>",
                px(x - item.w / 2.0),
                px(y - item.h / 2.0),
                px(item.w),
                px(item.h),
                px(x),
                px(y)
            );
        }
        let body = format!(
            "<text x=\"{MARGIN}\" y=\"18\" font-size=\"14\" font-weight=\"bold\" fill=\"#222\">{}</text>\
             {lines}{labels}{nodes}",
            esc(title)
        );
        Drawing {
            body,
            width,
            height: bottom + dy + MARGIN,
        }
    }
}
