//! The Llama-2 tokenizer against the ids of the Python `tokenizers` library.

use shear_data::Tokenizer;
use shear_testkit::fixture;

#[test]
fn llama2_tokenizer_reproduces_python_ids_and_decodes_back() {
    let dir = fixture("llama2-tokenizer");
    let tok = Tokenizer::from_file(&dir).unwrap();
    assert_eq!(tok.vocab_size(), 32000);
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let cases = expected["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 6);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let ids = tok.encode(text, true).unwrap();
        assert_eq!(ids, want, "ids of {text:?}");
        assert_eq!(ids[0], 1, "BOS first");
        assert_eq!(tok.decode(&ids).unwrap(), case["decoded"].as_str().unwrap());
    }
}

#[test]
fn missing_tokenizer_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let e = Tokenizer::from_file(tmp.path()).err().unwrap().to_string();
    assert!(e.contains("tokenizer.json: not found"), "{e}");
}
