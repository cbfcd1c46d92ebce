//! Command-line flags. Every serving flag has an environment variable too, so
//! a hive or a container can configure the worker without a command line.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

mod aliases;
mod run;

pub use aliases::{parse_bind_addr, SdVersion};
pub use run::main;

#[derive(Debug, Parser)]
#[command(
    name = "sd-worker",
    version,
    about = "Stable Diffusion image-generation worker: job queue, HTTP API, SSE progress"
)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

// Parsed once at start-up: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API (the default when no subcommand is given).
    Serve(ServeArgs),
    /// Time each pipeline stage on a model shape with random weights (nothing downloaded).
    Bench(crate::bench::BenchArgs),
    /// Write a random-weight model of a named shape in the diffusers layout.
    GenerateModel(GenerateArgs),
    /// Write a random-weight ControlNet for a named shape's UNet in the diffusers layout.
    GenerateControlnet(GenerateArgs),
    /// Write a random-weight Depth Anything V2 model (tiny) for the `depth`
    /// preprocessor, in the released checkpoint's layout (`--shape` is ignored).
    GenerateDepthModel(GenerateArgs),
    /// Write a deterministic random textual-inversion embedding (.safetensors).
    GenerateEmbedding(GenerateEmbeddingArgs),
    /// Write a deterministic random LoRA (.safetensors) for a model folder's
    /// weights: every attention / feed-forward linear of the denoiser and
    /// the text encoders.
    GenerateLora(GenerateLoraArgs),
    /// Write a random-weight tiny TAESD (diffusers' `AutoencoderTiny` layout,
    /// the published structure 8 channels wide).
    GenerateTaesd(GenerateTaesdArgs),
    /// Write a tiny deterministic random model upscaler (.safetensors) in a
    /// user file's key layout: ESRGAN (basicsr or original layout) or
    /// Real-ESRGAN compact.
    GenerateUpscaler(GenerateUpscalerArgs),
}

