//! Prints a [`Graph`] in the `.nn` language. Every attribute is explicit, floats use the
//! shortest form that reads back to the same f64, and each binding carries its shape in a
//! trailing comment, so the text is both readable and parseable again.

use std::fmt::{self, Write};

use crate::{Graph, Op, WeightsSource};

/// The graph as `.nn` source text.
pub fn print(graph: &Graph) -> String {
    let mut out = String::new();
    write_graph(&mut out, graph).expect("writing to a String cannot fail");
    out
}

/// A string literal with `"` and `\` escaped.
pub fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    q
}

/// A float in the shortest form that parses back to the same value (`1e-5`, `6.0`, `-inf`).
pub fn float(v: f64) -> String {
    format!("{v:?}")
}

/// A shape as `[1, 3, 224, 224]`.
pub fn dims(shape: &[usize]) -> String {
    let parts: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

fn write_graph(out: &mut String, g: &Graph) -> fmt::Result {
    writeln!(out, "model {} {{", g.name)?;
    match &g.weights {
        WeightsSource::File(path) => writeln!(out, "  weights {}", quote(path))?,
        WeightsSource::Random { seed } => writeln!(out, "  weights random(seed = {seed})")?,
    }
    for &input in &g.inputs {
        let v = g.value(input);
        writeln!(out, "  input {}: f32{}", v.name, dims(&v.shape))?;
    }
    writeln!(out)?;
    for node in &g.nodes {
        let v = g.value(node.output);
        let mut args: Vec<String> = node
            .inputs
            .iter()
            .map(|&i| g.value(i).name.clone())
            .collect();
        args.extend(
            attributes(&node.op)
                .into_iter()
                .map(|(k, v)| format!("{k} = {v}")),
        );
        if let Some(prefix) = &node.params {
            args.push(format!("params = {}", quote(prefix)));
        }
        writeln!(
            out,
            "  {} = {}({})  # f32{}",
            v.name,
            node.op.name(),
            args.join(", "),
            dims(&v.shape)
        )?;
    }
    let outputs: Vec<&str> = g
        .outputs
        .iter()
        .map(|&o| g.value(o).name.as_str())
        .collect();
    writeln!(out, "  output {}", outputs.join(", "))?;
    writeln!(out, "}}")
}

/// The operator's attributes as `(key, printed value)`, in the order the table lists them.
pub fn attributes(op: &Op) -> Vec<(&'static str, String)> {
    op.attributes()
        .into_iter()
        .map(|(k, v)| (k, v.to_string()))
        .collect()
}
