//! The repository's example models load, verify, and print back to themselves.

use std::path::{Path, PathBuf};

fn example_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    paths.retain(|p| p.extension().is_some_and(|e| e == "nn"));
    paths.sort();
    paths
}

#[test]
fn examples_load_and_verify() {
    for path in example_files() {
        let g = bnc_frontend::load_file(&path)
            .unwrap_or_else(|e| panic!("{}:\n{}", path.display(), e.render(false)));
        g.verify()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(!g.params.is_empty(), "{}", path.display());
    }
}

#[test]
fn examples_print_back_to_the_same_graph() {
    for path in example_files() {
        let text = std::fs::read_to_string(&path).expect("readable");
        let g = bnc_frontend::lower_str(&text, "example.nn")
            .unwrap_or_else(|e| panic!("{}:\n{}", path.display(), e.render(false)));
        let printed = bnc_ir::printer::print(&g);
        let again = bnc_frontend::lower_str(&printed, "printed.nn")
            .unwrap_or_else(|e| panic!("{}:\n{}", path.display(), e.render(false)));
        assert_eq!(g, again, "{}", path.display());
    }
}
