//! `--device` and `--dtype` resolution.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};

use crate::model::quant::WeightQuant;

/// How long Candle's element-wise worker threads spin before they sleep
/// between operations (its default is 25,000 spins).
pub const BARRIER_POOL_SPIN_LIMIT: u32 = 2_000;

/// Fixes the CPU thread count for the life of the process (Candle's own
/// default, or `RAYON_NUM_THREADS` when set). Candle asks for it on every
/// matrix product, and without the variable that re-reads the CPU topology
/// from `/proc` each time, which shows in profiles of small models.
///
/// Also shortens the spinning of Candle's element-wise thread pool to
/// [`BARRIER_POOL_SPIN_LIMIT`] (unless `CANDLE_BARRIER_POOL_SPIN_LIMIT` is
/// set). Its threads spin-wait between operations beside the matrix
/// products' rayon threads; once a batch is large enough for element-wise
/// operations to go parallel, and anything else wants a core (the HTTP side
/// encoding images, a browser, another process), the spinning threads take
/// the cores from the ones with work, and the time per image grew with the
/// batch. Measured on 2 cores, bundled model, 4 images, 20 steps: 1.37x faster
/// beside a busy process, 1.09x idle (`sd-worker bench --num-images 1,2,4,8`
/// prints the scaling). Call at the start of `main`, before any thread exists.
pub fn pin_cpu_threads() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let threads = candle_core::utils::get_num_threads();
        std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    }
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        std::env::set_var(
            "CANDLE_BARRIER_POOL_SPIN_LIMIT",
            BARRIER_POOL_SPIN_LIMIT.to_string(),
        );
    }
}

/// [`parse_device`] for a worker asked for `dtype`: `auto` with `q8`, which
/// only the CPU runs, is the CPU.
pub fn parse_device_for(spec: &str, dtype: Option<crate::cli::DTypeArg>) -> Result<Device> {
    match (spec, dtype.map(|d| d.quant())) {
        ("auto", Some(WeightQuant::Q8)) => Ok(Device::Cpu),
        _ => parse_device(spec),
    }
}

/// Parses `cpu`, `cuda[:N]`, `metal[:N]` or `auto` (first GPU the build supports, else CPU).
pub fn parse_device(spec: &str) -> Result<Device> {
    let (kind, index) = match spec.split_once(':') {
        Some((k, i)) => (
            k,
            i.parse::<usize>()
                .with_context(|| format!("bad device index in `{spec}`"))?,
        ),
        None => (spec, 0),
    };
    match kind {
        "cpu" => Ok(Device::Cpu),
        "cuda" if !cfg!(feature = "cuda") => bail!(
            "--device {spec}: this sd-worker was built without CUDA support; run a CUDA \
             build (sd-worker-cuda, made by scripts/build-cuda.sh) or use --device cpu"
        ),
        // Candle's driver errors carry a backtrace: the first line says it.
        "cuda" => Device::new_cuda(index).map_err(|e| {
            anyhow::anyhow!(
                "--device {spec}: no usable CUDA GPU (is the NVIDIA driver loaded and \
                 does `nvidia-smi` list GPU {index}?): {}",
                e.to_string().lines().next().unwrap_or_default()
            )
        }),
        "metal" if !cfg!(feature = "metal") => bail!(
            "--device {spec}: this sd-worker was built without Metal support; run a Metal \
             build (cargo build --release --features metal, macOS) or use --device cpu"
        ),
        "metal" => Device::new_metal(index).map_err(|e| {
            anyhow::anyhow!(
                "--device {spec}: no usable Metal GPU: {}",
                e.to_string().lines().next().unwrap_or_default()
            )
        }),
        "auto" => {
            if candle_core::utils::cuda_is_available() {
                if let Ok(d) = Device::new_cuda(0) {
                    return Ok(d);
                }
            }
            if candle_core::utils::metal_is_available() {
                if let Ok(d) = Device::new_metal(0) {
                    return Ok(d);
                }
            }
            Ok(Device::Cpu)
        }
        other => bail!("unknown device `{other}`; use cpu, cuda[:N], metal[:N] or auto"),
    }
}

/// f32 on CPU (half-precision CPU kernels are slow and lossy), f16 on GPUs.
pub fn default_dtype(device: &Device) -> DType {
    if device.is_cpu() {
        DType::F32
    } else {
        DType::F16
    }
}

/// The dtype to run in: `requested`, or the device's default. bf16 on the
/// CPU is refused up front: Candle's CPU matrix products have no bf16, so
/// every job would fail.
pub fn resolve_dtype(device: &Device, requested: Option<DType>) -> Result<DType> {
    let dtype = requested.unwrap_or_else(|| default_dtype(device));
    if dtype == DType::BF16 && device.is_cpu() {
        bail!(
            "--dtype bf16 needs a GPU: Candle's CPU matrix products have no bf16 (use f32, or f16)"
        );
    }
    Ok(dtype)
}

/// [`resolve_dtype`] for a `--dtype` argument, with the denoiser's weight
/// format: `q8` computes in f32 around int8 layers, on the CPU only.
pub fn resolve_precision(
    device: &Device,
    requested: Option<crate::cli::DTypeArg>,
) -> Result<(DType, WeightQuant)> {
    let quant = requested.map_or(WeightQuant::Dense, |d| d.quant());
    if quant == WeightQuant::Q8 && !device.is_cpu() {
        bail!("--dtype q8 runs on the CPU only (its int8 kernels are CPU kernels): add --device cpu, or use f16 or bf16 on the GPU");
    }
    Ok((
        resolve_dtype(device, requested.map(|d| d.to_candle()))?,
        quant,
    ))
}

/// The precision's name in logs, metrics and `/v1/info`: the dtype, or `q8`.
pub fn precision_name(dtype: DType, quant: WeightQuant) -> &'static str {
    match quant {
        WeightQuant::Q8 => "q8",
        WeightQuant::Dense => dtype_name(dtype),
    }
}

pub fn device_name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

pub fn dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        _ => "f32",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_runs_on_the_cpu_and_auto_picks_it() {
        use crate::cli::DTypeArg;
        let dev = parse_device_for("auto", Some(DTypeArg::Q8)).unwrap();
        assert!(dev.is_cpu());
        let (dtype, quant) = resolve_precision(&dev, Some(DTypeArg::Q8)).unwrap();
        assert_eq!((dtype, quant), (DType::F32, WeightQuant::Q8));
        assert_eq!(precision_name(dtype, quant), "q8");
        assert_eq!(precision_name(DType::F16, WeightQuant::Dense), "f16");
    }

    #[test]
    fn bf16_is_refused_on_the_cpu_only_when_asked_for() {
        assert_eq!(resolve_dtype(&Device::Cpu, None).unwrap(), DType::F32);
        assert_eq!(
            resolve_dtype(&Device::Cpu, Some(DType::F16)).unwrap(),
            DType::F16
        );
        let err = resolve_dtype(&Device::Cpu, Some(DType::BF16)).unwrap_err();
        assert!(err.to_string().contains("bf16"), "{err}");
    }

    #[test]
    fn a_gpu_device_the_build_lacks_is_named_in_the_error() {
        if !cfg!(feature = "cuda") {
            let err = parse_device("cuda:1").unwrap_err().to_string();
            assert!(err.contains("built without CUDA support"), "{err}");
            assert!(err.contains("sd-worker-cuda"), "{err}");
        }
        if !cfg!(feature = "metal") {
            let err = parse_device("metal").unwrap_err().to_string();
            assert!(err.contains("built without Metal support"), "{err}");
        }
        assert!(parse_device("cuda:x").is_err());
    }
}
