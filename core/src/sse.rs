//! Incremental Server-Sent Events parser (WHATWG "event stream" rules) that also
//! keeps every event's exact bytes, so a proxy can inspect events and forward them
//! unchanged.
//!
//! Decisions beyond the WHATWG rules, all made for byte-exact forwarding:
//! - Every block ended by a blank line is returned, even one with no `data:` line
//!   (comments-only keep-alives, stray blank lines). Such events have empty `data`
//!   and `event == None`; the caller decides whether they mean anything.
//! - A `\r` that ends a chunk is held back until the next byte arrives (or
//!   [`SseParser::finish`]), because a following `\n` belongs to the same line
//!   ending and must land in the same event's `raw`. Streams that end lines with
//!   a lone `\r` therefore see each event one chunk later; `\r\n` and `\n` streams
//!   are not delayed.
//! - `id` is the `id:` field of this event only (the spec's "last event ID" carries
//!   over between events; a proxy wants what this block said). An `id` value
//!   containing NUL is ignored, as the spec says.
//! - An `event:` field with an empty value gives `event == None` (the spec treats
//!   empty as the default type "message").
//! - [`SseParser::finish`] parses an unterminated last line too (the spec would drop
//!   it) and returns whatever bytes were buffered, so nothing is lost at EOF.
//! - A UTF-8 byte order mark at the very start of the stream is ignored for parsing
//!   but kept in `raw`.

/// One Server-Sent Event. `raw` is the exact bytes of the event as received, including its terminating blank line,
/// so a proxy can forward it unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
    pub id: Option<String>,
    pub raw: Vec<u8>,
}

/// Fields of the event being built, filled in as its lines complete.
#[derive(Debug, Default)]
struct Pending {
    /// `data:` values, each followed by `\n` (the last one is dropped on dispatch).
    data: Vec<u8>,
    event: Vec<u8>,
    id: Option<Vec<u8>>,
}

