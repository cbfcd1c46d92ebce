//! The LoRAs and embeddings of a request: the `loras` list and the
//! `<lora:name:weight>` tags of `prompt` and `negative_prompt` (removed from
//! the text), each naming a usable LoRA of `--lora-dir` for the loaded
//! model's family with weights in -4..=4; and the embeddings of
//! `--embeddings-dir` whose names the texts hold.
//!
//! A name given twice: twice in `loras` is refused; a tag naming a LoRA
//! already chosen (by `loras` or an earlier tag) with the same weights is
//! the same choice (a pasted A1111 prompt next to its restored list), with
//! other weights it is refused. A tag in the negative prompt applies to the
//! whole job like one in the prompt (the weights are merged into the model,
//! which encodes both texts); A1111 leaves such tags in the negative text.

use sd_worker_sdk::lora::{MAX_LORAS, MAX_LORA_WEIGHT};
use sd_worker_sdk::{ApiError, LoraRef};

use super::invalid;
use crate::catalog::tags::{embeddings_in, extract_lora_tags};
use crate::catalog::{Catalogs, Found, Lookup, LoraFile};
use crate::lora::keys::Targets;
use crate::pipeline::{EmbeddingChoice, LoraChoice};

/// What [`resolve`] makes of a request's texts and `loras`.
#[derive(Debug)]
pub struct Resolved {
    /// `prompt` without its tags.
    pub prompt: String,
    /// `negative_prompt` without its tags.
    pub negative_prompt: Option<String>,
    pub loras: Vec<LoraChoice>,
    pub embeddings: Vec<EmbeddingChoice>,
}

/// Resolves the LoRAs and embeddings of a request for a model of `family`
/// (`stable-diffusion-1`, ...). Every refusal names its field: `loras[2].name`,
/// `loras[0].weight`, or `prompt` / `negative_prompt` for a tag.
pub fn resolve(
    loras: Option<&[LoraRef]>,
    prompt: &str,
    negative_prompt: Option<&str>,
    family: &str,
    catalogs: &Catalogs,
    targets: &Targets,
) -> Result<Resolved, ApiError> {
    let mut chosen: Vec<LoraChoice> = Vec::new();
    for (i, r) in loras.unwrap_or_default().iter().enumerate() {
        let field = |f: &str| format!("loras[{i}].{f}");
        for (f, w) in [
            ("weight", r.weight),
            ("unet_weight", r.unet_weight),
            ("text_encoder_weight", r.text_encoder_weight),
        ] {
            if let Some(w) = w {
                check_weight(&field(f), &format!("`{f}`"), w)?;
            }
        }
        if let Some(j) = chosen.iter().position(|c| c.name == r.name) {
            return Err(invalid(
                &field("name"),
                format!("LoRA `{}` is given twice (also loras[{j}])", r.name),
            ));
        }
        let c = choose(
            &field("name"),
            &format!("LoRA `{}`", r.name),
            &r.name,
            (r.unet_scale(), r.text_encoder_scale()),
            family,
            catalogs,
            targets,
        )?;
        // A second name for a file already chosen (its name and its path).
        if chosen.iter().any(|o| o.path == c.path) {
            return Err(invalid(
                &field("name"),
                format!("LoRA `{}` is given twice", r.name),
            ));
        }
        chosen.push(c);
    }
    let mut texts = Vec::new();
    for (field, text) in [
        ("prompt", Some(prompt)),
        ("negative_prompt", negative_prompt),
    ] {
        let Some(text) = text else {
            texts.push(None);
            continue;
        };
        let (clean, tags) = extract_lora_tags(text);
        for tag in tags {
            let tag = tag.map_err(|(tag, why)| invalid(field, format!("`{tag}`: {why}")))?;
            let what = format!("`{}`", tag.text);
            check_weight(field, &what, tag.text_encoder_weight)?;
            check_weight(field, &what, tag.unet_weight)?;
            let weights = (tag.unet_weight, tag.text_encoder_weight);
            let c = choose(
                field,
                &format!("{what}: LoRA `{}`", tag.name),
                &tag.name,
                weights,
                family,
                catalogs,
                targets,
            )?;
            match chosen.iter().find(|o| o.path == c.path) {
                Some(o) if (o.unet_weight, o.text_encoder_weight) == weights => {}
                Some(o) => {
                    return Err(invalid(
                        field,
                        format!(
                            "{what} names LoRA `{}` again with other weights (UNet {}, text encoder {} before)",
                            tag.name, o.unet_weight, o.text_encoder_weight
                        ),
                    ))
                }
                None => chosen.push(c),
            }
        }
        texts.push(Some(clean));
    }
    if chosen.len() > MAX_LORAS {
        return Err(invalid(
            "loras",
            format!(
                "at most {MAX_LORAS} LoRAs per job ({} given with the tags)",
                chosen.len()
            ),
        ));
    }
    let negative = texts.pop().flatten();
    let prompt = texts.pop().flatten().unwrap_or_default();
    let embeddings = embeddings(&prompt, negative.as_deref(), family, catalogs)?;
    Ok(Resolved {
        prompt,
        negative_prompt: negative,
        loras: chosen,
        embeddings,
    })
}

fn check_weight(field: &str, what: &str, w: f64) -> Result<(), ApiError> {
    if !w.is_finite() || w.abs() > MAX_LORA_WEIGHT {
        return Err(invalid(
            field,
            format!("{what}: the weight {w} is outside -{MAX_LORA_WEIGHT}..={MAX_LORA_WEIGHT}"),
        ));
    }
    Ok(())
}

