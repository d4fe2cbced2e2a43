//! The off-chain rules of a channel, one side each. The worker admits a request only while the
//! channel's unspent deposit covers it (plus what is already in flight) and accepts a voucher only
//! when it raises the cumulative amount by exactly the invoiced amount. The client signs exactly
//! that and never more than the receipts it verified add up to (`owed`): what the worker says it
//! holds can lower the next voucher's base, never raise it. How much unpaid work a worker risks
//! per client and in total is [`super::exposure`]'s business.

use super::PaymentError;
use super::channel::{ChannelParams, ChannelState, CodeVersion};
use super::voucher::{CloseRequest, SignedVoucher, VerifiedVoucher, Voucher};
use libp2p_identity::ed25519;
use tycho_types::models::StdAddr;

/// Why a worker refuses a voucher (sent back to the client; the request stays unpaid).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VoucherRejection {
    /// The voucher names a different channel than the one the request was admitted on.
    #[error("voucher is for channel {got}, the request was admitted on {expected}")]
    WrongChannel {
        /// The admitted channel.
        expected: String,
        /// What the voucher names.
        got: String,
    },
    /// The client's signature does not verify.
    #[error("voucher signature does not verify against the channel's client key")]
    BadSignature,
    /// The seqno does not increase (the worker keeps its voucher log ordered; the contract
    /// itself orders vouchers by their cumulative amount).
    #[error("voucher seqno {got} is not above the last accepted {last}")]
    StaleSeqno {
        /// Last accepted.
        last: u64,
        /// Received.
        got: u64,
    },
    /// The cumulative amount does not rise by exactly the invoice.
    #[error("voucher cumulative {got} nanotons, expected {expected} (previous plus the invoice)")]
    WrongAmount {
        /// Previous cumulative plus the invoiced amount.
        expected: u64,
        /// Received.
        got: u64,
    },
    /// The cumulative amount exceeds what the channel holds.
    #[error("voucher cumulative {cumulative} nanotons exceeds the channel's deposit {deposited}")]
    OverDeposit {
        /// Received.
        cumulative: u64,
        /// On-chain deposit.
        deposited: u64,
    },
}

/// Why a worker will not serve a request on a channel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionError {
    /// Unspent deposit (after in-flight requests) is below the request's worst case.
    #[error("channel has {available} nanotons unspent, the request may cost {needed}")]
    InsufficientDeposit {
        /// Deposit minus signed vouchers minus in-flight worst cases.
        available: u64,
        /// The request's worst-case price.
        needed: u64,
    },
    /// The client started closing the channel.
    #[error("the channel is closing")]
    Closing,
}

/// The worker's view of one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerChannel {
    /// Fixed parameters.
    pub params: ChannelParams,
    /// The contract version it runs.
    pub code: CodeVersion,
    /// The channel's address (derived from `params` and `code`).
    pub address: StdAddr,
    /// Last known on-chain state.
    pub chain: ChannelState,
    /// Highest voucher stored durably (what claims are made with).
    pub best: Option<SignedVoucher>,
    /// A voucher that passed the rules and is being stored: the next one must follow it, but it
    /// is acknowledged (and becomes `best`) only once it is durable.
    pub pending: Option<SignedVoucher>,
    /// Worst-case prices of admitted requests not yet paid.
    pub reserved: u64,
    /// `params.client_key`, decoded once.
    pub client: ed25519::PublicKey,
    /// The worker co-signed a cooperative close of this channel: it admits nothing more on it.
    pub co_signed: bool,
}

impl WorkerChannel {
    /// A new (version 2) channel the worker has not accepted anything on yet.
    pub fn new(params: ChannelParams, chain: ChannelState) -> Result<Self, PaymentError> {
        Self::with_code(params, chain, CodeVersion::V2)
    }

