//! x86-64 kernels: one weight row against N tokens. Each block's weights are unpacked once and
//! used for all N tokens; the per-token arithmetic is the same whatever N is, so a token gets
//! the same result batched or alone.
//!
//! Callers must have checked the CPU features (see `isa`).

use std::arch::x86_64::*;

use super::packed::{PackedQ4_1, PackedQ8_0, GROUP};
use super::quant::{Acts, BlockQ4_1, BlockQ8_0, Dst, QK};

#[inline]
#[target_feature(enable = "avx2,fma")]
fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Unsigned 8-bit x signed 8-bit, summed in groups of four into 8 lanes of i32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_u8i8_avx2(u: __m256i, s: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
fn dot_u8i8_vnni(u: __m256i, s: __m256i) -> __m256i {
    _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s)
}

/// The two f16 scales at `p` (d, then m for Q4_1) as f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scales(p: *const u16) -> (f32, f32) {
    // SAFETY: the caller points at a block's first four bytes.
    let v = _mm_cvtph_ps(_mm_cvtsi32_si128(unsafe { (p as *const i32).read_unaligned() }));
    (_mm_cvtss_f32(v), _mm_cvtss_f32(_mm_movehdup_ps(v)))
}

macro_rules! q4_1_kernel {
    ($name:ident, $features:literal, $dot:ident) => {
        /// Rows `r0..r1` of `w` (k columns) against tokens `t0..t0 + N` of `a` (N <= 8; `t0` a
        /// multiple of 8). Per block: the weights are unpacked once, each token's scale is
        /// broadcast straight from memory, and the `m * s` terms of all tokens take one fused multiply-add.
        ///
        /// # Safety
        /// The CPU must have the named features; `a` holds tokens `t0..t0 + N`; `dst` has room.
        #[allow(clippy::too_many_arguments)]
        #[target_feature(enable = $features)]
        pub unsafe fn $name<const N: usize>(w: &[BlockQ4_1], k: usize, r0: usize, r1: usize, a: &Acts, t0: usize, dst: Dst) {
            let nb = k / QK;
            let tp = a.tp;
            let mask = _mm256_set1_epi8(0x0F);
            let qs = a.qs.as_ptr();
            let ds = a.d.as_ptr();
            let ss = a.s.as_ptr();
            for r in r0..r1 {
                let row = &w[r * nb..(r + 1) * nb];
                let mut acc = [_mm256_setzero_ps(); N];
                let mut msum = _mm256_setzero_ps();
                for (b, blk) in row.iter().enumerate() {
                    // SAFETY: the block's 4 bytes of scales and 16 of nibbles; 8 padded scales
                    // of block b from token t0 (t0 + 8 <= tp).
                    let ((dw, mw), raw, sa) = unsafe {
                        (
                            scales(&blk.d),
                            _mm_loadu_si128(blk.qs.as_ptr() as *const __m128i),
                            _mm256_loadu_ps(ss.add(b * tp + t0)),
                        )
                    };
                    let wq = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), mask);
                    msum = _mm256_fmadd_ps(_mm256_set1_ps(mw), sa, msum);
                    let dwv = _mm256_set1_ps(dw);
                    for j in 0..N {
                        // SAFETY: the caller guarantees tokens t0..t0+N of nb blocks exist.
                        let (aq, da) = unsafe {
                            (_mm256_loadu_si256(qs.add(((t0 + j) * nb + b) * QK) as *const __m256i), _mm256_broadcast_ss(&*ds.add(b * tp + t0 + j)))
                        };
                        let p = $dot(wq, aq);
                        acc[j] = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(p), da), dwv, acc[j]);
                    }
                }
                let mut m = [0f32; 8];
                // SAFETY: a local array of 8.
                unsafe { _mm256_storeu_ps(m.as_mut_ptr(), msum) };
                for j in 0..N {
                    // SAFETY: the caller guarantees room for tokens t0..t0+N of dst.stride rows.
                    unsafe { *dst.out.add((t0 + j) * dst.stride + r) = hsum(acc[j]) + m[j] };
                }
            }
        }
    };
}

