//! Single-file ControlNets: tiny diffusers-layout ControlNets composed from
//! the project's generated UNets, written in the LDM layout
//! ([`write_ldm_controlnet`]) and converted back; and the conversion of the
//! same files by diffusers' `ControlNetModel.from_single_file`, recorded in
//! `tests/reference/controlnet_single_file_reference.json` by
//! `controlnet_single_file_reference.py` from the files the ignored test
//! `write_controlnet_single_file_fixtures` writes.

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use super::controlnet::*;
use crate::model::config::PerBlock;
use crate::model::generate::{write_model, WeightInit};
use crate::model::shapes::ModelShape;

/// The hint encoder's widths. Four, as every published ControlNet (16, 32,
/// 96, 256): diffusers' converter reads the last conv at `input_hint_block.14`.
const COND_OUT: [usize; 4] = [8, 16, 16, 32];

fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

/// Seeded normal values with variance 1/fan_in (biases: 0.02).
fn seeded(name: &str, dims: &[usize], seed: u64) -> Tensor {
    let numel: usize = dims.iter().product();
    let std = if dims.len() > 1 {
        (dims[0] as f64 / numel as f64).sqrt()
    } else {
        0.02
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ fnv1a(name));
    let v: Vec<f32> = (0..numel)
        .map(|_| {
            let x: f64 = StandardNormal.sample(&mut rng);
            (x * std) as f32
        })
        .collect();
    Tensor::from_vec(v, dims, &Device::Cpu).unwrap()
}

/// A diffusers-layout ControlNet for `shape`'s UNet at `dir`: the shared part
/// (conv_in, time and add embeddings, down blocks, mid block) from the UNet
/// the project's generator writes with `seed`, plus seeded hint-encoder
/// convs ([`COND_OUT`], 3-channel hints), one 1x1 zero conv per skip state
/// and the mid block's.
fn tiny_controlnet(shape: &ModelShape, seed: u64, dir: &Path) -> Result<()> {
    let base = tempfile::tempdir()?;
    write_model(base.path(), shape, WeightInit::Seeded(seed))?;
    let unet = candle_core::safetensors::load(
        base.path().join("unet/diffusion_pytorch_model.safetensors"),
        &Device::Cpu,
    )?;
    let shared = [
        "conv_in.",
        "time_embedding.",
        "add_embedding.",
        "down_blocks.",
        "mid_block.",
    ];
    let mut t: HashMap<String, Tensor> = unet
        .into_iter()
        .filter(|(k, _)| shared.iter().any(|s| k.starts_with(s)))
        .collect();
    let mut conv = |name: String, o: usize, i: usize, k: usize| {
        for (part, dims) in [("weight", vec![o, i, k, k]), ("bias", vec![o])] {
            let key = format!("{name}.{part}");
            t.insert(key.clone(), seeded(&key, &dims, seed));
        }
    };
    let c = &shape.unet.block_out_channels;
    conv(
        "controlnet_cond_embedding.conv_in".into(),
        COND_OUT[0],
        3,
        3,
    );
    for j in 0..COND_OUT.len() - 1 {
        let (a, b) = (COND_OUT[j], COND_OUT[j + 1]);
        conv(
            format!("controlnet_cond_embedding.blocks.{}", 2 * j),
            a,
            a,
            3,
        );
        conv(
            format!("controlnet_cond_embedding.blocks.{}", 2 * j + 1),
            b,
            a,
            3,
        );
    }
    conv(
        "controlnet_cond_embedding.conv_out".into(),
        c[0],
        COND_OUT[3],
        3,
    );
    // Skip states: conv_in's, each resnet's, each downsampler's.
    let mut skips = vec![c[0]];
    for (b, &ch) in c.iter().enumerate() {
        skips.extend(std::iter::repeat_n(ch, shape.unet.layers_per_block));
        if b + 1 < c.len() {
            skips.push(ch);
        }
    }
    for (i, ch) in skips.into_iter().enumerate() {
        conv(format!("controlnet_down_blocks.{i}"), ch, ch, 1);
    }
    conv(
        "controlnet_mid_block".into(),
        c[c.len() - 1],
        c[c.len() - 1],
        1,
    );
    std::fs::create_dir_all(dir)?;
    let cfg = super::controlnet::config_json(&shape.unet, 3, &COND_OUT);
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&cfg)?)?;
    candle_core::safetensors::save(&t, dir.join("diffusion_pytorch_model.safetensors"))?;
    Ok(())
}

