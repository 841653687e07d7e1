//! SPDY/3.1 frames: the multiplexing `kubectl port-forward` speaks, inside
//! a WebSocket (subprotocol `SPDY/3.1+portforward.k8s.io`, kubectl 1.31
//! and later) or over a connection upgraded to `SPDY/3.1`, and `kubectl
//! exec` over a connection upgraded to `SPDY/3.1` (older clients, or the
//! WebSocket upgrade refused).
//!
//! [`Decoder`] and [`Encoder`] are sans-IO; [`FrameReader`] and
//! [`spawn_writer`] drive them over a byte stream, for both sessions.
//!
//! A frame is 8 bytes of header and a payload. Control frames (high bit
//! set) carry a version (3), a type, flags and a 24-bit length; data frames
//! a 31-bit stream id, flags (FIN) and a length. Header blocks (in
//! SYN_STREAM, SYN_REPLY and HEADERS) are one zlib stream per direction and
//! connection, flushed per block; the client compresses with the preset
//! dictionary of the SPDY/3 specification ([`DICTIONARY`]), so every block
//! it sends must be inflated, in order, even when it is not used.
//!
//! What port-forwarding needs is here, no more: flow control (WINDOW_UPDATE)
//! is read and ignored, as the Go implementation kubectl uses ignores it
//! too; server push and credentials do not exist.

use bytes::{Buf, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The preset dictionary for header blocks, from the SPDY/3 specification
/// (1,423 bytes).
pub const DICTIONARY: &[u8] = include_bytes!("spdy3_dictionary.bin");

/// The protocol version.
const VERSION: u16 = 3;
/// FIN: the sender's last frame on the stream.
const FLAG_FIN: u8 = 0x01;
const HEADER_LEN: usize = 8;
/// The longest control frame accepted (header blocks of a few names).
const MAX_CONTROL: usize = 1 << 20;
/// The longest header block accepted once inflated.
const MAX_HEADER_BLOCK: usize = 1 << 20;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
// SETTINGS (4) and WINDOW_UPDATE (9) are read as `Frame::Ignored`.

/// RST_STREAM status: the frame broke the protocol.
pub const PROTOCOL_ERROR: u32 = 1;

/// A header block: names (lower case) and values.
pub type HeaderBlock = Vec<(String, String)>;

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Bytes on a stream; `fin` ends the sender's half.
    Data {
        /// The stream.
        stream: u32,
        /// The sender's last frame on the stream.
        fin: bool,
        /// The bytes.
        data: Vec<u8>,
    },
    /// A stream opened by its sender.
    SynStream {
        /// The new stream.
        stream: u32,
        /// Opened and closed at once by its sender.
        fin: bool,
        /// Its headers.
        headers: HeaderBlock,
    },
    /// The answer to a SYN_STREAM.
    SynReply {
        /// The stream answered.
        stream: u32,
        /// Its headers.
        headers: HeaderBlock,
    },
    /// A stream ended abnormally.
    RstStream {
        /// The stream.
        stream: u32,
        /// Why.
        status: u32,
    },
    /// A ping, answered with the same id.
    Ping {
        /// Its id.
        id: u32,
    },
    /// The sender stops the session.
    GoAway {
        /// The last stream it accepted.
        last_stream: u32,
    },
    /// Frames read and not acted on: SETTINGS, HEADERS, WINDOW_UPDATE and
    /// types this module does not know.
    Ignored(u16),
}

/// Why a frame could not be read. The session ends: the zlib stream, or
/// the framing, is out of step.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// A control frame of another version.
    #[error("a SPDY/{0} frame; only SPDY/3.1 is spoken")]
    Version(u16),
    /// A frame too long.
    #[error("a SPDY frame of {0} bytes, over the limit")]
    TooLarge(usize),
    /// A frame shorter than its type needs.
    #[error("a malformed SPDY {0} frame")]
    Malformed(&'static str),
    /// A header block that does not inflate or parse.
    #[error("a SPDY header block that does not decode: {0}")]
    HeaderBlock(String),
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Reads frames from the bytes a peer sent.
pub struct Decoder {
    inflate: Decompress,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            inflate: Decompress::new(true),
        }
    }
}

