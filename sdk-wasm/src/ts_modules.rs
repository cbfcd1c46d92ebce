//! Test support: the TypeScript modules generated from the contract's
//! tables (schedulers, latent upscalers) are committed; each table's test
//! checks its file is current.

/// Asserts that the committed `relative_path` (from the repository root) is
/// `want`; with `SD_WORKER_SDK_WRITE_TS` set, rewrites it first. `filter` is
/// the `cargo test` filter that reruns the check.
pub fn assert_current(relative_path: &str, want: &str, filter: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative_path);
    if std::env::var_os("SD_WORKER_SDK_WRITE_TS").is_some() {
        std::fs::write(&path, want).unwrap();
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "{relative_path} is stale: run `SD_WORKER_SDK_WRITE_TS=1 cargo test -p sd-worker-sdk {filter}`"
    );
}