/// SD 1.x's conventions at tiny size: 8 heads.
fn sd15_shape() -> ModelShape {
    let mut s = ModelShape::tiny();
    s.unet.attention_head_dim = PerBlock::All(8);
    s
}

/// SDXL's conventions at tiny size: 64-wide heads (one head of 32 here),
/// 256-wide time ids after the 40-wide pooled text.
fn sdxl_shape() -> ModelShape {
    let mut s = ModelShape::tiny_sdxl();
    s.unet.attention_head_dim = PerBlock::Each(vec![1, 1]);
    s.unet.addition_time_embed_dim = Some(256);
    s.unet.projection_class_embeddings_input_dim = Some(40 + 6 * 256);
    s
}

/// The reference fixtures: (name, shape, seed, `control_model.` prefix).
fn cases() -> Vec<(&'static str, ModelShape, u64, bool)> {
    vec![
        ("sd15", sd15_shape(), 21, true),
        ("sdxl", sdxl_shape(), 22, true),
        ("sd15_no_prefix", sd15_shape(), 21, false),
    ]
}

/// Writes fixture `name`'s diffusers folder at `dir/<name>` and its LDM file
/// at `dir/<name>.safetensors` (returned).
fn write_case(name: &str, shape: &ModelShape, seed: u64, prefix: bool, dir: &Path) -> PathBuf {
    let folder = dir.join(name);
    tiny_controlnet(shape, seed, &folder).unwrap();
    let file = dir.join(format!("{name}.safetensors"));
    write_ldm_controlnet(&folder, &file).unwrap();
    if !prefix {
        let t = candle_core::safetensors::load(&file, &Device::Cpu).unwrap();
        let t: HashMap<String, Tensor> = t
            .into_iter()
            .map(|(k, v)| (k[LDM_CONTROLNET_PREFIX.len()..].to_string(), v))
            .collect();
        candle_core::safetensors::save(&t, &file).unwrap();
    }
    file
}

/// Writes the reference script's inputs into `$SD_WORKER_CONTROLNET_FIXTURES`:
/// `cargo test -p sd-worker --lib write_controlnet_single_file_fixtures -- --ignored`.
#[test]
#[ignore]
fn write_controlnet_single_file_fixtures() {
    let dir = PathBuf::from(
        std::env::var("SD_WORKER_CONTROLNET_FIXTURES")
            .expect("set SD_WORKER_CONTROLNET_FIXTURES to the folder to write"),
    );
    for (name, shape, seed, prefix) in cases() {
        write_case(name, &shape, seed, prefix, &dir);
    }
}

fn values(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn load(path: &Path) -> BTreeMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu)
        .unwrap()
        .into_iter()
        .collect()
}

/// Per-block config fields, compared as lists of one value per block.
const PER_BLOCK: &[&str] = &[
    "attention_head_dim",
    "num_attention_heads",
    "cross_attention_dim",
    "transformer_layers_per_block",
];

/// Asserts that the config fields of `expected` have the same values in
/// `got`, per-block fields written once or per block alike.
fn assert_config(expected: &serde_json::Value, got: &serde_json::Value, blocks: usize, what: &str) {
    let norm = |key: &str, v: &serde_json::Value| match v {
        serde_json::Value::Number(_) if PER_BLOCK.contains(&key) => {
            serde_json::Value::Array(vec![v.clone(); blocks])
        }
        _ => v.clone(),
    };
    for (key, want) in expected.as_object().unwrap() {
        if key.starts_with('_') {
            continue;
        }
        let have = got.get(key).unwrap_or(&serde_json::Value::Null);
        assert_eq!(norm(key, have), norm(key, want), "{what}: config `{key}`");
    }
}

