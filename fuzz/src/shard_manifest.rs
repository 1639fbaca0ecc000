//! Fuzz harness of the prepared-data manifest reader (data/src/manifest.rs); fuzz/src/lib.rs says
//! why it is shared by path.

use std::path::Path;

use shear_data::{PreparedData, Split};

/// Shards the seeds' manifests name (fuzz/seeds/shard_manifest): `(path, bytes)`, so the fuzzer
/// reaches `Shard::open` with files of several sizes.
const SHARDS: &[(&str, usize)] = &[
    ("eval/web.bin", 16),
    ("prune/web.bin", 0),
    ("train/web.bin", 48),
    ("eval/code.bin", 8),
    ("train/code.bin", 12),
];

/// Writes `data` as `dir/manifest.json` beside a few small shards and reads it as `shear` does:
/// open the folder, check the vocabulary and the shard sizes, open every split's shards and read
/// their sequences.
pub fn run(dir: &Path, data: &[u8]) {
    for (rel, len) in SHARDS {
        let path = dir.join(rel);
        if !path.exists() {
            std::fs::create_dir_all(path.parent().expect("a shard has a folder"))
                .expect("create the scratch folder");
            let bytes: Vec<u8> = (0..*len).map(|i| i as u8).collect();
            std::fs::write(&path, bytes).expect("write a scratch shard");
        }
    }
    std::fs::write(dir.join("manifest.json"), data).expect("write the scratch file");
    let Ok(prepared) = PreparedData::open(dir) else {
        return;
    };
    let _ = prepared.domains();
    let _ = prepared.check_vocab(4096);
    let _ = prepared.manifest.shards_complete(dir);
    for split in Split::ALL {
        let Ok(shards) = prepared.shards(split) else {
            continue;
        };
        for shard in shards {
            for i in 0..shard.len() {
                let tokens = shard.sequence(i).expect("a sequence below len()");
                assert_eq!(tokens.len(), shard.seq_len());
            }
        }
    }
}
