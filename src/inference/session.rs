//! The end-to-end Noise session of `/cocoon/inference/2`, over any byte stream (a libp2p stream,
//! direct or through a circuit relay).
//!
//! `Noise_IK_25519_ChaChaPoly_BLAKE2s`: the client knows the worker's static key from its
//! verified attestation record, so the first handshake message already carries (encrypted) the
//! beginning of the request, and only the worker holding the attested private key can read it.
//! The client's static key is fresh per session (the worker learns nothing linking requests; the
//! payment voucher identifies the paying channel).
//!
//! Wire: each Noise message is sent as `u16 length ‖ message` (≤ 65,535 bytes). Inside, the two
//! directions are byte streams of application frames, `u32 length ‖ frame`, split across as many
//! Noise messages as needed. A frame longer than the receiver's maximum ends the session before
//! it is buffered.

use std::sync::Arc;

use futures::io::{ReadHalf, WriteHalf};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::store::NOISE_PARAMS;

/// Largest Noise message.
pub const MAX_NOISE_MESSAGE: usize = 65_535;
/// Largest plaintext in one transport message (message minus the AEAD tag).
const MAX_TRANSPORT_PAYLOAD: usize = MAX_NOISE_MESSAGE - 16;
/// Largest payload of the first handshake message (minus e, encrypted s and the tag).
const MAX_FIRST_PAYLOAD: usize = MAX_NOISE_MESSAGE - 32 - 48 - 16;
/// Default time one frame may take to leave: a peer that stops reading (withholds its transport's
/// flow-control window) blocks a send for ever otherwise. Ten seconds is far beyond what a frame
/// takes on any working link, and short enough that a stalled peer releases what it holds.
pub const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Why a session failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The stream failed or closed.
    #[error("stream: {0}")]
    Io(#[from] std::io::Error),
    /// A handshake or decryption failure: wrong key, tampered or out-of-order message.
    #[error("noise: {0}")]
    Noise(String),
    /// The peer announced a frame larger than allowed.
    #[error("frame of {len} bytes exceeds the maximum {max}")]
    FrameTooLarge {
        /// Announced length.
        len: usize,
        /// Maximum.
        max: usize,
    },
    /// The stream ended between frames.
    #[error("stream closed")]
    Closed,
    /// A send did not complete in time (the peer stopped reading); the writer is unusable now.
    #[error("the peer stopped reading: a send took longer than {0:?}")]
    SendTimedOut(std::time::Duration),
}

fn noise(e: snow::Error) -> SessionError {
    SessionError::Noise(e.to_string())
}

fn builder<'a>() -> Result<snow::Builder<'a>, SessionError> {
    let params = NOISE_PARAMS.parse().map_err(noise)?;
    Ok(snow::Builder::new(params))
}

/// A fresh X25519 key pair (private, public).
pub fn generate_keypair() -> Result<([u8; 32], [u8; 32]), SessionError> {
    let pair = builder()?.generate_keypair().map_err(noise)?;
    let private = pair.private.try_into().map_err(|_| SessionError::Noise("key size".into()))?;
    let public = pair.public.try_into().map_err(|_| SessionError::Noise("key size".into()))?;
    Ok((private, public))
}

/// The receiving half of a session.
pub struct Reader<R> {
    stream: R,
    transport: Arc<snow::StatelessTransportState>,
    nonce: u64,
    /// Decrypted bytes not yet returned as frames.
    inbound: Vec<u8>,
    wire_bytes: u64,
}

/// The sending half of a session. Every send and close has a deadline ([`SEND_TIMEOUT`] unless
/// set with [`Writer::set_send_timeout`]); after one is missed the writer refuses further sends
/// (a frame may have been cut in half).
pub struct Writer<W> {
    stream: W,
    transport: Arc<snow::StatelessTransportState>,
    nonce: u64,
    wire_bytes: u64,
    send_timeout: std::time::Duration,
    stalled: bool,
}

