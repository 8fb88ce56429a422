//! x86-64 kernels: one weight row against N tokens. Each block's weights are unpacked once and
//! used for all N tokens; the per-token arithmetic is the same whatever N is, so a token gets
//! the same result batched or alone.
//!
//! Callers must have checked the CPU features (see `isa`).

use std::arch::x86_64::*;

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
