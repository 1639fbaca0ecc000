//! Parsing and dequantization against files written by gguf-py (llama.cpp's Python package) and
//! its own dequantized values (see fixtures/README.md), plus malformed inputs built by hand.

use std::path::PathBuf;

use shear_gguf::{Array, Error, GgmlType, Gguf, Value};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[test]
fn metadata_of_every_value_type() {
    let g = Gguf::open(fixture("types_v3.gguf")).unwrap();
    assert_eq!(g.version(), 3);
    assert_eq!(g.alignment(), 64);
    let v = |k: &str| g.get(k).unwrap_or_else(|| panic!("no {k}")).clone();
    assert_eq!(v("general.architecture"), Value::String("llama".into()));
    assert_eq!(v("general.alignment"), Value::U32(64));
    assert_eq!(v("test.u8"), Value::U8(200));
    assert_eq!(v("test.i8"), Value::I8(-100));
    assert_eq!(v("test.u16"), Value::U16(60000));
    assert_eq!(v("test.i16"), Value::I16(-30000));
    assert_eq!(v("test.u32"), Value::U32(4_000_000_000));
    assert_eq!(v("test.i32"), Value::I32(-2_000_000_000));
    assert_eq!(v("test.f32"), Value::F32(0.15625));
    assert_eq!(v("test.bool"), Value::Bool(true));
    assert_eq!(v("test.string"), Value::String("héllo ✓".into()));
    assert_eq!(v("test.u64"), Value::U64(18_000_000_000_000_000_000));
    assert_eq!(v("test.i64"), Value::I64(-9_000_000_000_000_000_000));
    assert_eq!(v("test.f64"), Value::F64(-2.5e-300));
    let arr = |k: &str| match v(k) {
        Value::Array(a) => a,
        other => panic!("{k}: {other:?}"),
    };
    assert_eq!(arr("test.arr.u8"), Array::U8(vec![1, 2, 255]));
    assert_eq!(arr("test.arr.i8"), Array::I8(vec![-1, 2, -128]));
    assert_eq!(arr("test.arr.u16"), Array::U16(vec![1, 65535]));
    assert_eq!(arr("test.arr.i16"), Array::I16(vec![-32768, 7]));
    assert_eq!(arr("test.arr.u32"), Array::U32(vec![0, u32::MAX]));
    assert_eq!(arr("test.arr.i32"), Array::I32(vec![-5, 5]));
    assert_eq!(arr("test.arr.f32"), Array::F32(vec![0.5, -1.25]));
    assert_eq!(arr("test.arr.bool"), Array::Bool(vec![true, false, true]));
    assert_eq!(
        arr("test.arr.string"),
        Array::String(vec!["a".into(), "".into(), "ü".into()])
    );
    assert_eq!(arr("test.arr.u64"), Array::U64(vec![u64::MAX]));
    assert_eq!(arr("test.arr.i64"), Array::I64(vec![i64::MIN, 1]));
    assert_eq!(arr("test.arr.f64"), Array::F64(vec![1e300, -0.0]));
    assert_eq!(
        arr("test.arr.nested"),
        Array::Array(vec![
            Array::I32(vec![1, 2]),
            Array::I32(vec![3]),
            Array::I32(vec![4, 5, 6])
        ])
    );
    assert_eq!(
        arr("test.arr.nested_str"),
        Array::Array(vec![
            Array::String(vec!["x".into(), "y".into()]),
            Array::String(vec!["z".into()])
        ])
    );
    // Typed getters convert between integer widths and refuse other types with the key's name.
    assert_eq!(g.get_u64("test.u8").unwrap(), Some(200));
    assert_eq!(g.get_u64("test.missing").unwrap(), None);
    assert_eq!(
        g.get_i64_array("test.arr.u16").unwrap(),
        Some(vec![1, 65535])
    );
    let e = g.get_u64("test.i8").unwrap_err().to_string();
    assert!(e.contains("test.i8") && e.contains("types_v3.gguf"), "{e}");
    let e = g.get_str("test.arr.u8").unwrap_err().to_string();
    assert!(e.contains("array of u8"), "{e}");
}

