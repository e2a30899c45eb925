//! Codegen filetests: each `codegen/filetests/*.nn` is planned for the configurations its
//! `# plan:` lines name, and the text of `--emit=plan` must equal the `.plan` file beside it.
//! A change of kernel path, tile, blocking, thread split or buffer layout is then a diff in
//! review. `BLESS=1 cargo test -p bnc-codegen --test filetests` rewrites the `.plan` files.
//!
//! A configuration line reads `# plan: LEVEL [threads=N] [direct=off] [wide=off]
//! [fuse-affine=off]`. The model is planned as written (no folding passes), with random
//! weights, for [`CacheSizes::DEFAULT`], so the plan is the same on every machine.
//! `codegen/filetests/examples.txt` lists models of `examples/` planned the same way.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use bnc_codegen::{CacheSizes, Options, TargetCpu, plan_text};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("filetests")
}

/// The options a `# plan:` line asks for.
fn parse_config(line: &str, file: &Path) -> Options {
    let mut words = line.split_whitespace();
    let level: TargetCpu = words
        .next()
        .unwrap_or_else(|| panic!("{}: `# plan:` needs a level", file.display()))
        .parse()
        .unwrap();
    let mut options = Options {
        target_cpu: level,
        cache_sizes: Some(CacheSizes::DEFAULT),
        ..Options::default()
    };
    for w in words {
        match w.split_once('=') {
            Some(("threads", n)) => options.threads = n.parse().unwrap(),
            Some(("direct", "off")) => options.direct_conv = false,
            Some(("wide", "off")) => options.wide_gemm = false,
            Some(("fuse-affine", "off")) => options.fuse_affine = false,
            _ => panic!("{}: unknown plan option `{w}`", file.display()),
        }
    }
    options
}

/// The plans of `model` for every configuration of `configs`, one after another.
fn plans(model: &Path, configs: &[String]) -> String {
    let graph = bnc_frontend::load_file(model)
        .unwrap_or_else(|e| panic!("{} does not load: {e:?}", model.display()));
    let mut out = String::new();
    for c in configs {
        let options = parse_config(c, model);
        let text = plan_text(&graph, &options)
            .unwrap_or_else(|e| panic!("{}: `{c}` does not plan: {e}", model.display()));
        let _ = write!(out, "; plan: {c}\n{text}\n");
    }
    out
}

/// Compares `actual` with the file `expected`, or writes it under BLESS=1. Returns a
/// description of the mismatch.
fn check(expected: &Path, actual: &str) -> Option<String> {
    if std::env::var_os("BLESS").is_some() {
        std::fs::write(expected, actual).unwrap();
        return None;
    }
    let want = std::fs::read_to_string(expected).unwrap_or_default();
    if want == actual {
        return None;
    }
    let first = want
        .lines()
        .zip(actual.lines())
        .position(|(a, b)| a != b)
        .unwrap_or_else(|| want.lines().count().min(actual.lines().count()));
    Some(format!(
        "{}: differs from line {}:\n  expected: {}\n  actual:   {}",
        expected.display(),
        first + 1,
        want.lines().nth(first).unwrap_or("<end of file>"),
        actual.lines().nth(first).unwrap_or("<end of file>")
    ))
}

#[test]
fn plans_match_their_filetests() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "nn"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "filetests missing: {files:?}");
    let mut failures = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let configs: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# plan:"))
            .map(|c| c.trim().to_string())
            .collect();
        assert!(!configs.is_empty(), "{}: no `# plan:` line", file.display());
        failures.extend(check(&file.with_extension("plan"), &plans(file, &configs)));
    }
    // Whole example models, so that every decision on real shapes is pinned too.
    let list = std::fs::read_to_string(root().join("examples.txt")).unwrap();
    for line in list
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (name, config) = line.split_once(':').expect("`name: config`");
        let model = root().join("../../examples").join(format!("{name}.nn"));
        let expected = root().join(format!("example_{name}.plan"));
        failures.extend(check(
            &expected,
            &plans(&model, &[config.trim().to_string()]),
        ));
    }
    assert!(
        failures.is_empty(),
        "{} plan(s) changed (BLESS=1 to accept):\n{}",
        failures.len(),
        failures.join("\n")
    );
}
