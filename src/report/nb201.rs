//! A NAS-Bench-201 cell drawn as its DAG: nodes 0 to 3 in a row (0 the cell's input, 3 its
//! output, the sum of its inputs), an edge i→j for each op, coloured and labelled with it. The
//! graph is fixed, so is the layout: the edges between neighbours run straight, 0→2 and 0→3
//! arch over the row (0→3 the wider) and 1→3 under it, so no two edges or labels cross.
//! A `none` edge is absent from the network; it is drawn dashed grey without a label.

use super::svg::{
    document, legend_svg, mono_width, op_colour, px, sans_width, GREY, LABEL_H, LABEL_SIZE, MARGIN,
    MONO,
};
use crate::nas::primitives::Primitive;
use crate::nas::space::nb201::{Nb201Arch, Nb201Op, EDGES};

const NODE_W: f64 = 34.0;
const NODE_H: f64 = 30.0;
/// Between node centres: room for the longest op name on the straight edges.
const SPACING: f64 = 160.0;
/// How far the control points of each arch sit from the row: 0→2, 0→3, 1→3. A cubic's apex is
/// 3/4 of that away, so 0→3's label clears 0→2's label and arc.
const LIFT: [f64; 3] = [60.0, 150.0, 60.0];
/// Where the two arches leaving node 0's top start (and 0→3 ends on node 3), so they do not
/// share a point.
const PORT: f64 = 7.0;
const ARROW: f64 = 7.0;
const TITLE_H: f64 = 26.0;
const CAPTION_SIZE: f64 = 12.0;

/// The cell alone, titled "NAS-Bench-201 cell", as a self-contained SVG document.
///
/// ```
/// let arch = darts::nas::space::NB201_BEST.parse().unwrap();
/// let svg = darts::report::nb201_cell_svg(&arch);
/// assert!(svg.starts_with("<svg") && svg.contains("nor_conv_3x3") && svg.contains("output"));
/// assert!(!svg.contains("stroke-dasharray"), "no edge is `none`");
/// ```
pub fn nb201_cell_svg(arch: &Nb201Arch) -> String {
    let d = Drawing::new(arch);
    document(d.width, d.height, &d.body)
}

/// The cell above a legend of the ops it uses, as a self-contained SVG document.
pub fn nb201_svg(arch: &Nb201Arch) -> String {
    let d = Drawing::new(arch);
    let (legend, legend_h) = legend_svg(&legend_entries(arch), d.width);
    let body = format!(
        "{}<g transform=\"translate(0,{})\">{legend}</g>",
        d.body,
        px(d.height)
    );
    document(d.width, d.height + legend_h, &body)
}

/// The legend of `arch`'s drawing as (name, colour, dashed): the ops it uses in the search
/// space's order, then `none` if some edge is absent.
pub(crate) fn legend_entries(arch: &Nb201Arch) -> Vec<(&'static str, &'static str, bool)> {
    let mut entries: Vec<_> = Nb201Op::ALL[1..]
        .iter()
        .filter(|op| arch.ops.contains(op))
        .map(|&op| (op.name(), op_colour(Primitive::from(op)), false))
        .collect();
    if arch.ops.contains(&Nb201Op::None) {
        entries.push(("none (no edge)", GREY, true));
    }
    entries
}

struct Drawing {
    body: String,
    width: f64,
    height: f64,
}

