//! Every operator of the language lowers with the defaults docs/language.md gives, and
//! explicit attributes arrive as written.

mod common;

use bnc_ir::{Activation, Conv2d, Graph, Op, Pool2d, WeightsSource};
use common::load;

/// All operators with only their required attributes.
const DEFAULTS: &str = r#"
model all_ops {
  weights random(seed = 7)
  input x: f32[1, 4, 8, 8]
  input v: f32[2, 6]

  c   = conv2d(x, out = 8, kernel = 3)
  d   = dense(v, out = 5)
  bn  = batchnorm(c)
  af  = affine(bn)
  r   = relu(af)
  r6  = relu6(r)
  sg  = sigmoid(r6)
  sl  = silu(sg)
  hs  = hardswish(sl)
  hg  = hardsigmoid(hs)
  th  = tanh(hg)
  lr  = leaky_relu(th)
  cl  = clip(lr)
  a   = add(cl, c)
  gp  = global_avgpool(a)
  m   = mul(a, gp)
  cc  = concat(m, a, c)
  mp  = maxpool(cc, kernel = 2)
  ap  = avgpool(cc, kernel = 3)
  p   = pad(ap, pads = 1)
  fl  = flatten(p)
  id  = identity(fl)
  dr  = dropout(id)
  sm  = softmax(dr)
  output sm, d, mp
}
"#;

fn op_of<'g>(g: &'g Graph, name: &str) -> &'g Op {
    let node = g
        .nodes
        .iter()
        .find(|n| g.value(n.output).name == name)
        .unwrap_or_else(|| panic!("no node {name}"));
    &node.op
}

fn shape_of<'g>(g: &'g Graph, name: &str) -> &'g [usize] {
    &g.values
        .iter()
        .find(|v| v.name == name)
        .unwrap_or_else(|| panic!("no value {name}"))
        .shape
}

#[test]
fn every_operator_with_defaults() {
    let g = load(DEFAULTS).expect("lowers");
    g.verify().expect("verifies");
    assert_eq!(g.name, "all_ops");
    assert_eq!(g.weights, WeightsSource::Random { seed: 7 });
    assert_eq!(g.nodes.len(), 24);
    assert_eq!(
        op_of(&g, "c"),
        &Op::Conv2d(Conv2d {
            out_channels: 8,
            kernel: [3, 3],
            stride: [1, 1],
            pad: [0, 0, 0, 0],
            dilation: [1, 1],
            groups: 1,
            bias: true,
            pad_fill: false,
        })
    );
    assert_eq!(
        op_of(&g, "d"),
        &Op::Dense {
            out_features: 5,
            bias: true
        }
    );
    assert_eq!(op_of(&g, "bn"), &Op::BatchNorm { eps: 1e-5 });
    assert_eq!(op_of(&g, "af"), &Op::Affine);
    assert_eq!(op_of(&g, "r"), &Op::Activation(Activation::Relu));
    assert_eq!(op_of(&g, "r6"), &Op::Activation(Activation::Relu6));
    assert_eq!(op_of(&g, "sg"), &Op::Activation(Activation::Sigmoid));
    assert_eq!(op_of(&g, "sl"), &Op::Activation(Activation::Silu));
    assert_eq!(op_of(&g, "hs"), &Op::Activation(Activation::HardSwish));
    assert_eq!(op_of(&g, "hg"), &Op::Activation(Activation::HardSigmoid));
    assert_eq!(op_of(&g, "th"), &Op::Activation(Activation::Tanh));
    assert_eq!(
        op_of(&g, "lr"),
        &Op::Activation(Activation::LeakyRelu { alpha: 0.01 })
    );
    assert_eq!(
        op_of(&g, "cl"),
        &Op::Activation(Activation::Clip {
            min: f64::NEG_INFINITY,
            max: f64::INFINITY
        })
    );
    assert_eq!(op_of(&g, "a"), &Op::Add);
    assert_eq!(op_of(&g, "gp"), &Op::GlobalAvgPool);
    assert_eq!(op_of(&g, "m"), &Op::Mul);
    assert_eq!(op_of(&g, "cc"), &Op::Concat);
    assert_eq!(
        op_of(&g, "mp"),
        &Op::MaxPool(Pool2d {
            kernel: [2, 2],
            stride: [2, 2],
            pad: [0, 0, 0, 0],
            ceil_mode: false,
            count_include_pad: false,
        })
    );
    assert_eq!(
        op_of(&g, "ap"),
        &Op::AvgPool(Pool2d {
            kernel: [3, 3],
            stride: [3, 3],
            pad: [0, 0, 0, 0],
            ceil_mode: false,
            count_include_pad: true,
        })
    );
    assert_eq!(
        op_of(&g, "p"),
        &Op::Pad {
            pads: [1, 1, 1, 1],
            value: 0.0,
            fill: false
        }
    );
    assert_eq!(op_of(&g, "fl"), &Op::Flatten);
    assert_eq!(op_of(&g, "id"), &Op::Identity);
    assert_eq!(op_of(&g, "dr"), &Op::Dropout);
    assert_eq!(op_of(&g, "sm"), &Op::Softmax);

    // Shapes come from the operators' shape rules.
    assert_eq!(shape_of(&g, "c"), &[1, 8, 6, 6]);
    assert_eq!(shape_of(&g, "d"), &[2, 5]);
    assert_eq!(shape_of(&g, "gp"), &[1, 8, 1, 1]);
    assert_eq!(shape_of(&g, "cc"), &[1, 24, 6, 6]);
    assert_eq!(shape_of(&g, "mp"), &[1, 24, 3, 3]);
    assert_eq!(shape_of(&g, "ap"), &[1, 24, 2, 2]);
    assert_eq!(shape_of(&g, "p"), &[1, 24, 4, 4]);
    assert_eq!(shape_of(&g, "fl"), &[1, 384]);

    // `params` defaults to the binding name, only for layers with parameters.
    for node in &g.nodes {
        let name = &g.value(node.output).name;
        let has_params = matches!(
            node.op,
            Op::Conv2d(_) | Op::Dense { .. } | Op::BatchNorm { .. } | Op::Affine
        );
        assert_eq!(node.params.as_deref(), has_params.then_some(name.as_str()));
    }
    let names: Vec<&str> = g.params.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "af.scale",
            "af.shift",
            "bn.bias",
            "bn.running_mean",
            "bn.running_var",
            "bn.weight",
            "c.bias",
            "c.weight",
            "d.bias",
            "d.weight"
        ]
    );
    assert_eq!(g.inputs.len(), 2);
    let outputs: Vec<&str> = g
        .outputs
        .iter()
        .map(|&o| g.value(o).name.as_str())
        .collect();
    assert_eq!(outputs, ["sm", "d", "mp"]);
}

