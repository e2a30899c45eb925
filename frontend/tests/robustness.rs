//! Hostile inputs: huge random token streams, deep nesting, and thousands of seeded random
//! mutations of valid models. Nothing may panic, overflow the stack, or take long.

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::time::{Duration, Instant};

use bnc_frontend::lexer::{Lexer, TokenKind};

/// SplitMix64, for reproducible test inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Runs `load_str` and fails the test on a panic (returning the result otherwise).
fn load_no_panic(source: &str, dir: &Path) -> Result<bnc_ir::Graph, bnc_frontend::Error> {
    match catch_unwind(AssertUnwindSafe(|| {
        bnc_frontend::load_str(source, "fuzz.nn", dir)
    })) {
        Ok(r) => r,
        Err(_) => {
            let shown: String = source.chars().take(2000).collect();
            panic!("load_str panicked on:\n{shown}");
        }
    }
}

const VOCABULARY: &[&str] = &[
    "model",
    "weights",
    "input",
    "output",
    "random",
    "seed",
    "f32",
    "conv2d",
    "dense",
    "relu",
    "add",
    "concat",
    "batchnorm",
    "maxpool",
    "pad",
    "x",
    "y",
    "layer1.0.conv1",
    "out",
    "kernel",
    "params",
    "true",
    "false",
    "inf",
    "-inf",
    "0",
    "1",
    "3",
    "-7",
    "99999999999999999999999",
    "1.5",
    "1e-5",
    "2.5E+3",
    "\"s.safetensors\"",
    "\"esc\\\"aped\"",
    "{",
    "}",
    "(",
    ")",
    "[",
    "]",
    ",",
    "=",
    ":",
    "# comment\n",
    "// comment\n",
    "/* block */",
    "\n",
    " ",
    "@",
    "\"",
    "/*",
    "\u{0}",
    "é",
];

/// About `size` bytes of random tokens, with long runs of `[`, `(` and `{`.
fn random_tokens(rng: &mut Rng, size: usize, prefix: &str) -> String {
    let mut out = String::with_capacity(size + 64);
    out.push_str(prefix);
    while out.len() < size {
        if rng.below(50) == 0 {
            let open = ["[", "(", "{"][rng.below(3)];
            let run = 1 + rng.below(100_000);
            for _ in 0..run {
                out.push_str(open);
            }
        } else {
            out.push_str(VOCABULARY[rng.below(VOCABULARY.len())]);
            if rng.below(2) == 0 {
                out.push(' ');
            }
        }
    }
    out
}

const SIZE: usize = 50 * 1024 * 1024;
const TIME_LIMIT: Duration = Duration::from_secs(20);

#[test]
fn fifty_megabytes_of_random_tokens() {
    let mut rng = Rng(2024);
    let prefixes = [
        "",
        "model m {\n",
        "model m {\n  weights random(seed = 1)\n  input x: f32[1, 2]\n  y = relu(x, a = ",
    ];
    for prefix in prefixes {
        let source = random_tokens(&mut rng, SIZE, prefix);
        let start = Instant::now();
        let result = load_no_panic(&source, Path::new("."));
        let took = start.elapsed();
        assert!(result.is_err());
        eprintln!("took {took:?}");
        assert!(took < TIME_LIMIT, "took {took:?}");
        // The error renders without trouble too.
        let rendered = result.unwrap_err().render(false);
        assert!(rendered.contains("fuzz.nn:"), "{rendered}");
    }
}

#[test]
fn fifty_megabytes_parsed_to_the_end() {
    // A syntactically valid body all the way, with the error at the very end, so that the
    // whole input is lexed, parsed and lowered.
    let mut source =
        String::from("model big {\n  weights random(seed = 1)\n  input x: f32[1, 2]\n");
    let pad = "_".repeat(200);
    let mut prev = "x".to_string();
    let mut i = 0;
    while source.len() < SIZE {
        let name = format!("layer{i}{pad}");
        source.push_str(&format!("  {name} = relu({prev}) # {i}\n"));
        prev = name;
        i += 1;
    }
    source.push_str("  output nowhere\n}\n");
    let start = Instant::now();
    let e = load_no_panic(&source, Path::new(".")).unwrap_err();
    let took = start.elapsed();
    eprintln!("full parse took {took:?}");
    assert_eq!(e.message(), "output `nowhere` is never defined");
    assert!(took < TIME_LIMIT, "took {took:?}");

    // The same input truncated mid-way: a syntax error at the end of the file.
    let cut = source.len() - 40;
    let truncated = &source[..cut];
    let start = Instant::now();
    assert!(load_no_panic(truncated, Path::new(".")).is_err());
    assert!(start.elapsed() < TIME_LIMIT);
}

