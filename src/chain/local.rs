//! `LocalChain`: an embedded TON chain in this process. Transactions run in tycho-executor (the
//! real TVM and transaction phases) under TON mainnet's blockchain configuration, with a settable
//! clock, a logical-time counter and a queue that delivers every internal message a transaction
//! sends until the cascade settles. Accounts can be funded out of thin air (there is no
//! validator set to mint). The state can be kept in a file so a devnet keeps its balances.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tycho_executor::{Executor, ExecutorOutput, ExecutorParams, ParsedConfig, TxError};
use tycho_types::boc::{Boc, BocRepr};
use tycho_types::cell::{Cell, CellBuilder, HashBytes, Lazy};
use tycho_types::dict::Dict;
use tycho_types::models::{
    Account, AccountState, BlockchainConfig, BlockchainConfigParams, CurrencyCollection, IntAddr, MsgInfo,
    OptionalAccount, ShardAccount, StdAddr, StorageInfo, StorageUsed, WorkchainDescription, WorkchainFormat,
    WorkchainFormatBasic,
};
use tycho_vm::{VmCaller, VmGetterArgs};

use super::{
    AccountInfo, AccountStatus, Chain, ChainError, GetMethodResult, MsgSummary, StackValue, TxSummary,
};

/// TON mainnet configuration parameters 0–31 (the "slim" config `@ton/sandbox` 0.41.0 carries,
/// taken at masterchain seqno 52,956,904): gas, forwarding and storage prices, limits.
const TON_CONFIG: &[u8] = include_bytes!("ton-mainnet-config.boc");
/// Transactions kept per account.
const HISTORY: usize = 512;
/// Most messages one external message may set off (a guard against message loops).
const MAX_CASCADE: usize = 1_000;

/// Where the chain's time comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Clock {
    /// The system clock plus an offset (moved by [`LocalChain::advance`]).
    Wall {
        /// Seconds added to the system clock.
        offset: i64,
    },
    /// A fixed time, moved only by [`LocalChain::set_time`] and [`LocalChain::advance`].
    Manual(u32),
}

type Key = (i8, [u8; 32]);

fn key(addr: &StdAddr) -> Key {
    (addr.workchain, *addr.address.as_array())
}

struct Inner {
    config: ParsedConfig,
    clock: Clock,
    lt: u64,
    accounts: BTreeMap<Key, ShardAccount>,
    history: BTreeMap<Key, VecDeque<Cell>>,
    transactions: u64,
}

/// An embedded chain (cheap to share behind an `Arc`).
pub struct LocalChain {
    inner: Mutex<Inner>,
    path: Option<PathBuf>,
}

impl std::fmt::Debug for LocalChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalChain").field("path", &self.path).finish_non_exhaustive()
    }
}

/// The on-disk form.
#[derive(Serialize, Deserialize)]
struct Saved {
    version: u32,
    clock: Clock,
    lt: u64,
    transactions: u64,
    /// Shard accounts, base64 BOC.
    accounts: Vec<String>,
    /// Per account (raw address), transaction BOCs oldest first.
    history: BTreeMap<String, Vec<String>>,
}

fn parse_config() -> Result<ParsedConfig, ChainError> {
    let root = Boc::decode(TON_CONFIG).map_err(|e| ChainError::Malformed(format!("config: {e}")))?;
    let mut config =
        BlockchainConfig { address: HashBytes([0x55; 32]), params: BlockchainConfigParams::from_raw(root) };
    // TON describes workchains in a newer layout (param 12) than tycho-types reads; basechain's
    // description is restated in the layout the executor understands.
    let mut workchains = Dict::<i32, WorkchainDescription>::new();
    workchains.set(
        0,
        WorkchainDescription {
            enabled_since: 0,
            actual_min_split: 0,
            min_split: 0,
            max_split: 0,
            active: true,
            accept_msgs: true,
            zerostate_root_hash: HashBytes::ZERO,
            zerostate_file_hash: HashBytes::ZERO,
            version: 0,
            format: WorkchainFormat::Basic(WorkchainFormatBasic { vm_mode: 0, vm_version: 0 }),
        },
    )?;
    config.params.set_workchains(&workchains)?;
    ParsedConfig::parse(config, 0).map_err(|e| ChainError::Malformed(format!("config: {e}")))
}

