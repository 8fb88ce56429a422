//! Weight formats of the CPU forward, activation quantization, and the matrix multiply that
//! runs a linear layer over all tokens of a step (each weight row is read once per step and
//! applied to up to [`TILE`] tokens at a time).
//!
//! Q4_1 and Q8_0 keep the GGUF blocks (scales widened to f32); activations are quantized to
//! 8 bits per block of 32 with a scale and a block sum, as llama.cpp does, and the dot
//! products run on integers.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::isa::{self, Isa};
use super::pool::Pool;
#[cfg(target_arch = "x86_64")]
use super::x86::{f32_avx2, q4_1_avx2, q4_1_vnni, q8_0_avx2, q8_0_vnni};

/// Elements per quantization block.
pub const QK: usize = 32;
/// Tokens one weight row is applied to at once.
pub const TILE: usize = 4;

/// 32 weights as `d * q + m`, q in 0..16; byte j holds element j (low nibble) and j + 16.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BlockQ4_1 {
    pub d: f32,
    pub m: f32,
    pub qs: [u8; 16],
}

/// 32 weights as `d * q`, q in -128..128.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ8_0 {
    pub d: f32,
    pub qs: [i8; 32],
}

impl Default for BlockQ8_0 {
    fn default() -> Self {
        Self { d: 0.0, qs: [0; 32] }
    }
}

/// A weight matrix, `rows` x `cols`, row-major.
#[derive(Debug)]
pub enum Weights {
    Q4_1(Vec<BlockQ4_1>),
    Q8_0(Vec<BlockQ8_0>),
    F32(Vec<f32>),
}

#[derive(Debug)]
pub struct Linear {
    pub rows: usize,
    pub cols: usize,
    pub w: Weights,
}

impl Linear {
    pub fn bytes(&self) -> usize {
        match &self.w {
            Weights::Q4_1(b) => b.len() * std::mem::size_of::<BlockQ4_1>(),
            Weights::Q8_0(b) => b.len() * std::mem::size_of::<BlockQ8_0>(),
            Weights::F32(v) => v.len() * 4,
        }
    }

    pub fn format(&self) -> &'static str {
        match &self.w {
            Weights::Q4_1(_) => "Q4_1",
            Weights::Q8_0(_) => "Q8_0",
            Weights::F32(_) => "F32",
        }
    }

    /// Row `r` as f32 (the embedding lookup).
    pub fn row_f32(&self, r: usize, out: &mut [f32]) {
        let k = self.cols;
        match &self.w {
            Weights::F32(v) => out.copy_from_slice(&v[r * k..(r + 1) * k]),
            Weights::Q8_0(b) => {
                let nb = k / QK;
                for (blk, o) in b[r * nb..(r + 1) * nb].iter().zip(out.chunks_exact_mut(QK)) {
                    for (x, &q) in o.iter_mut().zip(&blk.qs) {
                        *x = blk.d * q as f32;
                    }
                }
            }
            Weights::Q4_1(b) => {
                let nb = k / QK;
                for (blk, o) in b[r * nb..(r + 1) * nb].iter().zip(out.chunks_exact_mut(QK)) {
                    for j in 0..16 {
                        o[j] = blk.d * (blk.qs[j] & 0x0F) as f32 + blk.m;
                        o[j + 16] = blk.d * (blk.qs[j] >> 4) as f32 + blk.m;
                    }
                }
            }
        }
    }

    /// Stacks matrices with the same number of columns and format into one (fused projections).
    pub fn stack(parts: Vec<Linear>) -> Option<Linear> {
        let cols = parts.first()?.cols;
        let rows = parts.iter().map(|p| p.rows).sum();
        let mut it = parts.into_iter();
        let first = it.next()?;
        let w = match first.w {
            Weights::Q4_1(mut v) => {
                for p in it {
                    let Weights::Q4_1(x) = p.w else { return None };
                    if p.cols != cols {
                        return None;
                    }
                    v.extend(x);
                }
                Weights::Q4_1(v)
            }
            Weights::Q8_0(mut v) => {
                for p in it {
                    let Weights::Q8_0(x) = p.w else { return None };
                    if p.cols != cols {
                        return None;
                    }
                    v.extend(x);
                }
                Weights::Q8_0(v)
            }
            Weights::F32(mut v) => {
                for p in it {
                    let Weights::F32(x) = p.w else { return None };
                    if p.cols != cols {
                        return None;
                    }
                    v.extend(x);
                }
                Weights::F32(v)
            }
        };
        Some(Linear { rows, cols, w })
    }
}

