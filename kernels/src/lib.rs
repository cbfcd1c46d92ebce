//! sd-worker's CPU kernels, where Candle's are slow (issue 20). Each one is a
//! Candle custom op with a plain function in front of it that falls back to
//! Candle's own op on every device, dtype or parameter set the kernel does not
//! cover, so callers never branch. Each has unit tests against Candle's op.

pub mod attention;
pub mod conv2d;
pub mod exp;
pub mod geglu;
pub mod group_norm;
pub mod timing;

#[cfg(test)]
mod test_util;
