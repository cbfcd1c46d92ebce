//! The body of `POST /v1/jobs`: one request per operation, tagged by `operation`.

use serde::{Deserialize, Serialize};

/// Largest accepted seed: JavaScript's `Number.MAX_SAFE_INTEGER`, so a seed
/// survives a round trip through a browser's `number` unchanged.
pub const MAX_SEED: u64 = (1 << 53) - 1;

/// A job request, tagged by `operation`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "operation", rename_all = "snake_case")]
pub enum JobRequest {
    /// Text to image.
    ImageGeneration(TextToImageRequest),
}

impl JobRequest {
    pub fn operation(&self) -> Operation {
        match self {
            JobRequest::ImageGeneration(_) => Operation::ImageGeneration,
        }
    }

    /// Parameters shared by every operation.
    pub fn params(&self) -> &GenerationParams {
        match self {
            JobRequest::ImageGeneration(r) => &r.params,
        }
    }
}

/// The operations this version of the contract knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    ImageGeneration,
}

impl Operation {
    pub const ALL: [Operation; 1] = [Operation::ImageGeneration];

    pub fn as_str(self) -> &'static str {
        match self {
            Operation::ImageGeneration => "image_generation",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextToImageRequest {
    #[serde(flatten)]
    pub params: GenerationParams,
}

/// Parameters common to every operation. Absent fields take the loaded model's
/// defaults (see `GET /v1/info`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct GenerationParams {
    pub prompt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negative_prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guidance_scale: Option<f64>,
    /// 0..=MAX_SEED; random when absent. Image `i` of a job uses `seed + i`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// Scheduler name, one of `GET /v1/info`'s `schedulers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_images: Option<u32>,
    /// Send a `preview` event every N steps (0 or absent: no previews).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_every: Option<u32>,
    /// Output format of the final images (PNG by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_format: Option<ImageFormat>,
    /// Sent by the hive: when present it must name the loaded model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Sent by the hive for its bookkeeping; accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hive_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
}

/// Encoding of an image on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
        assert_eq!(r.params().prompt, "a cat");
        assert_eq!(r.params().seed, Some(42));
        assert_eq!(r.params().model.as_deref(), Some("m"));
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
        });
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["operation"], "image_generation");
        assert_eq!(v["steps"], 3);
        assert_eq!(v["output_format"], "jpeg");
        assert!(v.get("seed").is_none());
        assert_eq!(serde_json::from_value::<JobRequest>(v).unwrap(), r);
    }
}