macro_rules! q8_0_kernel {
    ($name:ident, $features:literal, $dot:ident) => {
        /// Rows `r0..r1` of `w` (k columns) against tokens `t0..t0 + N` of `a` (N <= 8; `t0` a
        /// multiple of 8).
        ///
        /// # Safety
        /// The CPU must have the named features; `a` holds tokens `t0..t0 + N`; `dst` has room.
        #[allow(clippy::too_many_arguments)]
        #[target_feature(enable = $features)]
        pub unsafe fn $name<const N: usize>(w: &[BlockQ8_0], k: usize, r0: usize, r1: usize, a: &Acts, t0: usize, dst: Dst) {
            let nb = k / QK;
            let tp = a.tp;
            let qs = a.qs.as_ptr();
            let ds = a.d.as_ptr();
            for r in r0..r1 {
                let row = &w[r * nb..(r + 1) * nb];
                let mut acc = [_mm256_setzero_ps(); N];
                for (b, blk) in row.iter().enumerate() {
                    // SAFETY: the block's scale and 32 bytes; 8 padded scales of block b.
                    let ((dw, _), wq) = unsafe { (scales(&blk.d), _mm256_loadu_si256(blk.qs.as_ptr() as *const __m256i)) };
                    let wabs = _mm256_sign_epi8(wq, wq);
                    let dwv = _mm256_set1_ps(dw);
                    for j in 0..N {
                        // SAFETY: the caller guarantees tokens t0..t0+N of nb blocks exist.
                        let (aq, da) = unsafe {
                            (_mm256_loadu_si256(qs.add(((t0 + j) * nb + b) * QK) as *const __m256i), _mm256_broadcast_ss(&*ds.add(b * tp + t0 + j)))
                        };
                        let p = $dot(wabs, _mm256_sign_epi8(aq, wq));
                        acc[j] = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(p), da), dwv, acc[j]);
                    }
                }
                for j in 0..N {
                    // SAFETY: the caller guarantees room for tokens t0..t0+N of dst.stride rows.
                    unsafe { *dst.out.add((t0 + j) * dst.stride + r) = hsum(acc[j]) };
                }
            }
        }
    };
}

q4_1_kernel!(q4_1_avx2, "avx2,fma,f16c", dot_u8i8_avx2);
q4_1_kernel!(q4_1_vnni, "avx2,fma,f16c,avx512vnni,avx512vl", dot_u8i8_vnni);
q8_0_kernel!(q8_0_avx2, "avx2,fma,f16c", dot_u8i8_avx2);
q8_0_kernel!(q8_0_vnni, "avx2,fma,f16c,avx512vnni,avx512vl", dot_u8i8_vnni);

/// `acc` plus, per 32-bit lane, the dot product of four unsigned bytes of `u` with four signed
/// bytes of `s` (no overflow for |u| <= 128 and |s| <= 127).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn dpb_avx2(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
    _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
fn dpb_vnni(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
    _mm256_dpbusd_epi32(acc, u, s)
}

/// Four bytes of activations at `p`, in every lane.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn bcast4(p: *const i8) -> __m256i {
    // SAFETY: the caller points at four readable bytes.
    _mm256_set1_epi32(unsafe { (p as *const i32).read_unaligned() })
}