#[derive(Debug, Args)]
pub struct GenerateTaesdArgs {
    /// Latent channels: 4 (SD 1/2, SDXL: taesd, taesdxl) or 16 (SD 3: taesd3).
    #[arg(long, default_value_t = 4)]
    pub latent_channels: usize,
    /// Pixels per latent a side: 8 for every published model; 4 for the
    /// project's tiny test models (`generate-model --shape tiny`).
    #[arg(long, default_value_t = 8)]
    pub scale_factor: usize,
    /// Seed of the weights (same seed, byte-identical files).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output folder.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct GenerateUpscalerArgs {
    /// esrgan-x4, esrgan-x2, esrgan-x1, esrgan-old-x4, esrgan-old-x2,
    /// esrgan-old-plus-x4, compact-x4 or compact-x2.
    #[arg(long, default_value = "esrgan-x4")]
    pub kind: String,
    /// Seed of the weights (same kind and seed, byte-identical file).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output file (.safetensors).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct GenerateLoraArgs {
    /// The model folder (diffusers layout) whose layers the LoRA adapts.
    #[arg(long)]
    pub model_path: PathBuf,
    /// Layout of the tensors: kohya, diffusers or peft.
    #[arg(long, default_value = "kohya")]
    pub format: String,
    /// Rank of each module's `down`/`up` pair.
    #[arg(long, default_value_t = 4)]
    pub rank: usize,
    /// Seed of the values (same seed and model, byte-identical file).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output file (.safetensors); its stem is the name requests and
    /// `<lora:name:weight>` tags use.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct GenerateEmbeddingArgs {
    /// Layout: a1111 (`emb_params`), diffusers (`<stem>`) or sdxl (`clip_l` + `clip_g`).
    #[arg(long, default_value = "a1111")]
    pub format: String,
    /// Vector width(s), comma-separated: `32`, or `32,48` for sdxl (CLIP-L, OpenCLIP-G).
    #[arg(long, value_delimiter = ',', required = true)]
    pub dims: Vec<usize>,
    /// Vectors per set (tokens the embedding takes).
    #[arg(long, default_value_t = 2)]
    pub vectors: usize,
    /// Seed of the values (same seed, byte-identical file).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output file (.safetensors); its stem is the name prompts write.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to bind. Anything but loopback exposes the worker to the network.
    #[arg(long, env = "SD_WORKER_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Port to bind; 0 picks a free one (the bound address is printed).
    #[arg(long, env = "SD_WORKER_PORT", default_value_t = 8600)]
    pub port: u16,
    /// Alias of --host and --port together: HOST:PORT, `[v6]:PORT` (wins
    /// over --host, --port and their variables).
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_bind_addr)]
    pub bind_addr: Option<(String, u16)>,
    /// A local diffusers-layout model folder, or a single-file SD 1.x
    /// checkpoint (`.safetensors`), converted once into the cache.
    #[arg(long, env = "SD_WORKER_MODEL_PATH", conflicts_with = "model")]
    pub model_path: Option<PathBuf>,
    /// Tokenizer folder for a single-file checkpoint (vocab.json + merges.txt);
    /// default: fetched from the hub (openai/clip-vit-large-patch14).
    #[arg(long, env = "SD_WORKER_TOKENIZER", requires = "model_path")]
    pub tokenizer: Option<PathBuf>,
    /// A Hugging Face hub repository id, or an alias such as `sd15` (see docs/MODELS.md).
    #[arg(long, env = "SD_WORKER_MODEL")]
    pub model: Option<String>,
    /// Alias of --model in the style of Candle's examples: v1-5, v1-5-inpaint,
    /// v2-base, v2-1, v2-1-base, sd-turbo, xl, turbo (SDXL-Turbo), sd3-medium,
    /// sd3.5-medium, sd3.5-large or sd3.5-large-turbo.
    #[arg(long, value_enum, conflicts_with_all = ["model", "model_path"])]
    pub sd_version: Option<SdVersion>,
    /// Hub revision (branch, tag or commit) for --model.
    #[arg(long, env = "SD_WORKER_REVISION", requires = "model")]
    pub revision: Option<String>,
    /// cpu, cuda, cuda:N, metal, metal:N or auto.
    #[arg(long, env = "SD_WORKER_DEVICE", default_value = "auto")]
    pub device: String,
    /// Alias of `--device cuda:N` (wins over --device and SD_WORKER_DEVICE).
    #[arg(long, value_name = "N")]
    pub cuda_device: Option<usize>,
    /// Insist on flash attention: an error at start when the binary was
    /// built without the `flash-attn` feature or the device is not CUDA. (A
    /// flash-attn build uses it on CUDA whether or not this flag is given.)
    #[arg(long)]
    pub use_flash_attn: bool,
    /// Weights and activations precision; default f32 on CPU, f16 on GPUs.
    /// `q8`: the UNet with int8 weights and activations (CPU only; about a
    /// quarter of its f32 memory, faster where the CPU has AVX-512 VNNI).
    #[arg(long, env = "SD_WORKER_DTYPE", value_enum)]
    pub dtype: Option<DTypeArg>,
    /// SD 3: leave the T5 text encoder out (neither downloaded nor loaded;
    /// saves ~9.5 GB in f16 at some cost in prompt following).
    #[arg(long, env = "SD_WORKER_NO_T5", value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::SetTrue)]
    pub no_t5: bool,
    /// A ControlNet to offer, loaded at start: a diffusers ControlNet folder,
    /// a single-file `.safetensors` (converted once into the cache) or a hub
    /// repository. Repeatable (or comma-separated in the variable); requests
    /// name it by its folder name, file stem or repository name.
    #[arg(
        long = "controlnet",
        env = "SD_WORKER_CONTROLNET",
        value_delimiter = ','
    )]
    pub controlnets: Vec<String>,
    /// A folder of ControlNets (diffusers folders and single files), listed
    /// at start, each loaded on first use.
    #[arg(long, env = "SD_WORKER_CONTROLNET_DIR")]
    pub controlnet_dir: Option<PathBuf>,
    /// The most memory the --controlnet-dir ControlNets kept loaded take
    /// together, in MiB (the least recently used go first; the one in use
    /// always stays).
    #[arg(long, env = "SD_WORKER_CONTROLNET_CACHE_MB", default_value_t = 4096)]
    pub controlnet_cache_mb: u64,
    /// Depth Anything V2 weights for the `depth` preprocessor, loaded on its
    /// first use: a `.safetensors` file or folder (the original layout or
    /// transformers' `-hf` one), or a hub repository `owner/name[@revision]`.
    #[arg(
        long,
        env = "SD_WORKER_DEPTH_MODEL",
        default_value = "jeroenvlek/depth-anything-v2-safetensors"
    )]
    pub depth_model: String,
    /// A folder of model upscalers (ESRGAN, Real-ESRGAN and its compact
    /// models; `.safetensors`, or `.pth` read without running its code) for
    /// `image_upscale` and `hires.upscaler`; read on each use, so new files
    /// need no restart. `lanczos` and `nearest` are always there.
    #[arg(long, env = "SD_WORKER_UPSCALER_DIR")]
    pub upscaler_dir: Option<PathBuf>,
    /// TAESD, the tiny autoencoder, for full-size previews and `vae: tiny`
    /// decodes: a diffusers `AutoencoderTiny` folder, a hub repository
    /// `owner/name`, or `auto` (madebyollin's `taesd` for SD 1.x/2.x,
    /// `taesdxl` for SDXL, `taesd3` for SD 3, by the model's family).
    #[arg(long, env = "SD_WORKER_TAESD")]
    pub taesd: Option<String>,
    /// A folder of LoRAs (`.safetensors`, searched recursively) that requests
    /// name in `loras` or by `<lora:name:weight>` tags; read on each use, so
    /// new files need no restart.
    #[arg(long, env = "SD_WORKER_LORA_DIR")]
    pub lora_dir: Option<PathBuf>,
    /// A folder of textual-inversion embeddings (`.safetensors`, searched
    /// recursively), used by writing their name in a prompt; read on each use.
    #[arg(long, env = "SD_WORKER_EMBEDDINGS_DIR")]
    pub embeddings_dir: Option<PathBuf>,
    /// Identifier reported to the hive and in /v1/info.
    #[arg(long, env = "SD_WORKER_ID")]
    pub worker_id: Option<String>,
    /// Jobs that may wait behind the running one; more get 429.
    #[arg(long, env = "SD_WORKER_QUEUE_SIZE", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub queue_size: u32,
    /// How long a finished job's result and events are kept (e.g. 600s, 10m, 1h).
    #[arg(long, env = "SD_WORKER_JOB_TTL", default_value = "10m", value_parser = humantime::parse_duration)]
    pub job_ttl: Duration,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "SD_WORKER_MAX_BODY_BYTES", default_value_t = 32 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Largest output (width x height) a job may ask for; default 4x the model's native area.
    #[arg(long, env = "SD_WORKER_MAX_PIXELS")]
    pub max_pixels: Option<u64>,
    /// Most images one job may ask for (1-8; default 8). Memory grows with it.
    #[arg(long, env = "SD_WORKER_MAX_IMAGES", value_parser = clap::value_parser!(u32).range(1..=8))]
    pub max_images: Option<u32>,
    /// Largest input image accepted by image to image and inpainting, in pixels.
    #[arg(long, env = "SD_WORKER_MAX_INPUT_PIXELS", default_value_t = 4096 * 4096)]
    pub max_input_pixels: u64,
    /// Browser origin allowed to call the API (repeatable; `*` for any).
    #[arg(
        long = "cors-origin",
        env = "SD_WORKER_CORS_ORIGINS",
        value_delimiter = ','
    )]
    pub cors_origins: Vec<String>,
    /// How long a running job may take to finish when the worker is asked to stop.
    /// Connections still open after it get a few more seconds, then are closed.
    #[arg(long, env = "SD_WORKER_SHUTDOWN_GRACE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
    /// How long a client may take to send a request's headers (HTTP/1), and how
    /// long an idle keep-alive connection stays open; then it is closed.
    #[arg(long, env = "SD_WORKER_HEADER_READ_TIMEOUT", default_value = "30s", value_parser = positive_duration)]
    pub header_read_timeout: Duration,
    /// Most submissions whose input images are decoded at the same time; one
    /// more gets 429 with Retry-After. Default: the number of CPU cores.
    #[arg(long, env = "SD_WORKER_MAX_CONCURRENT_DECODES", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_concurrent_decodes: Option<u32>,
    /// Require `Authorization: Bearer <token>` on every route but /health and /ready.
    #[arg(long, env = "SD_WORKER_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// Allow binding a non-loopback address without --api-token (anyone who can reach it can use it).
    /// The variable takes true/false, 1/0, yes/no or on/off, as the other switches do.
    #[arg(long, env = "SD_WORKER_ALLOW_UNAUTHENTICATED", value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::SetTrue)]
    pub allow_unauthenticated: bool,
    /// Hive (orchestrator) base URL to register with by heartbeat.
    /// `--callback-url` is an alias: the hive is the one URL the worker calls.
    #[arg(long, visible_aliases = ["queen-url", "callback-url"], env = "SD_WORKER_HIVE_URL")]
    pub hive_url: Option<String>,
    /// URL at which the hive and clients reach this worker (sent in heartbeats), e.g. http://gpu-3:8600.
    #[arg(long, env = "SD_WORKER_ADVERTISE_URL")]
    pub advertise_url: Option<String>,
    /// Time between heartbeats to the hive.
    #[arg(long, env = "SD_WORKER_HEARTBEAT_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub heartbeat_interval: Duration,
    /// Share one job queue with other workers through NATS JetStream
    /// (`nats://HOST:PORT`, `tls://HOST:PORT` for TLS; several servers comma
    /// separated). Every worker then takes jobs for its model from the shared
    /// queue, and answers for every job. Without it the worker keeps its own
    /// in-memory queue. See docs/DEPLOY.md.
    #[arg(long, env = "SD_WORKER_QUEUE")]
    pub queue: Option<String>,
    /// NATS mode: how long a job taken from the queue may go without a sign of
    /// life from its worker (it sends one every third of this while it runs)
    /// before JetStream hands it to another worker.
    #[arg(long, env = "SD_WORKER_QUEUE_ACK_WAIT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub queue_ack_wait: Duration,
    /// NATS mode: deliveries after which a job whose workers keep dying
    /// (a poison job) ends `failed` instead of running again.
    #[arg(long, env = "SD_WORKER_QUEUE_MAX_DELIVER", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub queue_max_deliver: u32,
    /// NATS mode: a credentials file (`.creds`: JWT and NKey seed) to connect with.
    #[arg(long, env = "SD_WORKER_QUEUE_CREDS")]
    pub queue_creds: Option<PathBuf>,
    /// NATS mode: a PEM file of CA certificates to trust for the server's TLS
    /// certificate (implies TLS).
    #[arg(long, env = "SD_WORKER_QUEUE_TLS_CA")]
    pub queue_tls_ca: Option<PathBuf>,
    /// Fail a job that generates for longer than this (e.g. 10m); no limit by default.
    #[arg(long, env = "SD_WORKER_JOB_TIMEOUT", value_parser = humantime::parse_duration)]
    pub job_timeout: Option<Duration>,
    /// Serve the studio (the built web app) from this folder at `/`. Default:
    /// the `app/dist` of the source tree the binary was built from, when built.
    #[arg(long, env = "SD_WORKER_STUDIO_DIR")]
    pub studio_dir: Option<PathBuf>,
    /// Serve the API only, not the studio (wins over --studio-dir).
    #[arg(long, env = "SD_WORKER_NO_STUDIO", value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::SetTrue)]
    pub no_studio: bool,
    /// Log format on stderr.
    #[arg(long, env = "SD_WORKER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
}

