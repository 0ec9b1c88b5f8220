//! Data set loaders: read the files, turn rows into Ingest records with deterministic ids (so a
//! second load of the same files changes nothing), and stream them through the Ingest API.

use anyhow::{Context, Result, bail};
use futures::{StreamExt, TryStreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use recalloc_proto::v1::ingest_client::IngestClient;
use recalloc_proto::v1::{
    Event, EventKind, IngestResponse, Item, RecordEventsRequest, UpsertItemsRequest,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// An Ingest client that carries the bearer token.
pub type Ingest = IngestClient<InterceptedService<Channel, recalloc_common::auth::BearerToken>>;

/// What a loader produced from the files.
pub struct Dataset {
    pub items: Vec<Item>,
    pub events: Vec<Event>,
}

fn open_csv(path: &Path) -> Result<csv::Reader<std::fs::File>> {
    csv::ReaderBuilder::new()
        .from_path(path)
        .with_context(|| format!("cannot open {}", path.display()))
}

/// First of `names` that exists in `dir`.
fn find(dir: &Path, names: &[&str]) -> Option<PathBuf> {
    names.iter().map(|n| dir.join(n)).find(|p| p.is_file())
}

/// goodbooks-10k: `books.csv`, a ratings file (`ratings.csv`, else `ratings_sample_100k.csv`),
/// and optionally `tags.csv` with `book_tags.csv` (tag names per book) and, with `to_read`,
/// `to_read.csv` as wishlist events.
pub fn goodbooks(dir: &Path, to_read: bool) -> Result<Dataset> {
    let books =
        find(dir, &["books.csv"]).with_context(|| format!("no books.csv in {}", dir.display()))?;
    let ratings = find(dir, &["ratings.csv", "ratings_sample_100k.csv"]).with_context(|| {
        format!(
            "no ratings.csv (or ratings_sample_100k.csv) in {}",
            dir.display()
        )
    })?;

    let mut tag_names: HashMap<String, String> = HashMap::new();
    if let Some(p) = find(dir, &["tags.csv"]) {
        for row in open_csv(&p)?.records() {
            let row = row.with_context(|| format!("{}", p.display()))?;
            if let (Some(id), Some(name)) = (row.get(0), row.get(1)) {
                tag_names.insert(id.to_owned(), name.to_owned());
            }
        }
    }
    // goodreads_book_id → tags, most-used first (the file is sorted by count within a book).
    let mut book_tags: HashMap<String, Vec<String>> = HashMap::new();
    if let Some(p) = find(dir, &["book_tags.csv", "book_tags_head10k.csv"]) {
        for row in open_csv(&p)?.records() {
            let row = row.with_context(|| format!("{}", p.display()))?;
            let (Some(book), Some(tag)) = (row.get(0), row.get(1)) else {
                continue;
            };
            let Some(name) = tag_names.get(tag) else {
                continue;
            };
            let tags = book_tags.entry(book.to_owned()).or_default();
            // Tags like "to-read" or "-" say nothing about the book.
            if tags.len() < 10 && name.len() > 1 && name != "to-read" && name != "currently-reading"
            {
                tags.push(name.clone());
            }
        }
    }

    let mut rdr = open_csv(&books)?;
    let headers = rdr.headers()?.clone();
    let col = |name: &str| headers.iter().position(|h| h == name);
    let (Some(id_col), Some(title_col)) = (col("book_id"), col("title")) else {
        bail!("{} lacks the book_id and title columns", books.display());
    };
    let authors_col = col("authors");
    let year_col = col("original_publication_year");
    let gr_col = col("goodreads_book_id");
    let lang_col = col("language_code");
    let mut items = Vec::new();
    for row in rdr.records() {
        let row = row.with_context(|| format!("{}", books.display()))?;
        let get = |c: Option<usize>| c.and_then(|c| row.get(c)).unwrap_or("").trim().to_owned();
        let authors = get(authors_col);
        let year = get(year_col).trim_end_matches(".0").to_owned();
        let mut description = String::new();
        if !authors.is_empty() {
            description = format!("by {authors}");
        }
        if !year.is_empty() {
            description.push_str(&format!(" ({year})"));
        }
        let mut attributes = HashMap::new();
        for (k, v) in [
            ("authors", &authors),
            ("year", &year),
            ("language", &get(lang_col)),
        ] {
            if !v.is_empty() {
                attributes.insert(k.to_owned(), v.clone());
            }
        }
        let gr = get(gr_col);
        items.push(Item {
            item_id: get(Some(id_col)),
            title: get(Some(title_col)),
            description,
            tags: book_tags.get(&gr).cloned().unwrap_or_default(),
            attributes,
        });
    }

    let mut events = Vec::new();
    read_pairs(&ratings, EventKind::Rating, "goodbooks:rating", &mut events)?;
    if to_read {
        let p = find(dir, &["to_read.csv"])
            .with_context(|| format!("--to-read: no to_read.csv in {}", dir.display()))?;
        read_pairs(&p, EventKind::Wishlist, "goodbooks:to_read", &mut events)?;
    }
    Ok(Dataset { items, events })
}

/// `user_id,book_id[,rating]` rows. The event id is the pair: one rating per user and book.
fn read_pairs(path: &Path, kind: EventKind, ns: &str, out: &mut Vec<Event>) -> Result<()> {
    for (line, row) in open_csv(path)?.records().enumerate() {
        let row = row.with_context(|| format!("{}", path.display()))?;
        let user = row.get(0).unwrap_or("").trim();
        let book = row.get(1).unwrap_or("").trim();
        let value = match kind {
            EventKind::Rating => Some(
                row.get(2)
                    .unwrap_or("")
                    .trim()
                    .parse::<f64>()
                    .with_context(|| {
                        format!(
                            "{} line {}: rating is not a number",
                            path.display(),
                            line + 2
                        )
                    })?,
            ),
            _ => None,
        };
        out.push(Event {
            event_id: format!("{ns}:{user}:{book}"),
            user_id: user.to_owned(),
            item_id: book.to_owned(),
            kind: kind as i32,
            value,
            timestamp_ms: 0,
            context: HashMap::new(),
        });
    }
    Ok(())
}

/// MovieLens 100k: `u.data` (user, item, rating, unix seconds; tab-separated) and `u.item`
/// (pipe-separated, Latin-1, genres as 0/1 flags named by `u.genre`).
pub fn movielens(dir: &Path) -> Result<Dataset> {
    let data = dir.join("u.data");
    let text = std::fs::read_to_string(&data)
        .with_context(|| format!("cannot read {}", data.display()))?;
    let mut events = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() < 4 {
            bail!(
                "{} line {}: want 4 tab-separated fields",
                data.display(),
                i + 1
            );
        }
        let rating: f64 = f[2]
            .parse()
            .with_context(|| format!("{} line {}: bad rating", data.display(), i + 1))?;
        let ts: i64 = f[3]
            .parse()
            .with_context(|| format!("{} line {}: bad timestamp", data.display(), i + 1))?;
        events.push(Event {
            event_id: format!("movielens:rating:{}:{}:{}", f[0], f[1], f[3]),
            user_id: f[0].to_owned(),
            item_id: f[1].to_owned(),
            kind: EventKind::Rating as i32,
            value: Some(rating),
            timestamp_ms: ts * 1000,
            context: HashMap::new(),
        });
    }
    let latin1 = |b: &[u8]| b.iter().map(|&c| c as char).collect::<String>();
    let genres: Vec<String> = std::fs::read(dir.join("u.genre"))
        .map(|b| {
            latin1(&b)
                .lines()
                .filter_map(|l| l.split('|').next().map(str::to_owned))
                .filter(|g| !g.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let item_path = dir.join("u.item");
    let bytes = std::fs::read(&item_path)
        .with_context(|| format!("cannot read {}", item_path.display()))?;
    let mut items = Vec::new();
    for line in latin1(&bytes).lines() {
        let f: Vec<&str> = line.split('|').collect();
        if f.len() < 3 || f[1].trim().is_empty() {
            continue;
        }
        let tags = f
            .iter()
            .skip(5)
            .enumerate()
            .filter(|(_, flag)| **flag == "1")
            .filter_map(|(g, _)| genres.get(g).cloned())
            .collect();
        let mut attributes = HashMap::new();
        if !f[2].is_empty() {
            attributes.insert("release_date".to_owned(), f[2].to_owned());
        }
        items.push(Item {
            item_id: f[0].to_owned(),
            title: f[1].to_owned(),
            description: String::new(),
            tags,
            attributes,
        });
    }
    Ok(Dataset { items, events })
}

/// Totals of a load.
#[derive(Default, Debug)]
pub struct Totals {
    pub accepted: u64,
    pub rejected: u64,
    pub duplicates: u64,
    pub first_errors: Vec<String>,
}

impl Totals {
    fn add(&mut self, r: &IngestResponse) {
        self.accepted += u64::from(r.accepted);
        self.duplicates += u64::from(r.duplicates);
        self.rejected += r.rejected.len() as u64;
        for e in r
            .rejected
            .iter()
            .take(5usize.saturating_sub(self.first_errors.len()))
        {
            self.first_errors.push(format!("{}: {}", e.field, e.reason));
        }
    }
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg:>8} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_message(what.to_owned());
    pb
}

/// Retries UNAVAILABLE (the broker did not acknowledge in time): safe, because ids make the
/// effect idempotent. INVALID_ARGUMENT for a batch of only bad records counts them as rejected.
async fn call_with_retry<F, Fut>(retries: u32, mut call: F) -> Result<IngestResponse>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<IngestResponse>, tonic::Status>>,
{
    let mut attempt = 0;
    loop {
        match call().await {
            Ok(r) => return Ok(r.into_inner()),
            Err(s) if s.code() == tonic::Code::Unavailable && attempt < retries => {
                attempt += 1;
                eprintln!(
                    "ingest unavailable ({}); retry {attempt}/{retries}",
                    s.message()
                );
                tokio::time::sleep(Duration::from_secs(attempt as u64)).await;
            }
            Err(s) => return Err(crate::status_error("ingest", &s)),
        }
    }
}

/// Sends `records` in chunks of `batch` with `in_flight` calls at a time, showing progress.
/// `call` sends one chunk with a fresh client handle.
async fn send_chunks<T, F, Fut>(
    records: &[T],
    what: &str,
    batch: usize,
    in_flight: usize,
    retries: u32,
    call: F,
) -> Result<Totals>
where
    T: Clone,
    F: Fn(Vec<T>) -> Fut + Clone,
    Fut: std::future::Future<Output = Result<tonic::Response<IngestResponse>, tonic::Status>>,
{
    let pb = bar(records.len() as u64, what);
    let mut totals = Totals::default();
    let mut results = futures::stream::iter(records.chunks(batch.max(1)).map(|chunk| {
        let pb = pb.clone();
        let call = call.clone();
        async move {
            let n = chunk.len() as u64;
            let r = call_with_retry(retries, || call(chunk.to_vec()))
                .await
                .or_else(all_rejected(n))?;
            pb.inc(n);
            Ok::<_, anyhow::Error>(r)
        }
    }))
    .buffer_unordered(in_flight.max(1));
    while let Some(r) = results.try_next().await? {
        totals.add(&r);
    }
    pb.finish_and_clear();
    Ok(totals)
}

/// Sends items then events; returns their totals and the seconds the events took.
pub async fn send(
    client: Ingest,
    data: Dataset,
    batch: usize,
    in_flight: usize,
    retries: u32,
) -> Result<(Totals, Totals, f64)> {
    let items = send_chunks(&data.items, "items", batch, in_flight, retries, |items| {
        let mut c = client.clone();
        async move { c.upsert_items(UpsertItemsRequest { items }).await }
    })
    .await?;
    let started = Instant::now();
    let events = send_chunks(
        &data.events,
        "events",
        batch,
        in_flight,
        retries,
        |events| {
            let mut c = client.clone();
            async move { c.record_events(RecordEventsRequest { events }).await }
        },
    )
    .await?;
    Ok((items, events, started.elapsed().as_secs_f64()))
}

/// A batch in which every record was invalid is a rejection count, not a failed load.
fn all_rejected(n: u64) -> impl FnOnce(anyhow::Error) -> Result<IngestResponse> {
    move |e| {
        let msg = e.to_string();
        if msg.contains("InvalidArgument") && msg.contains("no record was valid") {
            Ok(IngestResponse {
                rejected: (0..n)
                    .map(|i| recalloc_proto::v1::RecordError {
                        index: i as u32,
                        field: "record".into(),
                        reason: msg.clone(),
                    })
                    .collect(),
                ..Default::default()
            })
        } else {
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn goodbooks_rows_become_items_and_ratings_with_stable_ids() {
        let dir = tempfile::tempdir().unwrap();
        let w = |name: &str, text: &str| {
            std::fs::File::create(dir.path().join(name))
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap()
        };
        w(
            "books.csv",
            "book_id,goodreads_book_id,authors,original_publication_year,title,language_code\n1,100,Frank Herbert,1965.0,Dune,eng\n2,200,\"Le Guin, Ursula\",,Earthsea,\n",
        );
        w("ratings.csv", "user_id,book_id,rating\n7,1,5\n8,2,3\n");
        w(
            "tags.csv",
            "tag_id,tag_name\n0,-\n1,science-fiction\n2,to-read\n",
        );
        w(
            "book_tags.csv",
            "goodreads_book_id,tag_id,count\n100,2,50\n100,1,10\n100,0,5\n",
        );
        let d = goodbooks(dir.path(), false).unwrap();
        assert_eq!(d.items.len(), 2);
        assert_eq!(d.items[0].title, "Dune");
        assert_eq!(d.items[0].description, "by Frank Herbert (1965)");
        assert_eq!(d.items[0].tags, vec!["science-fiction"]);
        assert_eq!(d.items[1].description, "by Le Guin, Ursula");
        assert_eq!(d.events.len(), 2);
        assert_eq!(d.events[0].event_id, "goodbooks:rating:7:1");
        assert_eq!(d.events[1].value, Some(3.0));
        w("ratings.csv", "user_id,book_id,rating\n7,1,five\n");
        let err = goodbooks(dir.path(), false).err().unwrap().to_string();
        assert!(err.contains("line 2"), "{err}");
    }
}