fn wall_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Where an inbound external message goes.
fn external_destination(message: &Cell) -> Result<StdAddr, ChainError> {
    let MsgInfo::ExtIn(ext) = message.parse::<MsgInfo>()? else {
        return Err(ChainError::Rejected("only inbound external messages can be sent".into()));
    };
    let IntAddr::Std(dst) = ext.dst else {
        return Err(ChainError::Rejected("destination is not a standard address".into()));
    };
    Ok(dst)
}

impl Inner {
    fn now(&self) -> u32 {
        match self.clock {
            Clock::Wall { offset } => (wall_now() + offset).clamp(0, i64::from(u32::MAX)) as u32,
            Clock::Manual(t) => t,
        }
    }

    fn shard_account(&self, k: &Key) -> Result<ShardAccount, ChainError> {
        match self.accounts.get(k) {
            Some(a) => Ok(a.clone()),
            None => Ok(ShardAccount {
                account: Lazy::new(&OptionalAccount::EMPTY)?,
                last_trans_hash: HashBytes::ZERO,
                last_trans_lt: 0,
            }),
        }
    }

    fn account(&self, addr: &StdAddr) -> Result<Option<Account>, ChainError> {
        Ok(self.shard_account(&key(addr))?.load_account()?)
    }

    fn fund(&mut self, addr: &StdAddr, amount: u64) -> Result<(), ChainError> {
        let k = key(addr);
        let now = self.now();
        let mut shard = self.shard_account(&k)?;
        let mut account = shard.load_account()?.unwrap_or_else(|| Account {
            address: IntAddr::Std(addr.clone()),
            storage_stat: StorageInfo {
                used: StorageUsed::ZERO,
                storage_extra: Default::default(),
                last_paid: now,
                due_payment: None,
            },
            last_trans_lt: 0,
            balance: CurrencyCollection::ZERO,
            state: AccountState::Uninit,
        });
        let balance = account.balance.tokens.into_inner() + u128::from(amount);
        account.balance = CurrencyCollection::new(balance);
        shard.account = Lazy::new(&OptionalAccount(Some(account)))?;
        self.accounts.insert(k, shard);
        Ok(())
    }

    /// Run one message on its destination and return the executor's output, keeping nothing.
    /// With `ignore_signatures`, signature checks in the contract always pass.
    fn transact(
        &mut self,
        addr: &StdAddr,
        external: bool,
        msg: Cell,
        ignore_signatures: bool,
    ) -> Result<ExecutorOutput, ChainError> {
        let now = self.now();
        self.config.update_storage_prices(now).map_err(|e| ChainError::Malformed(e.to_string()))?;
        let mut seed = Sha256::new();
        seed.update(self.lt.to_be_bytes());
        seed.update(addr.address.as_slice());
        let mut params = ExecutorParams {
            block_unixtime: now,
            block_lt: self.lt,
            rand_seed: HashBytes(seed.finalize().into()),
            strict_extra_currency: true,
            charge_action_fees_on_fail: true,
            ..Default::default()
        };
        params.vm_modifiers.chksig_always_succeed = ignore_signatures;
        let shard = self.shard_account(&key(addr))?;
        let executor = Executor::new(&params, &self.config).with_min_lt(self.lt);
        match executor.begin_ordinary(addr, external, msg, &shard) {
            Ok(tx) => tx.commit().map_err(|e| ChainError::Rejected(e.to_string())),
            Err(TxError::Skipped) => {
                Err(ChainError::Rejected(format!("external message not accepted by {addr}")))
            }
            Err(TxError::Fatal(e)) => Err(ChainError::Rejected(e.to_string())),
        }
    }

    /// Run one message on its destination and return the transaction and what it sent.
    fn run(&mut self, addr: &StdAddr, external: bool, msg: Cell) -> Result<TxSummary, ChainError> {
        let k = key(addr);
        let output = self.transact(addr, external, msg, false)?;
        self.lt = self.lt.max(output.transaction_meta.next_lt) + 1;
        self.transactions += 1;
        if output.new_state_meta.exists {
            self.accounts.insert(k, output.new_state);
        } else {
            self.accounts.remove(&k);
        }
        let cell = output.transaction.into_inner();
        let history = self.history.entry(k).or_default();
        history.push_back(cell.clone());
        while history.len() > HISTORY {
            history.pop_front();
        }
        TxSummary::parse(&cell)
    }

