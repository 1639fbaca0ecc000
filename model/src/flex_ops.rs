//! Run-time specialisation of generic model code for the CPU backend (burn-flex): the fused
//! operations (the LM-head loss, lm_loss.rs; rotary embeddings, rope.rs) are written against
//! `Flex` and `Autodiff<Flex>` tensors, and generic code reaches them by checking, at run time,
//! whether its backend is one of those two. burn has no trait-level hook for a custom operation
//! on one backend only; a downcast through `Any` costs one type-id comparison per call.

use std::any::Any;

use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use burn_flex::FlexTensor;

pub(crate) type AD = Autodiff<Flex>;

/// `x` as a `T` when it is one; `x` back otherwise.
pub(crate) fn cast<A: 'static, T: 'static>(x: A) -> Result<T, A> {
    let b: Box<dyn Any> = Box::new(x);
    match b.downcast::<T>() {
        Ok(t) => Ok(*t),
        Err(b) => Err(*b.downcast::<A>().expect("the value it was")),
    }
}

/// `x` as the type it is known to be.
pub(crate) fn same<A: 'static, T: 'static>(x: A) -> T {
    cast(x).unwrap_or_else(|_| unreachable!("checked to be the same type"))
}

/// A plain `Flex` float tensor's storage.
pub(crate) fn flex_float<const D: usize>(t: Tensor<Flex, D>) -> FlexTensor {
    t.into_primitive().tensor()
}

/// A `Flex` float tensor from its storage.
pub(crate) fn from_flex<const D: usize>(t: FlexTensor) -> Tensor<Flex, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

/// `t` in a row-major layout, with the offset of its first element in its storage (a copy
/// only when it is not already contiguous).
pub(crate) fn contiguous(t: FlexTensor) -> (FlexTensor, usize) {
    match t.layout().contiguous_offsets() {
        Some((start, _)) => (t, start),
        None => {
            let t = t.to_contiguous();
            let start = t.layout().start_offset();
            (t, start)
        }
    }
}

/// The `f32` elements of a contiguous tensor, from `start`.
pub(crate) fn elements(t: &FlexTensor, start: usize) -> &[f32] {
    &t.storage::<f32>()[start..start + t.layout().num_elements()]
}
