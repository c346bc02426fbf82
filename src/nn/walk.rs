//! One visitor per module. A module states its tensors and children once, inside
//! [`visitors!`](crate::visitors), and that body compiles to both [`Module::visit`] and
//! [`Module::visit_mut`]: `child.walk(name, f)` and `tensor.leaf(name, kind, f)` resolve to the
//! shared or the mutable twin depending on which of this file's trait pairs the generated method
//! brings into scope. A field added to one visitor can no longer be forgotten in the other.

use super::{Module, ParamKind};
use crate::tensor::Tensor;

type Visit<'a> = dyn FnMut(&str, &Tensor, ParamKind) + 'a;
type VisitMut<'a> = dyn FnMut(&str, &mut Tensor, ParamKind) + 'a;

/// A child module, visited read-only.
pub trait Walk {
    fn walk(&self, name: &str, f: &mut Visit);
}
impl<M: Module + ?Sized> Walk for M {
    fn walk(&self, name: &str, f: &mut Visit) {
        self.visit(name, f)
    }
}

/// A child module, visited mutably.
pub trait WalkMut {
    fn walk(&mut self, name: &str, f: &mut VisitMut);
}
impl<M: Module + ?Sized> WalkMut for M {
    fn walk(&mut self, name: &str, f: &mut VisitMut) {
        self.visit_mut(name, f)
    }
}

/// A named tensor (or an optional one, visited when present), read-only.
pub trait Leaf {
    fn leaf(&self, name: &str, kind: ParamKind, f: &mut Visit);
}
impl Leaf for Tensor {
    fn leaf(&self, name: &str, kind: ParamKind, f: &mut Visit) {
        f(name, self, kind)
    }
}
impl Leaf for Option<Tensor> {
    fn leaf(&self, name: &str, kind: ParamKind, f: &mut Visit) {
        if let Some(t) = self {
            f(name, t, kind)
        }
    }
}

/// A named tensor (or an optional one), mutably.
pub trait LeafMut {
    fn leaf(&mut self, name: &str, kind: ParamKind, f: &mut VisitMut);
}
impl LeafMut for Tensor {
    fn leaf(&mut self, name: &str, kind: ParamKind, f: &mut VisitMut) {
        f(name, self, kind)
    }
}
impl LeafMut for Option<Tensor> {
    fn leaf(&mut self, name: &str, kind: ParamKind, f: &mut VisitMut) {
        if let Some(t) = self {
            f(name, t, kind)
        }
    }
}

/// Writes [`Module::visit`] and [`Module::visit_mut`] from one body, inside `impl Module for T`.
/// `$m` is `self` (shared in one method, mutable in the other); write loops by index
/// (`m.cells[i].walk(..)`) and match on `m` with plain patterns, so the body means the same in
/// both.
///
/// ```
/// use darts::nn::{join, Module, ParamKind};
/// use darts::Tensor;
///
/// struct Affine { scale: Tensor, shift: Option<Tensor> }
/// impl Module for Affine {
///     darts::visitors!(|m, prefix, f| {
///         m.scale.leaf(&join(prefix, "scale"), ParamKind::Weight, f);
///         m.shift.leaf(&join(prefix, "shift"), ParamKind::Weight, f);
///     });
/// }
/// let mut a = Affine { scale: Tensor::zeros(&[2]), shift: None };
/// let mut names = Vec::new();
/// a.visit_mut("", &mut |n, _, _| names.push(n.to_string()));
/// a.visit("", &mut |n, _, _| names.push(n.to_string()));
/// assert_eq!(names, ["scale", "scale"]);
/// ```
#[macro_export]
macro_rules! visitors {
    (|$m:ident, $prefix:ident, $f:ident| $body:block) => {
        fn visit(
            &self,
            $prefix: &str,
            $f: &mut dyn FnMut(&str, &$crate::Tensor, $crate::nn::ParamKind),
        ) {
            #[allow(unused_imports)]
            use $crate::nn::walk::{Leaf as _, Walk as _};
            let $m = self;
            $body
        }
        fn visit_mut(
            &mut self,
            $prefix: &str,
            $f: &mut dyn FnMut(&str, &mut $crate::Tensor, $crate::nn::ParamKind),
        ) {
            #[allow(unused_imports)]
            use $crate::nn::walk::{LeafMut as _, WalkMut as _};
            let $m = self;
            $body
        }
    };
}

/// The containers a module tree is made of. A module of its own, so that only the trait pair
/// each generated method imports is in scope.
mod containers {
    use crate::nn::Module;

    /// A list of children named `0`, `1`, ... under the list's name, like `torch.nn.ModuleList`.
    /// By index, because an iterator would differ between the two visitors.
    #[allow(clippy::needless_range_loop)]
    impl<M: Module> Module for Vec<M> {
        crate::visitors!(|m, prefix, f| {
            for i in 0..m.len() {
                m[i].walk(&crate::nn::join(prefix, &i.to_string()), f);
            }
        });
    }

    /// An optional child, visited when present.
    impl<M: Module> Module for Option<M> {
        crate::visitors!(|m, prefix, f| {
            if let Some(c) = m {
                c.walk(prefix, f);
            }
        });
    }

    impl<M: Module + ?Sized> Module for Box<M> {
        crate::visitors!(|m, prefix, f| {
            (**m).walk(prefix, f);
        });
    }
}