    /// An external message and every internal message it sets off, in order.
    fn execute(&mut self, message: Cell) -> Result<Vec<TxSummary>, ChainError> {
        let dst = external_destination(&message)?;
        let mut done = vec![self.run(&dst, true, message)?];
        // Outbound external messages (no destination) leave the chain; the rest are delivered.
        let mut queue: VecDeque<MsgSummary> = done[0].out_msgs.iter().cloned().collect();
        while let Some(msg) = queue.pop_front() {
            if done.len() > MAX_CASCADE {
                return Err(ChainError::Rejected(format!("more than {MAX_CASCADE} messages in one cascade")));
            }
            let Some(dst) = msg.dst else { continue };
            let tx = self.run(&dst, false, msg.cell)?;
            queue.extend(tx.out_msgs.iter().cloned());
            done.push(tx);
        }
        Ok(done)
    }

    fn save(&self) -> Result<Saved, ChainError> {
        let mut accounts = Vec::with_capacity(self.accounts.len());
        for a in self.accounts.values() {
            accounts.push(BocRepr::encode_base64(a)?);
        }
        let history = self
            .history
            .iter()
            .map(|(k, txs)| {
                let addr = StdAddr::new(k.0, HashBytes(k.1)).to_string();
                (addr, txs.iter().map(Boc::encode_base64).collect())
            })
            .collect();
        Ok(Saved {
            version: 1,
            clock: self.clock,
            lt: self.lt,
            transactions: self.transactions,
            accounts,
            history,
        })
    }
}

impl LocalChain {
    /// A fresh chain kept in memory only.
    pub fn new(clock: Clock) -> Result<Self, ChainError> {
        let inner = Inner {
            config: parse_config()?,
            clock,
            lt: 1_000_000,
            accounts: BTreeMap::new(),
            history: BTreeMap::new(),
            transactions: 0,
        };
        Ok(Self { inner: Mutex::new(inner), path: None })
    }

    /// A chain kept in `path`: loaded if the file exists, created otherwise (with its directory);
    /// every change is written back (to a temporary file, synced, then renamed over the old one).
    pub fn open(path: &Path, clock: Clock) -> Result<Self, ChainError> {
        let mut chain = Self::new(clock)?;
        chain.path = Some(path.to_owned());
        let storage = |e: std::io::Error| ChainError::Storage(format!("{}: {e}", path.display()));
        match std::fs::read(path) {
            Ok(bytes) => chain.load(&bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                crate::dirs::create_parent(path).map_err(storage)?;
                chain.persist()?
            }
            Err(e) => return Err(storage(e)),
        }
        Ok(chain)
    }

