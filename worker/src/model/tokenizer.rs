//! CLIP BPE tokenizer for Stable Diffusion prompts.
//!
//! A diffusers `tokenizer/` folder holds either a Hugging Face `tokenizer.json`
//! or, more commonly (that is what `CLIPTokenizer.save_pretrained` writes),
//! `vocab.json` + `merges.txt`. Both are loaded with the `tokenizers` crate; for
//! the second kind the pipeline is assembled from components exactly the way
//! Hugging Face's `CLIPTokenizerFast` conversion builds it:
//!
//! * normalizer: NFC, then the regex `\s+` replaced by one space, then lowercase;
//! * pre-tokenizer: a split on CLIP's word regex (keeping the matches), then
//!   byte-level mapping without prefix space and without GPT-2's own regex
//!   (Hugging Face leaves that regex on, but after CLIP's split it changes
//!   nothing);
//! * model: BPE with end-of-word suffix `</w>`, unknown token `<|endoftext|>`;
//! * decoder: byte level.
//!
//! Special tokens, the pad token and the window length come from
//! `tokenizer_config.json` and `special_tokens_map.json` (the latter wins, as
//! in `transformers`), so SD 1.x pads with `<|endoftext|>` and SD 2.x / SDXL's
//! second encoder with `!`.
//!
//! [`write_tiny_vocab`] writes a small deterministic vocabulary in the same
//! on-disk format, for generated test models.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::replace::ReplacePattern;
use tokenizers::normalizers::{Lowercase, Replace, Sequence as NormalizerSequence, NFC};
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

/// CLIP's text window (and the fallback when a config gives none or a silly one).
const DEFAULT_MAX_LENGTH: usize = 77;
/// Larger `model_max_length` values (some configs hold 1e30) are ignored.
const MAX_SANE_LENGTH: usize = 4096;
const DEFAULT_BOS: &str = "<|startoftext|>";
const DEFAULT_EOS: &str = "<|endoftext|>";
const END_OF_WORD_SUFFIX: &str = "</w>";
/// CLIP's word splitting regex (from OpenAI's `simple_tokenizer.py`, as used by
/// Hugging Face's fast CLIP tokenizer).
const CLIP_SPLIT_PATTERN: &str = r"'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";
const MERGES_HEADER: &str = "#version: 0.2";

/// A prompt turned into a fixed-length window of token ids.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenizedPrompt {
    /// Exactly `max_length` ids: bos, the prompt's tokens, eos, then pad ids.
    pub ids: Vec<u32>,
    /// Number of prompt tokens (without bos/eos) before truncation.
    pub token_count: usize,
    /// True when the prompt's tokens did not fit in max_length - 2 and were cut.
    pub truncated: bool,
}

/// A prompt split into consecutive windows of the text encoder's length, so a
/// prompt longer than one window is encoded window by window (the embeddings
/// are then concatenated) instead of being cut.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptWindows {
    /// Each exactly `max_length` ids: bos, up to `max_length - 2` tokens, eos, pad.
    pub windows: Vec<Vec<u32>>,
    /// Number of prompt tokens (without bos/eos) before any cut.
    pub token_count: usize,
    /// True when the prompt needed more than the allowed number of windows.
    pub truncated: bool,
}

/// CLIP tokenizer with its special tokens and window length.
#[derive(Clone)]
pub struct ClipTokenizer {
    tokenizer: Tokenizer,
    max_length: usize,
    bos_id: u32,
    eos_id: u32,
    pad_id: u32,
    vocab_size: usize,
}

impl fmt::Debug for ClipTokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The inner tokenizer's Debug would print the whole vocabulary.
        f.debug_struct("ClipTokenizer")
            .field("max_length", &self.max_length)
            .field("bos_id", &self.bos_id)
            .field("eos_id", &self.eos_id)
            .field("pad_id", &self.pad_id)
            .field("vocab_size", &self.vocab_size)
            .finish_non_exhaustive()
    }
}

