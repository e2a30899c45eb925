//! Golden IR tests, in the style of Cranelift's filetests: each `tests/golden/NAME.nn` says in
//! its first comment lines what to run, and `NAME.expected` beside it holds the printed IR and
//! the fold report that run must produce.
//!
//! Directives (comment lines at the top of the file):
//!   `# fold: MODE`            run the default pipeline for MODE (none, adjacent, paper, egraph)
//!   `# pipeline: a,b,c`       run exactly these passes
//!   `# model: PATH`           the model is PATH (relative to the repository root) instead of
//!                             the golden file itself, e.g. one of the examples
//!
//! After an intended change, regenerate the expectations and review the diff:
//!   BLESS=1 cargo test --test golden
//!
//! Every case is also checked numerically: the transformed model must compute what the
//! parsed one computes (reference interpreter, seeded random input).

mod common;

use std::path::{Path, PathBuf};

use bnc::ir::{Tensor, interp, printer};
use bnc::passes::{self, FoldMode, PassContext, PrintAfter};

/// Largest error allowed, relative to the largest output magnitude.
const REL_TOLERANCE: f32 = 1e-5;

fn fold_mode(name: &str) -> FoldMode {
    FoldMode::from_name(name)
        .unwrap_or_else(|| panic!("unknown fold mode `{name}` in a golden test"))
}

/// The value of a `# key: value` directive in the file's first comment lines.
fn directive<'a>(source: &'a str, key: &str) -> Option<&'a str> {
    source
        .lines()
        .take_while(|l| l.starts_with('#') || l.trim().is_empty())
        .find_map(|l| {
            l.trim_start_matches('#')
                .trim()
                .strip_prefix(key)?
                .strip_prefix(':')
        })
        .map(str::trim)
}

/// The pass names a golden file asks for.
fn directives(source: &str, path: &Path) -> Vec<String> {
    for line in source
        .lines()
        .take_while(|l| l.starts_with('#') || l.trim().is_empty())
    {
        let line = line.trim_start_matches('#').trim();
        if let Some(list) = line.strip_prefix("pipeline:") {
            return list
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
        }
        if let Some(mode) = line.strip_prefix("fold:") {
            return passes::default_pipeline(fold_mode(mode.trim()))
                .into_iter()
                .map(String::from)
                .collect();
        }
    }
    panic!(
        "{}: no `# fold:` or `# pipeline:` directive in the first comment lines",
        path.display()
    );
}

fn seeded(shape: &[usize], seed: usize) -> Tensor {
    let n = shape.iter().product::<usize>();
    Tensor::new(
        shape.to_vec(),
        (0..n)
            .map(|i| (((i + seed) * 7919 % 2003) as f32 / 1001.5) - 1.0)
            .collect(),
    )
}

fn run_case(path: &Path) -> Result<(), String> {
    let source = std::fs::read_to_string(path).unwrap();
    let names = directives(&source, path);
    let model = match directive(&source, "model") {
        Some(rel) => common::root().join(rel),
        None => path.to_path_buf(),
    };
    let original = common::load(&model);
    let mut graph = original.clone();
    let pipeline = passes::resolve(&names.iter().map(String::as_str).collect::<Vec<_>>())?;
    let mut ctx = PassContext::default();
    passes::run_pipeline(
        &mut graph,
        &pipeline,
        &mut ctx,
        &PrintAfter::Never,
        &mut |_, _| {},
    )
    .map_err(|e| e.to_string())?;
    graph.verify().map_err(|e| e.to_string())?;
    ctx.report.measure(&original, &graph);

    // Numerical equivalence with the parsed model.
    let inputs: Vec<Tensor> = original
        .inputs
        .iter()
        .enumerate()
        .map(|(i, &v)| seeded(original.shape(v), i))
        .collect();
    let want = interp::run(&original, &inputs).map_err(|e| e.to_string())?;
    let got = interp::run(&graph, &inputs).map_err(|e| e.to_string())?;
    for (w, g) in want.iter().zip(&got) {
        let err = w.max_abs_diff(g);
        if err > REL_TOLERANCE * w.max_abs().max(1e-6) {
            return Err(format!(
                "output differs from the parsed model by {err} (max |y| = {})",
                w.max_abs()
            ));
        }
    }

    let report: String = ctx
        .report
        .to_text()
        .lines()
        .map(|l| format!("# {l}\n"))
        .collect();
    let actual = format!("{}\n# ----- report -----\n{report}", printer::print(&graph));
    let expected_path = path.with_extension("expected");
    if std::env::var_os("BLESS").is_some() {
        std::fs::write(&expected_path, &actual).unwrap();
        return Ok(());
    }
    let expected = std::fs::read_to_string(&expected_path).map_err(|e| {
        format!(
            "{}: {e} (run with BLESS=1 to create it)",
            expected_path.display()
        )
    })?;
    if expected != actual {
        return Err(format!(
            "output differs from {} (BLESS=1 cargo test --test golden to accept):\n{}",
            expected_path.display(),
            line_diff(&expected, &actual)
        ));
    }
    Ok(())
}

/// The first differing lines, enough to see what changed.
fn line_diff(expected: &str, actual: &str) -> String {
    let (e, a): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
    let mut out = String::new();
    for i in 0..e.len().max(a.len()) {
        let (x, y) = (e.get(i).copied(), a.get(i).copied());
        if x != y {
            out += &format!(
                "line {}:\n  - {}\n  + {}\n",
                i + 1,
                x.unwrap_or("<none>"),
                y.unwrap_or("<none>")
            );
            if out.lines().count() > 30 {
                break;
            }
        }
    }
    out
}

#[test]
fn golden() {
    let dir = common::root().join("tests/golden");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "nn"))
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no golden cases in {}", dir.display());
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|case| {
            run_case(case)
                .err()
                .map(|e| format!("{}: {e}", case.display()))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} golden cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
