//! The layered layout of a cell graph (see `cell.rs` for the drawing): columns by longest path,
//! a waypoint wherever an edge crosses a column, crossings reduced by barycentre sweeps, and
//! heights placed by isotonic regression, so labels and edges get room like nodes do.

use super::svg::{mono_width, LABEL_H, LABEL_SIZE};
use crate::nas::primitives::Primitive;

const NODE_MIN_H: f64 = 32.0;
/// Vertical room per edge on a node's side, so arrowheads into one node do not overlap.
const PORT_GAP: f64 = 9.0;
const GAP: f64 = 13.0;

/// What sits at one place in the layout.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Kind {
    /// Cell state `s`: 0 and 1 are the inputs, `2..steps + 2` the nodes, `steps + 2` the output.
    Node(usize),
    /// Where an edge crosses a column; `label` if the edge's op name is written there.
    Way { label: Option<Primitive> },
}

/// One thing placed in a column: a node or a waypoint, with its box and its neighbours.
pub(super) struct Item {
    pub(super) kind: Kind,
    pub(super) col: usize,
    pub(super) w: f64,
    pub(super) h: f64,
    pub(super) y: f64,
    /// Items connected to this one in the previous and the next column.
    pub(super) left: Vec<usize>,
    pub(super) right: Vec<usize>,
}

/// A cell graph being laid out: items, the chains of items that make up each edge, columns.
pub(super) struct Layout {
    pub(super) items: Vec<Item>,
    /// Each edge's items from its source node to its target node, and its op (none: concat).
    pub(super) edges: Vec<(Vec<usize>, Option<Primitive>)>,
    /// Item ids per column, top to bottom.
    pub(super) cols: Vec<Vec<usize>>,
}

impl Layout {
    /// Builds the graph of a validated cell; item `s` is state `s`.
    pub(super) fn new(pairs: &[(Primitive, usize)], concat: &[usize]) -> Layout {
        let steps = pairs.len() / 2;
        let out = steps + 2;
        // Longest path from the inputs; the output goes right of everything.
        let mut rank = vec![0; out + 1];
        for node in 0..steps {
            rank[node + 2] = 1 + rank[pairs[2 * node].1].max(rank[pairs[2 * node + 1].1]);
        }
        rank[out] = 1 + rank[..out].iter().max().copied().unwrap_or(0);
        let links: Vec<(usize, usize, Option<Primitive>)> = pairs
            .iter()
            .enumerate()
            .map(|(p, &(op, input))| (input, p / 2 + 2, Some(op)))
            .chain(concat.iter().map(|&s| (s, out, None)))
            .collect();

        let mut items: Vec<Item> = (0..=out)
            .map(|s| {
                let w = match s {
                    0 | 1 => 52.0,
                    _ if s == out => 40.0,
                    _ => 30.0,
                };
                let degree = links
                    .iter()
                    .filter(|l| l.0 == s)
                    .count()
                    .max(links.iter().filter(|l| l.1 == s).count());
                let h = NODE_MIN_H.max(PORT_GAP * degree as f64 + 8.0);
                Item {
                    kind: Kind::Node(s),
                    col: 2 * rank[s],
                    w,
                    h,
                    y: 0.0,
                    left: vec![],
                    right: vec![],
                }
            })
            .collect();
        let mut edges = Vec::new();
        for &(from, to, op) in &links {
            let mut chain = vec![from];
            let last = 2 * rank[to] - 1;
            for col in 2 * rank[from] + 1..=last {
                let label = op.filter(|_| col == last);
                let (w, h) = match label {
                    Some(op) => (mono_width(op.name(), LABEL_SIZE) + 8.0, LABEL_H),
                    None => (0.0, 2.0),
                };
                items.push(Item {
                    kind: Kind::Way { label },
                    col,
                    w,
                    h,
                    y: 0.0,
                    left: vec![],
                    right: vec![],
                });
                chain.push(items.len() - 1);
            }
            chain.push(to);
            for pair in chain.windows(2) {
                items[pair[0]].right.push(pair[1]);
                items[pair[1]].left.push(pair[0]);
            }
            edges.push((chain, op));
        }
        let mut cols = vec![Vec::new(); 2 * rank[out] + 1];
        for (id, item) in items.iter().enumerate() {
            cols[item.col].push(id);
        }
        Layout { items, edges, cols }
    }

