//! Collateral fetched over HTTP from a PCCS, cached in sled and reused offline. The PCCS is a
//! local server speaking the PCS v4 API (issuer chains in URL-encoded headers, signed JSON bodies,
//! hex root CRL) and serving the real Intel-signed collateral shipped with `dcap-qvl`'s samples,
//! so the real client code parses real documents and the real verifier checks them.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use cocoon::attestation::collateral::{
    CollateralError, CollateralSource, CollateralStats, MAX_COLLATERAL_AGE, REFRESH_BEFORE, REFRESH_INTERVAL,
};
use cocoon::attestation::judge::{Judgement, judge};
use cocoon::attestation::known::KnownWorkers;
use cocoon::attestation::pccs::{PccsClient, PccsError, Platform};
use cocoon::attestation::tdx::{Collateral, collateral_window, verify_quote};
use cocoon::attestation::verifier::Verifier;
use cocoon::store::Store;
use cocoon_protocol::attestation::policy::{AllowedImage, AttestationPolicy};
use cocoon_protocol::attestation::record::{AttestationRecord, PaymentTerms, TeeEvidence};
use cocoon_protocol::attestation::signed::SignedRecord;
use common::dcap_samples::load;
use libp2p::identity::Keypair;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use tokio::task::JoinHandle;

/// What the fake PCCS serves and how it has been used.
struct Pccs {
    collateral: Collateral,
    hits: AtomicUsize,
    /// Non-zero: answer every request with this status.
    fail_with: AtomicU16,
    /// Leave out the TCB info issuer chain header.
    drop_header: std::sync::atomic::AtomicBool,
    /// Query strings received, by path.
    queries: Mutex<Vec<(String, HashMap<String, String>)>>,
}

fn encode(chain: &str) -> String {
    utf8_percent_encode(chain, NON_ALPHANUMERIC).to_string()
}

impl Pccs {
    fn answer(&self, path: &str, query: HashMap<String, String>) -> Option<Response> {
        self.hits.fetch_add(1, Ordering::SeqCst);
        self.queries.lock().unwrap().push((path.to_owned(), query));
        let status = self.fail_with.load(Ordering::SeqCst);
        if status != 0 {
            return Some(StatusCode::from_u16(status).unwrap().into_response());
        }
        None
    }
}

async fn pck_crl(State(p): State<Arc<Pccs>>, Query(q): Query<HashMap<String, String>>) -> Response {
    if let Some(r) = p.answer("pckcrl", q) {
        return r;
    }
    let mut h = HeaderMap::new();
    h.insert("SGX-PCK-CRL-Issuer-Chain", encode(&p.collateral.pck_crl_issuer_chain).parse().unwrap());
    (h, p.collateral.pck_crl.clone()).into_response()
}

