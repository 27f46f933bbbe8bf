//! Frames of a stream call: what crosses an agent connection once a `stream` request was accepted
//! (`logs`, `exec`, `copy_out`, `copy_in`; [`crate::protocol::StreamCall`]).
//!
//! The RPC is one JSON line per request and per answer, which suits calls that end; a log that follows, a
//! terminal or a tarball is a stream of bytes in both directions instead. So after the agent's `ok` line
//! the connection carries only frames, until it closes: a kind byte, a big-endian `u32` length, and that
//! many bytes. Binary, so that a tarball or a program's output crosses byte for byte with no encoding.
//!
//! A frame from the node is untrusted like any reply: [`read`] refuses one longer than [`MAX_FRAME`].

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The longest frame either side sends; a reader refuses longer ones, so that a node cannot make the
/// controller hold more than this for one frame.
pub const MAX_FRAME: usize = 256 * 1024;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Output of the session's process (or its log) on its standard output.
    Stdout = 1,
    /// The same on its standard error.
    Stderr = 2,
    /// The process ended: its exit code as a big-endian `i64`.
    Exit = 3,
    /// The stream failed on the node: a message (untrusted text).
    Error = 4,
    /// Bytes of a tarball (`copy_out` from the node, `copy_in` to it).
    Data = 5,
    /// The stream ended as it should (a log that does not follow, a whole tarball).
    End = 6,
    /// Input for the process (controller to node).
    Stdin = 16,
    /// The end of the process's input.
    StdinEnd = 17,
    /// The controller's terminal changed size: columns and rows as big-endian `u16`s.
    Resize = 18,
}

impl Kind {
    fn of(byte: u8) -> Option<Kind> {
        Some(match byte {
            1 => Kind::Stdout,
            2 => Kind::Stderr,
            3 => Kind::Exit,
            4 => Kind::Error,
            5 => Kind::Data,
            6 => Kind::End,
            16 => Kind::Stdin,
            17 => Kind::StdinEnd,
            18 => Kind::Resize,
            _ => return None,
        })
    }
}

/// One frame read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: Kind,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The exit code of an [`Kind::Exit`] frame.
    pub fn exit_code(&self) -> Option<i64> {
        (self.kind == Kind::Exit).then(|| self.payload.as_slice().try_into().ok().map(i64::from_be_bytes)).flatten()
    }

    /// The size of a [`Kind::Resize`] frame: columns, rows.
    pub fn size(&self) -> Option<(u16, u16)> {
        match (self.kind, self.payload.as_slice()) {
            (Kind::Resize, [c0, c1, r0, r1]) => Some((u16::from_be_bytes([*c0, *c1]), u16::from_be_bytes([*r0, *r1]))),
            _ => None,
        }
    }
}

/// Writes one frame and flushes it. A payload longer than [`MAX_FRAME`] is sent as several frames of the
/// same kind.
pub async fn write<W: AsyncWrite + Unpin>(writer: &mut W, kind: Kind, payload: &[u8]) -> std::io::Result<()> {
    let mut chunks = payload.chunks(MAX_FRAME).peekable();
    if chunks.peek().is_none() {
        writer.write_all(&header(kind, 0)).await?;
    }
    for chunk in chunks {
        // One write per frame where it is small: a keystroke is one packet, not two.
        let mut bytes = Vec::with_capacity(5 + chunk.len());
        bytes.extend_from_slice(&header(kind, chunk.len()));
        bytes.extend_from_slice(chunk);
        writer.write_all(&bytes).await?;
    }
    writer.flush().await
}

fn header(kind: Kind, len: usize) -> [u8; 5] {
    let [a, b, c, d] = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
    [kind as u8, a, b, c, d]
}

/// An exit frame's payload.
pub fn exit_payload(code: i64) -> [u8; 8] {
    code.to_be_bytes()
}

/// A resize frame's payload.
pub fn size_payload(cols: u16, rows: u16) -> [u8; 4] {
    let [c0, c1] = cols.to_be_bytes();
    let [r0, r1] = rows.to_be_bytes();
    [c0, c1, r0, r1]
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("a frame of unknown kind {0}")]
    UnknownKind(u8),
    #[error("a frame of {0} bytes, more than the {MAX_FRAME} allowed")]
    TooLong(usize),
}

/// Reads the next frame; `None` when the stream ended cleanly between frames.
pub async fn read<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Option<Frame>, FrameError> {
    let mut head = [0u8; 5];
    // The first byte alone tells a clean end (nothing more) from a cut frame (an error).
    match reader.read(&mut head[..1]).await? {
        0 => return Ok(None),
        _ => reader.read_exact(&mut head[1..]).await?,
    };
    let kind = Kind::of(head[0]).ok_or(FrameError::UnknownKind(head[0]))?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLong(len));
    }
    let mut payload = vec![0u8; len];
    reader.read_exact(&mut payload).await?;
    Ok(Some(Frame { kind, payload }))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn all(bytes: &[u8]) -> Result<Vec<Frame>, FrameError> {
        let mut reader = bytes;
        let mut frames = Vec::new();
        while let Some(frame) = read(&mut reader).await? {
            frames.push(frame);
        }
        Ok(frames)
    }

    #[tokio::test]
    async fn frames_cross_as_written() {
        let mut out = Vec::new();
        write(&mut out, Kind::Stdout, b"hello\n").await.unwrap();
        write(&mut out, Kind::Stderr, b"").await.unwrap();
        write(&mut out, Kind::Exit, &exit_payload(-3)).await.unwrap();
        write(&mut out, Kind::Resize, &size_payload(120, 40)).await.unwrap();
        let frames = all(&out).await.unwrap();
        assert_eq!(frames.len(), 4);
        assert_eq!(frames[0], Frame { kind: Kind::Stdout, payload: b"hello\n".to_vec() });
        assert_eq!(frames[1], Frame { kind: Kind::Stderr, payload: Vec::new() });
        assert_eq!(frames[2].exit_code(), Some(-3));
        assert_eq!(frames[3].size(), Some((120, 40)));
        assert_eq!(frames[0].exit_code(), None);
    }

    #[tokio::test]
    async fn a_long_payload_is_split_and_read_back_whole() {
        let payload: Vec<u8> = (0..MAX_FRAME * 2 + 7).map(|i| (i % 251) as u8).collect();
        let mut out = Vec::new();
        write(&mut out, Kind::Data, &payload).await.unwrap();
        let frames = all(&out).await.unwrap();
        assert_eq!(frames.len(), 3);
        assert!(frames.iter().all(|f| f.kind == Kind::Data && f.payload.len() <= MAX_FRAME));
        assert_eq!(frames.concat_payloads(), payload);
    }

    trait Concat {
        fn concat_payloads(&self) -> Vec<u8>;
    }
    impl Concat for Vec<Frame> {
        fn concat_payloads(&self) -> Vec<u8> {
            self.iter().flat_map(|f| f.payload.iter().copied()).collect()
        }
    }

    #[tokio::test]
    async fn bad_frames_are_refused() {
        let too_long = [1u8, 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(all(&too_long).await, Err(FrameError::TooLong(_))));
        assert!(matches!(all(&[99u8, 0, 0, 0, 0]).await, Err(FrameError::UnknownKind(99))));
        // Cut inside a header and inside a payload.
        assert!(matches!(all(&[1u8, 0, 0]).await, Err(FrameError::Io(_))));
        assert!(matches!(all(&[1u8, 0, 0, 0, 4, b'a']).await, Err(FrameError::Io(_))));
        assert!(all(&[]).await.unwrap().is_empty());
    }
}
