//! A sentence-transformer read from its directory and run natively in libtorch: a BERT-family or
//! MPNet encoder driven by `config.json` (`model_type` chooses), weights from
//! `model.safetensors`, mean (or CLS) pooling from `1_Pooling/config.json`, L2 normalisation when
//! `modules.json` lists a Normalize module, and the truncation length from
//! `sentence_bert_config.json`.
//!
//! The forward pass is the one `transformers`' `BertModel` (or `MPNetModel`) computes, with two
//! changes that cost nothing in accuracy: query, key and value are one fused matrix product, and
//! attention is libtorch's fused `scaled_dot_product_attention` with a boolean mask (none when the
//! batch has no padding). Inference runs without gradients.
//!
//! MPNet (all-mpnet-base-v2) is the same post-LayerNorm transformer with other tensor names, no
//! token-type embeddings, positions counted from `pad_token_id + 1` (as RoBERTa's), and a
//! relative position bias added to every attention score: T5-style buckets of the distance
//! between key and query (32 buckets, 16 per direction, exact below 8, logarithmic up to 128),
//! one learned value per bucket and head (`encoder.relative_attention_bias`). As in
//! `MPNetEncoder`, the bias is computed once per forward pass and shared by all layers; here its
//! `[heads, L, L]` table for the longest sequence is made at load and each batch takes its
//! top-left corner (the bias depends only on the distance).

use serde::Deserialize;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// What to run when the model directory is missing.
pub const FETCH_HINT: &str = "run `make model` (`make model MODEL=<name>` for another model; deploy/local/model.sh) to fetch it";

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model file {path} is missing: {hint}", hint = FETCH_HINT)]
    Missing { path: PathBuf },
    #[error("model file {path} is invalid: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("model weights lack tensor {0}")]
    MissingTensor(String),
    #[error("model tensor {name} has shape {actual:?}, expected {expected:?}")]
    Shape {
        name: String,
        actual: Vec<i64>,
        expected: Vec<i64>,
    },
    #[error("unsupported model: {0}")]
    Unsupported(String),
    #[error("device {0}")]
    Device(String),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

/// The part of a BERT `config.json` the encoder uses.
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    pub hidden_size: i64,
    pub num_attention_heads: i64,
    pub num_hidden_layers: i64,
    pub intermediate_size: i64,
    pub max_position_embeddings: i64,
    pub vocab_size: i64,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_position_type")]
    pub position_embedding_type: String,
    #[serde(default)]
    pub model_type: String,
    /// RoBERTa and MPNet count positions from `pad_token_id + 1`.
    #[serde(default)]
    pub pad_token_id: i64,
    /// MPNet: rows of the relative attention bias table.
    #[serde(default)]
    pub relative_attention_num_buckets: i64,
}

/// The encoder families the native forward pass implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// BERT (and RoBERTa) layout: `embeddings.token_type_embeddings`, `attention.self.query`, …
    Bert,
    /// MPNet: `attention.attn.q`, …, and `encoder.relative_attention_bias`.
    MpNet,
}

impl BertConfig {
    pub fn architecture(&self) -> Architecture {
        if self.model_type == "mpnet" {
            Architecture::MpNet
        } else {
            Architecture::Bert
        }
    }

    /// The position id of a sequence's first token: 0 for BERT, `pad_token_id + 1` for RoBERTa
    /// and MPNet (their `create_position_ids_from_input_ids`).
    pub fn position_offset(&self) -> i64 {
        match self.model_type.as_str() {
            "roberta" | "mpnet" => self.pad_token_id + 1,
            _ => 0,
        }
    }
}

/// MPNet's `compute_position_bias` always uses 32 buckets and a largest distance of 128.
const MPNET_BUCKETS: i64 = 32;
const MPNET_MAX_DISTANCE: f64 = 128.0;

fn default_eps() -> f64 {
    1e-12
}
fn default_act() -> String {
    "gelu".into()
}
fn default_position_type() -> String {
    "absolute".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    Mean,
    Cls,
}

/// Everything about a model directory except the weights.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    pub dir: PathBuf,
    /// The directory's name, reported as the model name.
    pub name: String,
    pub bert: BertConfig,
    pub max_seq_length: usize,
    pub pooling: Pooling,
    pub normalize: bool,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ModelError> {
    let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ModelError::Missing {
            path: path.to_owned(),
        },
        _ => ModelError::Invalid {
            path: path.to_owned(),
            message: e.to_string(),
        },
    })?;
    serde_json::from_str(&text).map_err(|e| ModelError::Invalid {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

#[derive(Deserialize)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
}

#[derive(Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
}

