//! The cooperative close between a client and its worker: the client proposes to close a channel
//! at the cumulative amount it signed (its signature over the [`CloseRequest`] cell), the worker
//! answers with its own signature or a refusal, and the client sends both to the contract, which
//! pays the worker, refunds the client and ends the channel in one transaction, with no dispute
//! window. The worker's rules for co-signing are in [`crate::payments::ledger::WorkerChannel::co_sign`].

use tycho_types::models::StdAddr;

use super::channel::{read_addr, write_addr};
use super::voucher::CloseRequest;
use crate::codec::{CodecError, Reader, Writer};

/// The stream protocol: one proposal, one answer.
pub const PROTOCOL: &str = "/cocoon/channel-close/1";

/// Largest message either side reads: a proposal is 113 bytes and a refusal's reason is at most
/// [`MAX_REASON`].
pub const MAX_MESSAGE: usize = 512;

/// Longest refusal reason sent or read.
pub const MAX_REASON: usize = 256;

/// "Close this channel now at `close.cumulative`", signed by the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseProposal {
    /// What both sign.
    pub close: CloseRequest,
    /// The client's signature over `close`.
    pub client_signature: [u8; 64],
}

impl CloseProposal {
    /// Wire bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        write_addr(&mut w, &self.close.channel);
        w.u64(self.close.cumulative).u64(self.close.seqno).fixed(&self.client_signature);
        w.finish()
    }

    /// Decode wire bytes (nothing may follow).
    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        let mut r = Reader::new(bytes);
        let channel: StdAddr = read_addr(&mut r, "channel")?;
        let cumulative = r.u64("cumulative")?;
        let seqno = r.u64("seqno")?;
        let client_signature = r.array::<64>("client signature")?;
        r.finish()?;
        Ok(Self { close: CloseRequest { channel, cumulative, seqno }, client_signature })
    }
}

/// The worker's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseAnswer {
    /// The worker's signature over the proposal's close request.
    Signed([u8; 64]),
    /// Why the worker will not sign (the client falls back to a unilateral close).
    Refused(String),
}

impl CloseAnswer {
    /// Wire bytes (a reason longer than [`MAX_REASON`] is cut at a character boundary).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        match self {
            Self::Signed(sig) => {
                w.u8(0).fixed(sig);
            }
            Self::Refused(reason) => {
                let mut end = reason.len().min(MAX_REASON);
                while !reason.is_char_boundary(end) {
                    end -= 1;
                }
                w.u8(1).str(&reason[..end]);
            }
        }
        w.finish()
    }

    /// Decode wire bytes (nothing may follow).
    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        let mut r = Reader::new(bytes);
        let answer = match r.u8("answer")? {
            0 => Self::Signed(r.array::<64>("worker signature")?),
            1 => Self::Refused(r.str("reason", MAX_REASON)?.to_owned()),
            other => return Err(CodecError::Unknown { field: "answer", value: u64::from(other) }),
        };
        r.finish()?;
        Ok(answer)
    }
}

#[cfg(test)]
mod tests {
    use tycho_types::cell::HashBytes;

    use super::*;

    #[test]
    fn proposals_and_answers_round_trip_and_refuse_trailing_bytes() {
        let close = CloseRequest { channel: StdAddr::new(0, HashBytes([7; 32])), cumulative: 5, seqno: 2 };
        let p = CloseProposal { close, client_signature: [3; 64] };
        let bytes = p.encode();
        assert!(bytes.len() <= MAX_MESSAGE);
        assert_eq!(CloseProposal::decode(&bytes).unwrap(), p);
        let mut long = bytes.clone();
        long.push(0);
        assert!(matches!(CloseProposal::decode(&long), Err(CodecError::Trailing(1))));
        assert!(CloseProposal::decode(&bytes[..bytes.len() - 1]).is_err());
        for a in [CloseAnswer::Signed([1; 64]), CloseAnswer::Refused("busy".into())] {
            assert_eq!(CloseAnswer::decode(&a.encode()).unwrap(), a);
        }
        assert!(CloseAnswer::decode(&[2]).is_err());
    }

    #[test]
    fn a_long_reason_is_cut_to_fit() {
        let a = CloseAnswer::Refused("é".repeat(MAX_REASON));
        let bytes = a.encode();
        assert!(bytes.len() <= MAX_MESSAGE);
        let CloseAnswer::Refused(r) = CloseAnswer::decode(&bytes).unwrap() else { panic!("not a refusal") };
        assert!(r.len() <= MAX_REASON && r.chars().all(|c| c == 'é'));
    }
}
