//! Property tests of request validation and input-image decoding: whatever
//! bytes, JSON shapes or images a client sends, `validate_body` and
//! `images::decode` never panic, every error carries a documented code, a
//! message and (except `invalid_json`) the field at fault, and every accepted
//! request stays inside the published limits.
//!
//! The profile is built by hand for a 64x64 model with a VAE factor of 4 (the
//! tiny test model's shape), so these tests need no model and no server.
//! Case counts are bounded so the file stays fast in the dev profile.

use base64::Engine as _;
use image::{DynamicImage, GrayImage, ImageFormat, Luma, Rgb, RgbImage, Rgba, RgbaImage};
use proptest::prelude::*;
use proptest::sample::{select, Index};
use proptest::test_runner::{
    Config as ProptestConfig, FileFailurePersistence, TestCaseError, TestRunner,
};
use sd_worker::images;
use sd_worker::model::{Family, ModelMeta};
use sd_worker::pipeline::Work;
use sd_worker::profile::{Profile, Runtime};
use sd_worker::scheduler::SchedulerKind;
use sd_worker::validation::{validate_body, Validated};
use sd_worker_sdk::{ApiError, ErrorCode, ImageFormat as WireFormat, Operation, MAX_SEED};
use serde_json::Value;
use std::io::Cursor;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

// ---------------------------------------------------------------------------
// The profile under test
// ---------------------------------------------------------------------------

const MODEL_ID: &str = "tiny-sd";
const MODEL_SOURCE: &str = "/models/tiny-sd";
const MAX_INPUT_PIXELS: u64 = 4096 * 4096;

fn profile() -> &'static Profile {
    static PROFILE: OnceLock<Profile> = OnceLock::new();
    PROFILE.get_or_init(|| {
        let meta = ModelMeta {
            id: MODEL_ID.into(),
            source: MODEL_SOURCE.into(),
            family: Family::StableDiffusion1,
            native_width: 64,
            native_height: 64,
            size_multiple: 4,
            max_side: 128,
            vae_scale_factor: 4,
            latent_channels: 4,
            vae_scaling_factor: 0.18215,
            vae_shift_factor: None,
            prediction_type: "epsilon".into(),
            inpainting: false,
            default_scheduler: SchedulerKind::Euler,
            flow_matching: false,
            max_prompt_tokens: 77,
            lcm_max_steps: 50,
            zeros_for_empty_negative: false,
            memory: sd_worker_sdk::MemoryEstimate {
                weights_bytes: 2_000_000,
                activations_bytes: 100_000,
                total_bytes: 2_100_000,
            },
            load_ms: 0,
            example_prompts: Vec::new(),
        };
        let rt = Runtime {
            worker_id: "fuzz",
            device: "cpu",
            dtype: "f32",
            queue_capacity: 16,
            max_input_pixels: MAX_INPUT_PIXELS,
            max_pixels: None,
            max_images: None,
        };
        Profile::new(&meta, &rt)
    })
}

/// Every field name the contract knows, aliases included.
const KNOWN_FIELDS: &[&str] = &[
    "operation",
    "prompt",
    "negative_prompt",
    "steps",
    "guidance_scale",
    "seed",
    "width",
    "height",
    "scheduler",
    "num_images",
    "preview_every",
    "output_format",
    "model",
    "hive_id",
    "worker_id",
    "image",
    "input_image",
    "init_image",
    "mask",
    "mask_image",
    "strength",
    "mask_blur",
    "resize_mode",
    "hires",
    "preview_method",
    "vae",
    "vae_tiling",
    // image_upscale's.
    "upscaler",
    "scale",
    "tile_size",
    "tile_overlap",
];

/// The image fields, refused on `image_generation`.
const IMAGE_FIELDS: &[&str] = &[
    "image",
    "input_image",
    "init_image",
    "mask",
    "mask_image",
    "strength",
    "mask_blur",
    "resize_mode",
];

/// The codes `POST /v1/jobs` validation may answer (docs/API.md, Errors).
const VALIDATION_CODES: &[ErrorCode] = &[
    ErrorCode::InvalidJson,
    ErrorCode::InvalidRequest,
    ErrorCode::MissingField,
    ErrorCode::InvalidValue,
    ErrorCode::InvalidImage,
    ErrorCode::ModelMismatch,
    ErrorCode::PayloadTooLarge,
];

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        source_file: Some(file!()),
        ..ProptestConfig::default()
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

// ---------------------------------------------------------------------------
// Images
// ---------------------------------------------------------------------------

fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let img = match format {
        // The JPEG encoder takes no alpha; the WebP encoder only 8-bit RGB(A).
        ImageFormat::Jpeg => DynamicImage::ImageRgb8(img.to_rgb8()),
        ImageFormat::WebP => DynamicImage::ImageRgba8(img.to_rgba8()),
        _ => img.clone(),
    };
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), format)
        .expect("encode a test image");
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// A well-formed PNG header claiming `w` x `h` pixels, followed by a scrap of
/// image data: enough to read its size, never enough to decode.
fn png_header_only(w: u32, h: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    png_chunk(&mut out, b"IHDR", &ihdr);
    png_chunk(&mut out, b"IDAT", &[0x78, 0x9c, 0x63, 0x00]);
    png_chunk(&mut out, b"IEND", &[]);
    out
}