/// Our dequantization of every supported type equals gguf-py's `dequantize` bit for bit (the
/// arithmetic is done in f32 in the same order, so no ulp slack is needed), and shapes come out
/// reversed from GGUF's fastest-first dims.
#[test]
fn dequantization_matches_gguf_py_exactly() {
    let g = Gguf::open(fixture("types_v3.gguf")).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("types_v3.ref.json")).unwrap()).unwrap();
    let raw = std::fs::read(fixture("types_v3.ref.f32")).unwrap();
    let reference: Vec<f32> = raw
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let entries = manifest.as_array().unwrap();
    assert_eq!(entries.len(), g.tensors().len());
    let mut types_seen = Vec::new();
    for e in entries {
        let name = e["name"].as_str().unwrap();
        let info = g.tensor(name).unwrap();
        assert_eq!(info.ggml_type.name(), e["type"].as_str().unwrap(), "{name}");
        let shape: Vec<usize> = e["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(info.shape(), shape, "{name}");
        let (off, count) = (
            e["offset"].as_u64().unwrap() as usize,
            e["count"].as_u64().unwrap() as usize,
        );
        let expected = &reference[off..off + count];
        let got = g.tensor_f32(name).unwrap();
        assert_eq!(got.len(), count, "{name}");
        for (i, (a, b)) in got.iter().zip(expected).enumerate() {
            assert_eq!(a.to_bits(), b.to_bits(), "{name}[{i}]: {a} vs {b}");
        }
        types_seen.push(info.ggml_type);
    }
    for t in [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q5_K,
    ] {
        assert!(types_seen.contains(&t), "fixture lacks {t}");
    }
    // GGUF dims are fastest-first.
    assert_eq!(g.tensor("f32_3d").unwrap().dims, vec![4, 3, 2]);
}

#[test]
fn version_2_file() {
    let g = Gguf::open(fixture("v2.gguf")).unwrap();
    assert_eq!(g.version(), 2);
    assert_eq!(g.alignment(), 32);
    assert_eq!(g.get_str("test.string").unwrap(), Some("version two"));
    assert_eq!(g.get_u64("test.u32").unwrap(), Some(7));
    assert_eq!(g.tensor("t").unwrap().shape(), vec![2, 3]);
    assert_eq!(g.tensor_f32("t").unwrap(), vec![0., 1., 2., 3., 4., 5.]);
    assert_eq!(g.tensor_f32("u").unwrap(), vec![1.5, -2.0]);
}

#[test]
fn from_bytes_equals_open() {
    let bytes = std::fs::read(fixture("types_v3.gguf")).unwrap();
    let a = Gguf::from_bytes("mem", bytes).unwrap();
    let b = Gguf::open(fixture("types_v3.gguf")).unwrap();
    assert_eq!(a.metadata(), b.metadata());
    assert_eq!(a.tensors(), b.tensors());
    assert_eq!(a.tensor_f32("q6_k").unwrap(), b.tensor_f32("q6_k").unwrap());
}

// ---------------------------------------------------------------------------------------------
// Malformed input, built by hand.
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct W(Vec<u8>);

impl W {
    fn header(version: u32, n_tensors: u64, n_kv: u64) -> W {
        let mut w = W::default();
        w.0.extend(b"GGUF");
        w.u32(version).u64(n_tensors).u64(n_kv);
        w
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend(v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend(v.to_le_bytes());
        self
    }
    fn str(&mut self, s: &str) -> &mut Self {
        self.u64(s.len() as u64);
        self.0.extend(s.as_bytes());
        self
    }
    fn kv_u32(&mut self, k: &str, v: u32) -> &mut Self {
        self.str(k).u32(4).u32(v)
    }
    fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> &mut Self {
        self.str(name).u32(dims.len() as u32);
        for &d in dims {
            self.u64(d);
        }
        self.u32(ty).u64(offset)
    }
    /// Pads to 32 and appends `n` data bytes.
    fn data(&mut self, n: usize) -> &mut Self {
        while !self.0.len().is_multiple_of(32) {
            self.0.push(0);
        }
        self.0.extend(std::iter::repeat_n(0x11u8, n));
        self
    }
    fn parse(&self) -> Result<Gguf, Error> {
        Gguf::from_bytes("bad.gguf", self.0.clone())
    }
}

fn err(w: &W) -> Error {
    match w.parse() {
        Ok(_) => panic!("parsed"),
        Err(e) => e,
    }
}

#[test]
fn truncated_header_and_bad_magic() {
    assert!(matches!(
        err(&W::default()),
        Error::Truncated { ref what, .. } if what == "magic"
    ));
    let mut w = W::default();
    w.0.extend(b"GGUF\x03\x00");
    let e = err(&w);
    assert!(
        matches!(e, Error::Truncated { ref what, .. } if what == "version"),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        "bad.gguf: truncated: version needs 4 bytes at offset 4, but the file has 6 bytes"
    );
    let mut w = W::default();
    w.0.extend(b"GGML\x03\x00\x00\x00");
    let e = err(&w);
    assert!(matches!(e, Error::BadMagic { .. }));
    assert!(
        e.to_string().starts_with("bad.gguf: not a GGUF file"),
        "{e}"
    );
    // Header cut inside the counts.
    let mut w = W::header(3, 0, 0);
    w.0.truncate(20);
    assert!(matches!(err(&w), Error::Truncated { ref what, .. } if what == "metadata count"));
}

#[test]
fn unsupported_versions() {
    for (v, hint) in [
        (1, "version 1"),
        (0x0300_0000, "big-endian"),
        (4, ""),
        (0, ""),
    ] {
        let e = err(&W::header(v, 0, 0));
        assert!(
            matches!(e, Error::UnsupportedVersion { version, .. } if version == v),
            "{e}"
        );
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("GGUF version {v} is not supported")),
            "{msg}"
        );
        assert!(msg.contains(hint), "{msg}");
    }
}

