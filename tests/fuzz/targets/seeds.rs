//! Hand-made seed inputs: for each target a few valid inputs that reach deep into its decoder
//! (signed with the targets' fixed keys, so they stay valid). `tests/fuzz_corpora.rs` checks
//! that the committed `seeds/NAME/seed-*` files are exactly these, and rewrites them when run
//! with `COCOON_FUZZ_WRITE_SEEDS=1`.

use cocoon::chain::local::{Clock, LocalChain};
use cocoon::chain::wallet::{Transfer, Wallet};
use cocoon::chain::{StackValue, TxSummary};
use cocoon::fuzzing;
use cocoon::store::{ClaimEntry, KnownPeer, StoredChannel};
use cocoon_protocol::attestation::binding::expected_report_data;
use cocoon_protocol::attestation::record::{
    AttestationRecord, ModelOffer, PaidTerms, PaymentTerms, SimulatedEvidence, TeeEvidence,
};
use cocoon_protocol::attestation::signed::{RECORD_DOMAIN, SignedRecord};
use cocoon_protocol::codec::Writer;
use cocoon_protocol::envelope::Envelope;
use cocoon_protocol::inference::messages::{
    ChatMessage, ClientFrame, ErrorCode, Event, FinishReason, Prompt, Request, ResponseFormat, Role,
    Sampling, ServerFrame, Shape, TokenLogprob, ToolCall, ToolCallDelta, ToolChoice, ToolSpec, TopLogprob,
};
use cocoon_protocol::inference::receipt::{RECEIPT_DOMAIN, Receipt, Usage};
use cocoon_protocol::payments::channel::{ChannelState, code};
use cocoon_protocol::payments::close::{CloseAnswer, CloseProposal};
use cocoon_protocol::payments::ledger::{ClientChannel, WorkerChannel};
use cocoon_protocol::payments::voucher::{CloseRequest, SignedVoucher, Voucher};
use num_bigint::BigInt;
use serde_json::json;
use tycho_types::boc::Boc;
use tycho_types::cell::{Cell, CellBuilder, HashBytes};
use tycho_types::models::StdAddr;

use super::input::{base64, ed25519_key, identity};
use super::protocol::{DEPOSIT, NOW, channel};

