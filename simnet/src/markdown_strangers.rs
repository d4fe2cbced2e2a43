//! The strangers section of the Markdown summary: the scenario's checks (pass/fail), honest
//! requests against the attack-free twin, blocks, what each malicious client and worker got, and
//! money per party.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::report::{MoneyStats, StrangerStats};

/// The section for `s`, appended to `out`.
pub fn section(out: &mut String, s: &StrangerStats) {
    out.push_str("\n## Strangers\n\n| check | target | measured | result |\n|---|---|---|---|\n");
    for c in &s.checks {
        let verdict = if c.pass { "**PASS**" } else { "**FAIL**" };
        let _ = writeln!(out, "| {} | {} | {} | {verdict} |", c.name, c.target, c.value);
    }
    honest(out, s);
    let _ = writeln!(out, "\n**Malicious nodes:** {}.", pairs(&s.strangers));
    if !s.honest_blocked.is_empty() {
        let list: Vec<String> = s
            .honest_blocked
            .iter()
            .map(|b| format!("{} #{} blocked {} #{}", b.node_kind, b.node, b.peer_kind, b.peer))
            .collect();
        let _ = writeln!(out, "\n**Honest peers blocked:** {}.", list.join("; "));
    }
    let _ = writeln!(
        out,
        "\n**Malicious peers blocked by honest nodes** (node, peer pairs): {}.",
        pairs(&s.strangers_blocked)
    );
    tallies(out, "Malicious clients: what they tried and how they were answered", &s.clients);
    tallies(out, "Malicious workers: what they got and did", &s.workers);
    match &s.money {
        Some(m) => money(out, m),
        None => out.push_str("\nMoney: payments are off in this scenario (workers.price_per_1k = 0).\n"),
    }
}

fn honest(out: &mut String, s: &StrangerStats) {
    out.push_str("\n| honest requests | this run | attack-free twin |\n|---|---:|---:|\n");
    let twin = s.twin.as_ref();
    let cell = |v: Option<String>| v.unwrap_or_else(|| "—".into());
    let rows = [
        (
            "counted (an honest worker known)",
            s.honest_requests.to_string(),
            twin.map(|t| t.requests.to_string()),
        ),
        ("succeeded", s.honest_succeeded.to_string(), twin.map(|t| t.succeeded.to_string())),
        (
            "success rate",
            format!("{:.3}", s.honest_success_rate),
            twin.map(|t| format!("{:.3}", t.success_rate)),
        ),
        ("TTFT p50 (ms)", format!("{:.0}", s.ttft_ms.p50), twin.map(|t| format!("{:.0}", t.ttft_ms.p50))),
        ("TTFT p90 (ms)", format!("{:.0}", s.ttft_ms.p90), twin.map(|t| format!("{:.0}", t.ttft_ms.p90))),
        ("TTFT p99 (ms)", format!("{:.0}", s.ttft_ms.p99), twin.map(|t| format!("{:.0}", t.ttft_ms.p99))),
        ("completed after a failover", s.failed_over.to_string(), twin.map(|t| t.failed_over.to_string())),
        (
            "TTFT p50, first worker tried (ms)",
            format!("{:.0}", s.ttft_first_try_ms.p50),
            twin.map(|t| format!("{:.0}", t.ttft_first_try_ms.p50)),
        ),
        (
            "honest peers blocked",
            s.honest_blocked.len().to_string(),
            twin.map(|t| t.honest_blocked.to_string()),
        ),
    ];
    for (name, here, there) in rows {
        let _ = writeln!(out, "| {name} | {here} | {} |", cell(there));
    }
    let _ = writeln!(
        out,
        "\nLeft out (no honest worker known when sent): {}. Failed honest requests by the last worker tried: {}. Completed by a malicious worker: {}.",
        s.honest_without_worker,
        pairs(&s.failures_by_worker),
        s.served_by_strangers
    );
}

fn pairs<V: std::fmt::Display>(map: &BTreeMap<String, V>) -> String {
    if map.is_empty() {
        return "none".into();
    }
    map.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
}

fn tallies(out: &mut String, title: &str, all: &BTreeMap<String, BTreeMap<String, u64>>) {
    if all.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n{title}:\n\n| kind | event | count |\n|---|---|---:|");
    for (kind, events) in all {
        for (event, n) in events {
            let _ = writeln!(out, "| {kind} | {event} | {n} |");
        }
    }
}

fn money(out: &mut String, m: &MoneyStats) {
    out.push_str("\n| party | money (nanotons) |\n|---|---:|\n");
    let rows: [(&str, String); 10] = [
        ("honest clients → honest workers (signed)", m.honest_clients_to_honest.to_string()),
        ("honest clients → malicious workers (signed)", m.honest_clients_to_strangers.to_string()),
        (
            "honest clients: deposits in channels with malicious workers (locked, refundable)",
            format!("{} in {} channels", m.honest_deposits_with_strangers, m.honest_channels_with_strangers),
        ),
        ("honest workers: vouchered by honest clients", m.honest_workers_vouchered.to_string()),
        ("honest workers: claimed on chain", m.honest_workers_claimed.to_string()),
        ("honest workers: owed by honest clients", m.honest_workers_owed_by_honest.to_string()),
        ("honest workers: owed by malicious clients", m.honest_workers_owed_by_strangers.to_string()),
        (
            "honest workers: vouchered by malicious clients",
            m.honest_workers_vouchered_by_strangers.to_string(),
        ),
        ("malicious clients: channel deposits", m.strangers_deposited.to_string()),
        ("malicious workers: voucher frames received", m.strangers_vouchers.to_string()),
    ];
    for (party, value) in rows {
        let _ = writeln!(out, "| {party} | {value} |");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Check;

    #[test]
    fn checks_tallies_and_missing_money_are_shown() {
        let mut s = StrangerStats { honest_requests: 10, honest_succeeded: 9, ..StrangerStats::default() };
        s.checks = vec![
            Check { name: "a".into(), target: "≥ 1".into(), value: "2".into(), pass: true },
            Check { name: "b".into(), target: "0".into(), value: "1".into(), pass: false },
        ];
        s.clients.insert("silent_client".into(), BTreeMap::from([("attempts".to_owned(), 3)]));
        let mut out = String::new();
        section(&mut out, &s);
        assert!(out.contains("| a | ≥ 1 | 2 | **PASS** |"), "{out}");
        assert!(out.contains("| b | 0 | 1 | **FAIL** |"), "{out}");
        assert!(out.contains("| silent_client | attempts | 3 |"), "{out}");
        assert!(out.contains("| counted (an honest worker known) | 10 | — |"), "{out}");
        assert!(out.contains("payments are off"), "{out}");
    }
}