macro_rules! packed_kernel {
    ($name:ident, $features:literal, $block:ty, $isum:ident, $has_min:literal) => {
        /// Packed groups of rows `r0..r1` (multiples of eight) against tokens `t0..t0 + N` of `a`
        /// (N <= 8; `t0` a multiple of 8). Per block: each chunk of weights is unpacked once for
        /// all N tokens; each token's integer sums land in the eight lanes of one register
        /// (one lane per row), and its scales take two fused multiply-adds per eight rows.
        ///
        /// # Safety
        /// The CPU must have the named features; `a` holds tokens `t0..t0 + N`; `dst` has room.
        #[allow(clippy::too_many_arguments)]
        #[target_feature(enable = $features)]
        pub unsafe fn $name<const N: usize>(w: &[$block], k: usize, r0: usize, r1: usize, a: &Acts, t0: usize, dst: Dst) {
            let nb = k / QK;
            let tp = a.tp;
            let ds = a.d.as_ptr();
            let ss = a.s.as_ptr();
            let qs = a.qs.as_ptr();
            for g in r0 / GROUP..r1 / GROUP {
                let mut acc = [_mm256_setzero_ps(); N];
                for (b, p) in w[g * nb..(g + 1) * nb].iter().enumerate() {
                    // SAFETY: the caller guarantees tokens t0..t0+N of nb blocks exist.
                    let at: [*const i8; N] = std::array::from_fn(|j| unsafe { qs.add(((t0 + j) * nb + b) * QK) });
                    // SAFETY: `at` points at whole blocks of 32 activations.
                    let (isum, dw, mw) = unsafe { $isum::<N>(p, &at) };
                    for j in 0..N {
                        // SAFETY: 8 padded scales of block b from token t0 (t0 + 8 <= tp).
                        let (da, sa) = unsafe { (_mm256_broadcast_ss(&*ds.add(b * tp + t0 + j)), _mm256_broadcast_ss(&*ss.add(b * tp + t0 + j))) };
                        acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[j]), _mm256_mul_ps(dw, da), acc[j]);
                        if $has_min {
                            acc[j] = _mm256_fmadd_ps(mw, sa, acc[j]);
                        }
                    }
                }
                for (j, v) in acc.iter().enumerate() {
                    // SAFETY: the caller guarantees room for tokens t0..t0+N of dst.stride rows,
                    // and rows g*8..g*8+8 exist.
                    unsafe { _mm256_storeu_ps(dst.out.add((t0 + j) * dst.stride + g * GROUP), *v) };
                }
            }
        }
    };
}

macro_rules! q4_sums {
    ($q4:ident, $features:literal, $dpb:ident) => {
        /// One Q4_1 block of eight rows against N tokens: integer sums, row scales, row minima.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn $q4<const N: usize>(p: &PackedQ4_1, at: &[*const i8; N]) -> ([__m256i; N], __m256, __m256) {
            let mask = _mm256_set1_epi8(0x0F);
            let mut isum = [_mm256_setzero_si256(); N];
            for c in 0..4 {
                // SAFETY: chunk c of the block's 128 bytes.
                let chunk = unsafe { _mm256_loadu_si256(p.qs.as_ptr().add(32 * c) as *const __m256i) };
                let lo = _mm256_and_si256(chunk, mask);
                let hi = _mm256_and_si256(_mm256_srli_epi16(chunk, 4), mask);
                for j in 0..N {
                    // SAFETY: the caller's pointers cover 32 bytes each.
                    let (alo, ahi) = unsafe { (bcast4(at[j].add(4 * c)), bcast4(at[j].add(16 + 4 * c))) };
                    isum[j] = $dpb($dpb(isum[j], lo, alo), hi, ahi);
                }
            }
            // SAFETY: eight f16 scales and eight f16 minima.
            let (dw, mw) = unsafe {
                (_mm256_cvtph_ps(_mm_loadu_si128(p.d.as_ptr() as *const __m128i)), _mm256_cvtph_ps(_mm_loadu_si128(p.m.as_ptr() as *const __m128i)))
            };
            (isum, dw, mw)
        }
    };
}

macro_rules! q8_sums {
    ($q8:ident, $features:literal, $dpb:ident) => {
        /// One Q8_0 block of eight rows against N tokens (signs moved onto the activations).
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn $q8<const N: usize>(p: &PackedQ8_0, at: &[*const i8; N]) -> ([__m256i; N], __m256, __m256) {
            let mut isum = [_mm256_setzero_si256(); N];
            for c in 0..8 {
                // SAFETY: chunk c of the block's 256 bytes.
                let wv = unsafe { _mm256_loadu_si256(p.qs.as_ptr().add(32 * c) as *const __m256i) };
                let wabs = _mm256_sign_epi8(wv, wv);
                for j in 0..N {
                    // SAFETY: the caller's pointers cover 32 bytes each.
                    let av = unsafe { bcast4(at[j].add(4 * c)) };
                    isum[j] = $dpb(isum[j], wabs, _mm256_sign_epi8(av, wv));
                }
            }
            // SAFETY: eight f16 scales.
            let dw = unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.d.as_ptr() as *const __m128i)) };
            (isum, dw, _mm256_setzero_ps())
        }
    };
}

