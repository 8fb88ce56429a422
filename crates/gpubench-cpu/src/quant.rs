//! Weight formats of the CPU forward, activation quantization, and the matrix multiply that
//! runs a linear layer over all tokens of a step (each weight row is read once per step and
//! applied to up to [`TILE`] tokens at a time).
//!
//! Q4_1 and Q8_0 keep the GGUF blocks' bytes (f16 scales), repacked in groups of eight rows
//! where the row count allows (see [`packed`](super::packed)); activations are quantized to
//! 8 bits per block of 32 with a scale and a block sum, as llama.cpp does, and the dot
//! products run on integers.

use std::sync::atomic::{AtomicUsize, Ordering};

use half::f16;

use super::isa::{self, Isa};
use super::packed::{self, PackedQ4_1, PackedQ8_0, GROUP};
use super::pool::{Pool, SharedOut};
#[cfg(target_arch = "x86_64")]
use super::x86::{f32_avx2, p4_1_avx2, p4_1_vnni, p8_0_avx2, p8_0_vnni, q4_1_avx2, q4_1_vnni, q8_0_avx2, q8_0_vnni};

/// Elements per quantization block.
pub const QK: usize = 32;
/// Tokens one weight row is applied to at once.
pub const TILE: usize = 8;

/// 32 weights as `d * q + m`, q in 0..16; byte j holds element j (low nibble) and j + 16.
/// The scales are f16 bits, as in GGUF files (20 bytes a block).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BlockQ4_1 {
    pub d: u16,
    pub m: u16,
    pub qs: [u8; 16],
}

impl BlockQ4_1 {
    pub fn new(d: f32, m: f32, qs: [u8; 16]) -> Self {
        Self { d: f16::from_f32(d).to_bits(), m: f16::from_f32(m).to_bits(), qs }
    }
    pub fn d(&self) -> f32 {
        f16::from_bits(self.d).to_f32()
    }
    pub fn m(&self) -> f32 {
        f16::from_bits(self.m).to_f32()
    }
}

/// 32 weights as `d * q`, q in -128..128; the scale is f16 bits (34 bytes a block).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BlockQ8_0 {
    pub d: u16,
    pub qs: [i8; 32],
}

impl BlockQ8_0 {
    pub fn new(d: f32, qs: [i8; 32]) -> Self {
        Self { d: f16::from_f32(d).to_bits(), qs }
    }
    pub fn d(&self) -> f32 {
        f16::from_bits(self.d).to_f32()
    }
}


