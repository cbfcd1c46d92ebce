//! Unit tests of textual-inversion embeddings (the parity test against
//! diffusers is `embeddings_reference_tests.rs`).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use tempfile::TempDir;

use super::*;
use crate::model::generate::{write_model, WeightInit};
use crate::model::shapes::ModelShape;
use crate::model::test_util::max_diff;
use crate::model::tokenizer::write_tiny_vocab;
use crate::model::{LoadOptions, LoadedModel, ModelSpec};

/// The tiny model of `shape` (seed 7) in f32 on the CPU, with its folder.
fn tiny(shape: ModelShape) -> (TempDir, LoadedModel) {
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), &shape, WeightInit::Seeded(7)).unwrap();
    let model = LoadedModel::load(
        &ModelSpec::Local(dir.path().to_path_buf()),
        &Device::Cpu,
        LoadOptions {
            dtype: DType::F32,
            skip_t5: true,
            quant: Default::default(),
        },
    )
    .unwrap();
    (dir, model)
}

/// An embedding `name` written by the generator into `dir` and read back.
fn embedding(
    dir: &Path,
    name: &str,
    format: EmbeddingFormat,
    dims: &[usize],
    n: usize,
) -> TextualInversion {
    let path = dir.join(format!("{name}.safetensors"));
    write_embedding(&path, format, dims, n, 11).unwrap();
    TextualInversion::load(&path).unwrap()
}

fn set_of(items: Vec<TextualInversion>) -> TextualInversions {
    let mut set = TextualInversions::new();
    for ti in items {
        set.insert(ti);
    }
    set
}

fn encode(model: &LoadedModel, text: &str, set: &TextualInversions) -> (Tensor, Vec<String>) {
    let c = model.conditioner();
    let tokens = c.tokenize_with(text, "prompt", set).unwrap();
    let encoded = c.encode(&tokens, 1).unwrap();
    (encoded.context, tokens.embeddings)
}

#[test]
fn a_prompt_without_the_name_is_unchanged_bit_for_bit() {
    let files = tempfile::tempdir().unwrap();
    let (_d, sd) = tiny(ModelShape::tiny());
    let set = set_of(vec![embedding(
        files.path(),
        "tistyle",
        EmbeddingFormat::A1111,
        &[32],
        3,
    )]);
    let text = "a red circle on a blue background";
    let (with, used) = encode(&sd, text, &set);
    let (without, _) = encode(&sd, text, &TextualInversions::new());
    assert!(used.is_empty());
    assert_eq!(max_diff(&with, &without), 0.0);

    let (_d, xl) = tiny(ModelShape::tiny_sdxl());
    let set = set_of(vec![embedding(
        files.path(),
        "tixl",
        EmbeddingFormat::Sdxl,
        &[32, 48],
        2,
    )]);
    let (with, used) = encode(&xl, text, &set);
    let (without, _) = encode(&xl, text, &TextualInversions::new());
    assert!(used.is_empty());
    assert_eq!(max_diff(&with, &without), 0.0);
    // And used, it changes the output.
    let (used_out, used) = encode(&xl, "tixl, a red circle", &set);
    let (plain, _) = encode(&xl, "tixl, a red circle", &TextualInversions::new());
    assert_eq!(used, ["tixl"]);
    assert!(max_diff(&used_out, &plain) > 0.1);
}

#[test]
fn a_name_inside_another_word_is_not_replaced() {
    let files = tempfile::tempdir().unwrap();
    let (_d, sd) = tiny(ModelShape::tiny());
    let set = set_of(vec![embedding(
        files.path(),
        "tistyle",
        EmbeddingFormat::A1111,
        &[32],
        3,
    )]);
    // "bobtistyle" tokenizes as bo b t i style</w>: the name's tokens, not at
    // a word start.
    for text in ["a bobtistyle circle", "tistyles"] {
        let (with, used) = encode(&sd, text, &set);
        let (without, _) = encode(&sd, text, &TextualInversions::new());
        assert!(used.is_empty(), "{text}");
        assert_eq!(max_diff(&with, &without), 0.0, "{text}");
    }
    // Case, punctuation and attention brackets around it do not matter.
    for text in [
        "a TiStyle circle",
        "(tistyle:1.2), circle",
        "circle,tistyle",
    ] {
        let (_, used) = encode(&sd, text, &set);
        assert_eq!(used, ["tistyle"], "{text}");
    }
}

