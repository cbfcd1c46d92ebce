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
    /// AVX2 (`VPMADDWD` on bytes widened to i16), 16 products per instruction.
    Avx2,
    /// Plain Rust.
    Portable,
}

impl Isa {
    /// Every instruction set this CPU runs, best first.
    pub fn supported() -> Vec<Isa> {
        let mut out = vec![];
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx512f") && has!("avx512bw") && has!("avx512vnni") {
                out.push(Isa::Avx512Vnni);
            }
            if has!("avx2") {
                out.push(Isa::Avx2);
            }
        }
        out.push(Isa::Portable);
        out
    }

    /// The best this CPU runs, detected once; `SD_WORKER_Q8_ISA` in the
    /// environment (`avx512-vnni`, `avx2` or `portable`) picks a slower one
    /// the CPU also runs, to measure it or rule the faster one out.
    pub fn detect() -> Isa {
        static ISA: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *ISA.get_or_init(|| {
            let supported = Isa::supported();
            let wanted = std::env::var("SD_WORKER_Q8_ISA").ok();
            supported
                .iter()
                .copied()
                .find(|i| wanted.as_deref() == Some(i.name()))
                .unwrap_or(supported[0])
        })
    }

    /// Its name in logs and the bench output.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512Vnni => "avx512-vnni",
            Isa::Avx2 => "avx2",
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
        Isa::Avx512Vnni | Isa::Avx2 => unreachable!("only detected on x86_64"),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => with_pairs(t, |pairs| avx2::pairs::<BCAST_U8>(nv, t, pairs)),
        Isa::Portable => with_pairs(t, |pairs| scalar_pairs::<BCAST_U8>(nv, t, pairs)),
    }
}

/// Without VNNI the four byte products of a group are summed as two pairs
/// (`a0 p0 + a1 p1`, `a2 p2 + a3 p3`; each product exact in i16 since
/// `|a p| <= 255 * 127`), added together at the end.
///
/// Pair sums of a tile, `[row][block][2 * lane + h]`: column `block * 16 +
/// lane` is `pairs[..][2 * lane] + pairs[..][2 * lane + 1]` (the two halves
/// `a0 p0 + a1 p1` and `a2 p2 + a3 p3` of each group of four bytes).
type Pairs = [[[i32; 32]; NV_MAX]; MR];

/// The tile from its pair sums, filled by `fill`: the same epilogue as the
/// VNNI kernel's, one value at a time.
unsafe fn with_pairs(t: &Tile, fill: impl FnOnce(&mut Pairs)) {
    let mut pairs: Pairs = [[[0i32; 32]; NV_MAX]; MR];
    fill(&mut pairs);
    for (r, pr) in pairs.iter().enumerate().take(t.rows) {
        for c in 0..t.cols {
            let pair = &pr[c / 16][2 * (c % 16)..2 * (c % 16) + 2];
            let i = pair[0] + pair[1] - t.row_off[r] - t.col_off[c];
            let f = (i as f32 * t.row_scale[r]) * t.col_scale[c];
            *t.dst.add(r * t.ldc + c) = f + (t.row_bias[r] + t.col_bias[c]);
        }
    }
}

/// The bytes of one operand as i16: unsigned activations or signed weights.
#[inline(always)]
fn widen<const UNSIGNED: bool>(b: u8) -> i32 {
    if UNSIGNED {
        b as i32
    } else {
        b as i8 as i32
    }
}

/// The pair sums in plain Rust.
unsafe fn scalar_pairs<const BCAST_U8: bool>(nv: usize, t: &Tile, pairs: &mut Pairs) {
    for g in 0..t.k4 {
        for (r, pr) in pairs.iter_mut().enumerate() {
            let a = &*(t.bcast.add(r * t.bcast_rs + g * t.bcast_gs) as *const [u8; 4]);
            let a = a.map(|x| {
                if BCAST_U8 {
                    widen::<true>(x)
                } else {
                    widen::<false>(x)
                }
            });
            for (v, pv) in pr.iter_mut().enumerate().take(nv) {
                let p = &*(t.packed.add(v * t.packed_bs + g * 64) as *const [u8; 64]);
                let p = |i: usize| {
                    if BCAST_U8 {
                        widen::<false>(p[i])
                    } else {
                        widen::<true>(p[i])
                    }
                };
                for lane in 0..16 {
                    pv[2 * lane] += a[0] * p(4 * lane) + a[1] * p(4 * lane + 1);
                    pv[2 * lane + 1] += a[2] * p(4 * lane + 2) + a[3] * p(4 * lane + 3);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Pairs, Tile, MR};
    use std::arch::x86_64::*;

    /// The pair sums by `VPMADDWD`: two rows of one 16-column block at a time (8 accumulators, 4 widened
    /// quarters of the block, 1 broadcast row: 13 of the 16 registers).
    #[target_feature(enable = "avx2")]
    #[allow(clippy::needless_range_loop)] // `v` also addresses the packed operand
    pub(super) unsafe fn pairs<const BCAST_U8: bool>(nv: usize, t: &Tile, out: &mut Pairs) {
        for v in 0..nv {
            for r0 in (0..MR).step_by(2) {
                let mut acc = [[_mm256_setzero_si256(); 4]; 2];
                for g in 0..t.k4 {
                    let base = t.packed.add(v * t.packed_bs + g * 64);
                    let mut p = [_mm256_setzero_si256(); 4];
                    for (q, pq) in p.iter_mut().enumerate() {
                        let bytes = _mm_loadu_si128(base.add(16 * q) as *const __m128i);
                        *pq = if BCAST_U8 {
                            _mm256_cvtepi8_epi16(bytes)
                        } else {
                            _mm256_cvtepu8_epi16(bytes)
                        };
                    }
                    for (row, acc_row) in acc.iter_mut().enumerate() {
                        let a = &*(t.bcast.add((r0 + row) * t.bcast_rs + g * t.bcast_gs)
                            as *const [u8; 4]);
                        let w = |x: u8| -> u64 {
                            let v = if BCAST_U8 { x as i16 } else { x as i8 as i16 };
                            v as u16 as u64
                        };
                        let pattern = w(a[0]) | w(a[1]) << 16 | w(a[2]) << 32 | w(a[3]) << 48;
                        let a = _mm256_set1_epi64x(pattern as i64);
                        for (q, s) in acc_row.iter_mut().enumerate() {
                            *s = _mm256_add_epi32(*s, _mm256_madd_epi16(p[q], a));
                        }
                    }
                }
                for (row, acc_row) in acc.iter().enumerate() {
                    for (q, s) in acc_row.iter().enumerate() {
                        // Lanes 4q..4q + 4, two pair sums each.
                        _mm256_storeu_si256(
                            out[r0 + row][v][8 * q..].as_mut_ptr() as *mut __m256i,
                            *s,
                        );
                    }
                }
            }
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
