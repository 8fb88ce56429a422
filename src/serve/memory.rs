//! `--gpu-memory-fraction F`: the share of the device's memory this server may use. Weights and
//! the KV cache must fit in `total × F`; after the weights and a reserve for the CUDA context,
//! cuBLAS's workspace and the activations, what is left is the KV cache, in tokens.
//!
//! On CUDA the total is the device's (from the driver); on the CPU it is the system memory, so the
//! same arithmetic bounds a CPU server. On CUDA the candle KV pool is allocated whole at start,
//! so the process takes its share at once; on the CPU it grows up to the bound.

use crate::serve::model::{LoadedModel, KV_BLOCK};
use crate::serve::{ServeArgs, ServeError};

const MIB: u64 = 1 << 20;

/// The reserve kept out of the budget: a tenth of it, at least this much.
pub const MIN_RESERVE: u64 = 512 * MIB;

/// How a memory share divides.
#[derive(Debug, Clone, PartialEq)]
pub struct KvSizing {
    /// `total × fraction`.
    pub budget: u64,
    pub weights: u64,
    /// For the CUDA context, cuBLAS's workspace and the activations.
    pub reserve: u64,
    /// What the KV cache may take.
    pub kv_bytes: u64,
    /// Tokens the KV cache holds.
    pub kv_tokens: usize,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SizingError {
    #[error(
        "--gpu-memory-fraction {fraction}: the weights ({weights_gib:.2} GiB) and the reserve for activations ({reserve_gib:.2} GiB) \
         do not fit in {fraction} × {total_gib:.2} GiB = {budget_gib:.2} GiB; raise --gpu-memory-fraction, or pick a smaller model or --dtype"
    )]
    WeightsDoNotFit { fraction: f64, total_gib: f64, budget_gib: f64, weights_gib: f64, reserve_gib: f64 },
    #[error(
        "--gpu-memory-fraction {fraction}: after the weights ({weights_gib:.2} GiB) {left_mib:.0} MiB is left, fewer than {min_tokens} \
         tokens of KV cache at {per_token} bytes each; raise --gpu-memory-fraction"
    )]
    NoRoomForKv { fraction: f64, weights_gib: f64, left_mib: f64, min_tokens: usize, per_token: u64 },
}

fn gib(b: u64) -> f64 {
    b as f64 / (1u64 << 30) as f64
}

/// Splits `total_bytes × fraction` into weights, reserve and a KV cache of at least `min_tokens`
/// tokens of `kv_bytes_per_token` each.
pub fn kv_capacity(
    total_bytes: u64,
    fraction: f64,
    weight_bytes: u64,
    kv_bytes_per_token: u64,
    min_tokens: usize,
) -> Result<KvSizing, SizingError> {
    let budget = (total_bytes as f64 * fraction.clamp(0.0, 1.0)) as u64;
    let reserve = (budget / 10).max(MIN_RESERVE);
    let Some(kv_bytes) = budget.checked_sub(weight_bytes).and_then(|b| b.checked_sub(reserve)) else {
        return Err(SizingError::WeightsDoNotFit {
            fraction,
            total_gib: gib(total_bytes),
            budget_gib: gib(budget),
            weights_gib: gib(weight_bytes),
            reserve_gib: gib(reserve),
        });
    };
    let kv_tokens = (kv_bytes / kv_bytes_per_token.max(1)) as usize;
    if kv_tokens < min_tokens {
        return Err(SizingError::NoRoomForKv {
            fraction,
            weights_gib: gib(weight_bytes),
            left_mib: kv_bytes as f64 / MIB as f64,
            min_tokens,
            per_token: kv_bytes_per_token,
        });
    }
    Ok(KvSizing { budget, weights: weight_bytes, reserve, kv_bytes, kv_tokens })
}

