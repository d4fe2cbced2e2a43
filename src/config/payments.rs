//! `[payments]`: which TON chain pays workers, how clients fund channels and when workers settle.

use cocoon_protocol::payments::exposure::ExposureLimits;
use cocoon_protocol::payments::settlement::SettlementPolicy;
use serde::{Deserialize, Serialize};

/// Where channels live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChainKind {
    /// No payments: a worker serves for free, a client offers no payment (workers that require
    /// payment refuse it).
    Off,
    /// The embedded `LocalChain`, kept in `<data-dir>/chain.json` (development: `cocoon devnet`
    /// shares one between its nodes).
    Local,
    /// TON Center HTTP API v2 (testnet or mainnet), `toncenter_url`.
    Toncenter,
}

/// `[payments]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PaymentsSection {
    /// Chain backend: `off`, `local` or `toncenter`. Default `off`.
    pub chain: ChainKind,
    /// The name of the chain channels live on, published in a worker's record and compared by
    /// clients: a worker and a client that both name one, differently, never pay each other.
    /// Default empty: `ton-mainnet` or `ton-testnet` when `toncenter_url` is TON Center's own
    /// (`toncenter.com`, `testnet.toncenter.com`), otherwise unnamed (a devnet's local chain or a
    /// self-hosted API: matches any). See [`PaymentsSection::network_name`]. At most 32 bytes.
    pub network: String,
    /// TON Center API v2 base URL. Default `https://toncenter.com/api/v2` (mainnet; testnet is
    /// `https://testnet.toncenter.com/api/v2`).
    pub toncenter_url: String,
    /// TON Center API key (sent as `X-API-Key`); empty for none. Default empty.
    pub toncenter_api_key: String,
    /// Seconds per TON Center request. Default 10.
    pub toncenter_timeout_secs: u64,
    /// Client: deposit of a new channel and the level top-ups restore, nanotons. Default
    /// 2000000000 (2 TON). Top-ups restore at least twice the request's estimated worst-case
    /// price when that is higher.
    pub deposit_nanotons: u64,
    /// Client: dispute window of new channels, seconds. Default 86400 (one day).
    pub dispute_window_secs: u32,
    /// Client: seconds to wait for a deploy or top-up to show on chain. Default 120.
    pub confirm_timeout_secs: u64,
    /// Client: most channels open or being closed at once (one per worker used). Default 16.
    pub max_channels: usize,
    /// Client: most nanotons deposited across those channels until the chain refunds them.
    /// Default 20000000000 (20 TON).
    pub max_total_deposit_nanotons: u64,
    /// Client: close a channel after this many seconds without a request, cooperatively (the
    /// worker co-signs, the deposit minus what was paid returns in one transaction) or, when the
    /// worker does not answer, by starting the unilateral close (returned after the dispute
    /// window). 0 never closes idle channels. Default 3600.
    pub idle_close_secs: u64,
    /// Worker: shortest dispute window accepted, seconds. Default 3600.
    pub min_dispute_window_secs: u32,
    /// Worker: least deposit a channel must hold for a request to be admitted on it, nanotons
    /// (published in the record, so clients depositing less choose other workers). Default 0.
    pub min_deposit_nanotons: u64,
    /// Seconds between settlement passes (worker) and passes over retired channels (client).
    /// Default 60.
    pub settle_interval_secs: u64,
    /// When to claim and top up (`[payments.settlement]`).
    pub settlement: SettlementPolicy,
    /// Worker: how much unpaid work it risks per client and in total (`[payments.exposure]`).
    pub exposure: ExposureLimits,
}

impl Default for PaymentsSection {
    fn default() -> Self {
        Self {
            chain: ChainKind::Off,
            network: String::new(),
            toncenter_url: "https://toncenter.com/api/v2".into(),
            toncenter_api_key: String::new(),
            toncenter_timeout_secs: 10,
            deposit_nanotons: 2_000_000_000,
            dispute_window_secs: 86_400,
            confirm_timeout_secs: 120,
            max_channels: 16,
            max_total_deposit_nanotons: 20_000_000_000,
            idle_close_secs: 3_600,
            min_dispute_window_secs: 3_600,
            min_deposit_nanotons: 0,
            settle_interval_secs: 60,
            settlement: SettlementPolicy::default(),
            exposure: ExposureLimits::default(),
        }
    }
}

impl PaymentsSection {
    /// The network name this node pays or is paid on: `network` when set; else `ton-mainnet` or
    /// `ton-testnet` for TON Center's own endpoints; else empty (unnamed: matches any). Only names
    /// known for certain are derived: a devnet's nodes reach one local chain in process or through
    /// `cocoon chain serve`, and must not tell themselves apart.
    pub fn network_name(&self) -> String {
        if !self.network.is_empty() {
            return self.network.clone();
        }
        if self.chain != ChainKind::Toncenter {
            return String::new();
        }
        let rest = self.toncenter_url.split_once("://").map_or(self.toncenter_url.as_str(), |(_, r)| r);
        let host = rest.split(['/', ':', '?']).next().unwrap_or_default().to_ascii_lowercase();
        match host.as_str() {
            "toncenter.com" => "ton-mainnet".into(),
            "testnet.toncenter.com" => "ton-testnet".into(),
            _ => String::new(),
        }
    }

    /// The terms a worker with this section publishes in its record: free with payments off.
    pub fn worker_terms(&self) -> cocoon_protocol::attestation::record::PaymentTerms {
        use cocoon_protocol::attestation::record::{PaidTerms, PaymentTerms};
        if self.chain == ChainKind::Off {
            return PaymentTerms::Free;
        }
        PaymentTerms::Paid(PaidTerms {
            network: self.network_name(),
            min_deposit: self.min_deposit_nanotons,
            min_dispute_window: self.min_dispute_window_secs,
            contract_version: cocoon_protocol::payments::channel::CodeVersion::V2.as_u8(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ton_centers_own_endpoints_name_a_network_unless_one_is_set() {
        let with = |chain, url: &str, network: &str| PaymentsSection {
            chain,
            toncenter_url: url.into(),
            network: network.into(),
            ..PaymentsSection::default()
        };
        let cases = [
            (ChainKind::Toncenter, "https://toncenter.com/api/v2", "", "ton-mainnet"),
            (ChainKind::Toncenter, "https://testnet.toncenter.com/api/v2/", "", "ton-testnet"),
            (ChainKind::Toncenter, "https://TestNet.toncenter.com:443/api/v2", "", "ton-testnet"),
            // A devnet's chain served locally, a look-alike host, the embedded chain: unnamed.
            (ChainKind::Toncenter, "http://127.0.0.1:8081/api/v2", "", ""),
            (ChainKind::Toncenter, "https://toncenter.com.evil.example/api/v2", "", ""),
            (ChainKind::Local, "https://toncenter.com/api/v2", "", ""),
            (ChainKind::Local, "", "my-devnet", "my-devnet"),
        ];
        for (chain, url, set, want) in cases {
            assert_eq!(with(chain, url, set).network_name(), want, "{chain:?} {url} {set}");
        }
        assert_eq!(
            with(ChainKind::Off, "", "").worker_terms(),
            cocoon_protocol::attestation::record::PaymentTerms::Free
        );
    }
}
