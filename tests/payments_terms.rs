//! Workers publish their payment terms in their attestation records, and clients never open a
//! channel a worker's terms refuse: a worker asking for a larger deposit than the client makes is
//! passed over for one that accepts it, a worker on another network is never paid (the request
//! fails naming the terms, and no channel is deployed), and a worker that takes no payment is
//! sent requests without a channel whatever its prices.

#![allow(clippy::unwrap_used)]

mod common;

use cocoon::config::{ChainKind, Role};
use cocoon_protocol::attestation::record::{PaidTerms, PaymentTerms};
use common::inference::{boot, client, metric, post, tiny_model, wait_for_workers, with_admin, worker};
use common::inproc::config;
use common::payments::{TON, chain, paying, start_on};
use serde_json::json;

const PRICE: u64 = 1_000_000;

fn ask(model_id: &str, i: usize) -> String {
    json!({"model": model_id, "messages": [{"role": "user", "content": format!("hi {i}")}], "max_tokens": 4})
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_choose_only_workers_whose_terms_accept_their_channels() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let chain = chain();
    let (boot, boot_addr) = boot(dir.path()).await;
    let mut demanding =
        with_admin(worker(config(&dir.path().join("w1"), Role::Worker, Some(&boot_addr)), &model, PRICE, 4));
    demanding.payments.min_deposit_nanotons = 5 * TON;
    paying(&mut demanding, &chain, 10 * TON);
    let demanding = start_on(demanding, &chain).await;
    let mut plain =
        with_admin(worker(config(&dir.path().join("w2"), Role::Worker, Some(&boot_addr)), &model, PRICE, 4));
    paying(&mut plain, &chain, 10 * TON);
    let plain = start_on(plain, &chain).await;
    let mut cc = client(config(&dir.path().join("c"), Role::Client, Some(&boot_addr)));
    cc.payments.deposit_nanotons = TON;
    paying(&mut cc, &chain, 100 * TON);
    let client = start_on(cc, &chain).await;
    let model_id = wait_for_workers(&client, 2).await;

    // The records carry the terms each worker was configured with.
    let terms =
        |w: &cocoon::node::Node| client.attestation().record_of(&w.peer_id()).unwrap().record().terms.clone();
    let PaymentTerms::Paid(PaidTerms { network, min_deposit, min_dispute_window, contract_version }) =
        terms(&demanding)
    else {
        panic!("{:?}", terms(&demanding))
    };
    // A devnet's local chain is unnamed: it matches any client.
    assert_eq!(
        (network.as_str(), min_deposit, min_dispute_window, contract_version),
        ("", 5 * TON, 3_600, 2)
    );

    for i in 0..6 {
        let (status, answer) =
            post(client.api_addr().unwrap(), "/v1/chat/completions", ask(&model_id, i)).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["cocoon"]["worker"], plain.peer_id().to_string(), "{answer}");
    }
    let channels = client.store().payments().unwrap().client_channels().unwrap();
    assert_eq!(channels.len(), 1, "one channel, with the worker that accepts a 1 TON deposit");
    assert_eq!(metric(&demanding, "cocoon_inference_worker_requests_total", "").await, 0);
    for node in [client, demanding, plain, boot] {
        node.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_on_another_network_is_never_paid_and_a_free_one_is_sent_no_channel() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let chain = chain();
    let (boot, boot_addr) = boot(dir.path()).await;
    let mut elsewhere =
        with_admin(worker(config(&dir.path().join("w"), Role::Worker, Some(&boot_addr)), &model, PRICE, 2));
    paying(&mut elsewhere, &chain, 10 * TON);
    elsewhere.payments.network = "ton-testnet".into();
    let elsewhere = start_on(elsewhere, &chain).await;
    let mut cc = client(config(&dir.path().join("c"), Role::Client, Some(&boot_addr)));
    let wallet = paying(&mut cc, &chain, 100 * TON);
    cc.payments.network = "my-devnet".into();
    let client = start_on(cc, &chain).await;
    let model_id = wait_for_workers(&client, 1).await;

    let (status, answer) = post(client.api_addr().unwrap(), "/v1/chat/completions", ask(&model_id, 0)).await;
    assert_eq!(status, 402, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains("payment terms") && message.contains("paid on ton-testnet"), "{message}");
    assert_eq!(chain.balance(wallet.address()).unwrap(), 100 * TON, "no channel was deployed");
    elsewhere.shutdown().await.unwrap();

    // A worker that takes no payment (payments off) but states prices: served without a channel.
    let mut free =
        with_admin(worker(config(&dir.path().join("f"), Role::Worker, Some(&boot_addr)), &model, PRICE, 2));
    free.payments.chain = ChainKind::Off;
    let free = common::inproc::start(free).await;
    let ok = common::inproc::eventually(std::time::Duration::from_secs(60), || async {
        client.attestation().record_of(&free.peer_id()).is_some()
    })
    .await;
    assert!(ok, "the free worker's record never arrived");
    assert_eq!(client.attestation().record_of(&free.peer_id()).unwrap().record().terms, PaymentTerms::Free);
    let (status, answer) = post(client.api_addr().unwrap(), "/v1/chat/completions", ask(&model_id, 1)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["cocoon"]["payment"]["status"], "off", "{answer}");
    assert_eq!(chain.balance(wallet.address()).unwrap(), 100 * TON, "no channel was deployed");
    for node in [client, free, boot] {
        node.shutdown().await.unwrap();
    }
}