fn pattern_rgba(w: u32, h: u32, seed: u64) -> RgbaImage {
    RgbaImage::from_fn(w, h, |x, y| {
        let v = (u64::from(x) * 31 + u64::from(y) * 17 + seed).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let b = v.to_le_bytes();
        Rgba([b[7], b[6], b[5], if seed % 3 == 1 { b[4] } else { 255 }])
    })
}

struct Samples {
    /// base64 (in several spellings) of images `image` accepts.
    images: Vec<String>,
    /// base64 of masks.
    masks: Vec<String>,
    /// base64 of a PNG claiming more than `max_input_pixels`.
    too_large: String,
    /// Raw encodings to corrupt: (format, bytes).
    raw: Vec<(ImageFormat, Vec<u8>)>,
}

fn samples() -> &'static Samples {
    static SAMPLES: OnceLock<Samples> = OnceLock::new();
    SAMPLES.get_or_init(|| {
        let opaque = DynamicImage::ImageRgb8(RgbImage::from_fn(5, 3, |x, y| {
            Rgb([x as u8 * 40, y as u8 * 80, 200])
        }));
        // The left half transparent: inpainting without a mask repaints it.
        let holed = DynamicImage::ImageRgba8(RgbaImage::from_fn(8, 8, |x, _| {
            Rgba([10, 200, 30, if x < 4 { 0 } else { 255 }])
        }));
        let wide = DynamicImage::ImageRgba8(pattern_rgba(40, 12, 5));
        let png = encode(&opaque, ImageFormat::Png);
        let png_b64 = b64(&png);
        let wrapped: String = png_b64
            .as_bytes()
            .chunks(20)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join("\n");
        let images = vec![
            png_b64.clone(),
            format!("data:image/png;base64,{png_b64}"),
            format!("  {wrapped}\n"),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&png),
            b64(&encode(&holed, ImageFormat::Png)),
            b64(&encode(&wide, ImageFormat::Jpeg)),
            b64(&encode(&wide, ImageFormat::WebP)),
        ];
        let mask = DynamicImage::ImageLuma8(GrayImage::from_fn(8, 8, |x, y| {
            Luma([if x + y > 7 { 255 } else { 0 }])
        }));
        let masks = vec![
            b64(&encode(&mask, ImageFormat::Png)),
            b64(&encode(&opaque, ImageFormat::Jpeg)),
            format!(
                "data:image/webp;base64,{}",
                b64(&encode(&mask, ImageFormat::WebP))
            ),
        ];
        let raw = vec![
            (ImageFormat::Png, encode(&opaque, ImageFormat::Png)),
            (ImageFormat::Png, encode(&holed, ImageFormat::Png)),
            (ImageFormat::Jpeg, encode(&wide, ImageFormat::Jpeg)),
            (ImageFormat::WebP, encode(&wide, ImageFormat::WebP)),
            (ImageFormat::WebP, encode(&holed, ImageFormat::WebP)),
            (ImageFormat::Png, png_header_only(8192, 8192)),
        ];
        Samples {
            images,
            masks,
            too_large: b64(&png_header_only(8192, 8192)),
            raw,
        }
    })
}

// ---------------------------------------------------------------------------
// JSON value strategies (raw JSON text, so edge numbers survive verbatim)
// ---------------------------------------------------------------------------

const EDGE_NUMBERS: &[&str] = &[
    "0",
    "-0",
    "1",
    "-1",
    "4",
    "31",
    "32",
    "33",
    "128",
    "129",
    "132",
    "150",
    "151",
    "30",
    "30.0",
    "30.000001",
    "-0.0",
    "1e2",
    "1E3",
    "1.5",
    "0.5",
    "7.5",
    "64.0",
    "9007199254740991",
    "9007199254740992",
    "18446744073709551615",
    "18446744073709551616",
    "4294967295",
    "4294967296",
    "-9223372036854775808",
    "123456789012345678901234567890",
    "1e308",
    "-1e308",
    "4.9e-324",
    "1e400",
];

const EDGE_STRINGS: &[&str] = &[
    "",
    " ",
    "\t\n",
    "NaN",
    "nan",
    "Infinity",
    "-Infinity",
    "inf",
    "1e999",
    "null",
    "true",
    "20",
    "euler",
    "EULER",
    "euler_a",
    "ddim",
    "dpm++",
    "png",
    "jpeg",
    "jpg",
    "PNG",
    "webp",
    "stretch",
    "crop",
    "fit",
    "FIT",
    "image_generation",
    "image_transform",
    "image_inpaint",
    "data:",
    "data:image/png;base64",
    "data:,",
    "tiny-sd",
    "sd15",
    "\u{0}",
    "a\u{0}b",
    "\u{1F4A5}",
    "\u{202E}txt",
];

