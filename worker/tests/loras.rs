//! LoRA and embedding catalogs over HTTP: the real worker on the tiny model
//! with `--lora-dir` and `--embeddings-dir` folders of tiny files written
//! here in the layouts users have (kohya SD 1.x names for the tiny model's
//! layers, a kohya SDXL LoRA, embeddings with `emb_params` and with a
//! `clip_l`/`clip_g` pair), plus a pickle, a truncated file and a model.

mod common;

use common::Worker;
use safetensors::tensor::{Dtype, TensorView};
use sd_worker::pipeline::encode::read_png_parameters;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Writes a safetensors file of F32 tensors (values from `seed`) and metadata.
fn write(path: &Path, tensors: &[(&str, &[usize])], meta: &[(&str, &str)], seed: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .enumerate()
        .map(|(i, (name, shape))| {
            let n: usize = shape.iter().product();
            let bytes = (0..n)
                .flat_map(|j| {
                    (((seed + i as u32 * 31 + j as u32) % 17) as f32 * 0.01).to_le_bytes()
                })
                .collect();
            (name.to_string(), shape.to_vec(), bytes)
        })
        .collect();
    let views: Vec<(String, TensorView)> = data
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
            )
        })
        .collect();
    let meta: Option<HashMap<String, String>> = (!meta.is_empty()).then(|| {
        meta.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    });
    safetensors::serialize_to_file(views, meta, path).unwrap();
}

const UNET_K: &str = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k";
const TE_Q: &str = "lora_te_text_model_encoder_layers_0_self_attn_q_proj";

/// A kohya LoRA for the tiny SD 1.x model (32-wide layers, rank 4).
fn write_sd1_lora(path: &Path, seed: u32, meta: &[(&str, &str)]) {
    let (k_down, k_up, k_alpha) = (
        format!("{UNET_K}.lora_down.weight"),
        format!("{UNET_K}.lora_up.weight"),
        format!("{UNET_K}.alpha"),
    );
    let (q_down, q_up) = (
        format!("{TE_Q}.lora_down.weight"),
        format!("{TE_Q}.lora_up.weight"),
    );
    write(
        path,
        &[
            (&k_down, &[4, 32]),
            (&k_up, &[32, 4]),
            (&k_alpha, &[]),
            (&q_down, &[4, 32]),
            (&q_up, &[32, 4]),
        ],
        meta,
        seed,
    );
}

struct Dirs {
    loras: PathBuf,
    embeddings: PathBuf,
}