    /// A channel running `code` (a stored version 1 channel is still claimed on).
    pub fn with_code(
        params: ChannelParams,
        chain: ChannelState,
        code: CodeVersion,
    ) -> Result<Self, PaymentError> {
        let address = params.address_of(code)?;
        let client =
            ed25519::PublicKey::try_from_bytes(&params.client_key).map_err(|_| PaymentError::BadSignature)?;
        Ok(Self {
            params,
            code,
            address,
            chain,
            best: None,
            pending: None,
            reserved: 0,
            client,
            co_signed: false,
        })
    }

    /// The voucher the next one must follow: the one being stored, else the best stored.
    pub fn latest(&self) -> Option<&SignedVoucher> {
        self.pending.as_ref().or(self.best.as_ref())
    }

    /// Cumulative amount of the latest voucher (0 before the first).
    pub fn cumulative(&self) -> u64 {
        self.latest().map_or(0, |v| v.voucher.cumulative)
    }

    /// Seqno of the latest voucher (0 before the first).
    pub fn seqno(&self) -> u64 {
        self.latest().map_or(0, |v| v.voucher.seqno)
    }

    /// Signed but not yet claimed on chain.
    pub fn unclaimed(&self) -> u64 {
        self.cumulative().saturating_sub(self.chain.claimed)
    }

    /// Deposit not covered by vouchers or in-flight requests.
    pub fn unspent(&self) -> u64 {
        self.chain.deposited.saturating_sub(self.cumulative()).saturating_sub(self.reserved)
    }

    /// Admit a request whose worst-case price is `worst_case`: reserves it.
    pub fn admit(&mut self, worst_case: u64) -> Result<(), AdmissionError> {
        if self.chain.close_started_at != 0 || self.co_signed {
            return Err(AdmissionError::Closing);
        }
        let available = self.unspent();
        if available < worst_case {
            return Err(AdmissionError::InsufficientDeposit { available, needed: worst_case });
        }
        self.reserved = self.reserved.saturating_add(worst_case);
        Ok(())
    }

    /// Release a reservation made by [`Self::admit`] (request finished, paid or not).
    pub fn release(&mut self, worst_case: u64) {
        self.reserved = self.reserved.saturating_sub(worst_case);
    }

    /// Check a voucher paying `invoiced` nanotons; does not change the channel.
    pub fn check(&self, v: &SignedVoucher, invoiced: u64) -> Result<(), VoucherRejection> {
        self.names_this_channel(v)?;
        v.verify_with(&self.client).map_err(|_| VoucherRejection::BadSignature)?;
        self.rules(v, invoiced)
    }

    /// [`Self::check`] for a voucher whose signature was verified already (against this
    /// channel's client key, or it is refused here).
    pub fn check_verified(&self, v: &VerifiedVoucher, invoiced: u64) -> Result<(), VoucherRejection> {
        let signed = v.signed();
        self.names_this_channel(signed)?;
        if v.key() != &self.params.client_key {
            return Err(VoucherRejection::BadSignature);
        }
        self.rules(signed, invoiced)
    }

    fn names_this_channel(&self, v: &SignedVoucher) -> Result<(), VoucherRejection> {
        if v.voucher.channel != self.address {
            return Err(VoucherRejection::WrongChannel {
                expected: self.address.to_string(),
                got: v.voucher.channel.to_string(),
            });
        }
        Ok(())
    }

    /// The rules after the signature: seqno, amount, deposit.
    fn rules(&self, v: &SignedVoucher, invoiced: u64) -> Result<(), VoucherRejection> {
        // Only the worker's own log orders seqnos: the contract's `last_seqno` is whatever a
        // claim last carried (a client's front-running claim may have set it near `u64::MAX`).
        let last = self.seqno();
        if v.voucher.seqno <= last {
            return Err(VoucherRejection::StaleSeqno { last, got: v.voucher.seqno });
        }
        let expected = self.cumulative().saturating_add(invoiced);
        if v.voucher.cumulative != expected {
            return Err(VoucherRejection::WrongAmount { expected, got: v.voucher.cumulative });
        }
        if v.voucher.cumulative > self.chain.deposited {
            return Err(VoucherRejection::OverDeposit {
                cumulative: v.voucher.cumulative,
                deposited: self.chain.deposited,
            });
        }
        Ok(())
    }