impl ClipTokenizer {
    /// Load from a diffusers `tokenizer/` folder: tokenizer.json if present, else vocab.json + merges.txt; reads tokenizer_config.json / special_tokens_map.json when present.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            bail!("tokenizer folder {} does not exist", dir.display());
        }
        let settings = Settings::read(dir)?;

        let tokenizer_json = dir.join("tokenizer.json");
        let vocab_json = dir.join("vocab.json");
        let merges_txt = dir.join("merges.txt");
        let (tokenizer, vocab_source) = if tokenizer_json.is_file() {
            (load_tokenizer_json(&tokenizer_json)?, tokenizer_json)
        } else if vocab_json.is_file() || merges_txt.is_file() {
            if !vocab_json.is_file() {
                bail!(
                    "{} exists but {} is missing",
                    merges_txt.display(),
                    vocab_json.display()
                );
            }
            if !merges_txt.is_file() {
                bail!(
                    "{} exists but {} is missing",
                    vocab_json.display(),
                    merges_txt.display()
                );
            }
            let vocab = read_vocab(&vocab_json)?;
            let merges = read_merges(&merges_txt, &vocab)?;
            let tokenizer = build_clip_tokenizer(vocab, merges, &settings, &vocab_json)
                .with_context(|| format!("building the CLIP tokenizer from {}", dir.display()))?;
            (tokenizer, vocab_json)
        } else {
            bail!(
                "no tokenizer in {}: expected tokenizer.json, or vocab.json and merges.txt",
                dir.display()
            );
        };

        let id_of = |token: &SpecialToken, role: &str| -> Result<u32> {
            tokenizer.token_to_id(&token.content).ok_or_else(|| {
                anyhow!(
                    "the {role} token {:?} (from {}) is not in the vocabulary of {}",
                    token.content,
                    token.source,
                    vocab_source.display()
                )
            })
        };
        let bos_id = id_of(&settings.bos, "bos")?;
        let eos_id = id_of(&settings.eos, "eos")?;
        let pad_id = id_of(&settings.pad, "pad")?;
        let vocab_size = tokenizer.get_vocab_size(true);
        Ok(Self {
            tokenizer,
            max_length: settings.max_length,
            bos_id,
            eos_id,
            pad_id,
            vocab_size,
        })
    }

    /// Length of every [`TokenizedPrompt::ids`] (77 for Stable Diffusion).
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    pub fn bos_id(&self) -> u32 {
        self.bos_id
    }

    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Number of distinct token ids, special tokens included.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Tokenizes `text` (leading/trailing whitespace stripped) into a window of
    /// exactly `max_length` ids: bos, the tokens (cut to `max_length - 2`), eos,
    /// then padding.
    pub fn encode(&self, text: &str) -> Result<TokenizedPrompt> {
        let encoding = self
            .tokenizer
            .encode(text.trim(), false)
            .map_err(|e| anyhow!("tokenizing the prompt failed: {e}"))?;
        let tokens = encoding.get_ids();
        let token_count = tokens.len();
        // max_length >= 2 is guaranteed by Settings::read.
        let room = self.max_length - 2;
        let truncated = token_count > room;
        let mut ids = Vec::with_capacity(self.max_length);
        ids.push(self.bos_id);
        ids.extend_from_slice(&tokens[..token_count.min(room)]);
        ids.push(self.eos_id);
        ids.resize(self.max_length, self.pad_id);
        Ok(TokenizedPrompt {
            ids,
            token_count,
            truncated,
        })
    }

    /// Tokenizes `text` into at least one and at most `max_windows` windows of
    /// `max_length - 2` tokens each (the last one padded), each wrapped in
    /// bos/eos like a prompt of its own: how long-prompt pipelines (A1111,
    /// diffusers' long-prompt community pipeline) feed CLIP.
    pub fn windows(&self, text: &str, max_windows: usize) -> Result<PromptWindows> {
        let tokens = &self.tokens(text)?;
        let room = self.max_length - 2;
        let max_windows = max_windows.max(1);
        let kept = tokens.len().min(room * max_windows);
        let mut windows: Vec<Vec<u32>> = tokens[..kept]
            .chunks(room)
            .map(|chunk| self.window(chunk))
            .collect();
        if windows.is_empty() {
            windows.push(self.window(&[]));
        }
        Ok(PromptWindows {
            windows,
            token_count: tokens.len(),
            truncated: kept < tokens.len(),
        })
    }

    /// The prompt's token ids (leading/trailing whitespace stripped), without
    /// bos/eos and uncut.
    pub fn tokens(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .tokenizer
            .encode(text.trim(), false)
            .map_err(|e| anyhow!("tokenizing the prompt failed: {e}"))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// True when token `id` ends a word, that is a piece of CLIP's word split
    /// (its text ends with `</w>`): the next token starts a new word.
    pub fn ends_word(&self, id: u32) -> bool {
        self.tokenizer
            .id_to_token(id)
            .is_some_and(|t| t.ends_with(END_OF_WORD_SUFFIX))
    }

    /// True for the bos, eos and pad ids.
    pub fn is_special(&self, id: u32) -> bool {
        id == self.bos_id || id == self.eos_id || id == self.pad_id
    }

    /// One window: bos, `tokens` (at most `max_length - 2`), eos, padding.
    pub fn window(&self, tokens: &[u32]) -> Vec<u32> {
        let mut ids = Vec::with_capacity(self.max_length);
        ids.push(self.bos_id);
        ids.extend_from_slice(&tokens[..tokens.len().min(self.max_length - 2)]);
        ids.push(self.eos_id);
        ids.resize(self.max_length, self.pad_id);
        ids
    }
}

/// A special token's text and where it was named (for error messages).
#[derive(Debug, Clone)]
struct SpecialToken {
    content: String,
    source: String,
}

/// What tokenizer_config.json / special_tokens_map.json say.
#[derive(Debug, Clone)]
struct Settings {
    bos: SpecialToken,
    eos: SpecialToken,
    unk: SpecialToken,
    pad: SpecialToken,
    max_length: usize,
}

impl Settings {
    fn read(dir: &Path) -> Result<Self> {
        let config_path = dir.join("tokenizer_config.json");
        let map_path = dir.join("special_tokens_map.json");
        let config = read_optional_json_object(&config_path)?;
        let map = read_optional_json_object(&map_path)?;

        // special_tokens_map.json overrides tokenizer_config.json, as in
        // transformers' `from_pretrained` (SD 2.x relies on this for `!`).
        let token = |key: &str, default: &str| -> Result<SpecialToken> {
            for (path, object) in [(&map_path, &map), (&config_path, &config)] {
                if let Some(object) = object {
                    if let Some(content) = token_content(object.get(key), path, key)? {
                        return Ok(SpecialToken {
                            content,
                            source: path.display().to_string(),
                        });
                    }
                }
            }
            Ok(SpecialToken {
                content: default.to_string(),
                source: "the built-in default".to_string(),
            })
        };
        let bos = token("bos_token", DEFAULT_BOS)?;
        let eos = token("eos_token", DEFAULT_EOS)?;
        let unk = token("unk_token", DEFAULT_EOS)?;
        let pad = token("pad_token", DEFAULT_EOS)?;
        let max_length = config
            .as_ref()
            .and_then(|c| c.get("model_max_length"))
            .and_then(sane_max_length)
            .unwrap_or(DEFAULT_MAX_LENGTH);
        Ok(Self {
            bos,
            eos,
            unk,
            pad,
            max_length,
        })
    }
}

/// `model_max_length` when it is a usable window (2..=4096 tokens).
fn sane_max_length(value: &Value) -> Option<usize> {
    let n = if let Some(n) = value.as_u64() {
        n
    } else {
        let f = value.as_f64()?;
        if !(f.is_finite() && f >= 0.0 && f.fract() == 0.0 && f <= MAX_SANE_LENGTH as f64) {
            return None;
        }
        f as u64
    };
    let n = usize::try_from(n).ok()?;
    (2..=MAX_SANE_LENGTH).contains(&n).then_some(n)
}

/// A token given as a string or as an object with a "content" field; `None`
/// when absent or null.
fn token_content(value: Option<&Value>, path: &Path, key: &str) -> Result<Option<String>> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Object(o)) => match o.get("content") {
            Some(Value::String(s)) => Ok(Some(s.clone())),
            _ => bail!(
                "{}: \"{key}\" is an object without a string \"content\" field",
                path.display()
            ),
        },
        Some(other) => bail!(
            "{}: \"{key}\" must be a string or an object with \"content\", found {other}",
            path.display()
        ),
    }
}