fn leaf() -> BoxedStrategy<String> {
    prop_oneof![
        Just("null".to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        (-300i64..300).prop_map(|n| n.to_string()),
        // NaN and the infinities serialise as `null`.
        any::<f64>().prop_map(|f| serde_json::to_string(&f).unwrap()),
        select(EDGE_NUMBERS).prop_map(String::from),
        select(EDGE_STRINGS).prop_map(json_str),
        "\\PC{0,40}".prop_map(|s| json_str(&s)),
        select(vec![300usize, 9_999, 10_000, 10_001, 40_000])
            .prop_map(|n| json_str(&"ab ".repeat(n).chars().take(n).collect::<String>())),
    ]
    .boxed()
}

/// Any JSON value: leaves, arrays and objects, nested a few levels.
fn wild() -> BoxedStrategy<String> {
    leaf()
        .prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                prop::collection::vec((select(KNOWN_FIELDS), inner), 0..4).prop_map(|kv| {
                    let body: Vec<String> = kv
                        .into_iter()
                        .map(|(k, v)| format!("{}:{v}", json_str(k)))
                        .collect();
                    format!("{{{}}}", body.join(","))
                }),
            ]
        })
        .boxed()
}

fn good_value(field: &'static str) -> BoxedStrategy<String> {
    match field {
        "prompt" => "[a-zA-Z ,]{1,40}".prop_map(|s| json_str(&s)).boxed(),
        "negative_prompt" => "[a-z ]{0,20}".prop_map(|s| json_str(&s)).boxed(),
        "steps" => (1u32..=150).prop_map(|n| n.to_string()).boxed(),
        "guidance_scale" => prop_oneof![
            (0.0f64..=30.0).prop_map(|f| serde_json::to_string(&f).unwrap()),
            (0u32..=30).prop_map(|n| n.to_string()),
        ]
        .boxed(),
        "seed" => prop_oneof![
            (0..=MAX_SEED).prop_map(|n| n.to_string()),
            Just(MAX_SEED.to_string()),
        ]
        .boxed(),
        "width" | "height" => (8u32..=32).prop_map(|k| (k * 4).to_string()).boxed(),
        "scheduler" => select(vec![
            "ddim",
            "euler",
            "euler_a",
            "Euler",
            "euler_ancestral",
            "euler-a",
        ])
        .prop_map(json_str)
        .boxed(),
        "num_images" => (1u32..=8).prop_map(|n| n.to_string()).boxed(),
        "preview_every" => prop_oneof![
            (0u32..=10).prop_map(|n| n.to_string()),
            any::<u32>().prop_map(|n| n.to_string()),
        ]
        .boxed(),
        "output_format" => select(vec!["png", "jpeg"]).prop_map(json_str).boxed(),
        "image" | "input_image" | "init_image" => prop_oneof![
            8 => select(samples().images.clone()).prop_map(|s| json_str(&s)),
            1 => Just(json_str(&samples().too_large)),
        ]
        .boxed(),
        "mask" | "mask_image" => prop_oneof![
            8 => select(samples().masks.clone()).prop_map(|s| json_str(&s)),
            1 => Just(json_str(&samples().too_large)),
        ]
        .boxed(),
        "strength" => prop_oneof![
            (0.0f64..=1.0).prop_map(|f| serde_json::to_string(&f).unwrap()),
            select(vec!["0", "1", "0.0", "1.0"]).prop_map(String::from),
        ]
        .boxed(),
        "mask_blur" => (0u32..=64).prop_map(|n| n.to_string()).boxed(),
        "resize_mode" => select(vec!["stretch", "crop", "fit"])
            .prop_map(json_str)
            .boxed(),
        "model" => select(vec![MODEL_ID, MODEL_SOURCE])
            .prop_map(json_str)
            .boxed(),
        "hive_id" | "worker_id" => "[a-z0-9-]{0,12}".prop_map(|s| json_str(&s)).boxed(),
        other => unreachable!("no good value for {other}"),
    }
}

/// `Some((key, raw JSON value))` with the given weights: absent, a plausible
/// value, any JSON value.
fn field(
    key: &'static str,
    absent: u32,
    good: u32,
    any_value: u32,
) -> BoxedStrategy<Option<(String, String)>> {
    prop_oneof![
        absent => Just(None),
        good => good_value(key).prop_map(move |v| Some((key.to_string(), v))),
        any_value => wild().prop_map(move |v| Some((key.to_string(), v))),
    ]
    .boxed()
}

/// Some((key, value)) or None, with only plausible values.
fn clean_field(
    key: &'static str,
    absent: u32,
    good: u32,
) -> BoxedStrategy<Option<(String, String)>> {
    prop_oneof![
        absent => Just(None),
        good => good_value(key).prop_map(move |v| Some((key.to_string(), v))),
    ]
    .boxed()
}

/// The shared fields: (name, weight absent, weight plausible, weight any JSON).
const SHARED: &[(&str, u32, u32, u32)] = &[
    ("prompt", 1, 12, 1),
    ("negative_prompt", 6, 4, 1),
    ("steps", 5, 8, 1),
    ("guidance_scale", 6, 6, 1),
    ("seed", 5, 8, 1),
    ("width", 5, 8, 1),
    ("height", 5, 8, 1),
    ("scheduler", 6, 6, 1),
    ("num_images", 6, 6, 1),
    ("preview_every", 6, 6, 1),
    ("output_format", 6, 6, 1),
    ("model", 10, 4, 1),
    ("hive_id", 10, 2, 1),
    ("worker_id", 10, 2, 1),
];

