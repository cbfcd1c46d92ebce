//! AUTOMATIC1111's extra-network tags in prompts, and embedding names in them.
//!
//! Tags follow A1111's `modules/extra_networks.py`: the pattern
//! `<(\w+):([^>]+)>`; the arguments split at `:`; an argument `key=value`
//! (exactly one `=`) is named, the others positional. For `lora` (and its
//! alias `lyco`, from the LyCORIS extension), as
//! `extensions-builtin/Lora/extra_networks_lora.py` reads them: the first
//! positional is the name, the second the text-encoder weight (1.0), the
//! third the UNet weight (the text-encoder weight); `te=` and `unet=`
//! override them. So `<lora:x>` is 1.0, `<lora:x:0.8>` 0.8 on both,
//! `<lora:x:0.8:0.5>` and `<lora:x:te=0.8:unet=0.5>` 0.8 on the text encoder
//! and 0.5 on the UNet. A tag is replaced by nothing, as A1111 does.

/// A `<lora:...>` tag, read.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraTag {
    /// The tag as written, for messages.
    pub text: String,
    pub name: String,
    pub text_encoder_weight: f64,
    pub unet_weight: f64,
}

/// A tag that cannot be used: the tag as written, and why.
pub type BadTag = (String, String);

/// Removes every extra-network tag from `text`. Returns the text without
/// them and, in order, each tag read, or the tag and why it cannot be used
/// (another kind of network, no name, a weight that is not a number, `dyn`).
pub fn extract_lora_tags(text: &str) -> (String, Vec<Result<LoraTag, BadTag>>) {
    let mut out = String::with_capacity(text.len());
    let mut tags = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('<') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match tag_at(after) {
            Some((kind, args, len)) => {
                let whole = &rest[open..open + 1 + len];
                tags.push(read_tag(whole, kind, args));
                rest = &after[len..];
            }
            None => {
                out.push('<');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    (out, tags)
}

/// `kind:args>` at the start of `s` (A1111's `(\w+):([^>]+)>`): the kind,
/// the arguments and the length through the closing `>`.
fn tag_at(s: &str) -> Option<(&str, &str, usize)> {
    let kind_len = s
        .char_indices()
        .find(|&(_, c)| !is_word_char(c))
        .map_or(s.len(), |(i, _)| i);
    if kind_len == 0 || !s[kind_len..].starts_with(':') {
        return None;
    }
    let args_start = kind_len + 1;
    let close = s[args_start..].find('>')?;
    if close == 0 {
        return None;
    }
    Some((
        &s[..kind_len],
        &s[args_start..args_start + close],
        args_start + close + 1,
    ))
}

fn read_tag(whole: &str, kind: &str, args: &str) -> Result<LoraTag, (String, String)> {
    let fail = |why: String| Err((whole.to_string(), why));
    if kind != "lora" && kind != "lyco" {
        return fail(format!(
            "`<{kind}:...>` networks are not supported here; only `<lora:name:weight>`"
        ));
    }
    let mut positional = Vec::new();
    let mut named = Vec::new();
    for item in args.split(':') {
        // Python's `item.split('=', 2)` has two parts for exactly one `=`.
        match item.split('=').collect::<Vec<_>>()[..] {
            [k, v] => named.push((k.trim(), v)),
            _ => positional.push(item),
        }
    }
    let Some(name) = positional
        .first()
        .map(|n| n.trim())
        .filter(|n| !n.is_empty())
    else {
        return fail("the tag names no LoRA".into());
    };
    let number = |what: &str, v: &str| -> Result<f64, (String, String)> {
        match v.trim().parse::<f64>() {
            Ok(x) if x.is_finite() => Ok(x),
            _ => Err((
                whole.to_string(),
                format!("the {what} weight `{v}` is not a number"),
            )),
        }
    };
    let mut te = match positional.get(1) {
        Some(v) => number("text-encoder", v)?,
        None => 1.0,
    };
    let mut unet = match positional.get(2) {
        Some(v) => Some(number("UNet", v)?),
        None => None,
    };
    for (k, v) in named {
        match k {
            "te" => te = number("text-encoder", v)?,
            "unet" => unet = Some(number("UNet", v)?),
            "dyn" => return fail("`dyn` (a reduced rank) is not supported".into()),
            other => return fail(format!("unknown argument `{other}=`; use te= or unet=")),
        }
    }
    if positional.len() > 3 {
        return fail("`dyn` (a fourth argument, a reduced rank) is not supported".into());
    }
    Ok(LoraTag {
        text: whole.to_string(),
        name: name.to_string(),
        text_encoder_weight: te,
        unet_weight: unet.unwrap_or(te),
    })
}

/// Python's `\w` on `str`: letters, digits and `_`.
fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The pieces the CLIP tokenizer splits lowercased text into before BPE
/// (`[\p{L}]+`, `[\p{N}]`, `[^\s\p{L}\p{N}]+`; whitespace separates).
fn pieces(text: &str) -> Vec<String> {
    #[derive(PartialEq, Clone, Copy)]
    enum Class {
        Letter,
        Digit,
        Other,
        Space,
    }
    let class = |c: char| {
        if c.is_whitespace() {
            Class::Space
        } else if c.is_alphabetic() {
            Class::Letter
        } else if c.is_numeric() {
            Class::Digit
        } else {
            Class::Other
        }
    };
    let mut out: Vec<String> = Vec::new();
    let mut last = Class::Space;
    for c in text.to_lowercase().chars() {
        let k = class(c);
        match k {
            Class::Space => {}
            Class::Digit => out.push(c.to_string()),
            _ if k == last => out.last_mut().expect("a piece").push(c),
            _ => out.push(c.to_string()),
        }
        last = if k == Class::Digit { Class::Space } else { k };
    }
    out
}

/// The names of `names` written in `text`, in order of first appearance,
/// each once. A name is written where the text's tokenizer pieces hold the
/// name's pieces in a row (case-insensitive; `EasyNegative,` and
/// `(easynegative:1.2)` hold `easynegative`, `easynegatives` does not), the
/// longest name winning where several start at the same piece: A1111's
/// `EmbeddingDatabase.find_embedding_at_position`, on whole pieces.
pub fn embeddings_in<'a>(text: &str, names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let text = pieces(text);
    let mut names: Vec<(Vec<String>, &str)> = names
        .into_iter()
        .map(|n| (pieces(n), n))
        .filter(|(p, _)| !p.is_empty())
        .collect();
    names.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
    let mut found: Vec<String> = Vec::new();
    let mut i = 0;
    while i < text.len() {
        let hit = names
            .iter()
            .find(|(p, _)| text[i..].starts_with(p.as_slice()));
        match hit {
            Some((p, name)) => {
                if !found.iter().any(|f| f == name) {
                    found.push(name.to_string());
                }
                i += p.len();
            }
            None => i += 1,
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Result<LoraTag, (String, String)> {
        let (_, mut tags) = extract_lora_tags(text);
        assert_eq!(tags.len(), 1, "{text}");
        tags.remove(0)
    }

    #[test]
    fn reads_tags_as_a1111() {
        let (clean, tags) = extract_lora_tags(
            "a cat <lora:style:0.8>, <lora:detail> on a <mat>, <lyco:x:0.5:0.25>",
        );
        assert_eq!(clean, "a cat ,  on a <mat>, ");
        let tags: Vec<_> = tags.into_iter().map(Result::unwrap).collect();
        assert_eq!(tags[0].name, "style");
        assert_eq!(
            (tags[0].text_encoder_weight, tags[0].unet_weight),
            (0.8, 0.8)
        );
        assert_eq!(
            (tags[1].text_encoder_weight, tags[1].unet_weight),
            (1.0, 1.0)
        );
        assert_eq!(
            (tags[2].text_encoder_weight, tags[2].unet_weight),
            (0.5, 0.25)
        );
        assert_eq!(tags[0].text, "<lora:style:0.8>");
        let t = one("<lora:x:te=0.3:unet=-1>").unwrap();
        assert_eq!((t.text_encoder_weight, t.unet_weight), (0.3, -1.0));
        let t = one("<lora:x:0.7:unet=0.1>").unwrap();
        assert_eq!((t.text_encoder_weight, t.unet_weight), (0.7, 0.1));
        let t = one("<lora: sub/my lora :1e-1>").unwrap();
        assert_eq!((t.name.as_str(), t.unet_weight), ("sub/my lora", 0.1));
        for (bad, why) in [
            ("<lora:x:abc>", "not a number"),
            ("<hypernet:x:1>", "not supported"),
            ("<lora:x:1:1:8>", "dyn"),
            ("<lora:x:dyn=8>", "dyn"),
            ("<lora:x:foo=1>", "unknown argument"),
            ("<lora:te=1>", "names no LoRA"),
        ] {
            let (tag, reason) = one(bad).unwrap_err();
            assert_eq!(tag, bad);
            assert!(reason.contains(why), "{bad}: {reason}");
        }
        // Not tags: kept as text.
        let (clean, tags) = extract_lora_tags("a <b> <:x> <lora:> c < d");
        assert_eq!(
            (clean.as_str(), tags.len()),
            ("a <b> <:x> <lora:> c < d", 0)
        );
    }

    #[test]
    fn finds_embedding_names_as_whole_pieces() {
        let names = ["EasyNegative", "bad-hands-5", "bad", "neg", "neg v2"];
        let got = embeddings_in(
            "(easynegative:1.2), BAD-HANDS-5, negatives, badge, neg v2, bad",
            names,
        );
        assert_eq!(got, ["EasyNegative", "bad-hands-5", "neg v2", "bad"]);
        assert!(embeddings_in("nothing here", names).is_empty());
        assert_eq!(embeddings_in("neg neg", names), ["neg"]);
    }
}
