//! Tests of the provider store's caps and admission rule.

use libp2p::kad::KBucketKey;

use super::*;

const KEY: &[u8] = b"/cocoon/workers/1";

fn record(provider: PeerId, now: Instant) -> ProviderRecord {
    ProviderRecord {
        key: RecordKey::new(&KEY),
        provider,
        expires: Some(now + Duration::from_secs(3 * 3600)),
        addresses: (0..20).map(|p| format!("/ip4/192.0.2.1/tcp/{p}").parse().unwrap()).collect(),
    }
}

fn group(n: u32) -> Option<IpAddr> {
    Some(IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + n)))
}

/// `n` peer ids at least as close to `KEY` as `than` (what an attacker grinds for).
fn ground_near_key(n: usize, than: &PeerId) -> Vec<PeerId> {
    let target = KBucketKey::new(KEY.to_vec());
    let bar = target.distance(&KBucketKey::from(*than));
    let mut near = Vec::new();
    while near.len() < n {
        let id = PeerId::random();
        if target.distance(&KBucketKey::from(id)) <= bar {
            near.push(id);
        }
    }
    near
}

fn ids(store: &ProviderStore) -> HashSet<PeerId> {
    store.providers(&RecordKey::new(&KEY)).into_iter().map(|r| r.provider).collect()
}

#[test]
fn put_value_records_are_refused() {
    let mut store = ProviderStore::new(PeerId::random(), 1);
    let r = Record::new(RecordKey::new(&b"k"), vec![0; 100]);
    assert!(store.put(r).is_err());
    assert!(store.get(&RecordKey::new(&b"k")).is_none() && store.records().next().is_none());
}

#[test]
fn ids_ground_near_the_key_do_not_evict_established_workers() {
    let t0 = Instant::now();
    let mut store = ProviderStore::new(PeerId::random(), 7);
    let workers: Vec<PeerId> = (0..MAX_ESTABLISHED_PER_KEY).map(|_| PeerId::random()).collect();
    for (i, w) in workers.iter().enumerate() {
        assert_eq!(store.admit(record(*w, t0), group(i as u32), t0), Admission::Added);
    }
    let later = t0 + TENURE;
    // The farthest worker is the one a distance-based rule would drop first.
    let target = KBucketKey::new(KEY.to_vec());
    let farthest = workers.iter().max_by_key(|w| target.distance(&KBucketKey::from(**w))).unwrap();
    let sybils = ground_near_key(200, farthest);
    for (i, s) in sybils.iter().enumerate() {
        let now = later + Duration::from_millis(i as u64);
        assert_ne!(store.admit(record(*s, now), group(1000 + i as u32), now), Admission::Refused("no key"));
    }
    let held = ids(&store);
    assert_eq!(held.len(), MAX_PROVIDERS_PER_KEY);
    assert!(workers.iter().all(|w| held.contains(w)), "an established worker was evicted");
    assert!(store.len() <= MAX_PROVIDER_RECORDS);
}

#[test]
fn a_full_key_still_admits_newcomers_and_records_are_trimmed() {
    let t0 = Instant::now();
    let mut store = ProviderStore::new(PeerId::random(), 3);
    for i in 0..MAX_PROVIDERS_PER_KEY {
        store.admit(record(PeerId::random(), t0), group(i as u32), t0);
    }
    // Everyone is old enough, but only three quarters can be established.
    let later = t0 + 2 * TENURE;
    let newcomer = PeerId::random();
    assert!(matches!(store.admit(record(newcomer, later), group(999), later), Admission::Replaced(_)));
    assert!(ids(&store).contains(&newcomer));
    let kept = store.providers(&RecordKey::new(&KEY));
    assert!(kept.iter().all(|r| r.addresses.len() <= MAX_ADDRS_PER_PROVIDER));
}

#[test]
fn one_address_group_gets_a_bounded_share() {
    let t0 = Instant::now();
    let mut store = ProviderStore::new(PeerId::random(), 5);
    let mut added = 0;
    for _ in 0..50 {
        if store.admit(record(PeerId::random(), t0), group(1), t0) == Admission::Added {
            added += 1;
        }
    }
    assert_eq!(added, MAX_PER_GROUP_PER_KEY);
    // Ungrouped providers (loopback, in-memory) are not limited per group.
    for _ in 0..10 {
        assert_eq!(store.admit(record(PeerId::random(), t0), None, t0), Admission::Added);
    }
}

#[test]
fn refresh_keeps_tenure_and_expired_records_make_room() {
    let t0 = Instant::now();
    let mut store = ProviderStore::new(PeerId::random(), 9);
    let worker = PeerId::random();
    store.admit(record(worker, t0), group(1), t0);
    assert_eq!(store.admit(record(worker, t0 + TENURE), group(1), t0 + TENURE), Admission::Refreshed);
    assert_eq!(store.len(), 1);
    let mut short = record(PeerId::random(), t0);
    short.expires = Some(t0 + Duration::from_secs(1));
    store.admit(short, group(2), t0);
    assert_eq!(store.len(), 2);
    store.admit(record(PeerId::random(), t0 + TENURE), group(3), t0 + TENURE);
    assert_eq!(store.len(), 2, "the expired record was dropped");
    store.remove_provider(&RecordKey::new(&KEY), &worker);
    assert_eq!(store.len(), 1);
    assert!(!store.per_group.contains_key(&group(1).unwrap()));
}

#[test]
fn our_own_records_are_always_kept_and_listed_as_provided() {
    let t0 = Instant::now();
    let me = PeerId::random();
    let mut store = ProviderStore::new(me, 11);
    for i in 0..MAX_PROVIDERS_PER_KEY {
        store.admit(record(PeerId::random(), t0), group(i as u32), t0);
    }
    let later = t0 + 10 * TENURE;
    for _ in 0..MAX_PROVIDERS_PER_KEY {
        store.admit(record(PeerId::random(), later), group(500), later);
    }
    assert!(store.add_provider(record(me, later)).is_ok());
    assert!(ids(&store).contains(&me));
    assert_eq!(store.provided().count(), 1);
    store.remove_provider(&RecordKey::new(&KEY), &me);
    assert_eq!(store.provided().count(), 0);
}
