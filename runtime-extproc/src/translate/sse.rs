//! Reading server-sent event streams (`text/event-stream`) as they arrive: the `data` of every
//! complete event, whatever the chunk boundaries, with a bound on what an unfinished event may
//! hold. The stream translators turn that data into client events.

use super::{SSE_DONE, TranslateError, translate_each};

/// Bytes of an unfinished event (its data and the current line) kept at most.
pub(crate) const MAX_PENDING: usize = 16 * 1024 * 1024;

/// Incremental server-sent event reader: returns the `data` of every complete event (lines
/// joined by `\n`), accepts LF and CRLF line ends and keeps at most `MAX_PENDING` bytes of an
/// unfinished event. Comments and the other fields (`event:`, `id:`, `retry:`) are skipped.
#[derive(Debug, Default)]
pub(crate) struct SseReader {
    line: Vec<u8>,
    data: Vec<u8>,
    has_data: bool,
    /// The rest of an over-long line is dropped up to its end.
    skipping: bool,
    /// [`SseReader::finish`] was called: the stream has ended.
    finished: bool,
}

/// A stream translator over server-sent events: the framing is read here, once; the provider's
/// module maps the data of each complete event ([`SseEvents::on_data`]).
pub(crate) trait SseEvents {
    /// The stream's reader.
    fn reader(&mut self) -> &mut SseReader;

    /// Maps the data of one complete event to client events, appended to `out`.
    fn on_data(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), TranslateError>;

    /// The client events for `chunk`: every provider event it completes, mapped in order.
    fn feed_events(&mut self, chunk: &[u8]) -> Result<Vec<u8>, TranslateError> {
        let events = self.reader().feed(chunk)?;
        translate_each(events, |data, out| self.on_data(data, out))
    }

    /// At the end of the stream: the event left without its blank line, mapped into `out`.
    fn finish_events(&mut self, out: &mut Vec<u8>) -> Result<(), TranslateError> {
        for data in self.reader().finish() {
            self.on_data(&data, out)?;
        }
        Ok(())
    }

    /// The end of an OpenAI chat stream translated from these events, for
    /// [`StreamTranslator::finish`](super::StreamTranslator::finish): the event left without its
    /// blank line, then the usage chunk `usage_chunk` gives (if any), then `data: [DONE]`. Only
    /// the first call at the end of the stream returns anything.
    fn finish_chat(
        &mut self,
        usage_chunk: impl FnOnce(&mut Self) -> Option<Vec<u8>>,
    ) -> Result<Vec<u8>, TranslateError>
    where
        Self: Sized,
    {
        let mut out = Vec::new();
        if self.reader().finished {
            return Ok(out);
        }
        self.finish_events(&mut out)?;
        out.extend(usage_chunk(self).unwrap_or_default());
        out.extend_from_slice(SSE_DONE);
        Ok(out)
    }
}

impl SseReader {
    /// Consumes a chunk; returns the data of the events it completes. An event longer than
    /// the bound is dropped and reported as an error; reading resumes at the next line.
    pub(crate) fn feed(&mut self, chunk: &[u8]) -> Result<Vec<Vec<u8>>, TranslateError> {
        let mut events = Vec::new();
        let mut rest = chunk;
        while !rest.is_empty() {
            let (head, tail, complete) = match rest.iter().position(|b| *b == b'\n') {
                Some(at) => (&rest[..at], &rest[at + 1..], true),
                None => (rest, &rest[rest.len()..], false),
            };
            if !self.skipping {
                self.line.extend_from_slice(head);
            }
            rest = tail;
            if complete {
                if self.skipping {
                    self.skipping = false;
                } else {
                    let line = std::mem::take(&mut self.line);
                    self.take_line(&line, &mut events);
                }
            }
        }
        if self.line.len() + self.data.len() > MAX_PENDING {
            self.skipping = !self.line.is_empty();
            self.line.clear();
            self.data.clear();
            self.has_data = false;
            return Err(TranslateError::Upstream(
                "a stream event exceeds 16 MiB".into(),
            ));
        }
        Ok(events)
    }

    /// The end of the stream: the data of an event left without its blank line, if any.
    pub(crate) fn finish(&mut self) -> Vec<Vec<u8>> {
        self.finished = true;
        let mut events = Vec::new();
        let line = std::mem::take(&mut self.line);
        if !self.skipping && !line.is_empty() {
            self.take_line(&line, &mut events);
        }
        self.skipping = false;
        self.take_line(b"", &mut events);
        events
    }

