//! Which edge each row of a search's alphas weighs, in each search space, and how the drawings
//! name it. DARTS rows go node by node, each node's edges from every earlier state; the
//! NAS-Bench-201 rows follow the benchmark's edge order (`EDGES`).

use super::svg::state_svg;
use crate::nas::space::nb201::EDGES;

/// The cell whose edges a search's alpha rows weigh.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Edges {
    /// A DARTS cell with this many intermediate nodes; the search has a normal and a reduction
    /// cell of this shape.
    Darts(usize),
    /// The NAS-Bench-201 cell: 4 nodes, 6 edges, one cell.
    Nb201,
}

/// One alpha row's edge, placed as the drawings group it.
pub(crate) struct Edge {
    /// The node the edge goes into, counted from 0 over the nodes that have inputs; rows are
    /// grouped by it.
    pub(crate) group: usize,
    /// The state or node the edge comes from.
    pub(crate) from: usize,
    /// SVG text content naming the edge.
    pub(crate) label: String,
}

impl Edges {
    /// The DARTS cell whose alphas have `rows` rows, if any (`rows = steps (steps + 3) / 2`).
    pub(crate) fn darts(rows: usize) -> Option<Edges> {
        (1..=rows)
            .find(|&s| s * (s + 3) / 2 == rows)
            .map(Edges::Darts)
    }

    /// The edges in alpha-row order: for DARTS node 0's edges from states 0 and 1, node 1's
    /// from 0, 1, 2, and so on (as the supernet stores them); for NAS-Bench-201 `EDGES`.
    pub(crate) fn rows(self) -> Vec<Edge> {
        match self {
            Edges::Darts(steps) => (0..steps)
                .flat_map(|node| {
                    (0..node + 2).map(move |from| Edge {
                        group: node,
                        from,
                        label: format!("{} → {node}", state_svg(from)),
                    })
                })
                .collect(),
            Edges::Nb201 => EDGES
                .iter()
                .map(|&(from, to)| Edge {
                    group: to - 1,
                    from,
                    label: format!("{to}←{from}"),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(edges: Edges) -> Vec<(usize, usize)> {
        edges.rows().iter().map(|e| (e.group, e.from)).collect()
    }

    #[test]
    fn rows_per_space() {
        assert_eq!(
            pairs(Edges::Darts(2)),
            [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2)]
        );
        assert_eq!(Edges::Darts(4).rows().len(), 14);
        assert_eq!(Edges::darts(14), Some(Edges::Darts(4)));
        assert_eq!(Edges::darts(2), Some(Edges::Darts(1)));
        assert_eq!(Edges::darts(13), None);
        assert_eq!(Edges::darts(6), None);
        let darts = Edges::Darts(4).rows();
        assert!(
            darts[1].label.starts_with("c<tspan")
                && darts[1]
                    .label
                    .ends_with("k-1</tspan><tspan dy=\"-0.3em\"></tspan> → 0")
        );
        assert_eq!(darts[8].label, "1 → 2");
        assert_eq!(
            pairs(Edges::Nb201),
            [(0, 0), (1, 0), (1, 1), (2, 0), (2, 1), (2, 2)]
        );
        let labels: Vec<String> = Edges::Nb201.rows().into_iter().map(|e| e.label).collect();
        assert_eq!(labels, ["1←0", "2←0", "2←1", "3←0", "3←1", "3←2"]);
    }
}