    /// Orders each column to reduce edge crossings: barycentre sweeps left-to-right and back,
    /// keeping the best order seen. The inputs stay c_{k-2} above c_{k-1}, as in the paper.
    pub(super) fn order(&mut self) {
        let mut best = (self.crossings(), self.cols.clone());
        for sweep in 0..12 {
            let forward = sweep % 2 == 0;
            let range: Vec<usize> = if forward {
                (1..self.cols.len()).collect()
            } else {
                (1..self.cols.len() - 1).rev().collect()
            };
            for c in range {
                let pos = self.positions();
                let items = &self.items;
                let key = |id: usize| {
                    let side = if forward {
                        &items[id].left
                    } else {
                        &items[id].right
                    };
                    if side.is_empty() {
                        pos[id]
                    } else {
                        side.iter().map(|&n| pos[n]).sum::<f64>() / side.len() as f64
                    }
                };
                self.cols[c].sort_by(|&a, &b| key(a).total_cmp(&key(b)));
            }
            let crossings = self.crossings();
            if crossings < best.0 {
                best = (crossings, self.cols.clone());
            }
        }
        self.cols = best.1;
    }

    /// Each item's index within its column.
    fn positions(&self) -> Vec<f64> {
        let mut pos = vec![0.0; self.items.len()];
        for col in &self.cols {
            for (i, &id) in col.iter().enumerate() {
                pos[id] = i as f64;
            }
        }
        pos
    }

    fn crossings(&self) -> usize {
        let pos = self.positions();
        let mut count = 0;
        for col in &self.cols {
            let segs: Vec<(f64, f64)> = col
                .iter()
                .flat_map(|&a| self.items[a].right.iter().map(move |&b| (a, b)))
                .map(|(a, b)| (pos[a], pos[b]))
                .collect();
            for (i, s) in segs.iter().enumerate() {
                count += segs[i + 1..]
                    .iter()
                    .filter(|t| (s.0 - t.0) * (s.1 - t.1) < 0.0)
                    .count();
            }
        }
        count
    }

    /// Vertical positions: each item is pulled towards the mean height of its neighbours, column
    /// by column, keeping the column's order and spacing (a weighted isotonic regression, so
    /// the closest feasible positions). Nodes weigh more than waypoints, so edges bend around
    /// nodes rather than nodes drifting to follow edges.
    pub(super) fn place(&mut self) {
        for col in &self.cols {
            let mut y = 0.0;
            for (i, &id) in col.iter().enumerate() {
                if i > 0 {
                    y += self.sep(col[i - 1], id);
                }
                self.items[id].y = y;
            }
        }
        for iter in 0..60 {
            let order: Vec<usize> = if iter % 2 == 0 {
                (0..self.cols.len()).collect()
            } else {
                (0..self.cols.len()).rev().collect()
            };
            for c in order {
                let col = &self.cols[c];
                let target: Vec<f64> = col
                    .iter()
                    .map(|&id| {
                        let it = &self.items[id];
                        let n = it.left.len() + it.right.len();
                        if n == 0 {
                            return it.y;
                        }
                        it.left
                            .iter()
                            .chain(&it.right)
                            .map(|&m| self.items[m].y)
                            .sum::<f64>()
                            / n as f64
                    })
                    .collect();
                let weight: Vec<f64> = col
                    .iter()
                    .map(|&id| {
                        if matches!(self.items[id].kind, Kind::Node(_)) {
                            4.0
                        } else {
                            1.0
                        }
                    })
                    .collect();
                let sep: Vec<f64> = col.windows(2).map(|w| self.sep(w[0], w[1])).collect();
                let ys = pack(&target, &weight, &sep);
                for (&id, y) in self.cols[c].clone().iter().zip(ys) {
                    self.items[id].y = y;
                }
            }
        }
    }