/// The image fields, in the same form.
const IMAGE_GROUP: &[(&str, u32, u32, u32)] = &[
    ("image", 2, 16, 1),
    ("input_image", 20, 2, 1),
    ("init_image", 20, 2, 1),
    ("mask", 8, 8, 1),
    ("mask_image", 20, 2, 1),
    ("strength", 6, 8, 1),
    ("mask_blur", 8, 6, 1),
    ("resize_mode", 6, 8, 1),
];

fn to_object(kv: Vec<(String, String)>) -> String {
    let body: Vec<String> = kv
        .into_iter()
        .map(|(k, v)| format!("{}:{v}", json_str(&k)))
        .collect();
    format!("{{{}}}", body.join(","))
}

/// Any mix: the real field names with values of every type, sometimes no or a
/// wrong `operation`, unknown or repeated keys, image fields on any operation.
fn mixed_body() -> BoxedStrategy<String> {
    let operation = prop_oneof![
        8 => select(Operation::ALL.iter().map(|o| json_str(o.as_str())).collect::<Vec<_>>())
            .prop_map(|v| Some(("operation".to_string(), v))),
        1 => wild().prop_map(|v| Some(("operation".to_string(), v))),
        1 => Just(None),
    ];
    let shared: Vec<_> = SHARED
        .iter()
        .map(|&(k, a, g, w)| field(k, a, g, w))
        .collect();
    let images: Vec<_> = IMAGE_GROUP
        .iter()
        .map(|&(k, a, g, w)| field(k, a, g, w))
        .collect();
    let extra = prop::collection::vec(("[a-z_]{1,12}", wild()), 0..3);
    (operation, shared, any::<bool>(), images, extra)
        .prop_map(|(op, shared, with_images, images, extra)| {
            let mut kv: Vec<(String, String)> =
                op.into_iter().chain(shared.into_iter().flatten()).collect();
            if with_images {
                kv.extend(images.into_iter().flatten());
            }
            kv.extend(extra);
            kv
        })
        .prop_shuffle()
        .prop_map(to_object)
        .boxed()
}

/// A well-typed body for one operation with only plausible values, each
/// image given under one of its names: mostly accepted, so the success path
/// is checked often.
fn clean_body() -> BoxedStrategy<String> {
    // The diffusion operations (`image_upscale` has its own fuzzer below).
    select(Operation::ALL[..3].to_vec())
        .prop_flat_map(|op| {
            let shared: Vec<_> = SHARED
                .iter()
                .map(|&(k, a, g, _)| clean_field(k, a, g))
                .collect();
            let named = |names: Vec<&'static str>| {
                select(names)
                    .prop_flat_map(|name| good_value(name).prop_map(move |v| (name.to_string(), v)))
            };
            let images = vec!["image", "input_image", "init_image"];
            let (image, mask, extras): (BoxedStrategy<_>, BoxedStrategy<_>, &[&'static str]) =
                match op {
                    Operation::ImageGeneration => (Just(None).boxed(), Just(None).boxed(), &[]),
                    Operation::ImageTransform => (
                        named(images).prop_map(Some).boxed(),
                        Just(None).boxed(),
                        &["strength", "resize_mode"],
                    ),
                    Operation::ImageInpaint | Operation::ImageUpscale => (
                        named(images).prop_map(Some).boxed(),
                        prop::option::weighted(0.8, named(vec!["mask", "mask_image"])).boxed(),
                        &["strength", "resize_mode", "mask_blur"],
                    ),
                };
            let extras: Vec<_> = extras.iter().map(|&k| clean_field(k, 1, 1)).collect();
            (Just(op), shared, image, mask, extras)
        })
        .prop_map(|(op, shared, image, mask, extras)| {
            let mut kv = vec![("operation".to_string(), json_str(op.as_str()))];
            kv.extend(shared.into_iter().flatten());
            kv.extend(image);
            kv.extend(mask);
            kv.extend(extras.into_iter().flatten());
            kv
        })
        .prop_shuffle()
        .prop_map(to_object)
        .boxed()
}

fn body_text() -> BoxedStrategy<String> {
    prop_oneof![1 => clean_body(), 2 => mixed_body()].boxed()
}

/// A plausible body with a few bytes flipped, cut or inserted.
fn mutated_body() -> BoxedStrategy<Vec<u8>> {
    (
        body_text(),
        prop::collection::vec((0u8..3, any::<Index>(), any::<u8>()), 1..6),
    )
        .prop_map(|(body, edits)| {
            let mut bytes = body.into_bytes();
            apply_edits(&mut bytes, &edits);
            bytes
        })
        .boxed()
}

fn apply_edits(bytes: &mut Vec<u8>, edits: &[(u8, Index, u8)]) {
    apply_edits_after(bytes, 0, edits);
}

/// Flips, cuts at or inserts a byte at positions from `from` on.
fn apply_edits_after(bytes: &mut Vec<u8>, from: usize, edits: &[(u8, Index, u8)]) {
    for (kind, at, byte) in edits {
        let from = from.min(bytes.len());
        match kind {
            0 if bytes.len() > from => {
                let i = from + at.index(bytes.len() - from);
                bytes[i] ^= byte | 1;
            }
            1 if bytes.len() > from => {
                let i = from + at.index(bytes.len() - from);
                bytes.truncate(i);
            }
            _ => {
                let i = from + at.index(bytes.len() - from + 1);
                bytes.insert(i, *byte);
            }
        }
    }
}

/// Where the image data starts: the bytes before it (signature, size, the
/// decoder's set-up) are left alone when only the tail is corrupted.
fn header_len(format: ImageFormat, bytes: &[u8]) -> usize {
    match format {
        // Signature + IHDR.
        ImageFormat::Png => 33,
        // Up to the start-of-scan header, included.
        ImageFormat::Jpeg => bytes
            .windows(4)
            .position(|w| w[0] == 0xFF && w[1] == 0xDA)
            .map_or(2, |i| {
                i + 2 + usize::from(u16::from_be_bytes([bytes[i + 2], bytes[i + 3]]))
            }),
        // RIFF header + chunk header + the VP8L header.
        _ => 25,
    }
    .min(bytes.len())
}

/// Recomputes every PNG chunk's CRC, so corrupted data gets past the CRC
/// check into the decompressor and the filters.
fn fix_png_crcs(bytes: &mut [u8]) {
    let mut at = 8;
    while at + 12 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let Some(end) = (at + 8).checked_add(len).filter(|&e| e + 4 <= bytes.len()) else {
            break;
        };
        let crc = crc32(&bytes[at + 4..end]);
        bytes[end..end + 4].copy_from_slice(&crc.to_be_bytes());
        at = end + 4;
    }
}

