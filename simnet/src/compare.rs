//! The headline numbers of a run, and a side-by-side comparison of two runs.
//!
//! [`metrics`] is the one list of headline numbers: the Markdown summary shows it, [`compare`]
//! diffs it, and the determinism test checks that equal seeds give equal [`headline`]s. Sections a
//! scenario does not exercise (payments, adversaries, partition, churn) are still listed, marked
//! absent with no value, so two lists always line up row by row.

use std::fmt::Write as _;

use crate::report::{Dist, Report};

/// Relative change above which [`compare`] flags a row.
pub const FLAG_THRESHOLD: f64 = 0.05;

/// Bytes in a MiB.
const MIB: f64 = 1024.0 * 1024.0;

/// How a headline number is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// A whole number.
    Count,
    /// A share in `[0, 1]`: three decimals.
    Share,
    /// Seconds: two decimals.
    Secs,
    /// Milliseconds: one decimal below 10 ms, none above.
    Ms,
    /// MiB: two decimals.
    MiB,
    /// A ratio such as rounds or transmissions per delivery: two decimals.
    Ratio,
    /// Nanotons: a whole number.
    Nanotons,
    /// A yes/no flag stored as 1/0.
    YesNo,
}

impl Unit {
    /// `value` formatted for a table cell.
    pub fn format(self, value: f64) -> String {
        match self {
            Self::Count | Self::Nanotons => format!("{value:.0}"),
            Self::Share => format!("{value:.3}"),
            Self::Secs | Self::MiB | Self::Ratio => format!("{value:.2}"),
            Self::Ms if value.abs() < 10.0 => format!("{value:.1}"),
            Self::Ms => format!("{value:.0}"),
            Self::YesNo if value >= 0.5 => "yes".to_string(),
            Self::YesNo => "no".to_string(),
        }
    }

    /// A difference `delta` formatted with an explicit sign.
    fn format_delta(self, delta: f64) -> String {
        match self {
            Self::YesNo if delta == 0.0 => "0".to_string(),
            Self::YesNo => "changed".to_string(),
            _ if delta > 0.0 => format!("+{}", self.format(delta)),
            _ => self.format(delta),
        }
    }
}

/// The part of a report a headline number comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// Always measured.
    Core,
    /// Only when the scenario pays.
    Payments,
    /// Only when the scenario has sybils or forgers.
    Attacks,
    /// Only when the scenario splits the network.
    Partition,
    /// Only when nodes leave and return.
    Churn,
    /// Only when malicious clients and workers ran (or the attack-free twin).
    Strangers,
}

/// One headline number.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    /// Name, with its unit where it has one.
    pub name: &'static str,
    /// The value; `None` when the run has no data for it (no samples, or the section is absent).
    pub value: Option<f64>,
    /// How to show it.
    pub unit: Unit,
    /// Where it comes from.
    pub section: Section,
    /// Whether the run exercised `section` at all.
    pub present: bool,
}

impl Metric {
    /// The value formatted for a table cell, `—` when absent.
    pub fn display(&self) -> String {
        self.value.map_or_else(|| "—".to_string(), |v| self.unit.format(v))
    }
}

/// Collects metrics section by section.
struct Rows {
    rows: Vec<Metric>,
    section: Section,
    present: bool,
}

impl Rows {
    fn section(&mut self, section: Section, present: bool) {
        self.section = section;
        self.present = present;
    }

    fn add(&mut self, name: &'static str, unit: Unit, value: Option<f64>) {
        let value = if self.present { value.filter(|v| !v.is_nan()) } else { None };
        self.rows.push(Metric { name, value, unit, section: self.section, present: self.present });
    }
}

/// `pick(dist) * scale`, or `None` when `dist` has no samples.
fn dist(d: &Dist, pick: fn(&Dist) -> f64, scale: f64) -> Option<f64> {
    (d.count > 0).then(|| pick(d) * scale)
}

fn p50(d: &Dist) -> f64 {
    d.p50
}

fn p99(d: &Dist) -> f64 {
    d.p99
}

