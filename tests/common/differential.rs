//! The differential harness for the payment channel, in the shape of rust-lightning's
//! `chanmon_consistency`: bytes choose an interleaving of client-signed vouchers (honest, stale,
//! front-running, over the deposit, for another channel, forged), claims from any sender,
//! top-ups, closes (unilateral and cooperative) and clock jumps. Every step runs on the real
//! contract in `LocalChain` and on the pure model (`cocoon_protocol::payments::model`), and after
//! every step: both agree (outcome, exit code, payout, state); value is conserved; the client
//! never paid more than the highest cumulative it signed; and whenever the worker claims with the
//! best voucher it holds, it is paid up to `min(best, deposited)`. Shared by
//! `tests/payments_property.rs` (seeded bytes) and the `channel_differential` fuzz target.

use cocoon::chain::TxSummary;
use cocoon::chain::wallet::{Transfer, Wallet};
use cocoon::payments::contract;
use cocoon_protocol::payments::channel::{op, payout_amount};
use cocoon_protocol::payments::model::{Call, ChannelModel, Effect, Sender};
use cocoon_protocol::payments::voucher::{CloseRequest, SignedVoucher, Voucher};
use tycho_types::cell::HashBytes;
use tycho_types::models::StdAddr;

use super::chain::{Bench, TON};

/// What one run reached (the tests require the interesting states to be reached).
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    /// Steps executed on both sides.
    pub steps: u32,
    /// Steps that paid the worker.
    pub paying: u32,
    /// Front-running claims sent by the client.
    pub front_runs: u32,
    /// Claims with the worker's best voucher after which it held everything it was owed.
    pub collected: u32,
    /// Whether the channel was closed (unilaterally or cooperatively).
    pub closed: bool,
}

/// Value flowing through the channel account, from the chain's transactions.
#[derive(Default)]
struct Flows {
    received: u64,
    sent: u64,
    fees: u64,
    paid_to_worker: u64,
}

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn next(&mut self) -> Option<u8> {
        let (first, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*first)
    }
}

struct Run<'a> {
    b: &'a Bench,
    model: ChannelModel,
    flows: Flows,
    /// Every voucher the client signed (tricks included).
    signed: Vec<SignedVoucher>,
    /// The best voucher the worker received from the client.
    held: Option<SignedVoucher>,
    cumulative: u64,
    seqno: u64,
    stats: Stats,
}

/// Run the interleaving `data` describes (at most 64 steps); panics on any disagreement.
pub async fn run(data: &[u8]) -> Stats {
    let b = Bench::new();
    let mut bytes = Bytes(data);
    let seed = u64::from(bytes.next().unwrap_or(0));
    let params = b.params(seed);
    let ch = params.address().unwrap();
    let first = (u64::from(bytes.next().unwrap_or(3) % 16) + 1) * TON / 2;
    let mut r = Run {
        b: &b,
        model: ChannelModel::deployed(params.clone(), ch.clone(), first),
        flows: Flows::default(),
        signed: Vec::new(),
        held: None,
        cumulative: 0,
        seqno: 0,
        stats: Stats::default(),
    };
    let txs = b.send(&b.client.wallet, contract::deploy(&params, first, 0).unwrap()).await;
    r.account(&txs);
    r.check(None, &txs).await;
    while let (Some(kind), Some(arg)) = (bytes.next(), bytes.next()) {
        if r.stats.steps >= 64 || r.model.state.is_none() {
            break;
        }
        r.step(kind, arg).await;
    }
    r.stats
}