fn read_optional_json_object(path: &Path) -> Result<Option<serde_json::Map<String, Value>>> {
    if !path.exists() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(map)) => Ok(Some(map)),
        Ok(_) => bail!("{} is not a JSON object", path.display()),
        Err(e) => bail!("{} is not valid JSON: {e}", path.display()),
    }
}

fn load_tokenizer_json(path: &Path) -> Result<Tokenizer> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut tokenizer: Tokenizer = text
        .parse()
        .map_err(|e| anyhow!("{} is not a valid tokenizer file: {e}", path.display()))?;
    // Padding and truncation are ours to do (to a fixed window, with bos/eos).
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(None)
        .map_err(|e| anyhow!("{}: {e}", path.display()))?;
    Ok(tokenizer)
}

/// Reads a `vocab.json` (token -> id).
fn read_vocab(path: &Path) -> Result<HashMap<String, u32>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let map = match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(map)) => map,
        Ok(_) => bail!("{} is not a JSON object of token -> id", path.display()),
        Err(e) => bail!("{} is not valid JSON: {e}", path.display()),
    };
    let mut vocab = HashMap::with_capacity(map.len());
    for (token, id) in map {
        let id = id
            .as_u64()
            .and_then(|id| u32::try_from(id).ok())
            .ok_or_else(|| {
                anyhow!(
                    "{}: the id of token {token:?} is not a valid token id: {id}",
                    path.display()
                )
            })?;
        vocab.insert(token, id);
    }
    if vocab.is_empty() {
        bail!("{} holds no tokens", path.display());
    }
    Ok(vocab)
}

/// Reads a `merges.txt`, checking that every merge and its result are in the
/// vocabulary (the BPE builder would otherwise fail or misbehave).
fn read_merges(path: &Path, vocab: &HashMap<String, u32>) -> Result<Vec<(String, String)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut merges = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line_no = index + 1;
        if line.starts_with("#version") || line.is_empty() {
            continue;
        }
        let mut parts = line.split(' ');
        let (Some(a), Some(b), None) = (parts.next(), parts.next(), parts.next()) else {
            bail!(
                "{} line {line_no}: expected two tokens separated by one space, found {line:?}",
                path.display()
            );
        };
        if a.is_empty() || b.is_empty() {
            bail!(
                "{} line {line_no}: expected two tokens separated by one space, found {line:?}",
                path.display()
            );
        }
        let merged = format!("{a}{b}");
        for token in [a, b, merged.as_str()] {
            if !vocab.contains_key(token) {
                bail!(
                    "{} line {line_no}: token {token:?} is not in the vocabulary",
                    path.display()
                );
            }
        }
        merges.push((a.to_string(), b.to_string()));
    }
    Ok(merges)
}

/// Hugging Face's CLIPTokenizerFast pipeline around a BPE model.
fn build_clip_tokenizer(
    vocab: HashMap<String, u32>,
    merges: Vec<(String, String)>,
    settings: &Settings,
    vocab_path: &Path,
) -> Result<Tokenizer> {
    // Checked here: registering a missing special token would silently give
    // it a new id.
    for (role, token) in [
        ("bos", &settings.bos),
        ("eos", &settings.eos),
        ("unk", &settings.unk),
    ] {
        if !vocab.contains_key(&token.content) {
            bail!(
                "the {role} token {:?} (from {}) is not in the vocabulary of {}",
                token.content,
                token.source,
                vocab_path.display()
            );
        }
    }
    let vocab: Vocab = vocab.into_iter().collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .unk_token(settings.unk.content.clone())
        .end_of_word_suffix(END_OF_WORD_SUFFIX.to_string())
        .build()
        .map_err(|e| anyhow!("building the BPE model: {e}"))?;
    let mut tokenizer = Tokenizer::new(bpe);

    let whitespace = Replace::new(ReplacePattern::Regex(r"\s+".to_string()), " ")
        .map_err(|e| anyhow!("building the whitespace normalizer: {e}"))?;
    tokenizer
        .with_normalizer(Some(NormalizerSequence::new(vec![
            NFC.into(),
            whitespace.into(),
            Lowercase.into(),
        ])))
        .map_err(|e| anyhow!("setting the normalizer: {e}"))?;

    let split = Split::new(
        SplitPattern::Regex(CLIP_SPLIT_PATTERN.to_string()),
        SplitDelimiterBehavior::Removed,
        true,
    )
    .map_err(|e| anyhow!("building the CLIP split pattern: {e}"))?;
    tokenizer.with_pre_tokenizer(Some(PreTokenizerSequence::new(vec![
        split.into(),
        ByteLevel::new(false, true, false).into(),
    ])));
    tokenizer.with_decoder(Some(ByteLevel::default()));

    // As in CLIPTokenizerFast: the special tokens are matched in the raw text.
    let mut specials = vec![AddedToken::from(settings.bos.content.clone(), true)];
    if settings.eos.content != settings.bos.content {
        specials.push(AddedToken::from(settings.eos.content.clone(), true));
    }
    tokenizer
        .add_special_tokens(specials)
        .map_err(|e| anyhow!("registering the special tokens: {e}"))?;
    Ok(tokenizer)
}

/// GPT-2's `bytes_to_unicode` table in its insertion order: the printable
/// bytes map to themselves first, then the rest map to U+0100 onwards. The
/// position in this list is the token id of the byte in CLIP's vocabulary.
fn byte_level_alphabet() -> Vec<(u8, char)> {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut table: Vec<(u8, char)> = (0..=255u8)
        .filter(|&b| printable(b))
        .map(|b| (b, char::from(b)))
        .collect();
    let others = (0..=255u8).filter(|&b| !printable(b));
    // Code points 256..=323: all valid scalar values.
    table.extend(
        others
            .zip(256u32..)
            .filter_map(|(b, c)| Some((b, char::from_u32(c)?))),
    );
    table
}