#[derive(Deserialize)]
struct ModuleEntry {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    path: String,
}

impl ModelSpec {
    /// Reads and checks the configuration files of a sentence-transformers directory.
    pub fn read(dir: &Path) -> Result<Self, ModelError> {
        if !dir.is_dir() {
            return Err(ModelError::Missing {
                path: dir.to_owned(),
            });
        }
        let bert: BertConfig = read_json(&dir.join("config.json"))?;
        if !bert.model_type.is_empty()
            && !["bert", "roberta", "mpnet"].contains(&bert.model_type.as_str())
        {
            return Err(ModelError::Unsupported(format!(
                "model_type {:?} (a BERT-family or MPNet encoder is needed)",
                bert.model_type
            )));
        }
        if bert.architecture() == Architecture::MpNet
            && bert.relative_attention_num_buckets < MPNET_BUCKETS
        {
            return Err(ModelError::Unsupported(format!(
                "mpnet with relative_attention_num_buckets {} (at least {MPNET_BUCKETS} needed)",
                bert.relative_attention_num_buckets
            )));
        }
        if bert.position_embedding_type != "absolute" {
            return Err(ModelError::Unsupported(format!(
                "position_embedding_type {:?}",
                bert.position_embedding_type
            )));
        }
        activation(&bert.hidden_act)?;
        if bert.hidden_size % bert.num_attention_heads != 0 {
            return Err(ModelError::Invalid {
                path: dir.join("config.json"),
                message: "hidden_size is not a multiple of num_attention_heads".into(),
            });
        }
        let modules: Vec<ModuleEntry> = read_json(&dir.join("modules.json"))?;
        let pooling_dir = modules
            .iter()
            .find(|m| m.kind.ends_with(".Pooling"))
            .map(|m| m.path.clone())
            .unwrap_or_else(|| "1_Pooling".into());
        let pc: PoolingConfig = read_json(&dir.join(pooling_dir).join("config.json"))?;
        let pooling = match (
            pc.pooling_mode_mean_tokens,
            pc.pooling_mode_cls_token,
            pc.pooling_mode_max_tokens || pc.pooling_mode_mean_sqrt_len_tokens,
        ) {
            (true, false, false) => Pooling::Mean,
            (false, true, false) => Pooling::Cls,
            _ => {
                return Err(ModelError::Unsupported(
                    "pooling other than exactly one of mean or CLS".into(),
                ));
            }
        };
        let normalize = modules.iter().any(|m| m.kind.ends_with(".Normalize"));
        let sb: SentenceBertConfig = read_json(&dir.join("sentence_bert_config.json"))?;
        let positions = (bert.max_position_embeddings - bert.position_offset()).max(1) as usize;
        let max_seq_length = sb.max_seq_length.unwrap_or(positions).min(positions);
        let name = dir
            .canonicalize()
            .unwrap_or_else(|_| dir.to_owned())
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into());
        Ok(Self {
            dir: dir.to_owned(),
            name,
            bert,
            max_seq_length,
            pooling,
            normalize,
        })
    }

    pub fn dimension(&self) -> usize {
        self.bert.hidden_size as usize
    }
}

#[derive(Debug, Clone, Copy)]
enum Activation {
    GeluExact,
    GeluTanh,
    Relu,
}

fn activation(name: &str) -> Result<Activation, ModelError> {
    match name {
        "gelu" => Ok(Activation::GeluExact),
        "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok(Activation::GeluTanh),
        "relu" => Ok(Activation::Relu),
        other => Err(ModelError::Unsupported(format!("hidden_act {other:?}"))),
    }
}

/// Where inference runs: `cpu`, `cuda` or `cuda:N`.
pub fn parse_device(s: &str) -> Result<Device, ModelError> {
    match s.trim() {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::Cuda(0)),
        other => other
            .strip_prefix("cuda:")
            .and_then(|n| n.parse().ok())
            .map(Device::Cuda)
            .ok_or_else(|| {
                ModelError::Device(format!("{other:?} is not one of cpu, cuda, cuda:N"))
            }),
    }
}

