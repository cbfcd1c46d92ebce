//! An incremental Server-Sent Events parser: bytes in, events out.
//!
//! It follows the WHATWG "event stream interpretation" rules: lines end with
//! `\n`, `\r\n` or `\r` (a `\r\n` split across two chunks counts once), a
//! leading UTF-8 byte order mark is dropped, lines starting with `:` are
//! comments (the worker's keep-alives), a field's value loses one leading
//! space, `data:` lines of one event are joined with `\n`, an `id` holding a
//! NUL is ignored, and a blank line dispatches the event (or just resets it
//! when it had no `data:`). An event that the stream's end cuts off is
//! dropped, as browsers do.
//!
//! Pure Rust, with no I/O: the browser client feeds it the chunks of a
//! `fetch` body; the native tests feed it every possible split.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `id:` field given in this event's block, if any. (The spec's
    /// "last event id" carries over from earlier events: see
    /// [`SseParser::last_event_id`].)
    pub id: Option<String>,
    /// The `event:` field; `None` for unnamed events (`message`).
    pub event: Option<String>,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
}

/// Incremental parser. Feed it chunks with [`SseParser::feed`].
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of the line being read (no line end yet).
    line: Vec<u8>,
    /// The previous chunk ended with `\r`: a `\n` opening this one belongs to it.
    after_cr: bool,
    /// Still at the very start of the stream (a BOM may come).
    started: bool,
    data: String,
    has_data: bool,
    id: Option<String>,
    event: Option<String>,
    last_event_id: String,
    retry_ms: Option<u64>,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses one chunk and returns the events it completed, in order.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let out = Vec::new();
        if !self.started {
            // The BOM may itself arrive split; wait until 3 bytes are known.
            let mut head = std::mem::take(&mut self.line);
            head.extend_from_slice(chunk);
            if head.len() < 3 && b"\xEF\xBB\xBF".starts_with(&head) {
                self.line = head;
                return out;
            }
            self.started = true;
            let body = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&head);
            return self.feed_started(body, out);
        }
        self.feed_started(chunk, out)
    }

    fn feed_started(&mut self, mut rest: &[u8], mut out: Vec<SseEvent>) -> Vec<SseEvent> {
        if self.after_cr && !rest.is_empty() {
            self.after_cr = false;
            if let Some(b'\n') = rest.first() {
                rest = &rest[1..];
            }
        }
        while let Some(end) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.line.extend_from_slice(&rest[..end]);
            let line = std::mem::take(&mut self.line);
            self.process_line(&line, &mut out);
            self.line = line;
            self.line.clear();
            let cr = rest[end] == b'\r';
            rest = &rest[end + 1..];
            if cr {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
        self.line.extend_from_slice(rest);
        out
    }

    fn process_line(&mut self, line: &[u8], out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line[0] == b':' {
            return; // comment (keep-alive)
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        let value = String::from_utf8_lossy(value);
        match name {
            b"data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(&value);
                self.has_data = true;
            }
            b"id" if !value.contains('\0') => self.id = Some(value.into_owned()),
            b"event" => self.event = Some(value.into_owned()),
            b"retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                self.retry_ms = value.parse().ok();
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        let id = self.id.take();
        if let Some(id) = &id {
            self.last_event_id.clone_from(id);
        }
        let event = self.event.take();
        if !self.has_data {
            self.data.clear();
            return;
        }
        self.has_data = false;
        out.push(SseEvent {
            id,
            event,
            data: std::mem::take(&mut self.data),
        });
    }

    /// The spec's last event id: the latest `id:` seen in a dispatched block
    /// (empty when none was).
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }

    /// The latest valid `retry:` field, in milliseconds.
    pub fn retry_ms(&self) -> Option<u64> {
        self.retry_ms
    }

    /// True when bytes of an unfinished line or event are buffered: if the
    /// stream ends now, they are lost.
    pub fn has_partial(&self) -> bool {
        !self.line.is_empty() || self.has_data
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: Option<&str>, data: &str) -> SseEvent {
        SseEvent {
            id: id.map(str::to_owned),
            event: None,
            data: data.to_owned(),
        }
    }

    /// Feeds `input` split at the given byte offsets.
    fn parse_split(input: &[u8], cuts: &[usize]) -> Vec<SseEvent> {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        let mut from = 0;
        for &cut in cuts {
            out.extend(p.feed(&input[from..cut]));
            from = cut;
        }
        out.extend(p.feed(&input[from..]));
        out
    }

    /// Every split into two chunks, every split into three chunks, and one
    /// byte at a time must all give `expected`.
    fn assert_all_splits(input: &[u8], expected: &[SseEvent]) {
        assert_eq!(parse_split(input, &[]), expected, "whole");
        for i in 0..=input.len() {
            assert_eq!(parse_split(input, &[i]), expected, "split at {i}");
        }
        if input.len() <= 400 {
            for i in 0..=input.len() {
                for j in i..=input.len() {
                    assert_eq!(parse_split(input, &[i, j]), expected, "split at {i},{j}");
                }
            }
        }
        let bytes: Vec<usize> = (1..input.len()).collect();
        assert_eq!(parse_split(input, &bytes), expected, "byte by byte");
    }

    /// What the worker sends for a short job (worker/src/http/stream.rs).
    const WORKER_STREAM: &str = "id: 1\ndata: {\"type\":\"queued\",\"position\":1}\n\n\
        id: 2\ndata: {\"type\":\"started\",\"total\":2}\n\n\
        :\n\n\
        id: 3\ndata: {\"type\":\"progress\",\"step\":1,\"total\":2,\"percent\":50.0,\"eta_ms\":3}\n\n\
        id: 4\ndata: {\"type\":\"progress\",\"step\":2,\"total\":2,\"percent\":100.0,\"eta_ms\":0}\n\n\
        id: 5\ndata: {\"type\":\"complete\",\"images\":[],\"elapsed_ms\":7}\n\n\
        data: [DONE]\n\n";

    fn worker_events() -> Vec<SseEvent> {
        vec![
            ev(Some("1"), r#"{"type":"queued","position":1}"#),
            ev(Some("2"), r#"{"type":"started","total":2}"#),
            ev(
                Some("3"),
                r#"{"type":"progress","step":1,"total":2,"percent":50.0,"eta_ms":3}"#,
            ),
            ev(
                Some("4"),
                r#"{"type":"progress","step":2,"total":2,"percent":100.0,"eta_ms":0}"#,
            ),
            ev(
                Some("5"),
                r#"{"type":"complete","images":[],"elapsed_ms":7}"#,
            ),
            ev(None, "[DONE]"),
        ]
    }

    #[test]
    fn worker_stream_at_every_split() {
        assert_all_splits(WORKER_STREAM.as_bytes(), &worker_events());
    }

    #[test]
    fn crlf_and_cr_line_ends_at_every_split() {
        let crlf = WORKER_STREAM.replace('\n', "\r\n");
        assert_all_splits(crlf.as_bytes(), &worker_events());
        let cr = WORKER_STREAM.replace('\n', "\r");
        assert_all_splits(cr.as_bytes(), &worker_events());
        // Mixed within one stream.
        let mixed = "id: 1\r\ndata: a\r\rid: 2\ndata: b\r\n\ndata: c\r\r\n";
        assert_all_splits(
            mixed.as_bytes(),
            &[ev(Some("1"), "a"), ev(Some("2"), "b"), ev(None, "c")],
        );
    }

    #[test]
    fn cr_then_lf_in_the_next_chunk_is_one_line_end() {
        let mut p = SseParser::new();
        assert!(p.feed(b"data: x\r").is_empty());
        // If the \n were a second line end, this would dispatch now.
        assert!(p.feed(b"\n").is_empty());
        assert_eq!(p.feed(b"\r\n"), vec![ev(None, "x")]);
    }

    #[test]
    fn multi_line_data_is_joined_with_newlines() {
        let input = "data: first\ndata:second\ndata:  third\ndata\n\n";
        assert_all_splits(input.as_bytes(), &[ev(None, "first\nsecond\n third\n")]);
        let empty = "data\n\ndata:\n\n";
        assert_all_splits(empty.as_bytes(), &[ev(None, ""), ev(None, "")]);
    }

    #[test]
    fn comments_and_unknown_fields_are_ignored() {
        let input = ": keep-alive\n:\nfoo: bar\nid: 9\n: in between\ndata: x\nbaz\n\n:\n\n";
        assert_all_splits(input.as_bytes(), &[ev(Some("9"), "x")]);
    }

    #[test]
    fn blocks_without_data_dispatch_nothing_but_keep_the_id() {
        let mut p = SseParser::new();
        assert!(p.feed(b"id: 7\n\n").is_empty());
        assert_eq!(p.last_event_id(), "7");
        assert_eq!(p.feed(b"data: y\n\n"), vec![ev(None, "y")]);
        assert_eq!(p.last_event_id(), "7");
        assert_eq!(p.feed(b"id: 8\ndata: z\n\n"), vec![ev(Some("8"), "z")]);
        assert_eq!(p.last_event_id(), "8");
    }

    #[test]
    fn ids_with_nul_are_ignored_and_empty_ids_reset() {
        let mut p = SseParser::new();
        assert_eq!(p.feed(b"id: 3\ndata: a\n\n"), vec![ev(Some("3"), "a")]);
        assert_eq!(p.feed(b"id: 4\0\ndata: b\n\n"), vec![ev(None, "b")]);
        assert_eq!(p.last_event_id(), "3");
        assert_eq!(p.feed(b"id\ndata: c\n\n"), vec![ev(Some(""), "c")]);
        assert_eq!(p.last_event_id(), "");
    }

    #[test]
    fn named_events_and_retry() {
        let mut p = SseParser::new();
        let got = p.feed(b"event: update\nretry: 1500\ndata: a\n\nretry: x1\ndata: b\n\n");
        assert_eq!(got[0].event.as_deref(), Some("update"));
        assert_eq!(got[1].event, None, "the event name does not carry over");
        assert_eq!(p.retry_ms(), Some(1500), "an invalid retry is ignored");
    }

    #[test]
    fn only_one_leading_space_is_removed() {
        assert_all_splits(b"data:   x \n\n", &[ev(None, "  x ")]);
        assert_all_splits(b"data:x:y\n\n", &[ev(None, "x:y")]);
    }

    #[test]
    fn bom_is_dropped_even_when_split() {
        let input = "\u{FEFF}data: a\n\n";
        assert_all_splits(input.as_bytes(), &[ev(None, "a")]);
        // Only at the start: later it is part of the field name.
        assert_all_splits(
            "data: a\n\n\u{FEFF}data: b\n\n".as_bytes(),
            &[ev(None, "a")],
        );
        // A stream shorter than a BOM still parses.
        let mut p = SseParser::new();
        assert!(p.feed(b"\n").is_empty());
        assert_eq!(p.feed(b"data: q\n\n"), vec![ev(None, "q")]);
    }

    #[test]
    fn multibyte_utf8_split_across_chunks() {
        let input = "id: 1\ndata: {\"prompt\":\"ünïcødé 🎨 猫\"}\n\n";
        assert_all_splits(
            input.as_bytes(),
            &[ev(Some("1"), "{\"prompt\":\"ünïcødé 🎨 猫\"}")],
        );
    }

    #[test]
    fn a_cut_off_event_is_not_dispatched() {
        let mut p = SseParser::new();
        assert_eq!(
            p.feed(b"id: 1\ndata: a\n\nid: 2\ndata: {\"ty"),
            vec![ev(Some("1"), "a")]
        );
        assert!(p.has_partial());
        let mut p = SseParser::new();
        assert!(p.feed(b"id: 1\ndata: a\n").is_empty());
        assert!(p.has_partial(), "data without the blank line is unfinished");
        let mut p = SseParser::new();
        assert_eq!(p.feed(b"data: a\n\n").len(), 1);
        assert!(!p.has_partial());
    }

    #[test]
    fn large_data_line_in_many_chunks() {
        let image = "A".repeat(300_000);
        let input = format!("id: 24\ndata: {{\"image\":\"{image}\"}}\n\ndata: [DONE]\n\n");
        let bytes = input.as_bytes();
        let mut p = SseParser::new();
        let mut out = Vec::new();
        for chunk in bytes.chunks(1000) {
            out.extend(p.feed(chunk));
        }
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].id.as_deref(), Some("24"));
        assert_eq!(out[0].data.len(), image.len() + 12);
        assert_eq!(out[1], ev(None, "[DONE]"));
    }

    #[test]
    fn empty_chunks_change_nothing() {
        let mut p = SseParser::new();
        assert!(p.feed(b"").is_empty());
        assert!(p.feed(b"data: a\r").is_empty());
        assert!(p.feed(b"").is_empty());
        assert!(p.feed(b"\n").is_empty());
        assert_eq!(p.feed(b"\n"), vec![ev(None, "a")]);
    }
}
