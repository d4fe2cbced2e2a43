//! Node configuration: one serde struct per section, every field documented with its default.
//!
//! Precedence, lowest first: built-in defaults < the TOML file (`--config`) < `COCOON_*`
//! environment variables < command-line flags. Environment variables and flags are read by clap
//! (see `cli.rs`) and applied with [`Config::apply`]. Unknown keys in the file are an error that
//! names the key. `cocoon config dump` prints the effective configuration, which parses back to
//! the same value.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use libp2p::Multiaddr;
use serde::{Deserialize, Serialize};

mod attestation;
mod inference;
mod network;
mod payments;
pub use attestation::AttestationSection;
pub use inference::{ApiSection, EngineDevice, ModelEntry};
pub use network::{HttpSection, NetworkSection};
pub use payments::{ChainKind, PaymentsSection};

/// What a node does in the network. A node may take several roles.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Serves inference inside a confidential VM (needs no public address).
    Worker,
    /// Gateway for applications: local OpenAI-compatible API (needs no public address).
    Client,
    /// Stable Kademlia server that new nodes join through (needs a public address).
    Bootstrap,
    /// Circuit relay v2 server for nodes behind NAT (needs a public address).
    Relay,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Worker => "worker",
            Role::Client => "client",
            Role::Bootstrap => "bootstrap",
            Role::Relay => "relay",
        })
    }
}

/// Kademlia mode: servers answer queries and enter other nodes' routing tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum KadMode {
    /// Server for the `bootstrap` and `relay` roles and for nodes listening on loopback only (a
    /// local network, where every peer can dial them); otherwise server once an external address
    /// is confirmed (AutoNAT or `external_addresses`), client before that.
    Auto,
    /// Always answer Kademlia queries.
    Server,
    /// Never answer Kademlia queries (a node that cannot be dialled).
    Client,
}

/// The whole configuration of a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Identity, roles and where state lives.
    pub node: NodeSection,
    /// Transports, Kademlia, gossipsub and connection management.
    pub network: NetworkSection,
    /// How the node joins the network.
    pub bootstrap: BootstrapSection,
    /// Local admin endpoint (`/health`, `/metrics`, `/peers`).
    pub admin: AdminSection,
    /// Connection limits and timeouts of the HTTP servers (`crate::http::serve`).
    pub http: HttpSection,
    /// Which workers' attestation this node accepts.
    pub attestation: AttestationSection,
    /// What this node attests and serves when it has the `worker` role.
    pub worker: WorkerSection,
    /// The OpenAI-compatible API of client nodes.
    pub api: ApiSection,
    /// Payment channels and settlement.
    pub payments: PaymentsSection,
    /// Logging.
    pub log: LogSection,
}

/// `[node]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeSection {
    /// Roles this node takes. Default `["client"]`.
    pub roles: Vec<Role>,
    /// Directory holding the identity key and the sled store, created (owner-only) if missing.
    /// Default `$XDG_DATA_HOME/cocoon`, else `$HOME/.local/share/cocoon` (`./cocoon-data` when
    /// neither is set).
    pub data_dir: PathBuf,
}

impl Default for NodeSection {
    fn default() -> Self {
        Self { roles: vec![Role::Client], data_dir: crate::dirs::data_dir() }
    }
}

/// `[bootstrap]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BootstrapSection {
    /// Bootstrap peers, each a multiaddr ending in `/p2p/<peer id>`. Default none.
    pub peers: Vec<Multiaddr>,
    /// Bootstrap list files (format in `bootstrap/README.md`). Default none.
    pub files: Vec<PathBuf>,
    /// Seconds before the first retry when no bootstrap peer answers; doubles each round. Default 1.
    pub retry_initial_secs: u64,
    /// Longest wait between join attempts, in seconds. Default 300.
    pub retry_max_secs: u64,
    /// Seconds to wait for one dial before counting it as failed. Default 10.
    pub dial_timeout_secs: u64,
}

