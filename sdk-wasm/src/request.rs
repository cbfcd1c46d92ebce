//! The body of `POST /v1/jobs`: one request per operation, tagged by `operation`.

use serde::{Deserialize, Serialize};

/// Largest accepted seed: JavaScript's `Number.MAX_SAFE_INTEGER`, so a seed
/// survives a round trip through a browser's `number` unchanged.
pub const MAX_SEED: u64 = (1 << 53) - 1;

/// A job request, tagged by `operation`. Each operation's type carries
/// exactly the fields it accepts (TypeScript: a misplaced field does not
/// compile); the worker reads a body leniently first ([`OperationFields`]) so
/// that each refusal names the field at fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify))]
#[serde(tag = "operation", rename_all = "snake_case")]
pub enum JobRequest {
    /// Text to image.
    ImageGeneration(TextToImageRequest),
    /// Image to image: `image` re-imagined under `prompt`, by `strength`.
    ImageTransform(ImageToImageRequest),
    /// Inpainting: the white part of `mask` (or the transparent part of `image`) repainted.
    ImageInpaint(InpaintRequest),
    /// `image` made larger by an upscaler (no diffusion, no prompt).
    ImageUpscale(crate::UpscaleRequest),
}

impl JobRequest {
    pub fn operation(&self) -> Operation {
        match self {
            JobRequest::ImageGeneration(_) => Operation::ImageGeneration,
            JobRequest::ImageTransform(_) => Operation::ImageTransform,
            JobRequest::ImageInpaint(_) => Operation::ImageInpaint,
            JobRequest::ImageUpscale(_) => Operation::ImageUpscale,
        }
    }

    /// Parameters shared by the diffusion operations (None for `image_upscale`).
    pub fn params(&self) -> Option<&GenerationParams> {
        match self {
            JobRequest::ImageGeneration(r) => Some(&r.params),
            JobRequest::ImageTransform(r) => Some(&r.params),
            JobRequest::ImageInpaint(r) => Some(&r.params),
            JobRequest::ImageUpscale(_) => None,
        }
    }
}

/// The operations this version of the contract knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify))]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    ImageGeneration,
    ImageTransform,
    ImageInpaint,
    ImageUpscale,
}

impl Operation {
    pub const ALL: [Operation; 4] = [
        Operation::ImageGeneration,
        Operation::ImageTransform,
        Operation::ImageInpaint,
        Operation::ImageUpscale,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Operation::ImageGeneration => "image_generation",
            Operation::ImageTransform => "image_transform",
            Operation::ImageInpaint => "image_inpaint",
            Operation::ImageUpscale => "image_upscale",
        }
    }
}

/// Body of `image_generation`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify))]
pub struct TextToImageRequest {
    #[serde(flatten)]
    pub params: GenerationParams,
    /// A second pass at a larger size (A1111's "Hires. fix"; see
    /// [`crate::HiresFix`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hires: Option<crate::HiresFix>,
    /// With `controlnets` only: how the control images are brought to the
    /// output size (`stretch` by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resize_mode: Option<ResizeMode>,
}

/// Body of `image_transform`. Images are base64 PNG, JPEG or WebP, with or
/// without a `data:` URL prefix; the older names `input_image` and
/// `init_image` of `image` are accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify))]
pub struct ImageToImageRequest {
    #[serde(flatten)]
    pub params: GenerationParams,
    /// The input image.
    #[serde(alias = "input_image", alias = "init_image")]
    pub image: String,
    /// How far from the input to go, 0..=1 (0.8 by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strength: Option<f64>,
    /// How the input is brought to the output size (`stretch` by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resize_mode: Option<ResizeMode>,
}