/// An established session over `S`, as two halves that can be used at the same time (a worker
/// sends chunks while watching for the client going away).
pub struct Session<S> {
    /// Receiving half.
    pub reader: Reader<ReadHalf<S>>,
    /// Sending half.
    pub writer: Writer<WriteHalf<S>>,
}

impl<R> std::fmt::Debug for Reader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("nonce", &self.nonce)
            .field("buffered", &self.inbound.len())
            .finish_non_exhaustive()
    }
}

impl<W> std::fmt::Debug for Writer<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").field("nonce", &self.nonce).finish_non_exhaustive()
    }
}

impl<S> std::fmt::Debug for Session<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("buffered", &self.reader.inbound.len()).finish_non_exhaustive()
    }
}

async fn read_message<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Vec<u8>, SessionError> {
    let mut len = [0u8; 2];
    match stream.read_exact(&mut len).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(SessionError::Closed),
        Err(e) => return Err(e.into()),
    }
    let mut message = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut message).await?;
    Ok(message)
}

async fn write_message<S: AsyncWrite + Unpin>(stream: &mut S, message: &[u8]) -> Result<(), SessionError> {
    let len = u16::try_from(message.len()).map_err(|_| SessionError::Noise("message too long".into()))?;
    stream.write_all(&len.to_be_bytes()).await?;
    stream.write_all(message).await?;
    Ok(())
}

fn framed(frame: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + frame.len());
    out.extend_from_slice(&(frame.len() as u32).to_be_bytes());
    out.extend_from_slice(frame);
    out
}

fn established<S: AsyncRead + AsyncWrite>(
    stream: S,
    hs: snow::HandshakeState,
    inbound: Vec<u8>,
    handshake_bytes: u64,
) -> Result<Session<S>, SessionError> {
    let transport = Arc::new(hs.into_stateless_transport_mode().map_err(noise)?);
    let (read, write) = stream.split();
    Ok(Session {
        reader: Reader {
            stream: read,
            transport: transport.clone(),
            nonce: 0,
            inbound,
            wire_bytes: handshake_bytes,
        },
        writer: Writer {
            stream: write,
            transport,
            nonce: 0,
            wire_bytes: 0,
            send_timeout: SEND_TIMEOUT,
            stalled: false,
        },
    })
}

/// Client side: open a session to the worker whose attested static key is `remote_static`,
/// sending `first_frame` (the request) with the handshake.
pub async fn initiate<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    remote_static: &[u8; 32],
    first_frame: &[u8],
) -> Result<Session<S>, SessionError> {
    let (private, _) = generate_keypair()?;
    let mut hs = builder()?
        .local_private_key(&private)
        .map_err(noise)?
        .remote_public_key(remote_static)
        .map_err(noise)?
        .build_initiator()
        .map_err(noise)?;
    let bytes = framed(first_frame);
    let (head, rest) = bytes.split_at(bytes.len().min(MAX_FIRST_PAYLOAD));
    let mut buf = vec![0u8; MAX_NOISE_MESSAGE];
    let n = hs.write_message(head, &mut buf).map_err(noise)?;
    write_message(&mut stream, &buf[..n]).await?;
    stream.flush().await?;
    let sent = 2 + n as u64;
    let reply = read_message(&mut stream).await?;
    let m = hs.read_message(&reply, &mut buf).map_err(noise)?;
    let mut session = established(stream, hs, buf[..m].to_vec(), sent + 2 + reply.len() as u64)?;
    if !rest.is_empty() {
        session.writer.send_bytes(rest).await?;
    }
    Ok(session)
}

/// Worker side: complete the handshake with this node's static key. The first frame (the
/// request) is then read with [`Session::recv`].
pub async fn respond<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    local_private: &[u8; 32],
) -> Result<Session<S>, SessionError> {
    let mut hs =
        builder()?.local_private_key(local_private).map_err(noise)?.build_responder().map_err(noise)?;
    let first = read_message(&mut stream).await?;
    let mut buf = vec![0u8; MAX_NOISE_MESSAGE];
    let n = hs.read_message(&first, &mut buf).map_err(noise)?;
    let inbound = buf[..n].to_vec();
    let m = hs.write_message(&[], &mut buf).map_err(noise)?;
    write_message(&mut stream, &buf[..m]).await?;
    stream.flush().await?;
    established(stream, hs, inbound, (2 + first.len() + 2 + m) as u64)
}

