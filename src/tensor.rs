//! `Tensor`: a shape, a storage on some device, and (when it takes part in autodiff) a tape node.
//!
//! Tensors are cheap to clone (the storage is reference counted) and immutable through the op
//! API; [`Tensor::data_mut`] copies on write, so an in-place update never changes a value that a
//! recorded graph still holds.

use std::sync::Arc;

use ndarray::{ArrayViewD, IxDyn};
use rand::Rng;
use rand_distr::{Distribution, Normal, Uniform};

use crate::device::cuda::{self, GpuBuf};
use crate::device::pool::{self, Buffer};
use crate::device::{Device, Storage};
use crate::error::{Error, Result};
use crate::tape::{self, Grads, Node, NodeId};

/// An n-dimensional f32 array (NCHW for images), contiguous and row-major.
#[derive(Clone)]
pub struct Tensor {
    shape: Vec<usize>,
    storage: Storage,
    node: Option<Arc<Node>>,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tensor")
            .field("shape", &self.shape)
            .field("device", &self.device())
            .field("id", &self.id())
            .finish()
    }
}

impl Tensor {
    /// A tensor from row-major data; fails when `data.len()` is not the product of `shape`.
    pub fn from_vec(data: Vec<f32>, shape: &[usize]) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(Error::shape(
                "Tensor::from_vec",
                format!("{} values do not fill the shape", data.len()),
                &[shape],
            ));
        }
        Ok(Tensor::from_parts(data, shape))
    }

    /// Internal constructor for kernel outputs whose length is right by construction.
    pub(crate) fn from_parts(data: Vec<f32>, shape: &[usize]) -> Tensor {
        debug_assert_eq!(data.len(), shape.iter().product::<usize>());
        Tensor {
            shape: shape.to_vec(),
            storage: Storage::Cpu(Arc::new(Buffer::new(data))),
            node: None,
        }
    }

    /// Internal constructor for CUDA kernel outputs.
    pub(crate) fn from_gpu(buf: GpuBuf, shape: &[usize]) -> Tensor {
        debug_assert_eq!(buf.len(), shape.iter().product::<usize>());
        Tensor {
            shape: shape.to_vec(),
            storage: Storage::Cuda(Arc::new(buf)),
            node: None,
        }
    }

    /// A tensor filled with `value` on `device`.
    pub fn full_on(shape: &[usize], value: f32, device: Device) -> Result<Tensor> {
        match device {
            Device::Cpu => Ok(Tensor::full(shape, value)),
            Device::Cuda => Ok(Tensor::from_gpu(
                cuda::gpu()?.full(shape.iter().product(), value)?,
                shape,
            )),
        }
    }

    /// Zeros with the shape and device of `self`.
    pub fn zeros_like(&self) -> Result<Tensor> {
        Tensor::full_on(&self.shape, 0.0, self.device())
    }

    /// The same values on `device` (a copy when it differs; outside the graph).
    pub fn to_device(&self, device: Device) -> Result<Tensor> {
        let storage = match (&self.storage, device) {
            (Storage::Cpu(_), Device::Cpu) | (Storage::Cuda(_), Device::Cuda) => {
                return Ok(self.detach())
            }
            (Storage::Cpu(a), Device::Cuda) => {
                Storage::Cuda(Arc::new(cuda::gpu()?.upload(a.as_slice())?))
            }
            (Storage::Cuda(b), Device::Cpu) => {
                Storage::Cpu(Arc::new(Buffer::new(cuda::gpu()?.download(b)?)))
            }
        };
        Ok(Tensor {
            shape: self.shape.clone(),
            storage,
            node: None,
        })
    }

    /// Moves the data to `device` in place, keeping the tensor's identity (how parameters and
    /// buffers change device).
    pub fn move_to(&mut self, device: Device) -> Result<()> {
        self.storage = self.to_device(device)?.storage;
        Ok(())
    }

    /// A copy on the host: what logging, checkpoints and evaluation read.
    pub fn to_host(&self) -> Result<Tensor> {
        self.to_device(Device::Cpu)
    }

    /// A tensor filled with `value`.
    pub fn full(shape: &[usize], value: f32) -> Tensor {
        Tensor::from_parts(pool::take_full(shape.iter().product(), value), shape)
    }

    /// A tensor of zeros.
    pub fn zeros(shape: &[usize]) -> Tensor {
        Tensor::full(shape, 0.0)
    }

    /// A tensor of ones.
    pub fn ones(shape: &[usize]) -> Tensor {
        Tensor::full(shape, 1.0)
    }

    /// A scalar (shape `[]`).
    pub fn scalar(value: f32) -> Tensor {
        Tensor::full(&[], value)
    }

    /// Samples from N(0, std²).
    pub fn randn(shape: &[usize], std: f32, rng: &mut impl Rng) -> Tensor {
        let normal = Normal::new(0.0f32, std.abs()).expect("finite std");
        let n = shape.iter().product();
        Tensor::from_parts((0..n).map(|_| normal.sample(rng)).collect(), shape)
    }

    /// Samples from U(lo, hi).
    pub fn uniform(shape: &[usize], lo: f32, hi: f32, rng: &mut impl Rng) -> Tensor {
        let n = shape.iter().product();
        if hi <= lo {
            return Tensor::full(shape, lo);
        }
        let u = Uniform::new(lo, hi).expect("lo < hi");
        Tensor::from_parts((0..n).map(|_| u.sample(rng)).collect(), shape)
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.storage.len()
    }

    /// The device holding the data.
    pub fn device(&self) -> Device {
        self.storage.device()
    }

    /// The storage, for op dispatch.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// The data as a slice. CPU tensors only: code that may hold a CUDA tensor reads it through
    /// [`Tensor::to_host`] (calling this on one is a bug in darts, hence the panic).
    pub fn data(&self) -> &[f32] {
        match &self.storage {
            Storage::Cpu(a) => a.as_slice(),
            Storage::Cuda(_) => panic!(
                "Tensor::data on a CUDA tensor {:?}; call to_host() first",
                self.shape
            ),
        }
    }

    /// Mutable data, copied first if the storage is shared (copy on write). CPU tensors only.
    pub fn data_mut(&mut self) -> &mut [f32] {
        match &mut self.storage {
            Storage::Cpu(a) => Arc::make_mut(a).as_mut_slice(),
            Storage::Cuda(_) => panic!("Tensor::data_mut on a CUDA tensor {:?}", self.shape),
        }
    }

    /// A copy of the data on the host, or the device error that stopped the copy.
    pub fn try_to_vec(&self) -> Result<Vec<f32>> {
        match &self.storage {
            Storage::Cpu(a) => Ok(a.as_slice().to_vec()),
            Storage::Cuda(b) => cuda::gpu()?.download(b),
        }
    }

    /// A copy of the data on the host. Panics only if the GPU faulted; library code uses
    /// [`Tensor::try_to_vec`].
    pub fn to_vec(&self) -> Vec<f32> {
        self.try_to_vec()
            .expect("copying a CUDA tensor to the host")
    }

    /// The GPU buffer of a CUDA tensor, for a kernel that writes it in place: copied first if
    /// another tensor shares it (copy on write, as [`Tensor::data_mut`]). A CPU tensor is an
    /// error naming `op`, which chose the kernel for operands on the GPU.
    pub(crate) fn cuda_buf_mut(&mut self, op: &'static str) -> Result<&GpuBuf> {
        match &mut self.storage {
            Storage::Cpu(_) => Err(Error::Device {
                op,
                msg: "a CUDA kernel would write a CPU tensor; move it with to_device".into(),
            }),
            Storage::Cuda(b) => {
                if Arc::get_mut(b).is_none() {
                    *b = Arc::new(cuda::gpu()?.copy(b)?);
                }
                Ok(b)
            }
        }
    }

    /// An ndarray view with this tensor's shape.
    pub fn view(&self) -> ArrayViewD<'_, f32> {
        ArrayViewD::from_shape(IxDyn(&self.shape), self.data()).expect("shape matches data")
    }

    /// The value of a one-element tensor.
    pub fn item(&self) -> Result<f32> {
        match self.try_to_vec()?[..] {
            [v] => Ok(v),
            _ => Err(Error::shape(
                "item",
                "needs exactly one element",
                &[&self.shape],
            )),
        }
    }

    /// The four sizes of an NCHW tensor.
    pub fn dims4(&self, op: &'static str) -> Result<(usize, usize, usize, usize)> {
        match self.shape[..] {
            [n, c, h, w] => Ok((n, c, h, w)),
            _ => Err(Error::shape(op, "expects an NCHW tensor", &[&self.shape])),
        }
    }

    /// The same data with another shape of equal size (shares the storage; differentiable).
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        if shape.iter().product::<usize>() != self.numel() {
            return Err(Error::shape(
                "reshape",
                "sizes differ",
                &[&self.shape, shape],
            ));
        }
        let out = Tensor {
            shape: shape.to_vec(),
            storage: self.storage.clone(),
            node: None,
        };
        let back = self.shape.clone();
        Ok(tape::record("reshape", out, &[self], move |g, _| {
            Ok(vec![Some(g.reshape_untracked(&back))])
        }))
    }

    fn reshape_untracked(&self, shape: &[usize]) -> Tensor {
        Tensor {
            shape: shape.to_vec(),
            storage: self.storage.clone(),
            node: None,
        }
    }

    /// Makes this tensor a leaf that receives a gradient (a parameter or an input under study).
    /// It gets a fresh id that it keeps through in-place updates.
    pub fn requires_grad(mut self) -> Tensor {
        self.node = Some(Node::leaf(NodeId::fresh(), &self.shape));
        self
    }

    /// True when gradients flow to or through this tensor.
    pub fn tracks_grad(&self) -> bool {
        self.node.is_some()
    }

    /// The same value, cut from the graph.
    pub fn detach(&self) -> Tensor {
        Tensor {
            node: None,
            ..self.clone()
        }
    }

    /// The tape id, when the tensor takes part in autodiff.
    pub fn id(&self) -> Option<NodeId> {
        self.node.as_ref().map(|n| n.id)
    }

    pub(crate) fn node(&self) -> Option<&Arc<Node>> {
        self.node.as_ref()
    }

    pub(crate) fn with_node(mut self, node: Arc<Node>) -> Tensor {
        self.node = Some(node);
        self
    }

    /// Replaces the value (same shape) and keeps the identity: how optimisers and checkpoint
    /// loading update parameters.
    pub fn set_data(&mut self, value: &Tensor) -> Result<()> {
        if value.shape != self.shape {
            return Err(Error::shape(
                "set_data",
                "shapes differ",
                &[&self.shape, &value.shape],
            ));
        }
        self.storage = if value.device() == self.device() {
            value.storage.clone()
        } else {
            value.to_device(self.device())?.storage
        };
        Ok(())
    }

    /// `self += other`, in place, outside the graph (gradient accumulation, running statistics).
    pub fn add_assign(&mut self, other: &Tensor) -> Result<()> {
        if other.shape != self.shape {
            return Err(Error::shape(
                "add_assign",
                "shapes differ",
                &[&self.shape, &other.shape],
            ));
        }
        if self.device() != other.device() {
            return Err(Error::devices("add_assign", self, other));
        }
        let o = match &other.storage {
            Storage::Cpu(o) => o.as_slice(),
            Storage::Cuda(o) => {
                let n = o.len();
                let a = self.cuda_buf_mut("add_assign")?;
                let args = [
                    cuda::Arg::F32(1.0),
                    o.arg(),
                    a.arg(),
                    cuda::Arg::int("n", n)?,
                ];
                return cuda::gpu()?.launch(cuda::kernels::AXPY, cuda::Launch::elems(n), &args);
            }
        };
        match &mut self.storage {
            Storage::Cuda(_) => unreachable!("devices checked above"),
            Storage::Cpu(a) => match Arc::get_mut(a) {
                Some(buf) => buf
                    .as_mut_slice()
                    .iter_mut()
                    .zip(o)
                    .for_each(|(a, b)| *a += b),
                None => {
                    // Shared storage: writing the sum to a new buffer is one pass; copying on
                    // write and then adding would be two.
                    let mut v = pool::take(o.len());
                    let sums = v.iter_mut().zip(a.as_slice().iter().zip(o));
                    sums.for_each(|(v, (a, b))| *v = a + b);
                    *a = Arc::new(Buffer::new(v));
                }
            },
        }
        Ok(())
    }

    /// True when no other tensor shares this one's storage (so `add_assign` works in place).
    pub(crate) fn storage_is_unique(&mut self) -> bool {
        match &mut self.storage {
            Storage::Cpu(a) => Arc::get_mut(a).is_some(),
            Storage::Cuda(a) => Arc::get_mut(a).is_some(),
        }
    }

    /// Back-propagates from this scalar; returns the gradients of every leaf it depends on.
    pub fn backward(&self) -> Result<Grads> {
        tape::backward(self)
    }

    /// True when every element is finite.
    pub fn all_finite(&self) -> Result<bool> {
        match &self.storage {
            Storage::Cpu(a) => Ok(a.as_slice().iter().all(|v| v.is_finite())),
            // 0·x is 0 for finite x and NaN otherwise, so one device sum answers for all.
            Storage::Cuda(_) => Ok(crate::ops::sum(&crate::ops::scale(&self.detach(), 0.0)?)?
                .item()?
                .is_finite()),
        }
    }
}
