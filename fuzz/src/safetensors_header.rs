//! Fuzz harness of shear's safetensors reading path (model/src/checkpoint.rs,
//! `SafetensorsSource`); fuzz/src/lib.rs says why it is shared by path.

use std::path::Path;

use shear_model::SafetensorsSource;

/// Writes `data` as `dir/model.safetensors` and reads it as a checkpoint does: the header, the
/// summary, every tensor at its own shape (F32 / BF16 / F16 decoded, other dtypes refused), and
/// the unused-tensor check. A tensor that reads has as many values as its shape says.
pub fn run(dir: &Path, data: &[u8]) {
    std::fs::write(dir.join("model.safetensors"), data).expect("write the scratch file");
    let Ok(mut source) = SafetensorsSource::open(dir) else {
        return;
    };
    let _ = source.stored_dtype();
    for (name, shape, _dtype) in source.summary() {
        if let Ok(values) = source.read(&name, &shape) {
            assert_eq!(values.len(), shape.iter().product::<usize>(), "{name}");
        }
    }
    let _ = source.finish("LlamaForCausalLM");
}
