//! parse(print(g)) == g for every example model, and printing is a fixed point.

mod common;

use bnc::ir::printer;

#[test]
fn every_example_round_trips_through_the_printer() {
    let models = common::example_models();
    assert!(
        models.len() >= 9,
        "expected the nine example models, found {models:?}"
    );
    for path in models {
        let graph = common::load(&path);
        let text = printer::print(&graph);
        let base = path.parent().unwrap();
        let again = bnc::load_str(&text, "printed.nn", base).unwrap_or_else(|e| {
            panic!(
                "printed {} does not parse:\n{}",
                path.display(),
                e.render(false)
            )
        });
        assert!(
            graph == again,
            "{}: parse(print(g)) differs from g",
            path.display()
        );
        assert_eq!(
            text,
            printer::print(&again),
            "{}: printing is not a fixed point",
            path.display()
        );
    }
}

#[test]
fn printed_ir_is_explicit() {
    let graph = common::load(&common::example("tiny.nn"));
    let text = printer::print(&graph);
    // Defaults are spelled out, shapes are in comments, parameter prefixes are named.
    assert!(text.contains("stride = [1, 1]"), "{text}");
    assert!(text.contains("dilation = [1, 1]"), "{text}");
    assert!(text.contains("  # f32[1, 16, 32, 32]"), "{text}");
    assert!(text.contains("params = \""), "{text}");
    assert!(text.contains("eps = 1e-5"), "{text}");
}

#[test]
fn awkward_floats_and_names_round_trip() {
    let src = r#"
model odd {
  weights random(seed = 3)
  input x: f32[2, 4, 5, 7]
  a.b = leaky_relu(x, alpha = 0.1)
  c = clip(a.b, min = -inf, max = 0.30000000000000004)
  p = pad(c, pads = [0, 1, 2, 3], value = -1.5e-7)
  q = avgpool(p, kernel = 3, stride = 2, pad = 1, ceil_mode = true, count_include_pad = false)
  bn = batchnorm(q, eps = 0.001, params = "weird \"name\"")
  output bn, c
}
"#;
    let dir = std::env::temp_dir();
    let g = bnc::load_str(src, "odd.nn", &dir).unwrap_or_else(|e| panic!("{}", e.render(false)));
    let text = printer::print(&g);
    let again = bnc::load_str(&text, "odd2.nn", &dir)
        .unwrap_or_else(|e| panic!("{}\n{text}", e.render(false)));
    assert!(g == again, "{text}");
}