impl Default for BootstrapSection {
    fn default() -> Self {
        Self {
            peers: Vec::new(),
            files: Vec::new(),
            retry_initial_secs: 1,
            retry_max_secs: 300,
            dial_timeout_secs: 10,
        }
    }
}

/// `[admin]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSection {
    /// Serve the admin endpoint at all. Default true.
    pub enabled: bool,
    /// Address of the admin endpoint. Default `127.0.0.1:9100` (loopback only: it is not
    /// authenticated).
    pub listen: SocketAddr,
}

impl Default for AdminSection {
    fn default() -> Self {
        Self { enabled: true, listen: SocketAddr::from(([127, 0, 0, 1], 9100)) }
    }
}

/// Where a worker's evidence comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TeeKind {
    /// Real TDX quotes through configfs-tsm (inside a TD).
    Tdx,
    /// Real AMD SEV-SNP reports through configfs-tsm (inside an SEV-SNP guest): `sev-snp`.
    SevSnp,
    /// SIMULATED evidence signed by a local key (development only; refused by strict peers).
    Simulated,
}

/// Where a worker's GPU evidence comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GpuKind {
    /// No GPU is declared (the engine runs on the CPU).
    None,
    /// Every NVIDIA GPU NVML reports: attestation reports of those in confidential-computing
    /// mode, the others declared as not confidential.
    Nvidia,
    /// SIMULATED GPU evidence signed by the local simulator key (development only).
    Simulated,
}

/// `[worker]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerSection {
    /// TON address earnings are paid to. Default empty (must be set for the worker role).
    pub payout_address: String,
    /// Evidence source: `tdx`, `sev-snp` or `simulated`. Default `tdx`.
    pub tee: TeeKind,
    /// GPU evidence source: `none`, `nvidia` or `simulated`. Default `none`.
    pub gpus: GpuKind,
    /// How many GPUs `gpus = "simulated"` pretends to have. Default 1.
    pub simulated_gpus: u8,
    /// Lifetime of a published record in seconds; it is re-published at half-life. Default 3600.
    pub record_validity_secs: u64,
    /// Longest a request may generate, in seconds. Default 300.
    pub request_timeout_secs: u64,
    /// Longest a client may take to complete the handshake and send its request, in seconds (a
    /// stream left hanging holds a stream slot, and counts against the peer). Default 10.
    pub handshake_timeout_secs: u64,
    /// Longest one frame may take to leave for a client that stopped reading, in seconds; then
    /// the request is dropped and the client owes what it was sent. Default 10.
    pub send_timeout_secs: u64,
    /// Requests of one model that may wait for a slot when all its `max_concurrent` slots are
    /// taken (first come, first served); beyond them a request is answered `Busy` at once and the
    /// client tries another worker. Default 16.
    pub queue_length: u32,
    /// Longest a request waits in that queue, in seconds, before it is answered `Busy` (keep it
    /// well under clients' `api.first_token_timeout_secs`, 120 by default). Default 60.
    pub queue_wait_secs: u64,
    /// Where mistral.rs loads the GGUF models: `"cpu"`, `"cuda"` or `"cuda:N"` (see
    /// `EngineDevice`; CUDA needs a build with the `cuda` feature, docs/cuda.md). Default `"cpu"`.
    pub device: EngineDevice,
    /// Models served (`[[worker.models]]`; see `ModelEntry`). Default none.
    pub models: Vec<ModelEntry>,
}

