//! A model folder's `sd-worker.json` declares example prompts; `/v1/info`
//! lists them under `model.example_prompts` (absent when there are none).

mod common;

use common::{tiny_model, Worker};
use serde_json::json;

#[tokio::test]
async fn info_lists_the_model_folders_example_prompts() {
    // The tiny model's files, and an sd-worker.json beside them.
    let dir =
        std::env::temp_dir().join(format!("sd-worker-example-prompts-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(tiny_model()).unwrap() {
        let entry = entry.unwrap();
        std::os::unix::fs::symlink(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    std::fs::write(
        dir.join("sd-worker.json"),
        r#"{ "example_prompts": ["a red circle on a blue background", "  ", "a green star"] }"#,
    )
    .unwrap();

    let w = Worker::start_with_model(dir.to_str().unwrap(), &[]).await;
    let (status, info) = w.get_json("/v1/info").await;
    assert_eq!(status, 200);
    assert_eq!(
        info["model"]["example_prompts"],
        json!(["a red circle on a blue background", "a green star"])
    );
    drop(w);

    // Without the file: no field.
    let plain = Worker::start(&[]).await;
    let (_, info) = plain.get_json("/v1/info").await;
    assert!(info["model"].get("example_prompts").is_none(), "{info}");
    let _ = std::fs::remove_dir_all(&dir);

    let api =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/API.md")).unwrap();
    assert!(
        api.contains("example_prompts"),
        "docs/API.md describes example_prompts"
    );
}
