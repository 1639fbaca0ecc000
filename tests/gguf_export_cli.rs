//! `shear convert MODEL OUT.gguf` through the binary: the round trip through shear's own GGUF
//! reader, and the refusals (one line, non-zero exit, no file left behind).
//! What llama.cpp makes of the files is checked by scripts/check_gguf_llamacpp.py.

mod common;

use std::path::Path;

use common::*;

fn f32_values(dtype: &str, bytes: &[u8]) -> Vec<f32> {
    match dtype {
        "F32" => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        "F16" => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        "BF16" => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        other => panic!("dtype {other}"),
    }
}

fn convert(args: &[&str]) -> String {
    let mut all = vec!["convert"];
    all.extend_from_slice(args);
    let o = run_shear(&all, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The embedded tiny model (stored f16) to GGUF in its own type, in f32 and in bf16, and each
/// back to a checkpoint: every tensor equals the source's values (f16 and f32 exactly; bf16
/// matrices rounded to nearest even), by name and shape, and the tokenizer comes back token for token.
#[test]
fn cli_gguf_export_round_trips_the_tiny_model() {
    let tmp = tempfile::tempdir().unwrap();
    let src = assets().join("tiny");
    let want = raw_tensors(&src.join("model.safetensors"));
    for (dtype, round) in [
        (None, (|x: f32| x) as fn(f32) -> f32),
        (Some("f32"), |x: f32| x),
        (Some("bf16"), |x: f32| half::bf16::from_f32(x).to_f32()),
    ] {
        let name = dtype.unwrap_or("default");
        let file = tmp.path().join(format!("tiny-{name}.gguf"));
        let mut args = vec![src.to_str().unwrap(), file.to_str().unwrap()];
        if let Some(d) = dtype {
            args.extend(["--dtype", d]);
        }
        let stdout = convert(&args);
        let ty = dtype.unwrap_or("f16");
        assert!(
            stdout.contains(&format!("({ty}, 39 tensors,")),
            "{name}: {stdout}"
        );
        let back = tmp.path().join(format!("back-{name}"));
        convert(&[file.to_str().unwrap(), back.to_str().unwrap()]);
        let got = raw_tensors(&back.join("model.safetensors"));
        let names = |t: &[(String, String, Vec<usize>, Vec<u8>)]| {
            let mut n: Vec<_> = t.iter().map(|x| (x.0.clone(), x.2.clone())).collect();
            n.sort();
            n
        };
        assert_eq!(names(&got), names(&want), "{name}");
        for (n, dt, shape, bytes) in &want {
            let (_, gdt, _, gbytes) = got.iter().find(|g| &g.0 == n).unwrap();
            let (w, g) = (f32_values(dt, bytes), f32_values(gdt, gbytes));
            // 1-D tensors (the norms) stay f32 in every file type, as llama.cpp's converter
            // keeps them.
            let round = if shape.len() == 1 { |x| x } else { round };
            assert!(
                w.iter()
                    .zip(&g)
                    .all(|(a, b)| round(*a).to_bits() == b.to_bits()),
                "{name} {n}"
            );
        }
        let tok = |d: &Path| {
            let t: serde_json::Value =
                serde_json::from_slice(&std::fs::read(d.join("tokenizer.json")).unwrap()).unwrap();
            (t["model"]["vocab"].clone(), t["model"]["merges"].clone())
        };
        let (wv, wm) = tok(&src);
        let (gv, gm) = tok(&back);
        assert_eq!(gv, wv, "{name}: vocabulary");
        let pair = |m: &serde_json::Value| -> Vec<String> {
            m.as_array()
                .unwrap()
                .iter()
                .map(|x| match x {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Array(p) => {
                        format!("{} {}", p[0].as_str().unwrap(), p[1].as_str().unwrap())
                    }
                    _ => panic!("merge {x}"),
                })
                .collect()
        };
        assert_eq!(pair(&gm), pair(&wm), "{name}: merges");
    }
}

/// The directory holds nothing but what was there before (no partial or temporary file).
fn assert_nothing_written(dir: &Path, before: &[String]) {
    let mut now: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    now.sort();
    assert_eq!(now, before, "{}", dir.display());
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn copy_tiny(to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for f in std::fs::read_dir(assets().join("tiny")).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), to.join(f.file_name())).unwrap();
    }
}