q4_sums!(sums_q4_vnni, "avx2,fma,f16c,avx512vnni,avx512vl", dpb_vnni);
q8_sums!(sums_q8_avx2, "avx2,fma,f16c", dpb_avx2);
q8_sums!(sums_q8_vnni, "avx2,fma,f16c,avx512vnni,avx512vl", dpb_vnni);

/// [`sums_q4_vnni`] for AVX2 alone: 4-bit weights times 8-bit activations leave room in 16
/// bits (8 x 2 x 15 x 127 < 2^15), so a block's products are summed as 16-bit pairs and widened
/// once, a third fewer instructions than widening each product.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn sums_q4_avx2<const N: usize>(p: &PackedQ4_1, at: &[*const i8; N]) -> ([__m256i; N], __m256, __m256) {
    let mask = _mm256_set1_epi8(0x0F);
    let mut s16 = [_mm256_setzero_si256(); N];
    for c in 0..4 {
        // SAFETY: chunk c of the block's 128 bytes.
        let chunk = unsafe { _mm256_loadu_si256(p.qs.as_ptr().add(32 * c) as *const __m256i) };
        let lo = _mm256_and_si256(chunk, mask);
        let hi = _mm256_and_si256(_mm256_srli_epi16(chunk, 4), mask);
        for j in 0..N {
            // SAFETY: the caller's pointers cover 32 bytes each.
            let (alo, ahi) = unsafe { (bcast4(at[j].add(4 * c)), bcast4(at[j].add(16 + 4 * c))) };
            let pair = _mm256_add_epi16(_mm256_maddubs_epi16(lo, alo), _mm256_maddubs_epi16(hi, ahi));
            s16[j] = _mm256_add_epi16(s16[j], pair);
        }
    }
    let ones = _mm256_set1_epi16(1);
    let isum = s16.map(|v| _mm256_madd_epi16(v, ones));
    // SAFETY: eight f16 scales and eight f16 minima.
    let (dw, mw) = unsafe {
        (_mm256_cvtph_ps(_mm_loadu_si128(p.d.as_ptr() as *const __m128i)), _mm256_cvtph_ps(_mm_loadu_si128(p.m.as_ptr() as *const __m128i)))
    };
    (isum, dw, mw)
}
packed_kernel!(p4_1_avx2, "avx2,fma,f16c", PackedQ4_1, sums_q4_avx2, true);
packed_kernel!(p4_1_vnni, "avx2,fma,f16c,avx512vnni,avx512vl", PackedQ4_1, sums_q4_vnni, true);
packed_kernel!(p8_0_avx2, "avx2,fma,f16c", PackedQ8_0, sums_q8_avx2, false);
packed_kernel!(p8_0_vnni, "avx2,fma,f16c,avx512vnni,avx512vl", PackedQ8_0, sums_q8_vnni, false);

/// Rows `r0..r1` of f32 weights (k columns) against f32 tokens `t0..t0 + N` of `x`.
///
/// # Safety
/// AVX2 and FMA must be present; `x` holds tokens `t0..t0 + N`; `dst` has room.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
pub unsafe fn f32_avx2<const N: usize>(w: &[f32], k: usize, r0: usize, r1: usize, x: &[f32], t0: usize, dst: Dst) {
    let body = k / 8 * 8;
    for r in r0..r1 {
        let row = &w[r * k..(r + 1) * k];
        let mut acc = [_mm256_setzero_ps(); N];
        let mut i = 0;
        while i < body {
            // SAFETY: i + 8 <= k for the row and every token.
            let wv = unsafe { _mm256_loadu_ps(row.as_ptr().add(i)) };
            for j in 0..N {
                let xv = unsafe { _mm256_loadu_ps(x.as_ptr().add((t0 + j) * k + i)) };
                acc[j] = _mm256_fmadd_ps(wv, xv, acc[j]);
            }
            i += 8;
        }
        for j in 0..N {
            let xr = &x[(t0 + j) * k..(t0 + j + 1) * k];
            let v = hsum(acc[j]) + row[body..].iter().zip(&xr[body..]).map(|(a, b)| a * b).sum::<f32>();
            // SAFETY: the caller guarantees room for tokens t0..t0+N of dst.stride rows.
            unsafe { *dst.out.add((t0 + j) * dst.stride + r) = v };
        }
    }
}