#[test]
fn embeddings_of_another_width_or_family_are_refused() {
    let files = tempfile::tempdir().unwrap();
    let (_d, sd) = tiny(ModelShape::tiny());
    let (_d2, xl) = tiny(ModelShape::tiny_sdxl());
    let err = |model: &LoadedModel, ti: TextualInversion, text: &str| {
        let set = set_of(vec![ti]);
        match model.conditioner().tokenize_with(text, "prompt", &set) {
            Ok(_) => panic!("`{text}` was accepted"),
            Err(e) => format!("{e:#}"),
        }
    };
    let narrow = embedding(files.path(), "narrow", EmbeddingFormat::A1111, &[16], 2);
    let e = err(&sd, narrow, "a narrow circle");
    assert!(
        e.contains("`narrow` has 16-wide vectors") && e.contains("SD 1.x (32-wide CLIP-L)"),
        "{e}"
    );
    let wide = embedding(files.path(), "wide", EmbeddingFormat::A1111, &[768], 1);
    let e = err(&sd, wide, "wide");
    assert!(e.contains("768-wide vectors: SD 1.x"), "{e}");
    let pair = embedding(files.path(), "pair", EmbeddingFormat::Sdxl, &[32, 48], 2);
    let e = err(&sd, pair, "pair");
    assert!(
        e.contains("is an SDXL embedding") && e.contains("SD 1.x"),
        "{e}"
    );
    let single = embedding(files.path(), "single", EmbeddingFormat::A1111, &[32], 2);
    let e = err(&xl, single, "single");
    assert!(e.contains("this model is SDXL"), "{e}");
    let swapped = embedding(files.path(), "swapped", EmbeddingFormat::Sdxl, &[48, 32], 2);
    let e = err(&xl, swapped, "swapped");
    assert!(
        e.contains("48-wide vectors") && e.contains("CLIP-L is 32-wide"),
        "{e}"
    );
}

#[test]
fn pickles_and_odd_files_are_refused_with_the_reason() {
    let files = tempfile::tempdir().unwrap();
    for ext in ["pt", "bin"] {
        let path = files.path().join(format!("bad.{ext}"));
        std::fs::write(&path, b"\x80\x02}q\x00.").unwrap();
        let e = format!("{:#}", TextualInversion::load(&path).unwrap_err());
        assert!(
            e.contains("pickle") && e.contains("run arbitrary code"),
            "{e}"
        );
    }
    let corrupt = files.path().join("corrupt.safetensors");
    std::fs::write(&corrupt, b"not a safetensors file").unwrap();
    let e = format!("{:#}", TextualInversion::load(&corrupt).unwrap_err());
    assert!(e.contains("corrupt.safetensors"), "{e}");

    let t = |dims: &[usize]| Tensor::zeros(dims, DType::F32, &Device::Cpu).unwrap();
    let several: HashMap<String, Tensor> =
        [("a".to_string(), t(&[1, 4])), ("b".into(), t(&[1, 4]))]
            .into_iter()
            .collect();
    let e = format!(
        "{:#}",
        TextualInversion::from_tensors("x", several).unwrap_err()
    );
    assert!(e.contains("several tensors (a, b)"), "{e}");
    let uneven: HashMap<String, Tensor> = [
        ("clip_l".to_string(), t(&[2, 4])),
        ("clip_g".into(), t(&[3, 8])),
    ]
    .into_iter()
    .collect();
    let e = format!(
        "{:#}",
        TextualInversion::from_tensors("x", uneven).unwrap_err()
    );
    assert!(e.contains("clip_l has 2 vectors and clip_g 3"), "{e}");
}

#[test]
fn reads_every_layout() {
    let t = |dims: &[usize]| Tensor::ones(dims, DType::F16, &Device::Cpu).unwrap();
    let one = |key: &str, dims: &[usize]| -> HashMap<String, Tensor> {
        [(key.to_string(), t(dims))].into_iter().collect()
    };
    for (key, dims, n) in [
        ("emb_params", &[3usize, 8][..], 3),
        ("string_to_param.*", &[2, 8], 2),
        ("<my-token>", &[8], 1),
    ] {
        let ti = TextualInversion::from_tensors("x", one(key, dims)).unwrap();
        assert_eq!((ti.vector_count(), ti.widths()), (n, vec![8]), "{key}");
    }
    // A1111's key wins over stray tensors.
    let mut mixed = one("string_to_param.*", &[2, 8]);
    mixed.insert("step".into(), t(&[1]));
    assert_eq!(
        TextualInversion::from_tensors("x", mixed)
            .unwrap()
            .vector_count(),
        2
    );

    let files = tempfile::tempdir().unwrap();
    let d = embedding(files.path(), "dif", EmbeddingFormat::Diffusers, &[8], 2);
    assert_eq!((d.name(), d.vector_count()), ("dif", 2));
    let x = embedding(files.path(), "xl", EmbeddingFormat::Sdxl, &[8, 12], 4);
    assert_eq!((x.vector_count(), x.widths()), (4, vec![8, 12]));
}