/// The seed inputs of `target` (empty for an unknown name).
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    match target {
        "request" => vec![request().encode(), text_request().encode()],
        "server_frame" => server_frames().iter().map(ServerFrame::encode).collect(),
        "client_frame" => {
            let frames = [ClientFrame::Voucher(voucher(1_000, 1).to_bytes()), ClientFrame::Voucher(vec![]), ClientFrame::Cancel];
            frames.iter().map(ClientFrame::encode).collect()
        }
        "signed_voucher" => vec![voucher(1_000, 1).to_bytes(), voucher(DEPOSIT + 1, 7).to_bytes()],
        "close_proposal" => vec![
            close(DEPOSIT / 2).encode(),
            close(DEPOSIT / 2 - 1).encode(),
            CloseAnswer::Signed([5; 64]).encode(),
            CloseAnswer::Refused("requests are in flight".into()).encode(),
        ],
        "channel_params" => {
            let mut w = Writer::new();
            channel().encode(&mut w);
            vec![w.finish()]
        }
        "envelope" => {
            let sealed = Envelope::seal(b"cocoon/fuzz/v1\0", b"hello".to_vec(), &identity(0)).expect("seal");
            vec![prefixed(0, &sealed.encode()), prefixed(1, b"hello"), vec![3]]
        }
        "receipt" => {
            let signed = receipt().sign(&identity(1)).expect("sign");
            let body = Envelope::open(RECEIPT_DOMAIN, &signed, 2048).expect("open").body().to_vec();
            vec![prefixed(0, &signed), prefixed(1, &body)]
        }
        "signed_record" => {
            let (simulated, tdx) = (record(true), record(false));
            let signed = SignedRecord::sign(simulated.clone(), &identity(1)).expect("sign").encode();
            let body = simulated.encode().expect("encode");
            let tdx_body = tdx.encode().expect("encode");
            let sealed = Envelope::seal(RECORD_DOMAIN, tdx_body.clone(), &identity(1)).expect("seal").encode();
            vec![prefixed(0, &signed), prefixed(1, &body), prefixed(0, &sealed), prefixed(1, &tdx_body)]
        }
        "attestation_record" => vec![record(true).encode().expect("encode"), record(false).encode().expect("encode")],
        "session" => sessions(),
        "quote" => vec![quote(4, 0x81), quote(5, 0x81), quote(4, 0)],
        "record_exchange" => {
            let signed = SignedRecord::sign(record(true), &identity(1)).expect("sign").encode();
            vec![vec![0], vec![1, 0], [&[1u8, 1][..], &signed].concat()]
        }
        "openai_chat" => vec![
            br#"{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hi"}]}],"stream":true,"stream_options":{"include_usage":true},"temperature":0.5,"top_p":0.9,"stop":"\n","max_tokens":64,"cocoon_max_price":1000,"n":1,"user":"someone"}"#.to_vec(),
            br#"{"model":"smollm2-135m-instruct","messages":[{"role":"developer","content":null},{"role":"assistant","content":"x"}],"max_completion_tokens":1,"stop":["a","b"],"tools":null}"#.to_vec(),
        ],
        "openai_completion" => vec![
            br#"{"model":"m","prompt":"once upon","max_tokens":5,"stop":["a"],"stream":false,"temperature":0}"#.to_vec(),
            br#"{"model":" m ","prompt":["x"],"cocoon_max_price":7,"top_p":1}"#.to_vec(),
        ],
        "toncenter_answer" => toncenter_answers(),
        "toncenter_stack" => {
            let stack: Vec<_> = stack_values().iter().map(fuzzing::serve_stack_entry).collect();
            vec![serde_json::to_vec(&stack).expect("json"), br#"["int", 26]"#.to_vec(), br#"["num", "-0X1A"]"#.to_vec()]
        }
        "chain_send_boc" => {
            let external = wallet_deploy().1;
            vec![prefixed(0, &Boc::encode(&external)), prefixed(1, json!({ "boc": Boc::encode_base64(&external) }).to_string().as_bytes())]
        }
        "store_payments" => store_payments(),
        "store_caches" => store_caches(),
        _ => Vec::new(),
    }
}

fn prefixed(first: u8, rest: &[u8]) -> Vec<u8> {
    [&[first][..], rest].concat()
}

fn request() -> Request {
    Request {
        request_id: [9; 16],
        model_id: format!("smollm2-135m-instruct@sha256:{}", "ab".repeat(32)),
        prompt: Prompt::Chat(vec![
            ChatMessage::text(Role::System, "be brief"),
            ChatMessage::text(Role::User, "Name three birds."),
            ChatMessage {
                role: Role::Assistant,
                content: String::new(),
                tool_calls: vec![ToolCall {
                    id: "call_0".into(),
                    name: "lookup".into(),
                    arguments: "{}".into(),
                }],
                tool_call_id: None,
            },
            ChatMessage { tool_call_id: Some("call_0".into()), ..ChatMessage::text(Role::Tool, "robin") },
        ]),
        max_tokens: 32,
        sampling: Sampling {
            temperature: Some(0.5),
            top_k: Some(4),
            stop: vec!["\n".into()],
            frequency_penalty: Some(0.2),
            ..Sampling::default()
        },
        shape: Shape {
            tools: vec![ToolSpec {
                name: "lookup".into(),
                description: "look a bird up".into(),
                parameters: r#"{"type":"object"}"#.into(),
            }],
            tool_choice: ToolChoice::Required,
            format: ResponseFormat::Text,
            logprobs: Some(2),
        },
        max_price: 1_000_000,
        channel: Some(channel()),
    }
}