    /// Whether the worker co-signs `close`, which `client_signature` signs: it must name this
    /// channel, carry the client's valid signature, pay at least the latest voucher (a client
    /// cannot close away what it already promised; more is only the client's loss), and come
    /// while no request is in flight or voucher being stored (their money would be lost with the
    /// channel). When it may, the channel admits nothing from now on: a request served after the
    /// close was signed could not be paid.
    pub fn co_sign(&mut self, close: &CloseRequest, client_signature: &[u8; 64]) -> Result<(), CloseRefusal> {
        if close.channel != self.address {
            return Err(CloseRefusal::WrongChannel);
        }
        close.verify(&self.params.client_key, client_signature).map_err(|_| CloseRefusal::BadSignature)?;
        if self.reserved > 0 || self.pending.is_some() {
            return Err(CloseRefusal::InFlight);
        }
        let holds = self.cumulative();
        if close.cumulative < holds {
            return Err(CloseRefusal::BelowVouchers { holds, offered: close.cumulative });
        }
        self.co_signed = true;
        Ok(())
    }

    /// Hold a voucher that passed the checks while it is being stored: the next voucher follows
    /// it.
    pub fn hold(&mut self, v: SignedVoucher) {
        self.pending = Some(v);
    }

    /// Record a voucher that passed the checks, once it is stored durably: it becomes the best
    /// unless a later one already is, and is no longer pending.
    pub fn accept(&mut self, v: SignedVoucher) {
        if self.pending.as_ref().is_some_and(|p| p.voucher.seqno <= v.voucher.seqno) {
            self.pending = None;
        }
        if self.best.as_ref().is_none_or(|b| b.voucher.seqno < v.voucher.seqno) {
            self.best = Some(v);
        }
    }
}

/// Why a worker will not co-sign a cooperative close.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloseRefusal {
    /// The close names another channel.
    #[error("the close names another channel")]
    WrongChannel,
    /// The client's signature does not verify.
    #[error("the client's signature over the close does not verify")]
    BadSignature,
    /// Requests are in flight on the channel.
    #[error("requests are in flight on the channel; try again when they are paid")]
    InFlight,
    /// The close pays less than the vouchers the worker holds.
    #[error("the close pays {offered} nanotons, the worker holds vouchers for {holds}")]
    BelowVouchers {
        /// The latest voucher's cumulative amount.
        holds: u64,
        /// The close's.
        offered: u64,
    },
}

/// Why the client will not sign what a worker asks for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientRejection {
    /// The worker acknowledged another total than the voucher the client just signed.
    #[error("the worker acknowledged {got} nanotons in total, the voucher signed says {signed}")]
    WrongAcknowledgement {
        /// What the client signed.
        signed: u64,
        /// What the worker said it stored.
        got: u64,
    },
    /// The worker says it holds more than the receipts the client verified add up to.
    #[error(
        "the worker says it holds {held} nanotons; the verified receipts before this one add up to {owed}"
    )]
    HoldsMoreThanOwed {
        /// The worker's claim.
        held: u64,
        /// Verified receipts before this request.
        owed: u64,
    },
    /// The amounts no longer fit in 64 bits.
    #[error("amount overflow")]
    Overflow,
}

/// The client's view of one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientChannel {
    /// Fixed parameters.
    pub params: ChannelParams,
    /// The contract version it runs (version 1 channels are only wound down).
    pub code: CodeVersion,
    /// The channel's address.
    pub address: StdAddr,
    /// Deposited so far (what the client's top-ups credited); 0 while the deploy is pending.
    pub deposited: u64,
    /// Cumulative amount of the last voucher signed (the base of the next one).
    pub cumulative: u64,
    /// Seqno of the last voucher signed.
    pub seqno: u64,
    /// What the receipts the client verified on this channel add up to: no voucher signed
    /// ever exceeds it.
    pub owed: u64,
}

