//! `GET /payments` on the admin endpoint: the node's payment channels as its store records them
//! (worker side: deposits, vouchers held, claimed, unclaimed, a claim in flight; client side:
//! deposits, signed, remaining) and the clients that left requests unpaid (worker side), so an
//! operator sees earnings, exposure and losses while the node runs.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cocoon_protocol::payments::ledger::ClientChannel;
use serde_json::{Value, json};

use super::admin::AdminState;
use crate::store::{PaymentBook, StoreError};

/// The handler.
pub async fn payments(State(state): State<AdminState>) -> Response {
    let Some(book) = state.payments.clone() else {
        return (StatusCode::NOT_FOUND, Json(json!({"error": "payments are off on this node"})))
            .into_response();
    };
    match tokio::task::spawn_blocking(move || report(&book)).await {
        Ok(Ok(body)) => Json(body).into_response(),
        Ok(Err(e)) => {
            (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"error": e.to_string()}))).into_response()
        }
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"error": e.to_string()}))).into_response(),
    }
}

/// The report, from the store.
pub fn report(book: &PaymentBook) -> Result<Value, StoreError> {
    let (mut unclaimed, mut claimed) = (0u64, 0u64);
    let mut worker = Vec::new();
    for stored in book.channels()? {
        let c = &stored.channel;
        unclaimed += c.unclaimed();
        claimed += c.chain.claimed;
        let pending = book.claim(&c.address)?.map(|e| {
            json!({"cumulative_nanotons": e.cumulative, "seqno": e.seqno, "wallet_seqno": e.wallet_seqno, "sent_at": e.sent_at})
        });
        worker.push(json!({
            "address": c.address.to_string(),
            "client_key": hex::encode(c.params.client_key),
            "deposited_nanotons": c.chain.deposited,
            "voucher_cumulative_nanotons": c.cumulative(),
            "voucher_seqno": c.seqno(),
            "claimed_nanotons": c.chain.claimed,
            "unclaimed_nanotons": c.unclaimed(),
            "closing": c.chain.close_started_at != 0,
            "closes_at": c.chain.closes_at(),
            "last_voucher_at": stored.last_voucher_at,
            "pending_claim": pending,
        }));
    }
    let client_json = |c: ClientChannel, retired: bool| {
        json!({
            "address": c.address.to_string(),
            "worker_key": hex::encode(c.params.worker_key),
            "worker_payout": c.params.worker.to_string(),
            "contract_version": c.code.as_u8(),
            "retired": retired,
            "deposited_nanotons": c.deposited,
            "owed_nanotons": c.owed,
            "signed_cumulative_nanotons": c.cumulative,
            "seqno": c.seqno,
            "remaining_nanotons": c.remaining(),
        })
    };
    let mut client: Vec<Value> = book.client_channels()?.into_iter().map(|c| client_json(c, false)).collect();
    client.extend(book.retired_channels()?.into_iter().map(|c| client_json(c, true)));
    let debts = book.debts()?;
    let owed: u64 = debts.iter().map(|(_, owed)| owed).sum();
    let debts: Vec<Value> = debts
        .into_iter()
        .map(|(client, owed)| json!({"client_key": hex::encode(client), "owed_nanotons": owed}))
        .collect();
    Ok(json!({
        "worker_channels": worker,
        "client_channels": client,
        "debts": debts,
        "totals": {"claimed_nanotons": claimed, "unclaimed_nanotons": unclaimed, "owed_nanotons": owed},
    }))
}
