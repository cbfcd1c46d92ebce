//! Start-up: a model that cannot be served stops the worker with a clear
//! message and a non-zero exit, instead of a worker that never gets ready.

use std::process::Command;

use sd_worker::model::generate::{write_model, WeightInit};
use sd_worker::model::shapes::ModelShape;

fn run_worker(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sd-worker"))
        .args(["--host", "127.0.0.1", "--port", "0"])
        .args(args)
        .env("RUST_LOG", "error")
        .output()
        .expect("run sd-worker");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_missing_model_folder_exits_with_a_clear_error() {
    let (code, stderr) = run_worker(&["--model-path", "/nonexistent/model"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("/nonexistent/model"), "{stderr}");
}

#[test]
fn an_unsupported_unet_config_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), &ModelShape::tiny(), WeightInit::Seeded(3)).unwrap();
    let cfg_path = dir.path().join("unet/config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["addition_embed_type"] = "text_time".into();
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let (code, stderr) = run_worker(&["--model-path", dir.path().to_str().unwrap()]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("addition_embed_type"), "{stderr}");
}

#[test]
fn a_folder_without_weights_names_the_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), &ModelShape::tiny(), WeightInit::Seeded(3)).unwrap();
    std::fs::remove_file(dir.path().join("vae/diffusion_pytorch_model.safetensors")).unwrap();
    let (code, stderr) = run_worker(&["--model-path", dir.path().to_str().unwrap()]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("vae"), "{stderr}");
}

#[test]
fn bad_flags_are_rejected_before_anything_starts() {
    let (code, stderr) = run_worker(&["--queue-size", "0"]);
    assert_eq!(code, Some(2), "{stderr}");
    let (code, stderr) = run_worker(&["--device", "tpu"]);
    assert_ne!(code, Some(0), "{stderr}");
    assert!(stderr.contains("tpu"), "{stderr}");
    // Candle's CPU kernels have no bf16 matrix product: refused at start,
    // not as a failure of every job.
    let (code, stderr) = run_worker(&["--device", "cpu", "--dtype", "bf16"]);
    assert_ne!(code, Some(0), "{stderr}");
    assert!(stderr.contains("bf16 needs a GPU"), "{stderr}");
}

/// `SD_WORKER_ALLOW_UNAUTHENTICATED` takes the words every switch variable
/// takes (docs/DEPLOY.md says so); anything else stops the worker at start.
#[test]
fn the_allow_unauthenticated_variable_takes_the_usual_boolean_words() {
    let run = |value: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_sd-worker"))
            .args([
                "--host",
                "0.0.0.0",
                "--port",
                "0",
                "--model-path",
                "/nonexistent/model",
            ])
            .env("SD_WORKER_ALLOW_UNAUTHENTICATED", value)
            .env_remove("SD_WORKER_API_TOKEN")
            .env("RUST_LOG", "error")
            .output()
            .expect("run sd-worker");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for yes in ["1", "true", "yes", "on"] {
        let (code, stdout, stderr) = run(yes);
        // Past the exposure rule it listens; the missing model then stops it.
        assert!(
            stdout.starts_with("sd-worker listening on http://0.0.0.0:"),
            "{yes}: {stdout} {stderr}"
        );
        assert_eq!(code, Some(2), "{yes}: {stderr}");
    }
    for no in ["0", "false", "no", "off"] {
        let (code, stdout, stderr) = run(no);
        assert!(stdout.is_empty(), "{no}: {stdout}");
        assert_ne!(code, Some(0), "{no}: {stderr}");
        assert!(stderr.contains("--allow-unauthenticated"), "{no}: {stderr}");
    }
    let (code, stdout, stderr) = run("maybe");
    assert!(stdout.is_empty(), "{stdout}");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("maybe"), "{stderr}");
}

/// Logs redirected to a file or journald carry no colour escape codes:
/// colour is for a person at a terminal only.
#[test]
fn logs_to_a_pipe_have_no_colour_codes() {
    let out = Command::new(env!("CARGO_BIN_EXE_sd-worker"))
        .args(["--host", "127.0.0.1", "--port", "0"])
        .args(["--model-path", "/nonexistent/model"])
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .output()
        .expect("run sd-worker");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("INFO") || stderr.contains("ERROR"),
        "{stderr}"
    );
    assert!(!stderr.contains("\x1b["), "{stderr:?}");
}

/// A browser request from an origin the worker does not allow (the page
/// sees only "Failed to fetch") is logged at debug level with the origin
/// and the flag that allows it; an allowed origin's is not.
#[test]
fn a_page_from_a_foreign_origin_is_logged_with_its_origin() {
    use std::io::{BufRead, BufReader, Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny");
    write_model(&model, &ModelShape::tiny(), WeightInit::Seeded(1)).unwrap();
    let log_path = dir.path().join("worker.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sd-worker"))
        .args(["--host", "127.0.0.1", "--port", "0"])
        .args(["--model-path", model.to_str().unwrap()])
        .args(["--cors-origin", "https://app.example"])
        .env("RUST_LOG", "sd_worker=debug")
        .stdout(std::process::Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("sd-worker listening on http://")
        .unwrap_or_else(|| panic!("{line}"))
        .to_string();
    let preflight = |origin: &str| {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            s,
            "OPTIONS /v1/jobs HTTP/1.1\r\nHost: {addr}\r\nOrigin: {origin}\r\n\
             Access-Control-Request-Method: POST\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer
    };
    let refused = preflight("https://elsewhere.example");
    assert!(
        !refused.contains("access-control-allow-origin"),
        "{refused}"
    );
    let allowed = preflight("https://app.example");
    assert!(allowed.contains("access-control-allow-origin"), "{allowed}");
    // The log line is written before the answer goes out.
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log_path).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("does not allow"))
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(
        lines[0].contains("https://elsewhere.example")
            && lines[0].contains("--cors-origin")
            && lines[0].contains("preflight=true"),
        "{}",
        lines[0]
    );
}