    /// The distance between the centres of two neighbours in a column.
    fn sep(&self, a: usize, b: usize) -> f64 {
        let (a, b) = (&self.items[a], &self.items[b]);
        let bare = |i: &Item| i.kind == Kind::Way { label: None };
        let gap = if bare(a) && bare(b) { 4.0 } else { GAP };
        (a.h + b.h) / 2.0 + gap
    }
}

impl Layout {
    /// For each edge, the vertical offsets of its start on the source node and its end on the
    /// target node. A node's edges are spread along its side in the order of where they come
    /// from or go to, so they leave and arrive without crossing each other.
    pub(super) fn ports(&self) -> Vec<(f64, f64)> {
        let mut ports = vec![(0.0, 0.0); self.edges.len()];
        for (node, item) in self.items.iter().enumerate() {
            if !matches!(item.kind, Kind::Node(_)) {
                continue;
            }
            for outgoing in [true, false] {
                // (edge, the neighbouring item of that edge)
                let mut ends: Vec<(usize, usize)> = self
                    .edges
                    .iter()
                    .enumerate()
                    .filter_map(|(e, (chain, _))| {
                        let n = chain.len();
                        match outgoing {
                            true if chain[0] == node => Some((e, chain[1])),
                            false if chain[n - 1] == node => Some((e, chain[n - 2])),
                            _ => None,
                        }
                    })
                    .collect();
                ends.sort_by(|a, b| {
                    self.items[a.1]
                        .y
                        .total_cmp(&self.items[b.1].y)
                        .then(a.0.cmp(&b.0))
                });
                let n = ends.len() as f64;
                let spacing = if n > 1.0 {
                    ((item.h - 8.0) / (n - 1.0)).min(PORT_GAP)
                } else {
                    0.0
                };
                for (i, &(e, _)) in ends.iter().enumerate() {
                    let offset = (i as f64 - (n - 1.0) / 2.0) * spacing;
                    if outgoing {
                        ports[e].0 = offset;
                    } else {
                        ports[e].1 = offset;
                    }
                }
            }
        }
        ports
    }
}

/// Positions `y` for items in a column with targets `target` and weights `weight`, keeping their
/// order with at least `sep[i]` between item `i` and `i + 1`, as close to the targets as
/// possible in weighted least squares. Substituting `z_i = y_i - offset_i` turns the spacing
/// constraints into `z` non-decreasing, which pool-adjacent-violators solves exactly.
fn pack(target: &[f64], weight: &[f64], sep: &[f64]) -> Vec<f64> {
    let mut offset = vec![0.0; target.len()];
    for i in 1..target.len() {
        offset[i] = offset[i - 1] + sep[i - 1];
    }
    // Blocks of items sharing one z: (sum of weights, weighted sum of targets, item count).
    let mut blocks: Vec<(f64, f64, usize)> = Vec::new();
    for i in 0..target.len() {
        blocks.push((weight[i], weight[i] * (target[i] - offset[i]), 1));
        while let [.., a, b] = blocks[..] {
            if a.1 / a.0 <= b.1 / b.0 {
                break;
            }
            blocks.truncate(blocks.len() - 2);
            blocks.push((a.0 + b.0, a.1 + b.1, a.2 + b.2));
        }
    }
    let mut ys = Vec::with_capacity(target.len());
    for (w, s, n) in blocks {
        for _ in 0..n {
            ys.push(s / w + offset[ys.len()]);
        }
    }
    ys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_keeps_order_and_spacing() {
        let ys = pack(&[0.0, 0.0, 10.0], &[1.0; 3], &[4.0, 4.0]);
        assert_eq!(ys, [-2.0, 2.0, 10.0]);
        let ys = pack(&[5.0, 0.0], &[3.0, 1.0], &[2.0]);
        assert!(
            (ys[1] - ys[0] - 2.0).abs() < 1e-12 && (ys[0] - 3.25).abs() < 1e-12,
            "{ys:?}"
        );
    }
}
