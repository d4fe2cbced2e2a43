//! The Markdown summary of one run: what ran (scenario, seed, plan, build, nodes), the headline
//! numbers as a table, the notes a reader needs to interpret them, and the plots.
//!
//! The headline list itself lives in [`crate::compare::metrics`], so the summary, the comparison
//! of two runs and the determinism test all speak of the same numbers.

use std::fmt::Write as _;
use std::path::Path;

use crate::compare::{metrics, short_digest};
use crate::report::Report;

/// A Markdown summary of `report`, embedding each of `plots` (file names relative to the summary,
/// as returned by [`crate::plot::write_all`]).
pub fn summary(report: &Report, plots: &[String]) -> String {
    let mut out = String::new();
    let scenario = if report.scenario.is_empty() { "(unnamed)" } else { &report.scenario };
    let build = if report.build.is_empty() { "unknown" } else { &report.build };
    let _ = writeln!(out, "# Simnet run: {scenario}\n");
    let _ = writeln!(
        out,
        "Seed `{}` · plan `{}` · build `{build}`\n",
        report.seed,
        short_digest(&report.plan_digest)
    );
    let _ = writeln!(out, "**Nodes by role:** {}\n", roles(report));

    out.push_str("## Headline\n\n| metric | value |\n|---|---:|\n");
    for m in metrics(report).iter().filter(|m| m.present) {
        let _ = writeln!(out, "| {} | {} |", m.name, m.display());
    }
    if !report.requests.failures.is_empty() {
        let reasons: Vec<String> =
            report.requests.failures.iter().map(|(reason, n)| format!("{reason} {n}")).collect();
        let _ = writeln!(out, "\nRequest failures by reason: {}.", reasons.join(", "));
        for (reason, text) in &report.requests.failure_examples {
            let _ = writeln!(out, "- {reason}, e.g.: {text}");
        }
    }
    if !report.join.unjoined.is_empty() {
        let nodes: Vec<String> = report
            .join
            .unjoined
            .iter()
            .map(|u| {
                format!("{} #{} ({} in table, {} connected)", u.kind, u.node, u.routing_table, u.connected)
            })
            .collect();
        let _ = writeln!(out, "\nNot joined within the settle time: {}.", nodes.join(", "));
    }

    if let Some(strangers) = &report.strangers {
        crate::markdown_strangers::section(&mut out, strangers);
    }

    out.push_str("\n## Notes\n\n");
    if report.notes.is_empty() {
        out.push_str("No notes.\n");
    }
    for note in &report.notes {
        // A multi-line note stays inside its bullet.
        let _ = writeln!(out, "- {}", note.trim().replace('\n', "\n  "));
    }

    if !plots.is_empty() {
        out.push_str("\n## Plots\n\n");
        for file in plots {
            let name = Path::new(file).file_stem().and_then(|s| s.to_str()).unwrap_or(file);
            let _ = writeln!(out, "![{name}]({file})\n");
        }
    }
    out
}

/// `3 bootstrap · 40 worker (43 total)`, roles in the report's (sorted) order.
fn roles(report: &Report) -> String {
    if report.nodes.is_empty() {
        return "none".to_string();
    }
    let parts: Vec<String> = report.nodes.iter().map(|(role, n)| format!("{n} {role}")).collect();
    let total: usize = report.nodes.values().sum();
    format!("{} ({total} total)", parts.join(" · "))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::report::{AttackStats, ChurnStats, Dist, PaymentStats};

    fn sample() -> Report {
        let mut r = Report {
            scenario: "smoke".into(),
            seed: 42,
            plan_digest: "0123456789abcdef".repeat(4),
            build: "0.1.0 debug".into(),
            notes: vec!["lookup rounds are estimated".into()],
            ..Report::default()
        };
        r.nodes.insert("bootstrap".into(), 2);
        r.nodes.insert("worker".into(), 8);
        r.resources.memory_per_node_bytes = 3 * 1024 * 1024 / 2;
        r.lookup.queries = 10;
        r.lookup.recall_mean = 0.95;
        r.lookup.latency_ms = Dist::of(&[12.0, 15.0, 400.0]);
        r.requests.sent = 10;
        r.requests.succeeded = 9;
        r.requests.success_rate = 0.9;
        r.requests.failures.insert("timeout".into(), 1);
        r
    }

    fn row<'a>(text: &'a str, metric: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(&format!("| {metric} |")))
    }

    #[test]
    fn summary_has_title_headline_notes_and_plots() {
        let out = summary(&sample(), &["join.svg".to_string()]);
        assert!(out.starts_with("# Simnet run: smoke\n"));
        assert!(out.contains("Seed `42` · plan `0123456789ab` · build `0.1.0 debug`"));
        assert!(out.contains("2 bootstrap · 8 worker (10 total)"));
        assert_eq!(row(&out, "nodes"), Some("| nodes | 10 |"));
        assert_eq!(row(&out, "memory per node (MiB)"), Some("| memory per node (MiB) | 1.50 |"));
        assert_eq!(row(&out, "lookup recall mean"), Some("| lookup recall mean | 0.950 |"));
        assert_eq!(row(&out, "lookup latency p50 (ms)"), Some("| lookup latency p50 (ms) | 15 |"));
        assert_eq!(row(&out, "TTFT p50 (ms)"), Some("| TTFT p50 (ms) | — |"));
        assert!(out.contains("Request failures by reason: timeout 1."));
        assert!(out.contains("- lookup rounds are estimated"));
        assert!(out.contains("![join](join.svg)"));
    }

    #[test]
    fn optional_sections_appear_only_when_exercised() {
        let mut r = sample();
        let out = summary(&r, &[]);
        assert!(row(&out, "invoiced (nanotons)").is_none());
        assert!(row(&out, "forgers").is_none());
        assert!(row(&out, "departures").is_none());
        assert!(!out.contains("## Plots"));

        r.payments = Some(PaymentStats { invoiced_nanotons: 5, reconciled: true, ..Default::default() });
        r.attacks = AttackStats { forgers: 2, forged_published: 6, ..Default::default() };
        r.churn = Some(ChurnStats { departures: 3, returns: 2, live_over_time: vec![(0.0, 10.0)] });
        let out = summary(&r, &[]);
        assert_eq!(row(&out, "invoiced (nanotons)"), Some("| invoiced (nanotons) | 5 |"));
        assert_eq!(row(&out, "payments reconciled"), Some("| payments reconciled | yes |"));
        assert_eq!(row(&out, "forged records published"), Some("| forged records published | 6 |"));
        assert_eq!(row(&out, "departures"), Some("| departures | 3 |"));
        assert!(row(&out, "partition minority share").is_none());
    }

    #[test]
    fn empty_report_still_renders() {
        let out = summary(&Report::default(), &[]);
        assert!(out.contains("# Simnet run: (unnamed)"));
        assert!(out.contains("plan `none`"));
        assert!(out.contains("**Nodes by role:** none"));
        assert!(out.contains("No notes."));
    }
}