async fn tcb(State(p): State<Arc<Pccs>>, Query(q): Query<HashMap<String, String>>) -> Response {
    if let Some(r) = p.answer("tcb", q) {
        return r;
    }
    let mut h = HeaderMap::new();
    if !p.drop_header.load(Ordering::SeqCst) {
        h.insert("TCB-Info-Issuer-Chain", encode(&p.collateral.tcb_info_issuer_chain).parse().unwrap());
    }
    let c = &p.collateral;
    let body =
        format!(r#"{{"tcbInfo":{},"signature":"{}"}}"#, c.tcb_info, hex::encode(&c.tcb_info_signature));
    (h, body).into_response()
}

async fn qe_identity(State(p): State<Arc<Pccs>>) -> Response {
    if let Some(r) = p.answer("qe/identity", HashMap::new()) {
        return r;
    }
    let mut h = HeaderMap::new();
    h.insert(
        "SGX-Enclave-Identity-Issuer-Chain",
        encode(&p.collateral.qe_identity_issuer_chain).parse().unwrap(),
    );
    let c = &p.collateral;
    let body = format!(
        r#"{{"enclaveIdentity":{},"signature":"{}"}}"#,
        c.qe_identity,
        hex::encode(&c.qe_identity_signature)
    );
    (h, body).into_response()
}

async fn root_crl(State(p): State<Arc<Pccs>>) -> Response {
    if let Some(r) = p.answer("rootcacrl", HashMap::new()) {
        return r;
    }
    hex::encode(&p.collateral.root_ca_crl).into_response()
}

/// Start a fake PCCS serving `collateral`; returns its state, base URL and server task.
async fn serve(collateral: Collateral) -> (Arc<Pccs>, String, JoinHandle<()>) {
    let state = Arc::new(Pccs {
        collateral,
        hits: AtomicUsize::new(0),
        fail_with: AtomicU16::new(0),
        drop_header: Default::default(),
        queries: Mutex::new(Vec::new()),
    });
    let app = axum::Router::new()
        .route("/sgx/certification/v4/pckcrl", get(pck_crl))
        .route("/sgx/certification/v4/rootcacrl", get(root_crl))
        .route("/tdx/certification/v4/tcb", get(tcb))
        .route("/tdx/certification/v4/qe/identity", get(qe_identity))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (state, url, task)
}

fn client(url: &str) -> PccsClient {
    PccsClient::new(url, Duration::from_secs(5)).unwrap()
}

fn window(c: &Collateral) -> (u64, u64) {
    collateral_window(c).unwrap()
}

#[tokio::test]
async fn collateral_from_a_pccs_is_byte_exact_and_verifies_the_sample_quote() {
    let (quote, sample) = load("tdx_quote");
    let (pccs, url, _server) = serve(sample.clone()).await;
    let platform = Platform::of_quote(&quote).unwrap();
    assert!(platform.tdx);
    let fetched = client(&url).fetch(&platform).await.unwrap();
    assert_eq!(fetched, Collateral { pck_certificate_chain: None, ..sample.clone() });
    // The platform was read from the quote's PCK certificate and asked for by name.
    let queries = pccs.queries.lock().unwrap().clone();
    let tcb = queries.iter().find(|(p, _)| p == "tcb").unwrap();
    assert_eq!(tcb.1["fmspc"], hex::encode_upper(platform.fmspc));
    let crl = queries.iter().find(|(p, _)| p == "pckcrl").unwrap();
    assert_eq!(crl.1["ca"], platform.ca);
    assert_eq!(pccs.hits.load(Ordering::SeqCst), 4);
    let (from, _) = window(&fetched);
    let claims = verify_quote(&quote, &fetched, from + 3600).unwrap();
    assert!(hex::encode(claims.mrtd).starts_with("91eb2b44"));
}

#[tokio::test]
async fn collateral_is_cached_in_the_store_and_reused_offline() {
    let (quote, sample) = load("tdx_quote");
    let (from, _) = window(&sample);
    let now = from + 3600;
    // Used for at most MAX_COLLATERAL_AGE after it verified (the signed window is a month).
    let until = now + MAX_COLLATERAL_AGE;
    let dir = tempfile::tempdir().unwrap();
    let (pccs, url, server) = serve(sample.clone()).await;
    {
        let store = Store::open(dir.path()).unwrap();
        let source = CollateralSource::new(Some(client(&url)), Some(store.collateral_cache().unwrap()));
        let first = source.for_quote(&quote, now).await.unwrap();
        assert_eq!(pccs.hits.load(Ordering::SeqCst), 4);
        let second = source.for_quote(&quote, now + 60).await.unwrap();
        assert_eq!(first, second);
        assert_eq!(pccs.hits.load(Ordering::SeqCst), 4, "second lookup must not fetch");
        assert_eq!(source.stats().fetched, 1);
        store.flush().unwrap();
    }
    // The PCCS goes away; a restarted node verifies from its store alone.
    server.abort();
    // sled releases its file lock from a background thread shortly after the last handle drops.
    let mut reopened = Store::open(dir.path());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while reopened.is_err() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        reopened = Store::open(dir.path());
    }
    let store = reopened.unwrap();
    let source = CollateralSource::new(Some(client(&url)), Some(store.collateral_cache().unwrap()));
    let cached = source.cached(&quote, now).expect("collateral restored from the store");
    assert!(verify_quote(&quote, &cached, now).is_ok());
    assert!(source.for_quote(&quote, now + 120).await.is_ok());
    // Close to expiry it tries to refresh; the PCCS is down, so the cached copy is still used.
    let late = until - REFRESH_BEFORE / 2;
    assert!(source.for_quote(&quote, late).await.is_ok());
    assert_eq!(source.stats().failed, 1);
    // Within the failure back-off it does not ask again.
    assert!(source.for_quote(&quote, late + 30).await.is_ok());
    assert_eq!(source.stats().failed, 1);
    // Past expiry nothing valid is left, and the PCCS is still unreachable.
    assert!(source.cached(&quote, until).is_none());
    let err = source.for_quote(&quote, until).await.unwrap_err();
    assert!(matches!(&err, CollateralError::Fetch { error: PccsError::Request { .. }, .. }), "{err:?}");
}

