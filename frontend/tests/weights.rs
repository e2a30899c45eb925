//! Parameters from safetensors files and from the seeded generator.

mod common;

use bnc_frontend::random_tensor;
use bnc_ir::{Graph, ParamKind};
use common::{Entry, f32_entry, load, load_in, ramp, temp_dir, write_safetensors};
use safetensors::Dtype;

const FILE_MODEL: &str = r#"
model m {
  weights "sub/w.safetensors"
  input x: f32[1, 2, 4, 4]
  c = conv2d(x, out = 3, kernel = 1)
  b = batchnorm(c, params = "backbone.bn1")
  f = flatten(b)
  d = dense(f, out = 2, bias = false)
  output d
}
"#;

fn file_tensors(conv_dtype: Dtype) -> Vec<(&'static str, Entry)> {
    // Values exactly representable in f16 and bf16, so conversions are exact.
    let conv_values = vec![0.5, -1.0, 2.0, 0.25, -0.125, 3.0];
    vec![
        (
            "c.weight",
            Entry {
                dtype: conv_dtype,
                shape: vec![3, 2, 1, 1],
                values: conv_values,
            },
        ),
        (
            "c.bias",
            Entry {
                dtype: Dtype::F16,
                shape: vec![3],
                values: vec![1.5, -2.5, 0.0],
            },
        ),
        (
            "backbone.bn1.weight",
            Entry {
                dtype: Dtype::BF16,
                shape: vec![3],
                values: vec![1.0, 2.0, 4.0],
            },
        ),
        ("backbone.bn1.bias", f32_entry(&[3], vec![0.1, 0.2, 0.3])),
        ("backbone.bn1.running_mean", f32_entry(&[3], vec![0.0; 3])),
        ("backbone.bn1.running_var", f32_entry(&[3], vec![1.0; 3])),
        ("d.weight", ramp(&[2, 48])),
        // Not used by the model: ignored.
        ("b.weight", ramp(&[7])),
        ("unused.thing", ramp(&[2, 2])),
    ]
}

fn load_from_file(conv_dtype: Dtype, test: &str) -> Graph {
    let dir = temp_dir(test);
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    write_safetensors(&dir.join("sub/w.safetensors"), &file_tensors(conv_dtype));
    let g = load_in(FILE_MODEL, &dir).unwrap_or_else(|e| panic!("{}", e.render(false)));
    let _ = std::fs::remove_dir_all(dir);
    g
}

#[test]
fn safetensors_f32_f16_bf16_are_converted() {
    for dtype in [Dtype::F32, Dtype::F16, Dtype::BF16, Dtype::F64] {
        let g = load_from_file(dtype, &format!("dtypes-{dtype:?}"));
        g.verify().expect("verifies");
        assert_eq!(g.params["c.weight"].shape, vec![3, 2, 1, 1]);
        assert_eq!(
            g.params["c.weight"].data,
            vec![0.5, -1.0, 2.0, 0.25, -0.125, 3.0]
        );
        assert_eq!(g.params["c.bias"].data, vec![1.5, -2.5, 0.0]);
        assert_eq!(g.params["backbone.bn1.weight"].data, vec![1.0, 2.0, 4.0]);
        assert_eq!(g.params["backbone.bn1.bias"].data, vec![0.1, 0.2, 0.3]);
        assert_eq!(g.params["d.weight"].data[47], 0.47);
    }
}

#[test]
fn params_override_and_other_tensors_ignored() {
    let g = load_from_file(Dtype::F32, "override");
    let names: Vec<&str> = g.params.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "backbone.bn1.bias",
            "backbone.bn1.running_mean",
            "backbone.bn1.running_var",
            "backbone.bn1.weight",
            "c.bias",
            "c.weight",
            "d.weight"
        ]
    );
    let bn = g
        .nodes
        .iter()
        .find(|n| n.params.as_deref() == Some("backbone.bn1"));
    assert!(bn.is_some());
}

#[test]
fn load_file_resolves_weights_next_to_the_model() {
    let dir = temp_dir("load-file");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    write_safetensors(&dir.join("sub/w.safetensors"), &file_tensors(Dtype::F32));
    let model_path = dir.join("model.nn");
    std::fs::write(&model_path, FILE_MODEL).unwrap();
    let g = bnc_frontend::load_file(&model_path).unwrap_or_else(|e| panic!("{}", e.render(false)));
    assert_eq!(g.params.len(), 7);
    let _ = std::fs::remove_dir_all(dir);
}

const RANDOM_MODEL: &str = r#"
model r {
  weights random(seed = 42)
  input x: f32[1, 3, 16, 16]
  c1 = conv2d(x, out = 16, kernel = 3, pad = 1)
  b1 = batchnorm(c1)
  r1 = relu(b1)
  c2 = conv2d(r1, out = 32, kernel = 3, stride = 2, pad = 1, pad_fill = true)
  a2 = affine(c2)
  g  = global_avgpool(a2)
  f  = flatten(g)
  y  = dense(f, out = 10)
  output y
}
"#;