impl Pending {
    /// Applies one complete line (without its terminator). Returns true for the
    /// blank line that dispatches the event.
    fn apply_line(&mut self, line: &[u8]) -> bool {
        if line.is_empty() {
            return true;
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            // Comment: nothing to record, its bytes stay in `raw`.
            Some(0) => return false,
            Some(i) => {
                let value = &line[i + 1..];
                (&line[..i], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match name {
            b"data" => {
                self.data.extend_from_slice(value);
                self.data.push(b'\n');
            }
            b"event" => self.event = value.to_vec(),
            b"id" if !value.contains(&0) => self.id = Some(value.to_vec()),
            // `retry` and unknown fields change nothing a proxy needs.
            _ => {}
        }
        false
    }

    fn take(&mut self, raw: Vec<u8>) -> SseEvent {
        let mut p = std::mem::take(self);
        if p.data.last() == Some(&b'\n') {
            p.data.pop();
        }
        SseEvent {
            event: (!p.event.is_empty()).then(|| lossy(p.event)),
            data: lossy(p.data),
            id: p.id.map(lossy),
            raw,
        }
    }
}

/// Invalid UTF-8 becomes U+FFFD. Byte-level parsing first is equivalent to decoding
/// first: the bytes the parser looks at (`\r`, `\n`, `:`, space) are ASCII and never
/// occur inside a multi-byte sequence.
fn lossy(bytes: Vec<u8>) -> String {
    match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

#[derive(Debug, Default)]
pub struct SseParser {
    /// Raw bytes of the event in progress: its complete lines, then the partial line.
    buf: Vec<u8>,
    /// Offset in `buf` of the first byte of the line not yet terminated.
    line_start: usize,
    /// Offset up to which `buf` was searched for a line end, so a long line arriving
    /// in many small chunks is scanned once, not once per chunk.
    scanned: usize,
    pending: Pending,
    /// Set once the stream's first line was parsed (only that one may start with a BOM).
    past_first_line: bool,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed any chunk (split anywhere, even inside a UTF-8 char or between \r and \n); returns the events completed by it.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        self.buf.extend_from_slice(chunk);
        let mut events = Vec::new();
        // Start of the event in progress within `buf`; compacted once at the end so a
        // chunk carrying many events does not shift the buffer once per event.
        let mut event_start = 0;
        loop {
            let Some(rel) = self.buf[self.scanned..]
                .iter()
                .position(|&b| b == b'\n' || b == b'\r')
            else {
                self.scanned = self.buf.len();
                break;
            };
            let at = self.scanned + rel;
            let next = if self.buf[at] == b'\r' {
                match self.buf.get(at + 1) {
                    Some(b'\n') => at + 2,
                    Some(_) => at + 1,
                    None => {
                        // Wait: a `\n` in the next chunk is part of this line ending.
                        self.scanned = at;
                        break;
                    }
                }
            } else {
                at + 1
            };
            let dispatch = self.apply_line(at);
            self.line_start = next;
            self.scanned = next;
            if dispatch {
                let raw = self.buf[event_start..next].to_vec();
                events.push(self.pending.take(raw));
                event_start = next;
            }
        }
        if event_start > 0 {
            self.buf.drain(..event_start);
            self.line_start -= event_start;
            self.scanned -= event_start;
        }
        events
    }

    /// End of stream: returns a trailing event that lacked its final blank line, if it had any data.
    ///
    /// "Any data" means any buffered byte (a partial comment included), so that a
    /// proxy forwarding `raw` loses nothing; `data` may be empty. An unterminated
    /// last line is parsed as if it were terminated. The parser is reset afterwards.
    pub fn finish(&mut self) -> Option<SseEvent> {
        if self.line_start < self.buf.len() {
            // `scanned` stops on a held-back final `\r`; otherwise it is at the end.
            self.apply_line(self.scanned);
        }
        let raw = std::mem::take(&mut self.buf);
        let event = (!raw.is_empty()).then(|| self.pending.take(raw));
        *self = Self::default();
        event
    }

    /// Bytes held back waiting for the rest of an event (for memory caps).
    pub fn buffered_len(&self) -> usize {
        self.buf.len()
    }

    /// Applies the line `buf[line_start..end]`; true if it dispatches the event.
    fn apply_line(&mut self, end: usize) -> bool {
        let mut line = &self.buf[self.line_start..end];
        if !self.past_first_line {
            self.past_first_line = true;
            line = line.strip_prefix(BOM).unwrap_or(line);
        }
        self.pending.apply_line(line)
    }
}

#[cfg(test)]
// A panic is how a test reports a broken expectation.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn feed_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        for c in chunks {
            out.extend(p.feed(c));
        }
        out.extend(p.finish());
        out
    }

    fn ev(event: Option<&str>, data: &str, id: Option<&str>, raw: &str) -> SseEvent {
        SseEvent {
            event: event.map(str::to_owned),
            data: data.to_owned(),
            id: id.map(str::to_owned),
            raw: raw.as_bytes().to_vec(),
        }
    }

    #[test]
    fn simple_events() {
        let input = "data: hello\n\nevent: ping\ndata: x\nid: 7\n\n";
        let got = feed_all(&[input.as_bytes()]);
        assert_eq!(
            got,
            vec![
                ev(None, "hello", None, "data: hello\n\n"),
                ev(
                    Some("ping"),
                    "x",
                    Some("7"),
                    "event: ping\ndata: x\nid: 7\n\n"
                ),
            ]
        );
    }

    #[test]
    fn crlf_and_lone_cr_line_endings() {
        let got = feed_all(&[b"data: a\r\ndata: b\r\n\r\ndata: c\rdata: d\r\rdata: e\n\n"]);
        let data: Vec<_> = got.iter().map(|e| e.data.as_str()).collect();
        assert_eq!(data, ["a\nb", "c\nd", "e"]);
        assert_eq!(got[0].raw, b"data: a\r\ndata: b\r\n\r\n");
        assert_eq!(got[1].raw, b"data: c\rdata: d\r\r");
    }