impl Run<'_> {
    fn ch(&self) -> StdAddr {
        self.model.address.clone()
    }

    fn sign(&mut self, cumulative: u64, seqno: u64, give_worker: bool) {
        let v = Voucher { channel: self.ch(), cumulative, seqno }.sign(&self.b.client.key).unwrap();
        if give_worker && self.held.as_ref().is_none_or(|h| h.voucher.cumulative < cumulative) {
            self.held = Some(v.clone());
        }
        self.signed.push(v);
    }

    fn sender(&self, arg: u8) -> (Wallet, Sender) {
        match arg % 3 {
            0 => (self.b.client.wallet.clone(), Sender::Client),
            1 => (self.b.worker.wallet.clone(), Sender::Other),
            _ => (self.b.other.wallet.clone(), Sender::Other),
        }
    }

    async fn step(&mut self, kind: u8, arg: u8) {
        let state = self.model.state.unwrap_or_default();
        let small = u64::from(arg % 8);
        let (wallet, from, call, transfer) = match kind % 13 {
            0 | 1 => {
                let amount = (small + 1) * TON / 4;
                let (wallet, from) = if kind.is_multiple_of(13) {
                    (self.b.client.wallet.clone(), Sender::Client)
                } else {
                    self.sender(arg)
                };
                (wallet, from, Call::TopUp { amount }, contract::top_up(&self.ch(), amount, 1).unwrap())
            }
            2 | 3 => {
                self.cumulative += small * TON / 3;
                self.seqno += 1;
                self.sign(self.cumulative, self.seqno, true);
                return;
            }
            4 => {
                // Front-running: one nanoton above what is claimed, seqno near the top.
                self.sign(state.claimed + 1, u64::MAX - u64::from(arg), false);
                self.stats.front_runs += 1;
                let v = self.signed.last().unwrap().clone();
                let t = contract::claim(&v, 2).unwrap();
                (self.b.client.wallet.clone(), Sender::Client, Call::Claim(v), t)
            }
            5 => {
                let lower = self.cumulative.saturating_sub(small * TON / 2);
                self.sign(lower, u64::from(arg), false);
                return;
            }
            6 => {
                self.seqno += 1;
                self.sign(state.deposited + (small + 1) * TON, self.seqno, true);
                self.cumulative = self.cumulative.max(state.deposited + (small + 1) * TON);
                return;
            }
            7 => {
                let elsewhere = StdAddr::new(0, HashBytes([arg; 32]));
                let v = Voucher { channel: elsewhere, cumulative: self.cumulative + TON, seqno: 1 };
                let v = v.sign(&self.b.client.key).unwrap();
                let mut t = contract::claim(&v, 3).unwrap();
                t.to = self.ch();
                let (wallet, from) = self.sender(arg);
                (wallet, from, Call::Claim(v), t)
            }
            8 => {
                let v = Voucher { channel: self.ch(), cumulative: self.cumulative + TON, seqno: 9 };
                let v = v.sign(&self.b.other.key).unwrap();
                let t = contract::claim(&v, 4).unwrap();
                (self.b.worker.wallet.clone(), Sender::Other, Call::Claim(v), t)
            }
            9 if !self.signed.is_empty() => {
                let v = self.signed[usize::from(arg) % self.signed.len()].clone();
                let t = contract::claim(&v, 5).unwrap();
                let (wallet, from) = self.sender(arg / 3);
                (wallet, from, Call::Claim(v), t)
            }
            10 => return self.worker_collects().await,
            11 => {
                if arg % 2 == 1 {
                    self.b.chain.advance(u32::from(arg % 4) * 1800).unwrap();
                }
                let (wallet, from) = self.sender(arg / 2);
                let call = if arg.is_multiple_of(5) { Call::FinishClose } else { Call::StartClose };
                let t = match call {
                    Call::FinishClose => contract::finish_close(&self.ch(), 6).unwrap(),
                    _ => contract::start_close(&self.ch(), 6).unwrap(),
                };
                (wallet, from, call, t)
            }
            12 if arg % 4 == 3 => {
                let cumulative = self.held.as_ref().map_or(0, |h| h.voucher.cumulative);
                let close = CloseRequest { channel: self.ch(), cumulative, seqno: self.seqno };
                let client_sig = close.sign(&self.b.client.key).unwrap();
                let worker_key = if arg % 8 == 7 { &self.b.other.key } else { &self.b.worker.key };
                let worker_sig = close.sign(worker_key).unwrap();
                let t = contract::coop_close(&close, &client_sig, &worker_sig, 7).unwrap();
                let (wallet, from) = self.sender(arg);
                (wallet, from, Call::CoopClose { close, client_sig, worker_sig }, t)
            }
            _ => {
                self.b.chain.advance(u32::from(arg) * 60).unwrap();
                return;
            }
        };
        self.both(&wallet, from, call, transfer).await;
    }

    /// The worker claims with the best voucher it holds: afterwards it must have been paid
    /// everything that voucher promised, up to the deposit.
    async fn worker_collects(&mut self) {
        let Some(best) = self.held.clone() else { return };
        let t = contract::claim(&best, 8).unwrap();
        let wallet = self.b.worker.wallet.clone();
        self.both(&wallet, Sender::Other, Call::Claim(best.clone()), t).await;
        if let Some(s) = self.model.state {
            // At least: a front-running voucher a nanoton above may have paid it more already.
            let due = best.voucher.cumulative.min(s.deposited);
            assert!(
                s.claimed >= due,
                "the worker collected {} of the {due} its best voucher promises",
                s.claimed
            );
            self.stats.collected += 1;
        }
    }

    async fn both(&mut self, wallet: &Wallet, from: Sender, call: Call, transfer: Transfer) {
        let now = self.b.chain.now_secs();
        let expected = self.model.apply(&call, from, now);
        let txs = self.b.send(wallet, transfer).await;
        self.account(&txs);
        self.stats.steps += 1;
        self.check(expected, &txs).await;
    }

    fn account(&mut self, txs: &[TxSummary]) {
        let (ch, worker) = (self.ch(), self.b.worker.addr());
        for t in txs.iter().filter(|t| t.account == ch.address) {
            self.flows.received += t.in_msg.as_ref().map_or(0, |m| m.value);
            self.flows.fees += t.total_fees;
            for m in &t.out_msgs {
                self.flows.sent += m.value + m.fwd_fee;
                if m.dst.as_ref() == Some(&worker) && m.op() == Some(op::PAYOUT) {
                    self.flows.paid_to_worker += payout_amount(&m.body).unwrap();
                }
            }
        }
    }

    async fn check(&mut self, expected: Option<Result<Effect, i32>>, txs: &[TxSummary]) {
        let ch = self.ch();
        let on_channel =
            txs.iter().find(|t| t.account == ch.address && t.in_msg.as_ref().is_some_and(|m| !m.bounced));
        let paid: u64 = on_channel
            .iter()
            .flat_map(|t| &t.out_msgs)
            .filter(|m| m.dst.as_ref() == Some(&self.b.worker.addr()) && m.op() == Some(op::PAYOUT))
            .filter_map(|m| payout_amount(&m.body))
            .sum();
        match expected {
            Some(Ok(effect)) => {
                let tx = on_channel.unwrap_or_else(|| panic!("no channel transaction for {effect:?}"));
                assert!(tx.success && tx.exit_code == Some(0), "model says {effect:?}, chain: {tx:?}");
                let model_paid = match effect {
                    Effect::Paid(p) | Effect::Closed { paid: p } => p,
                    _ => 0,
                };
                assert_eq!(paid, model_paid, "payout of {effect:?}");
                self.stats.paying += u32::from(paid > 0);
                self.stats.closed |= matches!(effect, Effect::Closed { .. });
            }
            Some(Err(code)) => {
                let tx = on_channel.unwrap_or_else(|| panic!("no channel transaction for exit {code}"));
                assert_eq!(tx.exit_code, Some(code), "{tx:?}");
                assert!(!tx.success && paid == 0);
            }
            None => assert_eq!(paid, 0, "a closed channel pays nothing"),
        }
        let chain = self.b.state(&ch).await;
        assert_eq!(chain, self.model.state, "the contract and the model agree on the state");
        let balance = self.b.balance(&ch);
        let f = &self.flows;
        assert_eq!(f.received, balance + f.sent + f.fees, "value conservation");
        let max_signed = self.signed.iter().map(|v| v.voucher.cumulative).max().unwrap_or(0);
        assert!(f.paid_to_worker <= max_signed, "paid {} > signed {max_signed}", f.paid_to_worker);
        if let Some(s) = chain {
            assert_eq!(s.claimed, f.paid_to_worker);
            assert!(balance >= s.deposited - s.claimed, "the contract can pay what it owes");
        }
    }
}
