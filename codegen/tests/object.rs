//! `emit_object`: link the ELF object with a tiny C driver using `cc`, run it, and compare
//! with the interpreter. Skipped (with a message) when no `cc` is installed.

mod common;
use std::path::Path;
use std::process::Command;

use bnc_codegen::{Options, TargetCpu, emit_object};
use common::{MODEL_TOL, inputs, model};

const DRIVER: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include "model.h"

static float *read_all(const char *path, size_t n) {
    float *p = malloc(n * sizeof(float));
    FILE *f = fopen(path, "rb");
    if (!f || fread(p, sizeof(float), n, f) != n) { fprintf(stderr, "read %s\n", path); exit(2); }
    fclose(f);
    return p;
}

int main(int argc, char **argv) {
    (void)argc;
    const float *in[MDL_NUM_INPUTS];
    size_t in_len[] = { MDL_INPUT0_LEN, MDL_INPUT1_LEN };
    for (int i = 0; i < MDL_NUM_INPUTS; i++) in[i] = read_all(argv[1 + i], in_len[i]);
    float *out0 = malloc(MDL_OUTPUT0_LEN * sizeof(float));
    float *outs[] = { out0 };
    void *ws = aligned_alloc(64, (mdl_workspace_size() + 63) / 64 * 64);
    if (mdl_forward(in, outs, ws) != 0) return 3;
    FILE *f = fopen(argv[1 + MDL_NUM_INPUTS], "wb");
    fwrite(out0, sizeof(float), MDL_OUTPUT0_LEN, f);
    fclose(f);
    return 0;
}
"#;