// ---------------------------------------------------------------------------
// The properties
// ---------------------------------------------------------------------------

fn check_error(e: &ApiError) -> Result<(), TestCaseError> {
    prop_assert!(
        VALIDATION_CODES.contains(&e.code),
        "undocumented code {:?}: {e:?}",
        e.code
    );
    prop_assert!(!e.message.trim().is_empty(), "empty message: {e:?}");
    if e.code != ErrorCode::InvalidJson {
        let field = e.field.as_deref().unwrap_or("");
        // `image_upscale` refuses fields it does not take, naming each.
        let unknown_refused = e
            .message
            .starts_with(&format!("`{field}` is not a field here"));
        prop_assert!(
            KNOWN_FIELDS.contains(&field) || unknown_refused,
            "a {:?} error must name a request field, got {:?}: {e:?}",
            e.code,
            e.field
        );
    }
    if e.code == ErrorCode::ModelMismatch {
        prop_assert_eq!(e.field.as_deref(), Some("model"));
    }
    Ok(())
}

/// A JSON number as an integer field reads it: any number without a
/// fractional part (`4`, `4.0`, `1e2`), as JSON has one number type.
fn whole(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < 18_446_744_073_709_551_616.0)
            .map(|f| f as u64)
    })
}

/// An accepted request obeys every limit and reflects what was sent.
fn check_ok(body: &[u8], v: &Validated) -> Result<(), TestCaseError> {
    let p = profile();
    let limits = &p.info.limits;
    let defaults = &p.info.defaults;
    let sent: Value = serde_json::from_slice(body).expect("accepted bodies are JSON");
    let Value::Object(sent) = sent else {
        panic!("an accepted body that is not an object");
    };
    // An explicit `null` reads as an absent field: its default applies.
    let sent: serde_json::Map<String, Value> =
        sent.into_iter().filter(|(_, v)| !v.is_null()).collect();
    let r = match &v.request {
        Work::Generate(r) => r,
        Work::Upscale(u) => return check_upscale(&sent, u),
    };

    prop_assert_eq!(Some(v.operation.as_str()), sent["operation"].as_str());
    prop_assert!(!r.prompt.trim().is_empty());
    prop_assert!(r.prompt.chars().count() <= limits.max_prompt_chars as usize);
    prop_assert_eq!(Some(r.prompt.as_str()), sent["prompt"].as_str());
    let negative = r.negative_prompt.as_deref().unwrap_or_default();
    prop_assert!(negative.chars().count() <= limits.max_prompt_chars as usize);

    prop_assert!((1..=limits.max_steps as usize).contains(&r.steps));
    let steps = sent
        .get("steps")
        .map_or(Some(u64::from(defaults.steps)), whole);
    prop_assert_eq!(Some(r.steps as u64), steps);

    prop_assert!(r.guidance_scale.is_finite());
    prop_assert!(
        (limits.min_guidance_scale..=limits.max_guidance_scale).contains(&r.guidance_scale)
    );
    let guidance = sent
        .get("guidance_scale")
        .map_or(Some(defaults.guidance_scale), Value::as_f64);
    prop_assert_eq!(Some(r.guidance_scale), guidance);

    prop_assert!(r.seed <= limits.max_seed && r.seed <= MAX_SEED);
    // A negative seed (AUTOMATIC1111's -1) is a random one, as an absent seed.
    if let Some(seed) = sent
        .get("seed")
        .filter(|s| s.as_f64().is_some_and(|s| s >= 0.0))
    {
        prop_assert_eq!(Some(r.seed), whole(seed));
    } else {
        // A random seed leaves room for `seed + i` of every image.
        prop_assert!(r.seed + (r.num_images as u64 - 1) <= MAX_SEED);
    }

    prop_assert!((1..=limits.max_images as usize).contains(&r.num_images));
    let n = sent.get("num_images").map_or(Some(1), whole);
    prop_assert_eq!(Some(r.num_images as u64), n);

    for (name, side) in [("width", r.width), ("height", r.height)] {
        prop_assert_eq!(side % limits.size_multiple, 0, "{} {}", name, side);
        prop_assert!(
            (limits.min_size..=limits.max_size).contains(&side),
            "{name} {side}"
        );
        if let Some(given) = sent.get(name) {
            prop_assert_eq!(Some(u64::from(side)), whole(given));
        } else if v.operation == Operation::ImageGeneration {
            prop_assert_eq!(side, 64);
        }
    }
    prop_assert!(u64::from(r.width) * u64::from(r.height) <= limits.max_pixels);

    let preview = sent.get("preview_every").map_or(Some(0), whole);
    prop_assert_eq!(Some(u64::from(v.preview_every)), preview);
    match sent.get("scheduler").and_then(Value::as_str) {
        Some(name) => prop_assert_eq!(Some(r.scheduler), SchedulerKind::from_name(name)),
        None => prop_assert_eq!(r.scheduler, p.default_scheduler),
    }
    let format = match sent.get("output_format").and_then(Value::as_str) {
        Some("jpeg") => WireFormat::Jpeg,
        _ => WireFormat::Png,
    };
    prop_assert_eq!(r.output_format, format);
    if let Some(model) = sent.get("model").and_then(Value::as_str) {
        prop_assert!(model == MODEL_ID || model == MODEL_SOURCE, "{model}");
    }

    let has = |k: &str| sent.contains_key(k);
    match v.operation {
        Operation::ImageGeneration => {
            prop_assert!(r.init.is_none());
            for k in IMAGE_FIELDS {
                prop_assert!(!has(k), "`{}` accepted on image_generation", k);
            }
        }
        Operation::ImageTransform | Operation::ImageInpaint | Operation::ImageUpscale => {
            let inpaint = v.operation == Operation::ImageInpaint;
            let init = r.init.as_ref().expect("image operations carry their input");
            prop_assert_eq!(init.image.dimensions(), (r.width, r.height));
            prop_assert!((0.0..=1.0).contains(&init.strength));
            let strength = sent
                .get("strength")
                .map_or(Some(if inpaint { 1.0 } else { 0.8 }), Value::as_f64);
            prop_assert_eq!(Some(init.strength), strength);
            if let Some(blur) = sent.get("mask_blur") {
                prop_assert!(whole(blur).is_some_and(|b| b <= 64));
            }
            if inpaint {
                let mask = init.mask.as_ref().expect("inpainting carries a mask");
                prop_assert_eq!(mask.binary.dimensions(), (r.width, r.height));
                prop_assert_eq!(mask.blend.dimensions(), (r.width, r.height));
                prop_assert!(mask.binary.pixels().all(|p| p[0] == 0 || p[0] == 255));
            } else {
                prop_assert!(init.mask.is_none());
                for k in ["mask", "mask_image", "mask_blur"] {
                    prop_assert!(!has(k), "`{}` accepted on image_transform", k);
                }
            }
        }
    }
    Ok(())
}