/// Body of `image_inpaint`. Images are base64 PNG, JPEG or WebP, with or
/// without a `data:` URL prefix; the older names `input_image` and
/// `init_image` of `image`, and `mask_image` of `mask`, are accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify))]
pub struct InpaintRequest {
    #[serde(flatten)]
    pub params: GenerationParams,
    /// The input image.
    #[serde(alias = "input_image", alias = "init_image")]
    pub image: String,
    /// White = repaint, black = keep (any mode; binarised at 50%). Absent:
    /// the transparent pixels of `image` are repainted (an `image` without
    /// any is refused, naming `mask`).
    #[serde(default, alias = "mask_image", skip_serializing_if = "Option::is_none")]
    pub mask: Option<String>,
    /// How far from the input to go, 0..=1 (1.0 by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strength: Option<f64>,
    /// Feather the seam over this many pixels, at most 64 (0 by default: the
    /// pixels outside the mask come back exactly as they were).
    #[serde(
        default,
        deserialize_with = "crate::numbers::opt_u32",
        skip_serializing_if = "Option::is_none"
    )]
    pub mask_blur: Option<u32>,
    /// How the input is brought to the output size (`stretch` by default;
    /// `fit` repaints the borders: outpainting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resize_mode: Option<ResizeMode>,
}

/// Every operation-specific field of the diffusion operations, all optional,
/// under every name the per-operation types accept: what a server reads
/// before it knows which fields belong to the body's operation, so that a
/// missing or misplaced field is refused by name. Not a request type of its
/// own (clients send [`JobRequest`]); a test keeps it in step with
/// [`TextToImageRequest`], [`ImageToImageRequest`] and [`InpaintRequest`].
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct OperationFields {
    #[serde(
        default,
        alias = "input_image",
        alias = "init_image",
        skip_serializing_if = "Option::is_none"
    )]
    pub image: Option<String>,
    #[serde(default, alias = "mask_image", skip_serializing_if = "Option::is_none")]
    pub mask: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strength: Option<f64>,
    #[serde(
        default,
        deserialize_with = "crate::numbers::opt_u32",
        skip_serializing_if = "Option::is_none"
    )]
    pub mask_blur: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resize_mode: Option<ResizeMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hires: Option<crate::HiresFix>,
}

/// How an input image is brought to the output size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify))]
#[serde(rename_all = "lowercase")]
pub enum ResizeMode {
    /// Scale both axes independently to the exact size.
    Stretch,
    /// Scale to cover the size, keeping the aspect ratio, and cut the overflow evenly.
    Crop,
    /// Scale to fit inside the size, keeping the aspect ratio; the borders are
    /// black (image to image) or repainted (inpainting: outpainting).
    Fit,
}