/// Refused with one line naming the file or value and exit status 1, and nothing written:
/// an output inside the model, a type shear does not write, a vocabulary larger than the
/// embedding, and a model without tokenizer.json.
#[test]
fn cli_gguf_export_refuses_what_it_cannot_write() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    copy_tiny(&model);
    let m = model.to_str().unwrap();

    let before = listing(&model);
    let inside = model.join("model.gguf");
    let o = run_shear(&["convert", m, inside.to_str().unwrap()], &[]);
    assert_one_line_error(&o, &["model.gguf", "inside the model directory"]);
    assert_nothing_written(&model, &before);

    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let file = out.join("m.gguf");
    let f = file.to_str().unwrap();
    let o = run_shear(&["convert", m, f, "--dtype", "q4_k"], &[]);
    assert_one_line_error(&o, &["--dtype q4_k", "f32, f16, bf16, q8_0"]);
    assert_nothing_written(&out, &[]);

    let small = tmp.path().join("small");
    copy_tiny(&small);
    let cfg = small.join("config.json");
    let mut c: serde_json::Value = serde_json::from_slice(&std::fs::read(&cfg).unwrap()).unwrap();
    c["vocab_size"] = serde_json::json!(1000);
    std::fs::write(&cfg, serde_json::to_vec(&c).unwrap()).unwrap();
    let o = run_shear(&["convert", small.to_str().unwrap(), f], &[]);
    assert_one_line_error(
        &o,
        &[
            "config.json",
            "the tokenizer has 4096 tokens, but the model's embedding has only 1000 rows",
        ],
    );
    assert_nothing_written(&out, &[]);

    let bare = tmp.path().join("bare");
    copy_tiny(&bare);
    std::fs::remove_file(bare.join("tokenizer.json")).unwrap();
    let o = run_shear(&["convert", bare.to_str().unwrap(), f], &[]);
    assert_one_line_error(&o, &["tokenizer.json", "missing"]);
    assert_nothing_written(&out, &[]);

    // A tensor that cannot be read mid-file (the checkpoint is cut short) leaves no file either.
    let cut = tmp.path().join("cut");
    copy_tiny(&cut);
    let st = cut.join("model.safetensors");
    let bytes = std::fs::read(&st).unwrap();
    std::fs::write(&st, &bytes[..bytes.len() / 2]).unwrap();
    let o = run_shear(&["convert", cut.to_str().unwrap(), f], &[]);
    assert!(!o.status.success());
    assert!(!String::from_utf8_lossy(&o.stderr).contains("panicked"));
    assert_nothing_written(&out, &[]);
}

/// `shear materialize --gguf q8_0` writes `OUT.gguf` next to OUT, with a note for the FFN rows
/// of 176 values that Q8_0 cannot block; read back, it has the materialized model's shape and
/// its weights within the Q8_0 step of OUT's (checked by the library tests; here: the shape, a
/// 1-D tensor exactly, and the f16 fallback of ffn_down to f16 rounding).
#[test]
fn cli_materialize_writes_a_gguf_next_to_the_model() {
    let tmp = tempfile::tempdir().unwrap();
    let ids: Vec<String> = (0..4000u32)
        .map(|i| ((i * 7919 + 13) % 4096).to_string())
        .collect();
    let data = tmp.path().join("tokens.ids");
    std::fs::write(&data, ids.join(" ")).unwrap();
    let run = tmp.path().join("run");
    let tiny = assets().join("tiny");
    let o = run_shear(
        &[
            "prune",
            tiny.to_str().unwrap(),
            "--target",
            "layers=3,hidden=64,heads=2,intermediate=176",
            "--data",
            data.to_str().unwrap(),
            "--steps",
            "2",
            "--seq",
            "16",
            "--batch",
            "1",
            "--grad-accum",
            "1",
            "--out",
            run.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let small = tmp.path().join("small");
    let o = run_shear(
        &[
            "materialize",
            "--source",
            tiny.to_str().unwrap(),
            "--masks",
            run.join("masks.safetensors").to_str().unwrap(),
            "--out",
            small.to_str().unwrap(),
            "--gguf",
            "q8_0",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let file = tmp.path().join("small.gguf");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains(&format!("gguf: {} (q8_0, 30 tensors,", file.display())),
        "{stdout}"
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("note: blk.*.ffn_down.weight (3 tensors): rows of 176 values"),
        "{stderr}"
    );
    let back = tmp.path().join("back");
    convert(&[file.to_str().unwrap(), back.to_str().unwrap()]);
    let (a, b) = (
        shear_model::LlamaConfig::from_file(&small).unwrap(),
        shear_model::LlamaConfig::from_file(&back).unwrap(),
    );
    assert_eq!(
        shear_model::TargetShape::of(&a).to_string(),
        shear_model::TargetShape::of(&b).to_string()
    );
    let want = raw_tensors(&small.join("model.safetensors"));
    let got = raw_tensors(&back.join("model.safetensors"));
    let get = |t: &[(String, String, Vec<usize>, Vec<u8>)], n: &str| {
        let x = t.iter().find(|x| x.0 == n).unwrap();
        f32_values(&x.1, &x.3)
    };
    let norm = "model.layers.0.input_layernorm.weight";
    assert_eq!(get(&want, norm), get(&got, norm), "1-D tensors stay f32");
    let down = "model.layers.1.mlp.down_proj.weight";
    let rounded: Vec<f32> = get(&want, down)
        .iter()
        .map(|&x| half::f16::from_f32(x).to_f32())
        .collect();
    assert_eq!(rounded, get(&got, down), "ffn_down stored f16");
}