/// A weight matrix, `rows` x `cols`: row-major, or (packed) in groups of eight rows.
#[derive(Debug)]
pub enum Weights {
    Q4_1(Vec<BlockQ4_1>),
    Q8_0(Vec<BlockQ8_0>),
    F32(Vec<f32>),
    PackedQ4_1(Vec<PackedQ4_1>),
    PackedQ8_0(Vec<PackedQ8_0>),
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
            Weights::PackedQ4_1(b) => b.len() * std::mem::size_of::<PackedQ4_1>(),
            Weights::PackedQ8_0(b) => b.len() * std::mem::size_of::<PackedQ8_0>(),
        }
    }

    pub fn format(&self) -> &'static str {
        match &self.w {
            Weights::Q4_1(_) | Weights::PackedQ4_1(_) => "Q4_1",
            Weights::Q8_0(_) | Weights::PackedQ8_0(_) => "Q8_0",
            Weights::F32(_) => "F32",
        }
    }

    /// The same matrix with Q4_1 / Q8_0 blocks repacked in groups of eight rows (see
    /// [`packed`]) where the row count allows; other matrices come back unchanged.
    pub fn packed(self) -> Linear {
        let Linear { rows, cols, w } = self;
        if !rows.is_multiple_of(GROUP) {
            return Linear { rows, cols, w };
        }
        let nb = cols / QK;
        let w = match w {
            Weights::Q4_1(b) => Weights::PackedQ4_1(packed::pack_q4_1(&b, rows, nb)),
            Weights::Q8_0(b) => Weights::PackedQ8_0(packed::pack_q8_0(&b, rows, nb)),
            other => other,
        };
        Linear { rows, cols, w }
    }

    /// Row `r` as f32 (the embedding lookup).
    pub fn row_f32(&self, r: usize, out: &mut [f32]) {
        let k = self.cols;
        let nb = k / QK;
        let (g, gr) = (r / GROUP, r % GROUP);
        match &self.w {
            Weights::F32(v) => out.copy_from_slice(&v[r * k..(r + 1) * k]),
            Weights::Q8_0(b) => {
                for (blk, o) in b[r * nb..(r + 1) * nb].iter().zip(out.chunks_exact_mut(QK)) {
                    dequantize_q8_0(blk, o);
                }
            }
            Weights::Q4_1(b) => {
                for (blk, o) in b[r * nb..(r + 1) * nb].iter().zip(out.chunks_exact_mut(QK)) {
                    dequantize_q4_1(blk, o);
                }
            }
            Weights::PackedQ8_0(p) => {
                for (blk, o) in p[g * nb..(g + 1) * nb].iter().zip(out.chunks_exact_mut(QK)) {
                    dequantize_q8_0(&blk.row(gr), o);
                }
            }
            Weights::PackedQ4_1(p) => {
                for (blk, o) in p[g * nb..(g + 1) * nb].iter().zip(out.chunks_exact_mut(QK)) {
                    dequantize_q4_1(&blk.row(gr), o);
                }
            }
        }
    }

    /// Stacks matrices with the same number of columns and format into one (fused projections).
    pub fn stack(parts: Vec<Linear>) -> Option<Linear> {
        let cols = parts.first()?.cols;
        let rows = parts.iter().map(|p| p.rows).sum();
        if parts.iter().any(|p| p.cols != cols) {
            return None;
        }
        let mut it = parts.into_iter();
        let first = it.next()?;
        macro_rules! concat_as {
            ($variant:ident, $v:ident) => {{
                let mut v = $v;
                for p in it {
                    let Weights::$variant(x) = p.w else { return None };
                    v.extend(x);
                }
                Weights::$variant(v)
            }};
        }
        let w = match first.w {
            Weights::Q4_1(v) => concat_as!(Q4_1, v),
            Weights::Q8_0(v) => concat_as!(Q8_0, v),
            Weights::F32(v) => concat_as!(F32, v),
            Weights::PackedQ4_1(_) | Weights::PackedQ8_0(_) => return None,
        };
        Some(Linear { rows, cols, w })
    }
}

fn dequantize_q8_0(blk: &BlockQ8_0, o: &mut [f32]) {
    let d = blk.d();
    for (x, &q) in o.iter_mut().zip(&blk.qs) {
        *x = d * q as f32;
    }
}

fn dequantize_q4_1(blk: &BlockQ4_1, o: &mut [f32]) {
    let (d, m) = (blk.d(), blk.m());
    for j in 0..16 {
        o[j] = d * (blk.qs[j] & 0x0F) as f32 + m;
        o[j + 16] = d * (blk.qs[j] >> 4) as f32 + m;
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
            BlockQ8_0::new(d, qs)
        })
        .collect()
}

/// Activations of a step quantized per block of 32: values (token-major), and per block the
/// scales and scale times the sum, block-major with a stride of `tp` (the token count padded to
/// a whole tile, zeros after the last token) so a kernel loads one block's scales for a whole
/// tile of tokens at once.
#[derive(Default)]
pub struct Acts {
    pub qs: Vec<i8>,
    pub d: Vec<f32>,
    pub s: Vec<f32>,
    /// Blocks per token.
    pub nb: usize,
    /// Stride of `d` and `s`: tokens rounded up to a multiple of [`TILE`].
    pub tp: usize,
}