impl ClientChannel {
    /// A new (version 2) channel with nothing signed yet.
    pub fn new(params: ChannelParams, deposited: u64) -> Result<Self, PaymentError> {
        Self::with_code(params, deposited, CodeVersion::V2)
    }

    /// A channel running `code`.
    pub fn with_code(params: ChannelParams, deposited: u64, code: CodeVersion) -> Result<Self, PaymentError> {
        let address = params.address_of(code)?;
        Ok(Self { params, code, address, deposited, cumulative: 0, seqno: 0, owed: 0 })
    }

    /// Deposit not yet promised to the worker.
    pub fn remaining(&self) -> u64 {
        self.deposited.saturating_sub(self.cumulative)
    }

    /// A verified receipt charges `amount`: the voucher paying it (exactly `amount` more), already
    /// recorded here. The caller stores the channel before sending the voucher.
    pub fn pay(&mut self, amount: u64) -> Result<Voucher, ClientRejection> {
        let owed = self.owed.checked_add(amount).ok_or(ClientRejection::Overflow)?;
        let cumulative = self.cumulative.checked_add(amount).ok_or(ClientRejection::Overflow)?;
        let voucher = Voucher {
            channel: self.address.clone(),
            cumulative: cumulative.min(owed),
            seqno: self.seqno.saturating_add(1),
        };
        self.owed = owed;
        self.record(&voucher);
        Ok(voucher)
    }

    /// The worker acknowledged the voucher it was just sent: it must name exactly what was signed.
    pub fn acknowledge(&self, cumulative: u64) -> Result<(), ClientRejection> {
        if cumulative == self.cumulative {
            Ok(())
        } else {
            Err(ClientRejection::WrongAcknowledgement { signed: self.cumulative, got: cumulative })
        }
    }

    /// The worker refused the voucher for the last `amount` and says it holds `held` at `seqno`
    /// (it lost a voucher it never acknowledged). The voucher paying `amount` on top of that, if
    /// that stays within what the receipts before this one add up to; it becomes the new base.
    /// Whatever the worker says, no voucher ever exceeds `owed`.
    pub fn resync(&mut self, amount: u64, held: u64, seqno: u64) -> Result<Voucher, ClientRejection> {
        let before = self.owed.saturating_sub(amount);
        if held > before {
            return Err(ClientRejection::HoldsMoreThanOwed { held, owed: before });
        }
        let voucher = Voucher {
            channel: self.address.clone(),
            cumulative: held.checked_add(amount).ok_or(ClientRejection::Overflow)?,
            seqno: self.seqno.max(seqno).saturating_add(1),
        };
        self.record(&voucher);
        Ok(voucher)
    }

    fn record(&mut self, v: &Voucher) {
        self.cumulative = v.cumulative;
        self.seqno = v.seqno;
    }
}

#[cfg(test)]
mod tests {
    use libp2p_identity::ed25519;
    use tycho_types::cell::HashBytes;

    use super::*;

    fn setup(deposited: u64) -> (ed25519::Keypair, WorkerChannel, ClientChannel) {
        let key = ed25519::Keypair::generate();
        let params = ChannelParams {
            client_key: key.public().to_bytes(),
            worker_key: [2; 32],
            client: StdAddr::new(0, HashBytes([3; 32])),
            worker: StdAddr::new(0, HashBytes([4; 32])),
            dispute_window: 60,
            seed: 1,
        };
        let state = ChannelState { deposited, dispute_window: 60, ..Default::default() };
        let worker = WorkerChannel::new(params.clone(), state).unwrap();
        let client = ClientChannel::new(params, deposited).unwrap();
        (key, worker, client)
    }

    #[test]
    fn exact_invoices_are_accepted_in_sequence() {
        let (key, mut worker, mut client) = setup(1_000);
        for amount in [10, 0, 250] {
            worker.admit(300).unwrap();
            let signed = client.pay(amount).unwrap().sign(&key).unwrap();
            worker.check(&signed, amount).unwrap();
            worker.accept(signed);
            worker.release(300);
        }
        assert_eq!(worker.cumulative(), 260);
        assert_eq!(worker.seqno(), 3);
        assert_eq!(client.remaining(), 740);
        assert_eq!(worker.unclaimed(), 260);
    }