#[tokio::test]
async fn pccs_failures_have_clear_errors_and_back_off() {
    let (quote, sample) = load("tdx_quote");
    let (from, until) = window(&sample);
    let now = from + 3600;

    // No PCCS and nothing cached.
    let offline = CollateralSource::offline();
    assert!(matches!(offline.for_quote(&quote, now).await, Err(CollateralError::NotCached(_))));

    // Error status, then the failure back-off: no request for a minute.
    let (pccs, url, _server) = serve(sample.clone()).await;
    pccs.fail_with.store(503, Ordering::SeqCst);
    let source = CollateralSource::new(Some(client(&url)), None);
    let err = source.for_quote(&quote, now).await.unwrap_err();
    assert!(
        matches!(&err, CollateralError::Fetch { error: PccsError::Status { status: 503, .. }, .. }),
        "{err:?}"
    );
    let hits = pccs.hits.load(Ordering::SeqCst);
    assert!(matches!(source.for_quote(&quote, now + 30).await, Err(CollateralError::RecentFailure(_))));
    assert_eq!(pccs.hits.load(Ordering::SeqCst), hits);
    pccs.fail_with.store(0, Ordering::SeqCst);
    assert!(source.for_quote(&quote, now + 61).await.is_ok());

    // A response missing its issuer chain names the header.
    pccs.drop_header.store(true, Ordering::SeqCst);
    let err = client(&url).fetch(&Platform::of_quote(&quote).unwrap()).await.unwrap_err();
    assert!(matches!(&err, PccsError::Header { header: "TCB-Info-Issuer-Chain", .. }), "{err:?}");
    pccs.drop_header.store(false, Ordering::SeqCst);

    // Collateral that is already expired when served is not used.
    let source = CollateralSource::new(Some(client(&url)), None);
    assert!(matches!(source.for_quote(&quote, until + 1).await, Err(CollateralError::Stale(_))));
    assert!(source.cached(&quote, until + 1).is_none());

    // Nobody listening: a connection error, quickly.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let err = client(&dead_url).fetch(&Platform::of_quote(&quote).unwrap()).await.unwrap_err();
    assert!(matches!(err, PccsError::Request { .. }), "{err:?}");

    // Garbage instead of a quote is no platform at all.
    assert!(matches!(source.for_quote(b"not a quote", now).await, Err(CollateralError::Quote(_))));
}

