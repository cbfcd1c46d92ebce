//! An int8 weight matrix, quantised per output channel and packed for the
//! tile kernel.

use candle_core::{DType, Device, Result, Tensor};

/// Columns (output channels) per packed block: one 512-bit register of i32
/// accumulators.
pub(crate) const BLOCK: usize = 16;

/// Longest reduction whose sums fit an i32: `255 * 127 * k < 2^31`.
pub const MAX_K: usize = 65_536;

/// A weight `[out, in]` (linear) or `[c_out, c_in, kh, kw]` (convolution),
/// as the matrix `[n = out, k = in * kh * kw]` of int8 values `q` with one f32
/// scale per row: `w[o, j] ~= q[o, j] * scale[o]`, `scale[o] = max_j |w[o, j]| / 127`.
///
/// Storage (bytes: `n * k` rounded up to blocks, plus 8 per row): blocks of
/// [`BLOCK`] rows, each `[k4][16][4]` (`k4 = ceil(k / 4)`): four consecutive
/// `k` of sixteen rows per 64 bytes, the operand layout of `VPDPBUSD`. Rows
/// and `k` past the end are zero.
#[derive(Debug, Clone)]
pub struct Q8Weight {
    dims: Vec<usize>,
    n: usize,
    k: usize,
    k4: usize,
    packed: Vec<i8>,
    /// `[blocks * 16]`, 0 past `n`.
    scales: Vec<f32>,
    /// `128 * sum_j q[o, j]`: what the `+128` of the activations adds to row `o`'s sums.
    offsets: Vec<i32>,
}

impl Q8Weight {
    /// Quantises `w` (any float dtype, any device; rank 2 or 4, the first
    /// dimension being the output channels).
    ///
    /// Errors: another rank, a non-float dtype, a row with a non-finite value.
    pub fn quantize(w: &Tensor) -> Result<Self> {
        let dims = w.dims().to_vec();
        if !(dims.len() == 2 || dims.len() == 4) {
            candle_core::bail!("q8: weights of rank 2 or 4 only, got {dims:?}")
        }
        if !w.dtype().is_float() {
            candle_core::bail!("q8: a {:?} weight cannot be quantised", w.dtype())
        }
        let n = dims[0];
        let k: usize = dims[1..].iter().product();
        if !Self::fits(&dims) {
            candle_core::bail!("q8: a reduction of {k} values (weight {dims:?}) could overflow the i32 sums (at most {MAX_K})")
        }
        let values: Vec<f32> = w
            .to_device(&Device::Cpu)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1()?;
        let k4 = k.div_ceil(4);
        let blocks = n.div_ceil(BLOCK);
        let mut packed = vec![0i8; blocks * k4 * BLOCK * 4];
        let mut scales = vec![0f32; blocks * BLOCK];
        let mut offsets = vec![0i32; blocks * BLOCK];
        for (o, row) in values.chunks_exact(k.max(1)).take(n).enumerate() {
            let amax = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            if !row.iter().all(|v| v.is_finite()) {
                candle_core::bail!("q8: output channel {o} of a {dims:?} weight is not finite")
            }
            let (scale, inv) = if amax > 0.0 {
                (amax / 127.0, 127.0 / amax)
            } else {
                (0.0, 0.0)
            };
            scales[o] = scale;
            let (blk, lane) = (o / BLOCK, o % BLOCK);
            let mut sum = 0i32;
            for (j, &v) in row.iter().enumerate() {
                let q = crate::q8::pack::round_clamp(v * inv);
                sum += q;
                packed[((blk * k4 + j / 4) * BLOCK + lane) * 4 + j % 4] = q as i8;
            }
            offsets[o] = 128 * sum;
        }
        Ok(Self {
            dims,
            n,
            k,
            k4,
            packed,
            scales,
            offsets,
        })
    }

    /// Whether [`Q8Weight::quantize`] takes a weight of shape `dims`: rank 2
    /// (linear) or 4 (convolution), rows (`in * kh * kw`) of at most
    /// [`MAX_K`] values.
    pub fn fits(dims: &[usize]) -> bool {
        matches!(dims.len(), 2 | 4) && dims[1..].iter().product::<usize>() <= MAX_K
    }

    /// The weight's original shape.
    pub fn dims(&self) -> &[usize] {
        &self.dims
    }

    /// Output channels (`n`) and the reduction length (`k = in * kh * kw`).
    pub fn n_k(&self) -> (usize, usize) {
        (self.n, self.k)
    }

    /// The integer value and scale of row `o`, column `j`.
    pub fn q(&self, o: usize, j: usize) -> i8 {
        let (blk, lane) = (o / BLOCK, o % BLOCK);
        self.packed[((blk * self.k4 + j / 4) * BLOCK + lane) * 4 + j % 4]
    }

    /// Row `o`'s scale.
    pub fn scale(&self, o: usize) -> f32 {
        self.scales[o]
    }

    /// `q * scale` as an f32 tensor of the original shape on the CPU (what
    /// the int8 values stand for; LoRA merging reads this and quantises the
    /// sum again).
    pub fn dequantize(&self) -> Result<Tensor> {
        let mut v = Vec::with_capacity(self.n * self.k);
        for o in 0..self.n {
            let s = self.scales[o];
            v.extend((0..self.k).map(|j| self.q(o, j) as f32 * s));
        }
        Tensor::from_vec(v, self.dims.as_slice(), &Device::Cpu)
    }

    /// Bytes held (packed values, scales and offsets).
    pub fn bytes(&self) -> usize {
        self.packed.len() + 4 * (self.scales.len() + self.offsets.len())
    }

    pub(crate) fn k4(&self) -> usize {
        self.k4
    }

    pub(crate) fn blocks(&self) -> usize {
        self.n.div_ceil(BLOCK)
    }

    pub(crate) fn packed(&self) -> &[i8] {
        &self.packed
    }

    pub(crate) fn scales_padded(&self) -> &[f32] {
        &self.scales
    }

    pub(crate) fn offsets_padded(&self) -> &[i32] {
        &self.offsets
    }
}