#[test]
fn absurd_counts_are_refused_before_allocating() {
    assert!(matches!(
        err(&W::header(3, 0, u64::MAX)),
        Error::CountTooLarge { .. }
    ));
    assert!(matches!(
        err(&W::header(3, u64::MAX, 0)),
        Error::CountTooLarge { .. }
    ));
    assert!(matches!(
        err(&W::header(3, 1 << 40, 0)),
        Error::CountTooLarge { .. }
    ));
    // Array count whose byte size overflows u64.
    let mut w = W::header(3, 0, 1);
    w.str("a").u32(9).u32(10).u64(u64::MAX / 4);
    let e = err(&w);
    assert!(matches!(e, Error::CountTooLarge { .. }), "{e}");
    assert!(e.to_string().contains("array of metadata key `a`"), "{e}");
    // String length past the end.
    let mut w = W::header(3, 0, 1);
    w.str("s").u32(8).u64(u64::MAX);
    assert!(matches!(err(&w), Error::Truncated { .. }));
    // Key length past the end.
    let mut w = W::header(3, 0, 1);
    w.u64(1 << 62).u64(0).u64(0);
    assert!(matches!(err(&w), Error::Truncated { .. }));
    // Too few bytes left for even one metadata entry.
    let mut w = W::header(3, 0, 1);
    w.u64(0);
    assert!(matches!(err(&w), Error::CountTooLarge { .. }));
}

#[test]
fn bad_metadata() {
    let mut w = W::header(3, 0, 1);
    w.str("k").u32(13).u32(0);
    let e = err(&w);
    assert!(
        matches!(e, Error::UnknownValueType { type_id: 13, .. }),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        "bad.gguf: metadata key `k`: unknown value type 13"
    );

    let mut w = W::header(3, 0, 2);
    w.kv_u32("k", 1).kv_u32("k", 2);
    assert!(matches!(err(&w), Error::DuplicateKey { .. }));

    let mut w = W::header(3, 0, 1);
    w.u64(2);
    w.0.extend([0xff, 0xfe]);
    w.u32(4).u32(0);
    assert!(matches!(err(&w), Error::InvalidUtf8 { .. }));

    // Arrays nested 100 deep.
    let mut w = W::header(3, 0, 1);
    w.str("deep").u32(9);
    for _ in 0..100 {
        w.u32(9).u64(1);
    }
    w.u32(4).u64(0);
    let e = err(&w);
    assert!(matches!(e, Error::NestingTooDeep { .. }), "{e}");

    for a in [0u32, 3, 48] {
        let mut w = W::header(3, 0, 1);
        w.kv_u32("general.alignment", a);
        let e = err(&w);
        assert!(
            matches!(e, Error::BadValue { ref key, .. } if key == "general.alignment"),
            "{e}"
        );
    }
    let mut w = W::header(3, 0, 1);
    w.str("general.alignment").u32(8).str("32");
    assert!(matches!(err(&w), Error::WrongType { .. }));
}