impl Decoder {
    /// Takes the first frame off `buf` once it is whole (`None`: more bytes
    /// are needed).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let control = buf[0] & 0x80 != 0;
        let flags = buf[4];
        let len = u32::from_be_bytes([0, buf[5], buf[6], buf[7]]) as usize;
        if control && len > MAX_CONTROL {
            return Err(FrameError::TooLarge(len));
        }
        if buf.len() < HEADER_LEN + len {
            buf.reserve(HEADER_LEN + len - buf.len());
            return Ok(None);
        }
        let head = buf.split_to(HEADER_LEN);
        let payload = buf.split_to(len);
        if !control {
            return Ok(Some(Frame::Data {
                stream: be32(&head[..4]) & 0x7fff_ffff,
                fin: flags & FLAG_FIN != 0,
                data: payload.to_vec(),
            }));
        }
        let version = u16::from_be_bytes([head[0], head[1]]) & 0x7fff;
        if version != VERSION {
            return Err(FrameError::Version(version));
        }
        let kind = u16::from_be_bytes([head[2], head[3]]);
        let need = |n: usize, what: &'static str| {
            if payload.len() < n {
                Err(FrameError::Malformed(what))
            } else {
                Ok(())
            }
        };
        let stream = |p: &[u8]| be32(p) & 0x7fff_ffff;
        Ok(Some(match kind {
            SYN_STREAM => {
                need(10, "SYN_STREAM")?;
                Frame::SynStream {
                    stream: stream(&payload),
                    fin: flags & FLAG_FIN != 0,
                    headers: self.header_block(&payload[10..])?,
                }
            }
            SYN_REPLY => {
                need(4, "SYN_REPLY")?;
                Frame::SynReply {
                    stream: stream(&payload),
                    headers: self.header_block(&payload[4..])?,
                }
            }
            RST_STREAM => {
                need(8, "RST_STREAM")?;
                Frame::RstStream {
                    stream: stream(&payload),
                    status: be32(&payload[4..]),
                }
            }
            PING => {
                need(4, "PING")?;
                Frame::Ping { id: be32(&payload) }
            }
            GOAWAY => {
                need(4, "GOAWAY")?;
                Frame::GoAway {
                    last_stream: stream(&payload),
                }
            }
            HEADERS => {
                need(4, "HEADERS")?;
                // Inflated to keep the zlib stream in step.
                self.header_block(&payload[4..])?;
                Frame::Ignored(HEADERS)
            }
            other => Frame::Ignored(other),
        }))
    }

    fn inflate(&mut self, input: &[u8]) -> Result<Vec<u8>, FrameError> {
        let bad = |e: String| FrameError::HeaderBlock(e);
        let mut out = Vec::with_capacity(input.len() * 4 + 64);
        let mut pos = 0;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(256));
            }
            let (in0, out0) = (self.inflate.total_in(), self.inflate.total_out());
            let result =
                self.inflate
                    .decompress_vec(&input[pos..], &mut out, FlushDecompress::Sync);
            pos += (self.inflate.total_in() - in0) as usize;
            let progressed = self.inflate.total_in() != in0 || self.inflate.total_out() != out0;
            match result {
                Ok(Status::StreamEnd) => break,
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(DICTIONARY)
                        .map_err(|e| bad(e.to_string()))?;
                    continue;
                }
                Err(e) => return Err(bad(e.to_string())),
            }
            if out.len() > MAX_HEADER_BLOCK {
                return Err(FrameError::TooLarge(out.len()));
            }
            if pos >= input.len() && out.len() < out.capacity() {
                break;
            }
            if !progressed {
                return Err(bad("the block ends in the middle".into()));
            }
        }
        Ok(out)
    }

    fn header_block(&mut self, compressed: &[u8]) -> Result<HeaderBlock, FrameError> {
        let raw = self.inflate(compressed)?;
        parse_header_block(&raw)
            .ok_or_else(|| FrameError::HeaderBlock("a length runs past the block".into()))
    }
}

/// The pairs of an inflated header block.
fn parse_header_block(mut raw: &[u8]) -> Option<HeaderBlock> {
    let take = |raw: &mut &[u8]| -> Option<String> {
        if raw.len() < 4 {
            return None;
        }
        let n = be32(raw) as usize;
        raw.advance(4);
        if raw.len() < n {
            return None;
        }
        let s = String::from_utf8_lossy(&raw[..n]).into_owned();
        raw.advance(n);
        Some(s)
    };
    if raw.len() < 4 {
        return None;
    }
    let count = be32(raw) as usize;
    raw.advance(4);
    let mut pairs = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let name = take(&mut raw)?.to_ascii_lowercase();
        let value = take(&mut raw)?;
        pairs.push((name, value));
    }
    Some(pairs)
}

/// Writes frames for a peer.
pub struct Encoder {
    deflate: Compress,
    /// Compress with [`DICTIONARY`] (what a client does; a server's blocks
    /// need not, and a reader ignores the dictionary when the stream does
    /// not ask for one).
    dictionary: bool,
}