    fn load(&self, bytes: &[u8]) -> Result<(), ChainError> {
        let saved: Saved =
            serde_json::from_slice(bytes).map_err(|e| ChainError::Storage(format!("state file: {e}")))?;
        if saved.version != 1 {
            return Err(ChainError::Storage(format!("unknown state version {}", saved.version)));
        }
        let mut inner = self.lock();
        inner.lt = saved.lt;
        inner.transactions = saved.transactions;
        // A manual clock asked for now wins; otherwise the saved clock (and its offset) goes on.
        if matches!(inner.clock, Clock::Wall { .. }) {
            inner.clock = saved.clock;
        }
        for a in saved.accounts {
            let shard: ShardAccount =
                BocRepr::decode_base64(&a).map_err(|e| ChainError::Storage(format!("account: {e}")))?;
            let Some(account) = shard.load_account()? else { continue };
            let IntAddr::Std(addr) = &account.address else { continue };
            inner.accounts.insert(key(addr), shard);
        }
        for (addr, txs) in saved.history {
            let addr = super::parse_address(&addr)?;
            let mut cells = VecDeque::new();
            for t in txs {
                cells.push_back(Boc::decode_base64(&t).map_err(|e| ChainError::Storage(format!("tx: {e}")))?);
            }
            inner.history.insert(key(&addr), cells);
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn persist_locked(&self, inner: &Inner) -> Result<(), ChainError> {
        let Some(path) = &self.path else { return Ok(()) };
        let json = serde_json::to_vec(&inner.save()?).map_err(|e| ChainError::Storage(e.to_string()))?;
        let tmp = path.with_extension("tmp");
        let io = |e: std::io::Error| ChainError::Storage(format!("{}: {e}", path.display()));
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(io)?;
            f.write_all(&json).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, path).map_err(io)
    }

    fn persist(&self) -> Result<(), ChainError> {
        let inner = self.lock();
        self.persist_locked(&inner)
    }

    /// Current chain time.
    pub fn now_secs(&self) -> u32 {
        self.lock().now()
    }

    /// Set a manual clock to `t`.
    pub fn set_time(&self, t: u32) -> Result<(), ChainError> {
        let mut inner = self.lock();
        inner.clock = Clock::Manual(t);
        self.persist_locked(&inner)
    }

    /// Move the clock forward by `secs`.
    pub fn advance(&self, secs: u32) -> Result<(), ChainError> {
        let mut inner = self.lock();
        inner.clock = match inner.clock {
            Clock::Wall { offset } => Clock::Wall { offset: offset + i64::from(secs) },
            Clock::Manual(t) => Clock::Manual(t.saturating_add(secs)),
        };
        self.persist_locked(&inner)
    }

    /// Credit `amount` nanotons to `addr` (creating an uninitialised account if needed).
    pub fn fund(&self, addr: &StdAddr, amount: u64) -> Result<(), ChainError> {
        let mut inner = self.lock();
        inner.fund(addr, amount)?;
        self.persist_locked(&inner)
    }

    /// Execute an external message and everything it sets off; returns every transaction.
    pub fn execute(&self, message: Cell) -> Result<Vec<TxSummary>, ChainError> {
        let mut inner = self.lock();
        let result = inner.execute(message);
        self.persist_locked(&inner)?;
        result
    }

    /// The transaction an inbound external message would make on its destination now, without
    /// keeping anything (no state change, no lt used, nothing it sends delivered). With
    /// `ignore_signatures`, signature checks in the contract always pass.
    pub fn emulate(&self, message: Cell, ignore_signatures: bool) -> Result<TxSummary, ChainError> {
        let dst = external_destination(&message)?;
        let output = self.lock().transact(&dst, true, message, ignore_signatures)?;
        TxSummary::parse(&output.transaction.into_inner())
    }

    /// Transactions executed since the chain was created.
    pub fn transaction_count(&self) -> u64 {
        self.lock().transactions
    }

    /// Balance of `addr` (0 if it does not exist).
    pub fn balance(&self, addr: &StdAddr) -> Result<u64, ChainError> {
        Ok(self.account_info(addr)?.balance)
    }

    /// `addr` as the chain holds it: the account (`None` if it does not exist) with its state
    /// (code and data once active), and the lt and hash of its last transaction (zeros if none).
    pub fn shard_account(&self, addr: &StdAddr) -> Result<ShardAccount, ChainError> {
        self.lock().shard_account(&key(addr))
    }

    fn account_info(&self, addr: &StdAddr) -> Result<AccountInfo, ChainError> {
        let shard = self.shard_account(addr)?;
        let Some(account) = shard.load_account()? else {
            return Ok(AccountInfo { status: AccountStatus::Nonexistent, balance: 0, last_lt: 0 });
        };
        let status = match account.state {
            AccountState::Uninit => AccountStatus::Uninit,
            AccountState::Active(_) => AccountStatus::Active,
            AccountState::Frozen(_) => AccountStatus::Frozen,
        };
        let balance = u64::try_from(account.balance.tokens.into_inner()).unwrap_or(u64::MAX);
        Ok(AccountInfo { status, balance, last_lt: shard.last_trans_lt })
    }

    /// Run a get-method.
    pub fn get_method(&self, addr: &StdAddr, method: &str) -> Result<GetMethodResult, ChainError> {
        let inner = self.lock();
        let fail = |reason: String| ChainError::GetMethod { method: method.to_owned(), reason };
        let account = inner.account(addr)?.ok_or_else(|| fail("account does not exist".into()))?;
        let caller = VmCaller {
            libraries: Dict::new(),
            behaviour_modifiers: Default::default(),
            config: inner.config.raw.params.clone(),
        };
        let mut args = VmGetterArgs::default();
        args.now = inner.now();
        let out = caller
            .call_getter_ext(&account, method, Vec::new(), &args, None)
            .map_err(|e| fail(e.to_string()))?;
        let mut stack = Vec::with_capacity(out.stack.len());
        for v in &out.stack {
            stack.push(if let Some(i) = v.as_int() {
                StackValue::Int(i.clone())
            } else if let Some(c) = v.as_cell() {
                StackValue::Cell(c.clone())
            } else if let Some(s) = v.as_cell_slice() {
                StackValue::Slice(CellBuilder::build_from(s.apply())?)
            } else if v.raw_ty() == 0 {
                StackValue::Null
            } else {
                StackValue::Other
            });
        }
        if !out.success {
            return Err(fail(format!("exit code {}", out.exit_code)));
        }
        Ok(GetMethodResult { exit_code: out.exit_code, gas_used: out.gas_used, stack })
    }

    /// The newest `limit` transactions of `addr`, newest first.
    pub fn history(&self, addr: &StdAddr, limit: usize) -> Result<Vec<TxSummary>, ChainError> {
        let inner = self.lock();
        let Some(txs) = inner.history.get(&key(addr)) else { return Ok(Vec::new()) };
        txs.iter().rev().take(limit).map(TxSummary::parse).collect()
    }
}

impl Chain for LocalChain {
    fn name(&self) -> &'static str {
        "local"
    }

