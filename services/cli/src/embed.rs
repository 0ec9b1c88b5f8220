//! `recalloc embed`: texts → vectors through the running embed service, printed as one JSON
//! array (one vector per text, in order). Large inputs go as several requests in flight, so the
//! service's batcher stays busy.

use anyhow::{Context, Result};
use futures::{StreamExt, TryStreamExt};
use recalloc_common::config::SecurityConfig;
use recalloc_proto::v1::EmbedRequest;
use recalloc_proto::v1::embedder_client::EmbedderClient;
use std::io::Write;
use std::path::Path;

/// Texts per request and requests in flight.
const CHUNK: usize = 256;
const IN_FLIGHT: usize = 4;

/// The texts of a file: one per line (an empty line is an empty text).
pub fn read_lines(path: &Path) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(text.lines().map(str::to_owned).collect())
}

pub async fn run(addr: &str, security: &SecurityConfig, texts: Vec<String>) -> Result<()> {
    anyhow::ensure!(
        !texts.is_empty(),
        "no texts: give TEXT arguments or --file F"
    );
    let channel = crate::connect("embed", addr, security).await?;
    let client = EmbedderClient::new(channel)
        .max_decoding_message_size(256 << 20)
        .max_encoding_message_size(256 << 20);
    let chunks: Vec<Vec<String>> = texts.chunks(CHUNK).map(<[String]>::to_vec).collect();
    let results: Vec<Vec<Vec<f32>>> = futures::stream::iter(chunks.into_iter().enumerate())
        .map(|(i, chunk)| {
            let mut client = client.clone();
            async move {
                let first = i * CHUNK;
                let r = client
                    .embed(EmbedRequest { texts: chunk })
                    .await
                    .map_err(|s| crate::status_error(&format!("embed texts {first}.."), &s))?;
                Ok::<_, anyhow::Error>(
                    r.into_inner()
                        .vectors
                        .into_iter()
                        .map(|v| v.values)
                        .collect(),
                )
            }
        })
        .buffered(IN_FLIGHT)
        .try_collect()
        .await?;
    let all: Vec<Vec<f32>> = results.into_iter().flatten().collect();
    anyhow::ensure!(
        all.len() == texts.len(),
        "the service returned {} vectors for {} texts",
        all.len(),
        texts.len()
    );
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    serde_json::to_writer(&mut out, &all)?;
    writeln!(out)?;
    Ok(())
}