#[test]
fn diffusers_folder_to_ldm_file_and_back_is_identical() {
    let mut sdxl_8 = ModelShape::tiny_sdxl();
    sdxl_8.unet.attention_head_dim = PerBlock::Each(vec![2, 4]);
    // (shape, base config given to the converter)
    let runs = [
        (sd15_shape(), None),
        (sdxl_shape(), None),
        // 8-wide time ids and other heads: only the base knows.
        (sdxl_8.clone(), Some(sdxl_8.unet.clone())),
    ];
    for (shape, base) in runs {
        let dir = tempfile::tempdir().unwrap();
        let file = write_case("cn", &shape, 5, true, dir.path());
        assert!(is_controlnet_file(&file).unwrap());
        let out = dir.path().join("converted");
        convert_controlnet_for(&file, base.as_ref(), &out).unwrap();
        let (a, b) = (
            load(&dir.path().join("cn/diffusion_pytorch_model.safetensors")),
            load(&out.join("diffusion_pytorch_model.safetensors")),
        );
        assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
        for (k, t) in &a {
            assert_eq!(t.dims(), b[k].dims(), "{k}");
            assert_eq!(values(t), values(&b[k]), "{k}");
        }
        let read = |p: PathBuf| -> serde_json::Value {
            serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
        };
        let (want, got) = (
            read(dir.path().join("cn/config.json")),
            read(out.join("config.json")),
        );
        let n = shape.unet.block_out_channels.len();
        assert_config(&want, &got, n, shape.name);
        assert_eq!(got["_class_name"], "ControlNetModel");
    }
}

#[test]
fn the_base_unet_must_fit_and_tiny_sdxl_needs_it() {
    let dir = tempfile::tempdir().unwrap();
    let shape = ModelShape::tiny_sdxl();
    let file = write_case("cn", &shape, 6, true, dir.path());
    let err = convert_controlnet(&file, &dir.path().join("a")).unwrap_err();
    assert!(
        format!("{err:#}").contains("addition_time_embed_dim"),
        "{err:#}"
    );
    let mut other = shape.unet.clone();
    other.block_out_channels = vec![32, 64];
    let err = convert_controlnet_for(&file, Some(&other), &dir.path().join("b")).unwrap_err();
    assert!(
        format!("{err:#}").contains("does not fit the base UNet"),
        "{err:#}"
    );
}

#[test]
fn converted_once_into_the_cache_per_base() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_case("cn", &sd15_shape(), 7, false, dir.path());
    let cache = dir.path().join("cache");
    let first = converted_controlnet_folder(&file, None, &cache).unwrap();
    assert!(first.join(".complete").is_file() && first.join("config.json").is_file());
    assert!(first.ends_with("cn"));
    assert_eq!(
        converted_controlnet_folder(&file, None, &cache).unwrap(),
        first
    );
    let base = sd15_shape().unet;
    let with_base = converted_controlnet_folder(&file, Some(&base), &cache).unwrap();
    assert_ne!(with_base, first);
}

#[test]
fn other_files_are_refused_with_what_they_are() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "lora_unet_down_blocks_0_attentions_0.lora_down.weight",
            "LoRA",
        ),
        (
            "model.diffusion_model.input_blocks.0.0.weight",
            "full Stable Diffusion checkpoint",
        ),
        ("adapter.body.0.resnets.0.block1.weight", "T2I-Adapter"),
        ("body.0.block1.weight", "T2I-Adapter"),
        (
            "controlnet_cond_embedding.conv_in.weight",
            "diffusers' layout",
        ),
        ("lora_controlnet", "Control-LoRA"),
        ("something.else", "not a ControlNet"),
    ];
    for (i, (name, what)) in cases.iter().enumerate() {
        let file = dir.path().join(format!("{i}.safetensors"));
        let t = Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap();
        let mut tensors = HashMap::from([(name.to_string(), t.clone())]);
        if *name == "lora_controlnet" {
            for n in [
                "input_hint_block.0.weight",
                "zero_convs.0.0.weight",
                "time_embed.0.weight",
            ] {
                tensors.insert(n.into(), t.clone());
            }
        }
        candle_core::safetensors::save(&tensors, &file).unwrap();
        assert!(!is_controlnet_file(&file).unwrap(), "{name}");
        let err = convert_controlnet(&file, &dir.path().join("out")).unwrap_err();
        assert!(format!("{err:#}").contains(what), "{name}: {err:#}");
    }
    assert!(is_controlnet_file(&dir.path().join("missing.safetensors")).is_err());
}