#[test]
fn a_million_nested_brackets_and_parens() {
    let n = 1_000_000;
    let heads = [
        "",
        "model m {\n  weights random(seed = 1)\n  input x: f32",
        "model m {\n  weights random(seed = 1)\n  input x: f32[1, 2]\n  y = relu",
        "model m {\n  weights random(seed = 1)\n  input x: f32[1, 2]\n  y = relu(x, a = ",
        "model m ",
    ];
    for head in heads {
        for open in ["[", "(", "{", "[(", "/*"] {
            let source = format!("{head}{}", open.repeat(n));
            let start = Instant::now();
            let e = load_no_panic(&source, Path::new(".")).unwrap_err();
            assert!(start.elapsed() < TIME_LIMIT);
            assert!(e.location().is_some());
        }
    }
    // Closing brackets too.
    let source = format!("model m {{ {}", "]".repeat(n));
    assert!(load_no_panic(&source, Path::new(".")).is_err());
}

/// Valid models covering every operator, to mutate.
const SEEDS: &[&str] = &[
    r#"model a {
  weights random(seed = 7)
  input x: f32[1, 4, 8, 8]
  input v: f32[2, 6]
  c   = conv2d(x, out = 8, kernel = 3, pad = 1, stride = [1, 1], groups = 2, params = "k")
  d   = dense(v, out = 5, bias = false)
  bn  = batchnorm(c, eps = 1e-3)
  af  = affine(bn)
  r   = relu(af)
  r6  = relu6(r)
  sg  = sigmoid(r6)
  sl  = silu(sg)
  hs  = hardswish(sl)
  hg  = hardsigmoid(hs)
  th  = tanh(hg)
  lr  = leaky_relu(th, alpha = 0.1)
  cl  = clip(lr, min = -inf, max = 6)
  a   = add(cl, c)
  gp  = global_avgpool(a)
  m   = mul(a, gp)
  cc  = concat(m, a, c)
  mp  = maxpool(cc, kernel = 2, ceil_mode = true)
  ap  = avgpool(cc, kernel = 3, stride = 1, pad = 1, count_include_pad = false)
  p   = pad(ap, pads = [1, 0, 1, 0], value = -1.5)
  fl  = flatten(p)
  id  = identity(fl)
  dr  = dropout(id)
  sm  = softmax(dr)
  output sm, d, mp
}
"#,
    r#"# A small conv net.
model tiny {
  weights random(seed = 3)   // generated
  input x: f32[1, 3, 16, 16]
  c1 = conv2d(x, out = 8, kernel = 3, pad = 1, pad_fill = true)
  b1 = batchnorm(c1)
  r1 = relu(b1)
  /* downsample */
  c2 = conv2d(r1, out = 16, kernel = [3, 3], stride = 2, pad = [1, 1, 1, 1], dilation = 1)
  g  = global_avgpool(c2)
  f  = flatten(g)
  y  = dense(f, out = 10)
  output y
}
"#,
    r#"model layers {
  weights random(seed = 11)
  input image: f32[2, 2, 6, 6]
  layer1.0.conv1 = conv2d(image, out = 4, kernel = 1, bias = false)
  layer1.0.bn1 = batchnorm(layer1.0.conv1)
  output = relu(layer1.0.bn1)
  s = sigmoid(output)
  q = mul(output, s)
  output q
}
"#,
];

fn token_spans(source: &str) -> Vec<std::ops::Range<usize>> {
    let mut lexer = Lexer::new(source);
    let mut spans = Vec::new();
    while let Ok(t) = lexer.next_token() {
        if t.kind == TokenKind::Eof {
            break;
        }
        spans.push(t.span);
    }
    spans
}

