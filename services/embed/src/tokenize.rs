//! Tokenization with the model's own `tokenizer.json` (Hugging Face `tokenizers`), truncated at
//! the sentence-transformer's `max_seq_length` and unpadded: batches pad themselves to their
//! longest member, which length bucketing keeps short. (The file's own truncation and padding
//! settings, 128 fixed for MiniLM, are not what sentence-transformers uses, so they are replaced.)

use crate::model::ModelError;
use std::path::Path;
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

pub struct TextTokenizer {
    inner: Tokenizer,
}

impl TextTokenizer {
    pub fn load(dir: &Path, max_seq_length: usize) -> Result<Self, ModelError> {
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(ModelError::Missing { path });
        }
        let invalid = |message: String| ModelError::Invalid {
            path: path.clone(),
            message,
        };
        let mut inner = Tokenizer::from_file(&path).map_err(|e| invalid(e.to_string()))?;
        inner
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length: max_seq_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|e| invalid(e.to_string()))?;
        inner.with_padding(None);
        Ok(Self { inner })
    }

    /// Token ids of one text, with the special tokens, at most `max_seq_length` long.
    pub fn ids(&self, text: &str) -> Result<Vec<i64>, String> {
        let enc = self.inner.encode(text, true).map_err(|e| e.to_string())?;
        Ok(enc.get_ids().iter().map(|&i| i as i64).collect())
    }
}
