//! Attestation records over gossip, with full in-process nodes: a simulated worker's record
//! reaches every node whose policy allows simulated evidence; strict nodes refuse it at the first
//! hop and do not forward it; a node publishing a forged record is blocked by its peers, and one
//! publishing a TDX quote its peers cannot check (an unknown quote version) is not.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use std::time::Duration;

use cocoon::attestation::service::ATTESTATION_TOPIC;
use cocoon::config::{Config, Role, TeeKind};
use cocoon::network::{TransportKind, Validation};
use cocoon::node::Node;
use cocoon_protocol::attestation::record::{AttestationRecord, PaymentTerms, SimulatedEvidence, TeeEvidence};
use cocoon_protocol::attestation::signed::SignedRecord;
use common::inproc::{client_only, config, dial_addr, eventually, start};
use libp2p::identity::{Keypair, ed25519};

const WAIT: Duration = Duration::from_secs(30);

fn allowing(mut c: Config) -> Config {
    c.attestation.allow_simulated = true;
    c
}

fn worker(mut c: Config) -> Config {
    c.node.roles = vec![Role::Worker];
    c.worker.payout_address = "UQBvI0aFLnw2QbZgjMPCLRdtRHxhUyinQudg6sdiohIwg5jL".into();
    c.worker.tee = TeeKind::Simulated;
    allowing(c)
}

fn with_admin(mut c: Config) -> Config {
    c.admin.enabled = true;
    c.admin.listen = "127.0.0.1:0".parse().unwrap();
    c
}

async fn meshed(node: &Node) -> bool {
    node.network().status().await.map(|s| s.mesh_peers > 0).unwrap_or(false)
}

