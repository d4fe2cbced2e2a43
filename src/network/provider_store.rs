//! Kademlia's record store for cocoon: provider records under caps and an admission rule, and no
//! PUT_VALUE records at all.
//!
//! Cocoon never reads DHT values (attestation records travel by gossip and direct fetch), so a
//! value another peer asks us to store would only take memory: [`ProviderStore::put`] refuses
//! every record, and the behaviour runs with `StoreInserts::FilterBoth` so inbound PUT_VALUE
//! requests are dropped by the event loop (counted in `cocoon_kad_records_refused`).
//!
//! Provider records (workers announcing a model id or the workers key) are capped per key
//! ([`MAX_PROVIDERS_PER_KEY`]), per remote address group and in total. Admission never looks at
//! a provider's id, so grinding ids close to a key gains nothing here. When a key's list is
//! full, a newcomer replaces a random *probationary* entry; the oldest entries that have stayed
//! (refreshing) for [`TENURE`] are *established* — up to [`MAX_ESTABLISHED_PER_KEY`] of them —
//! and a newcomer never evicts them. So a flood of fresh ids cannot push out workers that were
//! there first, and a quarter of the slots always stays open to newcomers, so the flood cannot
//! freeze a new worker out either. Readers still treat providers as hints: a client fetches
//! each provider's attestation record and verifies it before using the worker.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use libp2p::kad::store::{Error, RecordStore, Result};
use libp2p::kad::{ProviderRecord, Record, RecordKey};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Providers kept per key. A model served by more workers is still found through any 32 of them
/// (a client needs a few), and 32 is above Kademlia's default of 20 so newcomers have room.
pub(crate) const MAX_PROVIDERS_PER_KEY: usize = 32;
/// Entries of one key that can be established (never evicted by newcomers): three quarters, so a
/// quarter of the slots always turns over.
pub(crate) const MAX_ESTABLISHED_PER_KEY: usize = MAX_PROVIDERS_PER_KEY * 3 / 4;
/// How long an entry must stay (refreshing) before it is established: longer than a flood of
/// fresh ids takes to cycle the probationary slots, well inside a worker's first record
/// validity (an hour by default).
pub(crate) const TENURE: Duration = Duration::from_secs(15 * 60);
/// Provider records kept in total (~1 KiB each with addresses: at most a few MiB). An honest
/// network has a handful of keys (the workers key and one per model).
pub(crate) const MAX_PROVIDER_RECORDS: usize = 4096;
/// Entries one address group (an IPv4 address or IPv6 /64) may hold under one key: a few
/// workers behind one NAT fit, one host cannot fill a key.
pub(crate) const MAX_PER_GROUP_PER_KEY: usize = 4;
/// Entries one address group may hold over all keys.
pub(crate) const MAX_PER_GROUP: usize = 64;
/// Addresses kept per provider record (a provider announces its listen and external ones).
pub(crate) const MAX_ADDRS_PER_PROVIDER: usize = 8;

/// What [`ProviderStore::admit`] did with a provider record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Admission {
    /// A new entry.
    Added,
    /// An existing entry renewed (its first-seen time kept).
    Refreshed,
    /// A new entry in place of this probationary provider.
    Replaced(PeerId),
    /// Refused: the key is full of established providers, the provider's address group holds
    /// its share, or the store is full.
    Refused(&'static str),
}

#[derive(Debug, Clone)]
struct Slot {
    record: ProviderRecord,
    first_seen: Instant,
    group: Option<IpAddr>,
}

/// Provider records with caps and the admission rule above; no value records.
pub(crate) struct ProviderStore {
    local: PeerId,
    keys: HashMap<RecordKey, Vec<Slot>>,
    /// This node's own provider records (a few keys), for Kademlia's republishing.
    provided: HashSet<ProviderRecord>,
    total: usize,
    per_group: HashMap<IpAddr, usize>,
    rng: StdRng,
}

