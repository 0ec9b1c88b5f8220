//! Interactions as the models see them: dense indices `0..users`, `0..items`, values as f32,
//! stored both as a list and as compressed rows (CSR) per user and per item.

use std::collections::HashMap;

/// External ids ↔ dense indices, in first-seen order.
#[derive(Debug, Clone, Default)]
pub struct IdMap {
    index: HashMap<String, u32>,
    ids: Vec<String>,
}

impl IdMap {
    pub fn get_or_insert(&mut self, id: &str) -> u32 {
        if let Some(&i) = self.index.get(id) {
            return i;
        }
        let i = self.ids.len() as u32;
        self.index.insert(id.to_owned(), i);
        self.ids.push(id.to_owned());
        i
    }
    pub fn get(&self, id: &str) -> Option<u32> {
        self.index.get(id).copied()
    }
    pub fn id(&self, index: u32) -> &str {
        &self.ids[index as usize]
    }
    pub fn len(&self) -> usize {
        self.ids.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
    pub fn ids(&self) -> &[String] {
        &self.ids
    }
}

/// One observation: user, item, value (a rating, or an interaction strength), time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Triple {
    pub user: u32,
    pub item: u32,
    pub value: f32,
    pub ts: i64,
}

/// Compressed rows: row `r`'s columns are `indices[indptr[r]..indptr[r+1]]`, sorted.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Csr {
    pub indptr: Vec<usize>,
    pub indices: Vec<u32>,
    pub values: Vec<f32>,
}

impl Csr {
    /// Rows by user (`by_item == false`) or by item. Duplicate (row, column) pairs are summed.
    pub fn build(triples: &[Triple], rows: usize, by_item: bool) -> Self {
        let key = |t: &Triple| {
            if by_item {
                (t.item, t.user)
            } else {
                (t.user, t.item)
            }
        };
        let mut counts = vec![0usize; rows + 1];
        for t in triples {
            counts[key(t).0 as usize + 1] += 1;
        }
        for r in 0..rows {
            counts[r + 1] += counts[r];
        }
        let mut next = counts.clone();
        let mut pairs = vec![(0u32, 0f32); triples.len()];
        for t in triples {
            let (r, c) = key(t);
            pairs[next[r as usize]] = (c, t.value);
            next[r as usize] += 1;
        }
        let mut indptr = Vec::with_capacity(rows + 1);
        let mut indices = Vec::with_capacity(triples.len());
        let mut values = Vec::with_capacity(triples.len());
        indptr.push(0);
        for r in 0..rows {
            let row = &mut pairs[counts[r]..counts[r + 1]];
            row.sort_unstable_by_key(|p| p.0);
            for &(c, v) in row.iter() {
                if indices.len() > indptr[r] && *indices.last().unwrap() == c {
                    *values.last_mut().unwrap() += v;
                } else {
                    indices.push(c);
                    values.push(v);
                }
            }
            indptr.push(indices.len());
        }
        Self {
            indptr,
            indices,
            values,
        }
    }

    pub fn rows(&self) -> usize {
        self.indptr.len().saturating_sub(1)
    }

    pub fn row(&self, r: usize) -> (&[u32], &[f32]) {
        if r + 1 >= self.indptr.len() {
            return (&[], &[]);
        }
        let (a, b) = (self.indptr[r], self.indptr[r + 1]);
        (&self.indices[a..b], &self.values[a..b])
    }

    pub fn nnz(&self) -> usize {
        self.indices.len()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} line {line}: {reason}")]
    Parse {
        path: String,
        line: usize,
        reason: String,
    },
}

/// A data file's text and its path for messages.
fn read_text(path: &std::path::Path) -> Result<(String, String), DataError> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| DataError::Read {
        path: p.clone(),
        source,
    })?;
    Ok((p, text))
}

/// Reads `user item value [timestamp]` lines separated by tabs, commas or spaces (MovieLens
/// `u.data` / `uN.base` layout; a header line that does not parse as a number is skipped),
/// mapping ids through `users` and `items`.
pub fn read_triples(
    path: &std::path::Path,
    users: &mut IdMap,
    items: &mut IdMap,
) -> Result<Vec<Triple>, DataError> {
    let (p, text) = read_text(path)?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let f: Vec<&str> = line
            .split(['\t', ',', ' '])
            .filter(|s| !s.is_empty())
            .collect();
        let bad = |reason: String| DataError::Parse {
            path: p.clone(),
            line: n + 1,
            reason,
        };
        if f.len() < 3 {
            return Err(bad(format!("{} fields, want user item value", f.len())));
        }
        let Ok(value) = f[2].parse::<f32>() else {
            if n == 0 {
                continue;
            }
            return Err(bad(format!("value {:?} is not a number", f[2])));
        };
        if !value.is_finite() {
            return Err(bad(format!("value {value} is not finite")));
        }
        let ts = match f.get(3) {
            Some(t) => t
                .parse::<i64>()
                .map_err(|_| bad(format!("timestamp {t:?} is not an integer")))?,
            None => 0,
        };
        out.push(Triple {
            user: users.get_or_insert(f[0]),
            item: items.get_or_insert(f[1]),
            value,
            ts,
        });
    }
    Ok(out)
}

/// Reads `user,item` pairs (a header line is skipped), each an interaction of value 1.
pub fn read_pairs(
    path: &std::path::Path,
    users: &mut IdMap,
    items: &mut IdMap,
) -> Result<Vec<Triple>, DataError> {
    let (p, text) = read_text(path)?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let f: Vec<&str> = line
            .split(['\t', ',', ' '])
            .filter(|s| !s.is_empty())
            .collect();
        if f.is_empty() || (n == 0 && f[0].parse::<i64>().is_err()) {
            continue;
        }
        if f.len() < 2 {
            return Err(DataError::Parse {
                path: p.clone(),
                line: n + 1,
                reason: format!("{} field, want user item", f.len()),
            });
        }
        out.push(Triple {
            user: users.get_or_insert(f[0]),
            item: items.get_or_insert(f[1]),
            value: 1.0,
            ts: 0,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csr_sorts_rows_and_sums_duplicates() {
        let t = |user, item, value| Triple {
            user,
            item,
            value,
            ts: 0,
        };
        let triples = [t(1, 2, 1.0), t(0, 1, 2.0), t(1, 0, 3.0), t(1, 2, 4.0)];
        let by_user = Csr::build(&triples, 3, false);
        assert_eq!(by_user.row(0), (&[1u32][..], &[2.0f32][..]));
        assert_eq!(by_user.row(1), (&[0u32, 2][..], &[3.0f32, 5.0][..]));
        assert_eq!(by_user.row(2).0.len(), 0);
        let by_item = Csr::build(&triples, 3, true);
        assert_eq!(by_item.row(2), (&[1u32][..], &[5.0f32][..]));
        assert_eq!(by_item.nnz(), 3);
    }

    #[test]
    fn reads_movielens_lines_and_names_bad_ones() {
        let dir = std::env::temp_dir().join(format!("factor-data-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("u.base");
        std::fs::write(&f, "1\t10\t5\t881250949\n2\t10\t3\t891717742\n").unwrap();
        let (mut u, mut i) = (IdMap::default(), IdMap::default());
        let t = read_triples(&f, &mut u, &mut i).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!((u.len(), i.len()), (2, 1));
        assert_eq!(t[1].value, 3.0);
        std::fs::write(&f, "1\t10\t5\n2\t10\tx\n").unwrap();
        let e = read_triples(&f, &mut u, &mut i).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("\"x\""), "{e}");
    }
}
