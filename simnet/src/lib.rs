//! `cocoon-simnet`: many real cocoon nodes in one process over a simulated network, driven by
//! seeded scenarios, reporting JSON, Markdown and plots.
//!
//! `scenario` (TOML files) → `plan` (every seeded choice) → `run` (nodes on the `fabric`,
//! measured in phases) → `report` (with `markdown`, `plot` and `compare`).

pub mod compare;
pub mod fabric;
pub mod markdown;
pub mod markdown_strangers;
pub mod plan;
pub mod plot;
pub mod report;
pub mod run;
pub mod scenario;
