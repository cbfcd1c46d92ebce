//! The worker serves the built studio next to the API: files with the right
//! types and caching, client-side routes falling back to `index.html`, API
//! paths and missing files answered with JSON 404s, no token needed for the
//! page itself, and a clear start-up error for a folder with no app in it.

mod common;

use common::{tiny_model, Worker};
use serde_json::Value;

const INDEX: &str =
    "<!doctype html><title>studio</title><script type=module src=/assets/app-1a2b3c.js></script>";
const SCRIPT: &str = "console.log('studio');";

fn studio_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sd-worker-studio-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("assets")).unwrap();
    std::fs::write(dir.join("index.html"), INDEX).unwrap();
    std::fs::write(dir.join("assets/app-1a2b3c.js"), SCRIPT).unwrap();
    dir
}

async fn get(w: &Worker, path: &str) -> (u16, String, String, String) {
    let r = w.client.get(w.url(path)).send().await.unwrap();
    let header = |name: &str| {
        r.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    let (ct, cache) = (header("content-type"), header("cache-control"));
    (r.status().as_u16(), ct, cache, r.text().await.unwrap())
}

#[tokio::test]
async fn serves_the_app_its_assets_and_client_routes() {
    let dir = studio_dir("serve");
    let w = Worker::start(&["--studio-dir", dir.to_str().unwrap()]).await;

    let (status, ct, cache, body) = get(&w, "/").await;
    assert_eq!((status, body.as_str()), (200, INDEX));
    assert!(ct.starts_with("text/html"), "{ct}");
    assert_eq!(cache, "no-cache");

    let (status, ct, cache, body) = get(&w, "/assets/app-1a2b3c.js").await;
    assert_eq!((status, body.as_str()), (200, SCRIPT));
    assert!(ct.contains("javascript"), "{ct}");
    assert!(cache.contains("immutable"), "{cache}");

    // A client-side route (a reload on /gallery) gets the app.
    for route in ["/gallery/item-3", "/sdapi-notes", "/apis"] {
        let (status, ct, _, body) = get(&w, route).await;
        assert_eq!((status, body.as_str()), (200, INDEX), "{route}");
        assert!(ct.starts_with("text/html"), "{route}: {ct}");
    }

    // A missing file is a 404, not the app in place of a script; so is a
    // route of an API the worker lacks (an A1111 client asking for scripts).
    for path in [
        "/assets/gone-9z.js",
        "/favicon.ico",
        "/v1/nope",
        "/v1",
        "/sdapi/v1/scripts-we-lack",
        "/sdapi/v2/anything",
        "/api/v1/info",
    ] {
        let (status, ct, _, body) = get(&w, path).await;
        assert_eq!(status, 404, "{path}");
        assert!(ct.starts_with("application/json"), "{path}: {ct}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["error"]["code"], "not_found", "{path}");
    }
    // The API is unchanged beside it.
    let (status, info) = w.get_json("/v1/info").await;
    assert_eq!(status, 200);
    assert!(info["model"].is_object(), "{info}");
    // Writes never reach the files.
    let r = w.client.post(w.url("/index.html")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn the_page_loads_without_the_token_the_api_still_needs() {
    let dir = studio_dir("auth");
    let w = Worker::start(&[
        "--studio-dir",
        dir.to_str().unwrap(),
        "--api-token",
        "studio-token",
    ])
    .await;
    assert_eq!(get(&w, "/").await.0, 200);
    assert_eq!(get(&w, "/assets/app-1a2b3c.js").await.0, 200);
    assert_eq!(get(&w, "/v1/info").await.0, 401);
    let r = w
        .client
        .get(w.url("/v1/info"))
        .bearer_auth("studio-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn no_studio_serves_the_api_alone() {
    let dir = studio_dir("off");
    let w = Worker::start(&["--studio-dir", dir.to_str().unwrap(), "--no-studio"]).await;
    let (status, ct, _, _) = get(&w, "/").await;
    assert_eq!(status, 404);
    assert!(ct.starts_with("application/json"), "{ct}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_studio_folder_without_an_app_stops_the_start() {
    let empty = std::env::temp_dir().join(format!("sd-worker-studio-empty-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sd-worker"))
        .args([
            "--port",
            "0",
            "--model-path",
            tiny_model().to_str().unwrap(),
        ])
        .args(["--studio-dir", empty.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("index.html"), "{stderr}");
    let _ = std::fs::remove_dir_all(empty);
}