/// Every headline number of `report`, in display order.
pub fn metrics(r: &Report) -> Vec<Metric> {
    use Unit::*;
    let mut m = Rows { rows: Vec::with_capacity(56), section: Section::Core, present: true };
    let (join, lookup, gossip, req) = (&r.join, &r.lookup, &r.gossip, &r.requests);

    m.add("nodes", Count, Some(r.nodes.values().sum::<usize>() as f64));
    m.add("wall time (s)", Secs, Some(r.resources.wall_secs));
    m.add("CPU (s)", Secs, Some(r.resources.cpu_secs));
    m.add("memory per node (MiB)", MiB, Some(r.resources.memory_per_node_bytes as f64 / MIB));
    m.add("join time p50 (s)", Secs, dist(&join.time, p50, 1e-3));
    m.add("join time p99 (s)", Secs, dist(&join.time, p99, 1e-3));
    m.add("nodes joined", Count, Some(join.joined as f64));
    m.add("nodes started", Count, Some(join.started as f64));
    m.add("routing healthy share", Share, Some(r.routing.healthy_share));
    let looked = lookup.queries > 0;
    m.add("lookup recall mean", Share, looked.then_some(lookup.recall_mean));
    m.add("lookup hops p50 (replayed)", Ratio, dist(&lookup.hops, p50, 1.0));
    m.add("lookup hops p99 (replayed)", Ratio, dist(&lookup.hops, p99, 1.0));
    m.add("lookups never reaching the key", Count, looked.then_some(lookup.hops_unreached as f64));
    m.add("lookup rounds p50 (replayed)", Ratio, dist(&lookup.replay_rounds, p50, 1.0));
    m.add("lookup requests p50", Count, dist(&lookup.requests, p50, 1.0));
    m.add("lookup latency p50 (ms)", Ms, dist(&lookup.latency_ms, p50, 1.0));
    m.add("lookup latency p99 (ms)", Ms, dist(&lookup.latency_ms, p99, 1.0));
    let gossiped = gossip.records > 0 && gossip.receivers > 0;
    m.add("gossip coverage", Share, gossiped.then_some(gossip.coverage));
    m.add("gossip p99 coverage time (ms)", Ms, gossip.p99_coverage_ms);
    m.add("gossip latency p50 (ms)", Ms, dist(&gossip.latency_ms, p50, 1.0));
    m.add("gossip latency p99 (ms)", Ms, dist(&gossip.latency_ms, p99, 1.0));
    let tpd = (gossip.messages_unique > 0).then_some(gossip.transmissions_per_delivery);
    m.add("transmissions per delivery", Ratio, tpd);
    m.add("request success rate", Share, (req.sent > 0).then_some(req.success_rate));
    m.add("requests sent", Count, Some(req.sent as f64));
    m.add("requests succeeded", Count, Some(req.succeeded as f64));
    m.add("TTFT p50 (ms)", Ms, dist(&req.ttft_ms, p50, 1.0));
    m.add("TTFT p99 (ms)", Ms, dist(&req.ttft_ms, p99, 1.0));
    m.add("failovers", Count, Some(req.failovers as f64));
    m.add("worker DHT lookups (found)", Count, Some(req.worker_lookups.0 as f64));
    m.add("worker DHT lookups (not found)", Count, Some(req.worker_lookups.1 as f64));

    let pay = r.payments.clone().unwrap_or_default();
    m.section(Section::Payments, r.payments.is_some());
    m.add("invoiced (nanotons)", Nanotons, Some(pay.invoiced_nanotons as f64));
    m.add("signed by clients (nanotons)", Nanotons, Some(pay.signed_nanotons as f64));
    m.add("vouchered (nanotons)", Nanotons, Some(pay.vouchered_nanotons as f64));
    m.add("owed to workers (nanotons)", Nanotons, Some(pay.owed_nanotons as f64));
    m.add("claimed (nanotons)", Nanotons, Some(pay.claimed_nanotons as f64));
    m.add("payments reconciled", YesNo, Some(if pay.reconciled { 1.0 } else { 0.0 }));
    m.add("chain tx per request", Ratio, Some(pay.transactions_per_request));
    m.add("paying clients", Count, Some(pay.paying_clients as f64));
    m.add("channels per paying client", Ratio, Some(pay.channels_per_client));
    m.add("client chain operations per request", Ratio, Some(pay.client_operations_per_request));
    m.add(
        "client chain operations per client per 10 min",
        Ratio,
        Some(pay.client_operations_per_client_per_10_min),
    );

    let att = &r.attacks;
    m.section(Section::Attacks, att.sybils + att.forgers > 0);
    m.add("sybil workers", Count, Some(att.sybils as f64));
    m.add("forgers", Count, Some(att.forgers as f64));
    m.add("forged records published", Count, Some(att.forged_published as f64));
    m.add("forged records rejected", Count, Some(att.forged_rejected as f64));
    m.add("invalid records relayed", Count, Some(att.rejected_relayed as f64));

    let part = r.partition.clone().unwrap_or_default();
    m.section(Section::Partition, r.partition.is_some());
    m.add("partition minority share", Share, Some(part.minority_share));
    m.add("connections cut", Count, Some(part.connections_cut as f64));
    m.add("lookup recall while split", Share, Some(part.recall_during));
    m.add("lookup recall after healing", Share, Some(part.recall_after));
    m.add("cross-side known after", Share, Some(part.cross_known_after));
    m.add("reconnect after healing (ms)", Ms, part.reconnect_ms);

    let churn = r.churn.clone().unwrap_or_default();
    m.section(Section::Churn, r.churn.is_some());
    m.add("departures", Count, Some(churn.departures as f64));
    m.add("returns", Count, Some(churn.returns as f64));
    let live_min = churn.live_over_time.iter().map(|&(_, v)| v).reduce(f64::min);
    m.add("live nodes (min)", Count, live_min);

    let st = r.strangers.clone().unwrap_or_default();
    m.section(Section::Strangers, r.strangers.is_some());
    m.add("honest success (honest worker known)", Share, Some(st.honest_success_rate));
    m.add("honest TTFT p50 / attack-free twin", Ratio, st.ttft_p50_ratio);
    m.add("honest peers blocked", Count, Some(st.honest_blocked.len() as f64));
    m.add(
        "strangers blocked (node, peer pairs)",
        Count,
        Some(st.strangers_blocked.values().sum::<usize>() as f64),
    );
    m.rows
}

