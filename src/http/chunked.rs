//! Incremental, strict decoder for the chunked transfer coding (RFC 9112 §7.1).
//!
//! Owns the framing of one chunked message body: size lines, chunk data, the trailer section and
//! the final CRLF. Invariant: the decoder never consumes a byte past the end of the message, and
//! any deviation from the grammar is an error rather than a guess, because lenient chunked
//! parsing is how request smuggling happens.

use super::request::is_token_byte;

/// Longest accepted chunk-size line (size digits plus extensions, excluding the CRLF).
const MAX_SIZE_LINE: usize = 4096;

/// Most bytes accepted for all trailer field lines together (including their CRLFs).
const MAX_TRAILER_BYTES: usize = 16384;

/// Why a chunked body was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkedError {
    /// The size line is not `1*HEXDIG [ chunk-ext ]`, or an extension holds a forbidden byte.
    BadSize,
    /// The chunk size does not fit in a `u64`.
    SizeOverflow,
    /// A line did not end with exactly CRLF (bare LF, bare CR, or data not followed by CRLF).
    BadLineEnding,
    /// A chunk-size line is longer than 4096 bytes.
    LineTooLong,
    /// The trailer section is longer than 16384 bytes.
    TrailersTooLong,
    /// A trailer line is not `field-name ":" field-value` or contains a control byte.
    BadTrailer,
}

/// The outcome of one [`ChunkedDecoder::feed`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Feed {
    /// How many input bytes were used; bytes after the end of the message are left unconsumed.
    pub consumed: usize,
    /// True once the final chunk, the trailer section and the closing CRLF have been read.
    pub done: bool,
}

/// Where the decoder is within the chunked grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the hex digits of a chunk size.
    SizeDigits { size: u64 },
    /// Whitespace after the size, which is only legal before a `;` extension.
    SizeWhitespace { size: u64 },
    /// Inside chunk extensions, which are checked byte-wise and discarded.
    Extension { size: u64 },
    /// Saw the CR ending a size line; expecting LF.
    SizeLineFeed { size: u64 },
    /// Passing chunk data through to the sink.
    Data { remaining: u64 },
    /// Chunk data finished; expecting CR.
    DataCarriageReturn,
    /// Chunk data finished and CR seen; expecting LF.
    DataLineFeed,
    /// At the start of a trailer line, or of the final empty line.
    TrailerLineStart,
    /// Inside a trailer field name.
    TrailerName,
    /// Inside a trailer field value.
    TrailerValue,
    /// Saw the CR ending a trailer line; expecting LF.
    TrailerLineFeed,
    /// Saw the CR of the final empty line; expecting LF.
    FinalLineFeed,
    /// The message body is complete.
    Done,
    /// An error was reported; the decoder keeps reporting it.
    Failed(ChunkedError),
}

