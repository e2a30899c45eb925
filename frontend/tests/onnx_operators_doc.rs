//! `docs/onnx.md` lists the ONNX operators bnc imports. This test keeps that list equal to
//! what the importer accepts: the `onnx` names of the operator table's entries, and the
//! operators evaluated at import time on constants. Each row's bnc column must name exactly the
//! table entries that list its ONNX operator.

use std::collections::{BTreeMap, BTreeSet};

use bnc_frontend::onnx::EVALUATED_AT_IMPORT;
use bnc_ir::OpKind;

/// Rows of the table under "## Supported ONNX operators": ONNX name → bnc names.
fn documented() -> BTreeMap<String, BTreeSet<String>> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/onnx.md");
    let text = std::fs::read_to_string(path).expect("docs/onnx.md");
    let section = text
        .split("## Supported ONNX operators")
        .nth(1)
        .expect("a `## Supported ONNX operators` section");
    let ticked = |cell: &str| -> BTreeSet<String> {
        cell.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    };
    let mut rows = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').collect();
        let onnx = ticked(cells[1]);
        assert_eq!(onnx.len(), 1, "one ONNX operator per row: {line}");
        let name = onnx.into_iter().next().unwrap();
        let previous = rows.insert(name.clone(), ticked(cells[2]));
        assert!(previous.is_none(), "`{name}` has two rows");
    }
    rows
}

/// ONNX name → the table entries that import it.
fn accepted() -> BTreeMap<String, BTreeSet<String>> {
    let mut map: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for kind in OpKind::ALL {
        let info = kind.info();
        for onnx in info.onnx {
            map.entry(onnx.to_string())
                .or_default()
                .insert(info.name.to_string());
        }
    }
    for onnx in EVALUATED_AT_IMPORT {
        map.entry(onnx.to_string()).or_default();
    }
    map
}

#[test]
fn the_documented_onnx_operators_are_the_imported_ones() {
    let docs = documented();
    let code = accepted();
    let missing: Vec<_> = code.keys().filter(|k| !docs.contains_key(*k)).collect();
    let extra: Vec<_> = docs.keys().filter(|k| !code.contains_key(*k)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "docs/onnx.md is out of date: imported but not listed {missing:?}; listed but not imported {extra:?}"
    );
    let wrong: Vec<String> = code
        .iter()
        .filter(|(onnx, ops)| &docs[*onnx] != *ops)
        .map(|(onnx, ops)| format!("`{onnx}`: listed {:?}, the table says {ops:?}", docs[onnx]))
        .collect();
    assert!(
        wrong.is_empty(),
        "docs/onnx.md: each row must name the bnc operators whose table entry lists its ONNX operator:\n{}",
        wrong.join("\n")
    );
}