/// A node judging a gossiped TDX record fetches the collateral it lacks, verifies the quote and
/// then applies the binding check: the sample quote binds someone else's keys, so the record is
/// rejected for its report data, which is only reachable once the quote itself verified.
#[tokio::test]
async fn judging_a_tdx_record_fetches_its_collateral() {
    let (quote, sample) = load("tdx_quote");
    let (from, _) = window(&sample);
    let now = from + 3600;
    let claims = verify_quote(&quote, &sample, now).unwrap();
    let policy = AttestationPolicy {
        allowed_images: vec![AllowedImage { name: "sample".into(), mrtd: claims.mrtd, rtmr: None }],
        accepted_tcb_statuses: vec![claims.tcb_status.clone()],
        ..AttestationPolicy::default()
    };
    let key = Keypair::generate_ed25519();
    let record = AttestationRecord {
        peer_id: key.public().to_peer_id(),
        noise_static: [7; 32],
        payout_address: "UQ-worker".into(),
        terms: PaymentTerms::Unstated,
        offers: vec![],
        evidence: TeeEvidence::Tdx { quote: quote.clone() },
        gpus: vec![],
        issued_at: now,
        expires_at: now + 3600,
    };
    let bytes = SignedRecord::sign(record, &key).unwrap().encode();
    let author = Some(key.public().to_peer_id());
    let known = Mutex::new(KnownWorkers::new(8));

    let verifier = Verifier::new(policy.clone(), 8);
    let offline = CollateralSource::offline();
    let verdict = judge(&bytes, author, &known, &verifier, &offline, now).await;
    assert!(matches!(&verdict, Judgement::Ignore(r) if r.contains("cannot verify")), "{verdict:?}");

    let (pccs, url, _server) = serve(sample).await;
    let source = CollateralSource::new(Some(client(&url)), None);
    let verdict = judge(&bytes, author, &known, &verifier, &source, now).await;
    assert!(matches!(&verdict, Judgement::Reject(r) if r.contains("report data")), "{verdict:?}");
    assert_eq!(pccs.hits.load(Ordering::SeqCst), 4);
    // The quote's result is cached by hash now: judging again needs no collateral at all.
    assert!(verifier.has_result(&quote, now + 1));
    let verdict = judge(&bytes, author, &known, &verifier, &offline, now + 1).await;
    assert!(matches!(&verdict, Judgement::Reject(r) if r.contains("report data")), "{verdict:?}");
}

#[tokio::test]
async fn attest_verify_cli_fetches_collateral_and_saves_it_for_offline_use() {
    let (quote, sample) = load("tdx_quote");
    let (from, _) = window(&sample);
    let (pccs, url, _server) = serve(sample).await;
    let tmp = tempfile::tempdir().unwrap();
    let quote_file = tmp.path().join("quote.bin");
    std::fs::write(&quote_file, &quote).unwrap();
    let saved = tmp.path().join("collateral.json");
    let (q, s, at) = (
        quote_file.to_str().unwrap().to_owned(),
        saved.to_str().unwrap().to_owned(),
        (from + 3600).to_string(),
    );

    let args = ["attest", "verify", "--quote", &q, "--pccs", &url, "--save-collateral", &s, "--at", &at]
        .map(str::to_owned);
    let (ok, out, err) = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        common::run(&args, &[])
    })
    .await
    .unwrap();
    assert!(ok, "{err}");
    assert!(out.contains("collateral:   tdx/") && out.contains("mrtd:         91eb2b44"), "{out}");
    assert_eq!(pccs.hits.load(Ordering::SeqCst), 4);

    // The saved file verifies the quote with no PCCS at all.
    let (ok, out, err) =
        common::run(&["attest", "verify", "--quote", &q, "--collateral", &s, "--at", &at], &[]);
    assert!(ok && out.contains("verdict:      ACCEPTED"), "{out}{err}");
    assert_eq!(pccs.hits.load(Ordering::SeqCst), 4);
}

