//! Hugging Face tensor names, written once: loading (`Llama::from_source`), saving
//! (`checkpoint::named_tensors`), materialization and GGUF import all name tensors through here.

/// `model.embed_tokens.weight` `[vocab, d]`
pub const EMBED: &str = "model.embed_tokens.weight";
/// `model.norm.weight` `[d]`
pub const NORM: &str = "model.norm.weight";
/// `lm_head.weight` `[vocab, d]` (absent when tied to the embedding)
pub const LM_HEAD: &str = "lm_head.weight";

/// A weight inside transformer block `i`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerTensor {
    QProj,
    KProj,
    VProj,
    OProj,
    GateProj,
    UpProj,
    DownProj,
    InputNorm,
    PostNorm,
}

impl LayerTensor {
    /// Every weight of a block, in the order of a Hugging Face state dict.
    pub const ALL: [LayerTensor; 9] = [
        LayerTensor::QProj,
        LayerTensor::KProj,
        LayerTensor::VProj,
        LayerTensor::OProj,
        LayerTensor::GateProj,
        LayerTensor::UpProj,
        LayerTensor::DownProj,
        LayerTensor::InputNorm,
        LayerTensor::PostNorm,
    ];

    /// A projection of the attention sub-block (the ones `attention_bias` gives a bias).
    pub fn is_attention(self) -> bool {
        matches!(
            self,
            LayerTensor::QProj | LayerTensor::KProj | LayerTensor::VProj | LayerTensor::OProj
        )
    }

    /// The module path inside the block.
    pub fn module(self) -> &'static str {
        match self {
            LayerTensor::QProj => "self_attn.q_proj",
            LayerTensor::KProj => "self_attn.k_proj",
            LayerTensor::VProj => "self_attn.v_proj",
            LayerTensor::OProj => "self_attn.o_proj",
            LayerTensor::GateProj => "mlp.gate_proj",
            LayerTensor::UpProj => "mlp.up_proj",
            LayerTensor::DownProj => "mlp.down_proj",
            LayerTensor::InputNorm => "input_layernorm",
            LayerTensor::PostNorm => "post_attention_layernorm",
        }
    }
}

/// `model.layers.{i}.{module}.weight`
pub fn layer(i: usize, t: LayerTensor) -> String {
    format!("model.layers.{i}.{}.weight", t.module())
}

/// `model.layers.{i}.{module}.bias` (attention projections with `attention_bias`).
pub fn layer_bias(i: usize, t: LayerTensor) -> String {
    format!("model.layers.{i}.{}.bias", t.module())
}