#[derive(Deserialize)]
struct Stats {
    shape: Vec<usize>,
    /// SHA-256 of the little-endian f32 values, row-major.
    sha256: String,
    sum: f64,
    weighted: f64,
    /// (flat index, value, its f32 bits)
    samples: Vec<(usize, f64, u32)>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    fixture_sha256: String,
    config: serde_json::Value,
    /// Tensors of ours that diffusers' converter leaves out (documented gaps).
    missing_in_diffusers: Vec<String>,
    tensors: BTreeMap<String, Stats>,
}

#[derive(Deserialize)]
struct Reference {
    cases: Vec<Case>,
}

fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn conversion_matches_diffusers_from_single_file() {
    let reference: Reference = serde_json::from_str(include_str!(
        "../../../tests/reference/controlnet_single_file_reference.json"
    ))
    .unwrap();
    let cases = cases();
    assert_eq!(reference.cases.len(), cases.len());
    for (name, shape, seed, prefix) in cases {
        let want = reference.cases.iter().find(|c| c.name == name).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = write_case(name, &shape, seed, prefix, dir.path());
        assert_eq!(
            hex_sha256(&std::fs::read(&file).unwrap()),
            want.fixture_sha256,
            "{name}: the fixture changed; rerun controlnet_single_file_reference.py"
        );
        let out = dir.path().join("converted");
        convert_controlnet(&file, &out).unwrap();
        let ours = load(&out.join("diffusion_pytorch_model.safetensors"));
        let mut keys: Vec<&String> = ours.keys().collect();
        keys.retain(|k| !want.missing_in_diffusers.contains(k));
        assert_eq!(
            keys,
            want.tensors.keys().collect::<Vec<_>>(),
            "{name}: key set"
        );
        let mut max_sum = 0f64;
        for (k, stats) in &want.tensors {
            let t = &ours[k];
            assert_eq!(t.dims(), stats.shape.as_slice(), "{name} {k}");
            let v = values(t);
            let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            assert_eq!(
                hex_sha256(&bytes),
                stats.sha256,
                "{name} {k}: values differ"
            );
            let sum: f64 = v.iter().map(|&x| x as f64).sum();
            let weighted: f64 = v
                .iter()
                .enumerate()
                .map(|(i, &x)| x as f64 * ((i % 7) + 1) as f64)
                .sum();
            for &(i, x, bits) in &stats.samples {
                assert_eq!(v[i].to_bits(), bits, "{name} {k}[{i}] (diffusers: {x})");
            }
            max_sum = max_sum
                .max((sum - stats.sum).abs())
                .max((weighted - stats.weighted).abs());
        }
        // Values are bit-identical (hashes above); sums differ by summation
        // order only.
        assert!(max_sum < 1e-9, "{name}: sums differ by {max_sum}");
        let got: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap())
                .unwrap();
        let n = shape.unet.block_out_channels.len();
        assert_config(&want.config, &got, n, name);
        eprintln!(
            "{name}: {} tensors bit-identical, max |sum difference| {max_sum:e}",
            want.tensors.len()
        );
    }
}