/// Quantizes f32 values (a multiple of 32) into Q8_0 blocks.
pub fn quantize_q8_0(x: &[f32]) -> Vec<BlockQ8_0> {
    x.chunks_exact(QK)
        .map(|c| {
            let amax = c.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let id = if d > 0.0 { 1.0 / d } else { 0.0 };
            let mut qs = [0i8; 32];
            for (q, &v) in qs.iter_mut().zip(c) {
                *q = (v * id).round() as i8;
            }
            BlockQ8_0 { d, qs }
        })
        .collect()
}

/// Activations of a step quantized per block of 32: values, scale, and scale times the sum.
#[derive(Default)]
pub struct Acts {
    pub qs: Vec<i8>,
    pub d: Vec<f32>,
    pub s: Vec<f32>,
    /// Blocks per token.
    pub nb: usize,
}

impl Acts {
    /// Quantizes `t` rows of `k` values (`k` a multiple of 32).
    pub fn quantize(&mut self, x: &[f32], t: usize, k: usize) {
        let nb = k / QK;
        self.nb = nb;
        self.qs.resize(t * k, 0);
        self.d.resize(t * nb, 0.0);
        self.s.resize(t * nb, 0.0);
        let isa = isa::get();
        for (i, c) in x[..t * k].chunks_exact(QK).enumerate() {
            let q = &mut self.qs[i * QK..(i + 1) * QK];
            let (d, s) = match isa {
                // SAFETY: the level was detected at run time; both slices hold 32 values.
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 | Isa::Vnni => unsafe { super::x86::quantize_block_avx2(c, q) },
                _ => quantize_block(c, q),
            };
            self.d[i] = d;
            self.s[i] = s;
        }
    }
}

/// Quantizes 32 values to 8 bits (round half to even): returns (scale, scale * sum of q).
pub fn quantize_block(c: &[f32], q: &mut [i8]) -> (f32, f32) {
    let amax = c.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d > 0.0 { 1.0 / d } else { 0.0 };
    let mut sum = 0i32;
    for (q, &v) in q.iter_mut().zip(c) {
        let r = (v * id).round_ties_even() as i8;
        *q = r;
        sum += r as i32;
    }
    (d, d * sum as f32)
}

/// Raw output pointer shared by the threads of one matmul; each writes its own cells.
#[derive(Clone, Copy)]
struct Out(*mut f32);
// SAFETY: threads write disjoint elements and `run` waits for all of them.
unsafe impl Sync for Out {}
unsafe impl Send for Out {}

/// `out[t][r] = sum_k w[r][k] * x[t][k]` for `t` tokens; `out` is `t` x `lin.rows`.
/// `acts` is scratch for the quantized `x`.
pub fn matmul(pool: &Pool, lin: &Linear, x: &[f32], t: usize, acts: &mut Acts, out: &mut [f32]) {
    let (rows, k) = (lin.rows, lin.cols);
    assert!(x.len() >= t * k && out.len() >= t * rows, "matmul shapes");
    if !matches!(lin.w, Weights::F32(_)) {
        acts.quantize(x, t, k);
    }
    let isa = isa::get();
    let chunk = (rows / (pool.threads() * 16)).clamp(4, 64);
    let chunks = rows.div_ceil(chunk);
    let next = AtomicUsize::new(0);
    let outp = Out(out.as_mut_ptr());
    let acts = &*acts;
    pool.run(&|_| {
        let outp = outp;
        loop {
            let c = next.fetch_add(1, Ordering::Relaxed);
            if c >= chunks {
                break;
            }
            let (r0, r1) = (c * chunk, ((c + 1) * chunk).min(rows));
            for r in r0..r1 {
                let mut t0 = 0;
                while t0 < t {
                    let n = (t - t0).min(TILE);
                    let mut res = [0f32; TILE];
                    row_dot(isa, lin, r, x, acts, t0, n, &mut res);
                    for (j, v) in res[..n].iter().enumerate() {
                        // SAFETY: (t0 + j, r) is inside `out` and written by this thread only.
                        unsafe { *outp.0.add((t0 + j) * rows + r) = *v };
                    }
                    t0 += n;
                }
            }
        }
    });
}