    #[test]
    fn a_worker_co_signs_only_the_whole_of_what_it_holds_with_nothing_in_flight() {
        let (key, mut worker, mut client) = setup(1_000);
        worker.admit(300).unwrap();
        let signed = client.pay(120).unwrap().sign(&key).unwrap();
        worker.check(&signed, 120).unwrap();
        worker.accept(signed);
        let address = worker.address.clone();
        let close = |cumulative| CloseRequest { channel: address.clone(), cumulative, seqno: 1 };
        let sig = |c: &CloseRequest| c.sign(&key).unwrap();
        // A request is still in flight: its money would be lost with the channel.
        let c = close(120);
        assert_eq!(worker.co_sign(&c, &sig(&c)), Err(CloseRefusal::InFlight));
        worker.release(300);
        let short = close(119);
        assert_eq!(
            worker.co_sign(&short, &sig(&short)),
            Err(CloseRefusal::BelowVouchers { holds: 120, offered: 119 })
        );
        let other = ed25519::Keypair::generate();
        assert_eq!(worker.co_sign(&c, &c.sign(&other).unwrap()), Err(CloseRefusal::BadSignature));
        let elsewhere = CloseRequest { channel: StdAddr::new(0, HashBytes([8; 32])), ..c.clone() };
        assert_eq!(worker.co_sign(&elsewhere, &sig(&elsewhere)), Err(CloseRefusal::WrongChannel));
        assert!(!worker.co_signed, "a refused close changes nothing");
        worker.admit(1).unwrap();
        worker.release(1);
        // The whole amount, nothing in flight: signed, and nothing is admitted afterwards.
        worker.co_sign(&c, &sig(&c)).unwrap();
        assert_eq!(worker.admit(1), Err(AdmissionError::Closing));
        // Asking again (an answer lost on the way) signs again.
        worker.co_sign(&c, &sig(&c)).unwrap();
    }

    #[test]
    fn a_voucher_being_stored_is_followed_but_claimed_with_only_once_stored() {
        let (key, mut worker, mut client) = setup(1_000);
        let (v1, v2) =
            (client.pay(10).unwrap().sign(&key).unwrap(), client.pay(20).unwrap().sign(&key).unwrap());
        worker.check(&v1, 10).unwrap();
        worker.hold(v1.clone());
        // The next voucher follows the pending one; claims still have nothing.
        assert_eq!((worker.cumulative(), worker.seqno(), worker.best.as_ref()), (10, 1, None));
        assert!(matches!(worker.check(&v1, 10), Err(VoucherRejection::StaleSeqno { .. })));
        let verified = VerifiedVoucher::verify(v2.clone(), &key.public()).unwrap();
        worker.check_verified(&verified, 20).unwrap();
        worker.hold(v2.clone());
        // The first is stored: it becomes the best, the second stays pending.
        worker.accept(v1.clone());
        assert_eq!(
            (worker.best.as_ref(), worker.pending.as_ref(), worker.cumulative()),
            (Some(&v1), Some(&v2), 30)
        );
        worker.accept(v2.clone());
        assert_eq!((worker.best.as_ref(), worker.pending.as_ref()), (Some(&v2), None));
        // A late store of an older voucher never lowers the best.
        worker.accept(v1);
        assert_eq!(worker.best.as_ref(), Some(&v2));
        // Verified against another key: refused here even though its signature is valid.
        let stranger = ed25519::Keypair::generate();
        let other =
            Voucher { channel: worker.address.clone(), cumulative: 40, seqno: 3 }.sign(&stranger).unwrap();
        let other = VerifiedVoucher::verify(other, &stranger.public()).unwrap();
        assert_eq!(worker.check_verified(&other, 10), Err(VoucherRejection::BadSignature));
    }

