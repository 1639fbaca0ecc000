//! Hard-concrete masks, the masked forward and materialization against the reference
//! (tests/fixtures/l0_and_loading.json and tests/fixtures/pruning/, made with transformers).

use burn::prelude::*;
use shear_model::masks::hard_concrete::deterministic_row;
use shear_model::materialize::DeterministicMasks;
use shear_model::{load_llama, materialize, HardConcrete, LlamaConfig, Mask, ZMasks};
use shear_testkit::*;

fn assert_rel(got: &[f64], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs() / w.abs().max(1e-12);
        assert!(
            err <= tol || (g - w).abs() <= 1e-12,
            "{what}[{i}]: {g} vs {w}"
        );
    }
}

fn tensor2(v: &[f64], rows: usize, device: &burn::tensor::Device<B>) -> Tensor<B, 2> {
    let f: Vec<f32> = v.iter().map(|&x| x as f32).collect();
    Tensor::from_data(TensorData::new(f, [rows, v.len() / rows]), device)
}

#[test]
fn hard_concrete_constants_match_the_reference() {
    let c = &l0_fixture()["constants"];
    let hc = HardConcrete::default();
    assert_eq!(hc.temperature, c["temperature"].as_f64().unwrap());
    assert_eq!(hc.limit_l, c["limit_l"].as_f64().unwrap());
    assert_eq!(hc.limit_r, c["limit_r"].as_f64().unwrap());
    assert_eq!(hc.epsilon, c["epsilon"].as_f64().unwrap());
    assert!((hc.log_alpha_clamp - c["log_alpha_clamp"].as_f64().unwrap()).abs() < 1e-12);
    assert_eq!(
        hc.deterministic_scale,
        c["deterministic_scale"].as_f64().unwrap()
    );
}

#[test]
fn scores_samples_and_deterministic_mask_match_the_reference() {
    let f = l0_fixture();
    let la = f64s(&f["log_alpha"]);
    let hc = HardConcrete::default();
    // Host (f64) scores: 1e-6 relative.
    let scores: Vec<f64> = la.iter().map(|&a| hc.score_of(a)).collect();
    assert_rel(&scores, &f64s(&f["score"]), 1e-6, "score");
    // Tensor (f32) scores and samples for the given uniform draws.
    let dev = device();
    let mask = Mask::<B>::from_log_alpha(tensor2(&la, 1, &dev), hc);
    let s: Vec<f32> = mask.score().into_data().to_vec().unwrap();
    let s: Vec<f64> = s.into_iter().map(f64::from).collect();
    assert_rel(&s, &f64s(&f["score"]), 1e-6, "score (tensor)");
    let u = tensor2(&f64s(&f["uniform_u"]), 1, &dev);
    let z: Vec<f32> = mask.sample_with(u).into_data().to_vec().unwrap();
    let z: Vec<f64> = z.into_iter().map(f64::from).collect();
    assert_rel(&z, &f64s(&f["sampled_z"]), 1e-6, "sampled_z");
    // Deterministic mask keeping 5 of 12, with a tie at the clamp value.
    let det = deterministic_row(&la, Some(5), &hc);
    assert_rel(
        &det,
        &f64s(&f["deterministic_keep_5"]),
        1e-6,
        "deterministic_keep_5",
    );
    // The same from the mask module (log_alpha stored in f32).
    let from_mask = mask.deterministic("head", Some(5)).unwrap();
    assert_eq!(from_mask.len(), 1);
    assert_rel(&from_mask[0], &det, 1e-6, "deterministic (mask module)");
}

#[test]
fn deterministic_ties_drop_the_lower_index_first() {
    let hc = HardConcrete::default();
    let det = deterministic_row(&[4.6, 4.6, 4.6, 1.0], Some(2), &hc);
    assert_eq!(det[0], 0.0);
    assert_eq!(det[3], 0.0);
    assert!(det[1] > 0.99 && det[2] > 0.99);
}

fn fixture_masks() -> (
    shear_model::Llama<B>,
    DeterministicMasks,
    Tensor<B, 2, Int>,
    Vec<f32>,
) {
    let dev = device();
    let src = fixture("pruning/source");
    let model = load_llama::<B>(&src, &dev).unwrap();
    let file = fixture("pruning/masks_and_logits.safetensors");
    let z = DeterministicMasks::from_safetensors(&file, &LlamaConfig::from_file(&src).unwrap())
        .unwrap();
    let (shape, ids) = read_tensor(&file, "input_ids");
    let ids: Vec<i64> = ids.iter().map(|&x| x as i64).collect();
    let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [shape[0], shape[1]]), &dev);
    let (_, want) = read_tensor(&file, "masked_logits");
    (model, z, ids, want)
}

#[test]
fn masked_forward_reproduces_the_reference_logits() {
    let (model, z, ids, want) = fixture_masks();
    let got: Vec<f32> = model
        .forward_masked(ids.clone(), &z.to_z(&device()))
        .into_data()
        .to_vec()
        .unwrap();
    let diff = max_abs_diff(&got, &want);
    eprintln!("masked logits: max |diff| = {diff:e}");
    assert!(diff <= 1e-4, "masked logits differ by {diff}");
    // All-ones masks give the plain model.
    let c = &model.config;
    let ones = ZMasks::<B> {
        hidden: Some(Tensor::ones([c.hidden_size], &device())),
        head: Some(Tensor::ones(
            [c.num_hidden_layers, c.num_attention_heads],
            &device(),
        )),
        intermediate: Some(Tensor::ones(
            [c.num_hidden_layers, c.intermediate_size],
            &device(),
        )),
        layer: Some(Tensor::ones([c.num_hidden_layers], &device())),
        mlp: Some(Tensor::ones([c.num_hidden_layers], &device())),
    };
    let a: Vec<f32> = model
        .forward_masked(ids.clone(), &ones)
        .into_data()
        .to_vec()
        .unwrap();
    let b: Vec<f32> = model.forward(ids).into_data().to_vec().unwrap();
    assert!(max_abs_diff(&a, &b) <= 1e-5);
}