fn write_f32(path: &Path, data: &[f32]) {
    let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn object_links_with_cc_and_matches_interpreter() {
    link_and_check(&Options::default(), "native");
}

#[test]
fn x86_64_v3_object_links_with_cc_and_matches_interpreter() {
    if !TargetCpu::X86_64V3.host_supports() {
        eprintln!("SKIPPED: this machine cannot run x86-64-v3 code");
        return;
    }
    let o = Options {
        target_cpu: TargetCpu::X86_64V3,
        ..Options::default()
    };
    link_and_check(&o, "v3");
}

/// `multi`: the model three times (fallback, AVX2, AVX-512 microkernels) and a dispatcher
/// that asks `cpuid`; links with `cc`, matches the interpreter on this machine (whichever
/// variant it picks), and holds the wide code of both levels.
#[test]
fn multi_object_dispatches_and_matches_interpreter() {
    let o = Options {
        target_cpu: TargetCpu::Multi,
        ..Options::default()
    };
    link_and_check(&o, "multi");
    let (obj, header) = emit_object(&test_model(), &o, "mdl").unwrap();
    assert!(header.contains("mdl_forward"), "{header}");
    let Some(text) = disassemble(&obj, "multi") else {
        return;
    };
    for needle in [
        "cpuid",
        "xgetbv",
        "ymm",
        "zmm",
        "<mdl__forward_v2>:",
        "<mdl__forward_v3>:",
        "<mdl__forward_v4>:",
    ] {
        assert!(text.contains(needle), "multi object lacks `{needle}`");
    }
}

/// The CPU check the `multi` dispatcher runs agrees with the standard library's feature
/// detection on this machine.
#[test]
fn multi_cpu_check_agrees_with_feature_detection() {
    let level = bnc_codegen::testing::cpu_level().unwrap();
    let want = if TargetCpu::X86_64V4.host_supports() {
        4
    } else if TargetCpu::X86_64V3.host_supports() {
        3
    } else {
        2
    };
    assert_eq!(level, want);
}

/// The JIT compiles for the machine it runs on: `multi` is an object-file level.
#[test]
fn multi_is_an_error_for_the_jit() {
    let o = Options {
        target_cpu: TargetCpu::Multi,
        ..Options::default()
    };
    let e = bnc_codegen::compile(&test_model(), &o)
        .err()
        .expect("an error");
    assert!(e.to_string().contains("object"), "{e}");
}

#[test]
fn x86_64_v2_object_links_and_has_no_wide_registers() {
    let o = Options {
        target_cpu: TargetCpu::X86_64V2,
        ..Options::default()
    };
    link_and_check(&o, "v2");
    let (obj, _) = emit_object(&test_model(), &o, "mdl").unwrap();
    let Some(text) = disassemble(&obj, "v2") else {
        return;
    };
    assert!(text.contains("xmm"), "expected SSE code:\n{text}");
    for bad in ["ymm", "zmm", "vfmadd", "vex", "{k"] {
        assert!(!text.contains(bad), "x86-64-v2 object uses `{bad}`");
    }
    // And the v3/v4 objects do use wide registers.
    for (t, reg) in [(TargetCpu::X86_64V3, "ymm"), (TargetCpu::X86_64V4, "zmm")] {
        let o = Options {
            target_cpu: t,
            ..Options::default()
        };
        let (obj, _) = emit_object(&test_model(), &o, "mdl").unwrap();
        let text = disassemble(&obj, &t.to_string()).expect("objdump worked a moment ago");
        assert!(text.contains(reg), "{t} object has no {reg}");
        if t == TargetCpu::X86_64V3 {
            // No AVX-512 at all: no zmm, no EVEX-only registers or masks.
            let mut bad: Vec<String> = vec!["zmm".into(), "{evex}".into(), "%k1".into()];
            for i in 16..32 {
                bad.push(format!("%ymm{i}"));
                bad.push(format!("%xmm{i}"));
            }
            for b in &bad {
                assert!(!text.contains(b.as_str()), "x86-64-v3 object uses `{b}`");
            }
        }
    }
}

/// `objdump -d` of an object, or None (SKIPPED printed) when objdump does not run.
fn disassemble(obj: &[u8], tag: &str) -> Option<String> {
    let path = std::env::temp_dir().join(format!("bnc_obj_{tag}_{}.o", std::process::id()));
    std::fs::write(&path, obj).unwrap();
    let out = Command::new("objdump").arg("-d").arg(&path).output();
    let _ = std::fs::remove_file(&path);
    match out {
        Ok(o) if o.status.success() => Some(String::from_utf8_lossy(&o.stdout).into_owned()),
        _ => {
            eprintln!("SKIPPED: no working `objdump`, cannot disassemble the object");
            None
        }
    }
}

/// Two inputs, a fused conv (+BN+add+relu), a depthwise conv, pools, concat, a dense head,
/// and a wider conv so the GEMM microkernel has full and edge tiles.
fn test_model() -> bnc_ir::Graph {
    model(
        "input x: f32[1, 3, 12, 12]\n input z: f32[1, 8, 6, 6]\n \
         c = conv2d(x, out = 8, kernel = 3, stride = 2, pad = 1)\n b = batchnorm(c)\n \
         a = add(b, z)\n r = relu(a)\n d = conv2d(r, out = 8, kernel = 3, pad = 1, groups = 8)\n \
         k = concat(r, d)\n e = conv2d(k, out = 29, kernel = 3, pad = 1)\n q = relu6(e)\n \
         m = maxpool(q, kernel = 2)\n g = global_avgpool(m)\n f = flatten(g)\n \
         y = dense(f, out = 5)\n s = softmax(y)\n output s",
    )
}

fn link_and_check(options: &Options, tag: &str) {
    if Command::new("cc").arg("--version").output().is_err() {
        eprintln!("SKIPPED: no `cc` on PATH, cannot link the object file");
        return;
    }
    let g = test_model();
    let (obj, header) = emit_object(&g, options, "mdl").unwrap();
    assert!(header.contains("int mdl_forward(const float *const *inputs"));
    let dir = std::env::temp_dir().join(format!("bnc_obj_test_{tag}_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("model.o"), &obj).unwrap();
    std::fs::write(dir.join("model.h"), &header).unwrap();
    std::fs::write(dir.join("main.c"), DRIVER).unwrap();
    let st = Command::new("cc")
        .current_dir(&dir)
        .args(["-std=c11", "-O1", "main.c", "model.o", "-o", "run", "-lm"])
        .status()
        .unwrap();
    assert!(st.success(), "cc failed to link the object");
    let ins = inputs(&g, 2);
    write_f32(&dir.join("in0.bin"), &ins[0].data);
    write_f32(&dir.join("in1.bin"), &ins[1].data);
    let st = Command::new(dir.join("run"))
        .current_dir(&dir)
        .args(["in0.bin", "in1.bin", "out.bin"])
        .status()
        .unwrap();
    assert!(st.success(), "the linked program failed");
    let bytes = std::fs::read(dir.join("out.bin")).unwrap();
    let got: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let want = bnc_ir::interp::run(&g, &ins).unwrap();
    let got = bnc_ir::Tensor::new(want[0].shape.clone(), got);
    let err = want[0].max_abs_diff(&got) / want[0].max_abs().max(1.0);
    assert!(err <= MODEL_TOL, "{tag} object output differs: {err}");
    let _ = std::fs::remove_dir_all(&dir);
}
