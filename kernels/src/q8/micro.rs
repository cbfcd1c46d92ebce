//! The tile kernel: an `MR x (16 * nv)` block of i32 dot products of bytes
//! over the whole reduction, rescaled to f32 and added to the output.
//!
//! One operand is *broadcast*: row `r`'s four bytes for reduction group `g`
//! are read at `bcast + r * bcast_rs + g * bcast_gs`. The other is *packed*
//! in blocks of 16 columns, `[k4][16][4]` bytes each (`packed_bs` bytes
//! apart), so that one 64-byte load holds four reduction steps of sixteen
//! columns. `BCAST_U8` says which operand holds the activations (`u8`,
//! `q + 128`); the other holds the int8 weights.

/// Rows per tile.
pub(crate) const MR: usize = 8;
/// Most 16-column blocks per tile.
pub(crate) const NV_MAX: usize = 3;

/// The instruction set the tile kernel runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512 VNNI (`VPDPBUSD`), 64 byte products per instruction.
    Avx512Vnni,
    /// Plain Rust, the same integer arithmetic.
    Portable,
}

impl Isa {
    /// The best this CPU runs, detected once.
    pub fn detect() -> Isa {
        static ISA: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *ISA.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vnni")
            {
                return Isa::Avx512Vnni;
            }
            Isa::Portable
        })
    }

    /// Its name in logs and the bench output.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512Vnni => "avx512-vnni",
            Isa::Portable => "portable",
        }
    }
}

/// One tile's operands and destination. `rows <= MR` and `cols <= 16 * nv`
/// are the valid part; the operands are readable for `MR` rows and `nv`
/// whole blocks, the scale and offset slices for `MR` rows and `16 * nv`
/// columns.
pub(crate) struct Tile<'a> {
    pub k4: usize,
    pub bcast: *const u8,
    pub bcast_rs: usize,
    pub bcast_gs: usize,
    pub packed: *const u8,
    pub packed_bs: usize,
    pub dst: *mut f32,
    pub ldc: usize,
    pub rows: usize,
    pub cols: usize,
    pub row_scale: &'a [f32],
    pub row_off: &'a [i32],
    pub col_scale: &'a [f32],
    pub col_off: &'a [i32],
    pub row_bias: &'a [f32],
    pub col_bias: &'a [f32],
}

/// Over the tile,
/// `dst[r, c] = (sum - row_off[r] - col_off[c]) * row_scale[r] * col_scale[c] + (row_bias[r] + col_bias[c])`,
/// `sum` being the dot product
/// of broadcast row `r` and packed column `c` over `4 * k4` bytes. The
/// destination is only written, never read, so a freshly allocated output is
/// faulted in once, without a copy-on-write of the zero page.
///
/// # Safety
/// The pointers address what [`Tile`] says; `isa` is supported by the CPU;
/// `1 <= nv <= NV_MAX`.
pub(crate) unsafe fn tile<const BCAST_U8: bool>(isa: Isa, nv: usize, t: &Tile) {
    debug_assert!(t.row_scale.len() >= MR && t.row_off.len() >= MR);
    debug_assert!(t.col_scale.len() >= 16 * nv && t.col_off.len() >= 16 * nv);
    debug_assert!(t.row_bias.len() >= MR && t.col_bias.len() >= 16 * nv);
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => match nv {
            1 => vnni::tile::<1, BCAST_U8>(t),
            2 => vnni::tile::<2, BCAST_U8>(t),
            _ => vnni::tile::<3, BCAST_U8>(t),
        },
        #[cfg(not(target_arch = "x86_64"))]
        Isa::Avx512Vnni => unreachable!("VNNI is only detected on x86_64"),
        Isa::Portable => portable::<BCAST_U8>(nv, t),
    }
}

/// The same sums in plain Rust.
unsafe fn portable<const BCAST_U8: bool>(nv: usize, t: &Tile) {
    let cols = 16 * nv;
    let mut acc = [[0i32; 16 * NV_MAX]; MR];
    for g in 0..t.k4 {
        for (r, acc_r) in acc.iter_mut().enumerate() {
            let a = std::slice::from_raw_parts(t.bcast.add(r * t.bcast_rs + g * t.bcast_gs), 4);
            for (c, acc_rc) in acc_r.iter_mut().take(cols).enumerate() {
                let p = std::slice::from_raw_parts(
                    t.packed.add((c / 16) * t.packed_bs + g * 64 + (c % 16) * 4),
                    4,
                );
                for j in 0..4 {
                    *acc_rc += if BCAST_U8 {
                        a[j] as i32 * p[j] as i8 as i32
                    } else {
                        a[j] as i8 as i32 * p[j] as i32
                    };
                }
            }
        }
    }
    for (r, acc_r) in acc.iter().enumerate().take(t.rows) {
        for (c, &sum) in acc_r.iter().enumerate().take(t.cols) {
            let i = sum - t.row_off[r] - t.col_off[c];
            let f = (i as f32 * t.row_scale[r]) * t.col_scale[c];
            *t.dst.add(r * t.ldc + c) = f + (t.row_bias[r] + t.col_bias[c]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod vnni {
    use super::{Tile, MR};
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn tile<const NV: usize, const BCAST_U8: bool>(t: &Tile) {
        let mut acc = [[_mm512_setzero_si512(); NV]; MR];
        for g in 0..t.k4 {
            let mut b = [_mm512_setzero_si512(); NV];
            for (v, bv) in b.iter_mut().enumerate() {
                *bv = _mm512_loadu_si512(t.packed.add(v * t.packed_bs + g * 64) as *const _);
            }
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let word =
                    (t.bcast.add(r * t.bcast_rs + g * t.bcast_gs) as *const i32).read_unaligned();
                let a = _mm512_set1_epi32(word);
                for v in 0..NV {
                    acc_r[v] = if BCAST_U8 {
                        _mm512_dpbusd_epi32(acc_r[v], a, b[v])
                    } else {
                        _mm512_dpbusd_epi32(acc_r[v], b[v], a)
                    };
                }
            }
        }
        for (r, acc_r) in acc.iter().enumerate().take(t.rows) {
            let ro = _mm512_set1_epi32(t.row_off[r]);
            let rs = _mm512_set1_ps(t.row_scale[r]);
            let rb = _mm512_set1_ps(t.row_bias[r]);
            for (v, &sum) in acc_r.iter().enumerate() {
                let c0 = v * 16;
                if c0 >= t.cols {
                    break;
                }
                let valid = (t.cols - c0).min(16);
                let mask: __mmask16 = if valid == 16 {
                    0xFFFF
                } else {
                    (1u16 << valid) - 1
                };
                let co = _mm512_loadu_si512(t.col_off.as_ptr().add(c0) as *const _);
                let cs = _mm512_loadu_ps(t.col_scale.as_ptr().add(c0));
                let i = _mm512_sub_epi32(_mm512_sub_epi32(sum, ro), co);
                let f = _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(i), rs), cs);
                let bias = _mm512_add_ps(rb, _mm512_loadu_ps(t.col_bias.as_ptr().add(c0)));
                _mm512_mask_storeu_ps(t.dst.add(r * t.ldc + c0), mask, _mm512_add_ps(f, bias));
            }
        }
    }
}