impl<W: AsyncWrite + Unpin> Writer<W> {
    /// How long each later send or close may take.
    pub fn set_send_timeout(&mut self, limit: std::time::Duration) {
        self.send_timeout = limit;
    }

    /// Send one frame, within the send deadline.
    pub async fn send(&mut self, frame: &[u8]) -> Result<(), SessionError> {
        self.usable()?;
        let bytes = framed(frame);
        let sent = tokio::time::timeout(self.send_timeout, async {
            self.send_bytes(&bytes).await?;
            self.stream.flush().await?;
            Ok(())
        })
        .await;
        self.settle(sent)
    }

    fn usable(&self) -> Result<(), SessionError> {
        if self.stalled { Err(SessionError::SendTimedOut(self.send_timeout)) } else { Ok(()) }
    }

    /// The result of a send or close; a missed deadline stalls the writer for good.
    fn settle(
        &mut self,
        result: Result<Result<(), SessionError>, tokio::time::error::Elapsed>,
    ) -> Result<(), SessionError> {
        result.unwrap_or_else(|_| {
            self.stalled = true;
            Err(SessionError::SendTimedOut(self.send_timeout))
        })
    }

    async fn send_bytes(&mut self, bytes: &[u8]) -> Result<(), SessionError> {
        let mut buf = vec![0u8; MAX_NOISE_MESSAGE];
        for chunk in bytes.chunks(MAX_TRANSPORT_PAYLOAD) {
            let n = self.transport.write_message(self.nonce, chunk, &mut buf).map_err(noise)?;
            self.nonce += 1;
            write_message(&mut self.stream, &buf[..n]).await?;
            self.wire_bytes += 2 + n as u64;
        }
        Ok(())
    }

    /// Close the sending direction (the peer's reader sees the end of the stream), within the
    /// send deadline.
    pub async fn close(&mut self) -> Result<(), SessionError> {
        self.usable()?;
        let closed = tokio::time::timeout(self.send_timeout, async {
            self.stream.close().await?;
            Ok(())
        })
        .await;
        self.settle(closed)
    }
}

