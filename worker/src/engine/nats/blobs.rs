//! Large payloads in the `sdw-images` object store: result images (a
//! `complete` event on the stream carries references, not base64) and
//! request bodies too large for one NATS message.

use anyhow::{Context, Result};
use async_nats::jetstream::object_store::ObjectStore;
use base64::Engine as _;
use sd_worker_sdk::StreamEvent;
use tokio::io::AsyncReadExt;

/// What an image's `image` field says on the stream instead of its base64.
pub const REF_PREFIX: &str = "sdw-blob:";

/// Stores `bytes` under `name`.
pub async fn put(store: &ObjectStore, name: &str, bytes: &[u8]) -> Result<()> {
    let mut reader = bytes;
    store
        .put(name, &mut reader)
        .await
        .with_context(|| format!("storing {name} in the object store"))?;
    Ok(())
}

/// The bytes stored under `name`.
pub async fn get(store: &ObjectStore, name: &str) -> Result<Vec<u8>> {
    let mut object = store
        .get(name)
        .await
        .with_context(|| format!("reading {name} from the object store"))?;
    let mut bytes = Vec::new();
    object
        .read_to_end(&mut bytes)
        .await
        .with_context(|| format!("reading {name} from the object store"))?;
    Ok(bytes)
}

/// The event as published: a `complete` event's images stored under
/// `image/<id>/<attempt>/<i>` and replaced by references.
pub async fn to_wire(
    store: &ObjectStore,
    id: &str,
    attempt: i64,
    event: StreamEvent,
) -> Result<StreamEvent> {
    let StreamEvent::Complete {
        mut images,
        elapsed_ms,
        loras,
    } = event
    else {
        return Ok(event);
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    for (i, img) in images.iter_mut().enumerate() {
        let bytes = b64.decode(&img.image).context("a result image's base64")?;
        let name = format!("image/{id}/{attempt}/{i}");
        put(store, &name, &bytes).await?;
        img.image = format!("{REF_PREFIX}{name}");
    }
    Ok(StreamEvent::Complete {
        images,
        elapsed_ms,
        loras,
    })
}

/// The event as a client sees it: referenced images fetched back as base64.
pub async fn from_wire(store: &ObjectStore, event: StreamEvent) -> Result<StreamEvent> {
    let StreamEvent::Complete {
        mut images,
        elapsed_ms,
        loras,
    } = event
    else {
        return Ok(event);
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    for img in &mut images {
        if let Some(name) = img.image.strip_prefix(REF_PREFIX) {
            let bytes = get(store, name).await?;
            img.image = b64.encode(bytes);
        }
    }
    Ok(StreamEvent::Complete {
        images,
        elapsed_ms,
        loras,
    })
}