#[test]
fn random_weights_are_deterministic() {
    let a = load(RANDOM_MODEL).expect("lowers");
    let b = load(RANDOM_MODEL).expect("lowers");
    a.verify().expect("verifies");
    assert_eq!(a.params, b.params);
    let other = load(&RANDOM_MODEL.replace("seed = 42", "seed = 43")).expect("lowers");
    for (name, t) in &a.params {
        assert_ne!(t.data, other.params[name].data, "{name} ignores the seed");
    }
}

#[test]
fn adding_a_layer_leaves_the_others_unchanged() {
    let a = load(RANDOM_MODEL).expect("lowers");
    let bigger = RANDOM_MODEL.replace(
        "  r1 = relu(b1)\n",
        "  extra = conv2d(x, out = 4, kernel = 1)\n  r1 = relu(b1)\n",
    );
    let b = load(&bigger).expect("lowers");
    assert_eq!(b.params.len(), a.params.len() + 2);
    for (name, t) in &a.params {
        assert_eq!(&b.params[name], t, "{name} changed");
    }
}

#[test]
fn random_values_have_the_right_ranges() {
    let g = load(RANDOM_MODEL).expect("lowers");
    let within = |name: &str, lo: f32, hi: f32| {
        let t = &g.params[name];
        assert!(
            t.data.iter().all(|&v| v >= lo && v <= hi),
            "{name} outside [{lo}, {hi}]"
        );
        // Not constant.
        assert!(t.data.iter().any(|&v| v != t.data[0]), "{name} is constant");
    };
    within("b1.running_var", 0.5, 1.5);
    within("b1.weight", 0.5, 1.5);
    within("b1.bias", -0.2, 0.2);
    within("b1.running_mean", -0.2, 0.2);
    within("c1.bias", -0.1, 0.1);
    within("a2.scale", 0.5, 1.5);
    within("a2.shift", -0.2, 0.2);
    within("c2.pad_fill", -0.2, 0.2);

    // He scaling: c2 has fan_in 16 * 3 * 3 = 144, std sqrt(2 / 144).
    let w = &g.params["c2.weight"].data;
    let n = w.len() as f64;
    let mean = w.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let std = (w
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n)
        .sqrt();
    let expected = (2.0f64 / 144.0).sqrt();
    assert!(
        (std - expected).abs() < 0.05 * expected,
        "std {std} vs {expected}"
    );
    assert!(mean.abs() < 0.05 * expected, "mean {mean}");
}

#[test]
fn random_tensor_is_pinned() {
    // If these change, every model's random weights change: only on purpose.
    let w = random_tensor(
        7,
        "conv1.weight",
        &[4, 3, 3, 3],
        ParamKind::Weight { fan_in: 27 },
    );
    let v = random_tensor(7, "bn1.running_var", &[8], ParamKind::BnVar);
    let bits: Vec<u32> = w.data[..3]
        .iter()
        .chain(&v.data[..3])
        .map(|f| f.to_bits())
        .collect();
    let checksum: f64 = w
        .data
        .iter()
        .chain(&v.data)
        .enumerate()
        .map(|(i, &x)| (i as f64 + 1.0) * f64::from(x))
        .sum();
    assert_eq!(bits, PINNED_BITS);
    assert_eq!(checksum, PINNED_CHECKSUM);
}

const PINNED_BITS: [u32; 6] = [
    1047549397, 3207268969, 3201903504, 1069015834, 1068108753, 1063791115,
];
const PINNED_CHECKSUM: f64 = 576.208620530786;

#[test]
fn random_tensor_depends_on_name_seed_and_kind() {
    let a = random_tensor(1, "a.bias", &[16], ParamKind::Bias);
    assert_eq!(a, random_tensor(1, "a.bias", &[16], ParamKind::Bias));
    assert_ne!(
        a.data,
        random_tensor(2, "a.bias", &[16], ParamKind::Bias).data
    );
    assert_ne!(
        a.data,
        random_tensor(1, "b.bias", &[16], ParamKind::Bias).data
    );
    assert_eq!(a.shape, vec![16]);
    let big = random_tensor(1, "w", &[64, 64, 3, 3], ParamKind::Weight { fan_in: 576 });
    assert_eq!(big.data.len(), 64 * 64 * 9);
    // A prefix of a longer tensor is the same values: elements are drawn in order.
    let small = random_tensor(1, "w", &[8], ParamKind::Weight { fan_in: 576 });
    assert_eq!(small.data[..], big.data[..8]);
}
