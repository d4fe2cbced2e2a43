//! The official TON SDK against `cocoon::chain::serve`'s JSON-RPC endpoint on loopback:
//! `@ton/ton`'s `TonClient` (pinned with `@ton/core` and `@ton/crypto` in tests/ton/package.json)
//! runs in node (tests/ton/check.mjs) and reads a payment channel with a deposit and a claim
//! (balance, code and data, transactions, its state get-method), estimates and sends a wallet
//! v5r1 transfer, and waits for it to land; this test checks the chain afterwards. A second test
//! drives the JSON-RPC envelope and the methods `TonClient` does not use over plain HTTP.
//!
//! Needs `node` and `npm` on PATH: without them the SDK test fails and says so. It runs
//! `npm ci` in tests/ton when tests/ton/node_modules is missing (`.ci/run` does it beforehand).

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use cocoon::chain::local::{Clock, LocalChain};
use cocoon::chain::wallet::{Transfer, Wallet};
use cocoon::chain::{TxSummary, friendly};
use cocoon::payments::contract;
use cocoon_protocol::payments::voucher::Voucher;
use common::chain::{Party, Served, TON, params_between, serve_chain};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tycho_types::boc::Boc;
use tycho_types::cell::{Cell, CellBuilder, CellFamily, HashBytes};
use tycho_types::models::{AccountState, Message, StdAddr};

/// How long the node script may take (it makes a few dozen local requests).
const SCRIPT_LIMIT: Duration = Duration::from_secs(180);

async fn start(api_key: Option<&str>) -> Served {
    serve_chain(Clock::Wall { offset: 0 }, api_key).await
}

/// The signed external message sending `transfer` from `wallet` (deploying it if needed).
async fn signed(chain: &LocalChain, wallet: &Wallet, transfer: Transfer) -> Cell {
    let (seqno, deploy) = wallet.seqno(chain).await.unwrap();
    wallet.transfer_message(seqno, deploy, chain.now_secs() + 60, &[transfer]).unwrap()
}

async fn send(chain: &LocalChain, wallet: &Wallet, transfer: Transfer) -> Vec<TxSummary> {
    let txs = chain.execute(signed(chain, wallet, transfer).await).unwrap();
    assert!(txs[0].success, "the wallet's transaction failed: {txs:?}");
    txs
}

fn pay(to: &StdAddr, value: u64) -> Transfer {
    Transfer { to: to.clone(), value, bounce: false, state_init: None, body: Cell::empty_cell() }
}

fn seqno(chain: &LocalChain, wallet: &Wallet) -> u64 {
    chain.get_method(wallet.address(), "seqno").unwrap().u64_at(0).unwrap()
}

/// Hex hashes of the code and data of an active account.
fn code_and_data(chain: &LocalChain, addr: &StdAddr) -> (String, String) {
    let account = chain.shard_account(addr).unwrap().load_account().unwrap().unwrap();
    let AccountState::Active(init) = account.state else { panic!("{addr} is not active") };
    let hash = |c: Option<Cell>| hex::encode(c.unwrap().repr_hash().as_slice());
    (hash(init.code), hash(init.data))
}

fn tons_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ton")
}