#[test]
fn explicit_attributes() {
    let src = r#"
model explicit {
  weights random(seed = 1)
  input x: f32[1, 4, 16, 16]
  c1 = conv2d(x, out = 8, kernel = [3, 5], stride = [2, 1], pad = [1, 2], dilation = 2,
              groups = 2, bias = false, pad_fill = true, params = "layer1.0.conv1")
  c2 = conv2d(x, out = 4, kernel = 1, pad = [0, 1, 2, 3], stride = 2)
  b  = batchnorm(c1, eps = 0.001, params = "bn")
  l  = leaky_relu(b, alpha = 0.2)
  k  = clip(l, min = 0, max = 6.0)
  k2 = clip(k, min = -inf, max = inf)
  mp = maxpool(c2, kernel = 3, stride = 2, pad = 1, ceil_mode = true)
  ap = avgpool(c2, kernel = [2, 2], stride = 1, pad = [1, 0], count_include_pad = false)
  p  = pad(mp, pads = [1, 2], value = -1.5)
  d  = dense(flat, out = 3, bias = false, params = "fc")
  flat = flatten(p)
  output k2, ap, p
}
"#;
    // `d` uses `flat` before it is defined.
    let e = load(src).unwrap_err();
    assert_eq!(e.message(), "undefined name `flat`");
    let src = src.replace(
        "  d  = dense(flat, out = 3, bias = false, params = \"fc\")\n  flat = flatten(p)\n",
        "  flat = flatten(p)\n  d  = dense(flat, out = 3, bias = false, params = \"fc\")\n",
    );
    let g = load(&src).expect("lowers");
    g.verify().expect("verifies");
    assert_eq!(
        op_of(&g, "c1"),
        &Op::Conv2d(Conv2d {
            out_channels: 8,
            kernel: [3, 5],
            stride: [2, 1],
            pad: [1, 2, 1, 2],
            dilation: [2, 2],
            groups: 2,
            bias: false,
            pad_fill: true,
        })
    );
    let c2 = match op_of(&g, "c2") {
        Op::Conv2d(c) => c.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        (c2.kernel, c2.pad, c2.stride),
        ([1, 1], [0, 1, 2, 3], [2, 2])
    );
    assert_eq!(op_of(&g, "b"), &Op::BatchNorm { eps: 0.001 });
    assert_eq!(
        op_of(&g, "l"),
        &Op::Activation(Activation::LeakyRelu { alpha: 0.2 })
    );
    assert_eq!(
        op_of(&g, "k"),
        &Op::Activation(Activation::Clip { min: 0.0, max: 6.0 })
    );
    assert_eq!(
        op_of(&g, "k2"),
        &Op::Activation(Activation::Clip {
            min: f64::NEG_INFINITY,
            max: f64::INFINITY
        })
    );
    assert_eq!(
        op_of(&g, "mp"),
        &Op::MaxPool(Pool2d {
            kernel: [3, 3],
            stride: [2, 2],
            pad: [1, 1, 1, 1],
            ceil_mode: true,
            count_include_pad: false,
        })
    );
    assert_eq!(
        op_of(&g, "ap"),
        &Op::AvgPool(Pool2d {
            kernel: [2, 2],
            stride: [1, 1],
            pad: [1, 0, 1, 0],
            ceil_mode: false,
            count_include_pad: false,
        })
    );
    assert_eq!(
        op_of(&g, "p"),
        &Op::Pad {
            pads: [1, 2, 1, 2],
            value: -1.5,
            fill: false
        }
    );
    assert_eq!(
        op_of(&g, "d"),
        &Op::Dense {
            out_features: 3,
            bias: false
        }
    );
    let prefixes: Vec<Option<&str>> = g.nodes.iter().map(|n| n.params.as_deref()).collect();
    assert_eq!(
        prefixes,
        [
            Some("layer1.0.conv1"),
            Some("c2"),
            Some("bn"),
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            Some("fc")
        ]
    );
    assert!(g.params.contains_key("layer1.0.conv1.weight"));
    assert!(g.params.contains_key("layer1.0.conv1.pad_fill"));
    assert!(!g.params.contains_key("layer1.0.conv1.bias"));
    assert_eq!(g.params["layer1.0.conv1.weight"].shape, vec![8, 2, 3, 5]);
    assert!(g.params.contains_key("fc.weight") && !g.params.contains_key("fc.bias"));
}

