//! Token usage read from a relayed answer as it passes, without keeping the answer: the only
//! thing the relay takes from a body. A stream's `message_start` carries the input tokens and its
//! `message_delta` the output; an answer that is not streamed ends with its `usage` object, so a
//! bounded tail of it is enough.

use serde::Deserialize;

/// Longest SSE `data:` line of an event the tap reads; `message_start` and `message_delta`
/// carry no content, so a longer one is not theirs to parse.
const MAX_EVENT_LINE: usize = 64 * 1024;
/// How much of the end of an answer that is not streamed is kept to find its `usage`.
const TAIL: usize = 8 * 1024;

/// Tokens as the upstream reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub cache_creation_input_tokens: u64,
    #[serde(default)]
    pub cache_read_input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
}

impl Usage {
    /// Input of every kind: what a day's token limit counts beside the output.
    pub fn input(&self) -> u64 {
        self.input_tokens + self.cache_creation_input_tokens + self.cache_read_input_tokens
    }

    pub fn total(&self) -> u64 {
        self.input() + self.output_tokens
    }
}

/// Reads usage from an answer's bytes, piece by piece.
pub enum UsageTap {
    /// `text/event-stream`: line by line, keeping only `event:` lines and the `data:` lines of
    /// the events that report usage; the text of every other line passes without a copy.
    Events { line: Vec<u8>, reading: Line, wanted: bool, usage: Usage },
    /// A JSON message: its last [`TAIL`] bytes.
    Json { tail: Vec<u8> },
}

/// What the tap does with the line it is in.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Line {
    /// Too little seen yet to tell whether the line matters.
    Deciding,
    Keeping,
    Skipping,
}

/// Enough of a line to tell `event:` and `data:` apart from the rest.
const DECISIVE: usize = 6;

#[derive(Deserialize)]
struct Event {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    message: Option<Message>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    usage: Option<Usage>,
}

impl UsageTap {
    pub fn for_content_type(content_type: &str) -> Self {
        if content_type.trim_start().starts_with("text/event-stream") {
            UsageTap::Events { line: Vec::new(), reading: Line::Deciding, wanted: false, usage: Usage::default() }
        } else {
            UsageTap::Json { tail: Vec::new() }
        }
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        match self {
            UsageTap::Events { line, reading, wanted, usage } => {
                for piece in bytes.split_inclusive(|b| *b == b'\n') {
                    let complete = piece.ends_with(b"\n");
                    if *reading != Line::Skipping {
                        line.extend_from_slice(piece);
                    }
                    if *reading == Line::Deciding && (complete || line.len() >= DECISIVE) {
                        let kept = line.starts_with(b"event:")
                            || (*wanted && line.starts_with(b"data:"))
                            || line.trim_ascii().is_empty();
                        *reading = if kept { Line::Keeping } else { Line::Skipping };
                    }
                    if *reading == Line::Skipping || line.len() > MAX_EVENT_LINE {
                        line.clear();
                        *reading = Line::Skipping;
                    }
                    if complete {
                        if *reading == Line::Keeping {
                            read_line(line, wanted, usage);
                        }
                        line.clear();
                        *reading = Line::Deciding;
                    }
                }
            }
            UsageTap::Json { tail } => {
                tail.extend_from_slice(bytes);
                if tail.len() > TAIL {
                    tail.drain(..tail.len() - TAIL);
                }
            }
        }
    }

    /// The usage seen so far (a stream cut short reports what it got to).
    pub fn usage(&self) -> Usage {
        match self {
            UsageTap::Events { usage, .. } => *usage,
            UsageTap::Json { tail } => json_usage(tail).unwrap_or_default(),
        }
    }
}

/// One SSE line: `event:` names what the next `data:` holds; only usage events are parsed.
fn read_line(line: &[u8], wanted: &mut bool, usage: &mut Usage) {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if let Some(name) = line.strip_prefix(b"event:") {
        *wanted = matches!(name.trim_ascii(), b"message_start" | b"message_delta");
    } else if let Some(data) = line.strip_prefix(b"data:").filter(|_| *wanted) {
        let Ok(event) = serde_json::from_slice::<Event>(data.trim_ascii()) else { return };
        match event.kind.as_str() {
            "message_start" => {
                if let Some(start) = event.message.and_then(|m| m.usage) {
                    *usage = Usage { output_tokens: usage.output_tokens.max(start.output_tokens), ..start };
                }
            }
            // Cumulative: the last one is the answer's total output.
            "message_delta" => {
                if let Some(delta) = event.usage {
                    usage.output_tokens = delta.output_tokens;
                    if delta.input() > 0 {
                        usage.input_tokens = delta.input_tokens;
                        usage.cache_creation_input_tokens = delta.cache_creation_input_tokens;
                        usage.cache_read_input_tokens = delta.cache_read_input_tokens;
                    }
                }
            }
            _ => {}
        }
    } else if line.is_empty() {
        *wanted = false;
    }
}