    #[test]
    fn chunk_split_between_cr_and_lf() {
        let mut p = SseParser::new();
        assert!(
            p.feed(b"data: a\r\n\r").is_empty(),
            "held until the next byte"
        );
        assert_eq!(p.buffered_len(), 10);
        let got = p.feed(b"\ndata: b\r\n\r\n");
        assert_eq!(
            got,
            vec![
                ev(None, "a", None, "data: a\r\n\r\n"),
                ev(None, "b", None, "data: b\r\n\r\n")
            ]
        );
        assert_eq!(p.buffered_len(), 0);
        assert_eq!(p.finish(), None);
    }

    #[test]
    fn lone_cr_at_chunk_end_dispatches_on_next_byte_or_finish() {
        let mut p = SseParser::new();
        assert!(p.feed(b"data: a\r\r").is_empty());
        let got = p.feed(b"d");
        assert_eq!(got, vec![ev(None, "a", None, "data: a\r\r")]);
        let mut p = SseParser::new();
        assert!(p.feed(b"data: a\r\r").is_empty());
        assert_eq!(p.finish(), Some(ev(None, "a", None, "data: a\r\r")));
    }

    #[test]
    fn multi_line_data_and_space_stripping() {
        let got = feed_all(&[b"data:no space\ndata:  two spaces\ndata\ndata:\n\n"]);
        assert_eq!(got[0].data, "no space\n two spaces\n\n");
    }

    #[test]
    fn comments_are_kept_in_raw_only() {
        let got = feed_all(&[b": keep-alive\n\n: note\ndata: x\n\n"]);
        assert_eq!(
            got,
            vec![
                ev(None, "", None, ": keep-alive\n\n"),
                ev(None, "x", None, ": note\ndata: x\n\n")
            ]
        );
    }

    #[test]
    fn stray_blank_lines_are_their_own_events() {
        let got = feed_all(&[b"\n\ndata: x\n\n\n"]);
        let raws: Vec<&[u8]> = got.iter().map(|e| e.raw.as_slice()).collect();
        assert_eq!(raws, [&b"\n"[..], b"\n", b"data: x\n\n", b"\n"]);
    }

    #[test]
    fn fields_without_colon_unknown_fields_and_retry() {
        let got = feed_all(&[b"event\nretry: 10\nfoo: bar\nid\ndata: x\n\n"]);
        assert_eq!(
            got,
            vec![ev(
                None,
                "x",
                Some(""),
                "event\nretry: 10\nfoo: bar\nid\ndata: x\n\n"
            )]
        );
    }

    #[test]
    fn id_is_per_event_and_nul_ids_are_ignored() {
        let got = feed_all(&[b"id: 1\ndata: a\n\ndata: b\n\nid: 2\0\ndata: c\n\n"]);
        let ids: Vec<_> = got.iter().map(|e| e.id.as_deref()).collect();
        assert_eq!(ids, [Some("1"), None, None]);
    }

    #[test]
    fn missing_final_blank_line_is_returned_by_finish() {
        let mut p = SseParser::new();
        assert_eq!(
            p.feed(b"data: a\n\ndata: b"),
            vec![ev(None, "a", None, "data: a\n\n")]
        );
        assert_eq!(p.buffered_len(), 7);
        assert_eq!(p.finish(), Some(ev(None, "b", None, "data: b")));
        assert_eq!(p.finish(), None);
        // One line ending but no blank line.
        let mut p = SseParser::new();
        assert!(p.feed(b"data: [DONE]\n").is_empty());
        assert_eq!(p.finish(), Some(ev(None, "[DONE]", None, "data: [DONE]\n")));
        // A trailing comment is still handed back so it can be forwarded.
        let mut p = SseParser::new();
        p.feed(b": partial");
        assert_eq!(p.finish(), Some(ev(None, "", None, ": partial")));
    }