/// A fresh pair of folders per test (tests add files to them).
fn dirs(test: &str) -> Dirs {
    let root = std::env::temp_dir().join(format!("sd-worker-loras-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let loras = root.join("loras");
    let embeddings = root.join("embeddings");
    let freq = r#"{"10_zzchar":{"zzchar":12,"red hat":3,"smile":7}}"#;
    write_sd1_lora(
        &loras.join("style.safetensors"),
        1,
        &[
            ("ss_tag_frequency", freq),
            ("ss_output_name", "style-v1"),
            ("ss_resolution", "(64, 64)"),
        ],
    );
    write(
        &loras.join("sub/xl-thing.safetensors"),
        &[
            (
                "lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight",
                &[4, 32],
            ),
            (
                "lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight",
                &[32, 4],
            ),
            (
                "lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight",
                &[4, 48],
            ),
            (
                "lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight",
                &[48, 4],
            ),
        ],
        &[],
        2,
    );
    std::fs::write(loras.join("evil.pt"), b"\x80\x02}q\x00.").unwrap();
    write_sd1_lora(&loras.join("broken.safetensors"), 3, &[]);
    let bytes = std::fs::read(loras.join("broken.safetensors")).unwrap();
    std::fs::write(loras.join("broken.safetensors"), &bytes[..bytes.len() - 10]).unwrap();
    write(
        &loras.join("a-model.safetensors"),
        &[("model.diffusion_model.out.0.weight", &[4])],
        &[],
        4,
    );
    write(
        &embeddings.join("tinyemb.safetensors"),
        &[("emb_params", &[2, 32])],
        &[],
        5,
    );
    write(
        &embeddings.join("sd1emb.safetensors"),
        &[("emb_params", &[1, 768])],
        &[],
        6,
    );
    write(
        &embeddings.join("xlemb.safetensors"),
        &[("clip_l", &[2, 32]), ("clip_g", &[2, 48])],
        &[],
        7,
    );
    Dirs { loras, embeddings }
}

async fn worker(d: &Dirs) -> Worker {
    Worker::start(&[
        "--lora-dir",
        d.loras.to_str().unwrap(),
        "--embeddings-dir",
        d.embeddings.to_str().unwrap(),
    ])
    .await
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A1111's LoRA hash, computed here from its definition: SHA-256 of the file
/// after the 8-byte length and the header it gives, first 12 hex digits.
fn addnet_hash(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    hex(&Sha256::digest(&bytes[8 + n..]))[..12].to_string()
}

fn file_hash(path: &Path) -> String {
    hex(&Sha256::digest(std::fs::read(path).unwrap()))[..12].to_string()
}

fn by_name<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {list}"))
}

#[tokio::test]
async fn the_folders_are_listed_with_families_hashes_and_trigger_words_and_new_files_appear() {
    let d = dirs("list");
    let w = worker(&d).await;
    let (status, loras) = w.get_json("/v1/loras").await;
    assert_eq!(status, 200, "{loras}");
    let names: Vec<&str> = loras
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    // The pickle, the truncated file and the model are left out.
    assert_eq!(names, ["style", "xl-thing"]);
    let style = by_name(&loras, "style");
    assert_eq!(style["family"], "stable-diffusion-1");
    assert_eq!(style["format"], "kohya");
    assert_eq!(
        style["hash"],
        addnet_hash(&d.loras.join("style.safetensors"))
    );
    assert_ne!(style["hash"], file_hash(&d.loras.join("style.safetensors")));
    assert_eq!(
        style["size_bytes"],
        std::fs::metadata(d.loras.join("style.safetensors"))
            .unwrap()
            .len()
    );
    assert_eq!(
        style["trigger_words"],
        json!(["zzchar", "smile", "red hat"])
    );
    assert_eq!(style["metadata"]["title"], "style-v1");
    assert_eq!(style["metadata"]["resolution"], "(64, 64)");
    let xl = by_name(&loras, "xl-thing");
    assert_eq!(xl["family"], "stable-diffusion-xl");
    assert_eq!(
        xl["hash"],
        addnet_hash(&d.loras.join("sub/xl-thing.safetensors"))
    );

    // A new file, and a replaced one, without a restart.
    write_sd1_lora(&d.loras.join("new-one.safetensors"), 9, &[]);
    write_sd1_lora(&d.loras.join("style.safetensors"), 10, &[]);
    let (_, loras) = w.get_json("/v1/loras").await;
    let new_one = by_name(&loras, "new-one");
    assert_eq!(
        new_one["hash"],
        addnet_hash(&d.loras.join("new-one.safetensors"))
    );
    let style = by_name(&loras, "style");
    assert_eq!(
        style["hash"],
        addnet_hash(&d.loras.join("style.safetensors"))
    );
    assert_eq!(style["trigger_words"], json!([]));

    let (status, embs) = w.get_json("/v1/embeddings").await;
    assert_eq!(status, 200, "{embs}");
    assert_eq!(embs.as_array().unwrap().len(), 3, "{embs}");
    for (name, family, vectors) in [
        ("tinyemb", "unknown", 2),
        ("sd1emb", "stable-diffusion-1", 1),
        ("xlemb", "stable-diffusion-xl", 2),
    ] {
        let e = by_name(&embs, name);
        assert_eq!(e["family"], family, "{e}");
        assert_eq!(e["vectors"], vectors, "{e}");
        let path = d.embeddings.join(format!("{name}.safetensors"));
        assert_eq!(e["hash"], file_hash(&path), "{e}");
    }
}

fn job(extra: Value) -> Value {
    let mut body = json!({"operation": "image_generation", "prompt": "a cat", "steps": 1, "width": 64, "height": 64});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

/// Submits `body` and expects a 422 naming `field`, its message holding `says`.
async fn refused(w: &Worker, body: Value, field: &str, says: &[&str]) {
    let (status, _, err) = w.submit_raw(body.to_string()).await;
    assert_eq!(status, 422, "{body}: {err}");
    assert_eq!(err["error"]["field"], field, "{err}");
    let message = err["error"]["message"].as_str().unwrap();
    for s in says {
        assert!(message.contains(s), "`{s}` not in {message}");
    }
}

#[tokio::test]
async fn requests_choose_loras_by_list_and_tags_and_bad_choices_are_refused() {
    let d = dirs("jobs");
    let w = worker(&d).await;
    // Accepted: the list, tags in both prompts, the same choice twice with the same weights.
    for body in [
        job(json!({"loras": [{"name": "style", "weight": 0.5}]})),
        job(
            json!({"prompt": "a cat <lora:style:0.5>, sd1emb", "loras": [{"name": "style", "weight": 0.5}]}),
        ),
        job(
            json!({"prompt": "a cat <lora:style:te=1:unet=-1.5>", "negative_prompt": "<lora:new:1>"}),
        ),
        job(json!({"prompt": "<lora:style>"})),
    ] {
        let body = if body["negative_prompt"] == "<lora:new:1>" {
            write_sd1_lora(&d.loras.join("new.safetensors"), 11, &[]);
            body
        } else {
            body
        };
        let (status, _, answer) = w.submit_raw(body.to_string()).await;
        assert_eq!(status, 202, "{body}: {answer}");
    }
    // The PNG parameters keep the prompt as written, tags included.
    let (_, images) = w
        .run_job(job(json!({"prompt": "a cat <lora:style:0.5>"})))
        .await;
    let text = read_png_parameters(&images[0]).unwrap();
    assert!(text.starts_with("a cat <lora:style:0.5>\n"), "{text}");
    refused(
        &w,
        job(json!({"loras": [{"name": "nope"}]})),
        "loras[0].name",
        &["`nope`", "unknown", "style"],
    )
    .await;
    refused(
        &w,
        job(json!({"loras": [{"name": "style", "weight": 4.5}]})),
        "loras[0].weight",
        &["-4..=4"],
    )
    .await;
    refused(
        &w,
        job(json!({"loras": [{"name": "style", "unet_weight": -5}]})),
        "loras[0].unet_weight",
        &["-4..=4"],
    )
    .await;
    refused(
        &w,
        job(json!({"loras": [{"name": "style"}, {"name": "style", "weight": 0.2}]})),
        "loras[1].name",
        &["twice"],
    )
    .await;
    refused(
        &w,
        job(json!({"loras": [{"name": "xl-thing"}]})),
        "loras[0].name",
        &["stable-diffusion-xl", "stable-diffusion-1"],
    )
    .await;
    refused(
        &w,
        job(json!({"loras": [{"name": "broken"}]})),
        "loras[0].name",
        &["truncated"],
    )
    .await;
    refused(
        &w,
        job(json!({"loras": [{"name": "evil"}]})),
        "loras[0].name",
        &["pickle", "evil.pt"],
    )
    .await;
    refused(
        &w,
        job(json!({"loras": [{"name": "a-model"}]})),
        "loras[0].name",
        &["no LoRA tensors"],
    )
    .await;
    refused(
        &w,
        job(json!({"prompt": "a cat <lora:nope:1>"})),
        "prompt",
        &["<lora:nope:1>", "unknown"],
    )
    .await;
    refused(
        &w,
        job(json!({"negative_prompt": "<lora:nope>"})),
        "negative_prompt",
        &["<lora:nope>"],
    )
    .await;
    refused(
        &w,
        job(json!({"prompt": "a cat <lora:style:7>"})),
        "prompt",
        &["<lora:style:7>", "-4..=4"],
    )
    .await;
    refused(
        &w,
        job(json!({"prompt": "<lora:style:x>"})),
        "prompt",
        &["not a number"],
    )
    .await;
    refused(
        &w,
        job(json!({"prompt": "<hypernet:style:1>"})),
        "prompt",
        &["not supported"],
    )
    .await;
    refused(
        &w,
        job(json!({"prompt": "a cat <lora:style:0.3>", "loras": [{"name": "style"}]})),
        "prompt",
        &["other weights"],
    )
    .await;
    refused(
        &w,
        job(json!({"prompt": "a cat, xlemb"})),
        "prompt",
        &["xlemb", "stable-diffusion-xl"],
    )
    .await;
    // Nothing was queued by the refusals.
    let (_, ready) = w.get_json("/ready").await;
    assert!(ready["queue_length"].as_u64().unwrap() <= 4, "{ready}");
}

#[tokio::test]
async fn without_the_folders_lists_are_empty_and_loras_are_refused() {
    let w = Worker::start(&[]).await;
    for path in ["/v1/loras", "/v1/embeddings"] {
        let (status, list) = w.get_json(path).await;
        assert_eq!((status, list), (200, json!([])), "{path}");
    }
    refused(
        &w,
        job(json!({"loras": [{"name": "style"}]})),
        "loras[0].name",
        &["--lora-dir"],
    )
    .await;
    refused(
        &w,
        job(json!({"prompt": "<lora:style:1>"})),
        "prompt",
        &["--lora-dir"],
    )
    .await;
    // The contract in the OpenAPI document.
    let (_, spec) = w.get_json("/openapi.json").await;
    let schemas = &spec["components"]["schemas"];
    let weight = &schemas["LoraRef"]["properties"]["weight"];
    assert_eq!(
        (weight["minimum"].as_f64(), weight["maximum"].as_f64()),
        (Some(-4.0), Some(4.0))
    );
    assert_eq!(
        schemas["GenerationParams"]["properties"]["loras"]["maxItems"],
        16
    );
    for s in ["LoraInfo", "LoraMetadata", "EmbeddingInfo"] {
        assert!(schemas[s].is_object(), "{s}");
    }
    assert!(spec["paths"]["/v1/loras"]["get"].is_object());
    assert!(spec["paths"]["/v1/embeddings"]["get"].is_object());
}

#[test]
fn a_missing_folder_is_refused_at_start() {
    let model = common::tiny_model().to_str().unwrap().to_string();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sd-worker"))
        .args([
            "--port",
            "0",
            "--model-path",
            &model,
            "--lora-dir",
            "/no/such/loras",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("--lora-dir") && stderr.contains("not a folder"),
        "{stderr}"
    );
}
