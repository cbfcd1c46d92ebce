//! sd-worker: a Stable Diffusion image-generation worker on Candle.
//!
//! The data path, one module each:
//! request -> [`validation`] -> [`engine`] (queue, registry, generation thread)
//! -> [`pipeline`] (with [`model`] and [`scheduler`]) -> job events -> [`http`] stream.

pub mod allocator;
pub mod bench;
pub mod catalog;
pub mod cli;
pub mod controlnet;
pub mod device;
pub mod engine;
pub mod hive;
pub mod http;
pub mod images;
pub use sd_worker_kernels as kernels;
pub mod lora;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod preprocess;
pub mod profile;
pub mod scheduler;
pub mod server;
pub mod upscale;
pub mod validation;