/// Total memory of the device: a CUDA device's own, or the system's on the CPU.
pub fn device_total_bytes(device: &candle_core::Device) -> Result<u64, ServeError> {
    match device {
        #[cfg(feature = "cuda")]
        // Through the device's own context: it is bound to this thread first, and cuda:N asks device N.
        candle_core::Device::Cuda(d) => d
            .cuda_stream()
            .context()
            .mem_get_info()
            .map(|(_free, total)| total as u64)
            .map_err(|e| ServeError::Model(format!("cannot read the CUDA device's memory size: {e}"))),
        candle_core::Device::Cpu => {
            let mut sys = sysinfo::System::new();
            sys.refresh_memory();
            match sys.total_memory() {
                0 => Err(ServeError::Model("cannot read the system's memory size for --gpu-memory-fraction".into())),
                n => Ok(n),
            }
        }
        #[allow(unreachable_patterns)]
        _ => Err(ServeError::Usage("--gpu-memory-fraction applies to CUDA and the CPU".into())),
    }
}

/// The KV-cache bound in tokens: --max-kv-tokens, capped by what --gpu-memory-fraction leaves
/// after the weights; and a note on how it was chosen, for the log.
pub fn kv_limit(model: &LoadedModel, device: &candle_core::Device, args: &ServeArgs) -> Result<(usize, String), ServeError> {
    let explicit = args.max_kv_tokens.map(|n| n as usize);
    let Some(f) = args.gpu_memory_fraction else {
        return Ok((explicit.unwrap_or(crate::serve::DEFAULT_KV_TOKENS), String::new()));
    };
    let total = device_total_bytes(device)?;
    let weights = model.model.weight_bytes() as u64;
    let per_token = model.model.kv_bytes_per_token() as u64;
    let min = 16 + args.max_batch_size as usize * KV_BLOCK;
    let s = kv_capacity(total, f, weights, per_token, min).map_err(|e| ServeError::Usage(e.to_string()))?;
    let tokens = (s.kv_tokens - args.max_batch_size as usize * KV_BLOCK).min(explicit.unwrap_or(usize::MAX));
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    let note = format!(
        "; --gpu-memory-fraction {f} of {:.2} GiB = {:.2} GiB: weights {:.2} GiB, reserve {:.2} GiB",
        gib(total),
        gib(s.budget),
        gib(weights),
        gib(s.reserve)
    );
    Ok((tokens, note))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn what_the_weights_and_reserve_leave_is_kv_cache() {
        // An 80 GiB device at a third: 26.4 GiB; 2.3 GiB of bf16 weights; 32 KiB per token.
        let s = kv_capacity(80 * GIB, 0.33, 2_471_628_800, 32_768, 16).unwrap();
        assert_eq!(s.budget, (80.0 * GIB as f64 * 0.33) as u64);
        assert_eq!(s.reserve, s.budget / 10);
        assert_eq!(s.kv_bytes, s.budget - s.weights - s.reserve);
        assert_eq!(s.kv_tokens, (s.kv_bytes / 32_768) as usize);
        assert!(s.weights + s.reserve + s.kv_tokens as u64 * 32_768 <= s.budget);
    }

    #[test]
    fn a_small_budget_keeps_the_minimum_reserve() {
        let s = kv_capacity(8 * GIB, 0.25, GIB, 1024, 16).unwrap();
        assert_eq!(s.reserve, MIN_RESERVE);
        assert_eq!(s.kv_tokens, ((2 * GIB - GIB - MIN_RESERVE) / 1024) as usize);
    }

    #[test]
    fn weights_that_do_not_fit_are_refused_with_the_sizes() {
        let err = kv_capacity(16 * GIB, 0.1, 4 * GIB, 1024, 16).unwrap_err();
        assert!(matches!(err, SizingError::WeightsDoNotFit { .. }));
        let text = err.to_string();
        assert!(text.contains("weights (4.00 GiB)") && text.contains("0.1 × 16.00 GiB = 1.60 GiB"), "{text}");
        assert!(text.contains("raise --gpu-memory-fraction"), "{text}");
    }

    #[test]
    fn too_little_left_for_the_kv_cache_is_refused() {
        let budget_left = 1000 * 1024;
        let err = kv_capacity(10 * GIB, 1.0, 9 * GIB - budget_left, 1 << 20, 16).unwrap_err();
        assert!(matches!(err, SizingError::NoRoomForKv { .. }), "{err}");
        assert!(err.to_string().contains("fewer than 16 tokens"), "{err}");
    }
}