/// Parameters common to the diffusion operations. Absent fields take the loaded model's
/// defaults (see `GET /v1/info`); a field set to `null` is absent. Integer
/// fields accept any JSON number without a fractional part (`4`, `4.0`, `1e2`,
/// see [`crate::numbers`]).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify))]
pub struct GenerationParams {
    pub prompt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negative_prompt: Option<String>,
    #[serde(
        default,
        deserialize_with = "crate::numbers::opt_u32",
        skip_serializing_if = "Option::is_none"
    )]
    pub steps: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guidance_scale: Option<f64>,
    /// 0..=MAX_SEED; random when absent or negative (AUTOMATIC1111 sends `-1`
    /// for "random"). Image `i` of a job uses `seed + i`.
    #[serde(
        default,
        deserialize_with = "crate::numbers::opt_seed",
        skip_serializing_if = "Option::is_none"
    )]
    // Negative seeds are accepted (as "random"): the schema must not say `minimum: 0`.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<i64>))]
    pub seed: Option<u64>,
    #[serde(
        default,
        deserialize_with = "crate::numbers::opt_u32",
        skip_serializing_if = "Option::is_none"
    )]
    pub width: Option<u32>,
    #[serde(
        default,
        deserialize_with = "crate::numbers::opt_u32",
        skip_serializing_if = "Option::is_none"
    )]
    pub height: Option<u32>,
    /// Scheduler, one of `GET /v1/info`'s `schedulers`, by its wire name
    /// ([`crate::SchedulerName`]) or any other spelling of [`crate::SCHEDULERS`],
    /// case-insensitively: label or AUTOMATIC1111 sampler name (`"Euler a"`,
    /// `"DPM++ 2M Karras"`). "Euler" is `flow_euler` on a flow-matching model.
    /// Kept as sent: the worker resolves it against the loaded model. TypeScript
    /// types it as the union of wire names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(target_arch = "wasm32", tsify(type = "SchedulerName"))]
    pub scheduler: Option<String>,
    #[serde(
        default,
        deserialize_with = "crate::numbers::opt_u32",
        skip_serializing_if = "Option::is_none"
    )]
    pub num_images: Option<u32>,
    /// Send a `preview` event every N steps (0 or absent: no previews).
    #[serde(
        default,
        deserialize_with = "crate::numbers::opt_u32",
        skip_serializing_if = "Option::is_none"
    )]
    pub preview_every: Option<u32>,
    /// Output format of the final images (PNG by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_format: Option<ImageFormat>,
    /// Random source of the noise (`chacha` when absent): `torch-cpu` makes
    /// the same seed give the same picture as diffusers (and ComfyUI) on the CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rng: Option<Rng>,
    /// ControlNet units (at most [`crate::control::MAX_CONTROLNET_UNITS`]),
    /// for every operation; their residuals are summed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controlnets: Option<Vec<crate::ControlNetUnit>>,
    /// LoRAs merged into the model for this job (at most
    /// [`crate::lora::MAX_LORAS`], with the prompt's `<lora:name:weight>`
    /// tags), for every operation; names from `GET /v1/loras`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(max_items = 16))]
    pub loras: Option<Vec<crate::LoraRef>>,
    /// How `preview` events are decoded (`taesd` when the worker has
    /// `--taesd`, else `vae`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_method: Option<crate::PreviewMethod>,
    /// The decoder of the final images (`full` when absent; `tiny` needs `--taesd`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vae: Option<crate::VaeChoice>,
    /// Tiled VAE decode and encode (`auto` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vae_tiling: Option<crate::VaeTiling>,
    /// Sent by the hive: when present it must name the loaded model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Sent by the hive for its bookkeeping; accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hive_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
}

/// Random source of a job's noise. Every image `i` of a job has its own
/// stream, seeded with `seed + i`; each noise draw (the starting latents, the
/// VAE posterior sample of an input image, ancestral schedulers' noise at each
/// step) takes the next values of each image's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify))]
#[serde(rename_all = "kebab-case")]
pub enum Rng {
    /// ChaCha8 (the `rand_chacha` crate) with standard normals from
    /// `rand_distr`: the worker's own source, the same on every machine.
    #[default]
    #[serde(alias = "ChaCha", alias = "CHACHA")]
    Chacha,
    /// PyTorch's CPU generator: each draw equals `torch.randn(shape,
    /// generator=torch.Generator("cpu").manual_seed(seed + i))` bit for bit
    /// (x86 torch builds), in the order diffusers' pipelines draw. Also what
    /// AUTOMATIC1111 calls `RNG: CPU` (so `"CPU"` and `"cpu"` are accepted too).
    #[serde(alias = "CPU", alias = "cpu", alias = "TORCH-CPU", alias = "Torch-CPU")]
    TorchCpu,
    /// AUTOMATIC1111's "NV" source (`RNG: NV`): its Philox 4x32-10 and
    /// Box-Muller reproduction of `torch.randn(..., device="cuda")`, one
    /// generator per image (`seed + i`), each draw (starting noise, then each
    /// ancestral step's) at the next offset. What A1111 draws for the same
    /// seed with its `randn_source` "NV", and on NVIDIA GPUs with "GPU" (so
    /// A1111's spellings `"NV"` and `"GPU"` are accepted too).
    #[serde(alias = "NV", alias = "GPU", alias = "gpu")]
    Nv,
}

impl Rng {
    /// The wire name (`"chacha"`, `"torch-cpu"`, `"nv"`).
    pub fn name(self) -> &'static str {
        match self {
            Rng::Chacha => "chacha",
            Rng::TorchCpu => "torch-cpu",
            Rng::Nv => "nv",
        }
    }
}

/// Encoding of an image on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify))]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    Png,
    Jpeg,
}