#[test]
fn bad_tensor_infos() {
    // Unknown ggml type (4 was Q4_2, retired).
    let mut w = W::header(3, 1, 0);
    w.tensor("t", &[32], 4, 0).data(32);
    let e = err(&w);
    assert!(
        matches!(e, Error::UnknownGgmlType { type_id: 4, .. }),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        "bad.gguf: tensor `t`: unknown ggml type id 4"
    );

    // Data past the end of the file.
    let mut w = W::header(3, 1, 0);
    w.tensor("t", &[8, 2], 0, 0).data(63);
    let e = err(&w);
    assert!(
        matches!(
            e,
            Error::DataOutOfBounds {
                end: 64,
                len: 63,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("tensor `t`"));

    // Offset + size overflows.
    let mut w = W::header(3, 1, 0);
    w.tensor("t", &[8], 0, u64::MAX - 31).data(64);
    assert!(matches!(err(&w), Error::DataOutOfBounds { .. }));

    // Element count overflows.
    let mut w = W::header(3, 1, 0);
    w.tensor("t", &[1 << 40, 1 << 40], 0, 0).data(0);
    assert!(matches!(err(&w), Error::ShapeOverflow { .. }));
    let mut w = W::header(3, 1, 0);
    w.tensor("t", &[u64::MAX], 1, 0).data(0);
    assert!(matches!(err(&w), Error::ShapeOverflow { .. }));

    // Too many dims.
    let mut w = W::header(3, 1, 0);
    w.tensor("t", &[1, 1, 1, 1, 1], 0, 0).data(4);
    assert!(matches!(err(&w), Error::BadDimCount { n_dims: 5, .. }));

    // Misaligned offset.
    let mut w = W::header(3, 1, 0);
    w.tensor("t", &[1], 0, 4).data(64);
    assert!(matches!(
        err(&w),
        Error::Misaligned {
            offset: 4,
            alignment: 32,
            ..
        }
    ));

    // Row length not a whole number of blocks.
    let mut w = W::header(3, 1, 0);
    w.tensor("t", &[33], 2, 0).data(64);
    assert!(matches!(
        err(&w),
        Error::BadRowLength {
            row: 33,
            block: 32,
            ..
        }
    ));

    // Duplicate tensor.
    let mut w = W::header(3, 2, 0);
    w.tensor("t", &[1], 0, 0).tensor("t", &[1], 0, 32).data(64);
    assert!(matches!(err(&w), Error::DuplicateTensor { .. }));

    // Tensor info cut short.
    let mut w = W::header(3, 1, 0);
    w.str("t").u32(2).u64(4).u32(0);
    let e = err(&w);
    assert!(
        matches!(e, Error::Truncated { ref what, .. } if what == "info of tensor `t`"),
        "{e}"
    );
}

#[test]
fn unsupported_quantization_is_named() {
    // A valid IQ2_XXS tensor (256 values in one 66-byte block): parses, refuses to dequantize.
    let mut w = W::header(3, 1, 0);
    w.tensor("blk.0.attn_q.weight", &[256], 16, 0).data(66);
    let g = w.parse().unwrap();
    let e = g.tensor_f32("blk.0.attn_q.weight").unwrap_err();
    assert_eq!(
        e.to_string(),
        "bad.gguf: tensor `blk.0.attn_q.weight`: unsupported quantization IQ2_XXS (supported: \
         F32, F16, BF16, F64, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, I8, I16, I32)"
    );
    assert!(matches!(
        g.tensor_f32("nope").unwrap_err(),
        Error::MissingTensor { .. }
    ));
}

#[test]
fn no_tensors_and_empty_tensors() {
    let g = W::header(3, 0, 0).parse().unwrap();
    assert!(g.tensors().is_empty() && g.metadata().is_empty());
    // A zero-sized tensor after the end of a file with no data section.
    let mut w = W::header(3, 1, 0);
    w.tensor("e", &[0, 5], 0, 0);
    let g = w.parse().unwrap();
    assert_eq!(g.tensor("e").unwrap().shape(), vec![5, 0]);
    assert!(g.tensor_f32("e").unwrap().is_empty());
}

/// Every prefix of a real file is an error (never a panic), and single-byte corruptions anywhere
/// parse or fail cleanly, and whatever parses dequantizes or fails cleanly.
#[test]
fn truncations_and_corruptions_never_panic() {
    let bytes = std::fs::read(fixture("types_v3.gguf")).unwrap();
    for n in 0..bytes.len() {
        // The data section's last tensor ends before the final padding, so only prefixes that cut
        // into tensor data or the header must fail.
        let r = Gguf::from_bytes("cut", bytes[..n].to_vec());
        if n < bytes.len() - 64 {
            assert!(r.is_err(), "prefix of {n} bytes parsed");
        }
    }
    let mut state = 0x2545F4914F6CDD1Du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..3000 {
        let mut b = bytes.clone();
        let pos = (next() % 1024.min(b.len() as u64)) as usize; // header and infos
        b[pos] = next() as u8;
        if let Ok(g) = Gguf::from_bytes("flip", b) {
            for t in g.tensors() {
                let _ = g.dequantize(t);
            }
        }
    }
}