#[test]
fn keywords_can_name_layers() {
    let src = r#"
model model {
  weights random(seed = 0)
  input input: f32[1, 2]
  weights = relu(input)
  output = relu(weights)
  model = identity(output)
  inf = identity(model)
  true = identity(inf)
  output true, output
}
"#;
    let g = load(src).expect("lowers");
    assert_eq!(g.name, "model");
    assert_eq!(g.nodes.len(), 5);
    let outputs: Vec<&str> = g
        .outputs
        .iter()
        .map(|&o| g.value(o).name.as_str())
        .collect();
    assert_eq!(outputs, ["true", "output"]);
}

#[test]
fn integers_are_accepted_as_floats_not_the_reverse() {
    let src = "model m {\n  weights random(seed = 0)\n  input x: f32[1, 2]\n  \
               y = leaky_relu(x, alpha = 1)\n  output y\n}\n";
    let g = load(src).expect("lowers");
    assert_eq!(
        g.nodes[0].op,
        Op::Activation(Activation::LeakyRelu { alpha: 1.0 })
    );
    let src = src.replace("leaky_relu(x, alpha = 1)", "dense(x, out = 2.0)");
    assert_eq!(
        load(&src).unwrap_err().message(),
        "`out` expects an integer, found float `2.0`"
    );
}

#[test]
fn printed_form_parses_back_to_the_same_graph() {
    let g = load(DEFAULTS).expect("lowers");
    let text = bnc_ir::printer::print(&g);
    let again = load(&text).unwrap_or_else(|e| panic!("{}\n{text}", e.render(false)));
    assert_eq!(g, again, "{text}");
}

#[test]
fn comments_everywhere() {
    let src = "# leading\nmodel m { // trailing\n  weights /* inline */ random(seed = 1)\n  \
               input x: f32[1, /* dim */ 2] # shape\n  y = relu(x) /* multi\n line */\n  output y\n}\n// end";
    let g = load(src).expect("lowers");
    assert_eq!(g.nodes.len(), 1);
}

#[test]
fn parse_gives_the_syntax_tree_with_spans() {
    let src = "model m {\n  weights \"a\\\"b.safetensors\"\n  input x: f32[1, 2]\n  \
               y = dense(x, out = 4)\n  output y\n}\n";
    let model = bnc_frontend::parse(src, "t.nn").expect("parses");
    assert_eq!(model.items.len(), 4);
    match &model.items[0] {
        bnc_frontend::ast::Item::Weights(w) => match &w.source {
            bnc_frontend::ast::WeightsSpec::File { path, span } => {
                assert_eq!(path, "a\"b.safetensors");
                assert_eq!(&src[span.clone()], "\"a\\\"b.safetensors\"");
            }
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
    match &model.items[2] {
        bnc_frontend::ast::Item::Binding(b) => {
            assert_eq!(&src[b.op.span.clone()], "dense");
            assert_eq!(&src[b.args[0].span.clone()], "x");
            assert_eq!(&src[b.attrs[0].key.span.clone()], "out");
            assert_eq!(&src[b.attrs[0].value.span.clone()], "4");
            assert_eq!(&src[b.span.clone()], "y = dense(x, out = 4)");
        }
        other => panic!("{other:?}"),
    }
    // Syntax only: unknown operators are fine here.
    assert!(bnc_frontend::parse("model m { y = nonsense(q) }", "t.nn").is_ok());
}
