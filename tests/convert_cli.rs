//! `shear convert` through the binary.

mod common;

use common::*;
use shear_model::load_llama;

#[test]
fn cli_convert_to_bf16_rounds_every_weight() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("bf16");
    let src = fixture("llama-mha");
    let o = run_shear(
        &[
            "convert",
            src.to_str().unwrap(),
            dir.to_str().unwrap(),
            "--dtype",
            "bf16",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let t = raw_tensors(&dir.join("model.safetensors"));
    assert_eq!(t.len(), 21);
    assert!(t.iter().all(|x| x.1 == "BF16"));
    // Every value is the source's value rounded to bf16.
    let a = load_llama::<B>(&src, &device()).unwrap();
    let b = load_llama::<B>(&dir, &device()).unwrap();
    let wa: Vec<f32> = a.embed_tokens.weight.val().to_data().to_vec().unwrap();
    let wb: Vec<f32> = b.embed_tokens.weight.val().to_data().to_vec().unwrap();
    for (x, y) in wa.iter().zip(&wb) {
        assert_eq!(half::bf16::from_f32(*x).to_f32(), *y);
    }
}
