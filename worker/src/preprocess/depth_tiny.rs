//! Random but deterministic Depth Anything V2 weights in the released
//! checkpoint's layout, for the parity tests and for measuring the real
//! shape without its weights.

use super::depth_net::DepthNetConfig;
use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use std::collections::HashMap;
use std::path::Path;

/// The tiny model's shapes: width 32, 4 blocks of 2 heads, all four tapped.
pub fn tiny_config() -> DepthNetConfig {
    DepthNetConfig {
        embed_dim: 32,
        depth: 4,
        num_heads: 2,
        mlp_hidden: 128,
        patch_size: 14,
        pos_grid: 37,
        layer_ids: [0, 1, 2, 3],
        out_channels: [8, 16, 24, 32],
        features: 16,
        head_hidden: 32,
        layer_norm_eps: 1e-6,
    }
}

/// Writes a tiny Depth Anything V2 with random but deterministic weights
/// (ChaCha8 from `seed`) into the folder `dir`: `model.safetensors` in the
/// original layout (every key of the released checkpoint, f32) and
/// `config.json` in transformers' `DepthAnythingConfig` format (so the
/// reference can build the same model). Shapes: [`tiny_config`].
pub fn write_tiny_depth_model(dir: &Path, seed: u64) -> Result<()> {
    write_random_depth_model(dir, &tiny_config(), seed)
}