impl Acts {
    /// Quantizes `t` rows of `k` values (`k` a multiple of 32).
    pub fn quantize(&mut self, x: &[f32], t: usize, k: usize) {
        let nb = k / QK;
        let tp = t.div_ceil(TILE) * TILE;
        self.nb = nb;
        self.tp = tp;
        self.qs.resize(t * k, 0);
        self.d.clear();
        self.d.resize(nb * tp, 0.0);
        self.s.clear();
        self.s.resize(nb * tp, 0.0);
        let isa = isa::get();
        for (i, c) in x[..t * k].chunks_exact(QK).enumerate() {
            let q = &mut self.qs[i * QK..(i + 1) * QK];
            let (d, s) = match isa {
                // SAFETY: the level was detected at run time; both slices hold 32 values.
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 | Isa::Vnni => unsafe { super::x86::quantize_block_avx2(c, q) },
                _ => quantize_block(c, q),
            };
            let (tok, b) = (i / nb, i % nb);
            self.d[b * tp + tok] = d;
            self.s[b * tp + tok] = s;
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

/// `out[t][r] = sum_k w[r][k] * x[t][k]` for `t` tokens; `out` is `t` x `lin.rows`.
/// `acts` is scratch for the quantized `x`.
pub fn matmul(pool: &Pool, lin: &Linear, x: &[f32], t: usize, acts: &mut Acts, out: &mut [f32]) {
    let (rows, k) = (lin.rows, lin.cols);
    assert!(x.len() >= t * k && out.len() >= t * rows, "matmul shapes");
    if !matches!(lin.w, Weights::F32(_)) {
        acts.quantize(x, t, k);
    }
    let isa = isa::get();
    let mut chunk = (rows / (pool.threads() * 16)).clamp(4, 64);
    if matches!(lin.w, Weights::PackedQ4_1(_) | Weights::PackedQ8_0(_)) {
        // Packed matrices are split between threads in whole groups of eight rows.
        chunk = chunk.next_multiple_of(GROUP);
    }
    let chunks = rows.div_ceil(chunk);
    let next = AtomicUsize::new(0);
    let outp = SharedOut::new(out);
    let acts = &*acts;
    pool.run(&|_| {
        loop {
            let c = next.fetch_add(1, Ordering::Relaxed);
            if c >= chunks {
                break;
            }
            let (r0, r1) = (c * chunk, ((c + 1) * chunk).min(rows));
            let mut t0 = 0;
            while t0 < t {
                let n = (t - t0).min(TILE);
                // SAFETY: rows r0..r1 of tokens t0..t0+n are inside `out` and written by this
                // thread only; the shapes were checked above.
                unsafe { rows_dot(isa, lin, r0, r1, x, acts, t0, n, outp.ptr()) };
                t0 += n;
            }
        }
    });
}

/// Where a kernel writes: `out[(t0 + j) * stride + r]`.
#[derive(Clone, Copy)]
pub struct Dst {
    pub out: *mut f32,
    pub stride: usize,
}

/// Weight rows `r0..r1` against tokens `t0..t0 + n` (n <= TILE).
///
/// # Safety
/// `out` must hold `(t0 + n) * lin.rows` values; `x`/`a` must hold tokens `t0..t0 + n`.
#[allow(clippy::too_many_arguments)]
unsafe fn rows_dot(isa: Isa, lin: &Linear, r0: usize, r1: usize, x: &[f32], a: &Acts, t0: usize, n: usize, out: *mut f32) {
    let k = lin.cols;
    let dst = Dst { out, stride: lin.rows };
    macro_rules! by_n {
        ($f:ident, $w:expr, $a:expr) => {{
            match n {
                1 => $f::<1>($w, k, r0, r1, $a, t0, dst),
                2 => $f::<2>($w, k, r0, r1, $a, t0, dst),
                3 => $f::<3>($w, k, r0, r1, $a, t0, dst),
                4 => $f::<4>($w, k, r0, r1, $a, t0, dst),
                5 => $f::<5>($w, k, r0, r1, $a, t0, dst),
                6 => $f::<6>($w, k, r0, r1, $a, t0, dst),
                7 => $f::<7>($w, k, r0, r1, $a, t0, dst),
                _ => $f::<8>($w, k, r0, r1, $a, t0, dst),
            }
        }};
    }
    // SAFETY (all arms): `isa` was detected at run time; the caller vouches for the shapes.
    unsafe {
        match &lin.w {
            Weights::Q4_1(w) => match isa {
                #[cfg(target_arch = "x86_64")]
                Isa::Vnni => by_n!(q4_1_vnni, w, a),
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => by_n!(q4_1_avx2, w, a),
                _ => by_n!(q4_1_scalar, w, a),
            },
            Weights::Q8_0(w) => match isa {
                #[cfg(target_arch = "x86_64")]
                Isa::Vnni => by_n!(q8_0_vnni, w, a),
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => by_n!(q8_0_avx2, w, a),
                _ => by_n!(q8_0_scalar, w, a),
            },
            Weights::F32(w) => match isa {
                #[cfg(target_arch = "x86_64")]
                Isa::Vnni | Isa::Avx2 => by_n!(f32_avx2, w, x),
                _ => by_n!(f32_scalar, w, x),
            },
            Weights::PackedQ4_1(w) => match isa {
                #[cfg(target_arch = "x86_64")]
                Isa::Vnni => by_n!(p4_1_vnni, w, a),
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => by_n!(p4_1_avx2, w, a),
                _ => by_n!(p4_1_scalar, w, a),
            },
            Weights::PackedQ8_0(w) => match isa {
                #[cfg(target_arch = "x86_64")]
                Isa::Vnni => by_n!(p8_0_vnni, w, a),
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => by_n!(p8_0_avx2, w, a),
                _ => by_n!(p8_0_scalar, w, a),
            },
        }
    }
}

/// The portable kernels: rows `r0..r1` against tokens `t0..t0 + N`, a block at a time, whatever
/// the layout; `block(r, b)` is row `r`'s block `b`, `dot` its contribution for one token's
/// activations (values, scale, scale times sum).
#[allow(clippy::too_many_arguments)]
unsafe fn scalar_rows<const N: usize, B>(
    k: usize,
    r0: usize,
    r1: usize,
    a: &Acts,
    t0: usize,
    dst: Dst,
    block: impl Fn(usize, usize) -> B,
    dot: impl Fn(&B, &[i8], f32, f32) -> f32,
) {
    let nb = k / QK;
    for r in r0..r1 {
        for t in t0..t0 + N {
            let mut acc = 0f32;
            for b in 0..nb {
                let q = &a.qs[(t * nb + b) * QK..(t * nb + b + 1) * QK];
                acc += dot(&block(r, b), q, a.d[b * a.tp + t], a.s[b * a.tp + t]);
            }
            // SAFETY: the caller vouches for the output's size.
            unsafe { *dst.out.add(t * dst.stride + r) = acc };
        }
    }
}

fn dot_q4_1(blk: &BlockQ4_1, q: &[i8], da: f32, sa: f32) -> f32 {
    let mut sum = 0i32;
    for i in 0..16 {
        sum += (blk.qs[i] & 0x0F) as i32 * q[i] as i32 + (blk.qs[i] >> 4) as i32 * q[i + 16] as i32;
    }
    sum as f32 * da * blk.d() + blk.m() * sa
}

fn dot_q8_0(blk: &BlockQ8_0, q: &[i8], da: f32, _sa: f32) -> f32 {
    let sum: i32 = blk.qs.iter().zip(q).map(|(&x, &y)| x as i32 * y as i32).sum();
    sum as f32 * da * blk.d()
}

/// # Safety
/// See [`rows_dot`].
#[allow(clippy::too_many_arguments)]
pub unsafe fn q4_1_scalar<const N: usize>(w: &[BlockQ4_1], k: usize, r0: usize, r1: usize, a: &Acts, t0: usize, dst: Dst) {
    let nb = k / QK;
    // SAFETY: forwarded from the caller.
    unsafe { scalar_rows::<N, _>(k, r0, r1, a, t0, dst, |r, b| w[r * nb + b], dot_q4_1) }
}

/// # Safety
/// See [`rows_dot`].
#[allow(clippy::too_many_arguments)]
pub unsafe fn q8_0_scalar<const N: usize>(w: &[BlockQ8_0], k: usize, r0: usize, r1: usize, a: &Acts, t0: usize, dst: Dst) {
    let nb = k / QK;
    // SAFETY: forwarded from the caller.
    unsafe { scalar_rows::<N, _>(k, r0, r1, a, t0, dst, |r, b| w[r * nb + b], dot_q8_0) }
}

/// Packed groups of rows (see [`packed`](super::packed)), each block read back as its row's
/// GGUF block.
///
/// # Safety
/// See [`rows_dot`].
#[allow(clippy::too_many_arguments)]
pub unsafe fn p4_1_scalar<const N: usize>(w: &[PackedQ4_1], k: usize, r0: usize, r1: usize, a: &Acts, t0: usize, dst: Dst) {
    let nb = k / QK;
    // SAFETY: forwarded from the caller.
    unsafe { scalar_rows::<N, _>(k, r0, r1, a, t0, dst, |r, b| w[r / GROUP * nb + b].row(r % GROUP), dot_q4_1) }
}

/// # Safety
/// See [`rows_dot`].
#[allow(clippy::too_many_arguments)]
pub unsafe fn p8_0_scalar<const N: usize>(w: &[PackedQ8_0], k: usize, r0: usize, r1: usize, a: &Acts, t0: usize, dst: Dst) {
    let nb = k / QK;
    // SAFETY: forwarded from the caller.
    unsafe { scalar_rows::<N, _>(k, r0, r1, a, t0, dst, |r, b| w[r / GROUP * nb + b].row(r % GROUP), dot_q8_0) }
}

/// # Safety
/// See [`rows_dot`].
#[allow(clippy::too_many_arguments)]
pub unsafe fn f32_scalar<const N: usize>(w: &[f32], k: usize, r0: usize, r1: usize, x: &[f32], t0: usize, dst: Dst) {
    for r in r0..r1 {
        let row = &w[r * k..(r + 1) * k];
        for j in 0..N {
            let t = t0 + j;
            let xr = &x[t * k..(t + 1) * k];
            let v: f32 = row.iter().zip(xr).map(|(a, b)| a * b).sum();
            // SAFETY: the caller vouches for the output's size.
            unsafe { *dst.out.add(t * dst.stride + r) = v };
        }
    }
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
                BlockQ4_1::new(d, mn, qs)
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
            assert_eq!((a.qs, a.d, a.tp), (b.qs, b.d, b.tp), "{isa:?}");
            for (sa, sb) in a.s.iter().zip(&b.s) {
                assert!((sa - sb).abs() <= 1e-6 * sb.abs().max(1.0));
            }
        }
    }

    /// Every format and token count agrees with a plain f32 product of the dequantized rows.
    #[test]
    fn matmul_matches_dequantized_reference_on_every_isa() {
        // 37 rows stay row-major; 40 are packed in groups of eight.
        for rows in [37, 40] {
            check_matmul(rows, 96, 7);
        }
        // Enough rows that both threads take several groups.
        check_matmul(8 * 40, 64, 11);
    }

    fn check_matmul(rows: usize, k: usize, t: usize) {
        let wf = rand_vec(rows * k, 1);
        let x = rand_vec(t * k, 2);
        let mats = [
            Linear { rows, cols: k, w: Weights::Q4_1(q4_1_from(&wf)) }.packed(),
            Linear { rows, cols: k, w: Weights::Q8_0(quantize_q8_0(&wf)) }.packed(),
            Linear { rows, cols: k, w: Weights::F32(wf.clone()) }.packed(),
        ];
        assert_eq!(matches!(mats[0].w, Weights::PackedQ4_1(_)), rows.is_multiple_of(8));
        assert_eq!(matches!(mats[1].w, Weights::PackedQ8_0(_)), rows.is_multiple_of(8));
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
