//! A multipart body split into its parts as it streams past (RFC 2046 section 5.1.1, with the
//! tolerance of [`crate::mime::split_multipart`]: LF line ends, transport padding after a
//! delimiter, a missing close delimiter). A part's bytes exclude the line break before the next
//! delimiter; the preamble and the epilogue are dropped.

use crate::error::ProcessingError;
use crate::mime::MimeLimits;

/// What the splitter found.
pub enum Event<'a> {
    /// Bytes of part `n` (0-based), in order.
    Data(usize, &'a [u8]),
    /// Part `n` is complete.
    End(usize),
}

pub(crate) struct Splitter {
    /// "\n--" + boundary.
    delim: Vec<u8>,
    /// Bytes not handed out yet (they might start a delimiter).
    carry: Vec<u8>,
    /// The part being read (None: the preamble).
    part: Option<usize>,
    closed: bool,
    max_parts: usize,
}

fn bad(m: impl Into<String>) -> ProcessingError {
    ProcessingError::Unexpected(format!("bad multipart: {}", m.into()))
}

impl Splitter {
    pub fn new(boundary: &str, limits: &MimeLimits) -> Result<Splitter, ProcessingError> {
        if boundary.is_empty() || boundary.len() > 200 {
            return Err(bad("missing or invalid boundary"));
        }
        // The body's first line may be a delimiter: a line break is put in front of the body.
        Ok(Splitter { delim: format!("\n--{boundary}").into_bytes(), carry: b"\n".to_vec(), part: None, closed: false, max_parts: limits.max_parts })
    }

    /// Feed body bytes.
    pub fn push(&mut self, input: &[u8], emit: &mut dyn FnMut(Event<'_>) -> Result<(), ProcessingError>) -> Result<(), ProcessingError> {
        if self.closed {
            return Ok(()); // the epilogue
        }
        let mut buf = std::mem::take(&mut self.carry);
        buf.extend_from_slice(input);
        let mut from = 0; // start of bytes not yet handed out
        let mut search = 0;
        // Where a delimiter whose line is not complete yet starts (it is kept for the next push).
        let mut hold = None;
        while let Some(at) = memchr::memmem::find(&buf[search..], &self.delim).map(|p| p + search) {
            let after = at + self.delim.len();
            // What ends the delimiter line: "--" (close), or blanks and a line break.
            let rest = &buf[after..];
            let blanks = rest.iter().take_while(|&&b| b == b' ' || b == b'\t').count();
            let close = rest.starts_with(b"--");
            let line_end = if close {
                after + 2
            } else {
                match (rest.get(blanks), rest.get(blanks + 1)) {
                    (Some(b'\n'), _) => after + blanks + 1,
                    (Some(b'\r'), Some(b'\n')) => after + blanks + 2,
                    (None, _) | (Some(b'\r'), None) | (Some(b'-'), None) => {
                        hold = Some(if at > from && buf[at - 1] == b'\r' { at - 1 } else { at });
                        break;
                    }
                    _ => {
                        // "--boundaryX": a longer token, not our delimiter.
                        search = at + 1;
                        continue;
                    }
                }
            };
            if let Some(n) = self.part {
                let end = if at > from && buf[at - 1] == b'\r' { at - 1 } else { at };
                if end > from {
                    emit(Event::Data(n, &buf[from..end]))?;
                }
                emit(Event::End(n))?;
            }
            if close {
                self.closed = true;
                return Ok(());
            }
            let next = self.part.map_or(0, |n| n + 1);
            if next >= self.max_parts {
                return Err(bad(format!("more than {} parts", self.max_parts)));
            }
            self.part = Some(next);
            from = line_end;
            // The line break ending this delimiter line may begin the next delimiter (an
            // empty part).
            search = line_end - 1;
        }
        // Hand out all but what could be the start of a delimiter ("\r" + a partial "\n--boundary").
        let keep_from = hold.unwrap_or_else(|| buf.len().saturating_sub(self.delim.len() + 1).max(from));
        if let Some(n) = self.part
            && keep_from > from
        {
            emit(Event::Data(n, &buf[from..keep_from]))?;
        }
        self.carry = buf.split_off(keep_from);
        Ok(())
    }

    /// The body ended. Without a close delimiter the last part is what followed its delimiter
    /// (line breaks at the end dropped), as the in-memory splitter tolerates.
    pub fn finish(&mut self, emit: &mut dyn FnMut(Event<'_>) -> Result<(), ProcessingError>) -> Result<(), ProcessingError> {
        if self.closed {
            return Ok(());
        }
        let Some(n) = self.part else {
            return Err(bad("no parts found for the boundary"));
        };
        let mut end = self.carry.len();
        while end > 0 && matches!(self.carry[end - 1], b'\r' | b'\n') {
            end -= 1;
        }
        if end > 0 {
            emit(Event::Data(n, &self.carry[..end]))?;
        }
        emit(Event::End(n))?;
        self.closed = true;
        Ok(())
    }
}