/// [`write_tiny_depth_model`] at any shape (e.g. [`DepthNetConfig::vit_small`],
/// to measure time and memory without downloading the real weights).
pub fn write_random_depth_model(dir: &Path, cfg: &DepthNetConfig, seed: u64) -> Result<()> {
    let cfg = cfg.clone();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let normal = Normal::new(0f32, 1.0).expect("unit normal");
    let mut ts: Vec<(String, Tensor)> = Vec::new();
    // Weights ~ N(0, gain^2 / fan_in); biases and scales around `offset`.
    let mut put = |name: String, shape: &[usize], std: f32, offset: f32| -> Result<()> {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| offset + std * normal.sample(&mut rng))
            .collect();
        ts.push((name, Tensor::from_vec(v, shape, &Device::Cpu)?));
        Ok(())
    };
    let (d, p, m) = (cfg.embed_dim, cfg.patch_size, cfg.mlp_hidden);
    let w = |fan_in: usize| 1.0 / (fan_in as f32).sqrt();
    let e = "pretrained";
    put(format!("{e}.cls_token"), &[1, 1, d], 0.5, 0.0)?;
    put(format!("{e}.mask_token"), &[1, d], 0.02, 0.0)?;
    put(
        format!("{e}.pos_embed"),
        &[1, 1 + cfg.pos_grid * cfg.pos_grid, d],
        0.5,
        0.0,
    )?;
    put(
        format!("{e}.patch_embed.proj.weight"),
        &[d, 3, p, p],
        w(3 * p * p),
        0.0,
    )?;
    put(format!("{e}.patch_embed.proj.bias"), &[d], 0.1, 0.0)?;
    for i in 0..cfg.depth {
        let b = format!("{e}.blocks.{i}");
        for (n, o, fan) in [
            ("attn.qkv", 3 * d, d),
            ("attn.proj", d, d),
            ("mlp.fc1", m, d),
            ("mlp.fc2", d, m),
        ] {
            put(format!("{b}.{n}.weight"), &[o, fan], w(fan), 0.0)?;
            put(format!("{b}.{n}.bias"), &[o], 0.05, 0.0)?;
        }
        for n in ["norm1", "norm2"] {
            put(format!("{b}.{n}.weight"), &[d], 0.1, 1.0)?;
            put(format!("{b}.{n}.bias"), &[d], 0.1, 0.0)?;
        }
        put(format!("{b}.ls1.gamma"), &[d], 0.1, 0.5)?;
        put(format!("{b}.ls2.gamma"), &[d], 0.1, 0.5)?;
    }
    put(format!("{e}.norm.weight"), &[d], 0.1, 1.0)?;
    put(format!("{e}.norm.bias"), &[d], 0.1, 0.0)?;
    let h = "depth_head";
    let oc = cfg.out_channels;
    for (i, &c) in oc.iter().enumerate() {
        put(format!("{h}.projects.{i}.weight"), &[c, d, 1, 1], w(d), 0.0)?;
        put(format!("{h}.projects.{i}.bias"), &[c], 0.05, 0.0)?;
    }
    for (i, k) in [(0, 4), (1, 2)] {
        // ConvTranspose2d weights are [in, out, k, k].
        put(
            format!("{h}.resize_layers.{i}.weight"),
            &[oc[i], oc[i], k, k],
            w(oc[i]),
            0.0,
        )?;
        put(format!("{h}.resize_layers.{i}.bias"), &[oc[i]], 0.05, 0.0)?;
    }
    put(
        format!("{h}.resize_layers.3.weight"),
        &[oc[3], oc[3], 3, 3],
        w(9 * oc[3]),
        0.0,
    )?;
    put(format!("{h}.resize_layers.3.bias"), &[oc[3]], 0.05, 0.0)?;
    let (f, s) = (cfg.features, format!("{h}.scratch"));
    for (i, &c) in oc.iter().enumerate() {
        let name = format!("{s}.layer{}_rn.weight", i + 1);
        put(name, &[f, c, 3, 3], w(9 * c), 0.0)?;
    }
    let mut conv = |name: String, o: usize, i: usize, k: usize, bias: f32| -> Result<()> {
        put(format!("{name}.weight"), &[o, i, k, k], w(i * k * k), 0.0)?;
        put(format!("{name}.bias"), &[o], 0.05, bias)
    };
    for r in 1..=4 {
        for u in 1..=2 {
            for c in 1..=2 {
                conv(
                    format!("{s}.refinenet{r}.resConfUnit{u}.conv{c}"),
                    f,
                    f,
                    3,
                    0.0,
                )?;
            }
        }
        conv(format!("{s}.refinenet{r}.out_conv"), f, f, 1, 0.0)?;
    }
    conv(format!("{s}.output_conv1"), f / 2, f, 3, 0.0)?;
    conv(
        format!("{s}.output_conv2.0"),
        cfg.head_hidden,
        f / 2,
        3,
        0.1,
    )?;
    // A positive bias keeps most of the ReLU'd depth above zero.
    conv(format!("{s}.output_conv2.2"), 1, cfg.head_hidden, 1, 1.0)?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let map: HashMap<String, Tensor> = ts.into_iter().collect();
    candle_core::safetensors::save(&map, dir.join("model.safetensors"))?;
    let config = serde_json::json!({
        "model_type": "depth_anything",
        "architectures": ["DepthAnythingForDepthEstimation"],
        "backbone_config": {
            "model_type": "dinov2",
            "hidden_size": d,
            "num_hidden_layers": cfg.depth,
            "num_attention_heads": cfg.num_heads,
            "mlp_ratio": m / d,
            "image_size": cfg.pos_grid * p,
            "patch_size": p,
            "layer_norm_eps": cfg.layer_norm_eps,
            "out_indices": cfg.layer_ids.iter().map(|i| i + 1).collect::<Vec<_>>(),
            "out_features": cfg.layer_ids.iter().map(|i| format!("stage{}", i + 1)).collect::<Vec<_>>(),
            "reshape_hidden_states": false,
            "apply_layernorm": true
        },
        "patch_size": p,
        "reassemble_hidden_size": d,
        "reassemble_factors": [4, 2, 1, 0.5],
        "neck_hidden_sizes": oc,
        "fusion_hidden_size": f,
        "head_in_index": -1,
        "head_hidden_size": cfg.head_hidden,
        "depth_estimation_type": "relative"
    });
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&config)?,
    )
    .with_context(|| format!("writing {}", dir.join("config.json").display()))?;
    Ok(())
}
