//! A safetensors file's header alone: its tensors' names, dtypes and shapes
//! and its `__metadata__`, read without touching the tensor data. The header
//! is checked as the format defines it (huggingface/safetensors' spec): an
//! 8-byte little-endian length, then that many bytes of a JSON object whose
//! tensors' `data_offsets` lie inside the data that follows and hold exactly
//! `shape`'s elements of `dtype`. A truncated file fails here.

use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

/// The largest header read (the `safetensors` crate's own bound).
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// One tensor's entry in the header.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorHead {
    /// `F32`, `F16`, `BF16`, ...
    pub dtype: String,
    pub shape: Vec<usize>,
}

/// A checked safetensors header.
#[derive(Debug, Clone, Default)]
pub struct Header {
    /// Tensors by name (sorted).
    pub tensors: BTreeMap<String, TensorHead>,
    /// `__metadata__`: strings by key (a non-string value is kept as its JSON text).
    pub metadata: BTreeMap<String, String>,
    /// Bytes before the tensor data: 8 + the JSON header's length. A1111's
    /// LoRA hash covers the file from here on.
    pub data_start: u64,
}

fn dtype_bytes(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "F64" | "I64" | "U64" => 8,
        "F32" | "I32" | "U32" => 4,
        "F16" | "BF16" | "I16" | "U16" => 2,
        "I8" | "U8" | "BOOL" | "F8_E4M3" | "F8_E5M2" => 1,
        _ => return None,
    })
}

/// Reads and checks the header of the safetensors file at `path`. Errors
/// say what is wrong (too short, a header past the end, not JSON, a tensor
/// whose bytes do not match its shape or lie past the end of the file).
pub fn read_header(path: &Path) -> Result<Header> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = file.metadata()?.len();
    let mut prefix = [0u8; 8];
    file.read_exact(&mut prefix)
        .context("shorter than a safetensors header (8 bytes)")?;
    let n = u64::from_le_bytes(prefix);
    if n > MAX_HEADER_BYTES || n + 8 > len {
        bail!("not a safetensors file: its header length ({n} bytes) runs past the file's {len} bytes");
    }
    let mut json = vec![0u8; n as usize];
    file.read_exact(&mut json)?;
    parse(&json, len - 8 - n).map(|mut h| {
        h.data_start = 8 + n;
        h
    })
}

/// Parses a header's JSON, checking each tensor against `data_len`, the
/// bytes after the header.
fn parse(json: &[u8], data_len: u64) -> Result<Header> {
    let value: serde_json::Value =
        serde_json::from_slice(json).context("not a safetensors file: its header is not JSON")?;
    let serde_json::Value::Object(map) = value else {
        bail!("not a safetensors file: its header is not a JSON object");
    };
    let mut header = Header::default();
    for (name, entry) in map {
        if name == "__metadata__" {
            if let serde_json::Value::Object(meta) = entry {
                for (k, v) in meta {
                    let v = match v {
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    };
                    header.metadata.insert(k, v);
                }
            }
            continue;
        }
        let dtype = entry["dtype"].as_str().unwrap_or_default().to_string();
        let shape: Option<Vec<usize>> = entry["shape"]
            .as_array()
            .and_then(|a| a.iter().map(|d| d.as_u64().map(|d| d as usize)).collect());
        let offsets: Option<Vec<u64>> = entry["data_offsets"]
            .as_array()
            .and_then(|a| a.iter().map(|d| d.as_u64()).collect());
        let (Some(shape), Some(offsets), Some(size)) = (shape, offsets, dtype_bytes(&dtype)) else {
            bail!("tensor `{name}`: its header entry lacks a known dtype, a shape or data_offsets");
        };
        let [start, end] = offsets[..] else {
            bail!("tensor `{name}`: data_offsets must be [start, end]");
        };
        let elements = shape
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64));
        let bytes = elements.and_then(|e| e.checked_mul(size));
        if end < start || Some(end - start) != bytes {
            bail!("tensor `{name}`: {dtype} {shape:?} does not fill its bytes {start}..{end}");
        }
        if end > data_len {
            bail!("tensor `{name}` ends at byte {end} of the data, past its end ({data_len} bytes): the file is truncated");
        }
        header.tensors.insert(name, TensorHead { dtype, shape });
    }
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(header: &str, data: usize) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend(std::iter::repeat_n(0u8, data));
        std::fs::write(f.path(), bytes).unwrap();
        f.as_file_mut();
        f
    }

    #[test]
    fn reads_tensors_and_metadata_and_refuses_truncated_files() {
        let h = r#"{"__metadata__":{"ss_output_name":"x","n":3},"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]}}"#;
        let f = file_with(h, 24);
        let header = read_header(f.path()).unwrap();
        assert_eq!(header.tensors["a"].shape, vec![2, 3]);
        assert_eq!(header.metadata["ss_output_name"], "x");
        assert_eq!(header.metadata["n"], "3");
        assert_eq!(header.data_start, 8 + h.len() as u64);
        let short = file_with(h, 20);
        let e = read_header(short.path()).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
        let bad = file_with(
            r#"{"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}}"#,
            24,
        );
        assert!(read_header(bad.path()).is_err());
        let garbage = file_with("not json", 0);
        let e = read_header(garbage.path()).unwrap_err().to_string();
        assert!(e.contains("not JSON"), "{e}");
        let tiny = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(tiny.path(), b"abc").unwrap();
        assert!(read_header(tiny.path()).is_err());
    }
}
