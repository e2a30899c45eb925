//! One test per kind of bad input: the message, its `line:col`, and a rendered report that
//! shows the source line.

mod common;

use common::{assert_error, error, error_in, f32_entry, ramp, temp_dir, write_safetensors};
use safetensors::Dtype;

/// A model whose body starts on line 4 (column 3 with the usual two-space indent).
fn model(body: &str) -> String {
    format!(
        "model m {{\n  weights random(seed = 1)\n  input x: f32[1, 3, 8, 8]\n{body}\n  output y\n}}\n"
    )
}

#[test]
fn valid_base_model_loads() {
    let src = model("  y = relu(x)");
    let g = common::load(&src).expect("valid model");
    assert_eq!(g.nodes.len(), 1);
}

#[test]
fn unknown_operator() {
    let src = model("  y = conv3d(x, out = 4, kernel = 3)");
    let e = error(&src);
    assert_error(&e, "unknown operator `conv3d`", 4, 7, &src);
    assert_eq!(e.help_text(), Some("did you mean `conv2d`?"));
}

#[test]
fn unknown_attribute_lists_valid_ones() {
    let src = model("  y = conv2d(x, out = 4, kernel = 3, strides = 2)");
    let e = error(&src);
    assert_error(&e, "unknown attribute `strides` for `conv2d`", 4, 38, &src);
    let help = e.help_text().expect("help");
    assert!(help.contains("stride") && help.contains("dilation") && help.contains("params"));
}

#[test]
fn missing_required_attribute() {
    let src = model("  y = conv2d(x, out = 4)");
    let e = error(&src);
    assert_error(
        &e,
        "`conv2d` is missing the required attribute `kernel`",
        4,
        13,
        &src,
    );
}

#[test]
fn wrong_value_type() {
    let src = model("  y = dense(x, out = 3.5)");
    let e = error(&src);
    assert_error(
        &e,
        "`out` expects an integer, found float `3.5`",
        4,
        22,
        &src,
    );

    let src = model("  y = conv2d(x, out = 4, kernel = 3, bias = 1)");
    let e = error(&src);
    assert_error(
        &e,
        "`bias` expects `true` or `false`, found integer `1`",
        4,
        45,
        &src,
    );

    let src = model("  y = conv2d(x, out = 4, kernel = [3, 3, 3])");
    let e = error(&src);
    assert_error(
        &e,
        "`kernel` expects an integer or a list `[h, w]`, found a list of 3 numbers",
        4,
        35,
        &src,
    );

    let src = model("  y = leaky_relu(x, alpha = true)");
    let e = error(&src);
    assert_error(
        &e,
        "`alpha` expects a number, found boolean `true`",
        4,
        29,
        &src,
    );
}

#[test]
fn negative_size_attribute() {
    let src = model("  y = conv2d(x, out = -4, kernel = 3)");
    let e = error(&src);
    assert_error(
        &e,
        "`out` expects a non-negative integer, found `-4`",
        4,
        23,
        &src,
    );
}

#[test]
fn wrong_arity() {
    let src = model("  y = add(x)");
    let e = error(&src);
    assert_error(&e, "`add` takes 2 inputs, found 1", 4, 10, &src);

    let src = model("  y = relu(x, x)");
    let e = error(&src);
    assert_error(&e, "`relu` takes 1 input, found 2", 4, 11, &src);
}

#[test]
fn add_shape_mismatch_shows_both_shapes() {
    let src = "model m {\n  weights random(seed = 1)\n  input a: f32[1, 16, 8, 8]\n  \
               input b: f32[1, 32, 8, 8]\n  y = add(a, b)\n  output y\n}\n";
    let e = error(src);
    assert_error(
        &e,
        "shape error in `y`: `add` needs equal shapes, got [1, 16, 8, 8] and [1, 32, 8, 8]",
        5,
        3,
        src,
    );
    let rendered = e.render(false);
    assert!(rendered.contains("`a` is f32[1, 16, 8, 8]"), "{rendered}");
    assert!(rendered.contains("`b` is f32[1, 32, 8, 8]"), "{rendered}");
}