    fn account(&self, address: &StdAddr) -> BoxFuture<'_, Result<AccountInfo, ChainError>> {
        let r = self.account_info(address);
        Box::pin(async move { r })
    }

    fn run_get_method<'a>(
        &'a self,
        address: &'a StdAddr,
        method: &'a str,
    ) -> BoxFuture<'a, Result<GetMethodResult, ChainError>> {
        Box::pin(async move { self.get_method(address, method) })
    }

    fn send_external(&self, message: Cell) -> BoxFuture<'_, Result<(), ChainError>> {
        Box::pin(async move { self.execute(message).map(|_| ()) })
    }

    fn transactions<'a>(
        &'a self,
        address: &'a StdAddr,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<TxSummary>, ChainError>> {
        Box::pin(async move { self.history(address, limit) })
    }

    fn now(&self) -> BoxFuture<'_, Result<u64, ChainError>> {
        let now = u64::from(self.now_secs());
        Box::pin(async move { Ok(now) })
    }
}

#[cfg(test)]
mod tests {
    use tycho_types::cell::Cell;

    use super::*;
    use crate::chain::wallet::{Transfer, Wallet};

    const TON: u64 = 1_000_000_000;

    #[test]
    fn state_and_history_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chain.json");
        let wallet = Wallet::from_seed(&[1; 32]).unwrap();
        let other = StdAddr::new(0, HashBytes([9; 32]));
        let chain = LocalChain::open(&path, Clock::Manual(1_800_000_000)).unwrap();
        chain.fund(wallet.address(), 5 * TON).unwrap();
        let transfer = Transfer {
            to: other.clone(),
            value: TON,
            bounce: false,
            state_init: None,
            body: Cell::default(),
        };
        let msg = wallet.transfer_message(0, true, 1_800_000_100, &[transfer]).unwrap();
        let txs = chain.execute(msg).unwrap();
        assert!(txs[0].success, "{txs:?}"); // the recipient has no code: its compute phase is skipped
        let balance = chain.balance(wallet.address()).unwrap();
        let count = chain.transaction_count();
        drop(chain);

        // A wall clock asked for keeps the saved (manual) clock; everything else is as it was.
        let again = LocalChain::open(&path, Clock::Wall { offset: 0 }).unwrap();
        assert_eq!(again.balance(wallet.address()).unwrap(), balance);
        assert_eq!(again.balance(&other).unwrap(), TON);
        assert_eq!(again.transaction_count(), count);
        assert_eq!(again.history(wallet.address(), 10).unwrap().len(), 1);
        assert_eq!(again.now_secs(), 1_800_000_000);
        assert_eq!(again.get_method(wallet.address(), "seqno").unwrap().u64_at(0), Some(1));
        drop(again);

        // A manual clock asked for wins; a corrupt file is an error, not a fresh chain.
        assert_eq!(LocalChain::open(&path, Clock::Manual(1_900_000_000)).unwrap().now_secs(), 1_900_000_000);
        std::fs::write(&path, b"{not json").unwrap();
        assert!(matches!(LocalChain::open(&path, Clock::Wall { offset: 0 }), Err(ChainError::Storage(_))));
    }

    #[test]
    fn a_chain_in_a_directory_that_does_not_exist_yet_creates_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new/devnet/chain.json");
        let wallet = Wallet::from_seed(&[2; 32]).unwrap();
        LocalChain::open(&path, Clock::Manual(1_800_000_000)).unwrap().fund(wallet.address(), TON).unwrap();
        assert!(path.is_file());
        let again = LocalChain::open(&path, Clock::Wall { offset: 0 }).unwrap();
        assert_eq!(again.balance(wallet.address()).unwrap(), TON);
    }
}