fn text_request() -> Request {
    let sampling = Sampling { top_p: Some(0.9), ..Sampling::default() };
    let shape =
        Shape { format: ResponseFormat::JsonSchema(r#"{"type":"object"}"#.into()), ..Shape::default() };
    Request { prompt: Prompt::Text("once".into()), channel: None, sampling, shape, ..request() }
}

fn receipt() -> Receipt {
    Receipt {
        worker: identity(1).public().to_peer_id(),
        model_id: request().model_id,
        engine: "mistral.rs 0.8.1".into(),
        request_id: [9; 16],
        request_hash: [2; 32],
        response_hash: [3; 32],
        usage: Usage { prompt_tokens: 10, completion_tokens: 20 },
        price_prompt_per_1k: 1_000,
        price_completion_per_1k: 2_000,
        amount: 50,
        issued_at: NOW,
    }
}

fn server_frames() -> Vec<ServerFrame> {
    vec![
        ServerFrame::Event(Event::Text { text: "tok".into(), logprob: None }),
        ServerFrame::Event(Event::Text {
            text: "tok".into(),
            logprob: Some(TokenLogprob {
                chosen: TopLogprob { token: "tok".into(), logprob: -0.25 },
                top: vec![TopLogprob { token: "to".into(), logprob: -2.0 }],
            }),
        }),
        ServerFrame::Event(Event::ToolCall(ToolCallDelta {
            index: 0,
            id: "call_0".into(),
            name: "lookup".into(),
            arguments: "{\"bird\":".into(),
        })),
        ServerFrame::Done {
            finish_reason: FinishReason::Stop,
            receipt: receipt().sign(&identity(1)).expect("sign"),
        },
        ServerFrame::Error { code: ErrorCode::PaymentRequired, message: "deposit".into() },
        ServerFrame::Paid { cumulative: 5, seqno: 2 },
        ServerFrame::Unpaid { cumulative: 4, seqno: 1, message: "wrong amount".into() },
    ]
}

/// The fixed channel's client proposing to close it at `cumulative`.
fn close(cumulative: u64) -> CloseProposal {
    let close = CloseRequest { channel: channel().address().expect("address"), cumulative, seqno: 2 };
    let client_signature = close.sign(&ed25519_key(0)).expect("sign");
    CloseProposal { close, client_signature }
}

fn voucher(cumulative: u64, seqno: u64) -> SignedVoucher {
    let address = channel().address().expect("address");
    Voucher { channel: address, cumulative, seqno }.sign(&ed25519_key(0)).expect("sign")
}

/// A record of identity 1, with simulated evidence (signed by key 2, binding the record) or a
/// TDX quote (not a real one).
fn record(simulated: bool) -> AttestationRecord {
    let mut record = AttestationRecord {
        peer_id: identity(1).public().to_peer_id(),
        noise_static: [7; 32],
        payout_address: "UQBvI0aFLnw2QbZgjMPCLRdtRHxhUyinQudg6sdiohIwg5jL".into(),
        terms: PaymentTerms::Paid(PaidTerms {
            network: "local".into(),
            min_deposit: 1,
            min_dispute_window: 60,
            contract_version: 2,
        }),
        offers: vec![ModelOffer {
            model_id: request().model_id,
            price_prompt_per_1k: 1_000,
            price_completion_per_1k: 4_000,
            context_length: 8192,
            max_concurrent: 4,
        }],
        evidence: TeeEvidence::Tdx { quote: quote(4, 0x81) },
        gpus: vec![],
        issued_at: NOW - 100,
        expires_at: NOW + 3600,
    };
    if simulated {
        let evidence = SimulatedEvidence::create(&ed25519_key(2), expected_report_data(&record));
        record.evidence = TeeEvidence::Simulated(Box::new(evidence));
    }
    record
}

fn sessions() -> Vec<Vec<u8>> {
    let mut stream = Vec::new();
    for frame in [request().encode(), ClientFrame::Cancel.encode(), vec![]] {
        stream.extend_from_slice(&(frame.len() as u32).to_be_bytes());
        stream.extend_from_slice(&frame);
    }
    // Mode 0, frames up to 1,024 bytes; the stream in pieces of 100 bytes (the first rides the
    // handshake); then the same with the second transport message tampered with.
    let pieces: Vec<&[u8]> = stream.chunks(100).collect();
    let script = |tamper: &[u8]| {
        let mut out = vec![0, 128];
        out.extend_from_slice(tamper);
        out.push((pieces.len() - 1) as u8);
        for p in &pieces {
            out.push(p.len() as u8);
            out.extend_from_slice(p);
        }
        out
    };
    let too_large = [&[0u8, 1, 0, 0, 4][..], &1000u32.to_be_bytes(), b"x"].concat();
    vec![script(&[0]), script(&[0x82, 0, 9]), too_large, [&[1u8, 128, 0, 96][..], &[0xAB; 96]].concat()]
}

/// A quote shaped like a real one (header, TD report, auth data v4 with the QE report and an
/// embedded PCK chain) but signed by nobody: its certificate is a self-made stand-in with the
/// SGX extension, not Intel's.
fn quote(version: u16, tee_type: u32) -> Vec<u8> {
    const PCK_PEM: &str = include_str!("pck-stand-in.pem");
    let mut q = Vec::new();
    q.extend_from_slice(&version.to_le_bytes());
    q.extend_from_slice(&2u16.to_le_bytes()); // ECDSA P-256
    q.extend_from_slice(&tee_type.to_le_bytes());
    q.extend_from_slice(&[0; 4]); // QE and PCE SVN
    q.extend_from_slice(&[
        0x93, 0x9a, 0x72, 0x33, 0xf7, 0x9c, 0x4c, 0xa9, 0x94, 0x0a, 0x0d, 0xb3, 0x95, 0x7f, 0x06, 0x07,
    ]);
    q.extend_from_slice(&[0; 20]);
    let report_len = if tee_type == 0 { 384 } else { 584 };
    if version == 5 {
        q.extend_from_slice(&(if tee_type == 0 { 1u16 } else { 2u16 }).to_le_bytes());
        q.extend_from_slice(&(report_len as u32).to_le_bytes());
    }
    q.extend_from_slice(&vec![0x11; report_len]);
    let mut pck = 5u16.to_le_bytes().to_vec();
    pck.extend_from_slice(&(PCK_PEM.len() as u32).to_le_bytes());
    pck.extend_from_slice(PCK_PEM.as_bytes());
    let mut qe = vec![0x22; 384 + 64];
    qe.extend_from_slice(&32u16.to_le_bytes());
    qe.extend_from_slice(&[0x33; 32]);
    qe.extend_from_slice(&pck);
    let mut auth = vec![0x44; 64 + 64];
    auth.extend_from_slice(&6u16.to_le_bytes());
    auth.extend_from_slice(&(qe.len() as u32).to_le_bytes());
    auth.extend_from_slice(&qe);
    q.extend_from_slice(&(auth.len() as u32).to_le_bytes());
    q.extend_from_slice(&auth);
    q
}

/// A wallet funded on a fresh chain, and its signed deploy message.
fn wallet_deploy() -> (LocalChain, Cell) {
    let chain = LocalChain::new(Clock::Manual(NOW as u32)).expect("chain");
    let wallet = Wallet::from_seed(&[9; 32]).expect("wallet");
    chain.fund(wallet.address(), 5_000_000_000).expect("fund");
    let transfer = Transfer {
        to: StdAddr::new(0, HashBytes([4; 32])),
        value: 1_000_000_000,
        bounce: false,
        state_init: None,
        body: Cell::default(),
    };
    let message = wallet.transfer_message(0, true, NOW as u32 + 60, &[transfer]).expect("message");
    (chain, message)
}

fn transactions() -> Vec<TxSummary> {
    let (chain, message) = wallet_deploy();
    chain.execute(message).expect("the deploy runs")
}

fn stack_values() -> Vec<StackValue> {
    let code = code().expect("contract code");
    let mut b = CellBuilder::new();
    b.store_u32(0x7061_796f).expect("u32");
    vec![
        StackValue::Int(BigInt::from(26)),
        StackValue::Int(BigInt::from(-5)),
        StackValue::Int(BigInt::from(1u8) << 256),
        StackValue::Cell(code),
        StackValue::Slice(b.build().expect("cell")),
        StackValue::Null,
        StackValue::Other,
    ]
}

fn toncenter_answers() -> Vec<Vec<u8>> {
    let ok = |result: serde_json::Value| json!({ "ok": true, "result": result }).to_string();
    let txs: Vec<_> = transactions()
        .iter()
        .map(|t| json!({ "data": Boc::encode_base64(&t.cell), "transaction_id": { "lt": t.lt.to_string(), "hash": base64(t.hash.as_slice()) } }))
        .collect();
    let stack: Vec<_> = stack_values().iter().map(fuzzing::serve_stack_entry).collect();
    let block = json!({ "workchain": -1, "shard": "-9223372036854775808", "seqno": 3 });
    [
        (0, 0, ok(json!({ "balance": "123", "last_transaction_id": { "lt": "5", "hash": "" }, "state": "active" }))),
        (0, 0, ok(json!({ "balance": 0, "state": "uninitialized" }))),
        (1, 0, ok(json!({ "@type": "smc.runResult", "gas_used": 0, "stack": stack, "exit_code": 0 }))),
        (2, 0, ok(serde_json::Value::Array(txs))),
        (3, 0, ok(json!({ "last": block }))),
        (4, 0, ok(json!("1750000000"))),
        (0, 195, json!({ "ok": false, "error": "Ratelimit exceed", "code": 429 }).to_string()),
        (1, 196, json!({ "ok": false, "error": "LITE_SERVER_UNKNOWN: cannot apply external message", "code": 500 }).to_string()),
        (1, 192, json!({ "ok": false, "error": "Exit code -13", "code": 400 }).to_string()),
    ]
    .into_iter()
    .map(|(kind, status, body)| [&[kind, status][..], body.as_bytes()].concat())
    .collect()
}

fn store_payments() -> Vec<Vec<u8>> {
    let mut worker =
        WorkerChannel::new(channel(), ChannelState { deposited: DEPOSIT, ..ChannelState::default() })
            .expect("channel");
    worker.accept(voucher(1_000, 1));
    let stored = StoredChannel { channel: worker, last_voucher_at: NOW };
    let mut client = ClientChannel::new(channel(), DEPOSIT).expect("channel");
    (client.cumulative, client.seqno, client.owed) = (1_000, 1, 1_000);
    let record = fuzzing::store_encode_client(&client);
    let legacy = &record[..record.len() - 9];
    let claim = ClaimEntry { cumulative: 1_000, seqno: 1, wallet_seqno: 3, sent_at: NOW };
    vec![
        prefixed(0, &fuzzing::store_encode_channel(&stored)),
        prefixed(1, &record),
        prefixed(1, legacy),
        prefixed(2, &fuzzing::store_encode_claim(&claim)),
        [&[3u8][..], &[5; 32], &1_000u64.to_be_bytes()].concat(),
    ]
}

fn store_caches() -> Vec<Vec<u8>> {
    let peer_id = identity(1).public().to_peer_id();
    let addrs = ["/ip4/127.0.0.1/tcp/4001", "/ip6/::1/udp/4001/quic-v1", "/dns4/example.org/tcp/443/wss"];
    let peer = KnownPeer {
        peer_id,
        addrs: addrs.iter().map(|a| a.parse().expect("address")).collect(),
        last_seen: NOW,
    };
    let key = peer_id.to_bytes();
    let peer_seed =
        [&[0u8, key.len() as u8][..], &key, &fuzzing::store_encode_peer(&peer).expect("peer")].concat();
    let collateral: cocoon::attestation::tdx::Collateral = serde_json::from_value(json!({
        "pck_crl_issuer_chain": "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
        "root_ca_crl": "3082",
        "pck_crl": "3082",
        "tcb_info_issuer_chain": "",
        "tcb_info": r#"{"issueDate":"2025-06-19T10:16:03Z","nextUpdate":"2025-07-19T10:16:03Z","fmspc":"00906ED50000"}"#,
        "tcb_info_signature": "00",
        "qe_identity_issuer_chain": "",
        "qe_identity": r#"{"issueDate":"2025-06-19T10:16:03Z","nextUpdate":"2025-07-19T10:16:03.512Z"}"#,
        "qe_identity_signature": "00",
    }))
    .expect("collateral JSON");
    let collateral_seed =
        prefixed(1, &fuzzing::store_encode_collateral(&collateral, NOW).expect("collateral"));
    let model = [
        &[2u8][..],
        &4096u64.to_be_bytes(),
        &7u64.to_be_bytes(),
        &fuzzing::store_encode_model(4096, 7, &[8; 32]),
    ]
    .concat();
    vec![peer_seed, collateral_seed, model]
}