impl Drawing {
    fn new(arch: &Nb201Arch) -> Drawing {
        let caption_w = sans_width("output", CAPTION_SIZE) + 8.0;
        let x = |node: usize| MARGIN + caption_w + NODE_W / 2.0 + node as f64 * SPACING;
        let top = TITLE_H + MARGIN + 0.75 * LIFT[1] + LABEL_H / 2.0 + 4.0;
        let (cy, bottom) = (top + NODE_H / 2.0, top + NODE_H);

        let (mut lines, mut labels) = (String::new(), String::new());
        for (&(from, to), &op) in EDGES.iter().zip(&arch.ops) {
            let (fx, tx) = (x(from), x(to));
            // The path as a cubic (start, two control points, end) and the arrowhead's tip.
            let (curve, tip) = match (from, to) {
                (0, 2) | (0, 3) => {
                    let lift = LIFT[to - 2];
                    let (sx, ex) = if to == 3 {
                        (fx - PORT, tx + PORT)
                    } else {
                        (fx + PORT, tx)
                    };
                    let end = (ex, top - ARROW);
                    let curve = [(sx, top), (sx, top - lift), (ex, top - lift), end];
                    (curve, (ex, top))
                }
                (1, 3) => {
                    let end = (tx, bottom + ARROW);
                    let lift = LIFT[2];
                    let curve = [(fx, bottom), (fx, bottom + lift), (tx, bottom + lift), end];
                    (curve, (tx, bottom))
                }
                // Neighbours: straight from side to side.
                _ => {
                    let (s, e) = ((fx + NODE_W / 2.0, cy), (tx - NODE_W / 2.0 - ARROW, cy));
                    ([s, s, e, e], (tx - NODE_W / 2.0, cy))
                }
            };
            let [p0, p1, p2, p3] = curve;
            let d = format!(
                "M{},{}C{},{} {},{} {},{}",
                px(p0.0),
                px(p0.1),
                px(p1.0),
                px(p1.1),
                px(p2.0),
                px(p2.1),
                px(p3.0),
                px(p3.1)
            );
            if op == Nb201Op::None {
                lines += &format!(
                    "<path d=\"{d}\" fill=\"none\" stroke=\"{GREY}\" stroke-width=\"1.2\" \
                     stroke-dasharray=\"5 3\"/>"
                );
                continue;
            }
            let colour = op_colour(Primitive::from(op));
            lines += &format!(
                "<path d=\"{d}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.6\"/>\
                 <path d=\"{}\" fill=\"{colour}\"/>",
                arrowhead(p3, tip)
            );
            // The label sits on the curve's midpoint, on a white box that hides the line.
            let (lx, ly) = (
                (p0.0 + 3.0 * p1.0 + 3.0 * p2.0 + p3.0) / 8.0,
                (p0.1 + 3.0 * p1.1 + 3.0 * p2.1 + p3.1) / 8.0,
            );
            let w = mono_width(op.name(), LABEL_SIZE) + 8.0;
            labels += &format!(
                "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{LABEL_H}\" rx=\"3\" fill=\"#fff\"/>\
                 <text x=\"{}\" y=\"{}\" text-anchor=\"middle\" dominant-baseline=\"central\" \
                 font-family=\"{MONO}\" font-size=\"{LABEL_SIZE}\" fill=\"{colour}\">{}</text>",
                px(lx - w / 2.0),
                px(ly - LABEL_H / 2.0),
                px(w),
                px(lx),
                px(ly),
                op.name()
            );
        }

        let mut nodes = String::new();
        for node in 0..4 {
            let (fill, stroke) = match node {
                0 => ("#d9ead3", "#6a8f5e"),
                3 => ("#fff2cc", "#b8962e"),
                _ => ("#dae8fc", "#6c8ebf"),
            };
            nodes += &format!(
                "<rect x=\"{}\" y=\"{}\" width=\"{NODE_W}\" height=\"{NODE_H}\" rx=\"6\" \
                 fill=\"{fill}\" stroke=\"{stroke}\" stroke-width=\"1.2\"/>\
                 <text x=\"{}\" y=\"{}\" text-anchor=\"middle\" dominant-baseline=\"central\" \
                 font-size=\"13\" fill=\"#222\">{node}</text>",
                px(x(node) - NODE_W / 2.0),
                px(top),
                px(x(node)),
                px(cy)
            );
        }
        let caption = |at: f64, anchor: &str, text: &str| {
            format!(
                "<text x=\"{}\" y=\"{}\" text-anchor=\"{anchor}\" dominant-baseline=\"central\" \
                 font-size=\"{CAPTION_SIZE}\" fill=\"#666\">{text}</text>",
                px(at),
                px(cy)
            )
        };
        nodes += &caption(x(0) - NODE_W / 2.0 - 6.0, "end", "input");
        nodes += &caption(x(3) + NODE_W / 2.0 + 6.0, "start", "output");
        let body = format!(
            "<text x=\"{MARGIN}\" y=\"18\" font-size=\"14\" font-weight=\"bold\" \
             fill=\"#222\">NAS-Bench-201 cell</text>{lines}{labels}{nodes}"
        );
        Drawing {
            body,
            width: x(3) + NODE_W / 2.0 + caption_w + MARGIN,
            height: bottom + 0.75 * LIFT[2] + LABEL_H / 2.0 + MARGIN,
        }
    }
}

/// A filled triangle from the end of a line at `base` to `tip`.
fn arrowhead(base: (f64, f64), tip: (f64, f64)) -> String {
    let (dx, dy) = ((tip.0 - base.0) / ARROW, (tip.1 - base.1) / ARROW);
    // Half the base width, across the line's direction.
    let (nx, ny) = (-dy * ARROW / 2.0, dx * ARROW / 2.0);
    format!(
        "M{},{}L{},{}L{},{}Z",
        px(base.0 + nx),
        px(base.1 + ny),
        px(tip.0),
        px(tip.1),
        px(base.0 - nx),
        px(base.1 - ny)
    )
}