async fn run_script(dir: &Path, env: &[(&str, String)]) -> Value {
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg("check.mjs").current_dir(dir).kill_on_drop(true);
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    let out = tokio::time::timeout(SCRIPT_LIMIT, cmd.output()).await.expect("check.mjs timed out").unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "check.mjs failed ({}):\n{stdout}\n{stderr}", out.status);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("check.mjs printed {line:?}: {e}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn ton_client_reads_a_channel_and_sends_a_wallet_transfer() {
    let dir = tons_dir();
    common::npm::ensure_packages(&dir, "node_modules/@ton/ton/package.json", "the @ton/ton npm package");
    let s = start(None).await;
    let (payer, worker) = (Party::new(51), Party::new(52));
    s.chain.fund(&payer.addr(), 100 * TON).unwrap();
    s.chain.fund(&worker.addr(), 10 * TON).unwrap();
    let params = params_between(&payer, &worker, 9);
    let ch = params.address().unwrap();
    send(&s.chain, &payer.wallet, contract::deploy(&params, 10 * TON, 1).unwrap()).await;
    let voucher = Voucher { channel: ch.clone(), cumulative: 3 * TON, seqno: 1 }.sign(&payer.key).unwrap();
    send(&s.chain, &worker.wallet, contract::claim(&voucher, 2).unwrap()).await;
    let st = contract::state(&*s.chain, &ch).await.unwrap().unwrap();
    assert_eq!((st.deposited, st.claimed), (10 * TON, 3 * TON));

    // The SDK's wallet: deployed by a first transfer from here, so its seqno comes from the chain.
    let seed = [0x5a; 32];
    let sdk = Wallet::from_seed(&seed).unwrap();
    s.chain.fund(sdk.address(), 5 * TON).unwrap();
    send(&s.chain, &sdk, pay(&worker.addr(), TON / 10)).await;
    assert_eq!(seqno(&s.chain, &sdk), 1);
    let recipient = StdAddr::new(0, HashBytes([0x77; 32]));
    assert_eq!(s.chain.balance(&recipient).unwrap(), 0);

    let (code, data) = code_and_data(&s.chain, &ch);
    let env = [
        ("TON_ENDPOINT", format!("{}/jsonRPC", s.url)),
        ("CHANNEL", friendly(&ch, true)),
        ("WORKER", friendly(&worker.addr(), true)),
        ("CHANNEL_BALANCE", s.chain.balance(&ch).unwrap().to_string()),
        ("CHANNEL_CODE_HASH", code),
        ("CHANNEL_DATA_HASH", data),
        ("DEPOSITED", st.deposited.to_string()),
        ("CLAIMED", st.claimed.to_string()),
        ("WALLET_SEED", hex::encode(seed)),
        ("WALLET_ADDRESS", friendly(sdk.address(), true)),
        ("WALLET_SEQNO", "1".to_owned()),
        ("RECIPIENT", friendly(&recipient, false)),
        ("AMOUNT", TON.to_string()),
    ];
    let seen = run_script(&dir, &env).await;

    assert!(seen["transactions"].as_u64().unwrap() >= 2, "{seen}");
    assert_eq!((&seen["seqno_before"], &seen["seqno_after"]), (&json!(1), &json!(2)), "{seen}");
    assert_eq!(seen["recipient_balance"], json!(TON.to_string()));
    // On the chain itself: the transfer landed in full and the wallet's seqno moved on.
    assert_eq!(s.chain.balance(&recipient).unwrap(), TON);
    assert_eq!(seqno(&s.chain, &sdk), 2);
    // The estimate was of the very transfer sent: its phases cost what the real one did.
    let tx = s.chain.history(sdk.address(), 1).unwrap().remove(0);
    let fees = tx.fees().unwrap();
    let estimate = &seen["fees"];
    assert_eq!((&estimate["gas_fee"], &estimate["fwd_fee"]), (&json!(fees.gas), &json!(fees.fwd)), "{seen}");
    assert_eq!(estimate["in_fwd_fee"], json!(fees.total - fees.storage - fees.gas - fees.action));
}

/// One JSON-RPC call with the API key: HTTP status and answer.
async fn rpc(s: &Served, id: Value, method: &str, params: Value) -> (StatusCode, Value) {
    let body = json!({ "id": id, "jsonrpc": "2.0", "method": method, "params": params });
    post(s, "jsonRPC", &body.to_string()).await
}

async fn post(s: &Served, path: &str, body: &str) -> (StatusCode, Value) {
    let http = reqwest::Client::new();
    let r = http.post(format!("{}/{path}", s.url)).header("X-API-Key", "sesame").body(body.to_owned());
    let r = r.send().await.unwrap();
    (r.status(), serde_json::from_slice(&r.bytes().await.unwrap()).unwrap())
}

async fn rest_get(s: &Served, query: &str) -> Value {
    let r = reqwest::get(format!("{}/{query}&api_key=sesame", s.url)).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    v["result"].clone()
}

/// `rpc` that must succeed: its result.
async fn result(s: &Served, method: &str, params: Value) -> Value {
    let (status, v) = rpc(s, json!("1"), method, params).await;
    assert_eq!(
        (status, &v["ok"], &v["jsonrpc"], &v["id"]),
        (StatusCode::OK, &json!(true), &json!("2.0"), &json!("1"))
    );
    v["result"].clone()
}

