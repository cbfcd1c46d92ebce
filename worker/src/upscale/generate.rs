//! Tiny upscalers with random but deterministic weights, in the exact key
//! layouts users' files have, for the parity tests and the
//! `generate-upscaler` command.
//!
//! Shapes: RRDBNet nf 8, nb 2, gc 32 (spandrel builds every RRDBNet with
//! gc 32 whatever the weights say, so the reference can only load gc 32;
//! [`write_esrgan`] takes any shape); SRVGGNetCompact nf 8, 4 body convs.

use super::arch::{CompactConfig, EsrganLayout, RrdbConfig};
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use std::collections::HashMap;
use std::path::Path;

/// The kinds [`generate`] writes.
pub const KINDS: [&str; 8] = [
    "esrgan-x4",
    "esrgan-x2",
    "esrgan-x1",
    "esrgan-old-x4",
    "esrgan-old-x2",
    "esrgan-old-plus-x4",
    "compact-x4",
    "compact-x2",
];

/// The tiny RRDBNet of a layout, x`2^upsamples / shuffle`.
pub fn tiny_esrgan(
    layout: EsrganLayout,
    upsamples: usize,
    shuffle: usize,
    plus: bool,
) -> RrdbConfig {
    RrdbConfig {
        in_nc: 3 * shuffle * shuffle,
        out_nc: 3,
        nf: 8,
        nb: 2,
        gc: 32,
        upsamples,
        shuffle,
        plus,
        layout,
    }
}

/// The tiny compact model at `upscale`.
pub fn tiny_compact(upscale: usize) -> CompactConfig {
    CompactConfig {
        in_nc: 3,
        out_nc: 3,
        nf: 8,
        num_conv: 4,
        upscale,
    }
}

/// Writes a tiny upscaler of `kind` (one of [`KINDS`]) to `out`
/// (.safetensors, f32), weights drawn from ChaCha8 seeded by `seed` (same
/// kind and seed: byte-identical file):
/// - `esrgan-x4`, `-x2`, `-x1`: Real-ESRGAN's basicsr layout (`conv_first`,
///   `body.N.rdbK.convJ`, `conv_up1/2`...); x2 and x1 pixel-unshuffle the
///   input (12 / 48 input channels) before a x4 body, as RealESRGAN_x2plus;
/// - `esrgan-old-x4`, `-old-x2`: the original ESRGAN layout (`model.0`,
///   `model.1.sub.N.RDBk.convJ.0`, `model.3`...) of community models;
///   `esrgan-old-plus-x4`: the same with ESRGAN+'s `conv1x1` paths;
/// - `compact-x4`, `-x2`: SRVGGNetCompact (`body.N`, PReLU).
pub fn generate(kind: &str, seed: u64, out: &Path) -> Result<()> {
    use EsrganLayout::{New, Old};
    match kind {
        "esrgan-x4" => write_esrgan(out, &tiny_esrgan(New, 2, 1, false), seed),
        "esrgan-x2" => write_esrgan(out, &tiny_esrgan(New, 2, 2, false), seed),
        "esrgan-x1" => write_esrgan(out, &tiny_esrgan(New, 2, 4, false), seed),
        "esrgan-old-x4" => write_esrgan(out, &tiny_esrgan(Old, 2, 1, false), seed),
        "esrgan-old-x2" => write_esrgan(out, &tiny_esrgan(Old, 1, 1, false), seed),
        "esrgan-old-plus-x4" => write_esrgan(out, &tiny_esrgan(Old, 2, 1, true), seed),
        "compact-x4" => write_compact(out, &tiny_compact(4), seed),
        "compact-x2" => write_compact(out, &tiny_compact(2), seed),
        other => bail!(
            "unknown upscaler kind `{other}`; one of: {}",
            KINDS.join(", ")
        ),
    }
}

/// Draws tensors in order: weights ~ N(0, (gain / sqrt(fan_in))^2), biases
/// and slopes ~ offset + N(0, std^2).
struct Filler {
    rng: ChaCha8Rng,
    tensors: HashMap<String, Tensor>,
}

impl Filler {
    fn new(seed: u64) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
            tensors: HashMap::new(),
        }
    }

    fn put(&mut self, name: String, shape: &[usize], std: f32, offset: f32) -> Result<()> {
        let normal = Normal::new(0f32, 1.0).expect("unit normal");
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| offset + std * normal.sample(&mut self.rng))
            .collect();
        self.tensors
            .insert(name, Tensor::from_vec(v, shape, &Device::Cpu)?);
        Ok(())
    }

    /// A 3x3 conv `name.weight` [o, i, 3, 3] and `name.bias` [o].
    fn conv(&mut self, name: &str, o: usize, i: usize, gain: f32, bias: f32) -> Result<()> {
        let std = gain / ((9 * i) as f32).sqrt();
        self.put(format!("{name}.weight"), &[o, i, 3, 3], std, 0.0)?;
        self.put(format!("{name}.bias"), &[o], 0.02, bias)
    }

    fn save(self, out: &Path) -> Result<()> {
        if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        candle_core::safetensors::save(&self.tensors, out)
            .with_context(|| format!("writing {}", out.display()))
    }
}