/// Incremental decoder for one chunked message body; keeps its state across arbitrary splits.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    size_line_len: usize,
    trailer_bytes: usize,
    body_bytes: u64,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    /// Creates a decoder positioned before the first chunk-size line.
    pub fn new() -> Self {
        Self {
            state: State::SizeDigits { size: 0 },
            size_line_len: 0,
            trailer_bytes: 0,
            body_bytes: 0,
        }
    }

    /// Consumes bytes from `input`, calling `sink` with each run of decoded body data, until the
    /// input is used up or the final chunk + trailer section + CRLF is complete. Returns how many
    /// bytes were consumed (bytes after the end of the message are NOT consumed; they belong to
    /// the next pipelined request) and whether the message body is done.
    ///
    /// Once an error has been returned, every later call returns the same error.
    pub fn feed(&mut self, input: &[u8], mut sink: impl FnMut(&[u8])) -> Result<Feed, ChunkedError> {
        let mut consumed = 0;
        while consumed < input.len() {
            match self.state {
                State::Done => break,
                State::Failed(error) => return Err(error),
                State::Data { remaining } => {
                    consumed += self.pass_data(remaining, &input[consumed..], &mut sink);
                }
                _ => {
                    let step = self.step(input[consumed]);
                    if let Err(error) = step {
                        self.state = State::Failed(error);
                        return Err(error);
                    }
                    consumed += 1;
                }
            }
        }
        match self.state {
            State::Failed(error) => Err(error),
            state => Ok(Feed {
                consumed,
                done: state == State::Done,
            }),
        }
    }

    /// Total decoded body bytes so far.
    pub fn body_bytes(&self) -> u64 {
        self.body_bytes
    }

    /// Hands up to `remaining` bytes of `available` to the sink; returns how many were taken.
    fn pass_data(&mut self, remaining: u64, available: &[u8], sink: &mut impl FnMut(&[u8])) -> usize {
        let take = usize::try_from(remaining).map_or(available.len(), |r| r.min(available.len()));
        sink(&available[..take]);
        self.body_bytes = self.body_bytes.saturating_add(take as u64);
        let left = remaining - take as u64;
        self.state = if left == 0 {
            State::DataCarriageReturn
        } else {
            State::Data { remaining: left }
        };
        take
    }

    /// Advances the state machine by one byte outside chunk data.
    fn step(&mut self, byte: u8) -> Result<(), ChunkedError> {
        self.state = match self.state {
            State::SizeDigits { size } => self.size_digit(size, byte)?,
            State::SizeWhitespace { size } => self.size_whitespace(size, byte)?,
            State::Extension { size } => self.extension(size, byte)?,
            State::SizeLineFeed { size } => after_size_line(size, byte)?,
            State::DataCarriageReturn => expect(byte, b'\r', State::DataLineFeed)?,
            State::DataLineFeed => {
                self.size_line_len = 0;
                expect(byte, b'\n', State::SizeDigits { size: 0 })?
            }
            State::TrailerLineStart => self.trailer_line_start(byte)?,
            State::TrailerName => self.trailer_name(byte)?,
            State::TrailerValue => self.trailer_value(byte)?,
            State::TrailerLineFeed => {
                self.count_trailer_byte()?;
                expect(byte, b'\n', State::TrailerLineStart)?
            }
            State::FinalLineFeed => expect(byte, b'\n', State::Done)?,
            State::Data { .. } | State::Done | State::Failed(_) => self.state,
        };
        Ok(())
    }

    fn size_digit(&mut self, size: u64, byte: u8) -> Result<State, ChunkedError> {
        let has_digits = self.size_line_len > 0;
        if let Some(digit) = hex_value(byte) {
            self.count_size_line_byte()?;
            let size = size
                .checked_mul(16)
                .and_then(|shifted| shifted.checked_add(digit))
                .ok_or(ChunkedError::SizeOverflow)?;
            return Ok(State::SizeDigits { size });
        }
        if !has_digits {
            return Err(ChunkedError::BadSize);
        }
        self.after_size(size, byte)
    }

    fn size_whitespace(&mut self, size: u64, byte: u8) -> Result<State, ChunkedError> {
        match byte {
            b' ' | b'\t' | b';' => self.after_size(size, byte),
            _ => Err(ChunkedError::BadSize),
        }
    }

    /// Handles a non-digit byte once the size has at least one digit.
    fn after_size(&mut self, size: u64, byte: u8) -> Result<State, ChunkedError> {
        match byte {
            b'\r' => Ok(State::SizeLineFeed { size }),
            b'\n' => Err(ChunkedError::BadLineEnding),
            b' ' | b'\t' => {
                self.count_size_line_byte()?;
                Ok(State::SizeWhitespace { size })
            }
            b';' => {
                self.count_size_line_byte()?;
                Ok(State::Extension { size })
            }
            _ => Err(ChunkedError::BadSize),
        }
    }

    fn extension(&mut self, size: u64, byte: u8) -> Result<State, ChunkedError> {
        match byte {
            b'\r' => Ok(State::SizeLineFeed { size }),
            b'\n' => Err(ChunkedError::BadLineEnding),
            b' ' | b'\t' | 0x21..=0x7e => {
                self.count_size_line_byte()?;
                Ok(State::Extension { size })
            }
            _ => Err(ChunkedError::BadSize),
        }
    }

    fn trailer_line_start(&mut self, byte: u8) -> Result<State, ChunkedError> {
        match byte {
            b'\r' => Ok(State::FinalLineFeed),
            b'\n' => Err(ChunkedError::BadLineEnding),
            _ if is_token_byte(byte) => {
                self.count_trailer_byte()?;
                Ok(State::TrailerName)
            }
            // Leading whitespace would be obs-fold and an empty name is meaningless.
            _ => Err(ChunkedError::BadTrailer),
        }
    }

    fn trailer_name(&mut self, byte: u8) -> Result<State, ChunkedError> {
        self.count_trailer_byte()?;
        match byte {
            b':' => Ok(State::TrailerValue),
            _ if is_token_byte(byte) => Ok(State::TrailerName),
            _ => Err(ChunkedError::BadTrailer),
        }
    }

    fn trailer_value(&mut self, byte: u8) -> Result<State, ChunkedError> {
        self.count_trailer_byte()?;
        match byte {
            b'\r' => Ok(State::TrailerLineFeed),
            b'\n' => Err(ChunkedError::BadLineEnding),
            b'\t' => Ok(State::TrailerValue),
            0x00..=0x1f | 0x7f => Err(ChunkedError::BadTrailer),
            _ => Ok(State::TrailerValue),
        }
    }

    fn count_size_line_byte(&mut self) -> Result<(), ChunkedError> {
        self.size_line_len += 1;
        if self.size_line_len > MAX_SIZE_LINE {
            return Err(ChunkedError::LineTooLong);
        }
        Ok(())
    }

    fn count_trailer_byte(&mut self) -> Result<(), ChunkedError> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > MAX_TRAILER_BYTES {
            return Err(ChunkedError::TrailersTooLong);
        }
        Ok(())
    }
}

