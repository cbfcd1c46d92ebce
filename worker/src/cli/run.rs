//! The worker's `main`, shared by every binary (`sd-worker` and the
//! backend-named `sd-worker-cpu`, `sd-worker-cuda`, `sd-worker-metal`).

use super::{Cli, Command, LogFormat, ServeArgs};
use crate::model::{controlnet, generate, shapes};
use clap::Parser;

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a person at a terminal, not in a log file or a pipe.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn serve(mut args: ServeArgs) -> anyhow::Result<()> {
    args.apply_aliases()?;
    init_logging(args.log_format);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(crate::server::serve(args))
}

fn generate_model(args: &crate::cli::GenerateArgs) -> anyhow::Result<()> {
    let shape = shapes::ModelShape::by_name(&args.shape).ok_or_else(|| {
        anyhow::anyhow!(
            "unknown shape `{}`; one of: {}",
            args.shape,
            shapes::SHAPE_NAMES.join(", ")
        )
    })?;
    generate::write_model(&args.out, &shape, generate::WeightInit::Seeded(args.seed))?;
    println!("wrote the `{}` shape to {}", args.shape, args.out.display());
    Ok(())
}

fn generate_controlnet(args: &crate::cli::GenerateArgs) -> anyhow::Result<()> {
    let shape = shapes::ModelShape::by_name(&args.shape)
        .ok_or_else(|| anyhow::anyhow!("unknown shape `{}`", args.shape))?;
    let cfg = controlnet::ControlNetConfig::for_shape(&shape)?;
    let init = generate::WeightInit::Seeded(args.seed);
    controlnet::generate::write_controlnet(&args.out, &cfg, init)?;
    println!(
        "wrote a ControlNet for the `{}` shape to {}",
        args.shape,
        args.out.display()
    );
    Ok(())
}

fn generate_embedding(args: &crate::cli::GenerateEmbeddingArgs) -> anyhow::Result<()> {
    use crate::model::embeddings::{write_embedding, EmbeddingFormat};
    let format = EmbeddingFormat::parse(&args.format)?;
    write_embedding(&args.out, format, &args.dims, args.vectors, args.seed)?;
    println!(
        "wrote a {} embedding to {}",
        args.format,
        args.out.display()
    );
    Ok(())
}

fn generate_lora(args: &crate::cli::GenerateLoraArgs) -> anyhow::Result<()> {
    use crate::lora::generate::{write_lora, LoraGenOptions};
    use crate::lora::LoraFormat;
    use crate::model::{LoadOptions, LoadedModel, ModelSpec};
    let format = match args.format.as_str() {
        "kohya" => LoraFormat::Kohya,
        "diffusers" => LoraFormat::Diffusers,
        "peft" => LoraFormat::Peft,
        other => anyhow::bail!("unknown LoRA format `{other}`; one of: kohya, diffusers, peft"),
    };
    anyhow::ensure!(args.rank > 0, "--rank must be at least 1");
    let model = LoadedModel::load(
        &ModelSpec::Local(args.model_path.clone()),
        &candle_core::Device::Cpu,
        LoadOptions {
            dtype: candle_core::DType::F32,
            skip_t5: false,
            quant: Default::default(),
        },
    )?;
    let layers = model.unet_config().map(|c| c.layers_per_block);
    let modules = write_lora(
        &args.out,
        format,
        model.weight_tables(),
        layers,
        args.rank,
        args.seed,
        &LoraGenOptions::default(),
    )?;
    println!(
        "wrote a {} LoRA of {modules} modules to {}",
        args.format,
        args.out.display()
    );
    Ok(())
}

/// Parses the command line and runs the subcommand (default: serve); what
/// every binary's `main` returns. Errors are printed as `error: ...` on
/// stderr with exit code 1.
pub fn main() -> std::process::ExitCode {
    crate::device::pin_cpu_threads();
    crate::allocator::keep_freed_memory();
    let cli = Cli::parse();
    let result = run(cli);
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Some(Command::Bench(args)) => {
            init_logging(LogFormat::Human);
            crate::bench::run(&args)
        }
        Some(Command::GenerateModel(args)) => generate_model(&args),
        Some(Command::GenerateControlnet(args)) => generate_controlnet(&args),
        Some(Command::GenerateDepthModel(args)) => {
            crate::preprocess::depth_tiny::write_tiny_depth_model(&args.out, args.seed).map(|()| {
                println!(
                    "wrote a tiny Depth Anything V2 model to {}",
                    args.out.display()
                )
            })
        }
        Some(Command::GenerateEmbedding(args)) => generate_embedding(&args),
        Some(Command::GenerateLora(args)) => generate_lora(&args),
        Some(Command::GenerateTaesd(args)) => crate::model::taesd::generate_tiny_scaled(
            &args.out,
            args.latent_channels,
            args.scale_factor,
            args.seed,
        )
        .map(|()| {
            println!(
                "wrote a tiny {}-channel TAESD to {}",
                args.latent_channels,
                args.out.display()
            )
        }),
        Some(Command::GenerateUpscaler(args)) => {
            crate::upscale::generate(&args.kind, args.seed, &args.out).map(|()| {
                println!(
                    "wrote a tiny {} upscaler to {}",
                    args.kind,
                    args.out.display()
                )
            })
        }
        Some(Command::Serve(args)) => serve(args),
        None => serve(cli.serve),
    }
}