fn mutate(rng: &mut Rng, source: &str) -> String {
    let mut bytes = source.as_bytes().to_vec();
    let spans = token_spans(source);
    let mutations = 1 + rng.below(3);
    for _ in 0..mutations {
        let len = bytes.len().max(1);
        match rng.below(8) {
            // Delete a byte.
            0 if !bytes.is_empty() => {
                bytes.remove(rng.below(len));
            }
            // Duplicate a byte.
            1 if !bytes.is_empty() => {
                let i = rng.below(len);
                bytes.insert(i, bytes[i]);
            }
            // Insert random bytes.
            2 => {
                let i = rng.below(len + 1).min(bytes.len());
                for _ in 0..1 + rng.below(4) {
                    bytes.insert(i, rng.next() as u8);
                }
            }
            // Truncate.
            3 => bytes.truncate(rng.below(len)),
            // Token-level mutations use the original token positions while they fit.
            4..=7 if !spans.is_empty() => {
                let a = spans[rng.below(spans.len())].clone();
                let b = spans[rng.below(spans.len())].clone();
                if a.end > bytes.len() || b.end > bytes.len() {
                    continue;
                }
                let tok_a = bytes[a.clone()].to_vec();
                let tok_b = bytes[b.clone()].to_vec();
                match rng.below(4) {
                    // Delete a token.
                    0 => {
                        bytes.drain(a);
                    }
                    // Duplicate a token.
                    1 => {
                        let mut with_space = tok_a.clone();
                        with_space.push(b' ');
                        bytes.splice(a.start..a.start, with_space);
                    }
                    // Replace a token by another one.
                    2 => {
                        bytes.splice(a, tok_b);
                    }
                    // Swap two tokens.
                    _ => {
                        let (first, second, t1, t2) = if a.start < b.start {
                            (a, b, tok_b, tok_a)
                        } else {
                            (b, a, tok_a, tok_b)
                        };
                        if first.end <= second.start {
                            bytes.splice(second, t2);
                            bytes.splice(first, t1);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

#[test]
fn seeds_are_valid() {
    for seed in SEEDS {
        let g = common::load(seed).unwrap_or_else(|e| panic!("{}", e.render(false)));
        g.verify().expect("verifies");
    }
}

/// The inline seeds plus the repository's small example models (those with random weights
/// and under a million parameters, so thousands of mutants stay fast).
fn fuzz_seeds() -> Vec<String> {
    let mut seeds: Vec<String> = SEEDS.iter().map(|s| s.to_string()).collect();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut paths: Vec<_> = std::fs::read_dir(&examples)
        .map(|dir| dir.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    paths.sort();
    for path in paths {
        if path.extension().is_none_or(|e| e != "nn") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let small = bnc_frontend::lower_str(&text, "example.nn").is_ok_and(|g| {
            let params: usize = g
                .nodes
                .iter()
                .map(|n| {
                    let shapes: Vec<&Vec<usize>> = n.inputs.iter().map(|&i| g.shape(i)).collect();
                    n.op.param_specs(&shapes)
                        .iter()
                        .map(|p| p.shape.iter().product::<usize>())
                        .sum::<usize>()
                })
                .sum();
            matches!(g.weights, bnc_ir::WeightsSource::Random { .. }) && params < 1_000_000
        });
        if small && text.len() < 100_000 {
            seeds.push(text);
        }
    }
    seeds
}

#[test]
fn thousands_of_random_mutations_never_panic() {
    let dir = common::temp_dir("fuzz");
    let seeds = fuzz_seeds();
    let mut rng = Rng(7);
    let (mut ok, mut err) = (0, 0);
    for _ in 0..4000 {
        let seed = &seeds[rng.below(seeds.len())];
        let source = mutate(&mut rng, seed);
        match load_no_panic(&source, &dir) {
            Ok(g) => {
                // Whatever loads is a well-formed graph.
                if let Err(e) = g.verify() {
                    panic!("loaded an invalid graph ({e}) from:\n{source}");
                }
                ok += 1;
            }
            Err(e) => {
                // Every error renders and, when it has a location, points inside the file.
                let rendered = e.render(false);
                assert!(!rendered.is_empty());
                if let Some((file, line, col)) = e.location() {
                    assert!(line <= source.lines().count() + 1, "{rendered}");
                    assert!(
                        rendered.contains(&format!("{file}:{line}:{col}")),
                        "{rendered}"
                    );
                }
                err += 1;
            }
        }
    }
    eprintln!("fuzz: {ok} loaded, {err} rejected");
    // Both outcomes occur, so the mutations are neither too mild nor too harsh.
    assert!(ok > 100 && err > 1000, "ok {ok}, err {err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn non_utf8_files_never_panic() {
    let dir = common::temp_dir("non-utf8");
    let mut rng = Rng(99);
    for i in 0..200 {
        let mut bytes = SEEDS[i % SEEDS.len()].as_bytes().to_vec();
        let at = rng.below(bytes.len());
        bytes.insert(at, 0x80 | (rng.next() as u8 & 0x3f));
        let path = dir.join("m.nn");
        std::fs::write(&path, &bytes).unwrap();
        let result = catch_unwind(|| bnc_frontend::load_file(&path));
        let e = result.expect("no panic").unwrap_err();
        assert_eq!(e.message(), "file is not valid UTF-8");
        assert!(e.location().is_some());
        let _ = e.render(false);
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn random_weights_for_a_large_model_are_fast() {
    // About 25M parameters, ResNet-50 sized.
    let source = "model big {\n  weights random(seed = 5)\n  input x: f32[1, 2048]\n  \
                  y = dense(x, out = 12207)\n  output y\n}\n";
    let start = Instant::now();
    let g = common::load(source).expect("lowers");
    let took = start.elapsed();
    eprintln!("25M random parameters took {took:?}");
    assert_eq!(g.params["y.weight"].data.len(), 2048 * 12207);
    // Well under a second in release; generous for an unoptimised build.
    assert!(took < Duration::from_secs(10), "took {took:?}");
}