#[test]
fn the_generator_is_deterministic() {
    let files = tempfile::tempdir().unwrap();
    let write = |name: &str, seed| {
        let p = files.path().join(name);
        write_embedding(&p, EmbeddingFormat::Sdxl, &[32, 48], 2, seed).unwrap();
        std::fs::read(p).unwrap()
    };
    assert_eq!(write("a.safetensors", 3), write("b.safetensors", 3));
    assert_ne!(write("c.safetensors", 3), write("d.safetensors", 4));
    assert!(write_embedding(&files.path().join("e"), EmbeddingFormat::Sdxl, &[32], 2, 0).is_err());
}

#[test]
fn an_embedding_counts_its_vectors_and_stays_in_one_window() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_vocab(dir.path(), "<|endoftext|>").unwrap();
    let tok = ClipTokenizer::from_dir(dir.path()).unwrap();
    let ti = |n| {
        let v = Tensor::ones((n, 4), DType::F32, &Device::Cpu).unwrap();
        TextualInversion::from_tensors("tistyle", [("emb_params".to_string(), v)].into()).unwrap()
    };
    let slot = EncoderSlot {
        role: EncoderRole::ClipL,
        hidden: 4,
        paired: false,
    };
    let base = 5000;
    // 74 single-token words, then the name with 3 vectors: it does not fit
    // the first window's last slot, so it opens the second one whole.
    let text = format!("{} tistyle a", ["a"; 74].join(" "));
    let w = tokenize(&tok, &text, 8, &set_of(vec![ti(3)]), slot, base).unwrap();
    assert_eq!(w.token_count, 74 + 3 + 1);
    assert_eq!(w.windows.len(), 2);
    assert_eq!(
        &w.windows[1][1..5],
        &[base, base + 1, base + 2, w.windows[0][1]]
    );
    assert_eq!(w.windows[0][75], tok.eos_id());
    assert_eq!(w.extra.unwrap().dims(), &[3, 4]);
    // Used twice: one set of rows.
    let w = tokenize(&tok, "tistyle tistyle", 8, &set_of(vec![ti(2)]), slot, base).unwrap();
    assert_eq!(&w.windows[0][1..5], &[base, base + 1, base, base + 1]);
    assert_eq!((w.extra.unwrap().dims()[0], w.used.len()), (2, 1));
    // More vectors than a window holds.
    let e = tokenize(&tok, "tistyle", 8, &set_of(vec![ti(76)]), slot, base).unwrap_err();
    assert!(e.to_string().contains("76 vectors"), "{e}");
}

#[test]
fn names_in_finds_whole_words_ignoring_case() {
    let names = ["EasyNegative", "tistyle", "bad-hands-5", "cat"];
    let found = names_in(
        names,
        &["(easynegative:1.1), a bobcat", "bad-hands-5, TISTYLE"],
    );
    assert_eq!(found, ["EasyNegative", "tistyle", "bad-hands-5"]);
    assert!(names_in(names, &["tistyles of bobcats"]).is_empty());
}

#[test]
fn sd3_says_embeddings_are_not_applied() {
    let files = tempfile::tempdir().unwrap();
    let (_d, sd3) = tiny(ModelShape::tiny_sd3());
    let set = set_of(vec![embedding(
        files.path(),
        "tixl",
        EmbeddingFormat::Sdxl,
        &[32, 48],
        2,
    )]);
    let tokens = sd3
        .conditioner()
        .tokenize_with("a tixl circle", "prompt", &set)
        .unwrap();
    assert!(tokens.embeddings.is_empty());
    let warning = tokens.warning.unwrap();
    assert!(
        warning.contains("not applied on SD 3") && warning.contains("tixl"),
        "{warning}"
    );
}