/// A refusal: its HTTP status, with the envelope's code the same and the id echoed.
async fn refusal(s: &Served, id: Value, method: &str, params: Value) -> u16 {
    let (status, v) = rpc(s, id.clone(), method, params).await;
    assert_eq!((&v["ok"], &v["code"], &v["id"]), (&json!(false), &json!(status.as_u16()), &id), "{v}");
    assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    status.as_u16()
}

fn body_of(message: &Cell) -> Cell {
    CellBuilder::build_from(message.parse::<Message<'_>>().unwrap().body).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn json_rpc_answers_every_method_in_toncenters_shapes() {
    let s = start(Some("sesame")).await;
    let party = Party::new(61);
    let (addr, other) = (party.addr(), StdAddr::new(0, HashBytes([0x66; 32])));
    let friendly_addr = friendly(&addr, true);
    s.chain.fund(&addr, 10 * TON).unwrap();
    send(&s.chain, &party.wallet, pay(&other, TON)).await;

    // Without the key: refused before anything else.
    let r = reqwest::Client::new().post(format!("{}/jsonRPC", s.url)).body("{}").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Account reads, the same over JSON-RPC and REST; numbers as strings, hashes in base64.
    let info = result(&s, "getAddressInformation", json!({ "address": friendly_addr })).await;
    let rest = rest_get(&s, &format!("getAddressInformation?address={friendly_addr}")).await;
    for field in ["balance", "state", "code", "data", "last_transaction_id", "extra_currencies"] {
        assert_eq!(info[field], rest[field], "{field}");
    }
    let last = s.chain.history(&addr, 1).unwrap().remove(0);
    assert_eq!(info["last_transaction_id"]["lt"], json!(last.lt.to_string()));
    let (code, data) = code_and_data(&s.chain, &addr);
    let hash_of =
        |field: &str| hex::encode(Boc::decode_base64(info[field].as_str().unwrap()).unwrap().repr_hash());
    assert_eq!((hash_of("code"), hash_of("data")), (code, data));
    assert_eq!((&info["state"], &info["block_id"]["@type"]), (&json!("active"), &json!("ton.blockIdExt")));
    let balance = s.chain.balance(&addr).unwrap().to_string();
    assert_eq!(result(&s, "getAddressBalance", json!({ "address": friendly_addr })).await, json!(balance));
    assert_eq!(rest_get(&s, &format!("getAddressState?address={addr}")).await, json!("active"));
    let none =
        result(&s, "getAddressInformation", json!({ "address": "0:".to_owned() + &"ab".repeat(32) })).await;
    assert_eq!(
        (&none["state"], &none["code"], &none["balance"]),
        (&json!("uninitialized"), &json!(""), &json!("0"))
    );
    assert_eq!(none["last_transaction_id"]["lt"], json!("0"));

    // Wallets are recognised by their code; the other account is no wallet.
    let w = result(&s, "getWalletInformation", json!({ "address": friendly_addr })).await;
    assert_eq!(
        (&w["wallet"], &w["wallet_type"], &w["seqno"]),
        (&json!(true), &json!("wallet v5 r1"), &json!(1))
    );
    assert_eq!(w["wallet_id"], json!(0x7FFF_FF11));
    let w = rest_get(&s, &format!("getWalletInformation?address={other}")).await;
    assert_eq!((&w["wallet"], &w["account_state"]), (&json!(false), &json!("uninitialized")));

    // Get-methods by name; arguments are refused.
    let run =
        result(&s, "runGetMethod", json!({ "address": friendly_addr, "method": "seqno", "stack": [] })).await;
    assert_eq!((&run["exit_code"], &run["stack"]), (&json!(0), &json!([["num", "0x1"]])));
    assert!(run["gas_used"].as_u64().unwrap() > 0, "{run}");
    let args = json!({ "address": friendly_addr, "method": "seqno", "stack": [["num", "1"]] });
    assert_eq!(refusal(&s, json!(2), "runGetMethod", args).await, 400);

    // estimateFee emulates without keeping anything; the real transfer then costs the same.
    let message = signed(&s.chain, &party.wallet, pay(&other, TON)).await;
    let body = Boc::encode_base64(body_of(&message));
    let params = json!({ "address": friendly_addr, "body": body, "init_code": "", "init_data": "", "ignore_chksig": false });
    let count = s.chain.transaction_count();
    let estimate = result(&s, "estimateFee", params).await;
    assert_eq!((s.chain.transaction_count(), seqno(&s.chain, &party.wallet)), (count, 1));
    let (status, sent) =
        post(&s, "sendBocReturnHash", &json!({ "boc": Boc::encode_base64(&message) }).to_string()).await;
    assert_eq!(status, StatusCode::OK, "{sent}");
    let hash = *message.repr_hash();
    assert_eq!(sent["result"]["hash"], json!(base64_of(&hash)));
    let fees = s.chain.history(&addr, 1).unwrap().remove(0).fees().unwrap();
    let source = &estimate["source_fees"];
    assert_eq!((&source["gas_fee"], &source["fwd_fee"]), (&json!(fees.gas), &json!(fees.fwd)), "{estimate}");
    // The same message again is not accepted (its seqno is used), so nothing can be estimated.
    let params = json!({ "address": friendly_addr, "body": body, "ignore_chksig": false });
    assert_eq!(refusal(&s, json!(3), "estimateFee", params).await, 400);

    // Transactions from (lt, hash) inclusive, the hash in hex and lt as a string, as @ton/ton sends.
    let history = s.chain.history(&addr, 10).unwrap();
    assert_eq!(history.len(), 2);
    let (lt, hash) = (history[0].lt.to_string(), hex::encode(history[0].hash.as_slice()));
    let page = result(
        &s,
        "getTransactions",
        json!({ "address": friendly_addr, "limit": 5, "lt": lt, "hash": hash }),
    )
    .await;
    let page = page.as_array().unwrap();
    assert_eq!(page.len(), 2);
    assert_eq!(page[0]["transaction_id"]["hash"], json!(base64_of(&history[0].hash)));
    let tx = &page[1];
    assert_eq!(tx["in_msg"]["source"], json!(""), "an external message has no source");
    assert_eq!(tx["out_msgs"][0]["destination"], json!(friendly(&other, true)));
    assert_eq!(tx["out_msgs"][0]["value"], json!(TON.to_string()));
    assert_eq!(tx["out_msgs"][0]["msg_data"]["@type"], json!("msg.dataRaw"));
    let fees = history[1].fees().unwrap();
    assert_eq!(
        (&tx["fee"], &tx["storage_fee"]),
        (&json!(fees.total.to_string()), &json!(fees.storage.to_string()))
    );
    let to_lt = json!({ "address": friendly_addr, "to_lt": history[1].lt });
    assert_eq!(result(&s, "getTransactions", to_lt).await.as_array().unwrap().len(), 1);

    // Blocks: the masterchain seqno counts transactions.
    let mc = result(&s, "getMasterchainInfo", json!({})).await;
    let seqno_now = mc["last"]["seqno"].clone();
    let header = json!({ "workchain": -1, "shard": "-9223372036854775808", "seqno": seqno_now });
    assert_eq!(result(&s, "getBlockHeader", header).await["id"]["seqno"], seqno_now);

    // Refusals: unknown method 422, bad parameters and bodies 400, the id echoed where known.
    assert_eq!(refusal(&s, json!(4), "getConfigParam", json!({})).await, 422);
    assert_eq!(refusal(&s, json!("x"), "getAddressInformation", json!({})).await, 400);
    assert_eq!(refusal(&s, json!(5), "getAddressInformation", json!(["EQ"])).await, 400);
    let bad_limit = json!({ "address": friendly_addr, "limit": 101 });
    assert_eq!(refusal(&s, json!(6), "getTransactions", bad_limit).await, 400);
    assert_eq!(refusal(&s, json!(7), "sendBoc", json!({ "boc": "bm90IGEgYm9j" })).await, 400);
    for body in ["{", "[1]", r#"{"id":8}"#] {
        let (status, v) = post(&s, "jsonRPC", body).await;
        assert_eq!(
            (status, &v["ok"], &v["code"]),
            (StatusCode::BAD_REQUEST, &json!(false), &json!(400)),
            "{v}"
        );
    }
}

fn base64_of(hash: &HashBytes) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(hash.as_slice())
}