/// Validates `body` and checks the outcome: the operation accepted, or the
/// code of the refusal.
/// An accepted `image_upscale`: the output is the input times the factor
/// asked (the built-ins' 2 by default), within `max_input_pixels`, and the
/// tiles in range.
fn check_upscale(
    sent: &serde_json::Map<String, Value>,
    u: &sd_worker::upscale::job::UpscaleJob,
) -> Result<(), TestCaseError> {
    let limits = &profile().info.limits;
    let scale = sent.get("scale").and_then(Value::as_f64).unwrap_or(2.0);
    prop_assert_eq!(u.scale, scale);
    prop_assert!(scale > 0.0 && scale <= 8.0);
    let (w, h) = u.image.dimensions();
    prop_assert_eq!(u.width as f64, (w as f64 * scale).round().max(1.0));
    prop_assert_eq!(u.height as f64, (h as f64 * scale).round().max(1.0));
    prop_assert!(u64::from(u.width) * u64::from(u.height) <= limits.max_input_pixels);
    prop_assert!(u.tile_size == 0 || (32..=2048).contains(&u.tile_size));
    prop_assert!(u.tile_size == 0 || u.tile_overlap * 2 < u.tile_size);
    prop_assert_eq!(u.steps(), 1, "built-in upscalers run in one step");
    Ok(())
}

