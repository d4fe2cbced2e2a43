//! The fuzz corpora on the stable toolchain: every committed input of every cargo-fuzz target
//! (`tests/fuzz/seeds/NAME/`, the hand-made seeds and the minimised corpus, and the crashes found,
//! `tests/fuzz/regressions/NAME/`), plus a local working corpus (`tests/fuzz/corpus/NAME/`, not
//! committed) when there is one, runs through the same target body the fuzzer runs
//! (`tests/fuzz/targets/`). So a decoder that regresses on an input the fuzzer once reached fails
//! `cargo test`. It also checks that the target list, the fuzz crate's one-line targets and the
//! corpus folders agree (a renamed target cannot silently stop being replayed), and that the
//! hand-made seeds are committed as generated (`COCOON_FUZZ_WRITE_SEEDS=1` rewrites them).

#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
#[path = "common/chain.rs"]
mod chain;
#[path = "common/differential.rs"]
mod differential;
#[allow(dead_code)]
#[path = "fuzz/targets/mod.rs"]
mod targets;

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::path::{Path, PathBuf};

use targets::TARGETS;

/// The one target whose body is not in `targets/`: the payment channel's differential harness
/// (`tests/common/differential.rs`, also `tests/payments_property.rs`). Its inputs take about a
/// second each, so only its seeds and regressions are replayed, never a local corpus.
const DIFFERENTIAL: &str = "channel_differential";

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz")
}

/// The files in `dir`, sorted (none if it does not exist).
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file()).collect())
        .unwrap_or_default();
    out.sort();
    out
}

/// Run `target` on every file, naming the file whose input fails.
fn replay(name: &str, target: impl Fn(&[u8]), inputs: &[PathBuf]) {
    for path in inputs {
        let data = std::fs::read(path).unwrap();
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| target(&data))) {
            eprintln!("fuzz target {name} fails on {}", path.display());
            resume_unwind(panic);
        }
    }
}

/// The committed inputs of `name`: its seeds (which must exist) and its regressions.
fn committed(name: &str) -> Vec<PathBuf> {
    let seeds = files(&fuzz_dir().join("seeds").join(name));
    assert!(!seeds.is_empty(), "tests/fuzz/seeds/{name} is missing or empty: every target keeps a corpus");
    let mut inputs = seeds;
    inputs.extend(files(&fuzz_dir().join("regressions").join(name)));
    inputs
}

#[test]
fn every_committed_input_replays_through_its_target() {
    let mut total = 0;
    for &(name, target) in TARGETS {
        let mut inputs = committed(name);
        inputs.extend(files(&fuzz_dir().join("corpus").join(name)));
        replay(name, target, &inputs);
        total += inputs.len();
    }
    eprintln!("{total} inputs of {} targets replayed", TARGETS.len());
}

#[test]
fn the_channel_differential_seeds_and_regressions_replay() {
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let run = |data: &[u8]| {
        runtime.block_on(differential::run(data));
    };
    replay(DIFFERENTIAL, run, &committed(DIFFERENTIAL));
}

#[test]
fn target_list_fuzz_crate_and_corpus_folders_agree() {
    let dir = fuzz_dir();
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
    let names: Vec<&str> = TARGETS.iter().map(|(n, _)| *n).chain([DIFFERENTIAL]).collect();
    for &(name, _) in TARGETS {
        let source = std::fs::read_to_string(dir.join("fuzz_targets").join(format!("{name}.rs")))
            .unwrap_or_else(|_| {
                panic!("fuzz_targets/{name}.rs is missing: run tests/fuzz/new-target.sh {name}")
            });
        assert!(
            source.contains(&format!("cocoon_fuzz::{name}(data)")),
            "fuzz_targets/{name}.rs calls another body"
        );
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "tests/fuzz/Cargo.toml has no [[bin]] {name}"
        );
    }
    for folder in ["fuzz_targets", "seeds", "regressions"] {
        for entry in std::fs::read_dir(dir.join(folder)).into_iter().flatten() {
            let path = entry.unwrap().path();
            let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
            assert!(names.contains(&stem.as_str()), "{} belongs to no target", path.display());
        }
    }
}

#[test]
fn hand_made_seeds_are_committed_as_generated() {
    let write = std::env::var_os("COCOON_FUZZ_WRITE_SEEDS").is_some();
    for &(name, _) in TARGETS {
        let generated = targets::seeds::seeds(name);
        assert!(!generated.is_empty(), "no hand-made seeds for {name}");
        let dir = fuzz_dir().join("seeds").join(name);
        let committed: Vec<PathBuf> = files(&dir)
            .into_iter()
            .filter(|p| p.file_name().is_some_and(|f| f.to_string_lossy().starts_with("seed-")))
            .collect();
        if write {
            committed.iter().for_each(|p| std::fs::remove_file(p).unwrap());
            std::fs::create_dir_all(&dir).unwrap();
            for (i, seed) in generated.iter().enumerate() {
                std::fs::write(dir.join(format!("seed-{i:02}")), seed).unwrap();
            }
            continue;
        }
        let on_disk: Vec<Vec<u8>> = committed.iter().map(|p| std::fs::read(p).unwrap()).collect();
        assert!(
            on_disk == generated,
            "tests/fuzz/seeds/{name}/seed-* differ from tests/fuzz/targets/seeds.rs: \
             rewrite them with COCOON_FUZZ_WRITE_SEEDS=1 cargo test --test fuzz_corpora"
        );
    }
}