/// Writes `vocab.json` (ids in token order, compact, as the hub ships it) and
/// `merges.txt` (`#version: 0.2` header, one merge per line).
fn write_vocab_and_merges(
    dir: &Path,
    tokens: &[String],
    merges: &[(String, String)],
) -> Result<()> {
    let mut vocab = String::with_capacity(tokens.len() * 12);
    vocab.push('{');
    for (id, token) in tokens.iter().enumerate() {
        if id > 0 {
            vocab.push(',');
        }
        vocab.push_str(&serde_json::to_string(token)?);
        vocab.push(':');
        vocab.push_str(&id.to_string());
    }
    vocab.push('}');
    let vocab_path = dir.join("vocab.json");
    std::fs::write(&vocab_path, vocab)
        .with_context(|| format!("writing {}", vocab_path.display()))?;

    let mut text = String::from(MERGES_HEADER);
    text.push('\n');
    for (a, b) in merges {
        text.push_str(a);
        text.push(' ');
        text.push_str(b);
        text.push('\n');
    }
    let merges_path = dir.join("merges.txt");
    std::fs::write(&merges_path, text)
        .with_context(|| format!("writing {}", merges_path.display()))?;
    Ok(())
}

/// Words the tiny vocabulary's merges are learnt from: the prompts of the
/// project's tests and examples use these.
pub const TINY_TRAINING_WORDS: &[&str] = &[
    "a",
    "an",
    "the",
    "of",
    "on",
    "in",
    "with",
    "and",
    "at",
    "by",
    "to",
    "over",
    "under",
    "is",
    "photo",
    "picture",
    "image",
    "painting",
    "drawing",
    "render",
    "sketch",
    "portrait",
    "landscape",
    "background",
    "foreground",
    "center",
    "left",
    "right",
    "top",
    "bottom",
    "red",
    "green",
    "blue",
    "yellow",
    "orange",
    "purple",
    "pink",
    "black",
    "white",
    "gray",
    "grey",
    "brown",
    "cyan",
    "magenta",
    "gold",
    "silver",
    "circle",
    "square",
    "triangle",
    "rectangle",
    "star",
    "heart",
    "line",
    "dot",
    "ring",
    "cross",
    "stripe",
    "stripes",
    "shape",
    "shapes",
    "small",
    "large",
    "big",
    "tiny",
    "bright",
    "dark",
    "light",
    "simple",
    "plain",
    "gradient",
    "colorful",
    "cat",
    "dog",
    "bird",
    "house",
    "tree",
    "flower",
    "sky",
    "sun",
    "moon",
    "sea",
    "water",
    "mountain",
    "forest",
    "city",
    "street",
    "car",
    "man",
    "woman",
    "night",
    "day",
    "high",
    "quality",
    "detailed",
    "style",
    "art",
    "digital",
    "oil",
    "watercolor",
    "astronaut",
    "riding",
    "horse",
    "cartoon",
    "realistic",
    "beautiful",
    "sunset",
    "snow",
    "rain",
    "cloud",
];

/// Upper bound on the tiny vocabulary's merges: keeps the vocabulary within
/// 1,024 ids (512 + 500 + 2) whatever the word list (it needs about 300 now).
const TINY_MAX_MERGES: usize = 500;

/// Greedy BPE training: repeatedly merge the most frequent adjacent pair (ties
/// broken by the lexicographically smallest pair) until no pair is left or
/// `max_merges` is reached. Fully deterministic.
fn train_merges(words: &[&str], max_merges: usize) -> Vec<(String, String)> {
    let alphabet: HashMap<u8, char> = byte_level_alphabet().into_iter().collect();
    let mut words: Vec<Vec<String>> = words
        .iter()
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut symbols: Vec<String> = w.bytes().map(|b| alphabet[&b].to_string()).collect();
            if let Some(last) = symbols.last_mut() {
                last.push_str(END_OF_WORD_SUFFIX);
            }
            symbols
        })
        .collect();

    let mut merges = Vec::new();
    while merges.len() < max_merges {
        let mut counts: BTreeMap<(&str, &str), usize> = BTreeMap::new();
        for word in &words {
            for pair in word.windows(2) {
                *counts
                    .entry((pair[0].as_str(), pair[1].as_str()))
                    .or_default() += 1;
            }
        }
        // Highest count; among equal counts the smallest pair (BTreeMap order,
        // and max_by keeps the last maximum, so iterate in reverse).
        let Some(((a, b), _)) = counts.iter().rev().max_by_key(|(_, count)| **count) else {
            break;
        };
        let (a, b) = (a.to_string(), b.to_string());
        for word in &mut words {
            let mut merged = Vec::with_capacity(word.len());
            let mut i = 0;
            while i < word.len() {
                if i + 1 < word.len() && word[i] == a && word[i + 1] == b {
                    merged.push(format!("{a}{b}"));
                    i += 2;
                } else {
                    merged.push(std::mem::take(&mut word[i]));
                    i += 1;
                }
            }
            *word = merged;
        }
        merges.push((a, b));
    }
    merges
}