#[test]
fn materialized_model_matches_the_reference_checkpoint() {
    let (model, z, ids, want) = fixture_masks();
    let small = materialize(&model, &z, &device()).unwrap();
    // Same shape as transformers' pruned model.
    let reference = LlamaConfig::from_file(fixture("pruning/pruned")).unwrap();
    let c = &small.config;
    assert_eq!(
        (
            c.num_hidden_layers,
            c.hidden_size,
            c.num_attention_heads,
            c.num_key_value_heads,
            c.intermediate_size,
            c.head_dim
        ),
        (3, 48, 2, 2, 96, 16)
    );
    assert_eq!(
        (
            reference.num_hidden_layers,
            reference.hidden_size,
            reference.num_attention_heads,
            reference.intermediate_size
        ),
        (3, 48, 2, 96)
    );
    // Every tensor within 1e-6 of the reference.
    let out = tempfile::tempdir().unwrap();
    shear_model::save_llama(&small, out.path(), shear_model::Dtype::F32).unwrap();
    let got = raw_tensors(&out.path().join("model.safetensors"));
    let want_t = raw_tensors(&fixture("pruning/pruned/model.safetensors"));
    assert_eq!(
        got.iter().map(|t| &t.0).collect::<Vec<_>>(),
        want_t.iter().map(|t| &t.0).collect::<Vec<_>>()
    );
    let floats = |b: &[u8]| {
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect::<Vec<_>>()
    };
    let mut worst = 0f32;
    for (g, w) in got.iter().zip(&want_t) {
        assert_eq!(g.2, w.2, "shape of {}", g.0);
        worst = worst.max(max_abs_diff(&floats(&g.3), &floats(&w.3)));
    }
    eprintln!("materialized tensors: max |diff| = {worst:e}");
    assert!(worst <= 1e-6, "tensors differ by {worst}");
    // The saved config reads back as the reference shape.
    let saved = LlamaConfig::from_file(out.path()).unwrap();
    assert_eq!(saved.to_hf_json(shear_model::Dtype::F32)["head_dim"], 16);
    // Logits equal the masked logits.
    let logits: Vec<f32> = small.forward(ids).into_data().to_vec().unwrap();
    let diff = max_abs_diff(&logits, &want);
    eprintln!("materialized logits: max |diff| = {diff:e}");
    assert!(diff <= 1e-4, "materialized logits differ by {diff}");
}

/// Defect fixed: the hard-concrete temperature was fixed at 2/3 and not recorded, so a mask file
/// trained with another one was read back with the wrong deterministic soft values. It is now
/// stored in `masks.safetensors` and read back.
#[test]
fn the_temperature_is_stored_in_the_mask_file_and_read_back() {
    use shear_model::masks_file::{load_masks, save_masks, MaskFile, MaskState};
    use shear_model::{L0Masks, LayerMasks, PerType, PruneModules, TargetShape};
    let config = LlamaConfig::from_file(fixture("pruning/source")).unwrap();
    let paper = HardConcrete::with_temperature(0.83);
    let masks = L0Masks::<B>::new(
        &config,
        paper,
        PruneModules::default(),
        LayerMasks::Layer,
        &device(),
    );
    let target: TargetShape = "layers=3,hidden=48,heads=2,intermediate=96"
        .parse()
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("masks.safetensors");
    let state = MaskState {
        step: 7,
        target,
        lambda_1: PerType::new(),
        lambda_2: PerType::new(),
    };
    save_masks(&path, &masks, &state).unwrap();
    let MaskFile::LogAlpha(back, st) = load_masks::<B>(&path, &config, &device()).unwrap() else {
        panic!("a pruning mask file");
    };
    assert_eq!(st.step, 7);
    assert_eq!(st.target, target);
    assert_eq!(back.hard_concrete().temperature, 0.83);
    // Deterministic soft values are sigmoid(0.8 · log_alpha / β): with β = 0.83, not 2/3.
    let back = back.clamp_log_alpha();
    let la = back
        .layer
        .as_ref()
        .unwrap()
        .host_log_alpha("layer")
        .unwrap();
    let z = back.deterministic(None).unwrap().layer;
    drop(masks);
    let want = 1.0 / (1.0 + (-0.8 * la[0] / 0.83).exp());
    assert!((z[0] - want).abs() < 1e-12, "{} vs {want}", z[0]);
    let at_two_thirds = 1.0 / (1.0 + (-0.8 * la[0] / (2.0 / 3.0)).exp());
    assert!((z[0] - at_two_thirds).abs() > 1e-4);
}

/// Defect fixed: a non-finite `log_alpha` silently became "drop 0 units" in the deterministic
/// masks; it is an error naming the mask and entry.
#[test]
fn a_non_finite_log_alpha_is_an_error() {
    let m = mask_with(&[4.6, f32::NAN, 4.6, -4.6]);
    let e = m.deterministic("head", None).unwrap_err().to_string();
    assert!(
        e.contains("`head` mask, row 0, entry 1") && e.contains("NaN"),
        "{e}"
    );
    let m = mask_with(&[f32::INFINITY, 1.0]);
    assert!(m.deterministic("layer", Some(1)).is_err());
}

fn mask_with(v: &[f32]) -> Mask<B> {
    Mask::from_log_alpha(
        Tensor::from_data(TensorData::new(v.to_vec(), [1, v.len()]), &device()),
        HardConcrete::default(),
    )
}
