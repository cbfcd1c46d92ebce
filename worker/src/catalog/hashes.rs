//! The short hashes AUTOMATIC1111 writes in its infotexts, so that images
//! made here name their LoRAs and embeddings as A1111's do.
//!
//! Sources (stable-diffusion-webui 1.x):
//! - `Lora hashes:` writes `NetworkOnDisk.shorthash`, which is `hash[0:12]`
//!   where `hash` is the file's `sshs_model_hash` metadata when present, else
//!   `modules/hashes.py: sha256(filename, "lora/" + name, use_addnet_hash=True)`
//!   for a `.safetensors` file, i.e. `addnet_hash_safetensors`: the SHA-256 of
//!   the file from byte `8 + n` on (`n`: the header length in the first 8
//!   bytes, little-endian), the tensor data without the header (kohya-ss's
//!   hash, also Civitai's "AutoV3"). See `extensions-builtin/Lora/network.py`.
//! - `TI hashes:` writes `Embedding.shorthash`, `hash[0:12]` of
//!   `hashes.sha256(filepath, "textual_inversion/" + name)`: the SHA-256 of
//!   the whole file. See `modules/textual_inversion/textual_inversion.py`.

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// Hex digits of A1111's short hashes.
pub const SHORT_HASH_LEN: usize = 12;

/// SHA-256 of the file at `path` from byte `from` to its end, in lowercase hex.
pub fn sha256_from(path: &Path, from: u64) -> Result<String> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    file.seek(SeekFrom::Start(from))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// A1111's `Lora hashes:` hash of a safetensors LoRA whose tensor data starts
/// at `data_start` (8 + the header length): `sshs_model_hash` when the
/// metadata holds one (at least 12 hex digits), else the SHA-256 of the data.
pub fn lora_short_hash(
    path: &Path,
    data_start: u64,
    sshs_model_hash: Option<&str>,
) -> Result<String> {
    if let Some(h) = sshs_model_hash.map(str::trim) {
        if h.len() >= SHORT_HASH_LEN && h.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(h[..SHORT_HASH_LEN].to_ascii_lowercase());
        }
    }
    Ok(sha256_from(path, data_start)?[..SHORT_HASH_LEN].to_string())
}

/// A1111's `TI hashes:` hash of an embedding file: the whole file's SHA-256.
pub fn embedding_short_hash(path: &Path) -> Result<String> {
    Ok(sha256_from(path, 0)?[..SHORT_HASH_LEN].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_the_data_after_the_header_or_the_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        // SHA-256("abc") and SHA-256("c").
        assert_eq!(embedding_short_hash(&p).unwrap(), "ba7816bf8f01");
        assert_eq!(lora_short_hash(&p, 2, None).unwrap(), "2e7d2c03a950");
        assert_eq!(
            lora_short_hash(&p, 2, Some("ABCDEF0123456789")).unwrap(),
            "abcdef012345"
        );
        // Not a hash: computed instead.
        assert_eq!(lora_short_hash(&p, 2, Some("n/a")).unwrap(), "2e7d2c03a950");
    }
}