/// Collateral is verified before it is used or kept: a PCCS serving collateral with a bad
/// signature, or another platform's, gets nothing into memory or the store, and the quote is not
/// judged with it. (It used to be cached on the strength of its unsigned `nextUpdate` alone.)
#[tokio::test]
async fn collateral_that_does_not_verify_is_neither_used_nor_kept() {
    let (quote, sample) = load("tdx_quote");
    let now = window(&sample).0 + 3600;
    let key = Platform::of_quote(&quote).unwrap().key();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let cache = store.collateral_cache().unwrap();

    let mut forged = sample.clone();
    forged.tcb_info = forged.tcb_info.replacen("UpToDate", "Revoked", 1);
    let (_pccs, url, _server) = serve(forged).await;
    let source = CollateralSource::new(Some(client(&url)), Some(cache.clone()));
    let err = source.for_quote(&quote, now).await.unwrap_err();
    assert!(matches!(&err, CollateralError::Invalid { error, .. } if error.contains("TCB info")), "{err:?}");
    assert!(source.cached(&quote, now).is_none());
    assert_eq!(cache.get(&key).unwrap(), None, "unverified collateral reached the store");
    assert_eq!(source.stats(), CollateralStats { fetched: 0, failed: 1 });

    // Intel-signed, valid at the time, but for another FMSPC (the outdated sample's platform).
    let (_, other) = load("tdx_quote_outdated");
    let other_now = window(&other).0 + 3600;
    let (_pccs, url, _server) = serve(other).await;
    let source = CollateralSource::new(Some(client(&url)), Some(cache.clone()));
    let err = source.for_quote(&quote, other_now).await.unwrap_err();
    assert!(matches!(&err, CollateralError::Invalid { error, .. } if error.contains("FMSPC")), "{err:?}");
    assert_eq!(cache.get(&key).unwrap(), None);

    // Something put in the store behind the node's back is verified again when read.
    let mut tampered = sample.clone();
    tampered.qe_identity_signature[0] ^= 1;
    cache.put(&key, &tampered, now + 3600).unwrap();
    let source = CollateralSource::new(None, Some(cache.clone()));
    assert!(source.cached(&quote, now).is_none(), "tampered collateral used from the store");
    cache.put(&key, &sample, now + 3600).unwrap();
    let source = CollateralSource::new(None, Some(cache));
    assert!(source.cached(&quote, now).is_some(), "control: the genuine collateral is used");
}

/// How long fetched collateral is used comes from its verified, signed dates, capped by
/// MAX_COLLATERAL_AGE; it is refreshed daily.
#[tokio::test]
async fn cached_collateral_is_refreshed_daily_and_dropped_after_a_week() {
    let (quote, sample) = load("tdx_quote");
    let now = window(&sample).0 + 3600;
    let (pccs, url, server) = serve(sample).await;
    let source = CollateralSource::new(Some(client(&url)), None);
    source.for_quote(&quote, now).await.unwrap();
    assert_eq!(pccs.hits.load(Ordering::SeqCst), 4);
    source.for_quote(&quote, now + REFRESH_INTERVAL - 1).await.unwrap();
    assert_eq!(pccs.hits.load(Ordering::SeqCst), 4, "fresh: not fetched again");
    source.for_quote(&quote, now + REFRESH_INTERVAL).await.unwrap();
    assert_eq!(pccs.hits.load(Ordering::SeqCst), 8, "a day old: refreshed");

    // The PCCS goes away: the last copy serves for a week after it verified, not a month.
    server.abort();
    let fetched_at = now + REFRESH_INTERVAL;
    assert!(source.cached(&quote, fetched_at + MAX_COLLATERAL_AGE - 1).is_some());
    assert!(source.cached(&quote, fetched_at + MAX_COLLATERAL_AGE).is_none());
}

/// Plain-HTTP PCCS URLs are refused at configuration load unless allowed explicitly.
#[test]
fn a_plain_http_pccs_needs_allow_insecure_pccs() {
    use cocoon::config::Config;
    for url in ["http://127.0.0.1:8081", "http://pccs.example"] {
        let config = Config::parse(&format!("[attestation]\npccs_url = \"{url}\"\n")).unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("plain HTTP") && err.contains("allow_insecure_pccs"), "{err}");
        let config =
            Config::parse(&format!("[attestation]\npccs_url = \"{url}\"\nallow_insecure_pccs = true\n"))
                .unwrap();
        config.validate().unwrap();
    }
    let default = Config::default();
    assert!(!default.attestation.allow_insecure_pccs);
    assert!(default.validate().is_ok(), "the default (Intel's PCS over https) is accepted");
    assert!(default.to_toml().unwrap().contains("allow_insecure_pccs = false"), "config dump shows it");
}