impl ImageFormat {
    pub fn mime(self) -> &'static str {
        match self {
            ImageFormat::Png => "image/png",
            ImageFormat::Jpeg => "image/jpeg",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_minimal_and_hive_fields() {
        let r: JobRequest = serde_json::from_str(
            r#"{"operation":"image_generation","prompt":"a cat","hive_id":"h","worker_id":"w","model":"m","seed":42}"#,
        )
        .unwrap();
        assert_eq!(r.operation(), Operation::ImageGeneration);
        assert_eq!(r.params().unwrap().prompt, "a cat");
        assert_eq!(r.params().unwrap().seed, Some(42));
        assert_eq!(r.params().unwrap().model.as_deref(), Some("m"));
    }

    #[test]
    fn image_requests_accept_the_older_field_names() {
        let r: JobRequest = serde_json::from_str(
            r#"{"operation":"image_inpaint","prompt":"p","init_image":"AAA","mask_image":"BBB","strength":0.5,"resize_mode":"fit"}"#,
        )
        .unwrap();
        let JobRequest::ImageInpaint(r) = r else {
            panic!("wrong variant")
        };
        assert_eq!(r.image, "AAA");
        assert_eq!(r.mask.as_deref(), Some("BBB"));
        assert_eq!(r.resize_mode, Some(ResizeMode::Fit));
        let t: JobRequest = serde_json::from_str(
            r#"{"operation":"image_transform","prompt":"p","input_image":"CCC"}"#,
        )
        .unwrap();
        assert_eq!(t.operation(), Operation::ImageTransform);
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!(v["image"], "CCC");
    }

    #[test]
    fn integer_fields_take_integral_floats_and_negative_seeds_mean_random() {
        let r: JobRequest = serde_json::from_str(
            r#"{"operation":"image_inpaint","prompt":"p","image":"A","steps":4.0,"width":1e2,"height":64.0,"num_images":2.0,"preview_every":1.0,"mask_blur":3.0,"seed":-1}"#,
        )
        .unwrap();
        let p = r.params().unwrap();
        assert_eq!(
            (p.steps, p.width, p.height, p.num_images, p.preview_every),
            (Some(4), Some(100), Some(64), Some(2), Some(1))
        );
        assert_eq!(p.seed, None);
        let JobRequest::ImageInpaint(r) = r else {
            panic!("wrong variant")
        };
        assert_eq!(r.mask_blur, Some(3));
        let e = serde_json::from_str::<JobRequest>(
            r#"{"operation":"image_generation","prompt":"p","steps":4.5}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("whole number"), "{e}");
    }

    #[test]
    fn round_trips_with_tag() {
        let r = JobRequest::ImageGeneration(TextToImageRequest {
            params: GenerationParams {
                prompt: "x".into(),
                steps: Some(3),
                output_format: Some(ImageFormat::Jpeg),
                ..Default::default()
            },
            hires: None,
            resize_mode: None,
        });
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["operation"], "image_generation");
        assert_eq!(v["steps"], 3);
        assert_eq!(v["output_format"], "jpeg");
        assert!(v.get("seed").is_none());
        assert_eq!(serde_json::from_value::<JobRequest>(v).unwrap(), r);
    }

    #[test]
    fn the_rng_is_named_on_the_wire_in_kebab_case_and_absent_by_default() {
        let parse = |extra: &str| {
            serde_json::from_str::<JobRequest>(&format!(
                r#"{{"operation":"image_generation","prompt":"p"{extra}}}"#
            ))
        };
        assert_eq!(parse("").unwrap().params().unwrap().rng, None);
        let r = parse(r#","rng":"torch-cpu""#).unwrap();
        assert_eq!(r.params().unwrap().rng, Some(Rng::TorchCpu));
        assert_eq!(
            serde_json::to_value(&r).unwrap()["rng"],
            Rng::TorchCpu.name()
        );
        assert_eq!(
            parse(r#","rng":"chacha""#).unwrap().params().unwrap().rng,
            Some(Rng::Chacha)
        );
        assert_eq!(
            parse(r#","rng":"nv""#).unwrap().params().unwrap().rng,
            Some(Rng::Nv)
        );
        assert_eq!(Rng::Nv.name(), "nv");
        assert!(parse(r#","rng":"nv-gpu""#).is_err());
        // AUTOMATIC1111's infotext spellings (`RNG: NV`, `RNG: CPU`) and its
        // `randn_source` "GPU" are accepted as they are written.
        for (spelling, rng) in [
            ("NV", Rng::Nv),
            ("GPU", Rng::Nv),
            ("CPU", Rng::TorchCpu),
            ("cpu", Rng::TorchCpu),
        ] {
            let got = parse(&format!(r#","rng":"{spelling}""#)).unwrap();
            assert_eq!(got.params().unwrap().rng, Some(rng), "{spelling}");
        }
        assert!(parse(r#","rng":"Nv-Philox""#).is_err());
    }

    fn params() -> GenerationParams {
        GenerationParams {
            prompt: "p".into(),
            steps: Some(4),
            ..Default::default()
        }
    }

    /// What the worker reads leniently (the shared parameters and
    /// [`OperationFields`]) is what each operation's exact type carries.
    #[test]
    fn operation_fields_read_every_field_of_each_operation() {
        let hires = crate::HiresFix {
            scale: Some(1.5),
            ..Default::default()
        };
        let requests = [
            JobRequest::ImageGeneration(TextToImageRequest {
                params: params(),
                hires: Some(hires.clone()),
                resize_mode: Some(ResizeMode::Crop),
            }),
            JobRequest::ImageTransform(ImageToImageRequest {
                params: params(),
                image: "I".into(),
                strength: Some(0.5),
                resize_mode: Some(ResizeMode::Fit),
            }),
            JobRequest::ImageInpaint(InpaintRequest {
                params: params(),
                image: "I".into(),
                mask: Some("M".into()),
                strength: Some(0.9),
                mask_blur: Some(4),
                resize_mode: Some(ResizeMode::Crop),
            }),
        ];
        let expected = [
            OperationFields {
                hires: Some(hires),
                resize_mode: Some(ResizeMode::Crop),
                ..Default::default()
            },
            OperationFields {
                image: Some("I".into()),
                strength: Some(0.5),
                resize_mode: Some(ResizeMode::Fit),
                ..Default::default()
            },
            OperationFields {
                image: Some("I".into()),
                mask: Some("M".into()),
                strength: Some(0.9),
                mask_blur: Some(4),
                resize_mode: Some(ResizeMode::Crop),
                hires: None,
            },
        ];
        for (request, fields) in requests.iter().zip(expected) {
            let mut v = serde_json::to_value(request).unwrap();
            v.as_object_mut().unwrap().remove("operation");
            let read: OperationFields = serde_json::from_value(v.clone()).unwrap();
            assert_eq!(read, fields, "{v}");
            let shared: GenerationParams = serde_json::from_value(v.clone()).unwrap();
            assert_eq!(shared, params());
            // Nothing else: every key is a shared or an operation field.
            let mut known = serde_json::to_value(&read).unwrap();
            known.as_object_mut().unwrap().extend(
                serde_json::to_value(&shared)
                    .unwrap()
                    .as_object()
                    .unwrap()
                    .clone(),
            );
            assert_eq!(known, v);
        }
        // The older names read the same in both.
        let old = r#"{"prompt":"p","init_image":"I","mask_image":"M"}"#;
        let lenient: OperationFields = serde_json::from_str(old).unwrap();
        let exact: InpaintRequest = serde_json::from_str(old).unwrap();
        assert_eq!(lenient.image.as_deref(), Some(exact.image.as_str()));
        assert_eq!(lenient.mask, exact.mask);
        let exact: ImageToImageRequest =
            serde_json::from_str(r#"{"prompt":"p","input_image":"I"}"#).unwrap();
        assert_eq!(exact.image, "I");
    }

    #[test]
    fn image_operations_require_their_image() {
        for op in ["image_transform", "image_inpaint"] {
            let e = serde_json::from_str::<JobRequest>(&format!(
                r#"{{"operation":"{op}","prompt":"p"}}"#
            ))
            .unwrap_err();
            assert!(e.to_string().contains("missing field `image`"), "{e}");
        }
    }
}
