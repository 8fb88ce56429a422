//! The CPU forward pass of `gpubench serve`: plain f32 buffers reused across steps, quantized integer dot products
//! (AVX2 / AVX-512 VNNI, with a portable fallback), fused projections (q|k|v, gate|up), one
//! thread pool for the matrix multiplies and the attention, and per-sequence KV caches that
//! grow without copying on every token.

pub mod isa;
pub mod math;
pub mod packed;
pub mod pool;
pub mod quant;
#[cfg(target_arch = "x86_64")]
mod x86;

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

pub use isa::Isa;
use pool::{Pool, SharedOut};
use quant::{matmul, Acts, Linear};

/// Shape of a llama-family model.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub vocab: usize,
    pub rope_theta: f32,
    pub rms_eps: f64,
    pub context: usize,
    /// GGUF files store q/k for interleaved (GPT-J style) rotation; Hugging Face weights for halves.
    pub rope_interleaved: bool,
    /// Per rotary frequency, a divisor (Llama 3.1+ scaling: the GGUF's `rope_freqs.weight`, or
    /// computed from config.json's `rope_scaling`); None: plain RoPE.
    pub rope_freq_factors: Option<Vec<f32>>,
}

impl LlamaConfig {
    /// The rotary inverse frequencies, one per pair of dimensions, scaled when the model says so.
    pub fn inv_freq(&self) -> Vec<f32> {
        (0..self.head_dim / 2)
            .map(|i| {
                let f = 1f32 / self.rope_theta.powf(2.0 * i as f32 / self.head_dim as f32);
                match &self.rope_freq_factors {
                    Some(k) => f / k.get(i).copied().unwrap_or(1.0),
                    None => f,
                }
            })
            .collect()
    }

    /// Bytes of KV cache one token takes (f32).
    pub fn kv_bytes_per_token(&self) -> usize {
        2 * self.layers * self.kv_heads * self.head_dim * 4
    }
}

/// One sequence's keys (after rotation) and values, per layer: token-major rows of
/// `kv_heads * head_dim` values.
#[derive(Default)]
pub struct KvCache {
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    len: usize,
}

impl KvCache {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.k.iter().chain(&self.v).map(|x| x.capacity() * 4).sum()
    }
}

/// One transformer block's weights.
pub struct CpuLayer {
    pub attn_norm: Vec<f32>,
    /// Rows: q (heads * head_dim), then k and v (kv_heads * head_dim each).
    pub qkv: Linear,
    pub wo: Linear,
    pub ffn_norm: Vec<f32>,
    /// Rows: gate (intermediate), then up (intermediate).
    pub gate_up: Linear,
    pub down: Linear,
}

pub struct CpuLlama {
    cfg: LlamaConfig,
    embed: Linear,
    layers: Vec<CpuLayer>,
    norm: Vec<f32>,
    /// None: the output layer is the embedding.
    lm_head: Option<Linear>,
    inv_freq: Vec<f32>,
    pool: Pool,
    scratch: Mutex<Scratch>,
}

#[derive(Default)]
struct Scratch {
    x: Vec<f32>,
    h: Vec<f32>,
    qkv: Vec<f32>,
    attn: Vec<f32>,
    gu: Vec<f32>,
    act: Vec<f32>,
    cos: Vec<f32>,
    sin: Vec<f32>,
    acts: Acts,
}

/// Sets the number of threads models loaded afterwards use (0: all cores).
pub fn set_threads(n: usize) {
    THREADS.store(n, Ordering::Relaxed);
}
static THREADS: AtomicUsize = AtomicUsize::new(0);

fn threads() -> usize {
    match THREADS.load(Ordering::Relaxed) {
        0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        n => n,
    }
}

thread_local! {
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// One sequence's part of a step, as the forward sees it.
pub struct Span<'a> {
    pub tokens: &'a [u32],
    pub cache: &'a mut KvCache,
    pub want_logits: bool,
}