#[test]
fn concat_of_mismatched_spatial_sizes() {
    let src = "model m {\n  weights random(seed = 1)\n  input a: f32[1, 4, 8, 8]\n  \
               input b: f32[1, 4, 4, 4]\n  y = concat(a, b)\n  output y\n}\n";
    let e = error(src);
    assert_error(
        &e,
        "shape error in `y`: `concat` inputs must agree on every axis but channels, \
         got [1, 4, 8, 8] and [1, 4, 4, 4]",
        5,
        3,
        src,
    );
}

#[test]
fn conv_kernel_too_large() {
    let src = model("  y = conv2d(x, out = 4, kernel = 9)");
    let e = error(&src);
    assert_error(
        &e,
        "shape error in `y`: kernel 9x9 (dilation 1x1) does not fit the padded input [1, 3, 8, 8]",
        4,
        3,
        &src,
    );
}

#[test]
fn undefined_name() {
    let src = model("  y = relu(z)");
    let e = error(&src);
    assert_error(&e, "undefined name `z`", 4, 12, &src);
}

#[test]
fn undefined_name_suggests_similar() {
    let src = model("  y = relu(xx)");
    let e = error(&src);
    assert_error(&e, "undefined name `xx`", 4, 12, &src);
    assert_eq!(e.help_text(), Some("did you mean `x`?"));
}

#[test]
fn use_before_definition_notes_the_later_definition() {
    let src = model("  y = relu(r)\n  r = relu(x)");
    let e = error(&src);
    assert_error(&e, "undefined name `r`", 4, 12, &src);
    let labels = e.secondary_labels();
    assert_eq!(labels.len(), 1);
    assert_eq!(&src[labels[0].span.clone()], "r");
    assert_eq!(labels[0].span.start, src.find("r = relu").unwrap());
    assert!(e.render(false).contains("defined here, after its use"));
}

#[test]
fn duplicate_name_shows_both_definitions() {
    let src = model("  y = relu(x)\n  y = relu(x)");
    let e = error(&src);
    assert_error(&e, "`y` is defined twice", 5, 3, &src);
    let labels = e.secondary_labels();
    assert_eq!(labels.len(), 1);
    assert_eq!(labels[0].span.start, src.find("y = relu").unwrap());
    let rendered = e.render(false);
    assert!(rendered.contains("first defined here"), "{rendered}");
    assert!(rendered.contains("defined again here"), "{rendered}");

    // An input clashing with a binding.
    let src = model("  x = relu(x)\n  y = relu(x)");
    let e = error(&src);
    assert_error(&e, "`x` is defined twice", 4, 3, &src);
}

#[test]
fn output_never_defined() {
    let src = "model m {\n  weights random(seed = 1)\n  input x: f32[1, 3]\n  \
               y = relu(x)\n  output y, z\n}\n";
    let e = error(src);
    assert_error(&e, "output `z` is never defined", 5, 13, src);
}

#[test]
fn missing_weights_line() {
    let src = "model m {\n  input x: f32[1, 3]\n  y = relu(x)\n  output y\n}\n";
    let e = error(src);
    assert_error(&e, "model `m` has no `weights` line", 1, 7, src);
}

#[test]
fn duplicate_weights_line() {
    let src = "model m {\n  weights random(seed = 1)\n  input x: f32[1, 3]\n  \
               weights \"w.safetensors\"\n  y = relu(x)\n  output y\n}\n";
    let e = error(src);
    assert_error(&e, "duplicate `weights` line", 4, 3, src);
    assert_eq!(e.secondary_labels().len(), 1);
}

#[test]
fn missing_input_and_output() {
    let src = "model m {\n  weights random(seed = 1)\n}\n";
    let e = error(src);
    assert_error(&e, "model `m` has no `input`", 1, 7, src);
    let src = "model m {\n  weights random(seed = 1)\n  input x: f32[1, 3]\n}\n";
    let e = error(src);
    assert_error(&e, "model `m` has no `output`", 1, 7, src);
}

