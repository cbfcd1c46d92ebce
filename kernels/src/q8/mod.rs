//! 8-bit weights on the CPU (issue 20's `--dtype q8`): linear layers and
//! convolutions with int8 weights and int8 activations, accumulated exactly in
//! i32, rescaled to f32 once per output.
//!
//! The scheme is the "dynamic" W8A8 one of `torch.ao.quantization`'s
//! `quantize_dynamic` and of LLM.int8 without its outlier split, with finer
//! activation scales:
//! - **weights**: symmetric, one scale per output channel (row of the
//!   `[out, in]` matrix, or of the `[c_out, c_in * kh * kw]` convolution
//!   matrix): `q = round(w / s)`, `s = max |w_row| / 127`, `q` in [-127, 127].
//!   Quantised once, when the model loads ([`Q8Weight::quantize`]).
//! - **activations**: symmetric, one scale per row of the GEMM's activation
//!   matrix, computed on every call: per token for a linear layer, per output
//!   pixel (its whole receptive field, `c_in * kh * kw` values) for a
//!   convolution. Stored as `q + 128` in a `u8`, the operand order of the
//!   `VPDPBUSD` instruction (unsigned x signed bytes); the `128 * sum(q_w)`
//!   this adds is subtracted from each sum exactly, in i32.
//! - **output**: `y = (sum_k q_a q_w) * s_a * s_w (+ bias)` in f32.
//!
//! The tile kernel runs on the best the CPU has, detected at run time
//! ([`Isa`]): AVX-512 VNNI (`VPDPBUSD`: 64 byte products per instruction,
//! 4x the multiply-adds of an f32 FMA), else AVX2 (`VPMADDWD` on bytes
//! widened to i16), else plain Rust. All give bit-identical results (integer
//! sums are exact and the f32 epilogue is the same sequence of IEEE
//! operations), so a `q8` image does not depend on the CPU.

mod conv;
mod linear;
mod micro;
mod pack;
mod weight;

pub use conv::conv2d;
pub use linear::linear;
pub use micro::Isa;
pub use weight::{Q8Weight, MAX_K};

#[cfg(test)]
mod tests;
