//! `--model REPO` through hf-hub's standard cache, offline: a model placed in a
//! Hugging Face cache layout (refs/main -> snapshots/<commit>/...) is loaded by
//! repository id with HF_HUB_OFFLINE=1, exactly as a previously downloaded one.

mod common;

use common::Worker;
use sd_worker::model::generate::{write_model, WeightInit};
use sd_worker::model::shapes::ModelShape;
use serde_json::json;

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

fn hf_home_with(repo: &str) -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    let repo_dir = home
        .path()
        .join("hub")
        .join(format!("models--{}", repo.replace('/', "--")));
    std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
    std::fs::write(repo_dir.join("refs/main"), COMMIT).unwrap();
    write_model(
        &repo_dir.join("snapshots").join(COMMIT),
        &ModelShape::tiny(),
        WeightInit::Seeded(5),
    )
    .unwrap();
    home
}

#[tokio::test]
async fn a_cached_hub_model_loads_offline_by_repository_id() {
    let home = hf_home_with("test-org/tiny-sd");
    let env = [
        ("HF_HOME", home.path().to_str().unwrap()),
        ("HF_HUB_OFFLINE", "1"),
    ];
    let w = Worker::spawn(&["--model", "test-org/tiny-sd"], &env);
    w.wait_ready().await;
    let (_, info) = w.get_json("/v1/info").await;
    assert_eq!(info["model"]["id"], "test-org/tiny-sd");
    assert_eq!(info["model"]["source"], "hf://test-org/tiny-sd@main");
    let job = w
        .submit(json!({"operation": "image_generation", "prompt": "from the cache", "steps": 2, "model": "test-org/tiny-sd"}))
        .await;
    let msgs = w.stream_all(job["job_id"].as_str().unwrap(), None).await;
    assert_eq!(msgs[msgs.len() - 2].kind(), "complete");
}

#[test]
fn a_repository_missing_from_the_offline_cache_is_a_clear_error() {
    let home = hf_home_with("test-org/present");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sd-worker"))
        .args(["--port", "0", "--model", "test-org/absent"])
        .env("HF_HOME", home.path())
        .env("HF_HUB_OFFLINE", "1")
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("test-org/absent"), "{stderr}");
}
