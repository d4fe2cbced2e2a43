//! Choosing the worker for an attempt: the candidates for the model with what this client
//! observed of each and what paying it needs (a channel it has, a new one, or one its caps do not
//! allow), the pure selection over them with the chosen record re-verified, and why none is
//! eligible when none is.

use std::collections::HashMap;

use cocoon_protocol::attestation::record::{AttestationRecord, ModelOffer, PaymentTerms};
use cocoon_protocol::attestation::signed::SignedRecord;
use cocoon_protocol::inference::messages::ErrorCode;
use cocoon_protocol::inference::selection::{self, Candidate, Channel, Need};
use libp2p::PeerId;
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::{InferenceClient, InferenceError};
use crate::clock::unix_now;
use crate::payments::client::Standing;

impl InferenceClient {
    /// Why no worker can take the request: too large for every context, or over the price cap
    /// everywhere (both refusals the caller can act on), or no record valid any more.
    pub(super) fn none_eligible(
        &self,
        records: &[SignedRecord],
        model_id: &str,
        need: &Need,
    ) -> InferenceError {
        let candidates = self.candidates(records, model_id, Some(unix_now())).0;
        if candidates.is_empty() {
            return InferenceError::NoEligibleWorker(model_id.to_owned());
        }
        if !candidates.iter().any(|c| selection::fits_context(c, need)) {
            let largest = candidates.iter().map(|c| c.context_length).max().unwrap_or(0);
            return InferenceError::Refused {
                code: ErrorCode::TooLarge,
                message: format!(
                    "the prompt (about {} tokens) plus max_tokens ({}) exceeds the context length of every worker (at most {largest})",
                    need.prompt_tokens, need.max_tokens
                ),
            };
        }
        if !candidates.iter().any(|c| selection::within_price(c, need)) {
            return InferenceError::Refused {
                code: ErrorCode::PriceTooHigh,
                message: format!(
                    "every worker's worst-case price exceeds the cap of {} nanotons",
                    need.max_price
                ),
            };
        }
        if candidates.iter().all(|c| c.channel == Channel::Refused) {
            let why = self.refusal_example(records, model_id).unwrap_or_default();
            return InferenceError::Payment(format!(
                "every worker offering the model publishes payment terms this client's channels do not meet ({why}); see payments.network, deposit_nanotons and dispute_window_secs"
            ));
        }
        if candidates.iter().all(|c| matches!(c.channel, Channel::Capped | Channel::Refused)) {
            return InferenceError::Payment(
                "every worker offering the model needs a new payment channel, and payments.max_channels or payments.max_total_deposit_nanotons allows no more".into(),
            );
        }
        InferenceError::NoEligibleWorker(model_id.to_owned())
    }

    /// Whether `signed` still verifies at `now` under this node's policy.
    fn still_valid(&self, signed: &SignedRecord, now: u64) -> bool {
        let r = signed.record();
        let verdict = self.verifier.verify_record(r, None, now);
        if let Err(e) = &verdict {
            tracing::debug!(worker = %r.peer_id, error = %e, "record no longer valid; not sending to it");
        }
        verdict.is_ok()
    }

    /// Candidates for `model_id` among `records` (those that verify at `now`, with `Some(now)`),
    /// with their offers.
    fn candidates(
        &self,
        records: &[SignedRecord],
        model_id: &str,
        verify_at: Option<u64>,
    ) -> (Vec<Candidate>, HashMap<PeerId, (SignedRecord, ModelOffer)>) {
        let observed = self.observed.lock().map(|o| o.clone()).unwrap_or_default();
        let standing = self.payments.as_ref().map(|p| p.standing());
        let mut offers = HashMap::new();
        let mut candidates = Vec::new();
        for signed in records {
            if verify_at.is_some_and(|now| !self.still_valid(signed, now)) {
                continue;
            }
            let r = signed.record();
            let Some(offer) = r.offers.iter().find(|o| o.model_id == model_id) else { continue };
            candidates.push(Candidate {
                peer: r.peer_id,
                price_prompt_per_1k: offer.price_prompt_per_1k,
                price_completion_per_1k: offer.price_completion_per_1k,
                context_length: offer.context_length,
                max_concurrent: offer.max_concurrent,
                observed: observed.get(&r.peer_id).copied().unwrap_or_default(),
                channel: channel_need(standing.as_ref(), r, offer),
            });
            offers.insert(r.peer_id, (signed.clone(), offer.clone()));
        }
        (candidates, offers)
    }

    /// The next worker to try, with its offer; its record re-verified now. Only the chosen
    /// record is verified (a signature check each: verifying all 20 known records per attempt
    /// took 6 % of a saturated simnet's CPU); one that no longer verifies is dropped and the
    /// choice made again. Every attempt of one request draws from the request's own `seed`, so
    /// a failover takes the next worker in the same random order, and how many attempts one
    /// request needed does not change the draws of later ones.
    pub(super) fn choose(
        &self,
        records: &[SignedRecord],
        model_id: &str,
        need: &Need,
        tried: &[PeerId],
        seed: u64,
    ) -> Option<(SignedRecord, ModelOffer)> {
        let (candidates, offers) = self.candidates(records, model_id, None);
        let now = unix_now();
        let mut rng = StdRng::seed_from_u64(seed);
        selection::select_valid(&candidates, offers, need, tried, &mut rng, |(signed, _)| {
            self.still_valid(signed, now)
        })
    }
}

/// Whether requests to `record`'s worker for `offer` carry no payment: the offer is free, or the
/// worker's terms say it takes none.
pub(super) fn unpaid(record: &AttestationRecord, offer: &ModelOffer) -> bool {
    (offer.price_prompt_per_1k == 0 && offer.price_completion_per_1k == 0)
        || record.terms == PaymentTerms::Free
}

/// What paying `record`'s worker for `offer` needs first, given the client's channels (`None`:
/// this client does not pay): nothing, the channel it has, a new one, or one that its caps or the
/// worker's published terms do not allow.
fn channel_need(standing: Option<&Standing>, record: &AttestationRecord, offer: &ModelOffer) -> Channel {
    let has = |s: &Standing| crate::payments::peer_key(&record.peer_id).is_some_and(|k| s.with.contains(&k));
    match standing {
        None => Channel::Free,
        Some(_) if unpaid(record, offer) => Channel::Free,
        Some(s) if has(s) => Channel::Open,
        Some(s) if s.offer.refused_by(&record.terms).is_some() => Channel::Refused,
        Some(s) if s.may_open => Channel::New,
        Some(_) => Channel::Capped,
    }
}

impl InferenceClient {
    /// Why the first worker offering `model_id` would refuse this client's channels.
    fn refusal_example(&self, records: &[SignedRecord], model_id: &str) -> Option<String> {
        let standing = self.payments.as_ref()?.standing();
        records
            .iter()
            .map(SignedRecord::record)
            .filter(|r| r.offers.iter().any(|o| o.model_id == model_id))
            .find_map(|r| standing.offer.refused_by(&r.terms))
    }
}
