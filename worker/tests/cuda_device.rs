//! `--device cuda` on a binary that cannot give it: the worker stops at start
//! with a clear message and a non-zero exit, never falls back to the CPU.
//!
//! Runs the binary named by `SD_WORKER_BIN` when set (e.g. a copy of a CUDA
//! build on a machine without a GPU), else this package's `sd-worker`.

use std::process::Command;

fn worker_bin() -> String {
    std::env::var("SD_WORKER_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_sd-worker").into())
}

fn run(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(worker_bin())
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--model-path",
            "/nonexistent/model",
        ])
        .args(args)
        .env("RUST_LOG", "error")
        .env_remove("SD_WORKER_DEVICE")
        .output()
        .expect("run sd-worker");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A CPU-only build names what is missing; a CUDA build on a machine
/// without a GPU says so: exit 1, before the model (a missing folder, which
/// would exit 2) is read. A CUDA build without the driver library does not
/// load; its wrapper (dist/cuda/sd-worker) names the library, exit 127. Skipped where
/// `nvidia-smi` lists a GPU.
#[test]
fn device_cuda_without_a_usable_gpu_exits_with_a_clear_error() {
    let gpu = Command::new("nvidia-smi")
        .arg("-L")
        .output()
        .is_ok_and(|o| o.status.success() && !o.stdout.is_empty());
    if gpu {
        eprintln!("skipped: nvidia-smi lists a GPU");
        return;
    }
    for args in [&["--device", "cuda"][..], &["--cuda-device", "1"][..]] {
        let (code, stderr) = run(args);
        // A CUDA build links the driver by name: without it, the binary
        // cannot load, and dist/cuda's wrapper says so (exit 127).
        if code == Some(127) && stderr.contains("libcuda.so.1 not found") {
            continue;
        }
        assert_eq!(code, Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains("--device cuda"), "{args:?}: {stderr}");
        assert!(
            stderr.contains("built without CUDA support") || stderr.contains("no usable CUDA GPU"),
            "{args:?}: {stderr}"
        );
    }
}