/// Dot product of two f32 slices of the same length.
///
/// # Safety
/// AVX2 and FMA must be present.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let body = n / 8 * 8;
    let mut acc = _mm256_setzero_ps();
    let mut i = 0;
    while i < body {
        // SAFETY: i + 8 <= n.
        acc = unsafe { _mm256_fmadd_ps(_mm256_loadu_ps(a.as_ptr().add(i)), _mm256_loadu_ps(b.as_ptr().add(i)), acc) };
        i += 8;
    }
    hsum(acc) + a[body..n].iter().zip(&b[body..n]).map(|(x, y)| x * y).sum::<f32>()
}

/// `y += alpha * x`.
///
/// # Safety
/// AVX2 and FMA must be present.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn axpy_f32(y: &mut [f32], alpha: f32, x: &[f32]) {
    let n = y.len().min(x.len());
    let body = n / 8 * 8;
    let av = _mm256_set1_ps(alpha);
    let mut i = 0;
    while i < body {
        // SAFETY: i + 8 <= n.
        unsafe {
            let yv = _mm256_loadu_ps(y.as_ptr().add(i));
            _mm256_storeu_ps(y.as_mut_ptr().add(i), _mm256_fmadd_ps(av, _mm256_loadu_ps(x.as_ptr().add(i)), yv));
        }
        i += 8;
    }
    for (a, b) in y[body..n].iter_mut().zip(&x[body..n]) {
        *a += alpha * b;
    }
}

/// Quantizes 32 values to 8 bits (round half to even): returns (scale, scale * sum of q).
///
/// # Safety
/// AVX2 and FMA must be present; `x` and `q` hold 32 values.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn quantize_block_avx2(x: &[f32], q: &mut [i8]) -> (f32, f32) {
    assert!(x.len() >= QK && q.len() >= QK);
    // SAFETY: 32 values on both sides (checked above).
    unsafe {
        let v = [
            _mm256_loadu_ps(x.as_ptr()),
            _mm256_loadu_ps(x.as_ptr().add(8)),
            _mm256_loadu_ps(x.as_ptr().add(16)),
            _mm256_loadu_ps(x.as_ptr().add(24)),
        ];
        let sign = _mm256_set1_ps(-0.0);
        let mut m = _mm256_andnot_ps(sign, v[0]);
        for vi in &v[1..] {
            m = _mm256_max_ps(m, _mm256_andnot_ps(sign, *vi));
        }
        let m4 = _mm_max_ps(_mm256_extractf128_ps(m, 1), _mm256_castps256_ps128(m));
        let m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        let m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        let amax = _mm_cvtss_f32(m4);
        let d = amax / 127.0;
        let id = _mm256_set1_ps(if d > 0.0 { 1.0 / d } else { 0.0 });
        let r: [__m256i; 4] =
            std::array::from_fn(|i| _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v[i], id), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)));
        let sum = _mm256_add_epi32(_mm256_add_epi32(r[0], r[1]), _mm256_add_epi32(r[2], r[3]));
        let s4 = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
        let s4 = _mm_hadd_epi32(s4, s4);
        let s4 = _mm_hadd_epi32(s4, s4);
        let total = _mm_cvtsi128_si32(s4);
        let p16a = _mm256_packs_epi32(r[0], r[1]);
        let p16b = _mm256_packs_epi32(r[2], r[3]);
        let p8 = _mm256_packs_epi16(p16a, p16b);
        let p8 = _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256(q.as_mut_ptr() as *mut __m256i, p8);
        (d, d * total as f32)
    }
}
