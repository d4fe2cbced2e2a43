//! `/cocoon/attestation/1`: ask a peer for its current attestation record directly, so a node
//! that joins late need not wait for the worker's next gossip round.
//!
//! Request: empty. Response: one byte `0` (the peer has no record: not a worker) or `1` followed
//! by the signed record (at most [`MAX_RECORD`] bytes). The stream is closed after each message.
//! Sizes are bounded so a peer cannot make us buffer more than one record; the request-response
//! behaviour times the exchange out.

use std::io;
use std::time::Duration;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use libp2p::request_response::{self, ProtocolSupport};

/// Protocol name.
pub const PROTOCOL: &str = "/cocoon/attestation/1";
/// Largest record answered or accepted (a signed record with a TDX quote is about 5.3 KiB, each
/// Hopper GPU's evidence adds about 7.5 KiB; the envelope's own bound is 96 KiB of record).
pub const MAX_RECORD: usize = 100 * 1024;
/// How long one exchange may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Codec of the record exchange.
#[derive(Debug, Clone, Copy, Default)]
pub struct RecordCodec;

impl request_response::Codec for RecordCodec {
    type Protocol = StreamProtocol;
    type Request = ();
    type Response = Option<Vec<u8>>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<()>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut rest = Vec::new();
        io.take(1).read_to_end(&mut rest).await?;
        if rest.is_empty() {
            Ok(())
        } else {
            Err(io::Error::new(io::ErrorKind::InvalidData, "request must be empty"))
        }
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Option<Vec<u8>>>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut buf = Vec::new();
        io.take(MAX_RECORD as u64 + 2).read_to_end(&mut buf).await?;
        match buf.split_first() {
            Some((0, [])) => Ok(None),
            Some((1, record)) if !record.is_empty() && record.len() <= MAX_RECORD => {
                Ok(Some(record.to_vec()))
            }
            _ => Err(io::Error::new(io::ErrorKind::InvalidData, "malformed or oversized record response")),
        }
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, _: ()) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.close().await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Option<Vec<u8>>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        match res {
            Some(record) if record.len() <= MAX_RECORD => {
                io.write_all(&[1]).await?;
                io.write_all(&record).await?;
            }
            _ => io.write_all(&[0]).await?,
        }
        io.close().await
    }
}

/// The behaviour, serving and requesting.
pub(crate) fn behaviour() -> request_response::Behaviour<RecordCodec> {
    request_response::Behaviour::new(
        [(StreamProtocol::new(PROTOCOL), ProtocolSupport::Full)],
        request_response::Config::default().with_request_timeout(TIMEOUT),
    )
}

#[cfg(test)]
mod tests {
    use futures::executor::block_on;
    use futures::io::Cursor;
    use libp2p::request_response::Codec;

    use super::*;

    fn read(bytes: Vec<u8>) -> io::Result<Option<Vec<u8>>> {
        block_on(RecordCodec.read_response(&StreamProtocol::new(PROTOCOL), &mut Cursor::new(bytes)))
    }

    #[test]
    fn responses_round_trip_and_bad_ones_are_refused() {
        let protocol = StreamProtocol::new(PROTOCOL);
        for response in [None, Some(vec![7u8; 100])] {
            let mut buf = Cursor::new(Vec::new());
            block_on(RecordCodec.write_response(&protocol, &mut buf, response.clone())).unwrap();
            assert_eq!(read(buf.into_inner()).unwrap(), response);
        }
        assert!(read(vec![]).is_err(), "empty response");
        assert!(read(vec![2, 1]).is_err(), "unknown tag");
        assert!(read(vec![1]).is_err(), "record flag without a record");
        assert!(read(vec![0, 0]).is_err(), "trailing bytes after 'no record'");
        let mut oversized = vec![1u8];
        oversized.resize(MAX_RECORD + 2, 0);
        assert!(read(oversized).is_err(), "oversized record");
        let request = block_on(RecordCodec.read_request(&protocol, &mut Cursor::new(vec![1u8])));
        assert!(request.is_err(), "requests carry no body");
    }
}
