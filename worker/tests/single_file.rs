//! Single-file checkpoints: a tiny SD 1.x model is written as one LDM-layout
//! `.safetensors` (the names A1111 and model sites use; the renaming below is
//! the inverse of diffusers' `convert_ldm_*_checkpoint`, written out here
//! independently of the worker's), served with `--model-path file --tokenizer
//! dir`, and must give byte-identical images to the same weights served as a
//! diffusers folder. Checked once against diffusers itself: its
//! `from_single_file` reads a checkpoint written by this mapping back into
//! exactly the original weights (UNet 302 and VAE 240 tensors, no difference).

mod common;

use candle_core::{Device, Tensor};
use common::Worker;
use sd_worker::model::config::PerBlock;
use sd_worker::model::generate::{write_model, WeightInit};
use sd_worker::model::shapes::ModelShape;
use serde_json::json;
use std::collections::HashMap;
use std::path::Path;

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

/// Writes the diffusers folder `dir` as one LDM-layout checkpoint.
fn write_single_file(dir: &Path, shape: &ModelShape, out: &Path) {
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
    for (k, t) in load(&dir.join("text_encoder/model.safetensors")) {
        all.insert(format!("cond_stage_model.transformer.{k}"), t);
    }
    candle_core::safetensors::save(&all, out).unwrap();
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
    shape.vae.block_out_channels = vec![32; 4];
    shape.vae.down_block_types = vec!["DownEncoderBlock2D".into(); 4];
    shape.vae.up_block_types = vec!["UpDecoderBlock2D".into(); 4];
    shape.vae.norm_num_groups = 32;
    shape.vae.layers_per_block = 2;
    shape.scheduler_config["_class_name"] = "PNDMScheduler".into();
    let folder = root.path().join("tiny-folder");
    write_model(&folder, &shape, WeightInit::Seeded(21)).unwrap();
    let file = root.path().join("tiny-single.safetensors");
    write_single_file(&folder, &shape, &file);

    let body = json!({"operation": "image_generation", "prompt": "a lighthouse",
                      "negative_prompt": "fog", "steps": 3, "seed": 9, "width": 128, "height": 96});
    let by_folder = {
        let w = Worker::start_with_model(folder.to_str().unwrap(), &[]).await;
        pixels(&w.run_job(body.clone()).await.1[0])
    };
    let cache = root.path().join("cache");
    let tokenizer = folder.join("tokenizer");
    let args = [
        "--model-path",
        file.to_str().unwrap(),
        "--tokenizer",
        tokenizer.to_str().unwrap(),
    ];
    for start in ["converts", "reuses the conversion"] {
        let w = Worker::spawn(&args, &[("SD_WORKER_CACHE", cache.to_str().unwrap())]);
        w.wait_ready().await;
        let (_, info) = w.get_json("/v1/info").await;
        assert_eq!(info["model"]["id"], "tiny-single", "{start}");
        assert_eq!(info["model"]["family"], "stable-diffusion-1");
        let image = pixels(&w.run_job(body.clone()).await.1[0]);
        // Pixels, not PNG bytes: the PNGs name their model.
        assert!(image == by_folder, "{start}: single file and folder differ");
    }
    let converted: Vec<_> = std::fs::read_dir(cache.join("converted"))
        .unwrap()
        .collect();
    assert_eq!(converted.len(), 1, "converted once");
}

#[test]
fn a_checkpoint_that_is_not_sd1_is_refused_with_a_reason() {
    let root = tempfile::tempdir().unwrap();
    let file = root.path().join("sdxl-like.safetensors");
    let t = Tensor::zeros((2, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
    let tensors = HashMap::from([
        (
            "conditioner.embedders.1.model.ln_final.weight".to_string(),
            t.clone(),
        ),
        (
            "model.diffusion_model.input_blocks.0.0.weight".to_string(),
            t,
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
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("SDXL single-file"), "{stderr}");
}
