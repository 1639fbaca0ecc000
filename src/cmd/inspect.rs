use anyhow::Context;
use shear_model::{LlamaConfig, SafetensorsSource};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model directory or hub id (owner/name).
    pub model: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args, offline: bool) -> anyhow::Result<()> {
    let dir = super::resolve(&args.model, offline)?;
    let config = LlamaConfig::from_file(&dir)?;
    let source = SafetensorsSource::open(&dir).context("cannot read weights")?;
    let summary = source.summary();
    let stored: usize = summary
        .iter()
        .map(|(_, s, _)| s.iter().product::<usize>())
        .sum();
    let mut dtypes: Vec<String> = summary.iter().map(|(_, _, d)| d.clone()).collect();
    dtypes.sort();
    dtypes.dedup();
    let c = config.param_counts();
    if args.json {
        let v = serde_json::json!({
            "path": dir,
            "config": config.to_hf_json(shear_model::Dtype::F32),
            "stored_dtypes": dtypes,
            "stored_tensors": summary.len(),
            "stored_params": stored,
            "params": {
                "embedding": c.embedding, "attention": c.attention, "mlp": c.mlp,
                "norms": c.norms, "lm_head": c.lm_head, "prunable": c.prunable(), "total": c.total(),
            },
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("model      {}", dir.display());
    println!(
        "shape      layers {}  hidden {}  heads {} (kv {}, head_dim {})  intermediate {}  vocab {}",
        config.num_hidden_layers,
        config.hidden_size,
        config.num_attention_heads,
        config.num_key_value_heads,
        config.head_dim,
        config.intermediate_size,
        config.vocab_size
    );
    println!(
        "rope       theta {}  scaling {:?}  max positions {}",
        config.rope.theta, config.rope.scaling, config.max_position_embeddings
    );
    println!(
        "embeddings {}",
        if config.tie_word_embeddings {
            "tied"
        } else {
            "untied"
        }
    );
    println!(
        "stored     {} tensors, {} parameters, dtype {}",
        summary.len(),
        stored,
        dtypes.join("/")
    );
    println!("parameters");
    let total = c.total() as f64;
    for (name, n) in [
        ("embedding", c.embedding),
        ("attention", c.attention),
        ("mlp", c.mlp),
        ("norms", c.norms),
        ("lm_head", c.lm_head),
    ] {
        println!("  {name:<10} {n:>15}  {:5.1}%", 100.0 * n as f64 / total);
    }
    println!("  {:<10} {:>15}", "prunable", c.prunable());
    println!("  {:<10} {:>15}", "total", c.total());
    Ok(())
}