/// Llama 3.1's RoPE scaling (`rope_type: llama3`) as divisors of the plain frequencies: high
/// frequencies stay, low ones are divided by `factor`, the band between is blended.
pub fn llama3_freq_factors(theta: f32, head_dim: usize, factor: f32, low_freq_factor: f32, high_freq_factor: f32, original_context: f32) -> Vec<f32> {
    let low_wavelen = original_context / low_freq_factor;
    let high_wavelen = original_context / high_freq_factor;
    (0..head_dim / 2)
        .map(|i| {
            let inv = 1f32 / theta.powf(2.0 * i as f32 / head_dim as f32);
            let wavelen = 2.0 * std::f32::consts::PI / inv;
            let scaled = if wavelen < high_wavelen {
                inv
            } else if wavelen > low_wavelen {
                inv / factor
            } else {
                let smooth = (original_context / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                (1.0 - smooth) * inv / factor + smooth * inv
            };
            inv / scaled
        })
        .collect()
}

impl CpuLlama {
    pub fn new(cfg: LlamaConfig, embed: Linear, layers: Vec<CpuLayer>, norm: Vec<f32>, lm_head: Option<Linear>) -> Self {
        let inv_freq = cfg.inv_freq();
        // Matrices that multiply are repacked for the kernels; an embedding that is only looked
        // up stays row-major.
        let layers = layers
            .into_iter()
            .map(|l| CpuLayer { qkv: l.qkv.packed(), wo: l.wo.packed(), gate_up: l.gate_up.packed(), down: l.down.packed(), ..l })
            .collect();
        let (embed, lm_head) = match lm_head {
            Some(h) => (embed, Some(h.packed())),
            None => (embed.packed(), None),
        };
        let pool = Pool::new(threads());
        tracing::info!("CPU kernels: {}, {} threads", isa::get().name(), pool.threads());
        Self { cfg, embed, layers, norm, lm_head, inv_freq, pool, scratch: Mutex::new(Scratch::default()) }
    }

    /// Kernels and threads, for logs and reports.
    pub fn describe(&self) -> String {
        let fmt = self.layers.first().map(|l| l.qkv.format()).unwrap_or("-");
        format!("cpu kernels {} ({fmt} weights, {} threads)", isa::get().name(), self.pool.threads())
    }

    pub fn weight_bytes(&self) -> usize {
        let l: usize = self.layers.iter().map(|l| l.qkv.bytes() + l.wo.bytes() + l.gate_up.bytes() + l.down.bytes()).sum();
        l + self.embed.bytes() + self.lm_head.as_ref().map_or(0, |h| h.bytes())
    }

    pub fn new_cache(&self) -> KvCache {
        KvCache { k: vec![Vec::new(); self.cfg.layers], v: vec![Vec::new(); self.cfg.layers], len: 0 }
    }

    /// Runs one step over all spans, appending their tokens to their caches; returns one row of
    /// logits per span with `want_logits`, in order.
    pub fn forward(&self, spans: &mut [Span<'_>]) -> Result<Vec<Vec<f32>>, String> {
        let cfg = &self.cfg;
        let (h, hd, nh, nkv) = (cfg.hidden, cfg.head_dim, cfg.heads, cfg.kv_heads);
        let (qd, kvd) = (nh * hd, nkv * hd);
        let qkvd = qd + 2 * kvd;
        let inter = cfg.intermediate;
        let half = hd / 2;
        let mut places = Vec::with_capacity(spans.len()); // (offset, n, start)
        let mut t = 0;
        for s in spans.iter() {
            let (n, start) = (s.tokens.len(), s.cache.len);
            if n == 0 {
                return Err("empty step input".into());
            }
            if start + n > cfg.context {
                return Err(format!("sequence of {} tokens exceeds the context of {}", start + n, cfg.context));
            }
            places.push((t, n, start));
            t += n;
        }
        let mut guard = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        let sc = &mut *guard;
        sc.x.resize(t * h, 0.0);
        sc.h.resize(t * h, 0.0);
        sc.qkv.resize(t * qkvd, 0.0);
        sc.attn.resize(t * qd, 0.0);
        sc.gu.resize(t * 2 * inter, 0.0);
        sc.act.resize(t * inter, 0.0);
        sc.cos.resize(t * half, 0.0);
        sc.sin.resize(t * half, 0.0);
        for (s, &(off, _, start)) in spans.iter().zip(&places) {
            for (i, &tok) in s.tokens.iter().enumerate() {
                if tok as usize >= self.embed.rows {
                    return Err(format!("token id {tok} is outside the vocabulary of {}", self.embed.rows));
                }
                let row = off + i;
                self.embed.row_f32(tok as usize, &mut sc.x[row * h..(row + 1) * h]);
                let pos = (start + i) as f32;
                for (j, f) in self.inv_freq.iter().enumerate() {
                    let (sn, cs) = (pos * f).sin_cos();
                    sc.cos[row * half + j] = cs;
                    sc.sin[row * half + j] = sn;
                }
            }
        }
        let eps = cfg.rms_eps as f32;
        for (li, layer) in self.layers.iter().enumerate() {
            rms_norm(&sc.x, &layer.attn_norm, eps, &mut sc.h);
            matmul(&self.pool, &layer.qkv, &sc.h, t, &mut sc.acts, &mut sc.qkv);
            for row in 0..t {
                let r = &mut sc.qkv[row * qkvd..(row + 1) * qkvd];
                let (cs, sn) = (&sc.cos[row * half..(row + 1) * half], &sc.sin[row * half..(row + 1) * half]);
                for head in r[..qd + kvd].chunks_exact_mut(hd) {
                    rope(head, cs, sn, cfg.rope_interleaved);
                }
            }
            for (s, &(off, n, _)) in spans.iter_mut().zip(&places) {
                let (k, v) = (&mut s.cache.k[li], &mut s.cache.v[li]);
                for row in off..off + n {
                    let r = &sc.qkv[row * qkvd..(row + 1) * qkvd];
                    k.extend_from_slice(&r[qd..qd + kvd]);
                    v.extend_from_slice(&r[qd + kvd..]);
                }
            }
            self.attention(spans, &places, li, &sc.qkv, &mut sc.attn);
            matmul(&self.pool, &layer.wo, &sc.attn, t, &mut sc.acts, &mut sc.h);
            add(&mut sc.x, &sc.h);
            rms_norm(&sc.x, &layer.ffn_norm, eps, &mut sc.h);
            matmul(&self.pool, &layer.gate_up, &sc.h, t, &mut sc.acts, &mut sc.gu);
            self.swiglu(&sc.gu, t, &mut sc.act);
            matmul(&self.pool, &layer.down, &sc.act, t, &mut sc.acts, &mut sc.h);
            add(&mut sc.x, &sc.h);
        }
        for (s, &(_, n, _)) in spans.iter_mut().zip(&places) {
            s.cache.len += n;
        }
        let rows: Vec<usize> =
            spans.iter().zip(&places).filter(|(s, _)| s.want_logits).map(|(_, &(off, n, _))| off + n - 1).collect();
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let m = rows.len();
        let mut last = vec![0f32; m * h];
        for (i, &r) in rows.iter().enumerate() {
            last[i * h..(i + 1) * h].copy_from_slice(&sc.x[r * h..(r + 1) * h]);
        }
        let mut normed = vec![0f32; m * h];
        rms_norm(&last, &self.norm, eps, &mut normed);
        let head = self.lm_head.as_ref().unwrap_or(&self.embed);
        let mut logits = vec![0f32; m * head.rows];
        matmul(&self.pool, head, &normed, m, &mut sc.acts, &mut logits);
        if m == 1 {
            return Ok(vec![logits]);
        }
        Ok(logits.chunks_exact(head.rows).map(|c| c.to_vec()).collect())
    }

    /// `act = silu(gate) * up` for `t` rows of `gu` (gate then up, `intermediate` each), shared
    /// by the pool's threads in pieces of 256 values.
    fn swiglu(&self, gu: &[f32], t: usize, act: &mut [f32]) {
        const PIECE: usize = 256;
        let inter = self.cfg.intermediate;
        let per_row = inter.div_ceil(PIECE);
        let next = AtomicUsize::new(0);
        let outp = SharedOut::new(act);
        self.pool.run(&|_| {
            loop {
                let j = next.fetch_add(1, Ordering::Relaxed);
                if j >= t * per_row {
                    break;
                }
                let (row, i0) = (j / per_row, (j % per_row) * PIECE);
                let n = PIECE.min(inter - i0);
                let g = &gu[row * 2 * inter + i0..row * 2 * inter + i0 + n];
                let u = &gu[row * 2 * inter + inter + i0..row * 2 * inter + inter + i0 + n];
                // SAFETY: this piece of `act` belongs to this job alone.
                let a = unsafe { std::slice::from_raw_parts_mut(outp.ptr().add(row * inter + i0), n) };
                for ((a, &g), &u) in a.iter_mut().zip(g).zip(u) {
                    *a = math::silu(g) * u;
                }
            }
        });
    }

    /// Causal attention of every span's new tokens over its cache, split into jobs of
    /// (span, KV head, block of queries) shared by the pool's threads. The query heads that share
    /// a KV head are computed together, so each cached key and value is read once for all of them.
    fn attention(&self, spans: &[Span<'_>], places: &[(usize, usize, usize)], li: usize, qkv: &[f32], out: &mut [f32]) {
        const QBLOCK: usize = 16;
        let cfg = &self.cfg;
        let (hd, nh, nkv) = (cfg.head_dim, cfg.heads, cfg.kv_heads);
        let (qd, kvd) = (nh * hd, nkv * hd);
        let qkvd = qd + 2 * kvd;
        let rep = nh / nkv;
        let scale = 1.0 / (hd as f32).sqrt();
        let mut jobs = Vec::new(); // (span, kv head, first query, queries)
        for (si, &(_, n, _)) in places.iter().enumerate() {
            for g in 0..nkv {
                let mut i = 0;
                while i < n {
                    jobs.push((si, g, i, QBLOCK.min(n - i)));
                    i += QBLOCK;
                }
            }
        }
        let caches: Vec<(&[f32], &[f32])> = spans.iter().map(|s| (&s.cache.k[li][..], &s.cache.v[li][..])).collect();
        let next = AtomicUsize::new(0);
        let outp = SharedOut::new(out);
        let isa = isa::get();
        self.pool.run(&|_| {
            SCORES.with(|cell| {
                let mut scores = cell.borrow_mut();
                loop {
                    let j = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(si, g, q0, qn)) = jobs.get(j) else { break };
                    let (off, _, start) = places[si];
                    let (kc, vc) = caches[si];
                    for i in q0..q0 + qn {
                        let row = off + i;
                        // The query heads of KV head g are contiguous: g * rep .. (g + 1) * rep.
                        let qs = &qkv[row * qkvd + g * rep * hd..row * qkvd + (g + 1) * rep * hd];
                        let l = start + i + 1;
                        scores.resize(rep * l, 0.0);
                        for p in 0..l {
                            let k = &kc[p * kvd + g * hd..p * kvd + (g + 1) * hd];
                            for (h, q) in qs.chunks_exact(hd).enumerate() {
                                scores[h * l + p] = dot(isa, q, k) * scale;
                            }
                        }
                        for sc in scores.chunks_exact_mut(l) {
                            let max = sc.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                            let mut sum = 0f32;
                            for v in sc.iter_mut() {
                                *v = math::exp_nonpositive(*v - max);
                                sum += *v;
                            }
                            let inv = 1.0 / sum;
                            sc.iter_mut().for_each(|v| *v *= inv);
                        }
                        // SAFETY: row `row`, heads g * rep .. (g + 1) * rep of `out` belong to this job alone.
                        let o = unsafe { std::slice::from_raw_parts_mut(outp.ptr().add(row * qd + g * rep * hd), rep * hd) };
                        o.fill(0.0);
                        for p in 0..l {
                            let v = &vc[p * kvd + g * hd..p * kvd + (g + 1) * hd];
                            for (h, oh) in o.chunks_exact_mut(hd).enumerate() {
                                axpy(isa, oh, scores[h * l + p], v);
                            }
                        }
                    }
                }
            });
        });
    }
}

#[inline]
fn dot(isa: Isa, a: &[f32], b: &[f32]) -> f32 {
    match isa {
        // SAFETY: the level was detected at run time.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Vnni => unsafe { x86::dot_f32(a, b) },
        _ => a.iter().zip(b).map(|(x, y)| x * y).sum(),
    }
}

#[inline]
fn axpy(isa: Isa, y: &mut [f32], alpha: f32, x: &[f32]) {
    match isa {
        // SAFETY: the level was detected at run time.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Vnni => unsafe { x86::axpy_f32(y, alpha, x) },
        _ => {
            for (a, b) in y.iter_mut().zip(x) {
                *a += alpha * b;
            }
        }
    }
}

fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let h = w.len();
    for (xr, or) in x.chunks_exact(h).zip(out.chunks_exact_mut(h)) {
        let ms = xr.iter().map(|v| v * v).sum::<f32>() / h as f32;
        let s = 1.0 / (ms + eps).sqrt();
        for ((o, &v), &g) in or.iter_mut().zip(xr).zip(w) {
            *o = v * s * g;
        }
    }
}

fn add(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// Rotates one head: pairs (2i, 2i+1) when interleaved (GGUF), else (i, i + half).
fn rope(x: &mut [f32], cos: &[f32], sin: &[f32], interleaved: bool) {
    let half = cos.len();
    for i in 0..half {
        let (a, b) = if interleaved { (2 * i, 2 * i + 1) } else { (i, i + half) };
        let (x0, x1) = (x[a], x[b]);
        x[a] = x0 * cos[i] - x1 * sin[i];
        x[b] = x0 * sin[i] + x1 * cos[i];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama3_scaling_keeps_high_and_divides_low_frequencies() {
        // Llama 3.1 8B: theta 500000, head_dim 128, factor 8, low 1, high 4, original 8192.
        let k = llama3_freq_factors(500_000.0, 128, 8.0, 1.0, 4.0, 8192.0);
        assert_eq!(k.len(), 64);
        assert!((k[0] - 1.0).abs() < 1e-6, "the highest frequency is kept");
        assert!((k[63] - 8.0).abs() < 1e-4, "the lowest is divided by the factor");
        assert!(k.windows(2).all(|w| w[1] >= w[0] - 1e-6), "divisors grow as frequencies fall");
        assert!(k.iter().any(|&x| x > 1.01 && x < 7.99), "a blended band in between");
    }
}
