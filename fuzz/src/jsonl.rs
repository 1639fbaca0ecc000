//! Fuzz harness of the JSONL readers: corpus documents (data/src/corpus.rs, `.jsonl`,
//! `.jsonl.gz`, `.jsonl.zst` and `.txt`), task files (data/src/tasks.rs) and step logs
//! (io/src/jsonl.rs); fuzz/src/lib.rs says why it is shared by path.

use std::path::Path;

use shear_data::corpus::read_documents;
use shear_data::tasks::read_tasks;

/// Writes `data` under each corpus file name and reads it as each kind (the decompressing ones
/// mostly refuse plain text, and the plain ones compressed bytes), then as a task file and as a
/// step log of arbitrary JSON records.
pub fn run(dir: &Path, data: &[u8]) {
    for name in ["c.jsonl", "c.jsonl.gz", "c.jsonl.zst", "c.txt"] {
        let path = dir.join(name);
        std::fs::write(&path, data).expect("write the scratch file");
        let _ = read_documents(&path, "text");
    }
    let path = dir.join("c.jsonl");
    let _ = read_tasks(&path);
    let _ = shear_io::read_jsonl::<serde_json::Value>(&path);
}
