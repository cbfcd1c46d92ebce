//! Single-file checkpoints: tiny SD 1.x, SD 2.x and SDXL models are written as
//! one LDM-layout `.safetensors` each (the names A1111 and model sites use;
//! the renaming below is the inverse of diffusers' `convert_ldm_*_checkpoint`
//! and `convert_open_clip_checkpoint`, written out here independently of the
//! worker's), served with `--model-path file --tokenizer dir`, and must give
//! pixel-identical images to the same weights served as a diffusers folder.
//! Checked once against diffusers itself: its `from_single_file` reads
//! checkpoints written by this mapping back into exactly the original weights
//! (SD 1.x: UNet 302 and VAE 240 tensors; SDXL: UNet 428, VAE 240, CLIP 36
//! and OpenCLIP 53; SD 2.x: UNet 304, VAE 240, OpenCLIP 36 with its unused
//! last layer and projection dropped; no difference, diffusers 0.42.1).

mod common;

use candle_core::{Device, Tensor};
use common::Worker;
use sd_worker::model::config::PerBlock;
use sd_worker::model::generate::{write_model, WeightInit};
use sd_worker::model::shapes::ModelShape;
use serde_json::json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn load(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

fn pixels(png: &[u8]) -> Vec<u8> {
    image::load_from_memory(png).unwrap().to_rgb8().into_raw()
}

fn resnet(rest: &str) -> String {
    for (diffusers, ldm) in [
        ("norm1.", "in_layers.0."),
        ("conv1.", "in_layers.2."),
        ("time_emb_proj.", "emb_layers.1."),
        ("norm2.", "out_layers.0."),
        ("conv2.", "out_layers.3."),
        ("conv_shortcut.", "skip_connection."),
    ] {
        if let Some(r) = rest.strip_prefix(diffusers) {
            return format!("{ldm}{r}");
        }
    }
    panic!("unknown resnet tensor {rest}")
}

/// `<i>.<rest>` split.
fn idx(s: &str) -> (usize, &str) {
    let (i, r) = s.split_once('.').unwrap();
    (i.parse().unwrap(), r)
}

/// diffusers UNet name -> LDM name, for `layers` resnets per block.
fn unet_ldm(key: &str, layers: usize, attn_up_blocks: &[usize]) -> String {
    let per = layers + 1;
    for (d, l) in [
        ("time_embedding.linear_1.", "time_embed.0."),
        ("time_embedding.linear_2.", "time_embed.2."),
        ("add_embedding.linear_1.", "label_emb.0.0."),
        ("add_embedding.linear_2.", "label_emb.0.2."),
        ("conv_in.", "input_blocks.0.0."),
        ("conv_norm_out.", "out.0."),
        ("conv_out.", "out.2."),
    ] {
        if let Some(r) = key.strip_prefix(d) {
            return format!("{l}{r}");
        }
    }
    if let Some(s) = key.strip_prefix("down_blocks.") {
        let (b, s) = idx(s);
        if let Some(r) = s.strip_prefix("downsamplers.0.conv.") {
            return format!("input_blocks.{}.0.op.{r}", (b + 1) * per);
        }
        if let Some(s) = s.strip_prefix("resnets.") {
            let (l, r) = idx(s);
            return format!("input_blocks.{}.0.{}", b * per + l + 1, resnet(r));
        }
        let (l, r) = idx(s.strip_prefix("attentions.").unwrap());
        return format!("input_blocks.{}.1.{r}", b * per + l + 1);
    }
    if let Some(s) = key.strip_prefix("mid_block.") {
        if let Some(s) = s.strip_prefix("resnets.") {
            let (l, r) = idx(s);
            return format!("middle_block.{}.{}", 2 * l, resnet(r));
        }
        return format!(
            "middle_block.1.{}",
            s.strip_prefix("attentions.0.").unwrap()
        );
    }
    let s = key.strip_prefix("up_blocks.").unwrap();
    let (b, s) = idx(s);
    if let Some(r) = s.strip_prefix("upsamplers.0.conv.") {
        let slot = if attn_up_blocks.contains(&b) { 2 } else { 1 };
        return format!("output_blocks.{}.{slot}.conv.{r}", b * per + layers);
    }
    if let Some(s) = s.strip_prefix("resnets.") {
        let (l, r) = idx(s);
        return format!("output_blocks.{}.0.{}", b * per + l, resnet(r));
    }
    let (l, r) = idx(s.strip_prefix("attentions.").unwrap());
    format!("output_blocks.{}.1.{r}", b * per + l)
}

/// diffusers VAE name -> LDM name (the decoder's blocks run the other way),
/// with the mid-block attention's linears as 1x1 convolutions.
fn vae_ldm(key: &str, t: &Tensor, blocks: usize) -> (String, Tensor) {
    let (side, s) = key.split_once('.').unwrap();
    let res = |r: &str| r.replace("conv_shortcut.", "nin_shortcut.");
    let name = if let Some(s) = s.strip_prefix("down_blocks.") {
        let (i, s) = idx(s);
        match s.strip_prefix("downsamplers.0.conv.") {
            Some(r) => format!("{side}.down.{i}.downsample.conv.{r}"),
            None => {
                let (j, r) = idx(s.strip_prefix("resnets.").unwrap());
                format!("{side}.down.{i}.block.{j}.{}", res(r))
            }
        }
    } else if let Some(s) = s.strip_prefix("up_blocks.") {
        let (i, s) = idx(s);
        let i = blocks - 1 - i;
        match s.strip_prefix("upsamplers.0.conv.") {
            Some(r) => format!("{side}.up.{i}.upsample.conv.{r}"),
            None => {
                let (j, r) = idx(s.strip_prefix("resnets.").unwrap());
                format!("{side}.up.{i}.block.{j}.{}", res(r))
            }
        }
    } else if let Some(s) = s.strip_prefix("mid_block.resnets.") {
        let (j, r) = idx(s);
        format!("{side}.mid.block_{}.{}", j + 1, res(r))
    } else if let Some(s) = s.strip_prefix("mid_block.attentions.0.") {
        let (part, r) = s.split_once('.').unwrap();
        let part = match part {
            "group_norm" => "norm",
            "to_q" => "q",
            "to_k" => "k",
            "to_v" => "v",
            "to_out" => return vae_conv(format!("{side}.mid.attn_1.proj_out.{}", &r[2..]), t),
            other => panic!("unknown vae attention tensor {other}"),
        };
        return vae_conv(format!("{side}.mid.attn_1.{part}.{r}"), t);
    } else {
        key.to_string()
    };
    (name, t.clone())
}

fn vae_conv(name: String, t: &Tensor) -> (String, Tensor) {
    let t = if t.rank() == 2 {
        let (o, i) = t.dims2().unwrap();
        t.reshape((o, i, 1, 1)).unwrap()
    } else {
        t.clone()
    };
    (name, t)
}

/// transformers' CLIP text model -> an OpenCLIP text tower (fused q/k/v,
/// `text_projection` as x @ P), under `prefix`.
fn open_clip_ldm(text: HashMap<String, Tensor>, prefix: &str, all: &mut HashMap<String, Tensor>) {
    let mut qkv: HashMap<String, [Option<Tensor>; 3]> = HashMap::new();
    for (k, t) in text {
        let name = if k == "text_projection.weight" {
            all.insert(
                format!("{prefix}text_projection"),
                t.t().unwrap().contiguous().unwrap(),
            );
            continue;
        } else if let Some(r) = k.strip_prefix("text_model.embeddings.token_embedding.") {
            format!("token_embedding.{r}")
        } else if k == "text_model.embeddings.position_embedding.weight" {
            "positional_embedding".to_string()
        } else if let Some(r) = k.strip_prefix("text_model.final_layer_norm.") {
            format!("ln_final.{r}")
        } else {
            let s = k.strip_prefix("text_model.encoder.layers.").unwrap();
            let (i, r) = idx(s);
            let block = format!("transformer.resblocks.{i}.");
            let (part, tail) = r.rsplit_once('.').unwrap();
            let slot = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"]
                .iter()
                .position(|p| *p == part);
            if let Some(slot) = slot {
                let fused = format!("{block}attn.in_proj_{tail}");
                qkv.entry(fused).or_default()[slot] = Some(t);
                continue;
            }
            let to = match part {
                "layer_norm1" => "ln_1",
                "layer_norm2" => "ln_2",
                "mlp.fc1" => "mlp.c_fc",
                "mlp.fc2" => "mlp.c_proj",
                "self_attn.out_proj" => "attn.out_proj",
                other => panic!("unknown text tensor {other}"),
            };
            format!("{block}{to}.{tail}")
        };
        all.insert(format!("{prefix}{name}"), t);
    }
    for (name, parts) in qkv {
        let parts: Vec<Tensor> = parts.into_iter().map(Option::unwrap).collect();
        all.insert(format!("{prefix}{name}"), Tensor::cat(&parts, 0).unwrap());
    }
    // OpenCLIP keeps its contrastive temperature beside the text tower.
    all.insert(
        format!("{prefix}logit_scale"),
        Tensor::new(4.6f32, &Device::Cpu).unwrap(),
    );
}

/// Which text encoders the checkpoint holds, as the three families do.
#[derive(Clone, Copy, PartialEq)]
enum Family {
    Sd1,
    Sd2,
    Sdxl,
}

/// Writes the diffusers folder `dir` as one LDM-layout checkpoint.
fn write_single_file(dir: &Path, shape: &ModelShape, family: Family, out: &Path) {
    let layers = shape.unet.layers_per_block;
    let n = shape.unet.block_out_channels.len();
    let attn_up: Vec<usize> = (0..n)
        .filter(|b| shape.unet.up_block_types[*b].starts_with("CrossAttn"))
        .collect();
    let mut all: HashMap<String, Tensor> = HashMap::new();
    for (k, t) in load(&dir.join("unet/diffusion_pytorch_model.safetensors")) {
        all.insert(
            format!("model.diffusion_model.{}", unet_ldm(&k, layers, &attn_up)),
            t,
        );
    }
    let vae_blocks = shape.vae.block_out_channels.len();
    for (k, t) in load(&dir.join("vae/diffusion_pytorch_model.safetensors")) {
        let (name, t) = vae_ldm(&k, &t, vae_blocks);
        all.insert(format!("first_stage_model.{name}"), t);
    }
    let text = load(&dir.join("text_encoder/model.safetensors"));
    match family {
        Family::Sd1 => {
            for (k, t) in text {
                all.insert(format!("cond_stage_model.transformer.{k}"), t);
            }
        }
        Family::Sd2 => {
            let prefix = "cond_stage_model.model.";
            // SD 2.x's tower has one layer more than it uses (it conditions on
            // the penultimate one), and a projection it does not use.
            let h = shape.text_encoder.hidden_size;
            let layers = shape.text_encoder.num_hidden_layers;
            let extra = format!("{prefix}transformer.resblocks.{layers}.");
            for (name, dims) in [
                ("ln_1.weight", vec![h]),
                ("attn.in_proj_weight", vec![3 * h, h]),
                ("mlp.c_fc.weight", vec![4 * h, h]),
            ] {
                let t = Tensor::randn(0f32, 1.0, dims, &Device::Cpu).unwrap();
                all.insert(format!("{extra}{name}"), t);
            }
            let proj = Tensor::randn(0f32, 1.0, (h, h), &Device::Cpu).unwrap();
            all.insert(format!("{prefix}text_projection"), proj);
            open_clip_ldm(text, prefix, &mut all);
        }
        Family::Sdxl => {
            for (k, t) in text {
                all.insert(format!("conditioner.embedders.0.transformer.{k}"), t);
            }
            let second = load(&dir.join("text_encoder_2/model.safetensors"));
            open_clip_ldm(second, "conditioner.embedders.1.model.", &mut all);
        }
    }
    candle_core::safetensors::save(&all, out).unwrap();
}

/// Writes `shape` as a diffusers folder `<name>-folder` and as one LDM-layout
/// file `<name>-single.safetensors` beside it.
fn folder_and_file(
    root: &Path,
    name: &str,
    shape: &ModelShape,
    family: Family,
    seed: u64,
) -> (PathBuf, PathBuf) {
    let folder = root.join(format!("{name}-folder"));
    write_model(&folder, shape, WeightInit::Seeded(seed)).unwrap();
    let file = root.join(format!("{name}-single.safetensors"));
    write_single_file(&folder, shape, family, &file);
    (folder, file)
}

/// The request every family's folder and file must answer alike.
fn body() -> serde_json::Value {
    json!({"operation": "image_generation", "prompt": "a lighthouse",
           "negative_prompt": "fog", "steps": 3, "seed": 9, "width": 128, "height": 96})
}

/// Serves `folder` and then `file` (twice: converting, then reusing the
/// conversion), and checks the same request gives the same pixels.
async fn same_images(
    folder: &Path,
    file: &Path,
    tokenizer: &Path,
    family: &str,
    body: serde_json::Value,
) {
    let by_folder = {
        let w = Worker::start_with_model(folder.to_str().unwrap(), &[]).await;
        pixels(&w.run_job(body.clone()).await.1[0])
    };
    let cache = file.with_extension("cache");
    let args = [
        "--model-path",
        file.to_str().unwrap(),
        "--tokenizer",
        tokenizer.to_str().unwrap(),
    ];
    let stem = file.file_stem().unwrap().to_str().unwrap();
    for start in ["converts", "reuses the conversion"] {
        let w = Worker::spawn(&args, &[("SD_WORKER_CACHE", cache.to_str().unwrap())]);
        w.wait_ready().await;
        let (_, info) = w.get_json("/v1/info").await;
        assert_eq!(info["model"]["id"], stem, "{start}");
        assert_eq!(info["model"]["family"], family);
        let image = pixels(&w.run_job(body.clone()).await.1[0]);
        // Pixels, not PNG bytes: the PNGs name their model.
        assert!(image == by_folder, "{start}: single file and folder differ");
    }
    let converted: Vec<_> = std::fs::read_dir(cache.join("converted"))
        .unwrap()
        .collect();
    assert_eq!(converted.len(), 1, "converted once");
}

/// The VAE as SD checkpoints have it: 4 blocks, 2 resnets each, 32 groups.
fn sd_vae(shape: &mut ModelShape) {
    shape.vae.block_out_channels = vec![32; 4];
    shape.vae.down_block_types = vec!["DownEncoderBlock2D".into(); 4];
    shape.vae.up_block_types = vec!["UpDecoderBlock2D".into(); 4];
    shape.vae.norm_num_groups = 32;
    shape.vae.layers_per_block = 2;
}

/// SD 2.x and SDXL conventions where a checkpoint records nothing: 64-wide
/// attention heads in the UNet and the text encoders.
fn sd2_and_sdxl_heads(shape: &mut ModelShape) {
    shape.unet.block_out_channels = vec![64, 128];
    shape.unet.attention_head_dim = PerBlock::Each(vec![1, 2]);
    shape.unet.layers_per_block = 2;
    shape.text_encoder.hidden_size = 64;
    shape.text_encoder.intermediate_size = 128;
    shape.text_encoder.num_attention_heads = 1;
}

#[tokio::test]
async fn a_single_file_sdxl_checkpoint_serves_the_same_images_as_its_diffusers_folder() {
    let root = tempfile::tempdir().unwrap();
    let mut shape = ModelShape::tiny_sdxl();
    sd2_and_sdxl_heads(&mut shape);
    sd_vae(&mut shape);
    let second = shape.text_encoder_2.as_mut().unwrap();
    second.hidden_size = 128;
    second.intermediate_size = 256;
    second.num_attention_heads = 2;
    shape.unet.cross_attention_dim = PerBlock::All(64 + 128);
    let (folder, file) = folder_and_file(root.path(), "tiny-sdxl", &shape, Family::Sdxl, 22);
    // A diffusers SDXL folder holds both tokenizers.
    same_images(&folder, &file, &folder, "stable-diffusion-xl", body()).await;
}

#[tokio::test]
async fn a_single_file_sd2_checkpoint_serves_the_same_images_and_reads_its_yaml() {
    let root = tempfile::tempdir().unwrap();
    let mut shape = ModelShape::tiny_sd2();
    sd2_and_sdxl_heads(&mut shape);
    sd_vae(&mut shape);
    shape.unet.cross_attention_dim = PerBlock::All(64);
    let (folder, file) = folder_and_file(root.path(), "tiny-sd2", &shape, Family::Sd2, 23);
    // No yaml beside it: v-prediction, as the folder (SD 2.1's config).
    same_images(
        &folder,
        &file,
        &folder.join("tokenizer"),
        "stable-diffusion-2",
        body(),
    )
    .await;

    // SD 2.x-base's yaml has no `parameterization: "v"`: epsilon at 512.
    let base = root.path().join("tiny-sd2-base.safetensors");
    std::fs::copy(&file, &base).unwrap();
    std::fs::write(
        base.with_extension("yaml"),
        "model:\n  params:\n    linear_start: 0.00085\n",
    )
    .unwrap();
    let tokenizer = folder.join("tokenizer");
    let args = [
        "--model-path",
        base.to_str().unwrap(),
        "--tokenizer",
        tokenizer.to_str().unwrap(),
    ];
    let cache = root.path().join("cache-base");
    let w = Worker::spawn(&args, &[("SD_WORKER_CACHE", cache.to_str().unwrap())]);
    w.wait_ready().await;
    let (_, info) = w.get_json("/v1/info").await;
    assert_eq!(info["model"]["prediction_type"], "epsilon");
    assert_eq!(info["model"]["native_width"], 512);
}

#[tokio::test]
async fn a_single_file_sd1_checkpoint_serves_the_same_images_as_its_diffusers_folder() {
    let root = tempfile::tempdir().unwrap();
    // SD 1.5's layout at toy size: two resnets per UNet block, 8 attention
    // heads, 64-wide text-encoder heads, a 4-block VAE with 32 groups (the
    // parts a checkpoint does not record follow SD 1.x).
    let mut shape = ModelShape::tiny();
    shape.unet.layers_per_block = 2;
    shape.unet.attention_head_dim = PerBlock::All(8);
    shape.unet.cross_attention_dim = PerBlock::All(64);
    shape.text_encoder.hidden_size = 64;
    shape.text_encoder.intermediate_size = 128;
    shape.text_encoder.num_attention_heads = 1;
    sd_vae(&mut shape);
    shape.scheduler_config["_class_name"] = "PNDMScheduler".into();
    let (folder, file) = folder_and_file(root.path(), "tiny", &shape, Family::Sd1, 21);
    // A diffusers folder as --tokenizer: its `tokenizer/` is used.
    same_images(&folder, &file, &folder, "stable-diffusion-1", body()).await;
}

#[test]
fn refiner_and_sd3_checkpoints_are_refused_with_a_reason() {
    let root = tempfile::tempdir().unwrap();
    let t = Tensor::zeros((2, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
    for (name, key, reason) in [
        (
            "refiner-like",
            "conditioner.embedders.0.model.ln_final.weight",
            "SDXL refiner",
        ),
        (
            "sd3-like",
            "model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight",
            "SD 3 single-file",
        ),
    ] {
        let file = root.path().join(format!("{name}.safetensors"));
        let tensors = HashMap::from([
            (key.to_string(), t.clone()),
            (
                "model.diffusion_model.input_blocks.0.0.weight".to_string(),
                t.clone(),
            ),
        ]);
        candle_core::safetensors::save(&tensors, &file).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sd-worker"))
            .args(["--host", "127.0.0.1", "--port", "0", "--model-path"])
            .arg(&file)
            .arg("--tokenizer")
            .arg(root.path())
            .env("SD_WORKER_CACHE", root.path().join("cache"))
            .env("RUST_LOG", "error")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        assert!(stderr.contains(reason), "{name}: {stderr}");
    }
}
