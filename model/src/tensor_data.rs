//! Reading a tensor's values back on the host. Every host-side read in this crate — mask
//! values (docs/algorithm.md §2.5), losses and logits for sampling, weights for writing a
//! checkpoint (§0.5) — is `convert` followed by `into_vec`, whose `Result` cannot be an error
//! there; the one `expect` for it, with the reason, is here.

use burn::tensor::{Element, TensorData};

/// The values of `data` as `f32`, converted from whatever element type it holds.
pub fn to_vec_f32(data: TensorData) -> Vec<f32> {
    to_vec(data)
}

/// The values of `data` as `f64` (host-side statistics of the masks, §2.4).
pub(crate) fn to_vec_f64(data: TensorData) -> Vec<f64> {
    to_vec(data)
}

/// The values of `data` as `i64` (token ids).
#[cfg(feature = "flex")]
pub(crate) fn to_vec_i64(data: TensorData) -> Vec<i64> {
    to_vec(data)
}

fn to_vec<E: Element>(data: TensorData) -> Vec<E> {
    // `convert::<E>` leaves data whose dtype is `E` (it panics by itself only on quantized data,
    // which no tensor of this crate is), so `into_vec::<E>` passes its dtype check; burn's byte
    // buffers are allocated at least as aligned as their element, so its cast to `E` succeeds
    // too (a buffer it cannot take over as a `Vec<E>` is copied).
    data.convert::<E>()
        .into_vec::<E>()
        .expect("data converted to E reads back as Vec<E>")
}
