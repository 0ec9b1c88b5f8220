//! Stored vector encodings — the original design's storage compression. Written by the embed
//! service, read by embed and rank; here because this crate owns the Redis layout.
//!
//! A stored vector is one byte naming the encoding, then the payload (little-endian):
//!
//! | encoding | payload | bytes for 384 dims | error per component |
//! |---|---|---|---|
//! | `f32` | the floats | 1,537 | none |
//! | `f16` | IEEE half floats | 769 | ≤ 2⁻¹¹·\|x\| (relative rounding of f16; unit vectors have no subnormals that matter) |
//! | `int8` | scale `s = max\|x\|/127` as f32, then `round(x/s)` as i8 | 389 | ≤ s/2 = max\|x\|/254 |
//!
//! For a unit vector the int8 bound gives a cosine to the original of at least
//! `1 − d·(max|x|/254)²/2`; measured on MiniLM vectors it is above 0.9999 (see the tests and
//! bench/results.md for the recall cost).

use half::f16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    F32,
    F16,
    Int8,
}

impl Encoding {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(Self::F32),
            "f16" => Ok(Self::F16),
            "int8" => Ok(Self::Int8),
            other => Err(format!("{other:?} is not one of f32, f16, int8")),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Int8 => "int8",
        }
    }

    fn tag(self) -> u8 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Int8 => 2,
        }
    }

    /// Stored size of a vector of `dim` components.
    pub fn stored_bytes(self, dim: usize) -> usize {
        1 + match self {
            Self::F32 => 4 * dim,
            Self::F16 => 2 * dim,
            Self::Int8 => 4 + dim,
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VectorDecodeError {
    #[error("stored vector is empty")]
    Empty,
    #[error("stored vector has unknown encoding tag {0}")]
    UnknownTag(u8),
    #[error("stored {encoding} vector has {len} payload bytes, not a whole number of components")]
    Length { encoding: &'static str, len: usize },
}

pub fn encode(v: &[f32], enc: Encoding) -> Vec<u8> {
    let mut out = Vec::with_capacity(enc.stored_bytes(v.len()));
    out.push(enc.tag());
    match enc {
        Encoding::F32 => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
        Encoding::F16 => v
            .iter()
            .for_each(|x| out.extend(f16::from_f32(*x).to_le_bytes())),
        Encoding::Int8 => {
            let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
            let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
            out.extend(scale.to_le_bytes());
            out.extend(
                v.iter()
                    .map(|x| (x / scale).round().clamp(-127.0, 127.0) as i8 as u8),
            );
        }
    }
    out
}

pub fn decode(bytes: &[u8]) -> Result<Vec<f32>, VectorDecodeError> {
    let (&tag, payload) = bytes.split_first().ok_or(VectorDecodeError::Empty)?;
    let bad = |encoding| VectorDecodeError::Length {
        encoding,
        len: payload.len(),
    };
    match tag {
        0 => {
            if payload.len() % 4 != 0 {
                return Err(bad("f32"));
            }
            Ok(payload
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect())
        }
        1 => {
            if payload.len() % 2 != 0 {
                return Err(bad("f16"));
            }
            Ok(payload
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect())
        }
        2 => {
            if payload.len() < 4 {
                return Err(bad("int8"));
            }
            let scale = f32::from_le_bytes([payload[0], payload[1], payload[2], payload[3]]);
            Ok(payload[4..]
                .iter()
                .map(|&b| (b as i8) as f32 * scale)
                .collect())
        }
        t => Err(VectorDecodeError::UnknownTag(t)),
    }
}

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

pub fn norm(a: &[f32]) -> f32 {
    dot(a, a).sqrt()
}

/// Cosine similarity; 0 when either vector is zero.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let n = norm(a) * norm(b);
    if n > 0.0 { dot(a, b) / n } else { 0.0 }
}

/// Scales to unit length in place (a zero vector stays zero).
pub fn normalize(v: &mut [f32]) {
    let n = norm(v);
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn unit(v: Vec<f32>) -> Vec<f32> {
        let mut v = v;
        normalize(&mut v);
        v
    }

    proptest! {
        #[test]
        fn round_trips_within_the_documented_bounds(
            v in proptest::collection::vec(-1.0f32..1.0, 1..512)
        ) {
            let v = unit(v);
            prop_assume!(norm(&v) > 0.5);
            let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
            let f32_back = decode(&encode(&v, Encoding::F32)).unwrap();
            prop_assert_eq!(&f32_back, &v);
            let f16_back = decode(&encode(&v, Encoding::F16)).unwrap();
            for (a, b) in v.iter().zip(&f16_back) {
                // Relative f16 rounding, plus the absolute step of f16 subnormals (2^-24).
                prop_assert!((a - b).abs() <= a.abs() * 2f32.powi(-11) + 2f32.powi(-24));
            }
            let i8_back = decode(&encode(&v, Encoding::Int8)).unwrap();
            prop_assert_eq!(i8_back.len(), v.len());
            for (a, b) in v.iter().zip(&i8_back) {
                prop_assert!((a - b).abs() <= max / 254.0 * 1.0001);
            }
            prop_assert_eq!(encode(&v, Encoding::Int8).len(), Encoding::Int8.stored_bytes(v.len()));
            prop_assert_eq!(encode(&v, Encoding::F16).len(), Encoding::F16.stored_bytes(v.len()));
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&bytes);
        }
    }

    #[test]
    fn zero_and_bad_inputs() {
        assert_eq!(
            decode(&encode(&[0.0; 4], Encoding::Int8)).unwrap(),
            vec![0.0; 4]
        );
        assert_eq!(decode(&[]), Err(VectorDecodeError::Empty));
        assert_eq!(decode(&[9, 1]), Err(VectorDecodeError::UnknownTag(9)));
        assert!(matches!(
            decode(&[0, 1, 2, 3]),
            Err(VectorDecodeError::Length { .. })
        ));
        assert_eq!(Encoding::parse("int8"), Ok(Encoding::Int8));
        assert!(
            Encoding::parse("q4")
                .unwrap_err()
                .contains("f32, f16, int8")
        );
    }
}