impl<R: AsyncRead + Unpin> Reader<R> {
    /// Receive one frame of at most `max` bytes. The end of the stream between frames is
    /// [`SessionError::Closed`].
    pub async fn recv(&mut self, max: usize) -> Result<Vec<u8>, SessionError> {
        loop {
            if let Some(len) = self.inbound.first_chunk::<4>().map(|l| u32::from_be_bytes(*l) as usize) {
                if len > max {
                    return Err(SessionError::FrameTooLarge { len, max });
                }
                if self.inbound.len() >= 4 + len {
                    let frame = self.inbound[4..4 + len].to_vec();
                    self.inbound.drain(..4 + len);
                    return Ok(frame);
                }
            }
            let message = read_message(&mut self.stream).await?;
            let mut buf = vec![0u8; message.len()];
            let n = self.transport.read_message(self.nonce, &message, &mut buf).map_err(noise)?;
            self.nonce += 1;
            self.wire_bytes += 2 + message.len() as u64;
            self.inbound.extend_from_slice(&buf[..n]);
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// Send one frame.
    pub async fn send(&mut self, frame: &[u8]) -> Result<(), SessionError> {
        self.writer.send(frame).await
    }

    /// Receive one frame of at most `max` bytes.
    pub async fn recv(&mut self, max: usize) -> Result<Vec<u8>, SessionError> {
        self.reader.recv(max).await
    }

    /// Close the sending direction.
    pub async fn close(&mut self) -> Result<(), SessionError> {
        self.writer.close().await
    }

    /// Ciphertext bytes moved so far, both directions, including length prefixes.
    pub fn wire_bytes(&self) -> u64 {
        self.reader.wire_bytes + self.writer.wire_bytes
    }
}

#[cfg(test)]
mod tests {
    use futures::io::Cursor;

    use super::*;

    /// An in-memory duplex pipe.
    fn pipe() -> (
        tokio_util::compat::Compat<tokio::io::DuplexStream>,
        tokio_util::compat::Compat<tokio::io::DuplexStream>,
    ) {
        use tokio_util::compat::TokioAsyncReadCompatExt;
        let (a, b) = tokio::io::duplex(1 << 20);
        (a.compat(), b.compat())
    }

    #[tokio::test]
    async fn request_rides_the_handshake_and_large_frames_are_split() {
        let (worker_private, worker_public) = generate_keypair().unwrap();
        let (client_io, worker_io) = pipe();
        let big = vec![7u8; 200_000];
        let request = big.clone();
        let worker = tokio::spawn(async move {
            let mut s = respond(worker_io, &worker_private).await.unwrap();
            assert_eq!(s.recv(1 << 20).await.unwrap(), request);
            s.send(b"chunk").await.unwrap();
            s.send(&vec![1u8; 100_000]).await.unwrap();
            s.recv(16).await
        });
        let mut client = initiate(client_io, &worker_public, &big).await.unwrap();
        assert_eq!(client.recv(16).await.unwrap(), b"chunk");
        assert!(matches!(client.recv(16).await, Err(SessionError::FrameTooLarge { len: 100_000, max: 16 })));
        client.send(b"bye").await.unwrap();
        assert_eq!(worker.await.unwrap().unwrap(), b"bye");
    }

    #[tokio::test]
    async fn a_peer_that_stops_reading_cannot_hold_a_send() {
        use tokio_util::compat::TokioAsyncReadCompatExt;
        let (worker_private, worker_public) = generate_keypair().unwrap();
        // A 4 KiB pipe the client never drains past the handshake.
        let (client_io, worker_io) = tokio::io::duplex(4096);
        let (client_io, worker_io) = (client_io.compat(), worker_io.compat());
        let worker = tokio::spawn(async move {
            let mut s = respond(worker_io, &worker_private).await.unwrap();
            s.recv(1024).await.unwrap();
            s.writer.set_send_timeout(std::time::Duration::from_millis(300));
            let stuck = s.send(&vec![0u8; 64 * 1024]).await;
            let after = s.send(b"x").await;
            (stuck, after)
        });
        let _client = initiate(client_io, &worker_public, b"request").await.unwrap();
        let (stuck, after) = worker.await.unwrap();
        assert!(matches!(stuck, Err(SessionError::SendTimedOut(_))), "{stuck:?}");
        assert!(matches!(after, Err(SessionError::SendTimedOut(_))), "a stalled writer stays stalled");
    }

    #[tokio::test]
    async fn a_client_with_the_wrong_key_gets_nothing_through() {
        let (worker_private, _) = generate_keypair().unwrap();
        let (_, impostor_public) = generate_keypair().unwrap();
        let (client_io, worker_io) = pipe();
        let worker = tokio::spawn(async move { respond(worker_io, &worker_private).await.map(|_| ()) });
        let client = initiate(client_io, &impostor_public, b"secret prompt");
        let (w, _) = tokio::join!(worker, client);
        assert!(matches!(w.unwrap(), Err(SessionError::Noise(_))));
    }

    #[tokio::test]
    async fn garbage_and_truncation_are_errors() {
        let (private, _) = generate_keypair().unwrap();
        let mut garbage = vec![0, 40];
        garbage.extend_from_slice(&[0xAB; 40]);
        let io = futures::io::AllowStdIo::new(std::io::Cursor::new(garbage));
        assert!(matches!(respond(io, &private).await, Err(SessionError::Noise(_) | SessionError::Io(_))));
        let empty = Cursor::new(Vec::new());
        assert!(matches!(respond(empty, &private).await, Err(SessionError::Closed)));
    }
}