/// The state after the LF of a size line: data for a non-zero chunk, trailers after the last.
fn after_size_line(size: u64, byte: u8) -> Result<State, ChunkedError> {
    let next = if size == 0 {
        State::TrailerLineStart
    } else {
        State::Data { remaining: size }
    };
    expect(byte, b'\n', next)
}

/// Moves to `next` if `byte` is the `wanted` line-ending byte.
fn expect(byte: u8, wanted: u8, next: State) -> Result<State, ChunkedError> {
    if byte == wanted {
        Ok(next)
    } else {
        Err(ChunkedError::BadLineEnding)
    }
}

fn hex_value(byte: u8) -> Option<u64> {
    char::from(byte).to_digit(16).map(u64::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Outcome {
        /// The body finished after `consumed` bytes with this decoded content.
        Done {
            body: Vec<u8>,
            consumed: usize,
        },
        /// All input was consumed and more is needed.
        Incomplete {
            body: Vec<u8>,
        },
        Failed(ChunkedError),
    }

    fn done(body: &str, consumed: usize) -> Outcome {
        Outcome::Done {
            body: body.as_bytes().to_vec(),
            consumed,
        }
    }

    fn incomplete(body: &str) -> Outcome {
        Outcome::Incomplete {
            body: body.as_bytes().to_vec(),
        }
    }

    /// Feeds `pieces` in order to a fresh decoder and checks the per-call invariants.
    fn decode_pieces(pieces: &[&[u8]]) -> Outcome {
        let mut decoder = ChunkedDecoder::new();
        let mut body = Vec::new();
        let mut consumed = 0;
        for piece in pieces {
            let feed = match decoder.feed(piece, |data| {
                assert!(!data.is_empty(), "sink called with an empty slice");
                body.extend_from_slice(data);
            }) {
                Ok(feed) => feed,
                Err(error) => return Outcome::Failed(error),
            };
            consumed += feed.consumed;
            assert_eq!(decoder.body_bytes(), body.len() as u64);
            if feed.done {
                return Outcome::Done { body, consumed };
            }
            assert_eq!(feed.consumed, piece.len(), "unfinished feed left bytes");
        }
        Outcome::Incomplete { body }
    }

    /// Checks `input` whole, byte by byte, and in every two-way split.
    fn assert_decodes(input: &[u8], expected: &Outcome) {
        assert_eq!(&decode_pieces(&[input]), expected, "whole: {input:?}");
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(&decode_pieces(&bytes), expected, "bytewise: {input:?}");
        for split in 0..=input.len() {
            let (head, tail) = input.split_at(split);
            let outcome = decode_pieces(&[head, tail]);
            assert_eq!(&outcome, expected, "split at {split}: {input:?}");
        }
    }

    #[test]
    fn valid_messages() {
        let cases: &[(&str, &str)] = &[
            ("0\r\n\r\n", ""),
            ("5\r\nhello\r\n0\r\n\r\n", "hello"),
            ("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", "hello world"),
            ("a\r\n0123456789\r\n0\r\n\r\n", "0123456789"),
            ("A\r\n0123456789\r\n0\r\n\r\n", "0123456789"),
            ("000003\r\nabc\r\n000\r\n\r\n", "abc"),
            ("3;name=value\r\nabc\r\n0\r\n\r\n", "abc"),
            ("3 ;a\r\nabc\r\n0\r\n\r\n", "abc"),
            ("3\t ;a=\"q s\"\r\nabc\r\n0;last\r\n\r\n", "abc"),
            ("3;\r\nabc\r\n0\r\n\r\n", "abc"),
            ("2\r\n\r\n\r\n0\r\n\r\n", "\r\n"),
            ("0\r\nExpires: never\r\n\r\n", ""),
            ("0\r\nA: 1\r\nB:\t2\r\nC:\r\n\r\n", ""),
            ("1\r\nx\r\n0\r\nX-Sum: \u{e9}\r\n\r\n", "x"),
        ];
        for (input, body) in cases {
            assert_decodes(input.as_bytes(), &done(body, input.len()));
        }
    }

    #[test]
    fn bytes_after_the_message_are_left_for_the_next_request() {
        let cases: &[(&str, &str, &str)] = &[
            ("0\r\n\r\n", "GET / HTTP/1.1\r\n", ""),
            ("3\r\nabc\r\n0\r\n\r\n", "\r\n", "abc"),
            ("1\r\nz\r\n0\r\nT: v\r\n\r\n", "X", "z"),
            ("1\r\nz\r\n0\r\n\r\n", "1\r\nz\r\n0\r\n\r\n", "z"),
        ];
        for (message, next_request, body) in cases {
            let input = format!("{message}{next_request}");
            assert_decodes(input.as_bytes(), &done(body, message.len()));
        }
    }

    #[test]
    fn incomplete_messages_wait_for_more() {
        let cases: &[(&str, Outcome)] = &[
            ("", incomplete("")),
            ("5", incomplete("")),
            ("5\r", incomplete("")),
            ("5\r\nhel", incomplete("hel")),
            ("5\r\nhello", incomplete("hello")),
            ("5\r\nhello\r", incomplete("hello")),
            ("5\r\nhello\r\n0\r\n", incomplete("hello")),
            ("0\r\nTrailer: x\r\n", incomplete("")),
            ("0\r\n\r", incomplete("")),
        ];
        for (input, expected) in cases {
            assert_decodes(input.as_bytes(), expected);
        }
    }

    #[test]
    fn malformed_sizes_are_rejected() {
        use ChunkedError::*;
        let cases: &[(&str, ChunkedError)] = &[
            ("\r\n", BadSize),
            (" 5\r\nhello\r\n0\r\n\r\n", BadSize),
            ("+5\r\nhello\r\n0\r\n\r\n", BadSize),
            ("-5\r\n", BadSize),
            ("0x5\r\nhello\r\n0\r\n\r\n", BadSize),
            ("5g\r\n", BadSize),
            ("5 \r\nhello\r\n0\r\n\r\n", BadSize),
            ("5\t\r\n", BadSize),
            ("5 x\r\n", BadSize),
            (";ext\r\n", BadSize),
            ("5;a\x00b\r\n", BadSize),
            ("5;a\x7fb\r\n", BadSize),
            ("5;a\x01\r\n", BadSize),
            ("5;\u{e9}\r\n", BadSize),
            ("fffffffffffffffff\r\n", SizeOverflow),
            ("10000000000000000\r\n", SizeOverflow),
        ];
        for (input, error) in cases {
            assert_decodes(input.as_bytes(), &Outcome::Failed(*error));
        }
    }

    #[test]
    fn sixteen_significant_digits_are_accepted() {
        let mut decoder = ChunkedDecoder::new();
        let feed = decoder.feed(b"0000ffffffffffffffff\r\nab", |_| {});
        assert_eq!(
            feed,
            Ok(Feed {
                consumed: 24,
                done: false
            })
        );
        assert_eq!(decoder.body_bytes(), 2);
    }

    #[test]
    fn line_endings_must_be_crlf() {
        use ChunkedError::BadLineEnding;
        let cases: &[&str] = &[
            "5\nhello\r\n0\r\n\r\n",
            "5\rhello\r\n0\r\n\r\n",
            "5;ext\nhello\r\n",
            "5\r\nhello\n0\r\n\r\n",
            "5\r\nhello\r0\r\n\r\n",
            "5\r\nhelloX\r\n0\r\n\r\n",
            "5\r\nhello0\r\n\r\n",
            "0\r\n\n",
            "0\r\n\rX",
            "0\r\nA: b\n\r\n",
            "0\r\nA: b\rX\r\n",
            "0\n\r\n",
        ];
        for input in cases {
            assert_decodes(input.as_bytes(), &Outcome::Failed(BadLineEnding));
        }
    }

    #[test]
    fn malformed_trailers_are_rejected() {
        use ChunkedError::BadTrailer;
        let cases: &[&str] = &[
            "0\r\nNoColon\r\n\r\n",
            "0\r\n: empty name\r\n\r\n",
            "0\r\n folded: x\r\n\r\n",
            "0\r\n\tfolded: x\r\n\r\n",
            "0\r\nBad Name: x\r\n\r\n",
            "0\r\nA: b\x00c\r\n\r\n",
            "0\r\nA: b\x1bc\r\n\r\n",
            "0\r\nA: b\x7f\r\n\r\n",
            "0\r\nA(: b\r\n\r\n",
        ];
        for input in cases {
            assert_decodes(input.as_bytes(), &Outcome::Failed(BadTrailer));
        }
    }

    #[test]
    fn size_line_length_is_limited() {
        let at_limit = format!("1;{}\r\nx\r\n0\r\n\r\n", "e".repeat(MAX_SIZE_LINE - 2));
        let over_limit = format!("1;{}\r\nx\r\n0\r\n\r\n", "e".repeat(MAX_SIZE_LINE - 1));
        let zeros = format!("{}1\r\nx\r\n0\r\n\r\n", "0".repeat(MAX_SIZE_LINE));
        let cases: &[(&str, Outcome)] = &[
            (&at_limit, done("x", at_limit.len())),
            (&over_limit, Outcome::Failed(ChunkedError::LineTooLong)),
            (&zeros, Outcome::Failed(ChunkedError::LineTooLong)),
        ];
        for (input, expected) in cases {
            assert_eq!(&decode_pieces(&[input.as_bytes()]), expected);
            let bytes: Vec<&[u8]> = input.as_bytes().chunks(1).collect();
            assert_eq!(&decode_pieces(&bytes), expected);
        }
    }

    #[test]
    fn trailer_section_size_is_limited() {
        let line = |value_len: usize| format!("T: {}\r\n", "v".repeat(value_len));
        let at_limit = format!("0\r\n{}\r\n", line(MAX_TRAILER_BYTES - 5));
        let over_limit = format!("0\r\n{}\r\n", line(MAX_TRAILER_BYTES - 4));
        let many_lines = format!("0\r\n{}\r\n", line(10).repeat(MAX_TRAILER_BYTES / 10));
        let cases: &[(&str, Outcome)] = &[
            (&at_limit, done("", at_limit.len())),
            (&over_limit, Outcome::Failed(ChunkedError::TrailersTooLong)),
            (&many_lines, Outcome::Failed(ChunkedError::TrailersTooLong)),
        ];
        for (input, expected) in cases {
            assert_eq!(&decode_pieces(&[input.as_bytes()]), expected);
            let bytes: Vec<&[u8]> = input.as_bytes().chunks(1).collect();
            assert_eq!(&decode_pieces(&bytes), expected);
        }
    }

    #[test]
    fn data_is_passed_as_slices_of_the_input() {
        let input = b"4\r\nabcd\r\n0\r\n\r\n";
        let mut decoder = ChunkedDecoder::new();
        let mut runs = Vec::new();
        decoder
            .feed(input, |data| runs.push(data.as_ptr()))
            .expect("valid message");
        assert_eq!(runs, vec![input[3..].as_ptr()]);
    }

    #[test]
    fn errors_and_completion_are_sticky() {
        let mut failed = ChunkedDecoder::new();
        assert_eq!(failed.feed(b"z", |_| {}), Err(ChunkedError::BadSize));
        assert_eq!(failed.feed(b"0\r\n\r\n", |_| {}), Err(ChunkedError::BadSize));
        assert_eq!(failed.feed(b"", |_| {}), Err(ChunkedError::BadSize));

        let mut finished = ChunkedDecoder::default();
        let first = finished.feed(b"0\r\n\r\n", |_| {});
        assert_eq!(
            first,
            Ok(Feed {
                consumed: 5,
                done: true
            })
        );
        let again = finished.feed(b"5\r\nhello", |_| panic!("no data after the end"));
        assert_eq!(
            again,
            Ok(Feed {
                consumed: 0,
                done: true
            })
        );
    }
}
