//! LoRAs and embeddings applied by the real worker: files written by the
//! project's generators for the tiny model (a kohya LoRA, a PEFT one, a
//! textual-inversion embedding), served with `--lora-dir` and
//! `--embeddings-dir`, chosen by request and by A1111 prompt tags.

mod common;

use common::Worker;
use image::RgbImage;
use sd_worker::lora::generate::{write_lora, LoraGenOptions};
use sd_worker::lora::LoraFormat;
use sd_worker::model::embeddings::{write_embedding, EmbeddingFormat};
use sd_worker::model::{LoadOptions, LoadedModel, ModelSpec};
use sd_worker::pipeline::encode::read_png_parameters;
use serde_json::{json, Value};
use std::path::PathBuf;

/// `loras/` (`style`: kohya, UNet and text encoder; `peft-style`: PEFT) and
/// `embeddings/` (`shapey`: 2 vectors, A1111 format), for the tiny model.
fn files() -> &'static PathBuf {
    static ROOT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ROOT.get_or_init(|| {
        let root =
            std::env::temp_dir().join(format!("sd-worker-lora-apply-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let model = LoadedModel::load(
            &ModelSpec::Local(common::tiny_model().to_path_buf()),
            &candle_core::Device::Cpu,
            LoadOptions {
                dtype: candle_core::DType::F32,
                skip_t5: false,
                quant: Default::default(),
            },
        )
        .unwrap();
        let layers = model.unet_config().map(|c| c.layers_per_block);
        let loras = root.join("loras");
        std::fs::create_dir_all(&loras).unwrap();
        let options = LoraGenOptions {
            text_encoders: true,
            ..LoraGenOptions::default()
        };
        let tables = model.weight_tables();
        write_lora(
            &loras.join("style.safetensors"),
            LoraFormat::Kohya,
            tables,
            layers,
            4,
            1,
            &options,
        )
        .unwrap();
        write_lora(
            &loras.join("peft-style.safetensors"),
            LoraFormat::Peft,
            tables,
            layers,
            4,
            2,
            &options,
        )
        .unwrap();
        // Well-formed, but for no layer of this model.
        let t = |shape: (usize, usize)| {
            candle_core::Tensor::ones(shape, candle_core::DType::F32, &candle_core::Device::Cpu)
                .unwrap()
        };
        let alien = std::collections::HashMap::from([
            (
                "lora_unet_other_model_block_proj.lora_down.weight".to_string(),
                t((4, 8)),
            ),
            (
                "lora_unet_other_model_block_proj.lora_up.weight".to_string(),
                t((8, 4)),
            ),
        ]);
        candle_core::safetensors::save(&alien, loras.join("alien.safetensors")).unwrap();
        let embeddings = root.join("embeddings");
        std::fs::create_dir_all(&embeddings).unwrap();
        let width = sd_worker::model::shapes::ModelShape::tiny()
            .text_encoder
            .hidden_size;
        write_embedding(
            &embeddings.join("shapey.safetensors"),
            EmbeddingFormat::A1111,
            &[width],
            2,
            3,
        )
        .unwrap();
        root
    })
}

async fn worker() -> Worker {
    let root = files();
    Worker::start(&[
        "--lora-dir",
        root.join("loras").to_str().unwrap(),
        "--embeddings-dir",
        root.join("embeddings").to_str().unwrap(),
    ])
    .await
}

fn job(prompt: &str, loras: Value) -> Value {
    let mut body = json!({
        "operation": "image_generation", "prompt": prompt, "steps": 3,
        "width": 64, "height": 64, "seed": 21,
    });
    if !loras.is_null() {
        body["loras"] = loras;
    }
    body
}

/// The image's pixels, the `complete` event and the warnings.
async fn run(w: &Worker, body: Value) -> (RgbImage, Vec<u8>, Value, Vec<Value>) {
    let (msgs, images) = w.run_job(body).await;
    let complete = msgs
        .iter()
        .find(|m| m.kind() == "complete")
        .unwrap()
        .json()
        .clone();
    let warnings = msgs
        .iter()
        .filter(|m| m.kind() == "warning")
        .map(|m| m.json().clone())
        .collect();
    let pixels = image::load_from_memory(&images[0]).unwrap().to_rgb8();
    (pixels, images[0].clone(), complete, warnings)
}

fn max_diff(a: &RgbImage, b: &RgbImage) -> u8 {
    a.as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap()
}