    #[test]
    fn wrong_vouchers_are_rejected_with_their_reason() {
        let (key, mut worker, mut client) = setup(1_000);
        let first = client.pay(100).unwrap().sign(&key).unwrap();
        worker.check(&first, 100).unwrap();
        worker.accept(first.clone());
        assert!(matches!(worker.check(&first, 100), Err(VoucherRejection::StaleSeqno { .. })));
        let short = Voucher { channel: worker.address.clone(), cumulative: 150, seqno: 2 };
        assert_eq!(
            worker.check(&short.sign(&key).unwrap(), 100),
            Err(VoucherRejection::WrongAmount { expected: 200, got: 150 })
        );
        let over = Voucher { channel: worker.address.clone(), cumulative: 1_100, seqno: 2 };
        assert!(matches!(
            worker.check(&over.sign(&key).unwrap(), 1_000),
            Err(VoucherRejection::OverDeposit { .. })
        ));
        let elsewhere = Voucher { channel: StdAddr::new(0, HashBytes([8; 32])), cumulative: 200, seqno: 2 };
        assert!(matches!(
            worker.check(&elsewhere.sign(&key).unwrap(), 100),
            Err(VoucherRejection::WrongChannel { .. })
        ));
        let forged = Voucher { channel: worker.address.clone(), cumulative: 200, seqno: 2 };
        let forged = forged.sign(&ed25519::Keypair::generate()).unwrap();
        assert_eq!(worker.check(&forged, 100), Err(VoucherRejection::BadSignature));
    }

    #[test]
    fn admission_bounds_exposure_to_the_deposit() {
        let (_, mut worker, _) = setup(1_000);
        worker.admit(600).unwrap();
        assert_eq!(
            worker.admit(600),
            Err(AdmissionError::InsufficientDeposit { available: 400, needed: 600 }),
            "in-flight worst cases count against the deposit"
        );
        worker.release(600);
        worker.admit(600).unwrap();
        worker.chain.close_started_at = 5;
        assert_eq!(worker.admit(1), Err(AdmissionError::Closing));
    }

    #[test]
    fn the_client_never_signs_more_than_its_verified_receipts() {
        let (_, _, mut client) = setup(1_000);
        let v = client.pay(100).unwrap();
        assert_eq!((v.cumulative, client.owed), (100, 100));
        client.acknowledge(100).unwrap();
        assert_eq!(
            client.acknowledge(1_000_000),
            Err(ClientRejection::WrongAcknowledgement { signed: 100, got: 1_000_000 }),
            "an inflated acknowledgement is refused"
        );
        assert_eq!((client.cumulative, client.owed), (100, 100), "and changes nothing");
        client.pay(50).unwrap();
        // The worker lost the last voucher and holds 100: the corrected one pays 50 on top.
        let fixed = client.resync(50, 100, 1).unwrap();
        assert_eq!(fixed.cumulative, 150);
        // It may say it holds less (the base drops, so later vouchers stay within what is owed)...
        client.pay(10).unwrap();
        let lower = client.resync(10, 20, 0).unwrap();
        assert_eq!((lower.cumulative, client.owed), (30, 160));
        // ...never more than the receipts before this request.
        client.pay(5).unwrap();
        assert_eq!(
            client.resync(5, 161, 9),
            Err(ClientRejection::HoldsMoreThanOwed { held: 161, owed: 160 })
        );
        assert!(client.cumulative <= client.owed);
    }

    #[test]
    fn worker_supplied_extremes_saturate_or_fail_instead_of_wrapping() {
        let (_, _, mut client) = setup(1_000);
        client.pay(1).unwrap();
        let v = client.resync(1, 0, u64::MAX).unwrap();
        assert_eq!(v.seqno, u64::MAX, "seqno saturates");
        assert_eq!(client.pay(u64::MAX), Err(ClientRejection::Overflow));
        assert_eq!(client.pay(3).unwrap().seqno, u64::MAX);
    }
}