#[test]
fn duplicate_attribute() {
    let src = model("  y = dense(x, out = 3, out = 4)");
    let e = error(&src);
    assert_error(&e, "duplicate attribute `out`", 4, 25, &src);
    assert_eq!(e.secondary_labels().len(), 1);
}

#[test]
fn integer_literal_overflow() {
    let src = model("  y = dense(x, out = 99999999999999999999999)");
    let e = error(&src);
    assert_error(
        &e,
        "integer literal `99999999999999999999999` is too large (the maximum is 18446744073709551615)",
        4,
        22,
        &src,
    );
}

#[test]
fn attribute_value_too_large() {
    let src = model("  y = dense(x, out = 18446744073709551615)");
    let e = error(&src);
    assert_error(
        &e,
        "`out` value 18446744073709551615 is too large (the maximum is 2147483647)",
        4,
        22,
        &src,
    );
}

#[test]
fn tensor_too_large() {
    let src = "model m {\n  weights random(seed = 1)\n  input x: f32[1048576, 1048576, 2]\n  \
               y = relu(x)\n  output y\n}\n";
    let e = error(src);
    assert_error(
        &e,
        "tensor too large: f32[1048576, 1048576, 2] has more than 4294967296 elements",
        3,
        16,
        src,
    );

    // Padding that makes a tensor too large.
    let src = "model m {\n  weights random(seed = 1)\n  input x: f32[1, 1, 65536, 1]\n  \
               y = pad(x, pads = [0, 2147483647])\n  output y\n}\n";
    let e = error(src);
    assert!(
        e.message().starts_with("tensor too large"),
        "{}",
        e.message()
    );
    assert_eq!(e.location().map(|l| l.1), Some(4));

    // A dense layer with an enormous weight.
    let src = "model m {\n  weights random(seed = 1)\n  input x: f32[1, 100000]\n  \
               y = dense(x, out = 2000000000)\n  output y\n}\n";
    let e = error(src);
    assert!(
        e.message().starts_with("tensor too large"),
        "{}",
        e.message()
    );
}

#[test]
fn zero_dimension() {
    let src = "model m {\n  weights random(seed = 1)\n  input x: f32[1, 0]\n  \
               y = relu(x)\n  output y\n}\n";
    let e = error(src);
    assert_error(
        &e,
        "a dimension must be a positive integer, found `0`",
        3,
        19,
        src,
    );
}

#[test]
fn params_on_relu_is_unknown() {
    let src = model("  y = relu(x, params = \"r\")");
    let e = error(&src);
    assert_error(&e, "unknown attribute `params` for `relu`", 4, 15, &src);
    assert_eq!(e.help_text(), Some("`relu` takes no attributes"));
}

#[test]
fn unterminated_block_comment() {
    let src = model("  y = relu(x) /* never\n closed");
    let e = error(&src);
    assert_error(&e, "unterminated block comment", 4, 15, &src);
    assert_eq!(&src[e.primary_label().unwrap().span.clone()], "/*");
}

#[test]
fn unterminated_string() {
    let src = "model m {\n  weights \"w.safetensors\n  input x: f32[1, 3]\n}\n";
    let e = error(src);
    assert_error(&e, "unterminated string", 2, 11, src);
}

#[test]
fn garbage_bytes() {
    let src = model("  y = relu(x) @");
    let e = error(&src);
    assert_error(&e, "unexpected character `@`", 4, 15, &src);

    let src = model("  y = relu(\0x)");
    let e = error(&src);
    assert_error(&e, "unexpected character U+0000", 4, 12, &src);
}