/// The named headline numbers of `report` (absent sections and empty samples give `None`).
pub fn headline(report: &Report) -> Vec<(String, Option<f64>)> {
    metrics(report).into_iter().map(|m| (m.name.to_string(), m.value)).collect()
}

/// The first 12 characters of a plan digest, or `none`.
pub fn short_digest(digest: &str) -> String {
    if digest.is_empty() { "none".to_string() } else { digest.chars().take(12).collect() }
}

/// Relative change from `a` to `b`: `None` when infinite (`a` is 0 and `b` is not).
fn relative(a: f64, b: f64) -> Option<f64> {
    if a == b {
        Some(0.0)
    } else if a == 0.0 {
        None
    } else {
        Some((b - a) / a.abs())
    }
}

/// Whether the change from `a` to `b` deserves a flag.
fn flagged(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => relative(a, b).is_none_or(|rel| rel.abs() > FLAG_THRESHOLD),
        (None, None) => false,
        _ => true,
    }
}

/// A Markdown comparison of run `a` against run `b`: which runs, whether their plans are the
/// same, and every headline number side by side with its change. Rows whose value moved by more
/// than [`FLAG_THRESHOLD`] (or appeared, or vanished) end their name with ` *`.
pub fn compare(a: &Report, b: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Comparison: {} vs {}\n", a.scenario, b.scenario);
    for (label, r) in [("A", a), ("B", b)] {
        let _ = writeln!(
            out,
            "- {label}: scenario `{}`, seed {}, plan `{}`, build `{}`",
            r.scenario,
            r.seed,
            short_digest(&r.plan_digest),
            r.build
        );
    }
    let plans = if a.plan_digest.is_empty() || b.plan_digest.is_empty() {
        "unknown (a report has no plan digest)"
    } else if a.plan_digest == b.plan_digest {
        "identical (same digest)"
    } else {
        "different (digests differ)"
    };
    let _ = writeln!(out, "- Plans: {plans}\n");
    let _ = writeln!(
        out,
        "Rows marked `*` changed by more than {:.0} %, appeared or vanished.\n",
        FLAG_THRESHOLD * 100.0
    );
    out.push_str("| metric | A | B | Δ | Δ% |\n|---|---:|---:|---:|---:|\n");
    for (ma, mb) in metrics(a).iter().zip(metrics(b).iter()) {
        if !ma.present && !mb.present {
            continue;
        }
        let (delta, pct) = match (ma.value, mb.value) {
            (Some(x), Some(y)) => {
                let pct = match (ma.unit, relative(x, y)) {
                    (Unit::YesNo, _) | (_, None) => "—".to_string(),
                    (_, Some(rel)) => format!("{:+.1} %", rel * 100.0),
                };
                (ma.unit.format_delta(y - x), pct)
            }
            _ => ("—".to_string(), "—".to_string()),
        };
        let flag = if flagged(ma.value, mb.value) { " *" } else { "" };
        let _ =
            writeln!(out, "| {}{flag} | {} | {} | {delta} | {pct} |", ma.name, ma.display(), mb.display());
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::report::{Dist, PaymentStats};

    fn sample() -> Report {
        let mut r = Report {
            scenario: "small".into(),
            seed: 7,
            plan_digest: "ab".repeat(32),
            build: "test".into(),
            ..Report::default()
        };
        r.nodes.insert("worker".into(), 4);
        r.join.started = 4;
        r.join.joined = 4;
        r.join.times_ms = vec![100.0, 200.0, 300.0, 400.0];
        r.join.time = Dist::of(&r.join.times_ms);
        r.requests.sent = 100;
        r.requests.succeeded = 98;
        r.requests.success_rate = 0.98;
        r
    }

    /// Table rows (skipping the header and separator).
    fn rows(text: &str) -> Vec<&str> {
        text.lines().filter(|l| l.starts_with('|')).skip(2).collect()
    }

    #[test]
    fn identical_reports_flag_nothing() {
        let out = compare(&sample(), &sample());
        assert!(out.contains("identical"));
        let rows = rows(&out);
        assert!(rows.len() > 10);
        assert!(rows.iter().all(|l| !l.contains('*')), "{out}");
    }

    #[test]
    fn changed_success_rate_is_flagged() {
        let mut b = sample();
        b.requests.succeeded = 80;
        b.requests.success_rate = 0.80;
        let out = compare(&sample(), &b);
        let row = rows(&out).into_iter().find(|l| l.contains("request success rate")).unwrap();
        assert!(row.contains("request success rate *"), "{row}");
        assert!(row.contains("-0.180"), "{row}");
        assert!(row.contains("-18.4 %"), "{row}");
        // An unchanged row next to it stays unflagged.
        let sent = rows(&out).into_iter().find(|l| l.contains("requests sent")).unwrap();
        assert!(!sent.contains('*'), "{sent}");
    }

    #[test]
    fn absent_sections_are_hidden_and_appearing_ones_flagged() {
        let a = sample();
        assert!(!compare(&a, &a).contains("invoiced"));
        let mut b = sample();
        b.payments = Some(PaymentStats { invoices: 3, invoiced_nanotons: 300, ..Default::default() });
        let out = compare(&a, &b);
        let row = rows(&out).into_iter().find(|l| l.contains("invoiced")).unwrap();
        assert!(row.contains('*') && row.contains("| — | 300 |"), "{row}");
    }

    #[test]
    fn headline_is_stable_in_shape() {
        let a = headline(&Report::default());
        let b = headline(&sample());
        assert_eq!(a.len(), b.len());
        assert!(a.iter().zip(&b).all(|(x, y)| x.0 == y.0));
        let join = b.iter().find(|(n, _)| n == "join time p50 (s)").unwrap();
        assert_eq!(join.1, Some(0.2));
    }

    #[test]
    fn units_format() {
        assert_eq!(Unit::Ms.format(3.26), "3.3");
        assert_eq!(Unit::Ms.format(123.6), "124");
        assert_eq!(Unit::Share.format(0.98765), "0.988");
        assert_eq!(Unit::YesNo.format(1.0), "yes");
        assert_eq!(Unit::Count.format_delta(3.0), "+3");
    }
}