impl ProviderStore {
    pub(crate) fn new(local: PeerId, seed: u64) -> Self {
        Self {
            local,
            keys: HashMap::new(),
            provided: HashSet::new(),
            total: 0,
            per_group: HashMap::new(),
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// Admit `record` from a provider whose connection comes from address group `group` (`None`:
    /// not counted per group, as loopback, in-memory or relayed connections).
    pub(crate) fn admit(
        &mut self,
        mut record: ProviderRecord,
        group: Option<IpAddr>,
        now: Instant,
    ) -> Admission {
        record.addresses.truncate(MAX_ADDRS_PER_PROVIDER);
        let local = record.provider == self.local;
        if local {
            self.provided.replace(record.clone());
        }
        self.drop_expired(&record.key, now);
        if let Some(slot) = self
            .keys
            .get_mut(&record.key)
            .and_then(|s| s.iter_mut().find(|s| s.record.provider == record.provider))
        {
            slot.record = record;
            return Admission::Refreshed;
        }
        let group = if local { None } else { group };
        if let Some(g) = group {
            let in_key =
                self.keys.get(&record.key).map_or(0, |s| s.iter().filter(|s| s.group == Some(g)).count());
            if in_key >= MAX_PER_GROUP_PER_KEY
                || self.per_group.get(&g).copied().unwrap_or(0) >= MAX_PER_GROUP
            {
                return Admission::Refused("address group holds its share");
            }
        }
        let slot = Slot { record, first_seen: now, group };
        let len = self.keys.get(&slot.record.key).map_or(0, Vec::len);
        if len >= MAX_PROVIDERS_PER_KEY {
            return self.replace_probationary(slot, now, local);
        }
        if self.total >= MAX_PROVIDER_RECORDS && !local {
            self.drop_all_expired(now);
            if self.total >= MAX_PROVIDER_RECORDS {
                return Admission::Refused("provider store full");
            }
        }
        self.insert(slot);
        Admission::Added
    }

    /// A full key: `slot` replaces a random probationary entry, or is refused.
    fn replace_probationary(&mut self, slot: Slot, now: Instant, local: bool) -> Admission {
        let Some(slots) = self.keys.get(&slot.record.key) else { return Admission::Refused("no key") };
        let mut by_age: Vec<(Instant, usize)> =
            slots.iter().enumerate().map(|(i, s)| (s.first_seen, i)).collect();
        by_age.sort();
        let established: HashSet<usize> = by_age
            .iter()
            .filter(|(first_seen, _)| now.saturating_duration_since(*first_seen) >= TENURE)
            .take(MAX_ESTABLISHED_PER_KEY)
            .map(|(_, i)| *i)
            .collect();
        let candidates: Vec<usize> = (0..slots.len())
            .filter(|i| !established.contains(i) && slots[*i].record.provider != self.local)
            .collect();
        let victim = match candidates.len() {
            0 if !local => return Admission::Refused("key full of established providers"),
            0 => self.rng.gen_range(0..slots.len()), // our own record always gets in
            n => candidates[self.rng.gen_range(0..n)],
        };
        let evicted = slots[victim].record.provider;
        self.remove_provider(&slot.record.key, &evicted);
        self.insert(slot);
        Admission::Replaced(evicted)
    }

    fn insert(&mut self, slot: Slot) {
        if let Some(g) = slot.group {
            *self.per_group.entry(g).or_insert(0) += 1;
        }
        self.total += 1;
        self.keys.entry(slot.record.key.clone()).or_default().push(slot);
    }

    fn drop_expired(&mut self, key: &RecordKey, now: Instant) {
        let expired: Vec<PeerId> = self
            .keys
            .get(key)
            .map(|slots| {
                slots.iter().filter(|s| s.record.is_expired(now)).map(|s| s.record.provider).collect()
            })
            .unwrap_or_default();
        for provider in expired {
            self.remove_provider(key, &provider);
        }
    }

    fn drop_all_expired(&mut self, now: Instant) {
        let keys: Vec<RecordKey> = self.keys.keys().cloned().collect();
        for key in keys {
            self.drop_expired(&key, now);
        }
    }

    /// Provider records held (all keys).
    pub(crate) fn len(&self) -> usize {
        self.total
    }
}

impl RecordStore for ProviderStore {
    type RecordsIter<'a> = std::iter::Empty<Cow<'a, Record>>;
    type ProvidedIter<'a> = Box<dyn Iterator<Item = Cow<'a, ProviderRecord>> + 'a>;

    fn get(&self, _: &RecordKey) -> Option<Cow<'_, Record>> {
        None
    }

    /// Cocoon keeps no DHT values.
    fn put(&mut self, _: Record) -> Result<()> {
        Err(Error::MaxRecords)
    }

    fn remove(&mut self, _: &RecordKey) {}

    fn records(&self) -> Self::RecordsIter<'_> {
        std::iter::empty()
    }

    /// Kademlia calls this for our own records (`start_providing`); inbound ones go through
    /// [`ProviderStore::admit`] with their address group.
    fn add_provider(&mut self, record: ProviderRecord) -> Result<()> {
        match self.admit(record, None, Instant::now()) {
            Admission::Refused(_) => Err(Error::MaxProvidedKeys),
            _ => Ok(()),
        }
    }

    fn providers(&self, key: &RecordKey) -> Vec<ProviderRecord> {
        self.keys.get(key).map(|slots| slots.iter().map(|s| s.record.clone()).collect()).unwrap_or_default()
    }

    fn provided(&self) -> Self::ProvidedIter<'_> {
        Box::new(self.provided.iter().map(Cow::Borrowed))
    }

    fn remove_provider(&mut self, key: &RecordKey, provider: &PeerId) {
        if provider == &self.local {
            self.provided.retain(|r| &r.key != key);
        }
        let Some(slots) = self.keys.get_mut(key) else { return };
        let Some(i) = slots.iter().position(|s| &s.record.provider == provider) else { return };
        let slot = slots.swap_remove(i);
        if slots.is_empty() {
            self.keys.remove(key);
        }
        self.total = self.total.saturating_sub(1);
        if let Some(g) = slot.group
            && let Some(n) = self.per_group.get_mut(&g)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_group.remove(&g);
            }
        }
    }
}

#[cfg(test)]
#[path = "provider_store_tests.rs"]
mod tests;
