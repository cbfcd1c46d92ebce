//! `GET /sdapi/v1/memory`: A1111's memory report, `{ram: {free, used, total},
//! cuda}`, in bytes. RAM is the machine's (`/proc/meminfo`: `MemAvailable`
//! as free), plus what A1111 lacks and a worker's operator wants: this
//! process's resident set (`process`: `rss`, and `peak`, the high-water mark).
//! `cuda` is A1111's `{"error": …}` when the worker does not run on CUDA; on
//! CUDA it is also an error for now (Candle exposes no allocator statistics).

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::error::SdErrorBody;
use crate::http::AppState;

/// A `kB` figure of a `/proc` status-style file, in bytes.
fn kib_field(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line[key.len()..].split_whitespace().next()?.parse().ok()?;
    Some(kib * 1024)
}

/// The machine's and this process's memory, in A1111's shape.
#[utoipa::path(get, path = "/sdapi/v1/memory", tag = "a1111", responses(
    (status = 200, description = "`{ram: {free, used, total}, process: {rss, peak}, cuda: {error}}`, bytes", body = Object),
    (status = 401, body = SdErrorBody)))]
pub async fn memory(State(state): State<AppState>) -> Json<Value> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let total = kib_field(&meminfo, "MemTotal:");
    let free = kib_field(&meminfo, "MemAvailable:");
    let ram = match (total, free) {
        (Some(total), Some(free)) => {
            json!({"free": free, "used": total.saturating_sub(free), "total": total})
        }
        _ => json!({"error": "the machine's memory cannot be read here (no /proc/meminfo)"}),
    };
    let device = state
        .profile
        .get()
        .map(|p| p.info.device.clone())
        .unwrap_or_default();
    let cuda_error = if device.starts_with("cuda") {
        "the worker does not report CUDA allocator statistics"
    } else {
        "the worker does not run on CUDA"
    };
    Json(json!({
        "ram": ram,
        "process": {"rss": kib_field(&status, "VmRSS:"), "peak": kib_field(&status, "VmHWM:")},
        "cuda": {"error": cuda_error},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_fields_are_read_in_bytes() {
        let text = "MemTotal:       24000000 kB\nMemAvailable:   12000000 kB\n";
        assert_eq!(kib_field(text, "MemTotal:"), Some(24_000_000 * 1024));
        assert_eq!(kib_field(text, "MemAvailable:"), Some(12_000_000 * 1024));
        assert_eq!(kib_field(text, "VmRSS:"), None);
    }
}