/// Makes CUDA usable. The binary does not link libtorch_cuda.so (the linker drops it as unused,
/// and linking it would make every CPU-only node install the whole CUDA stack), so it is loaded
/// here, which registers libtorch's CUDA backend.
pub fn enable_cuda(device: Device) -> Result<(), ModelError> {
    let Device::Cuda(index) = device else {
        return Ok(());
    };
    let name = c"libtorch_cuda.so";
    // SAFETY: dlopen with a valid NUL-terminated name; the handle is kept for the process life.
    let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    if handle.is_null() {
        // SAFETY: dlerror returns a thread-local C string or null.
        let err = unsafe { libc::dlerror() };
        let msg = if err.is_null() {
            "unknown error".to_owned()
        } else {
            // SAFETY: non-null pointer from dlerror is a valid C string.
            unsafe { std::ffi::CStr::from_ptr(err) }
                .to_string_lossy()
                .into_owned()
        };
        return Err(ModelError::Device(format!(
            "cuda requested but libtorch_cuda.so cannot be loaded ({msg}); install torch with its CUDA dependencies (RECALLOC_TORCH_CUDA=1 make install)"
        )));
    }
    let count = tch::Cuda::device_count();
    if (index as i64) >= count {
        return Err(ModelError::Device(format!(
            "cuda:{index} requested but libtorch sees {count} CUDA device(s)"
        )));
    }
    Ok(())
}

struct Layer {
    qkv_w: Tensor,
    qkv_b: Tensor,
    out_w: Tensor,
    out_b: Tensor,
    ln1_w: Tensor,
    ln1_b: Tensor,
    ff1_w: Tensor,
    ff1_b: Tensor,
    ff2_w: Tensor,
    ff2_b: Tensor,
    ln2_w: Tensor,
    ln2_b: Tensor,
}

impl Layer {
    fn shallow_clone(&self) -> Self {
        Self {
            qkv_w: self.qkv_w.shallow_clone(),
            qkv_b: self.qkv_b.shallow_clone(),
            out_w: self.out_w.shallow_clone(),
            out_b: self.out_b.shallow_clone(),
            ln1_w: self.ln1_w.shallow_clone(),
            ln1_b: self.ln1_b.shallow_clone(),
            ff1_w: self.ff1_w.shallow_clone(),
            ff1_b: self.ff1_b.shallow_clone(),
            ff2_w: self.ff2_w.shallow_clone(),
            ff2_b: self.ff2_b.shallow_clone(),
            ln2_w: self.ln2_w.shallow_clone(),
            ln2_b: self.ln2_b.shallow_clone(),
        }
    }
}

/// The encoder's weights on one device (a BERT-family or MPNet encoder, see the module docs).
/// `Tensor` is `Send` but not `Sync`: each inference thread takes its own
/// [`BertEncoder::shallow_clone`], which shares the weight memory.
pub struct BertEncoder {
    spec: ModelSpec,
    device: Device,
    kind: Kind,
    act: Activation,
    word: Tensor,
    /// Position embeddings from the first real position on (`position_offset` rows skipped).
    position: Tensor,
    /// BERT: the type-0 token-type embedding added to every token; MPNet has none.
    token_type0: Option<Tensor>,
    emb_ln_w: Tensor,
    emb_ln_b: Tensor,
    /// MPNet: the relative position bias `[heads, L, L]` for `L = max_seq_length`.
    relative_bias: Option<Tensor>,
    layers: Vec<Layer>,
}

/// MPNet's `relative_position_bucket` for every (query, key) pair of a sequence of `len`, as
/// `[len, len]` int64, computed with the same libtorch operations (and so the same f32
/// rounding) as `transformers`.
pub fn mpnet_relative_buckets(len: i64) -> Tensor {
    let pos = Tensor::arange(len, (Kind::Int64, Device::Cpu));
    // relative_position = memory - context; n = -relative_position.
    let n = -(pos.unsqueeze(0) - pos.unsqueeze(1));
    let half = MPNET_BUCKETS / 2;
    let sign = n.lt(0).to_kind(Kind::Int64) * half;
    let n = n.abs();
    let max_exact = half / 2;
    let is_small = n.lt(max_exact);
    let large = ((n.to_kind(Kind::Float) / max_exact as f64).log()
        / (MPNET_MAX_DISTANCE / max_exact as f64).ln()
        * (half - max_exact) as f64)
        .to_kind(Kind::Int64)
        + max_exact;
    let large = large.clamp_max(half - 1);
    sign + n.where_self(&is_small, &large)
}

