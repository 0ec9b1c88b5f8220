//! Parity with sentence-transformers: the committed fixtures (tests/fixtures/parity.json for
//! all-MiniLM-L6-v2, parity-all-mpnet-base-v2.json for all-mpnet-base-v2, made by
//! make_parity.py) hold reference vectors for 221 texts — empty, whitespace, Chinese, Japanese,
//! Arabic, Cyrillic, emoji, markup, 600 words, a 60-title text far beyond the truncation length,
//! a duplicate, goodbooks titles. Every vector must have cosine ≥ 0.9999 to its reference,
//! batched (padding in play) and alone.

use base64::Engine as _;
use recalloc_embed::model::{BertEncoder, ModelSpec};
use recalloc_embed::tokenize::TextTokenizer;
use recalloc_store::vectors::cosine;
use std::path::PathBuf;

fn model_dir_of(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../models")
        .join(name);
    assert!(
        dir.join("model.safetensors").is_file(),
        "{} is missing: run `make model MODEL={name}` (make test does it)",
        dir.display()
    );
    dir
}

fn model_dir() -> PathBuf {
    model_dir_of("all-MiniLM-L6-v2")
}

struct Fixture {
    texts: Vec<String>,
    vectors: Vec<Vec<f32>>,
}

fn fixture(file: &str) -> Fixture {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(file);
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let texts = v["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect();
    let vectors = v["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b.as_str().unwrap())
                .unwrap();
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        })
        .collect();
    Fixture { texts, vectors }
}

/// The encoder's vectors for the fixture's texts against sentence-transformers'; returns the
/// smallest cosine. `batch` texts a forward pass, in fixture order (short titles padded up to
/// the long texts) or, with `by_length`, longest first as sentence-transformers and the service
/// batch them (padding still in play, less of it).
fn check_parity(
    name: &str,
    file: &str,
    dimension: usize,
    max_seq_length: usize,
    batch: usize,
    by_length: bool,
) -> f32 {
    tch::set_num_threads(2);
    let dir = model_dir_of(name);
    let spec = ModelSpec::read(&dir).unwrap();
    assert_eq!(spec.name, name);
    assert_eq!(spec.max_seq_length, max_seq_length);
    assert_eq!(spec.dimension(), dimension);
    let tok = TextTokenizer::load(&dir, spec.max_seq_length).unwrap();
    let model = BertEncoder::load(spec, tch::Device::Cpu, false).unwrap();
    let f = fixture(file);
    assert_eq!(f.texts.len(), 221);
    assert_eq!(f.vectors.len(), f.texts.len());
    let ids: Vec<Vec<i64>> = f.texts.iter().map(|t| tok.ids(t).unwrap()).collect();
    assert!(
        ids.iter().any(|i| i.len() == max_seq_length),
        "the fixture exercises truncation"
    );
    let mut order: Vec<usize> = (0..ids.len()).collect();
    if by_length {
        order.sort_by_key(|&i| std::cmp::Reverse(ids[i].len()));
    }
    let mut batched = vec![Vec::new(); ids.len()];
    let mut padded_batches = 0;
    for chunk in order.chunks(batch) {
        let refs: Vec<&[i64]> = chunk.iter().map(|&i| ids[i].as_slice()).collect();
        padded_batches += usize::from(refs.iter().any(|r| r.len() != refs[0].len()));
        for (&i, v) in chunk.iter().zip(model.encode(&refs).unwrap()) {
            batched[i] = v;
        }
    }
    assert!(padded_batches > 0, "padding is in play");
    let mut worst = (1.0f32, String::new());
    for ((text, ours), reference) in f.texts.iter().zip(&batched).zip(&f.vectors) {
        assert_eq!(ours.len(), dimension);
        assert_eq!(reference.len(), dimension);
        let c = cosine(ours, reference);
        if c < worst.0 {
            worst = (c, text.chars().take(40).collect());
        }
        let n: f32 = ours.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((n - 1.0).abs() < 1e-4, "unit length, got {n}");
    }
    eprintln!("{name}: min cosine {} for {:?}", worst.0, worst.1);
    assert!(
        worst.0 >= 0.9999,
        "{name} batched: min cosine {} for {:?}",
        worst.0,
        worst.1
    );
    // Alone (no padding) gives the same vectors.
    for i in [0usize, 2, 4, 16, 17, 19, 20, 100] {
        let one = model.encode(&[&ids[i]]).unwrap().pop().unwrap();
        let c = cosine(&one, &f.vectors[i]);
        assert!(c >= 0.9999, "{name} alone: cosine {c} for text {i}");
        assert!(cosine(&one, &batched[i]) > 0.99999);
    }
    // The duplicate pair gets the same vector.
    assert!(cosine(&batched[19], &batched[20]) > 0.999999);
    worst.0
}

#[test]
fn vectors_match_sentence_transformers() {
    check_parity("all-MiniLM-L6-v2", "parity.json", 384, 256, 64, false);
}

/// The larger model: MPNet, 768 dimensions, truncation at 384 tokens, its relative position
/// bias. `make install` fetches it (deploy/local/model.sh all-mpnet-base-v2).
#[test]
fn mpnet_vectors_match_sentence_transformers() {
    let worst = check_parity(
        "all-mpnet-base-v2",
        "parity-all-mpnet-base-v2.json",
        768,
        384,
        32,
        true,
    );
    // Not the MiniLM vectors by accident: the two models' fixtures differ.
    let minilm = fixture("parity.json");
    assert_ne!(minilm.vectors[100].len(), 768);
    assert!(worst >= 0.9999);
}

#[test]
fn missing_model_names_the_path_and_the_make_target() {
    let empty = tempfile::tempdir().unwrap();
    let e = ModelSpec::read(&empty.path().join("nope"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope") && e.contains("make model"), "{e}");
    // A directory with the configs but no weights.
    let dir = model_dir();
    let partial = tempfile::tempdir().unwrap();
    for f in ["config.json", "modules.json", "sentence_bert_config.json"] {
        std::fs::copy(dir.join(f), partial.path().join(f)).unwrap();
    }
    std::fs::create_dir(partial.path().join("1_Pooling")).unwrap();
    std::fs::copy(
        dir.join("1_Pooling/config.json"),
        partial.path().join("1_Pooling/config.json"),
    )
    .unwrap();
    let spec = ModelSpec::read(partial.path()).unwrap();
    let e = BertEncoder::load(spec, tch::Device::Cpu, false)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("model.safetensors") && e.contains("make model"),
        "{e}"
    );
    let e = TextTokenizer::load(partial.path(), 256)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("tokenizer.json"), "{e}");
}

#[test]
fn cuda_without_a_gpu_stack_is_a_clear_error() {
    if tch::Cuda::is_available() {
        return;
    }
    let e = recalloc_embed::model::enable_cuda(tch::Device::Cuda(0))
        .unwrap_err()
        .to_string();
    assert!(e.contains("cuda"), "{e}");
    assert!(recalloc_embed::model::parse_device("gpu").is_err());
}