/// The tensor names and shapes the config inference reads, for a ControlNet
/// of published size: `depth[b]` transformer layers in block b (0: none),
/// `adm`: SDXL's `label_emb` input width.
fn published(
    channels: &[usize],
    depth: &[usize],
    cross: usize,
    linear: bool,
    adm: Option<usize>,
) -> (BTreeSet<String>, HashMap<String, Vec<usize>>) {
    let mut s: HashMap<String, Vec<usize>> = HashMap::new();
    let p = LDM_CONTROLNET_PREFIX;
    let c0 = channels[0];
    s.insert(format!("{p}time_embed.0.weight"), vec![4 * c0, c0]);
    if let Some(adm) = adm {
        s.insert(format!("{p}label_emb.0.0.weight"), vec![4 * c0, adm]);
    }
    s.insert(format!("{p}input_blocks.0.0.weight"), vec![c0, 4, 3, 3]);
    let mut i = 1;
    for (b, (&c, &d)) in channels.iter().zip(depth).enumerate() {
        for _ in 0..2 {
            s.insert(
                format!("{p}input_blocks.{i}.0.out_layers.3.weight"),
                vec![c, c, 3, 3],
            );
            if d > 0 {
                let proj = if linear { vec![c, c] } else { vec![c, c, 1, 1] };
                s.insert(format!("{p}input_blocks.{i}.1.proj_in.weight"), proj);
                for j in 0..d {
                    let k =
                        format!("{p}input_blocks.{i}.1.transformer_blocks.{j}.attn2.to_k.weight");
                    s.insert(k, vec![c, cross]);
                }
            }
            i += 1;
        }
        if b + 1 < channels.len() {
            s.insert(format!("{p}input_blocks.{i}.0.op.weight"), vec![c, c, 3, 3]);
            i += 1;
        }
    }
    for z in 0..i {
        s.insert(format!("{p}zero_convs.{z}.0.weight"), vec![1, 1, 1, 1]);
    }
    s.insert(format!("{p}middle_block_out.0.weight"), vec![1, 1, 1, 1]);
    let hint = [16, 16, 32, 32, 96, 96, 256];
    let mut from = 3;
    for (k, &to) in hint.iter().chain([c0].iter()).enumerate() {
        s.insert(
            format!("{p}input_hint_block.{}.weight", 2 * k),
            vec![to, from, 3, 3],
        );
        from = to;
    }
    (s.keys().cloned().collect(), s)
}

/// The configs inferred for ControlNets of published sizes are those of
/// lllyasviel/control_v11p_sd15_canny, thibaud/controlnet-sd21 and
/// diffusers/controlnet-canny-sdxl-1.0 (their config.json on the hub).
#[test]
fn published_controlnet_shapes_give_their_published_configs() {
    let sd = [320, 640, 1280, 1280];
    let runs = [
        (
            published(&sd, &[1, 1, 1, 0], 768, false, None),
            "8",
            "768",
            false,
            None,
        ),
        (
            published(&sd, &[1, 1, 1, 0], 1024, true, None),
            "[5,10,20,20]",
            "1024",
            true,
            None,
        ),
        (
            published(&[320, 640, 1280], &[0, 2, 10], 2048, true, Some(2816)),
            "[5,10,20]",
            "2048",
            true,
            Some(256),
        ),
    ];
    for ((names, shapes), heads, cross, linear, time) in runs {
        let shape = |n: &str| {
            shapes
                .get(n)
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("no {n}"))
        };
        let (cfg, cond, cond_out) =
            super::controlnet::infer_controlnet(&names, &shape, LDM_CONTROLNET_PREFIX, None)
                .unwrap();
        let json = super::controlnet::config_json(&cfg, cond, &cond_out);
        assert_eq!(
            json["attention_head_dim"].to_string().replace(' ', ""),
            heads
        );
        assert_eq!(json["cross_attention_dim"].to_string(), cross);
        assert_eq!(cfg.use_linear_projection, linear);
        assert_eq!(cfg.addition_time_embed_dim, time);
        assert_eq!((cond, cond_out), (3, vec![16, 32, 96, 256]));
        assert_eq!(cfg.layers_per_block, 2);
        if time.is_some() {
            assert_eq!(cfg.projection_class_embeddings_input_dim, Some(2816));
            assert_eq!(json["transformer_layers_per_block"].to_string(), "[1,2,10]");
            assert_eq!(json["down_block_types"][0], "DownBlock2D");
        } else {
            assert_eq!(json["down_block_types"][3], "DownBlock2D");
        }
    }
}