impl Default for Encoder {
    fn default() -> Self {
        Encoder {
            deflate: Compress::new(Compression::default(), true),
            dictionary: false,
        }
    }
}

impl Encoder {
    /// An encoder whose header blocks use the preset dictionary, as a
    /// client's do (for tests of the decoder).
    pub fn with_dictionary() -> Self {
        let mut e = Encoder::default();
        e.dictionary = e.deflate.set_dictionary(DICTIONARY).is_ok();
        e
    }

    /// The bytes of `frame`.
    pub fn encode(&mut self, frame: &Frame) -> Vec<u8> {
        match frame {
            Frame::Data { stream, fin, data } => {
                let mut out = Vec::with_capacity(HEADER_LEN + data.len());
                out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
                push_flags_len(&mut out, if *fin { FLAG_FIN } else { 0 }, data.len());
                out.extend_from_slice(data);
                out
            }
            Frame::SynStream {
                stream,
                fin,
                headers,
            } => {
                let mut p = stream.to_be_bytes().to_vec();
                p.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
                p.extend(self.header_block(headers));
                control(SYN_STREAM, if *fin { FLAG_FIN } else { 0 }, &p)
            }
            Frame::SynReply { stream, headers } => {
                let mut p = stream.to_be_bytes().to_vec();
                p.extend(self.header_block(headers));
                control(SYN_REPLY, 0, &p)
            }
            Frame::RstStream { stream, status } => {
                let mut p = stream.to_be_bytes().to_vec();
                p.extend_from_slice(&status.to_be_bytes());
                control(RST_STREAM, 0, &p)
            }
            Frame::Ping { id } => control(PING, 0, &id.to_be_bytes()),
            Frame::GoAway { last_stream } => {
                let mut p = last_stream.to_be_bytes().to_vec();
                p.extend_from_slice(&0u32.to_be_bytes());
                control(GOAWAY, 0, &p)
            }
            Frame::Ignored(kind) => control(*kind, 0, &[0, 0, 0, 0]),
        }
    }

    fn header_block(&mut self, headers: &HeaderBlock) -> Vec<u8> {
        let mut raw = (headers.len() as u32).to_be_bytes().to_vec();
        for (name, value) in headers {
            for s in [name, value] {
                raw.extend_from_slice(&(s.len() as u32).to_be_bytes());
                raw.extend_from_slice(s.as_bytes());
            }
        }
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut pos = 0;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(256));
            }
            let in0 = self.deflate.total_in();
            // Compressing into a vector with room cannot fail.
            let _ = self
                .deflate
                .compress_vec(&raw[pos..], &mut out, FlushCompress::Sync);
            pos += (self.deflate.total_in() - in0) as usize;
            if pos >= raw.len() && out.len() < out.capacity() {
                break;
            }
        }
        out
    }
}

fn push_flags_len(out: &mut Vec<u8>, flags: u8, len: usize) {
    let l = (len as u32).to_be_bytes();
    out.extend_from_slice(&[flags, l[1], l[2], l[3]]);
}

fn control(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    push_flags_len(&mut out, flags, payload.len());
    out.extend_from_slice(payload);
    out
}

/// Reads a peer's frames from a byte stream.
pub struct FrameReader<R> {
    rd: R,
    dec: Decoder,
    buf: BytesMut,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Frames from `rd`.
    pub fn new(rd: R) -> Self {
        FrameReader {
            rd,
            dec: Decoder::default(),
            buf: BytesMut::with_capacity(64 * 1024),
        }
    }

    /// The next frame; `Ok(None)` once the peer has closed the stream (or
    /// it failed). After an error the session must end.
    pub async fn next(&mut self) -> Result<Option<Frame>, FrameError> {
        loop {
            if let Some(f) = self.dec.decode(&mut self.buf)? {
                return Ok(Some(f));
            }
            match self.rd.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return Ok(None),
                Ok(_) => {}
            }
        }
    }
}