    fn take_line(&mut self, line: &[u8], events: &mut Vec<Vec<u8>>) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            if self.has_data {
                events.push(std::mem::take(&mut self.data));
                self.has_data = false;
            }
            return;
        }
        if let Some(data) = line.strip_prefix(b"data:") {
            let data = data.strip_prefix(b" ").unwrap_or(data);
            if self.has_data {
                self.data.push(b'\n');
            }
            self.data.extend_from_slice(data);
            self.has_data = true;
        }
    }
}

/// The text of an event's data as the chat stream translators read it, `None` for an event
/// whose data lines are all empty (it carries nothing). Empty data lines before the first
/// non-empty one add nothing to the text.
pub(crate) fn event_text(data: &str) -> Option<&str> {
    let text = data.trim_start_matches('\n');
    (!text.is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &[u8] = b": comment\nevent: a\ndata: {\"n\":1}\n\nid: 7\r\ndata:two\r\ndata:  lines\r\n\r\nretry: 5\n\n";

    fn read(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut reader = SseReader::default();
        let mut events = Vec::new();
        for chunk in chunks {
            events.extend(reader.feed(chunk).expect("within the bound"));
        }
        events.extend(reader.finish());
        events
    }

    #[test]
    fn events_are_the_same_whatever_the_chunks() {
        let expected = vec![b"{\"n\":1}".to_vec(), b"two\n lines".to_vec()];
        assert_eq!(read(&[STREAM]), expected);
        let bytes: Vec<&[u8]> = STREAM.chunks(1).collect();
        assert_eq!(read(&bytes), expected);
        let (head, tail) = STREAM.split_at(21);
        assert_eq!(read(&[head, tail]), expected);
    }

    #[test]
    fn an_event_is_returned_once_its_blank_line_arrives() {
        let mut reader = SseReader::default();
        assert!(reader.feed(b"data: x\n").expect("feeds").is_empty());
        assert_eq!(reader.feed(b"\n").expect("feeds"), vec![b"x".to_vec()]);
        // Empty data still makes an event; no data makes none.
        assert_eq!(
            reader.feed(b"data:\n\nevent: e\n\n").expect("feeds"),
            vec![Vec::<u8>::new()]
        );
        // The end of the stream completes the last event.
        assert!(reader.feed(b"data: last").expect("feeds").is_empty());
        assert_eq!(reader.finish(), vec![b"last".to_vec()]);
        assert!(reader.finish().is_empty());
    }

    /// Events whose data is copied to the client as it is.
    #[derive(Default)]
    struct Echo {
        reader: SseReader,
    }

    impl SseEvents for Echo {
        fn reader(&mut self) -> &mut SseReader {
            &mut self.reader
        }

        fn on_data(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), TranslateError> {
            out.extend_from_slice(data);
            Ok(())
        }
    }

    #[test]
    fn a_chat_stream_ends_once_with_the_last_event_usage_and_done() {
        let mut echo = Echo::default();
        assert_eq!(
            echo.feed_events(b"data: a\n\ndata: b").expect("feeds"),
            b"a"
        );
        let end = echo
            .finish_chat(|_| Some(b"usage;".to_vec()))
            .expect("ends");
        assert_eq!(end, b"busage;data: [DONE]\n\n");
        assert!(
            echo.finish_chat(|_| Some(b"again".to_vec()))
                .expect("ends")
                .is_empty()
        );
        let mut echo = Echo::default();
        assert_eq!(echo.finish_chat(|_| None).expect("ends"), SSE_DONE);
    }

    #[test]
    fn event_text_skips_leading_empty_data_lines() {
        assert_eq!(event_text(""), None);
        assert_eq!(event_text("\n\n"), None);
        assert_eq!(event_text("\n{\"a\":\n1}\n"), Some("{\"a\":\n1}\n"));
        assert_eq!(event_text(" "), Some(" "));
    }

    #[test]
    fn an_over_long_event_is_dropped_and_reading_resumes() {
        let mut reader = SseReader::default();
        let mut line = b"data: ".to_vec();
        line.resize(MAX_PENDING + 1, b'a');
        assert!(matches!(
            reader.feed(&line),
            Err(TranslateError::Upstream(message)) if message == "a stream event exceeds 16 MiB"
        ));
        // The rest of that line is skipped; the next event is read.
        assert_eq!(
            reader.feed(b"aaa\n\ndata: next\n\n").expect("feeds"),
            vec![b"next".to_vec()]
        );
        // Many data lines count together.
        let mut reader = SseReader::default();
        let line = format!("data: {}\n", "a".repeat(MAX_PENDING / 4));
        let results: Vec<bool> = (0..5)
            .map(|_| reader.feed(line.as_bytes()).is_ok())
            .collect();
        assert_eq!(results, [true, true, true, false, true]);
    }
}
