//! Reverse-mode automatic differentiation, define-by-run.
//!
//! Every op that has an input requiring a gradient attaches a [`Node`] to its output: the ids of
//! its inputs' nodes and a closure that maps the output's gradient to the inputs' gradients.
//! Node ids grow in creation order, so sorting the reachable nodes by decreasing id is a valid
//! reverse topological order: that ordering *is* the tape. The graph lives exactly as long as the
//! tensors that hold it, so nothing needs clearing between steps. First order only: the DARTS
//! second-order step takes its Hessian-vector product by finite differences.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Identity of a node on the tape; parameters keep theirs for their whole life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(u64);

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl NodeId {
    pub(crate) fn fresh() -> Self {
        NodeId(NEXT_ID.fetch_add(1, Ordering::Relaxed))
    }
}

/// Maps the gradient of an op's output to the gradients of its inputs. `needs[i]` says whether
/// input `i` wants one; the result has one entry per input (`None` where not needed).
pub(crate) type BackwardFn =
    Box<dyn Fn(&Tensor, &[bool]) -> Result<Vec<Option<Tensor>>> + Send + Sync>;

/// One recorded op (or a leaf, which has no backward).
pub struct Node {
    pub(crate) id: NodeId,
    op: &'static str,
    shape: Vec<usize>,
    parents: Vec<Option<Arc<Node>>>,
    backward: Option<BackwardFn>,
}

impl Node {
    pub(crate) fn leaf(id: NodeId, shape: &[usize]) -> Arc<Node> {
        Arc::new(Node {
            id,
            op: "leaf",
            shape: shape.to_vec(),
            parents: Vec::new(),
            backward: None,
        })
    }
}

thread_local! {
    static RECORDING: Cell<bool> = const { Cell::new(true) };
}

/// True unless inside [`no_grad`].
pub fn is_recording() -> bool {
    RECORDING.with(|r| r.get())
}

/// Runs `f` without recording anything (evaluation, optimiser updates).
pub fn no_grad<T>(f: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            RECORDING.with(|r| r.set(self.0));
        }
    }
    let _restore = Restore(RECORDING.with(|r| r.replace(false)));
    f()
}

/// Attaches a node to `out` when recording and some input requires a gradient; `backward` is
/// called with the gradient of `out` during [`Tensor::backward`].
pub(crate) fn record(
    op: &'static str,
    out: Tensor,
    inputs: &[&Tensor],
    backward: impl Fn(&Tensor, &[bool]) -> Result<Vec<Option<Tensor>>> + Send + Sync + 'static,
) -> Tensor {
    if !is_recording() || inputs.iter().all(|t| t.node().is_none()) {
        return out;
    }
    let node = Node {
        id: NodeId::fresh(),
        op,
        shape: out.shape().to_vec(),
        parents: inputs.iter().map(|t| t.node().cloned()).collect(),
        backward: Some(Box::new(backward)),
    };
    out.with_node(Arc::new(node))
}

/// Gradients of a scalar with respect to every leaf it depends on, keyed by the leaf's id.
#[derive(Default)]
pub struct Grads(HashMap<NodeId, Tensor>);

impl Grads {
    /// The gradient for a tensor, if it is a leaf the loss depends on.
    pub fn get(&self, t: &Tensor) -> Option<&Tensor> {
        t.id().and_then(|id| self.0.get(&id))
    }
    /// Mutable access to a gradient (clipping, scaling).
    pub fn get_mut(&mut self, t: &Tensor) -> Option<&mut Tensor> {
        t.id().and_then(|id| self.0.get_mut(&id))
    }
    /// Sets the gradient of a leaf (for gradients assembled by hand, e.g. DARTS's unrolled step).
    /// Does nothing for a tensor outside autodiff.
    pub fn insert(&mut self, t: &Tensor, g: Tensor) {
        if let Some(id) = t.id() {
            self.0.insert(id, g);
        }
    }
    /// Removes and returns a gradient.
    pub fn take(&mut self, t: &Tensor) -> Option<Tensor> {
        t.id().and_then(|id| self.0.remove(&id))
    }
    /// Number of gradients held.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn accumulate(grads: &mut HashMap<NodeId, Tensor>, id: NodeId, mut g: Tensor) -> Result<()> {
    match grads.get_mut(&id) {
        Some(acc) => {
            // Add into whichever side owns its buffer (a + b = b + a exactly in IEEE).
            if !acc.storage_is_unique() && g.storage_is_unique() {
                std::mem::swap(acc, &mut g);
            }
            acc.add_assign(&g)
        }
        None => {
            grads.insert(id, g);
            Ok(())
        }
    }
}

/// Back-propagates from `root` (a scalar) and returns the gradients of the leaves.
pub(crate) fn backward(root: &Tensor) -> Result<Grads> {
    if root.numel() != 1 {
        return Err(Error::shape(
            "backward",
            "needs a scalar loss",
            &[root.shape()],
        ));
    }
    let Some(root_node) = root.node() else {
        return Err(Error::InvalidArgument(
            "backward: the loss does not depend on any tensor that requires a gradient".into(),
        ));
    };
    let mut seen = HashSet::new();
    let mut order: Vec<Arc<Node>> = Vec::new();
    let mut stack = vec![root_node.clone()];
    while let Some(n) = stack.pop() {
        if seen.insert(n.id) {
            stack.extend(n.parents.iter().flatten().cloned());
            order.push(n);
        }
    }
    order.sort_unstable_by_key(|n| std::cmp::Reverse(n.id));

    let mut pending: HashMap<NodeId, Tensor> = HashMap::new();
    let mut leaves: HashMap<NodeId, Tensor> = HashMap::new();
    pending.insert(
        root_node.id,
        Tensor::full_on(root.shape(), 1.0, root.device())?,
    );
    for node in &order {
        let Some(g) = pending.remove(&node.id) else {
            continue;
        };
        let Some(backward) = &node.backward else {
            accumulate(&mut leaves, node.id, g)?;
            continue;
        };
        let needs: Vec<bool> = node.parents.iter().map(Option::is_some).collect();
        let input_grads = {
            let _prof = crate::ops::prof::span(node.op, true);
            backward(&g, &needs)?
        };
        let _prof = crate::ops::prof::span("accumulate", true);
        for (parent, ig) in node.parents.iter().zip(input_grads) {
            if let (Some(p), Some(ig)) = (parent, ig) {
                if ig.shape() != p.shape.as_slice() {
                    return Err(Error::shape(
                        node.op,
                        "backward produced a gradient whose shape differs from its input",
                        &[ig.shape(), &p.shape],
                    ));
                }
                accumulate(&mut pending, p.id, ig)?;
            }
        }
    }
    Ok(Grads(leaves))
}