fn check_body(body: &[u8]) -> Result<Result<Operation, ErrorCode>, TestCaseError> {
    match validate_body(body, profile()) {
        Ok(v) => {
            check_ok(body, &v)?;
            Ok(Ok(v.operation))
        }
        Err(e) => {
            check_error(&e)?;
            Ok(Err(e.code))
        }
    }
}

fn run<S: Strategy>(cases: u32, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>) {
    let mut runner = TestRunner::new(config(cases));
    if let Err(e) = runner.run(&strategy, test) {
        panic!("{e}\n{runner}");
    }
}

#[test]
fn the_hand_built_profile_has_the_tiny_models_limits() {
    let l = &profile().info.limits;
    assert_eq!(
        (l.size_multiple, l.min_size, l.max_size, l.max_pixels),
        (4, 32, 128, 64 * 64 * 4)
    );
    assert_eq!((l.max_steps, l.max_images, l.max_seed), (150, 8, MAX_SEED));
    // Each operation has a body that passes, so the fuzzers below reach the
    // success path as well as the errors.
    let s = samples();
    for body in [
        serde_json::json!({"operation": "image_generation", "prompt": "a cat"}),
        serde_json::json!({"operation": "image_transform", "prompt": "a cat", "image": s.images[0]}),
        serde_json::json!({"operation": "image_inpaint", "prompt": "a cat", "init_image": s.images[0], "mask_image": s.masks[0]}),
        serde_json::json!({"operation": "image_inpaint", "prompt": "a cat", "input_image": s.images[4]}),
    ] {
        let bytes = body.to_string().into_bytes();
        let v = validate_body(&bytes, profile()).unwrap_or_else(|e| panic!("{body}: {e:?}"));
        check_ok(&bytes, &v).unwrap();
    }
    let too_large = serde_json::json!({"operation": "image_transform", "prompt": "a cat", "image": s.too_large});
    let e = validate_body(too_large.to_string().as_bytes(), profile()).unwrap_err();
    assert_eq!(
        (e.code, e.field.as_deref()),
        (ErrorCode::PayloadTooLarge, Some("image"))
    );
}

#[test]
fn arbitrary_bytes_never_panic_and_fail_with_a_documented_code() {
    let strategy = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        "\\PC{0,200}".prop_map(String::into_bytes),
        mutated_body(),
    ];
    run(3000, strategy, |body| check_body(&body).map(|_| ()));
}

#[test]
fn structured_bodies_are_accepted_within_limits_or_refused_naming_the_field() {
    const CASES: u32 = 6000;
    let accepted = [
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    ];
    let codes = std::sync::Mutex::new(std::collections::BTreeSet::new());
    run(CASES, body_text(), |body| {
        match check_body(body.as_bytes())? {
            Ok(op) => {
                let i = Operation::ALL.iter().position(|o| *o == op).unwrap();
                accepted[i].fetch_add(1, Ordering::Relaxed);
            }
            Err(code) => {
                codes.lock().unwrap().insert(format!("{code:?}"));
            }
        }
        Ok(())
    });
    // The mix reaches the success path of every diffusion operation and many
    // refusals (`image_upscale`, which takes none of their fields, has its own).
    let accepted: Vec<usize> = accepted[..3]
        .iter()
        .map(|a| a.load(Ordering::Relaxed))
        .collect();
    assert!(
        accepted.iter().all(|&n| n > 0),
        "accepted per operation: {accepted:?}"
    );
    let codes = codes.into_inner().unwrap();
    assert!(codes.len() >= 5, "error codes seen: {codes:?}");
}