/// Dot products of weight row `r` with tokens `t0..t0 + n` (n <= TILE).
#[allow(clippy::too_many_arguments)]
#[inline]
fn row_dot(isa: Isa, lin: &Linear, r: usize, x: &[f32], a: &Acts, t0: usize, n: usize, res: &mut [f32; TILE]) {
    let k = lin.cols;
    macro_rules! by_n {
        ($f:ident, $w:expr, $a:expr) => {{
            match n {
                1 => res[..1].copy_from_slice(&$f::<1>($w, $a, t0)),
                2 => res[..2].copy_from_slice(&$f::<2>($w, $a, t0)),
                3 => res[..3].copy_from_slice(&$f::<3>($w, $a, t0)),
                _ => res[..4].copy_from_slice(&$f::<4>($w, $a, t0)),
            }
        }};
    }
    match &lin.w {
        Weights::Q4_1(b) => {
            let nb = k / QK;
            let w = &b[r * nb..(r + 1) * nb];
            match isa {
                // SAFETY: `isa` was detected at run time; slices are sized by the shapes above.
                #[cfg(target_arch = "x86_64")]
                Isa::Vnni => unsafe { by_n!(q4_1_vnni, w, a) },
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => unsafe { by_n!(q4_1_avx2, w, a) },
                _ => by_n!(q4_1_scalar, w, a),
            }
        }
        Weights::Q8_0(b) => {
            let nb = k / QK;
            let w = &b[r * nb..(r + 1) * nb];
            match isa {
                #[cfg(target_arch = "x86_64")]
                Isa::Vnni => unsafe { by_n!(q8_0_vnni, w, a) },
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => unsafe { by_n!(q8_0_avx2, w, a) },
                _ => by_n!(q8_0_scalar, w, a),
            }
        }
        Weights::F32(v) => {
            let w = &v[r * k..(r + 1) * k];
            let xs = (x, k);
            match isa {
                #[cfg(target_arch = "x86_64")]
                Isa::Vnni | Isa::Avx2 => unsafe { by_n!(f32_avx2, w, xs) },
                _ => by_n!(f32_scalar, w, xs),
            }
        }
    }
}

pub fn q4_1_scalar<const N: usize>(w: &[BlockQ4_1], a: &Acts, t0: usize) -> [f32; N] {
    let nb = w.len();
    let mut out = [0f32; N];
    for (j, o) in out.iter_mut().enumerate() {
        let row = t0 + j;
        let mut acc = 0f32;
        for (b, blk) in w.iter().enumerate() {
            let q = &a.qs[(row * nb + b) * QK..(row * nb + b + 1) * QK];
            let mut sum = 0i32;
            for i in 0..16 {
                sum += (blk.qs[i] & 0x0F) as i32 * q[i] as i32 + (blk.qs[i] >> 4) as i32 * q[i + 16] as i32;
            }
            acc += sum as f32 * blk.d * a.d[row * nb + b] + blk.m * a.s[row * nb + b];
        }
        *o = acc;
    }
    out
}

pub fn q8_0_scalar<const N: usize>(w: &[BlockQ8_0], a: &Acts, t0: usize) -> [f32; N] {
    let nb = w.len();
    let mut out = [0f32; N];
    for (j, o) in out.iter_mut().enumerate() {
        let row = t0 + j;
        let mut acc = 0f32;
        for (b, blk) in w.iter().enumerate() {
            let q = &a.qs[(row * nb + b) * QK..(row * nb + b + 1) * QK];
            let sum: i32 = blk.qs.iter().zip(q).map(|(&x, &y)| x as i32 * y as i32).sum();
            acc += sum as f32 * blk.d * a.d[row * nb + b];
        }
        *o = acc;
    }
    out
}