/// A LoRA changes the picture; weight 0 and a job without it afterwards give
/// the base model's very pixels (the merge is undone exactly); a prompt tag
/// is the structured choice; the `complete` event and the PNG say what was
/// applied.
#[tokio::test]
async fn a_lora_steers_the_picture_and_comes_off_exactly() {
    let w = worker().await;
    let prompt = "a red circle";
    let (base, _, complete, _) = run(&w, job(prompt, Value::Null)).await;
    assert!(complete.get("loras").is_none(), "{complete}");

    let (styled, png, complete, warnings) =
        run(&w, job(prompt, json!([{"name": "style", "weight": 1.0}]))).await;
    assert!(max_diff(&base, &styled) > 4, "the LoRA changed nothing");
    assert!(warnings.is_empty(), "{warnings:?}");
    let applied = &complete["loras"][0];
    assert_eq!(applied["name"], "style");
    let tensors = applied["tensors"].as_u64().unwrap();
    assert!(tensors > 0);
    assert_eq!(
        applied["matched_tensors"].as_u64(),
        Some(tensors),
        "{applied}"
    );
    let hash = applied["hash"].as_str().unwrap();
    let params = read_png_parameters(&png).unwrap();
    assert!(
        params.contains(&format!("Lora hashes: \"style: {hash}\"")),
        "{params}"
    );
    // The choice made by the list is a tag in the PNG's prompt, with its weight.
    assert!(
        params.starts_with("a red circle <lora:style:1>\n"),
        "{params}"
    );

    let (tagged, _, _, _) = run(&w, job(&format!("{prompt} <lora:style:1>"), Value::Null)).await;
    assert_eq!(
        max_diff(&styled, &tagged),
        0,
        "the tag is the structured choice"
    );

    let (zero, _, _, _) = run(&w, job(prompt, json!([{"name": "style", "weight": 0.0}]))).await;
    assert_eq!(max_diff(&base, &zero), 0, "weight 0 must be no LoRA");
    let (after, _, _, _) = run(&w, job(prompt, Value::Null)).await;
    assert_eq!(
        max_diff(&base, &after),
        0,
        "the base weights must come back exactly"
    );

    // Two LoRAs at once, one of them PEFT's format; the text encoder only.
    let (both, _, complete, _) = run(
        &w,
        job(
            prompt,
            json!([{"name": "style", "weight": 0.5}, {"name": "peft-style", "unet_weight": 0.0, "text_encoder_weight": 1.0}]),
        ),
    )
    .await;
    assert_eq!(complete["loras"].as_array().unwrap().len(), 2);
    assert!(max_diff(&both, &styled) > 0 && max_diff(&both, &base) > 0);
}

/// An embedding's name in the prompt stands for its vectors; the PNG names
/// its hash.
#[tokio::test]
async fn an_embedding_named_in_the_prompt_changes_the_conditioning() {
    let w = worker().await;
    let (plain, _, _, _) = run(&w, job("a red circle", Value::Null)).await;
    let (with, png, _, _) = run(&w, job("a red circle shapey", Value::Null)).await;
    let (other_word, _, _, _) = run(&w, job("a red circle square", Value::Null)).await;
    assert!(max_diff(&plain, &with) > 0);
    assert!(
        max_diff(&with, &other_word) > 0,
        "the embedding acts as itself, not as any word"
    );
    let params = read_png_parameters(&png).unwrap();
    assert!(params.contains("TI hashes: \"shapey: "), "{params}");
}

/// A1111 clients list the LoRAs and embeddings with A1111's routes, and a
/// `<lora:...>` tag in an A1111 prompt is applied (its hash in the infotext).
#[tokio::test]
async fn a1111_lists_them_and_applies_prompt_tags() {
    let w = worker().await;
    let (status, loras) = w.get_json("/sdapi/v1/loras").await;
    assert_eq!(status, 200);
    let names: Vec<&str> = loras
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alien", "peft-style", "style"]);
    let style = &loras[2];
    assert_eq!(style["path"], "style.safetensors");
    assert!(style["metadata"]["sshs_model_hash"].is_string(), "{loras}");
    let (_, emb) = w.get_json("/sdapi/v1/embeddings").await;
    assert_eq!(emb["loaded"]["shapey"]["vectors"], 2, "{emb}");

    let body = json!({"prompt": "a red circle <lora:style:0.7>", "steps": 3, "width": 64, "height": 64, "seed": 5});
    let r = w
        .client
        .post(w.url("/sdapi/v1/txt2img"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let out: Value = r.json().await.unwrap();
    let info: Value = serde_json::from_str(out["info"].as_str().unwrap()).unwrap();
    let text = info["infotexts"][0].as_str().unwrap();
    assert!(
        text.contains("<lora:style:0.7>") && text.contains("Lora hashes: \"style: "),
        "{text}"
    );
}

/// A LoRA none of whose keys names a layer of the model is refused before
/// anything is queued, by list and by tag.
#[tokio::test]
async fn a_lora_for_another_model_is_refused_naming_it() {
    let w = worker().await;
    for (body, field) in [
        (
            job("a red circle", json!([{"name": "alien"}])),
            "loras[0].name",
        ),
        (job("a red circle <lora:alien:1>", Value::Null), "prompt"),
    ] {
        let (status, _, e) = w.submit_raw(body.to_string()).await;
        assert_eq!(status, 422, "{e}");
        assert_eq!(e["error"]["field"], field, "{e}");
        assert!(
            e["error"]["message"]
                .as_str()
                .unwrap()
                .contains("adapts no layer"),
            "{e}"
        );
    }
}