/// Writes a small, deterministic CLIP-style vocabulary (vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json) into `dir`,
/// for the project's generated tiny test models: the 256 byte-level characters, the same 256 with `</w>`, a few hundred
/// deterministic merges learnt from a fixed built-in English word list, then `<|startoftext|>` and `<|endoftext|>` as the last two ids.
/// Returns the vocabulary size. Loading the result with `ClipTokenizer::from_dir` must work through the same vocab+merges path as a real model.
pub fn write_tiny_vocab(dir: &Path, pad_token: &str) -> Result<usize> {
    let alphabet = byte_level_alphabet();
    let mut tokens: Vec<String> = alphabet.iter().map(|(_, c)| c.to_string()).collect();
    tokens.extend(
        alphabet
            .iter()
            .map(|(_, c)| format!("{c}{END_OF_WORD_SUFFIX}")),
    );
    let merges = train_merges(TINY_TRAINING_WORDS, TINY_MAX_MERGES);
    let mut seen: HashSet<String> = tokens.iter().cloned().collect();
    for (a, b) in &merges {
        let merged = format!("{a}{b}");
        if seen.insert(merged.clone()) {
            tokens.push(merged);
        }
    }
    tokens.push(DEFAULT_BOS.to_string());
    tokens.push(DEFAULT_EOS.to_string());
    if !tokens.iter().any(|t| t == pad_token) {
        bail!("pad token {pad_token:?} is not in the tiny vocabulary (use \"<|endoftext|>\" or a single byte-level character such as \"!\")");
    }

    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    write_vocab_and_merges(dir, &tokens, &merges)?;

    let config = serde_json::json!({
        "add_prefix_space": false,
        "bos_token": DEFAULT_BOS,
        "do_lower_case": true,
        "eos_token": DEFAULT_EOS,
        "errors": "replace",
        "model_max_length": DEFAULT_MAX_LENGTH,
        "pad_token": pad_token,
        "tokenizer_class": "CLIPTokenizer",
        "unk_token": DEFAULT_EOS,
    });
    let special = serde_json::json!({
        "bos_token": DEFAULT_BOS,
        "eos_token": DEFAULT_EOS,
        "pad_token": pad_token,
        "unk_token": DEFAULT_EOS,
    });
    for (name, value) in [
        ("tokenizer_config.json", config),
        ("special_tokens_map.json", special),
    ] {
        let path: PathBuf = dir.join(name);
        let mut text = serde_json::to_string_pretty(&value)?;
        text.push('\n');
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(tokens.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tempfile::TempDir;

    /// Number of merges CLIP uses from OpenAI's BPE file (lines 2..=48895).
    const CLIP_MERGES: usize = 49152 - 256 - 2;

    /// The OpenAI BPE file (decompressed), located by `SD_WORKER_CLIP_BPE`.
    fn clip_bpe_text() -> String {
        let path = std::env::var_os("SD_WORKER_CLIP_BPE").unwrap_or_else(|| {
            panic!(
                "SD_WORKER_CLIP_BPE is not set: run scripts/fetch-test-assets.sh and export \
                 the SD_WORKER_CLIP_BPE=... line it prints (the real CLIP vocabulary test needs it)"
            )
        });
        let path = PathBuf::from(path);
        assert!(
            path.extension().is_none_or(|e| e != "gz"),
            "SD_WORKER_CLIP_BPE={} is gzipped: point it at the decompressed .txt that \
             scripts/fetch-test-assets.sh prints",
            path.display()
        );
        std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "cannot read SD_WORKER_CLIP_BPE={}: {e}; run scripts/fetch-test-assets.sh",
                path.display()
            )
        })
    }

    /// Writes vocab.json + merges.txt as a hub CLIP repository ships them,
    /// built from OpenAI's BPE file the way `CLIPTokenizer` builds its vocabulary.
    fn write_real_clip(dir: &Path, config: Option<Value>, special_map: Option<Value>) {
        let bpe = clip_bpe_text();
        let merges: Vec<(String, String)> = bpe
            .split('\n')
            .skip(1)
            .take(CLIP_MERGES)
            .map(|line| {
                let (a, b) = line.split_once(' ').expect("merge line with a space");
                (a.to_string(), b.to_string())
            })
            .collect();
        assert_eq!(
            merges.len(),
            CLIP_MERGES,
            "SD_WORKER_CLIP_BPE file is too short"
        );
        let alphabet = byte_level_alphabet();
        let mut tokens: Vec<String> = alphabet.iter().map(|(_, c)| c.to_string()).collect();
        tokens.extend(alphabet.iter().map(|(_, c)| format!("{c}</w>")));
        tokens.extend(merges.iter().map(|(a, b)| format!("{a}{b}")));
        tokens.push("<|startoftext|>".to_string());
        tokens.push("<|endoftext|>".to_string());
        assert_eq!(tokens.len(), 49408);
        write_vocab_and_merges(dir, &tokens, &merges).unwrap();
        let config = config.unwrap_or_else(|| {
            serde_json::json!({
                "bos_token": {"content": "<|startoftext|>", "lstrip": false, "normalized": true, "rstrip": false, "single_word": false, "__type": "AddedToken"},
                "eos_token": {"content": "<|endoftext|>", "lstrip": false, "normalized": true, "rstrip": false, "single_word": false, "__type": "AddedToken"},
                "unk_token": {"content": "<|endoftext|>", "lstrip": false, "normalized": true, "rstrip": false, "single_word": false, "__type": "AddedToken"},
                "pad_token": "<|endoftext|>",
                "model_max_length": 77,
                "do_lower_case": true,
                "errors": "replace",
                "tokenizer_class": "CLIPTokenizer"
            })
        });
        std::fs::write(dir.join("tokenizer_config.json"), config.to_string()).unwrap();
        if let Some(map) = special_map {
            std::fs::write(dir.join("special_tokens_map.json"), map.to_string()).unwrap();
        }
    }

    fn real_clip(config: Option<Value>, special_map: Option<Value>) -> (TempDir, ClipTokenizer) {
        let dir = TempDir::new().unwrap();
        write_real_clip(dir.path(), config, special_map);
        let tok = ClipTokenizer::from_dir(dir.path()).expect("loading the real CLIP vocabulary");
        (dir, tok)
    }

    fn tiny(pad: &str) -> (TempDir, ClipTokenizer) {
        let dir = TempDir::new().unwrap();
        write_tiny_vocab(dir.path(), pad).unwrap();
        let tok = ClipTokenizer::from_dir(dir.path()).expect("loading the tiny vocabulary");
        (dir, tok)
    }

    fn padded(prefix: &[u32], pad: u32, len: usize) -> Vec<u32> {
        let mut ids = prefix.to_vec();
        ids.resize(len, pad);
        ids
    }

    #[test]
    fn real_clip_ids_match_hugging_face() {
        let (_dir, tok) = real_clip(None, None);
        assert_eq!(tok.vocab_size(), 49408);
        assert_eq!(tok.max_length(), 77);
        assert_eq!(
            (tok.bos_id(), tok.eos_id(), tok.pad_id()),
            (49406, 49407, 49407)
        );

        let cat = tok.encode("a photo of a cat").unwrap();
        assert_eq!(
            cat.ids,
            padded(&[49406, 320, 1125, 539, 320, 2368, 49407], 49407, 77)
        );
        assert_eq!(cat.token_count, 5);
        assert!(!cat.truncated);

        let red = tok.encode("A RED circle, on blue!").unwrap();
        assert_eq!(
            red.ids,
            padded(
                &[49406, 320, 736, 7117, 267, 525, 1746, 256, 49407],
                49407,
                77
            )
        );
        assert_eq!(red.token_count, 7);
        assert!(!red.truncated);
    }

    #[test]
    fn real_clip_exclamation_padding() {
        // SD 2.x style: pad_token "!" in tokenizer_config.json.
        let config = serde_json::json!({
            "bos_token": "<|startoftext|>",
            "eos_token": "<|endoftext|>",
            "unk_token": "<|endoftext|>",
            "pad_token": "!",
            "model_max_length": 77
        });
        let (_dir, tok) = real_clip(Some(config), None);
        assert_eq!(tok.pad_id(), 0);
        let cat = tok.encode("a photo of a cat").unwrap();
        assert_eq!(
            cat.ids,
            padded(&[49406, 320, 1125, 539, 320, 2368, 49407], 0, 77)
        );

        // stabilityai/stable-diffusion-2 layout: the config says <|endoftext|>,
        // special_tokens_map.json says "!" (as an object), and the map wins.
        let config = serde_json::json!({"pad_token": "<|endoftext|>", "model_max_length": 77});
        let map = serde_json::json!({
            "bos_token": {"content": "<|startoftext|>"},
            "eos_token": {"content": "<|endoftext|>"},
            "pad_token": {"content": "!", "lstrip": false, "normalized": false, "rstrip": false, "single_word": false}
        });
        let (_dir, tok) = real_clip(Some(config), Some(map));
        assert_eq!(tok.pad_id(), 0);
        let red = tok.encode("A RED circle, on blue!").unwrap();
        assert_eq!(
            red.ids,
            padded(&[49406, 320, 736, 7117, 267, 525, 1746, 256, 49407], 0, 77)
        );
    }

    #[test]
    fn real_clip_normalises_case_and_whitespace() {
        let (_dir, tok) = real_clip(None, None);
        let plain = tok.encode("a red circle").unwrap();
        for variant in [
            "A  RED\tcircle",
            "  a red circle  ",
            "\n\ta\u{00A0}Red\r\nCIRCLE\u{3000}",
            "a red\u{2003}\u{2003}circle",
        ] {
            assert_eq!(tok.encode(variant).unwrap(), plain, "{variant:?}");
        }
        // NFC: a decomposed "é" tokenizes like the composed one.
        assert_eq!(
            tok.encode("cafe\u{0301} au lait").unwrap(),
            tok.encode("caf\u{00E9} au lait").unwrap()
        );
    }

    #[test]
    fn real_clip_truncates_long_prompts() {
        let (_dir, tok) = real_clip(None, None);
        let words = ["red", "circle", "on", "a", "blue", "background"];
        let prompt: Vec<&str> = (0..200).map(|i| words[i % words.len()]).collect();
        let out = tok.encode(&prompt.join(" ")).unwrap();
        assert_eq!(out.ids.len(), tok.max_length());
        assert_eq!(out.ids[0], tok.bos_id());
        assert_eq!(out.ids[tok.max_length() - 1], tok.eos_id());
        assert!(out.truncated);
        assert!(out.token_count > 75, "token_count {}", out.token_count);
        assert_eq!(out.token_count, 200);
        // Nothing but real tokens between bos and eos.
        assert!(out.ids[1..76].iter().all(|&id| id < 49406));

        // Exactly 75 tokens fit without truncation; 76 do not.
        let fits = tok.encode(&vec!["cat"; 75].join(" ")).unwrap();
        assert!(!fits.truncated);
        assert_eq!(fits.ids[76], tok.eos_id());
        let over = tok.encode(&vec!["cat"; 76].join(" ")).unwrap();
        assert!(over.truncated);
        assert_eq!(over.token_count, 76);
        assert_eq!(over.ids[76], tok.eos_id());
    }

    #[test]
    fn real_clip_splits_long_prompts_into_windows() {
        let (_dir, tok) = real_clip(None, None);
        let cats = |n: usize| vec!["cat"; n].join(" ");
        let cat = tok.encode("cat").unwrap().ids[1];
        // 75 tokens: one window; 76: two, the second holding one token.
        assert_eq!(tok.windows(&cats(75), 8).unwrap().windows.len(), 1);
        let two = tok.windows(&cats(76), 8).unwrap();
        assert_eq!(two.windows.len(), 2);
        assert!(!two.truncated);
        assert_eq!(two.windows[0], tok.encode(&cats(75)).unwrap().ids);
        assert_eq!(two.windows[1], tok.encode("cat").unwrap().ids);
        assert!(two
            .windows
            .iter()
            .all(|w| w.len() == 77 && w[0] == tok.bos_id()));
        // Every token is kept, in order, across the windows.
        let kept: Vec<u32> = two
            .windows
            .iter()
            .flat_map(|w| w[1..].iter().copied().take_while(|&id| id != tok.eos_id()))
            .collect();
        assert_eq!(kept, vec![cat; 76]);
        // Past the window budget the rest is cut, and said so.
        let cut = tok.windows(&cats(200), 2).unwrap();
        assert_eq!(
            (cut.windows.len(), cut.token_count, cut.truncated),
            (2, 200, true)
        );
        // An empty prompt is one window of bos, eos and padding.
        let empty = tok.windows("  ", 8).unwrap();
        assert_eq!(empty.windows, vec![tok.window(&[])]);
        assert_eq!(&empty.windows[0][..2], &[tok.bos_id(), tok.eos_id()]);
    }

    #[test]
    fn real_clip_tokenizer_json_gives_the_same_ids() {
        let vocab_dir = TempDir::new().unwrap();
        write_real_clip(vocab_dir.path(), None, None);
        let from_vocab = ClipTokenizer::from_dir(vocab_dir.path()).unwrap();

        let json_dir = TempDir::new().unwrap();
        from_vocab
            .tokenizer
            .save(json_dir.path().join("tokenizer.json"), false)
            .unwrap();
        std::fs::copy(
            vocab_dir.path().join("tokenizer_config.json"),
            json_dir.path().join("tokenizer_config.json"),
        )
        .unwrap();
        assert!(!json_dir.path().join("vocab.json").exists());
        let from_json = ClipTokenizer::from_dir(json_dir.path()).unwrap();

        assert_eq!(from_json.vocab_size(), from_vocab.vocab_size());
        assert_eq!(from_json.max_length(), 77);
        assert_eq!(
            (from_json.bos_id(), from_json.eos_id(), from_json.pad_id()),
            (49406, 49407, 49407)
        );
        for prompt in [
            "a photo of a cat",
            "A RED circle, on blue!",
            "an astronaut riding a horse on mars, 4k, highly detailed, trending on artstation",
            "it's a dog's life -- don't you think?! 1234 ünïcödé 日本語 🐱",
            "",
        ] {
            assert_eq!(
                from_json.encode(prompt).unwrap(),
                from_vocab.encode(prompt).unwrap(),
                "{prompt:?}"
            );
        }
        assert_eq!(
            from_json.encode("a photo of a cat").unwrap().ids[..7],
            [49406, 320, 1125, 539, 320, 2368, 49407]
        );
    }

    #[test]
    fn real_clip_survives_odd_input() {
        let (_dir, tok) = real_clip(None, None);
        check_odd_input(&tok);
    }

    fn check_odd_input(tok: &ClipTokenizer) {
        let long: String = "abc def 🐱 ".repeat(1000);
        let one_word = "x".repeat(10_000);
        let controls: String = (0u8..32)
            .map(char::from)
            .chain(['\u{7f}', '\u{85}'])
            .collect();
        let inputs = [
            String::new(),
            "   \t\n ".to_string(),
            "🐱🐶🦄 👩‍🚀 🇯🇵".to_string(),
            long,
            one_word,
            controls,
            "\u{FEFF}\u{200B}\u{FFFD}\u{10FFFF}".to_string(),
            "<|startoftext|><|endoftext|> </w> #version: 0.2".to_string(),
        ];
        for input in &inputs {
            let out = tok.encode(input).unwrap();
            assert_eq!(out.ids.len(), tok.max_length());
            assert_eq!(out.ids[0], tok.bos_id());
            assert!(out.ids.iter().all(|&id| (id as usize) < tok.vocab_size()));
            let end = out.token_count.min(tok.max_length() - 2) + 1;
            assert_eq!(out.ids[end], tok.eos_id());
            assert!(out.ids[end + 1..].iter().all(|&id| id == tok.pad_id()));
            assert_eq!(out.truncated, out.token_count > tok.max_length() - 2);
        }
        let empty = tok.encode("").unwrap();
        assert_eq!(empty.token_count, 0);
        assert_eq!(empty.ids[1], tok.eos_id());
        assert_eq!(tok.encode(" \n\t ").unwrap(), empty);
    }

    #[test]
    fn tiny_vocab_round_trip() {
        let a = TempDir::new().unwrap();
        let b = TempDir::new().unwrap();
        let size_a = write_tiny_vocab(a.path(), "<|endoftext|>").unwrap();
        let size_b = write_tiny_vocab(b.path(), "<|endoftext|>").unwrap();
        assert_eq!(size_a, size_b);
        for name in [
            "vocab.json",
            "merges.txt",
            "tokenizer_config.json",
            "special_tokens_map.json",
        ] {
            let bytes_a = std::fs::read(a.path().join(name)).unwrap();
            let bytes_b = std::fs::read(b.path().join(name)).unwrap();
            assert!(bytes_a == bytes_b, "{name} differs between two writes");
        }
        // Writing again over an existing folder gives the same bytes too.
        write_tiny_vocab(a.path(), "<|endoftext|>").unwrap();
        assert_eq!(
            std::fs::read(a.path().join("vocab.json")).unwrap(),
            std::fs::read(b.path().join("vocab.json")).unwrap()
        );

        let merges = std::fs::read_to_string(a.path().join("merges.txt")).unwrap();
        let merge_count = merges.lines().count() - 1;
        assert!(merges.starts_with("#version: 0.2\n"));
        assert!(
            (200..=TINY_MAX_MERGES).contains(&merge_count),
            "{merge_count} merges"
        );
        assert!(size_a > 512 + 200 && size_a <= 1024, "{size_a} tokens");

        let tok = ClipTokenizer::from_dir(a.path()).unwrap();
        assert_eq!(tok.vocab_size(), size_a);
        assert_eq!(tok.max_length(), 77);
        assert_eq!(tok.bos_id() as usize, size_a - 2);
        assert_eq!(tok.eos_id() as usize, size_a - 1);
        assert_eq!(tok.pad_id(), tok.eos_id());
        assert_eq!(tok.tokenizer.token_to_id("!"), Some(0));
        assert_eq!(tok.tokenizer.token_to_id("a</w>"), Some(256 + 64));

        let out = tok.encode("a red circle on a blue background").unwrap();
        assert!(!out.truncated);
        // Every training word is one token once merged.
        assert_eq!(out.token_count, 7);
        assert!(out.ids.iter().all(|&id| (id as usize) < size_a));
        assert_eq!(out.ids[0], tok.bos_id());
        assert_eq!(out.ids[8], tok.eos_id());
        assert!(out.ids[9..].iter().all(|&id| id == tok.pad_id()));
        let words: Vec<String> = out.ids[1..8]
            .iter()
            .map(|&id| tok.tokenizer.id_to_token(id).unwrap())
            .collect();
        assert_eq!(
            words,
            [
                "a</w>",
                "red</w>",
                "circle</w>",
                "on</w>",
                "a</w>",
                "blue</w>",
                "background</w>"
            ]
        );
        // Unknown words still tokenize (byte by byte in the worst case).
        let odd = tok.encode("Zebra-crossing 42 über 🐱").unwrap();
        assert!(odd.token_count > 0);
        assert!(odd.ids.iter().all(|&id| (id as usize) < size_a));
        check_odd_input(&tok);

        // "!" padding (SD 2.x style) is id 0.
        let (_dir, bang) = tiny("!");
        assert_eq!(bang.pad_id(), 0);
        assert_eq!(bang.vocab_size(), size_a);
        assert_eq!(bang.encode("a red circle").unwrap().ids[5..], [0; 72]);
    }

    #[test]
    fn tiny_vocab_rejects_unknown_pad() {
        let dir = TempDir::new().unwrap();
        let err = write_tiny_vocab(dir.path(), "<pad>").unwrap_err();
        assert!(format!("{err:#}").contains("<pad>"), "{err:#}");
    }

    #[test]
    fn max_length_comes_from_the_config_within_reason() {
        let cases = [
            (serde_json::json!(64), 64),
            (serde_json::json!(77.0), 77),
            (
                serde_json::json!(1_000_000_000_000_000_019_884_624_838_656.0),
                77,
            ),
            (serde_json::json!(100_000), 77),
            (serde_json::json!(1), 77),
            (serde_json::json!(-5), 77),
            (serde_json::json!("77"), 77),
            (Value::Null, 77),
        ];
        for (value, expected) in cases {
            let (dir, _) = tiny("<|endoftext|>");
            let config = serde_json::json!({"model_max_length": value, "pad_token": "!"});
            std::fs::write(dir.path().join("tokenizer_config.json"), config.to_string()).unwrap();
            std::fs::remove_file(dir.path().join("special_tokens_map.json")).unwrap();
            let tok = ClipTokenizer::from_dir(dir.path()).unwrap();
            assert_eq!(tok.max_length(), expected, "model_max_length {value}");
            assert_eq!(tok.pad_id(), 0);
            let out = tok.encode("a photo of a cat on a red background").unwrap();
            assert_eq!(out.ids.len(), expected);
        }
        // No config at all: defaults (77, pad = eos).
        let (dir, _) = tiny("!");
        std::fs::remove_file(dir.path().join("tokenizer_config.json")).unwrap();
        std::fs::remove_file(dir.path().join("special_tokens_map.json")).unwrap();
        let tok = ClipTokenizer::from_dir(dir.path()).unwrap();
        assert_eq!(tok.max_length(), 77);
        assert_eq!(tok.pad_id(), tok.eos_id());
    }

    fn load_err(dir: &Path) -> String {
        format!("{:#}", ClipTokenizer::from_dir(dir).unwrap_err())
    }

    #[test]
    fn clear_errors_for_broken_folders() {
        let missing = TempDir::new().unwrap();
        let err = load_err(&missing.path().join("nope"));
        assert!(err.contains("does not exist"), "{err}");
        let err = load_err(missing.path());
        assert!(
            err.contains("tokenizer.json") && err.contains("vocab.json"),
            "{err}"
        );

        let (dir, _) = tiny("<|endoftext|>");
        let p = dir.path();
        let vocab = std::fs::read_to_string(p.join("vocab.json")).unwrap();
        let merges = std::fs::read_to_string(p.join("merges.txt")).unwrap();
        let restore = || {
            std::fs::write(p.join("vocab.json"), &vocab).unwrap();
            std::fs::write(p.join("merges.txt"), &merges).unwrap();
            write_tiny_vocab(p, "<|endoftext|>").unwrap();
        };

        std::fs::remove_file(p.join("merges.txt")).unwrap();
        let err = load_err(p);
        assert!(
            err.contains("merges.txt") && err.contains("missing"),
            "{err}"
        );
        restore();

        std::fs::write(p.join("vocab.json"), "{\"a\": 0,").unwrap();
        let err = load_err(p);
        assert!(
            err.contains("vocab.json") && err.contains("not valid JSON"),
            "{err}"
        );
        restore();

        std::fs::write(p.join("vocab.json"), "{\"a\": -1}").unwrap();
        let err = load_err(p);
        assert!(err.contains("vocab.json"), "{err}");
        restore();

        let first_merge = merges.lines().nth(1).unwrap();
        std::fs::write(
            p.join("merges.txt"),
            format!("#version: 0.2\n{first_merge}\nnot-a-pair\n"),
        )
        .unwrap();
        let err = load_err(p);
        assert!(err.contains("merges.txt line 3"), "{err}");
        std::fs::write(p.join("merges.txt"), "#version: 0.2\nzebra crossing\n").unwrap();
        let err = load_err(p);
        assert!(
            err.contains("merges.txt line 2") && err.contains("zebra"),
            "{err}"
        );
        restore();

        let mut map: serde_json::Map<String, Value> = serde_json::from_str(&vocab).unwrap();
        map.remove("<|startoftext|>");
        std::fs::write(p.join("vocab.json"), Value::Object(map).to_string()).unwrap();
        let err = load_err(p);
        assert!(
            err.contains("<|startoftext|>") && err.contains("vocab.json"),
            "{err}"
        );
        restore();

        std::fs::write(p.join("tokenizer_config.json"), "{ nope").unwrap();
        let err = load_err(p);
        assert!(err.contains("tokenizer_config.json"), "{err}");
        restore();

        std::fs::write(p.join("special_tokens_map.json"), "[1, 2]").unwrap();
        let err = load_err(p);
        assert!(err.contains("special_tokens_map.json"), "{err}");
        restore();

        std::fs::write(
            p.join("special_tokens_map.json"),
            r#"{"pad_token": "<pad>"}"#,
        )
        .unwrap();
        let err = load_err(p);
        assert!(
            err.contains("<pad>") && err.contains("special_tokens_map.json"),
            "{err}"
        );
        std::fs::write(p.join("special_tokens_map.json"), r#"{"pad_token": 5}"#).unwrap();
        let err = load_err(p);
        assert!(
            err.contains("pad_token") && err.contains("special_tokens_map.json"),
            "{err}"
        );
        restore();

        std::fs::write(p.join("tokenizer.json"), "{}").unwrap();
        let err = load_err(p);
        assert!(err.contains("tokenizer.json"), "{err}");
        std::fs::remove_file(p.join("tokenizer.json")).unwrap();

        assert!(ClipTokenizer::from_dir(p).is_ok());
    }

    #[test]
    fn tokenizer_is_shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync + Clone + std::fmt::Debug>() {}
        assert_send_sync::<ClipTokenizer>();
        let (_dir, tok) = tiny("<|endoftext|>");
        assert!(format!("{tok:?}").contains("max_length: 77"));
    }
}
