//! sd-worker's CPU kernels, where Candle's are slow (issue 20). Each one is a
//! Candle custom op with a plain function in front of it that falls back to
//! Candle's own op on every device, dtype or parameter set the kernel does not
//! cover, so callers never branch. Each has unit tests against Candle's op.

pub mod attention;
pub mod conv2d;
pub mod exp;
pub mod geglu;
pub mod group_norm;
pub mod q8;
pub mod timing;

use candle_core::{CpuStorage, Layout, Result};

/// The elements of an f32 CPU storage; an error naming `op` for another dtype.
pub(crate) fn f32_data<'a>(op: &str, s: &'a CpuStorage) -> Result<&'a [f32]> {
    match s {
        CpuStorage::F32(v) => Ok(v),
        _ => candle_core::bail!("{op}: f32 tensors only"),
    }
}

/// The elements of a contiguous f32 CPU tensor, exactly those its layout
/// covers; an error naming `op` for another dtype or a strided layout.
pub(crate) fn contiguous_f32<'a>(op: &str, s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    let data = f32_data(op, s)?;
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: contiguous tensors only"),
    }
}

#[cfg(test)]
mod test_util;