/// Looks a tensor up by name, with or without a `bert.` / `roberta.` / `model.` prefix.
struct Weights(std::collections::HashMap<String, Tensor>);

impl Weights {
    fn take(&mut self, name: &str, shape: &[i64]) -> Result<Tensor, ModelError> {
        let t = ["", "bert.", "roberta.", "model."]
            .iter()
            .find_map(|p| self.0.remove(&format!("{p}{name}")))
            .ok_or_else(|| ModelError::MissingTensor(name.to_owned()))?;
        if t.size() != shape {
            return Err(ModelError::Shape {
                name: name.to_owned(),
                actual: t.size(),
                expected: shape.to_vec(),
            });
        }
        Ok(t)
    }
}

impl BertEncoder {
    /// Loads the weights onto `device`; `half` stores them as f16 (GPU only, faster, slightly
    /// less exact).
    pub fn load(spec: ModelSpec, device: Device, half: bool) -> Result<Self, ModelError> {
        let path = spec.dir.join("model.safetensors");
        if !path.is_file() {
            return Err(ModelError::Missing { path });
        }
        let tensors = Tensor::read_safetensors(&path).map_err(|e| ModelError::Invalid {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let kind = if half && device != Device::Cpu {
            Kind::Half
        } else {
            Kind::Float
        };
        let mut w = Weights(
            tensors
                .into_iter()
                .map(|(n, t)| {
                    let t = if t.is_floating_point() {
                        t.to_kind(kind)
                    } else {
                        t
                    };
                    (n, t.to_device(device))
                })
                .collect(),
        );
        let c = &spec.bert;
        let arch = c.architecture();
        let (h, ff) = (c.hidden_size, c.intermediate_size);
        let word = w.take("embeddings.word_embeddings.weight", &[c.vocab_size, h])?;
        let position = w
            .take(
                "embeddings.position_embeddings.weight",
                &[c.max_position_embeddings, h],
            )?
            .narrow(0, c.position_offset(), spec.max_seq_length as i64);
        let token_type0 = match arch {
            Architecture::Bert => Some(
                w.0.keys()
                    .find(|k| k.ends_with("embeddings.token_type_embeddings.weight"))
                    .cloned()
                    .and_then(|k| w.0.remove(&k))
                    .ok_or_else(|| {
                        ModelError::MissingTensor("embeddings.token_type_embeddings.weight".into())
                    })?
                    .get(0),
            ),
            Architecture::MpNet => None,
        };
        let emb_ln_w = w.take("embeddings.LayerNorm.weight", &[h])?;
        let emb_ln_b = w.take("embeddings.LayerNorm.bias", &[h])?;
        let relative_bias = match arch {
            Architecture::Bert => None,
            Architecture::MpNet => {
                let heads = c.num_attention_heads;
                let table = w.take(
                    "encoder.relative_attention_bias.weight",
                    &[c.relative_attention_num_buckets, heads],
                )?;
                let buckets = mpnet_relative_buckets(spec.max_seq_length as i64)
                    .view([-1])
                    .to_device(device);
                let l = spec.max_seq_length as i64;
                // [L·L, heads] → [heads, L, L]
                Some(
                    table
                        .index_select(0, &buckets)
                        .view([l, l, heads])
                        .permute([2, 0, 1])
                        .contiguous(),
                )
            }
        };
        // Tensor names of one layer: (query, key, value, attention output, its LayerNorm).
        let names = match arch {
            Architecture::Bert => [
                "attention.self.query",
                "attention.self.key",
                "attention.self.value",
                "attention.output.dense",
                "attention.output.LayerNorm",
            ],
            Architecture::MpNet => [
                "attention.attn.q",
                "attention.attn.k",
                "attention.attn.v",
                "attention.attn.o",
                "attention.LayerNorm",
            ],
        };
        let [q, k, v, o, ln] = names;
        let mut layers = Vec::new();
        for i in 0..c.num_hidden_layers {
            let p = format!("encoder.layer.{i}.");
            let mut t = |n: &str, shape: &[i64]| w.take(&format!("{p}{n}"), shape);
            let q_w = t(&format!("{q}.weight"), &[h, h])?;
            let k_w = t(&format!("{k}.weight"), &[h, h])?;
            let v_w = t(&format!("{v}.weight"), &[h, h])?;
            let q_b = t(&format!("{q}.bias"), &[h])?;
            let k_b = t(&format!("{k}.bias"), &[h])?;
            let v_b = t(&format!("{v}.bias"), &[h])?;
            layers.push(Layer {
                qkv_w: Tensor::cat(&[q_w, k_w, v_w], 0).contiguous(),
                qkv_b: Tensor::cat(&[q_b, k_b, v_b], 0).contiguous(),
                out_w: t(&format!("{o}.weight"), &[h, h])?,
                out_b: t(&format!("{o}.bias"), &[h])?,
                ln1_w: t(&format!("{ln}.weight"), &[h])?,
                ln1_b: t(&format!("{ln}.bias"), &[h])?,
                ff1_w: t("intermediate.dense.weight", &[ff, h])?,
                ff1_b: t("intermediate.dense.bias", &[ff])?,
                ff2_w: t("output.dense.weight", &[h, ff])?,
                ff2_b: t("output.dense.bias", &[h])?,
                ln2_w: t("output.LayerNorm.weight", &[h])?,
                ln2_b: t("output.LayerNorm.bias", &[h])?,
            });
        }
        let act = activation(&c.hidden_act)?;
        Ok(Self {
            spec,
            device,
            kind,
            act,
            word,
            position,
            token_type0,
            emb_ln_w,
            emb_ln_b,
            relative_bias,
            layers,
        })
    }

    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// Another handle on the same weights, for another inference thread.
    pub fn shallow_clone(&self) -> Self {
        Self {
            spec: self.spec.clone(),
            device: self.device,
            kind: self.kind,
            act: self.act,
            word: self.word.shallow_clone(),
            position: self.position.shallow_clone(),
            token_type0: self.token_type0.as_ref().map(Tensor::shallow_clone),
            emb_ln_w: self.emb_ln_w.shallow_clone(),
            emb_ln_b: self.emb_ln_b.shallow_clone(),
            relative_bias: self.relative_bias.as_ref().map(Tensor::shallow_clone),
            layers: self.layers.iter().map(Layer::shallow_clone).collect(),
        }
    }

    /// Encodes a batch of token id sequences (each already truncated, with its special tokens)
    /// into one pooled vector each, in order.
    pub fn encode(&self, batch: &[&[i64]]) -> Result<Vec<Vec<f32>>, tch::TchError> {
        let _no_grad = tch::no_grad_guard();
        let b = batch.len() as i64;
        if b == 0 {
            return Ok(Vec::new());
        }
        let l = batch.iter().map(|s| s.len()).max().unwrap_or(0).max(1) as i64;
        let padded = batch.iter().any(|s| s.len() as i64 != l);
        let mut ids = Vec::with_capacity((b * l) as usize);
        let mut mask = Vec::with_capacity((b * l) as usize);
        for s in batch {
            ids.extend_from_slice(s);
            mask.extend(std::iter::repeat_n(1f32, s.len()));
            let pad = l as usize - s.len();
            ids.extend(std::iter::repeat_n(0i64, pad));
            mask.extend(std::iter::repeat_n(0f32, pad));
        }
        let h = self.spec.bert.hidden_size;
        let heads = self.spec.bert.num_attention_heads;
        let eps = self.spec.bert.layer_norm_eps;
        let ids = Tensor::f_from_slice(&ids)?
            .f_view([b * l])?
            .f_to_device(self.device)?;
        let mask = Tensor::f_from_slice(&mask)?
            .f_view([b, l])?
            .f_to_device(self.device)?;
        let keys = mask.f_to_kind(Kind::Bool)?.f_view([b, 1, 1, l])?;
        let attn_mask = match &self.relative_bias {
            // BERT: a boolean mask over the keys, none without padding.
            None => padded.then_some(keys),
            // MPNet: the relative position bias added to every score (the same for all layers),
            // padded keys at −∞.
            Some(bias) => {
                let bias = bias.f_narrow(1, 0, l)?.f_narrow(2, 0, l)?.f_unsqueeze(0)?;
                Some(if padded {
                    bias.f_masked_fill(&keys.f_logical_not()?, f64::NEG_INFINITY)?
                } else {
                    bias.f_contiguous()?
                })
            }
        };
        let x = self.word.f_index_select(0, &ids)?.f_view([b, l, h])?
            + self.position.f_narrow(0, 0, l)?;
        let x = match &self.token_type0 {
            Some(t) => x + t,
            None => x,
        };
        let mut x = x.f_layer_norm([h], Some(&self.emb_ln_w), Some(&self.emb_ln_b), eps, false)?;
        for layer in &self.layers {
            let qkv = x
                .f_linear(&layer.qkv_w, Some(&layer.qkv_b))?
                .f_view([b, l, 3, heads, h / heads])?
                .f_permute([2, 0, 3, 1, 4])?;
            let ctx = Tensor::f_scaled_dot_product_attention(
                &qkv.get(0),
                &qkv.get(1),
                &qkv.get(2),
                attn_mask.as_ref(),
                0.0,
                false,
                None,
                false,
            )?
            .f_transpose(1, 2)?
            .f_reshape([b, l, h])?;
            let attended = ctx.f_linear(&layer.out_w, Some(&layer.out_b))? + &x;
            x = attended.f_layer_norm([h], Some(&layer.ln1_w), Some(&layer.ln1_b), eps, false)?;
            let inner = x.f_linear(&layer.ff1_w, Some(&layer.ff1_b))?;
            let inner = match self.act {
                Activation::GeluExact => inner.f_gelu("none")?,
                Activation::GeluTanh => inner.f_gelu("tanh")?,
                Activation::Relu => inner.f_relu()?,
            };
            let out = inner.f_linear(&layer.ff2_w, Some(&layer.ff2_b))? + &x;
            x = out.f_layer_norm([h], Some(&layer.ln2_w), Some(&layer.ln2_b), eps, false)?;
        }
        let x = x.f_to_kind(Kind::Float)?;
        let pooled = match self.spec.pooling {
            Pooling::Mean => {
                let m = mask.f_unsqueeze(-1)?;
                let summed = (&x * &m).f_sum_dim_intlist([1i64].as_slice(), false, Kind::Float)?;
                let counts = m
                    .f_sum_dim_intlist([1i64].as_slice(), false, Kind::Float)?
                    .f_clamp_min(1e-9)?;
                summed / counts
            }
            Pooling::Cls => x.f_select(1, 0)?,
        };
        let pooled = if self.spec.normalize {
            let norm = pooled
                .f_norm_scalaropt_dim(2.0, [1i64].as_slice(), true)?
                .f_clamp_min(1e-12)?;
            pooled / norm
        } else {
            pooled
        };
        let flat: Vec<f32> = pooled
            .f_to_device(Device::Cpu)?
            .f_contiguous()?
            .f_view([-1])?
            .try_into()?;
        Ok(flat.chunks(h as usize).map(<[f32]>::to_vec).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mpnet_buckets_are_those_of_transformers() {
        // Rows are queries, columns keys; n = query − key. Exact below 8 in each direction
        // (keys after the query in the upper half of the buckets), logarithmic up to 128.
        let b = mpnet_relative_buckets(200);
        let at = |q: i64, k: i64| b.int64_value(&[q, k]);
        assert_eq!(at(0, 0), 0);
        assert_eq!(at(1, 0), 1);
        assert_eq!(at(0, 1), 17);
        assert_eq!(at(7, 0), 7);
        assert_eq!(at(8, 0), 8);
        // 8 + floor(ln(20/8) / ln(16) · 8) = 10
        assert_eq!(at(20, 0), 10);
        assert_eq!(at(0, 20), 26);
        assert_eq!(at(127, 0), 15);
        assert_eq!(at(199, 0), 15);
        assert_eq!(at(0, 199), 31);
        // Only the distance matters: a corner of the table is the table of a shorter sequence.
        let small = mpnet_relative_buckets(50);
        assert!(b.narrow(0, 0, 50).narrow(1, 0, 50).equal(&small));
    }

    #[test]
    fn positions_start_after_the_padding_id_for_roberta_and_mpnet() {
        let c = |model_type: &str, pad: i64| BertConfig {
            hidden_size: 8,
            num_attention_heads: 2,
            num_hidden_layers: 1,
            intermediate_size: 16,
            max_position_embeddings: 514,
            vocab_size: 10,
            layer_norm_eps: 1e-5,
            hidden_act: "gelu".into(),
            position_embedding_type: "absolute".into(),
            model_type: model_type.into(),
            pad_token_id: pad,
            relative_attention_num_buckets: 32,
        };
        assert_eq!(c("bert", 0).position_offset(), 0);
        assert_eq!(c("mpnet", 1).position_offset(), 2);
        assert_eq!(c("roberta", 1).position_offset(), 2);
        assert_eq!(c("mpnet", 1).architecture(), Architecture::MpNet);
        assert_eq!(c("", 0).architecture(), Architecture::Bert);
    }
}