/// A duration with units (`30s`, `1m`) longer than zero.
fn positive_duration(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => Err("must be longer than zero".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DTypeArg {
    F32,
    F16,
    Bf16,
    /// The UNet's linear layers and convolutions with int8 weights (one scale
    /// per output channel, quantised at load) and int8 activations (one
    /// scale per token or pixel), f32 elsewhere; CPU only.
    Q8,
}

impl DTypeArg {
    /// The dtype tensors are computed in (`q8`: f32 around the int8 layers).
    pub fn to_candle(self) -> candle_core::DType {
        match self {
            DTypeArg::F32 | DTypeArg::Q8 => candle_core::DType::F32,
            DTypeArg::F16 => candle_core::DType::F16,
            DTypeArg::Bf16 => candle_core::DType::BF16,
        }
    }

    /// The weight format of the denoiser.
    pub fn quant(self) -> crate::model::quant::WeightQuant {
        match self {
            DTypeArg::Q8 => crate::model::quant::WeightQuant::Q8,
            _ => crate::model::quant::WeightQuant::Dense,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Shape name: tiny, tiny-inpaint, tiny-sd2, tiny-sdxl, tiny-sd3, sd15, sd15-inpaint, sdxl or sd3-medium.
    #[arg(long, default_value = "tiny")]
    pub shape: String,
    /// Output folder.
    #[arg(long)]
    pub out: PathBuf,
    /// Seed of the weights (same seed, byte-identical files).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}