/// The last top-level-looking `"usage": {…}` of a message's tail.
fn json_usage(tail: &[u8]) -> Option<Usage> {
    let key = b"\"usage\"";
    let at = tail.windows(key.len()).rposition(|w| w == key)?;
    let rest = tail[at + key.len()..].trim_ascii_start().strip_prefix(b":")?;
    serde_json::Deserializer::from_slice(rest).into_iter::<Usage>().next()?.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = "event: message_start\n\
        data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"m\",\"usage\":{\"input_tokens\":25,\"cache_read_input_tokens\":5,\"output_tokens\":1}}}\n\n\
        event: content_block_start\n\
        data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
        event: ping\ndata: {\"type\": \"ping\"}\n\n\
        event: content_block_delta\n\
        data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"\\\"usage\\\": {\\\"output_tokens\\\": 999}\"}}\n\n\
        event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
        event: message_delta\n\
        data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":15}}\n\n\
        event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

    #[test]
    fn a_streams_usage_is_read_however_its_bytes_are_split() {
        let expected =
            Usage { input_tokens: 25, cache_creation_input_tokens: 0, cache_read_input_tokens: 5, output_tokens: 15 };
        for size in [1, 2, 7, 64, STREAM.len()] {
            let mut tap = UsageTap::for_content_type("text/event-stream; charset=utf-8");
            STREAM.as_bytes().chunks(size).for_each(|chunk| tap.feed(chunk));
            assert_eq!(tap.usage(), expected, "pieces of {size} bytes");
            assert_eq!(tap.usage().total(), 45);
        }
        let crlf = STREAM.replace('\n', "\r\n");
        let mut tap = UsageTap::for_content_type("text/event-stream");
        tap.feed(crlf.as_bytes());
        assert_eq!(tap.usage(), expected, "CRLF line ends");
    }

    #[test]
    fn a_stream_cut_short_reports_its_input_and_a_huge_line_is_skipped_not_kept() {
        let mut tap = UsageTap::for_content_type("text/event-stream");
        tap.feed(&STREAM.as_bytes()[..STREAM.find("event: content_block_start").unwrap()]);
        assert_eq!(
            tap.usage(),
            Usage { input_tokens: 25, cache_read_input_tokens: 5, output_tokens: 1, ..Default::default() }
        );

        let mut tap = UsageTap::for_content_type("text/event-stream");
        tap.feed(b"event: message_delta\ndata: ");
        tap.feed(&vec![b'x'; 3 * MAX_EVENT_LINE]);
        let UsageTap::Events { line, .. } = &tap else { unreachable!() };
        assert!(line.is_empty(), "an over-long line is not buffered");
        let mut tap = UsageTap::for_content_type("text/event-stream");
        tap.feed(b"event: content_block_delta\ndata: ");
        tap.feed(b"{\"type\":\"content_block_delta\",\"delta\":{\"text\":\"a long answer\"}}");
        let UsageTap::Events { line, .. } = &tap else { unreachable!() };
        assert!(line.is_empty(), "the text of an answer is not copied");
        tap.feed(b"\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":3}}\n\n");
        assert_eq!(tap.usage().output_tokens, 3);
    }

    #[test]
    fn a_messages_usage_is_found_in_its_tail() {
        let text = "a".repeat(100_000) + "\"usage\": {\"output_tokens\": 999}";
        let message = serde_json::json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "m",
            "content": [{ "type": "text", "text": text }],
            "stop_reason": "end_turn",
            "usage": { "input_tokens": 12, "output_tokens": 34, "cache_creation": { "ephemeral_5m_input_tokens": 0 } },
        })
        .to_string();
        let mut tap = UsageTap::for_content_type("application/json");
        message.as_bytes().chunks(1000).for_each(|chunk| tap.feed(chunk));
        let UsageTap::Json { tail } = &tap else { unreachable!() };
        assert!(tail.len() <= TAIL);
        assert_eq!(tap.usage(), Usage { input_tokens: 12, output_tokens: 34, ..Default::default() });
        assert_eq!(UsageTap::for_content_type("application/json").usage(), Usage::default());
    }
}