/// Starts a task that writes the frames sent to the returned queue (of
/// `queue` frames) to `wr`, flushing whenever the queue is empty, and
/// shuts `wr` down once every sender is gone (or writing fails).
pub fn spawn_writer<W>(mut wr: W, queue: usize) -> (mpsc::Sender<Frame>, JoinHandle<()>)
where
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (out, mut out_rx) = mpsc::channel::<Frame>(queue);
    let writer = tokio::spawn(async move {
        let mut enc = Encoder::default();
        while let Some(f) = out_rx.recv().await {
            if wr.write_all(&enc.encode(&f)).await.is_err() {
                break;
            }
            if out_rx.is_empty() && wr.flush().await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    (out, writer)
}

/// The value of header `name` (lower case) in `headers`; of several
/// values (NUL-separated), the first.
pub fn header<'a>(headers: &'a HeaderBlock, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.split('\0').next().unwrap_or(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> HeaderBlock {
        p.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    /// A client's frames (header blocks compressed with the dictionary, one
    /// zlib stream across frames) read back, byte by byte and whole.
    #[test]
    fn a_clients_frames_decode_in_order_whatever_their_split() {
        let mut client = Encoder::with_dictionary();
        assert!(client.dictionary);
        let frames = vec![
            Frame::SynStream {
                stream: 1,
                fin: false,
                headers: pairs(&[
                    ("streamtype", "error"),
                    ("port", "8080"),
                    ("requestid", "0"),
                ]),
            },
            Frame::Data {
                stream: 1,
                fin: true,
                data: vec![],
            },
            Frame::SynStream {
                stream: 3,
                fin: false,
                headers: pairs(&[("streamtype", "data"), ("port", "8080"), ("requestid", "0")]),
            },
            Frame::Data {
                stream: 3,
                fin: false,
                data: b"GET / HTTP/1.0\r\n\r\n".to_vec(),
            },
            Frame::Ping { id: 7 },
            Frame::RstStream {
                stream: 3,
                status: 5,
            },
            Frame::GoAway { last_stream: 2 },
        ];
        let bytes: Vec<u8> = frames.iter().flat_map(|f| client.encode(f)).collect();
        for chunk in [1, 7, bytes.len()] {
            let mut dec = Decoder::default();
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for piece in bytes.chunks(chunk) {
                buf.extend_from_slice(piece);
                while let Some(f) = dec.decode(&mut buf).unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got, frames, "in pieces of {chunk}");
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn a_servers_replies_decode_without_the_dictionary() {
        let mut server = Encoder::default();
        let mut dec = Decoder::default();
        let mut buf = BytesMut::new();
        for stream in [1, 3, 5] {
            buf.extend_from_slice(&server.encode(&Frame::SynReply {
                stream,
                headers: Vec::new(),
            }));
            assert_eq!(
                dec.decode(&mut buf).unwrap(),
                Some(Frame::SynReply {
                    stream,
                    headers: Vec::new()
                })
            );
        }
    }

    #[test]
    fn bad_frames_are_errors_not_panics() {
        let mut dec = Decoder::default();
        // Version 2.
        let mut buf = BytesMut::from(&[0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1][..]);
        assert!(matches!(dec.decode(&mut buf), Err(FrameError::Version(2))));
        // A SYN_STREAM too short for its fields.
        let mut buf = BytesMut::from(&control(SYN_STREAM, 0, &[0, 0, 0, 1])[..]);
        assert!(matches!(
            Decoder::default().decode(&mut buf),
            Err(FrameError::Malformed("SYN_STREAM"))
        ));
        // A header block that is not zlib.
        let mut p = vec![0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        p.extend_from_slice(b"not zlib at all");
        let mut buf = BytesMut::from(&control(SYN_STREAM, 0, &p)[..]);
        assert!(matches!(
            Decoder::default().decode(&mut buf),
            Err(FrameError::HeaderBlock(_))
        ));
        // A control frame claiming 16 MiB.
        let mut buf = BytesMut::from(&[0x80, 3, 0, 1, 0, 0xff, 0xff, 0xff][..]);
        assert!(matches!(
            Decoder::default().decode(&mut buf),
            Err(FrameError::TooLarge(_))
        ));
        // Truncated: more bytes needed, nothing consumed.
        let mut buf = BytesMut::from(&[0, 0, 0, 1, 0, 0, 0, 9, 1, 2][..]);
        assert_eq!(Decoder::default().decode(&mut buf).unwrap(), None);
        assert_eq!(buf.len(), 10);
    }

    #[test]
    fn header_lengths_past_the_block_are_refused() {
        assert_eq!(parse_header_block(&[0, 0, 0, 1, 0, 0, 0, 9, b'a']), None);
        assert_eq!(parse_header_block(&[0, 0]), None);
        let ok = parse_header_block(&[0, 0, 0, 1, 0, 0, 0, 1, b'A', 0, 0, 0, 1, b'b']).unwrap();
        assert_eq!(ok, pairs(&[("a", "b")]));
        assert_eq!(header(&pairs(&[("port", "80\u{0}81")]), "port"), Some("80"));
    }
}
