//! Turning ONNX names (`/layer1/layer1.0/conv1/Conv_output_0`, `onnx::Conv_193`, `input.1`)
//! into `.nn` identifiers.

use std::collections::HashSet;

/// Words that stand for values in the language; a value is never named so. (Item keywords
/// such as `input` or `output` can name values.)
const RESERVED: &[&str] = &["true", "false", "inf"];

/// Whether `s` is an identifier of the language: `[A-Za-z_][A-Za-z0-9_]*` followed by
/// `.part`s of `[A-Za-z0-9_]+`, and not a reserved word.
pub fn is_identifier(s: &str) -> bool {
    let mut parts = s.split('.');
    let first = parts.next().unwrap_or("");
    let word = |p: &str| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    word(first)
        && !first.starts_with(|c: char| c.is_ascii_digit())
        && parts.all(word)
        && !RESERVED.contains(&s)
}

/// `name` made into an identifier: other characters become `_`, runs of `_` shrink, empty
/// parts disappear, and a leading digit or reserved word gets a prefix.
pub fn identifier(name: &str) -> String {
    if is_identifier(name) {
        return name.to_string();
    }
    let mut parts: Vec<String> = Vec::new();
    for part in name.split('.') {
        let mut p = String::new();
        for c in part.chars() {
            let c = if c.is_ascii_alphanumeric() { c } else { '_' };
            if c == '_' && p.ends_with('_') {
                continue;
            }
            p.push(c);
        }
        let p = p.trim_matches('_').to_string();
        if !p.is_empty() {
            parts.push(p);
        }
    }
    let mut id = parts.join(".");
    if id.is_empty() {
        id = "v".to_string();
    }
    if id.starts_with(|c: char| c.is_ascii_digit()) || RESERVED.contains(&id.as_str()) {
        id.insert_str(0, "v_");
    }
    id
}

/// A readable value name for an ONNX value name. PyTorch's exporter names values after the
/// module path and the operator (`/layer1/layer1.0/conv1/Conv_output_0`); those become the
/// dotted module path and the operator (`layer1.0.conv1.conv`). Other names are sanitised
/// with [`identifier`].
pub fn value_name(name: &str) -> String {
    let Some(rest) = name.strip_prefix('/') else {
        return identifier(name);
    };
    let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
    let Some((last, modules)) = parts.split_last() else {
        return identifier(name);
    };
    let mut path = String::new();
    for m in modules {
        if path.is_empty() || m.starts_with(&format!("{path}.")) {
            path = m.to_string();
        } else {
            path = format!("{path}.{m}");
        }
    }
    let (op, index) = match last.rsplit_once("_output_") {
        Some((op, "0")) => (op, String::new()),
        Some((op, k)) => (op, format!("_{k}")),
        None => (*last, String::new()),
    };
    let op = match op {
        "BatchNormalization" => "batchnorm".to_string(),
        "GlobalAveragePool" => "global_avgpool".to_string(),
        "AveragePool" => "avgpool".to_string(),
        other => other.to_lowercase(),
    } + &index;
    let full = if path.is_empty() {
        op
    } else if path.rsplit('.').next() == Some(op.as_str()) {
        path // `/relu/Relu_output_0` → `relu`
    } else {
        format!("{path}.{op}")
    };
    identifier(&full)
}

/// `base`, or `base_1`, `base_2`, ... whichever is not taken.
pub fn fresh(base: &str, taken: &HashSet<String>) -> String {
    if !taken.contains(base) {
        return base.to_string();
    }
    (1..)
        .map(|i| format!("{base}_{i}"))
        .find(|n| !taken.contains(n))
        .expect("some suffix is free")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitises() {
        assert_eq!(identifier("layer1.0.conv1"), "layer1.0.conv1");
        assert_eq!(identifier("input.1"), "input.1");
        assert_eq!(
            identifier("/layer1/layer1.0/conv1/Conv_output_0"),
            "layer1_layer1.0_conv1_Conv_output_0"
        );
        assert_eq!(identifier("onnx::Conv_193"), "onnx_Conv_193");
        assert_eq!(identifier("123"), "v_123");
        assert_eq!(identifier("input"), "input");
        assert_eq!(identifier("inf"), "v_inf");
        assert_eq!(identifier(""), "v");
        assert!(is_identifier(&identifier("a..b//c")));
        assert_eq!(
            value_name("/layer1/layer1.0/conv1/Conv_output_0"),
            "layer1.0.conv1.conv"
        );
        assert_eq!(
            value_name("/features/features.0/features.0.0/Conv_output_0"),
            "features.0.0.conv"
        );
        assert_eq!(value_name("/Flatten_output_0"), "flatten");
        assert_eq!(
            value_name("/layer1/layer1.0/relu/Relu_output_0"),
            "layer1.0.relu"
        );
        assert_eq!(
            value_name("/bn1/BatchNormalization_output_0"),
            "bn1.batchnorm"
        );
        assert_eq!(value_name("/a/Split_output_1"), "a.split_1");
        assert_eq!(value_name("logits"), "logits");
    }
}