/// Canonical RRDBNet name -> the name in `layout`.
fn esrgan_name(cfg: &RrdbConfig, canonical: &str) -> String {
    let (stem, suffix) = canonical.rsplit_once('.').expect("param name");
    let u = cfg.upsamples;
    match cfg.layout {
        EsrganLayout::New => canonical.to_string(),
        EsrganLayout::Bsrgan => {
            let stem = match stem {
                "conv_body" => "trunk_conv".to_string(),
                "conv_hr" => "HRconv".to_string(),
                s if s.starts_with("conv_up") => s.replace("conv_up", "upconv"),
                s if s.starts_with("body.") => s
                    .replacen("body.", "RRDB_trunk.", 1)
                    .replace(".rdb", ".RDB"),
                s => s.to_string(),
            };
            format!("{stem}.{suffix}")
        }
        EsrganLayout::Old => {
            let stem = match stem {
                "conv_first" => "model.0".to_string(),
                "conv_body" => format!("model.1.sub.{}", cfg.nb),
                "conv_hr" => format!("model.{}", 3 * u + 2),
                "conv_last" => format!("model.{}", 3 * u + 4),
                s if s.starts_with("conv_up") => {
                    let k: usize = s["conv_up".len()..].parse().expect("conv_up index");
                    format!("model.{}", 3 * k)
                }
                s => {
                    // body.i.rdbK.convJ -> model.1.sub.i.RDBK.convJ.0 (conv1x1 has no `.0`).
                    let p: Vec<&str> = s.split('.').collect();
                    let rdb = p[2].replace("rdb", "RDB");
                    let zero = if p[3] == "conv1x1" { "" } else { ".0" };
                    format!("model.1.sub.{}.{rdb}.{}{zero}", p[1], p[3])
                }
            };
            format!("{stem}.{suffix}")
        }
    }
}

/// Writes an RRDBNet of any shape in `cfg.layout` to `out` (.safetensors).
pub fn write_esrgan(out: &Path, cfg: &RrdbConfig, seed: u64) -> Result<()> {
    let mut f = Filler::new(seed);
    let (nf, gc) = (cfg.nf, cfg.gc);
    f.conv("conv_first", nf, cfg.in_nc, 1.0, 0.0)?;
    for i in 0..cfg.nb {
        for k in 1..=3 {
            for j in 0..5 {
                let o = if j == 4 { nf } else { gc };
                f.conv(
                    &format!("body.{i}.rdb{k}.conv{}", j + 1),
                    o,
                    nf + j * gc,
                    1.0,
                    0.0,
                )?;
            }
            if cfg.plus {
                let std = 1.0 / (nf as f32).sqrt();
                f.put(
                    format!("body.{i}.rdb{k}.conv1x1.weight"),
                    &[gc, nf, 1, 1],
                    std,
                    0.0,
                )?;
            }
        }
    }
    f.conv("conv_body", nf, nf, 1.0, 0.0)?;
    for k in 1..=cfg.upsamples {
        f.conv(&format!("conv_up{k}"), nf, nf, 1.0, 0.0)?;
    }
    f.conv("conv_hr", nf, nf, 1.0, 0.0)?;
    // Small last weights and a 0.5 bias keep most outputs inside [0, 1],
    // so the clamp leaves the comparison meaningful.
    f.conv("conv_last", cfg.out_nc, nf, 0.3, 0.5)?;
    let tensors = std::mem::take(&mut f.tensors)
        .into_iter()
        .map(|(k, t)| (esrgan_name(cfg, &k), t))
        .collect();
    f.tensors = tensors;
    f.save(out)
}

/// Writes an SRVGGNetCompact of any shape to `out` (.safetensors).
pub fn write_compact(out: &Path, cfg: &CompactConfig, seed: u64) -> Result<()> {
    let mut f = Filler::new(seed);
    for i in 0..=cfg.num_conv {
        let in_c = if i == 0 { cfg.in_nc } else { cfg.nf };
        f.conv(&format!("body.{}", 2 * i), cfg.nf, in_c, 1.0, 0.0)?;
        f.put(format!("body.{}.weight", 2 * i + 1), &[cfg.nf], 0.05, 0.25)?;
    }
    let last = cfg.out_nc * cfg.upscale * cfg.upscale;
    f.conv(
        &format!("body.{}", 2 * cfg.num_conv + 2),
        last,
        cfg.nf,
        0.3,
        0.0,
    )?;
    f.save(out)
}