/// The LoRA named `name`, checked against the model's family.
fn choose(
    field: &str,
    what: &str,
    name: &str,
    (unet_weight, text_encoder_weight): (f64, f64),
    family: &str,
    catalogs: &Catalogs,
    targets: &Targets,
) -> Result<LoraChoice, ApiError> {
    let Some(catalog) = &catalogs.loras else {
        return Err(invalid(
            field,
            format!("{what}: this worker has no LoRAs (start it with --lora-dir)"),
        ));
    };
    let found: Found<LoraFile> = match catalog.lookup(name) {
        Lookup::Found(f) => f,
        Lookup::Unknown { available } => {
            let list = if available.is_empty() {
                "the LoRA folder is empty".to_string()
            } else {
                let shown: Vec<&str> = available.iter().take(10).map(String::as_str).collect();
                let more = available.len().saturating_sub(shown.len());
                let more = if more > 0 { format!(" and {more} more") } else { String::new() };
                format!("one of: {}{more}", shown.join(", "))
            };
            return Err(invalid(
                field,
                format!("{what} is unknown; {list} (GET /v1/loras)"),
            ));
        }
        Lookup::Pickle(path) => {
            return Err(invalid(field, format!("{what}: {} is a pickle, which can run code when loaded; only .safetensors LoRAs are accepted (convert it)", file_name(&path))))
        }
        Lookup::Broken { path, reason } => {
            return Err(invalid(
                field,
                format!("{what}: {} cannot be used: {reason}", file_name(&path)),
            ))
        }
    };
    let Ok(file) = &found.read else {
        return Err(invalid(field, format!("{what}: unreadable")));
    };
    if let Some(f) = file.family {
        if f.name() != family {
            return Err(invalid(
                field,
                format!(
                    "{what} is a LoRA for {}, and this worker serves a {family} model",
                    f.name()
                ),
            ));
        }
    }
    adapts_a_layer(field, what, &found.path, targets)?;
    Ok(LoraChoice {
        name: found.name.clone(),
        hash: found.hash.clone().unwrap_or_default(),
        format: file.format,
        path: found.path,
        stamp: found.stamp,
        unet_weight,
        text_encoder_weight,
    })
}

/// Refuses a LoRA none of whose modules names a weight of the model (a LoRA
/// for another model, or a format whose keys are not understood), reading
/// only the file's header. An empty `targets` (no model facts) checks nothing.
fn adapts_a_layer(
    field: &str,
    what: &str,
    path: &std::path::Path,
    targets: &Targets,
) -> Result<(), ApiError> {
    if targets.is_empty() {
        return Ok(());
    }
    let header = crate::catalog::header::read_header(path)
        .map_err(|e| invalid(field, format!("{what}: {e:#}")))?;
    let modules: std::collections::BTreeSet<String> = header
        .tensors
        .keys()
        .map(|k| crate::lora::format::split_key(k).0)
        .collect();
    if modules.iter().any(|m| targets.resolve(m).is_some()) {
        return Ok(());
    }
    Err(invalid(
        field,
        format!(
            "{what} adapts no layer of this model: none of its {} modules names one (e.g. `{}`); it is a LoRA for another model",
            modules.len(),
            modules.iter().next().map(String::as_str).unwrap_or_default()
        ),
    ))
}

/// The embeddings the texts name. One of another family (known from its
/// width) is refused, naming the text that holds it.
fn embeddings(
    prompt: &str,
    negative: Option<&str>,
    family: &str,
    catalogs: &Catalogs,
) -> Result<Vec<EmbeddingChoice>, ApiError> {
    let Some(catalog) = &catalogs.embeddings else {
        return Ok(Vec::new());
    };
    let (files, _) = catalog.scan();
    let usable: Vec<&str> = files
        .iter()
        .filter(|f| f.read.is_ok())
        .map(|f| f.name.as_str())
        .collect();
    if usable.is_empty() {
        return Ok(Vec::new());
    }
    let mut out: Vec<EmbeddingChoice> = Vec::new();
    for (field, text) in [("prompt", Some(prompt)), ("negative_prompt", negative)] {
        for name in embeddings_in(text.unwrap_or_default(), usable.iter().copied()) {
            if out.iter().any(|e| e.name == name) {
                continue;
            }
            let found = match catalog.lookup(&name) {
                Lookup::Found(f) => f,
                Lookup::Broken { path, reason } => {
                    return Err(invalid(
                        field,
                        format!(
                            "embedding `{name}`: {} cannot be used: {reason}",
                            file_name(&path)
                        ),
                    ))
                }
                // Removed since the scan: the word is only a word.
                Lookup::Unknown { .. } | Lookup::Pickle(_) => continue,
            };
            let Ok(file) = &found.read else { continue };
            if let Some(f) = file.family.filter(|f| f.name() != family) {
                return Err(invalid(
                    field,
                    format!(
                        "embedding `{name}` is for {}, and this worker serves a {family} model",
                        f.name()
                    ),
                ));
            }
            out.push(EmbeddingChoice {
                name: found.name.clone(),
                hash: found.hash.clone().unwrap_or_default(),
                vectors: file.vectors,
                path: found.path,
                stamp: found.stamp,
            });
        }
    }
    Ok(out)
}

fn file_name(path: &std::path::Path) -> String {
    path.file_name()
        .map(|n| format!("`{}`", n.to_string_lossy()))
        .unwrap_or_default()
}