pub fn f32_scalar<const N: usize>(w: &[f32], x: (&[f32], usize), t0: usize) -> [f32; N] {
    let (x, k) = x;
    let mut out = [0f32; N];
    for (j, o) in out.iter_mut().enumerate() {
        let xr = &x[(t0 + j) * k..(t0 + j + 1) * k];
        *o = w.iter().zip(xr).map(|(a, b)| a * b).sum();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 33) as f32 / (1u64 << 31) as f32) - 0.5
            })
            .collect()
    }

    fn q4_1_from(x: &[f32]) -> Vec<BlockQ4_1> {
        x.chunks_exact(QK)
            .map(|c| {
                let (mn, mx) = c.iter().fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
                let d = (mx - mn) / 15.0;
                let id = if d > 0.0 { 1.0 / d } else { 0.0 };
                let q = |v: f32| (((v - mn) * id).round() as i32).clamp(0, 15) as u8;
                let mut qs = [0u8; 16];
                for j in 0..16 {
                    qs[j] = q(c[j]) | (q(c[j + 16]) << 4);
                }
                BlockQ4_1 { d, m: mn, qs }
            })
            .collect()
    }

    #[test]
    fn simd_quantization_equals_the_portable_one() {
        let x = rand_vec(32 * 50, 7);
        for isa in isa::available() {
            let (mut a, mut b) = (Acts::default(), Acts::default());
            isa::force(Some(isa));
            a.quantize(&x, 5, 320);
            isa::force(Some(Isa::Scalar));
            b.quantize(&x, 5, 320);
            isa::force(None);
            assert_eq!((a.qs, a.d), (b.qs, b.d), "{isa:?}");
            for (sa, sb) in a.s.iter().zip(&b.s) {
                assert!((sa - sb).abs() <= 1e-6 * sb.abs().max(1.0));
            }
        }
    }

    /// Every format and token count agrees with a plain f32 product of the dequantized rows.
    #[test]
    fn matmul_matches_dequantized_reference_on_every_isa() {
        let (rows, k, t) = (37, 96, 7);
        let wf = rand_vec(rows * k, 1);
        let x = rand_vec(t * k, 2);
        let mats = [
            Linear { rows, cols: k, w: Weights::Q4_1(q4_1_from(&wf)) },
            Linear { rows, cols: k, w: Weights::Q8_0(quantize_q8_0(&wf)) },
            Linear { rows, cols: k, w: Weights::F32(wf.clone()) },
        ];
        let pool = Pool::new(2);
        for lin in &mats {
            let mut deq = vec![0f32; rows * k];
            for r in 0..rows {
                lin.row_f32(r, &mut deq[r * k..(r + 1) * k]);
            }
            let mut results = Vec::new();
            for isa in isa::available() {
                isa::force(Some(isa));
                let mut out = vec![0f32; t * rows];
                matmul(&pool, lin, &x, t, &mut Acts::default(), &mut out);
                results.push((isa, out));
            }
            isa::force(None);
            for (isa, out) in &results {
                for ti in 0..t {
                    for r in 0..rows {
                        let want: f32 = (0..k).map(|i| deq[r * k + i] * x[ti * k + i]).sum();
                        let got = out[ti * rows + r];
                        // 8-bit activations: error well under 2% of the row's magnitude.
                        let mag: f32 = (0..k).map(|i| (deq[r * k + i] * x[ti * k + i]).abs()).sum();
                        assert!((got - want).abs() <= 0.02 * mag + 1e-5, "{} {isa:?} t{ti} r{r}: {got} vs {want}", lin.format());
                    }
                }
            }
            // The SIMD paths give the same number for a token whatever its place in a tile.
            for (isa, out) in &results {
                let mut alone = vec![0f32; rows];
                isa::force(Some(*isa));
                matmul(&pool, lin, &x[3 * k..4 * k], 1, &mut Acts::default(), &mut alone);
                isa::force(None);
                assert_eq!(&out[3 * rows..4 * rows], &alone[..], "{} {isa:?}: token 3 batched vs alone", lin.format());
            }
        }
    }
}