#[test]
fn file_not_valid_utf8() {
    let dir = temp_dir("utf8");
    let path = dir.join("bad.nn");
    std::fs::write(&path, b"model m {\n  y = \xff\xfe\n}\n").unwrap();
    let e = bnc_frontend::load_file(&path).unwrap_err();
    assert_eq!(e.message(), "file is not valid UTF-8");
    let (file, line, col) = e.location().unwrap();
    assert_eq!(file, path.display().to_string());
    assert_eq!((line, col), (2, 7));
    assert!(e.render(false).contains("y ="));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn model_file_missing() {
    let e = bnc_frontend::load_file(std::path::Path::new("/nonexistent/dir/m.nn")).unwrap_err();
    assert!(
        e.message()
            .starts_with("cannot read `/nonexistent/dir/m.nn`")
    );
    assert_eq!(e.location(), None);
    assert!(e.render(false).contains("cannot read"));
}

#[test]
fn empty_file() {
    for src in ["", "   \n  # only a comment\n"] {
        let e = error(src);
        assert_eq!(e.message(), "empty file: expected `model NAME { ... }`");
        assert_eq!(e.location(), Some(("test.nn".to_string(), 1, 1)));
        assert!(e.render(false).contains("test.nn:1:1"));
    }
}

#[test]
fn argument_list_error() {
    let src = model("  y = relu(x foo)");
    let e = error(&src);
    assert_error(
        &e,
        "expected `)` or `,` after argument, found `foo`",
        4,
        14,
        &src,
    );
}

#[test]
fn input_after_attribute() {
    let src = model("  y = add(x, alpha = 1, x)");
    let e = error(&src);
    assert_error(
        &e,
        "input `x` after attributes: expected `x = value`",
        4,
        25,
        &src,
    );
}

#[test]
fn missing_closing_brace() {
    let src = "model m {\n  weights random(seed = 1)\n";
    let e = error(src);
    assert_eq!(
        e.message(),
        "expected `}` to close model `m`, found end of file"
    );
    // Right after the last token.
    assert_eq!(e.location().map(|l| (l.1, l.2)), Some((2, 27)));
    assert!(e.render(false).contains("weights random(seed = 1)"));
}

#[test]
fn text_after_model() {
    let src = format!("{}extra\n", model("  y = relu(x)"));
    let e = error(&src);
    assert_error(
        &e,
        "expected end of file after the model's closing `}`, found `extra`",
        7,
        1,
        &src,
    );
}

#[test]
fn float_literal_out_of_range() {
    let src = model("  y = leaky_relu(x, alpha = 1e999)");
    let e = error(&src);
    assert_error(&e, "float literal `1e999` is out of range", 4, 29, &src);
}

#[test]
fn bare_name_as_value() {
    let src = model("  y = conv2d(x, out = 4, kernel = 3, params = c1)");
    let e = error(&src);
    assert_error(&e, "expected a value, found `c1`", 4, 47, &src);
}

#[test]
fn unsupported_input_type() {
    let src = "model m {\n  weights random(seed = 1)\n  input x: f16[1, 3]\n}\n";
    let e = error(src);
    assert_error(
        &e,
        "unsupported element type `f16`: inputs are `f32`",
        3,
        12,
        src,
    );
}

// ---- weights files ----

fn file_model(body: &str) -> String {
    format!(
        "model m {{\n  weights \"w.safetensors\"\n  input x: f32[1, 3, 8, 8]\n{body}\n  output y\n}}\n"
    )
}

#[test]
fn missing_weights_file() {
    let dir = temp_dir("missing-file");
    let src = file_model("  y = conv2d(x, out = 4, kernel = 3)");
    let e = error_in(&src, &dir);
    let resolved = dir.join("w.safetensors");
    let message = e.message().to_string();
    assert!(
        message.starts_with(&format!(
            "cannot read weights file `{}`: ",
            resolved.display()
        )),
        "{message}"
    );
    assert!(message.contains("No such file"), "{message}");
    assert_error(&e, &message, 2, 11, &src);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn corrupt_weights_file() {
    let dir = temp_dir("corrupt");
    std::fs::write(
        dir.join("w.safetensors"),
        b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}",
    )
    .unwrap();
    let src = file_model("  y = conv2d(x, out = 4, kernel = 3)");
    let e = error_in(&src, &dir);
    assert!(
        e.message().contains("is not a valid safetensors file"),
        "{}",
        e.message()
    );
    assert_eq!(e.location().map(|l| (l.1, l.2)), Some((2, 11)));
    // A header claiming absurd offsets must not crash either.
    let header = br#"{"a":{"dtype":"F32","shape":[4611686018427387903],"data_offsets":[0,18446744073709551612]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    std::fs::write(dir.join("w.safetensors"), bytes).unwrap();
    let e = error_in(&src, &dir);
    assert!(
        e.message().contains("is not a valid safetensors file"),
        "{}",
        e.message()
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn missing_tensor_lists_similar_names() {
    let dir = temp_dir("missing-tensor");
    write_safetensors(
        &dir.join("w.safetensors"),
        &[
            ("y.weigth", ramp(&[4, 3, 3, 3])),
            ("y.bias", ramp(&[4])),
            ("other", ramp(&[2])),
        ],
    );
    let src = file_model("  y = conv2d(x, out = 4, kernel = 3)");
    let e = error_in(&src, &dir);
    assert_error(
        &e,
        "tensor `y.weight` not found in the weights file",
        4,
        3,
        &src,
    );
    let help = e.help_text().expect("help");
    assert!(help.contains("`y.weigth`"), "{help}");
    assert!(!help.contains("other"), "{help}");
    assert!(
        e.render(false)
            .contains("needs `y.weight` with shape [4, 3, 3, 3]")
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn tensor_of_wrong_shape() {
    let dir = temp_dir("wrong-shape");
    write_safetensors(
        &dir.join("w.safetensors"),
        &[("y.weight", ramp(&[4, 2, 3, 3])), ("y.bias", ramp(&[4]))],
    );
    let src = file_model("  y = conv2d(x, out = 4, kernel = 3)");
    let e = error_in(&src, &dir);
    assert_error(
        &e,
        "tensor `y.weight` has shape [4, 2, 3, 3] in the weights file, but `y` needs [4, 3, 3, 3]",
        4,
        3,
        &src,
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn tensor_of_unsupported_dtype() {
    let dir = temp_dir("dtype");
    write_safetensors(
        &dir.join("w.safetensors"),
        &[(
            "y.weight",
            common::Entry {
                dtype: Dtype::I64,
                shape: vec![4, 3],
                values: vec![0.0; 12],
            },
        )],
    );
    let src = "model m {\n  weights \"w.safetensors\"\n  input x: f32[1, 3]\n  \
               y = dense(x, out = 4, bias = false)\n  output y\n}\n";
    let e = error_in(src, &dir);
    assert_error(
        &e,
        "tensor `y.weight` has dtype I64; only F32, F16, BF16 and F64 are supported",
        4,
        3,
        src,
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn shared_prefix_with_different_shapes() {
    let src = model(
        "  a = conv2d(x, out = 4, kernel = 3, params = \"p\")\n  \
         y = conv2d(a, out = 4, kernel = 3, params = \"p\")",
    );
    let e = error(&src);
    assert_error(
        &e,
        "parameter `p.weight` is shared by layers that need different shapes: [4, 3, 3, 3] and [4, 4, 3, 3]",
        5,
        3,
        &src,
    );
    let _ = f32_entry;
}

/// 2^32 weight elements pass the per-tensor limit but not the model's: the error comes before
/// any weight is generated (it used to abort on a 16 GiB allocation).
#[test]
fn a_model_too_large_is_refused_before_its_weights_exist() {
    let src = "model big {\n weights random(seed = 1)\n input x: f32[1, 65536]\n y = dense(x, out = 65536)\n output y\n}\n";
    let e =
        bnc_frontend::load_str(src, "big.nn", std::path::Path::new(".")).expect_err("too large");
    assert!(e.message().contains("model too large"), "{}", e.message());
}