/// Sum of a gossipsub counter for the attestation topic, scraped from a node's `/metrics`.
async fn topic_counter(node: &Node, metric: &str) -> u64 {
    let addr = node.admin_addr().unwrap();
    let (_, body) = tokio::task::spawn_blocking(move || common::http_get(addr, "/metrics")).await.unwrap();
    body.lines()
        .filter(|l| l.starts_with(metric) && l.contains(ATTESTATION_TOPIC))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_record_reaches_every_allowing_node_and_no_strict_one() {
    let dir = tempfile::tempdir().unwrap();
    let boot = start(with_admin(allowing(config(&dir.path().join("boot"), Role::Bootstrap, None)))).await;
    let boot_addr = dial_addr(&boot);
    let mut allow = vec![boot];
    let mut strict = Vec::new();
    for i in 0..13 {
        allow.push(
            start(with_admin(allowing(config(
                &dir.path().join(format!("a{i}")),
                Role::Client,
                Some(&boot_addr),
            ))))
            .await,
        );
    }
    for i in 0..5 {
        strict.push(
            start(with_admin(config(&dir.path().join(format!("s{i}")), Role::Client, Some(&boot_addr))))
                .await,
        );
    }
    let all_meshed = eventually(WAIT, || async {
        for n in allow.iter().chain(&strict) {
            if !meshed(n).await {
                return false;
            }
        }
        true
    })
    .await;
    assert!(all_meshed, "gossipsub meshes did not form");

    // The worker joins last and publishes once it has mesh peers.
    let w = start(with_admin(worker(config(&dir.path().join("w"), Role::Worker, Some(&boot_addr))))).await;
    let reached =
        eventually(WAIT, || async { allow.iter().all(|n| n.attestation().verified_workers() == 1) }).await;
    let counts: Vec<usize> = allow.iter().map(|n| n.attestation().verified_workers()).collect();
    assert!(reached, "allowing nodes' verified workers: {counts:?}");
    assert!(allow.iter().all(|n| n.attestation().record_of(&w.peer_id()).is_some()));
    assert!(w.attestation().own_record().is_some());

    // Strict nodes heard it (at least some did) but kept and accepted nothing.
    for s in &strict {
        assert_eq!(s.attestation().verified_workers(), 0);
        assert_eq!(s.attestation().verdicts().accepted, 0);
        assert_eq!(s.attestation().verdicts().rejected, 0, "policy refusals are not misbehaviour");
    }
    let strict_ignored: u64 = strict.iter().map(|s| s.attestation().verdicts().ignored).sum();
    assert!(strict_ignored > 0, "no strict node was ever offered the record");

    // Gossip cost: messages received by the 19 other nodes, with and without duplicates.
    let (mut unfiltered, mut unique) = (0, 0);
    for n in allow.iter().chain(&strict) {
        unfiltered += topic_counter(n, "gossipsub_topic_msg_recv_counts_unfiltered").await;
        unique += topic_counter(n, "gossipsub_topic_msg_recv_counts_total").await;
    }
    println!(
        "one record, 20 nodes: {unfiltered} messages received in all, {unique} first deliveries, \
         {:.2} messages per delivery; {strict_ignored} refusals by 5 strict nodes",
        unfiltered as f64 / unique.max(1) as f64
    );
    assert!(unique >= 14, "first deliveries {unique}");

    for n in allow.into_iter().chain(strict).chain([w]) {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strict_node_does_not_forward_what_it_refuses() {
    const CONTROL: &str = "/cocoon/test/control/1";
    let dir = tempfile::tempdir().unwrap();
    let s = start(config(&dir.path().join("s"), Role::Bootstrap, None)).await;
    let s_addr = dial_addr(&s);
    let mut a_config = allowing(config(&dir.path().join("a"), Role::Client, Some(&s_addr)));
    client_only(&mut a_config);
    let a = start(a_config).await;
    // A control topic that everyone accepts: it travels the same S → A stream as the record.
    let mut a_control = a.network().subscribe(CONTROL, 8).await.unwrap();
    let mut s_control = s.network().subscribe(CONTROL, 8).await.unwrap();
    let s_net = s.network().clone();
    tokio::spawn(async move {
        while let Some(m) = s_control.recv().await {
            let _ = s_net.validate(&m, Validation::Accept).await;
        }
    });
    assert!(eventually(WAIT, || async { s.network().status().await.unwrap().mesh_peers == 1 }).await);

    let mut w_config = worker(config(&dir.path().join("w"), Role::Worker, Some(&s_addr)));
    client_only(&mut w_config);
    let w = start(w_config).await;
    assert!(
        eventually(WAIT, || async { s.attestation().verdicts().ignored >= 1 }).await,
        "S never judged the record"
    );

    // Only now the control message: had S forwarded the record, A would have it already.
    w.network().publish(CONTROL, b"after the record".to_vec()).await.unwrap();
    let control = tokio::time::timeout(WAIT, a_control.recv()).await.unwrap().unwrap();
    assert_eq!(control.data, b"after the record");
    assert_eq!(a.attestation().verdicts(), Default::default(), "A was offered the record S refused");
    assert!(
        !a.network().status().await.unwrap().connected.contains(&w.peer_id()),
        "A and W must meet only via S"
    );

    for n in [w, a, s] {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_publishing_a_forged_record_is_blocked_by_every_receiver() {
    let dir = tempfile::tempdir().unwrap();
    let boot = start(allowing(config(&dir.path().join("boot"), Role::Bootstrap, None))).await;
    let boot_addr = dial_addr(&boot);
    let mut honest = vec![boot];
    for i in 0..4 {
        honest.push(
            start(allowing(config(&dir.path().join(format!("h{i}")), Role::Client, Some(&boot_addr)))).await,
        );
    }
    let key = Keypair::generate_ed25519();
    let forger = Node::start(
        allowing(config(&dir.path().join("forger"), Role::Client, Some(&boot_addr))),
        TransportKind::Memory,
        Some(key.clone()),
    )
    .await
    .unwrap();
    assert!(eventually(WAIT, || meshed(&forger)).await);
    let victims = forger.network().status().await.unwrap().connected;

    // A record correctly signed by the forger, but whose evidence binds other keys (zeros).
    let record = AttestationRecord {
        peer_id: key.public().to_peer_id(),
        noise_static: [3; 32],
        payout_address: "UQ-forger".into(),
        terms: PaymentTerms::Unstated,
        offers: vec![],
        evidence: TeeEvidence::Simulated(Box::new(SimulatedEvidence::create(
            &ed25519::Keypair::generate(),
            [0; 64],
        ))),
        gpus: vec![],
        issued_at: cocoon::clock::unix_now(),
        expires_at: cocoon::clock::unix_now() + 600,
    };
    let forged = SignedRecord::sign(record, &key).unwrap().encode();
    forger.network().publish(ATTESTATION_TOPIC, forged).await.unwrap();

    // Every peer that received it rejects it, blocks the forger and drops the connection. (Flood
    // publishing reaches the connected peers whose subscription the forger already knows; peers it
    // meets later never see the record, since rejected records are not forwarded.)
    let judged =
        eventually(WAIT, || async { honest.iter().any(|h| h.attestation().verdicts().rejected > 0) }).await;
    assert!(judged, "no honest node received the forged record");
    let all_blocked = eventually(WAIT, || async {
        for h in &honest {
            if h.attestation().verdicts().rejected == 0 {
                continue;
            }
            let status = h.network().status().await.unwrap();
            if !status.blocked_peers.contains(&forger.peer_id())
                || status.connected.contains(&forger.peer_id())
            {
                return false;
            }
        }
        true
    })
    .await;
    let verdicts: Vec<_> = honest.iter().map(|h| h.attestation().verdicts()).collect();
    assert!(all_blocked, "a receiver did not block the forger; verdicts {verdicts:?}");
    assert!(verdicts.iter().all(|v| v.accepted == 0 && v.ignored == 0), "{verdicts:?}");
    assert!(honest.iter().all(|h| h.attestation().verified_workers() == 0));
    let receivers = verdicts.iter().filter(|v| v.rejected > 0).count();
    println!(
        "forged record: {receivers} of the forger's {} peers received it; all rejected it and blocked the forger",
        victims.len()
    );

    for n in honest.into_iter().chain([forger]) {
        n.shutdown().await.unwrap();
    }
}

/// Real TDX evidence over gossip. A quote of a version this build does not know is no proof of
/// anything against its sender (a newer verifier may check it): ignored, and the publisher stays
/// connected (it used to be rejected as malformed and blocked). The same quote with one bit of its
/// TD report flipped fails its own signature under any collateral: rejected and blocked, with no
/// collateral fetched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unverifiable_tdx_evidence_is_ignored_and_forged_tdx_evidence_blocks_its_sender() {
    let dir = tempfile::tempdir().unwrap();
    let offline = |mut c: Config| {
        c.attestation.pccs_url = String::new(); // nothing to fetch from: the verdicts need no collateral
        c
    };
    let boot = start(offline(config(&dir.path().join("boot"), Role::Bootstrap, None))).await;
    let boot_addr = dial_addr(&boot);
    let mut honest = vec![boot];
    for i in 0..3 {
        honest.push(
            start(offline(config(&dir.path().join(format!("h{i}")), Role::Client, Some(&boot_addr)))).await,
        );
    }
    let key = Keypair::generate_ed25519();
    let sender = Node::start(
        offline(config(&dir.path().join("sender"), Role::Client, Some(&boot_addr))),
        TransportKind::Memory,
        Some(key.clone()),
    )
    .await
    .unwrap();
    assert!(eventually(WAIT, || meshed(&sender)).await);
    let (quote, _) = common::dcap_samples::load("tdx_quote");
    let record = |quote: Vec<u8>, issued_at: u64| {
        let record = AttestationRecord {
            peer_id: key.public().to_peer_id(),
            noise_static: [3; 32],
            payout_address: "UQ-sender".into(),
            terms: PaymentTerms::Unstated,
            offers: vec![],
            evidence: TeeEvidence::Tdx { quote },
            gpus: vec![],
            issued_at,
            expires_at: issued_at + 600,
        };
        SignedRecord::sign(record, &key).unwrap().encode()
    };
    let now = cocoon::clock::unix_now();

    let mut v6 = quote.clone();
    v6[0] = 6;
    sender.network().publish(ATTESTATION_TOPIC, record(v6, now)).await.unwrap();
    let judged =
        eventually(WAIT, || async { honest.iter().any(|h| h.attestation().verdicts().ignored > 0) }).await;
    assert!(judged, "no honest node received the record");
    for h in &honest {
        let status = h.network().status().await.unwrap();
        assert_eq!(
            h.attestation().verdicts().rejected,
            0,
            "an unknown quote version was held against its sender"
        );
        assert!(!status.blocked_peers.contains(&sender.peer_id()));
    }

    let mut forged = quote;
    forged[48 + 200] ^= 0x01; // inside the TD report
    sender.network().publish(ATTESTATION_TOPIC, record(forged, now + 1)).await.unwrap();
    let blocked = eventually(WAIT, || async {
        for h in &honest {
            if h.attestation().verdicts().rejected > 0
                && h.network().status().await.unwrap().blocked_peers.contains(&sender.peer_id())
            {
                return true;
            }
        }
        false
    })
    .await;
    let verdicts: Vec<_> = honest.iter().map(|h| h.attestation().verdicts()).collect();
    assert!(blocked, "no receiver blocked the sender of a forged quote; verdicts {verdicts:?}");
    assert!(verdicts.iter().all(|v| v.accepted == 0), "{verdicts:?}");

    for n in honest.into_iter().chain([sender]) {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_client_finds_the_worker_by_provider_record_and_fetches_its_record() {
    use cocoon::attestation::service::WORKERS_KEY;
    let dir = tempfile::tempdir().unwrap();
    let boot = start(allowing(config(&dir.path().join("boot"), Role::Bootstrap, None))).await;
    let boot_addr = dial_addr(&boot);
    let mut early = vec![boot];
    for i in 0..3 {
        early.push(
            start(allowing(config(&dir.path().join(format!("e{i}")), Role::Client, Some(&boot_addr)))).await,
        );
    }
    let w = start(worker(config(&dir.path().join("w"), Role::Worker, Some(&boot_addr)))).await;
    let announced = eventually(WAIT, || async {
        early[0]
            .network()
            .get_providers(WORKERS_KEY.to_vec())
            .await
            .unwrap_or_default()
            .contains(&w.peer_id())
    })
    .await;
    assert!(announced, "the worker's provider record never appeared");

    let late = start(allowing(config(&dir.path().join("late"), Role::Client, Some(&boot_addr)))).await;
    assert!(
        eventually(WAIT, || async { !late.network().status().await.unwrap().connected.is_empty() }).await
    );
    let providers = late.network().get_providers(WORKERS_KEY.to_vec()).await.unwrap();
    assert_eq!(providers, vec![w.peer_id()]);
    let fetched =
        late.network().fetch_record(w.peer_id()).await.unwrap().expect("the worker serves a record");
    let own = w.attestation().own_record().unwrap();
    assert_eq!(SignedRecord::open(&fetched).unwrap(), own);
    // A node that is not a worker answers that it has no record.
    assert_eq!(late.network().fetch_record(early[1].peer_id()).await.unwrap(), None);
    // And the late client's attestation service ends up with the worker verified.
    assert!(eventually(WAIT, || async { late.attestation().verified_workers() == 1 }).await);

    for n in early.into_iter().chain([w, late]) {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_records_survive_a_restart_and_are_rejudged() {
    let dir = tempfile::tempdir().unwrap();
    let boot = start(allowing(config(&dir.path().join("boot"), Role::Bootstrap, None))).await;
    let boot_addr = dial_addr(&boot);
    let c_config = allowing(config(&dir.path().join("c"), Role::Client, Some(&boot_addr)));
    let c = start(c_config.clone()).await;
    let w = start(worker(config(&dir.path().join("w"), Role::Worker, Some(&boot_addr)))).await;
    assert!(eventually(WAIT, || async { c.attestation().verified_workers() == 1 }).await);
    w.shutdown().await.unwrap();
    c.shutdown().await.unwrap();

    // The worker is gone: only the store can tell the restarted node about it.
    let c = start(c_config.clone()).await;
    assert_eq!(c.attestation().verified_workers(), 1, "record not restored from the store");
    c.shutdown().await.unwrap();

    // Restarted under a strict policy, the stored record is re-judged, dropped and deleted.
    let mut strict = c_config.clone();
    strict.attestation.allow_simulated = false;
    let c = start(strict).await;
    assert_eq!(c.attestation().verified_workers(), 0);
    c.shutdown().await.unwrap();
    let c = start(c_config).await;
    assert_eq!(c.attestation().verified_workers(), 0, "a refused record must not stay in the store");
    for n in [c, boot] {
        n.shutdown().await.unwrap();
    }
}
