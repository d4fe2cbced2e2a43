//! Tests of the VCEK source against a local KDS on loopback serving AMD's real Milan VCEK (and,
//! to lie, the Turin one) from the `sev` crate's package, with a sled store in a temp dir.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::*;
use crate::attestation::sev_samples::{milan_report, read};
use crate::store::Store;

/// 2025-01-01T00:00:00Z, inside the Milan VCEK's validity.
const JAN_2025: u64 = 1_735_689_600;

/// A request's product, hwID and query.
type Request = (String, String, HashMap<String, String>);

/// A fake KDS.
struct Kds {
    /// What it serves as any VCEK.
    vcek: Vec<u8>,
    hits: AtomicUsize,
    /// Non-zero: answer every request with this status.
    fail_with: AtomicU16,
    /// The last request: product, hwID, query.
    last: std::sync::Mutex<Option<Request>>,
}

async fn serve_vcek(
    State(kds): State<Arc<Kds>>,
    Path((product, hw_id)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    kds.hits.fetch_add(1, Ordering::SeqCst);
    *kds.last.lock().unwrap() = Some((product, hw_id, query));
    match kds.fail_with.load(Ordering::SeqCst) {
        0 => kds.vcek.clone().into_response(),
        status => StatusCode::from_u16(status).unwrap().into_response(),
    }
}

/// Serve `vcek` on loopback; the base URL and the server task.
async fn serve(vcek: Vec<u8>) -> (Arc<Kds>, String, tokio::task::JoinHandle<()>) {
    let kds = Arc::new(Kds {
        vcek,
        hits: AtomicUsize::new(0),
        fail_with: AtomicU16::new(0),
        last: std::sync::Mutex::new(None),
    });
    let app = axum::Router::new()
        .route("/vcek/v1/{product}/{hw_id}", axum::routing::get(serve_vcek))
        .with_state(kds.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (kds, url, task)
}

fn config(url: &str) -> KdsConfig {
    KdsConfig { url: url.to_owned(), timeout_secs: 5, min_interval_secs: 60 }
}

#[test]
fn config_defaults_are_amds_kds_and_parse_back() {
    let defaults = KdsConfig::default();
    assert_eq!(defaults.url, "https://kdsintf.amd.com");
    let parsed: KdsConfig = serde_json::from_str(r#"{"timeout_secs": 3}"#).unwrap();
    assert_eq!(parsed, KdsConfig { timeout_secs: 3, ..KdsConfig::default() });
    assert!(serde_json::from_str::<KdsConfig>(r#"{"ur": "x"}"#).is_err(), "unknown keys are refused");
    assert!(matches!(VcekSource::new(&config("kdsintf.amd.com"), None), Err(KdsError::Url(_))));
}

#[test]
fn kds_paths_follow_amd_57230() {
    let report = SnpReport::parse(&milan_report()).unwrap();
    assert_eq!(report.products(), vec![SnpProduct::Milan, SnpProduct::Genoa]);
    let path = vcek_path(&report, SnpProduct::Milan);
    assert!(path.starts_with("/vcek/v1/Milan/d49554ec717f4e5b"), "{path}");
    assert!(path.ends_with("a44d541eb6?blSPL=3&teeSPL=0&snpSPL=8&ucodeSPL=115"), "{path}");
    // Turin: the first 8 bytes of the chip ID and the FMC level first.
    let mut turin = report.clone();
    turin.chip_id[8..].fill(0);
    assert_eq!(turin.products(), vec![SnpProduct::Turin]);
    let path = vcek_path(&turin, SnpProduct::Turin);
    assert_eq!(path, "/vcek/v1/Turin/d49554ec717f4e5b?fmcSPL=3&blSPL=0&teeSPL=0&snpSPL=0&ucodeSPL=115");
}

#[tokio::test]
async fn a_vcek_is_fetched_once_then_served_from_the_store_offline() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let report = milan_report();
    let (kds, url, server) = serve(read("vcek_milan.der")).await;

    let source = VcekSource::new(&config(&url), Some(store.vcek_cache().unwrap())).unwrap();
    assert!(source.cached(&report, JAN_2025).is_none());
    let vcek = source.for_report(&report, JAN_2025).await.unwrap();
    assert_eq!(vcek.product(), SnpProduct::Milan);
    let (product, hw_id, query) = kds.last.lock().unwrap().clone().unwrap();
    assert_eq!((product.as_str(), hw_id.len()), ("Milan", 128));
    assert_eq!(query.get("ucodeSPL").map(String::as_str), Some("115"));
    // The VCEK verifies the report it was fetched for.
    let expected: [u8; 64] = report[0x50..0x90].try_into().unwrap();
    let measurement = report[0x90..0xC0].try_into().unwrap();
    let policy =
        crate::attestation::snp::SnpPolicy { allowed_measurements: vec![measurement], ..Default::default() };
    crate::attestation::snp::verify_report(&report, &vcek, &expected, &policy, JAN_2025).unwrap();
    source.for_report(&report, JAN_2025).await.unwrap();
    assert_eq!(kds.hits.load(Ordering::SeqCst), 1, "served from memory the second time");
    assert_eq!(source.stats(), KdsStats { requests: 1, fetched: 1, throttled: 0 });

    // The KDS goes away; a fresh source (a restarted node) reads the store.
    server.abort();
    let _ = server.await;
    let restarted = VcekSource::new(&config(&url), Some(store.vcek_cache().unwrap())).unwrap();
    assert!(restarted.cached(&report, JAN_2025).is_some(), "cached() reads the store without network");
    restarted.for_report(&report, JAN_2025).await.unwrap();
    let offline = VcekSource::offline(Some(store.vcek_cache().unwrap()));
    offline.for_report(&report, JAN_2025).await.unwrap();
    assert_eq!(offline.stats().requests, 0);
    // Past the VCEK's validity nothing is served.
    assert!(offline.cached(&report, 1_901_474_624).is_none());
    assert!(matches!(
        VcekSource::offline(None).for_report(&report, JAN_2025).await,
        Err(KdsError::NotCached(_))
    ));
}

#[tokio::test]
async fn http_429_backs_off() {
    let report = milan_report();
    let (kds, url, _server) = serve(read("vcek_milan.der")).await;
    kds.fail_with.store(429, Ordering::SeqCst);
    let source = VcekSource::new(&config(&url), None).unwrap();

    let err = source.for_report(&report, JAN_2025).await.unwrap_err();
    assert_eq!(err, KdsError::Throttled { until: JAN_2025 + 60 });
    // Neither this key nor another is asked for during the back-off.
    assert!(matches!(source.for_report(&report, JAN_2025 + 30).await, Err(KdsError::Throttled { .. })));
    assert_eq!(kds.hits.load(Ordering::SeqCst), 1);
    // Throttled again after it: the back-off doubles.
    let err = source.for_report(&report, JAN_2025 + 60).await.unwrap_err();
    assert_eq!(err, KdsError::Throttled { until: JAN_2025 + 180 });
    assert_eq!(source.stats().throttled, 2);
    // Once KDS answers, the VCEK comes.
    kds.fail_with.store(0, Ordering::SeqCst);
    source.for_report(&report, JAN_2025 + 180).await.unwrap();
    assert_eq!(kds.hits.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_key_is_fetched_at_most_once_per_interval() {
    let report = milan_report();
    let (kds, url, _server) = serve(read("vcek_milan.der")).await;
    kds.fail_with.store(500, Ordering::SeqCst);
    let source = VcekSource::new(&config(&url), None).unwrap();
    assert!(matches!(source.for_report(&report, JAN_2025).await, Err(KdsError::Status { status: 500, .. })));
    assert!(matches!(source.for_report(&report, JAN_2025 + 59).await, Err(KdsError::RateLimited(_))));
    assert_eq!(kds.hits.load(Ordering::SeqCst), 1);
    kds.fail_with.store(0, Ordering::SeqCst);
    source.for_report(&report, JAN_2025 + 60).await.unwrap();
}

#[tokio::test]
async fn a_vcek_for_another_chip_is_refused_and_not_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let report = milan_report();
    // The KDS lies: the (genuine) Turin VCEK at the Milan chip's path.
    let (_kds, url, _server) = serve(read("vcek_turin.der")).await;
    let source = VcekSource::new(&config(&url), Some(store.vcek_cache().unwrap())).unwrap();
    let err = source.for_report(&report, JAN_2025).await.unwrap_err();
    assert!(matches!(err, KdsError::Invalid { error: SnpError::Chain(_), .. }), "{err:?}");
    assert!(source.cached(&report, JAN_2025).is_none());
    let key = vcek_key(&SnpReport::parse(&report).unwrap(), SnpProduct::Milan);
    assert_eq!(store.vcek_cache().unwrap().get(&key).unwrap(), None);
}

#[test]
fn offered_vceks_are_verified_before_use() {
    let report = milan_report();
    let source = VcekSource::offline(None);
    let err = source.offered(&report, &read("vcek_turin.der"), JAN_2025).unwrap_err();
    assert!(matches!(err, KdsError::Invalid { .. }), "{err:?}");
    assert!(source.cached(&report, JAN_2025).is_none());
    let vcek = source.offered(&report, &read("vcek_milan.der"), JAN_2025).unwrap();
    assert_eq!(vcek.product(), SnpProduct::Milan);
    assert!(source.cached(&report, JAN_2025).is_some());
}