    #[test]
    fn utf8_split_inside_a_char_and_invalid_bytes() {
        let input = "data: héllo → 世界\n\n".as_bytes();
        for cut in 0..=input.len() {
            let got = feed_all(&[&input[..cut], &input[cut..]]);
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].data, "héllo → 世界");
        }
        let got = feed_all(&[b"data: a\xFF\xE2b\nevent: \xC3\n\n"]);
        assert_eq!(got[0].data, "a\u{FFFD}\u{FFFD}b");
        assert_eq!(got[0].event.as_deref(), Some("\u{FFFD}"));
    }

    #[test]
    fn bom_is_ignored_only_at_stream_start() {
        let got = feed_all(&[b"\xEF\xBB", b"\xBFdata: a\n\n\xEF\xBB\xBFdata: b\n\n"]);
        assert_eq!(got[0].data, "a");
        assert_eq!(got[0].raw, b"\xEF\xBB\xBFdata: a\n\n");
        // Not at the start: the line's field name is "\u{FEFF}data", which is unknown.
        assert_eq!(got[1].data, "");
    }

    #[test]
    fn long_line_in_tiny_chunks() {
        let payload = "x".repeat(10_000);
        let input = format!("data: {payload}\n\n");
        let mut p = SseParser::new();
        let mut got = Vec::new();
        for c in input.as_bytes().chunks(3) {
            got.extend(p.feed(c));
        }
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].data, payload);
        assert_eq!(p.buffered_len(), 0);
    }

    /// One random event: lines of (field, value), then the blank line.
    fn arb_event() -> impl Strategy<Value = Vec<(u8, String)>> {
        let value = "[^\r\n\0]{0,12}";
        prop::collection::vec((0u8..5, value), 0..5)
    }

    fn render(events: &[Vec<(u8, String)>], eol: &str) -> (String, Vec<SseEvent>) {
        let mut text = String::new();
        let mut expected = Vec::new();
        for lines in events {
            let start = text.len();
            let (mut data, mut event, mut id) = (Vec::new(), None, None);
            for (kind, value) in lines {
                let line = match kind {
                    0 => {
                        data.push(value.clone());
                        format!("data: {value}")
                    }
                    1 => {
                        event = Some(value.clone()).filter(|v| !v.is_empty());
                        format!("event: {value}")
                    }
                    2 => {
                        id = Some(value.clone());
                        format!("id: {value}")
                    }
                    3 => format!(":{value}"),
                    _ => format!("retry: {value}"),
                };
                text.push_str(&line);
                text.push_str(eol);
            }
            text.push_str(eol);
            expected.push(SseEvent {
                event,
                data: data.join("\n"),
                id,
                raw: text.as_bytes()[start..].to_vec(),
            });
        }
        (text, expected)
    }

    fn cut(input: &[u8], mut cuts: Vec<usize>) -> Vec<&[u8]> {
        cuts.iter_mut().for_each(|c| *c %= input.len() + 1);
        cuts.sort_unstable();
        let mut pieces = Vec::new();
        let mut prev = 0;
        for c in cuts.into_iter().chain([input.len()]) {
            pieces.push(&input[prev..c]);
            prev = c;
        }
        pieces
    }

    proptest! {
        #[test]
        fn chunking_never_changes_the_events(
            events in prop::collection::vec(arb_event(), 0..8),
            eol in prop::sample::select(vec!["\n", "\r\n", "\r"]),
            cuts in prop::collection::vec(any::<usize>(), 0..12),
        ) {
            let (text, expected) = render(&events, eol);
            let whole = feed_all(&[text.as_bytes()]);
            prop_assert_eq!(&whole, &expected);
            let chunked = feed_all(&cut(text.as_bytes(), cuts));
            prop_assert_eq!(&chunked, &expected);
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_round_trip(
            input in prop::collection::vec(
                prop::sample::select(b"\r\n:d a\xC3\xA9\xFF\xEF\xBB\xBF".to_vec()), 0..200),
            cuts in prop::collection::vec(any::<usize>(), 0..12),
        ) {
            let whole = feed_all(&[&input]);
            let chunked = feed_all(&cut(&input, cuts));
            prop_assert_eq!(&whole, &chunked);
            let raw: Vec<u8> = chunked.iter().flat_map(|e| e.raw.iter().copied()).collect();
            prop_assert_eq!(raw, input);
        }
    }
}
