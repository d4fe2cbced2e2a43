// The official TON SDK against `cocoon chain serve`: @ton/ton's TonClient (pinned in
// package.json) over the JSON-RPC endpoint reads a payment channel (balance, contract state,
// transactions, its get_channel_state get-method) and sends a wallet v5r1 transfer, checking each
// answer against what tests/ton_sdk.rs, which runs this script, passes in the environment. Prints
// one JSON line with what it saw; any failed check throws (non-zero exit).
import assert from "node:assert/strict";
import { Address, Cell, SendMode, TonClient, WalletContractV5R1, internal } from "@ton/ton";
import { keyPairFromSeed } from "@ton/crypto";

function env(name) {
    const value = process.env[name];
    if (value === undefined || value === "") throw new Error(`${name} is not set`);
    return value;
}

const client = new TonClient({ endpoint: env("TON_ENDPOINT"), timeout: 10000 });
const channel = Address.parse(env("CHANNEL"));
const worker = Address.parse(env("WORKER"));
const recipient = Address.parse(env("RECIPIENT"));
const amount = BigInt(env("AMOUNT"));
const out = {};

// Balance and contract state (getAddressInformation).
out.channel_balance = (await client.getBalance(channel)).toString();
assert.equal(out.channel_balance, env("CHANNEL_BALANCE"), "channel balance");
const state = await client.getContractState(channel);
assert.equal(state.state, "active", "channel state");
assert.ok(state.code && state.data, "channel code and data");
assert.equal(Cell.fromBoc(state.code)[0].hash().toString("hex"), env("CHANNEL_CODE_HASH"), "code hash");
assert.equal(Cell.fromBoc(state.data)[0].hash().toString("hex"), env("CHANNEL_DATA_HASH"), "data hash");
assert.ok(state.lastTransaction, "channel has a last transaction");
assert.equal(await client.isContractDeployed(channel), true);

// Transactions, newest first; every one found again by its (lt, hash), paging from one.
const txs = await client.getTransactions(channel, { limit: 10 });
assert.ok(txs.length >= 2, `at least deploy and claim, got ${txs.length}`);
assert.equal(txs[0].lt.toString(), state.lastTransaction.lt, "last transaction lt");
assert.equal(txs[0].hash().toString("base64"), state.lastTransaction.hash, "last transaction hash");
for (let i = 0; i < txs.length; i++) {
    const tx = txs[i];
    if (i > 0) assert.ok(tx.lt < txs[i - 1].lt, "newest first");
    const again = await client.getTransaction(channel, tx.lt.toString(), tx.hash().toString("base64"));
    assert.ok(again, `transaction ${tx.lt} found by lt and hash`);
    assert.ok(again.hash().equals(tx.hash()));
    assert.equal(tx.inMessage?.info.type, "internal", "the channel is driven by internal messages");
}
const claim = txs[0];
assert.ok(claim.inMessage.info.src.equals(worker), "the claim came from the worker");
assert.ok(claim.outMessages.size >= 1, "the claim paid out");
const from = { lt: txs[0].lt.toString(), hash: txs[0].hash().toString("base64") };
const rest = await client.getTransactions(channel, { limit: 10, ...from });
assert.equal(rest.length, txs.length - 1, "paging leaves out the starting transaction");
assert.ok(rest[0].hash().equals(txs[1].hash()));
const inclusive = await client.getTransactions(channel, { limit: 10, ...from, inclusive: true });
assert.equal(inclusive.length, txs.length, "an inclusive page starts at it");
out.transactions = txs.length;

// The channel's state getter (runGetMethod).
const run = await client.runMethod(channel, "get_channel_state");
out.deposited = run.stack.readBigNumber().toString();
out.claimed = run.stack.readBigNumber().toString();
assert.equal(out.deposited, env("DEPOSITED"), "deposited");
assert.equal(out.claimed, env("CLAIMED"), "claimed");

// A wallet v5r1 transfer: its fee estimated, then sent, then seen on the recipient.
const key = keyPairFromSeed(Buffer.from(env("WALLET_SEED"), "hex"));
const wallet = client.open(WalletContractV5R1.create({ workchain: 0, publicKey: key.publicKey }));
assert.ok(wallet.address.equals(Address.parse(env("WALLET_ADDRESS"))), "wallet address");
out.seqno_before = await wallet.getSeqno();
assert.equal(out.seqno_before, Number(env("WALLET_SEQNO")), "seqno");
const before = await client.getBalance(recipient);
const transfer = {
    seqno: out.seqno_before,
    secretKey: key.secretKey,
    timeout: (await client.getContractState(wallet.address)).timestampt + 60,
    sendMode: SendMode.PAY_GAS_SEPARATELY | SendMode.IGNORE_ERRORS,
    messages: [internal({ to: recipient, value: amount, bounce: false })],
};
const body = wallet.createTransfer(transfer);
const estimate = await client.estimateExternalMessageFee(wallet.address, {
    body, initCode: null, initData: null, ignoreSignature: false,
});
out.fees = estimate.source_fees;
assert.ok(out.fees.gas_fee > 0 && out.fees.in_fwd_fee > 0 && out.fees.fwd_fee > 0, "fees estimated");
await wallet.sendTransfer(transfer);
const deadline = Date.now() + 30000;
let after = before;
while (after < before + amount) {
    assert.ok(Date.now() < deadline, `recipient balance still ${after} after 30 s`);
    await new Promise((resolve) => setTimeout(resolve, 100));
    after = await client.getBalance(recipient);
}
out.recipient_balance = after.toString();
out.seqno_after = await wallet.getSeqno();
assert.equal(out.seqno_after, out.seqno_before + 1, "seqno advanced");
out.masterchain_seqno = (await client.getMasterchainInfo()).latestSeqno;
console.log(JSON.stringify(out));
