//! The codegen crate's module structure (docs/design.md §4): the planner and the
//! microkernel contract are target-independent, everything that knows x86 sits under
//! `isa/x64/`, and the top-level modules import each other without cycles. Read from the
//! sources, so a change that breaks the layering fails here rather than in review.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, with its path relative to `src/`.
fn sources(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(sources(&p));
        } else if p.extension().is_some_and(|e| e == "rs") {
            let rel = p
                .strip_prefix(src())
                .unwrap()
                .to_string_lossy()
                .into_owned();
            out.push((rel, std::fs::read_to_string(&p).unwrap()));
        }
    }
    out.sort();
    out
}

/// The top-level module a file belongs to (`plan/select.rs` -> `plan`); `lib.rs` is the
/// crate root, which only re-exports and drives.
fn module_of(rel: &str) -> String {
    let first = rel.split('/').next().unwrap();
    first.trim_end_matches(".rs").to_string()
}

/// Top-level modules named in `crate::x` paths of `text` (code only, not comments).
fn crate_refs(text: &str) -> BTreeSet<String> {
    let mut refs = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap();
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if name.starts_with(|c: char| c.is_ascii_lowercase()) {
                refs.insert(name);
            } else if !name.is_empty() {
                // `crate::Type` goes through the root's re-exports, which hides the module.
                refs.insert(format!("<root re-export {name}>"));
            }
        }
    }
    refs
}

#[test]
fn modules_import_each_other_without_cycles() {
    let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (rel, text) in sources(&src()) {
        if rel == "lib.rs" {
            continue;
        }
        let m = module_of(&rel);
        let refs = crate_refs(&text);
        for r in &refs {
            assert!(
                !r.starts_with('<'),
                "{rel}: names {r}; import from the defining module instead, so the layering \
                 stays visible"
            );
        }
        deps.entry(m.clone())
            .or_default()
            .extend(refs.into_iter().filter(|r| *r != m));
    }
    // Depth-first search for a cycle.
    fn visit(
        m: &str,
        deps: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if let Some(at) = path.iter().position(|p| p == m) {
            panic!("import cycle: {} -> {m}", path[at..].join(" -> "));
        }
        if done.contains(m) {
            return;
        }
        path.push(m.to_string());
        for d in deps.get(m).into_iter().flatten() {
            visit(d, deps, path, done);
        }
        path.pop();
        done.insert(m.to_string());
    }
    let mut done = BTreeSet::new();
    for m in deps.keys() {
        visit(m, &deps, &mut Vec::new(), &mut done);
    }
    // The planner sees targets only through TargetCaps and the neutral contract.
    for neutral in ["plan", "ukernel", "target"] {
        let d = &deps[neutral];
        for banned in ["isa", "lower", "runtime"] {
            assert!(!d.contains(banned), "`{neutral}` imports `{banned}`: {d:?}");
        }
    }
}

#[test]
fn only_the_x64_layer_knows_x86() {
    for (rel, text) in sources(&src()) {
        let x86 = [
            "iced_x86",
            "Isa::Avx",
            "x86_64::",
            "is_x86_feature_detected",
            "cpuid",
        ];
        let in_x64 = rel.starts_with("isa/x64/") || rel == "testing.rs";
        for word in x86 {
            let code: String = text
                .lines()
                .map(|l| l.split("//").next().unwrap())
                .collect::<Vec<_>>()
                .join("\n");
            assert!(
                in_x64 || !code.contains(word),
                "{rel} uses `{word}`: x86 code belongs under isa/x64/"
            );
        }
    }
}