impl Default for WorkerSection {
    fn default() -> Self {
        Self {
            payout_address: String::new(),
            tee: TeeKind::Tdx,
            gpus: GpuKind::None,
            simulated_gpus: 1,
            record_validity_secs: 3600,
            request_timeout_secs: 300,
            handshake_timeout_secs: 10,
            send_timeout_secs: 10,
            queue_length: 16,
            queue_wait_secs: 60,
            device: EngineDevice::Cpu,
            models: Vec::new(),
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// `tracing` filter, e.g. `info` or `info,libp2p_kad=debug`. `RUST_LOG` overrides it.
    /// Default `info`.
    pub filter: String,
    /// `text` or `json`. Default `text`.
    pub format: LogFormat,
}

impl Default for LogSection {
    fn default() -> Self {
        Self { filter: "info".into(), format: LogFormat::Text }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Values from flags or `COCOON_*` variables; `None`/empty means "not given".
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--role`
    pub roles: Vec<Role>,
    /// `--listen`
    pub listen: Vec<Multiaddr>,
    /// `--bootstrap` entries that are multiaddrs.
    pub bootstrap_peers: Vec<Multiaddr>,
    /// `--bootstrap` entries that are files.
    pub bootstrap_files: Vec<PathBuf>,
    /// `--data-dir`
    pub data_dir: Option<PathBuf>,
    /// `--admin-listen`
    pub admin_listen: Option<SocketAddr>,
    /// `--api-listen`
    pub api_listen: Option<SocketAddr>,
    /// `--kad-mode`
    pub kad_mode: Option<KadMode>,
    /// `--log-format`
    pub log_format: Option<LogFormat>,
    /// `--allow-simulated` (only turns it on; off is the config file's or the default).
    pub allow_simulated: bool,
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema (unknown key, wrong type, bad address).
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, naming the key and line.
        message: String,
    },
    /// Values that parse but cannot work together.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Defaults, overlaid with `path` when given.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let Some(path) = path else { return Ok(Self::default()) };
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::parse(&text).map_err(|message| ConfigError::Parse { path: path.to_owned(), message })
    }

    /// Parse TOML text (missing keys take their defaults; unknown keys are an error).
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())
    }

    /// The configuration as TOML, as `cocoon config dump` prints it.
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        toml::to_string_pretty(self).map_err(|e| ConfigError::Invalid(format!("cannot encode: {e}")))
    }

    /// Overlay flags and environment variables.
    pub fn apply(&mut self, o: Overrides) {
        if !o.roles.is_empty() {
            self.node.roles = o.roles;
        }
        if !o.listen.is_empty() {
            self.network.listen = o.listen;
        }
        if !o.bootstrap_peers.is_empty() || !o.bootstrap_files.is_empty() {
            self.bootstrap.peers = o.bootstrap_peers;
            self.bootstrap.files = o.bootstrap_files;
        }
        if let Some(dir) = o.data_dir {
            self.node.data_dir = dir;
        }
        if let Some(addr) = o.admin_listen {
            self.admin.listen = addr;
        }
        if let Some(addr) = o.api_listen {
            self.api.listen = addr;
        }
        if let Some(mode) = o.kad_mode {
            self.network.kad_mode = mode;
        }
        if let Some(format) = o.log_format {
            self.log.format = format;
        }
        self.attestation.allow_simulated |= o.allow_simulated;
    }

    /// Check values that serde cannot: non-empty roles, sane limits.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let n = &self.network;
        if self.node.roles.is_empty() {
            return Err(ConfigError::Invalid("node.roles is empty: give at least one role".into()));
        }
        if n.listen.is_empty() && self.has_role(Role::Bootstrap) {
            return Err(ConfigError::Invalid(
                "a bootstrap node needs at least one network.listen address".into(),
            ));
        }
        if n.target_connections == 0 || n.max_connections == 0 || n.max_connections_per_peer == 0 {
            return Err(ConfigError::Invalid("network connection limits must be at least 1".into()));
        }
        if (n.max_connections as usize) < n.target_connections {
            return Err(ConfigError::Invalid(format!(
                "network.max_connections ({}) is below network.target_connections ({})",
                n.max_connections, n.target_connections
            )));
        }
        if n.gossip_heartbeat_ms == 0
            || n.conn_manager_interval_secs == 0
            || n.routing_refresh_secs == 0
            || n.ping_interval_secs == 0
        {
            return Err(ConfigError::Invalid("network intervals must be at least 1".into()));
        }
        let h = &self.http;
        if h.max_connections == 0 || h.header_read_timeout_secs == 0 || h.body_read_timeout_secs == 0 {
            return Err(ConfigError::Invalid("http limits and timeouts must be at least 1".into()));
        }
        if self.has_role(Role::Worker) && self.worker.payout_address.trim().is_empty() {
            return Err(ConfigError::Invalid(
                "the worker role needs worker.payout_address (a TON address)".into(),
            ));
        }
        if self.payments.chain != ChainKind::Off {
            let p = &self.payments;
            if self.has_role(Role::Worker) {
                crate::chain::parse_address(&self.worker.payout_address).map_err(|e| {
                    ConfigError::Invalid(format!(
                        "worker.payout_address must be a TON address when payments are on: {e}"
                    ))
                })?;
            }
            if p.network.len() > cocoon_protocol::attestation::record::MAX_NETWORK {
                return Err(ConfigError::Invalid(format!(
                    "payments.network is {} bytes; at most {}",
                    p.network.len(),
                    cocoon_protocol::attestation::record::MAX_NETWORK
                )));
            }
            if p.settle_interval_secs == 0 || p.confirm_timeout_secs == 0 || p.toncenter_timeout_secs == 0 {
                return Err(ConfigError::Invalid(
                    "payments intervals and timeouts must be at least 1 second".into(),
                ));
            }
            if p.settlement.min_claim == 0
                || p.settlement.topup_below_permille > 1000
                || p.settlement.near_deposit_permille > 1000
            {
                return Err(ConfigError::Invalid(
                    "payments.settlement: min_claim must be at least 1 and the per-mille shares at most 1000"
                        .into(),
                ));
            }
        }
        if self.worker.record_validity_secs < 60 {
            return Err(ConfigError::Invalid("worker.record_validity_secs must be at least 60".into()));
        }
        if self.bootstrap.retry_initial_secs == 0 || self.bootstrap.dial_timeout_secs == 0 {
            return Err(ConfigError::Invalid(
                "bootstrap retry and dial timeouts must be at least 1 second".into(),
            ));
        }
        let pccs = &self.attestation.pccs_url;
        if !(pccs.is_empty() || pccs.starts_with("https://") || pccs.starts_with("http://")) {
            return Err(ConfigError::Invalid(format!(
                "attestation.pccs_url {pccs:?} must be an https URL, or empty to never fetch collateral"
            )));
        }
        if pccs.starts_with("http://") && !self.attestation.allow_insecure_pccs {
            return Err(ConfigError::Invalid(format!(
                "attestation.pccs_url {pccs:?} is plain HTTP: use https://, or set \
                 attestation.allow_insecure_pccs = true to accept it (a local test PCCS only)"
            )));
        }
        let api = &self.api;
        if api.max_tokens == 0 || api.default_max_tokens == 0 || api.default_max_tokens > api.max_tokens {
            return Err(ConfigError::Invalid(
                "api.default_max_tokens must be between 1 and api.max_tokens".into(),
            ));
        }
        if api.attempts == 0 || api.first_token_timeout_secs == 0 || api.max_body_bytes < 1024 {
            return Err(ConfigError::Invalid(
                "api.attempts and api.first_token_timeout_secs must be at least 1, api.max_body_bytes at least 1024"
                    .into(),
            ));
        }
        self.worker.device.check().map_err(ConfigError::Invalid)?;
        let mut names = std::collections::BTreeSet::new();
        for m in &self.worker.models {
            crate::inference::model::check_name(&m.name)
                .map_err(|e| ConfigError::Invalid(format!("worker.models: {e}")))?;
            if !names.insert(&m.name) {
                return Err(ConfigError::Invalid(format!("worker.models: {:?} is listed twice", m.name)));
            }
            if m.max_concurrent == 0 {
                return Err(ConfigError::Invalid(format!(
                    "worker.models {:?}: max_concurrent must be at least 1",
                    m.name
                )));
            }
        }
        if self.attestation.pccs_timeout_secs == 0 {
            return Err(ConfigError::Invalid("attestation.pccs_timeout_secs must be at least 1".into()));
        }
        Ok(())
    }

    /// Whether this node takes `role`.
    pub fn has_role(&self, role: Role) -> bool {
        self.node.roles.contains(&role)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_dump_parses_back_to_the_same_config() {
        let config = Config::default();
        let text = config.to_toml().unwrap();
        assert_eq!(Config::parse(&text).unwrap(), config);
    }

    #[test]
    fn customised_dump_parses_back_to_the_same_config() {
        let mut config = Config::default();
        config.apply(Overrides {
            roles: vec![Role::Client, Role::Relay],
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
            bootstrap_peers: vec![
                "/dns4/boot.example/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
                    .parse()
                    .unwrap(),
            ],
            bootstrap_files: vec!["bootstrap/local.txt".into()],
            data_dir: Some("/tmp/x".into()),
            admin_listen: Some("127.0.0.1:0".parse().unwrap()),
            api_listen: Some("127.0.0.1:8181".parse().unwrap()),
            kad_mode: Some(KadMode::Server),
            log_format: Some(LogFormat::Json),
            allow_simulated: true,
        });
        assert!(config.attestation.allow_simulated);
        config.worker.models = vec![crate::config::ModelEntry {
            name: "m".into(),
            path: "/models/m.gguf".into(),
            price_prompt_per_1k: 1,
            price_completion_per_1k: 2,
            max_concurrent: 3,
            context_length: Some(512),
        }];
        config.network.max_inbound_per_ip = 3;
        config.network.ip_limits_exempt_loopback = false;
        config.http.body_read_timeout_secs = 7;
        let text = config.to_toml().unwrap();
        assert_eq!(Config::parse(&text).unwrap(), config);
    }

    #[test]
    fn allow_simulated_unset_on_the_command_line_keeps_the_file_s_choice() {
        let mut config = Config::parse("[attestation]\nallow_simulated = true\n").unwrap();
        config.apply(Overrides::default());
        assert!(config.attestation.allow_simulated);
        let mut config = Config::default();
        config.apply(Overrides::default());
        assert!(!config.attestation.allow_simulated);
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = Config::parse("[network]\ntarget_conections = 5\n").unwrap_err();
        assert!(err.contains("target_conections"), "{err}");
        let err = Config::parse("colour = 1\n").unwrap_err();
        assert!(err.contains("colour"), "{err}");
    }

    #[test]
    fn partial_file_keeps_other_defaults() {
        let config = Config::parse("[node]\nroles = [\"bootstrap\"]\n").unwrap();
        assert_eq!(config.node.roles, vec![Role::Bootstrap]);
        assert_eq!(config.network, NetworkSection::default());
    }

    #[test]
    fn bad_multiaddr_in_file_is_reported() {
        let err = Config::parse("[network]\nlisten = [\"/ip4/1.2.3/tcp/1\"]\n").unwrap_err();
        assert!(err.contains("listen"), "{err}");
    }

    #[test]
    fn validation_catches_inconsistent_limits() {
        let mut config = Config::default();
        config.network.max_connections = 10;
        assert!(matches!(config.validate(), Err(ConfigError::Invalid(m)) if m.contains("max_connections")));
        let mut config = Config::default();
        config.node.roles.clear();
        assert!(config.validate().is_err());
        let mut config = Config::default();
        config.network.ping_interval_secs = 0;
        assert!(matches!(config.validate(), Err(ConfigError::Invalid(m)) if m.contains("intervals")));
        assert!(Config::default().validate().is_ok());
    }
}