#[test]
fn upscale_bodies_are_accepted_within_limits_or_refused_naming_the_field() {
    let s = samples();
    let images: Vec<String> = s.images.iter().take(3).cloned().collect();
    let number = || {
        prop_oneof![
            Just(None),
            (-2.0f64..12.0).prop_map(Some),
            prop::sample::select(vec![0.0, 1.0, 2.0, 4.0, 8.0, 8.5]).prop_map(Some),
        ]
    };
    let strategy = (
        prop::sample::select(images),
        prop::option::of(prop::sample::select(vec![
            "lanczos", "Nearest", "esrgan", "",
        ])),
        number(),
        prop::option::of(prop::sample::select(vec![0u32, 16, 32, 64, 512, 4096])),
        prop::option::of(prop::sample::select(vec![0u32, 8, 16, 32, 300])),
        prop::option::of("[a-z_]{1,8}"),
    );
    let accepted = AtomicUsize::new(0);
    run(
        1500,
        strategy,
        |(image, upscaler, scale, tile, overlap, extra)| {
            let mut body = serde_json::json!({"operation": "image_upscale", "image": image});
            if let Some(u) = upscaler {
                body["upscaler"] = Value::from(u);
            }
            if let Some(x) = scale {
                body["scale"] = Value::from(x);
            }
            if let Some(t) = tile {
                body["tile_size"] = Value::from(t);
            }
            if let Some(o) = overlap {
                body["tile_overlap"] = Value::from(o);
            }
            if let Some(k) = extra {
                body[k] = Value::from(1);
            }
            if let Ok(Operation::ImageUpscale) = check_body(body.to_string().as_bytes())? {
                accepted.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        },
    );
    assert!(accepted.load(Ordering::Relaxed) > 50);
}

#[test]
fn arbitrary_image_strings_never_panic_and_errors_name_the_field() {
    let strategy = (
        prop_oneof![
            "\\PC{0,200}",
            "[A-Za-z0-9+/=_ \n-]{0,300}",
            "data:[a-z/;0-9]{0,20},[A-Za-z0-9+/=]{0,120}",
            " *data:[a-z/;0-9]{0,20}",
        ],
        prop_oneof![
            Just("image".to_string()),
            Just("mask".to_string()),
            "[a-z_]{1,10}"
        ],
    );
    run(3000, strategy, |(text, field)| {
        check_decode(&field, &text, MAX_INPUT_PIXELS)
    });
}

#[test]
fn base64_of_arbitrary_bytes_never_panics() {
    let magic: Vec<&'static [u8]> = vec![
        b"",
        b"\x89PNG\r\n\x1a\n",
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR",
        b"\xff\xd8\xff",
        b"\xff\xd8\xff\xe0\x00\x10JFIF\x00",
        b"RIFF\x20\x00\x00\x00WEBPVP8 ",
        b"RIFF\x20\x00\x00\x00WEBPVP8L",
        b"GIF89a",
    ];
    let strategy = (
        select(magic),
        prop::collection::vec(any::<u8>(), 0..400),
        0usize..4,
        any::<bool>(),
        select(vec![1u64, 64, MAX_INPUT_PIXELS]),
    );
    run(3000, strategy, |(magic, tail, engine, data_url, max)| {
        let mut bytes = magic.to_vec();
        bytes.extend(tail);
        let text = encode_b64(&bytes, engine, data_url);
        check_decode("image", &text, max)
    });
}

#[test]
fn corrupted_png_jpeg_and_webp_never_panic() {
    let raw = samples().raw.clone();
    let fresh = (
        select(vec![ImageFormat::Png, ImageFormat::Jpeg, ImageFormat::WebP]),
        1u32..24,
        1u32..24,
        any::<u64>(),
    )
        .prop_map(|(format, w, h, seed)| {
            let img = DynamicImage::ImageRgba8(pattern_rgba(w, h, seed));
            (format, encode(&img, format))
        });
    let strategy = (
        prop_oneof![select(raw), fresh],
        prop::collection::vec((0u8..3, any::<Index>(), any::<u8>()), 0..5),
        (any::<bool>(), any::<bool>()),
        (0usize..4, any::<bool>()),
        prop_oneof![1 => Just(16u64), 1 => Just(300), 4 => Just(MAX_INPUT_PIXELS)],
        prop_oneof![Just("image"), Just("mask")],
    );
    run(
        3000,
        strategy,
        |((format, bytes), edits, (tail_only, fix_crcs), (engine, data_url), max, field)| {
            let mut corrupted = bytes.clone();
            let from = if tail_only {
                header_len(format, &bytes)
            } else {
                0
            };
            apply_edits_after(&mut corrupted, from, &edits);
            if fix_crcs && format == ImageFormat::Png {
                fix_png_crcs(&mut corrupted);
            }
            let text = encode_b64(&corrupted, engine, data_url);
            check_decode(field, &text, max)?;
            if edits.is_empty() {
                // Untouched, the image reads back (or is refused by size only).
                let format_of = image::guess_format(&bytes).ok();
                prop_assert_eq!(format_of, Some(format));
                match images::decode(field, &text, max) {
                    Ok(img) => {
                        prop_assert!(u64::from(img.width()) * u64::from(img.height()) <= max)
                    }
                    Err(e) => prop_assert!(
                        e.code == ErrorCode::PayloadTooLarge,
                        "an intact image was refused: {e:?}"
                    ),
                }
            }
            Ok(())
        },
    );
}

fn encode_b64(bytes: &[u8], engine: usize, data_url: bool) -> String {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let text = match engine {
        0 => STANDARD.encode(bytes),
        1 => STANDARD_NO_PAD.encode(bytes),
        2 => URL_SAFE.encode(bytes),
        _ => URL_SAFE_NO_PAD.encode(bytes),
    };
    if data_url {
        format!("data:image/png;base64,{text}")
    } else {
        text
    }
}

fn check_decode(field: &str, text: &str, max: u64) -> Result<(), TestCaseError> {
    match images::decode(field, text, max) {
        Ok(img) => {
            prop_assert!(img.width() >= 1 && img.height() >= 1);
            prop_assert!(u64::from(img.width()) * u64::from(img.height()) <= max);
        }
        Err(e) => {
            prop_assert!(
                matches!(e.code, ErrorCode::InvalidImage | ErrorCode::PayloadTooLarge),
                "unexpected code {:?}: {e:?}",
                e.code
            );
            prop_assert_eq!(e.field.as_deref(), Some(field));
            prop_assert!(!e.message.trim().is_empty());
        }
    }
    Ok(())
}
