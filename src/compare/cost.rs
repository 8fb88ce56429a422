//! The cost model: GPUs needed for a target rate, their yearly cost, and the cost of a
//! million output tokens. Plain arithmetic, stated in `compare --help`.

pub const HOURS_PER_YEAR: f64 = 8760.0;

/// Whole GPUs needed to serve `target_rpm` when `gpus` GPUs served `measured_rpm`
/// (capacity scales with GPUs: each extra GPU runs another copy of the deployment).
pub fn gpus_needed(target_rpm: f64, measured_rpm: f64, gpus: f64) -> Option<u32> {
    if [target_rpm, measured_rpm, gpus].iter().any(|x| x.is_nan() || *x <= 0.0) {
        return None;
    }
    let exact = target_rpm * gpus / measured_rpm;
    // A hair of tolerance so that 180 / 60 is 3 GPUs, not 4.
    let whole = (exact - 1e-9).ceil().max(1.0);
    (whole <= u32::MAX as f64).then_some(whole as u32)
}

/// Yearly cost of `gpus` GPUs.
pub fn yearly_cost(gpus: f64, gpu_hour_cost: f64, license_per_gpu_year: f64) -> f64 {
    gpus * (gpu_hour_cost * HOURS_PER_YEAR + license_per_gpu_year)
}

/// Cost of a million output tokens when `gpus` GPUs produce `tokens_per_s` around the clock.
pub fn cost_per_million_tokens(tokens_per_s: f64, gpus: f64, gpu_hour_cost: f64, license_per_gpu_year: f64) -> Option<f64> {
    if tokens_per_s.is_nan() || tokens_per_s <= 0.0 {
        return None;
    }
    let per_hour = gpus * (gpu_hour_cost + license_per_gpu_year / HOURS_PER_YEAR);
    Some(per_hour / (tokens_per_s * 3600.0 / 1e6))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpus_needed_rounds_up_to_whole_gpus() {
        assert_eq!(gpus_needed(180.0, 60.0, 1.0), Some(3));
        assert_eq!(gpus_needed(180.0, 180.0, 1.0), Some(1));
        assert_eq!(gpus_needed(180.0, 179.0, 1.0), Some(2));
        assert_eq!(gpus_needed(180.0, 200.0, 2.0), Some(2));
        assert_eq!(gpus_needed(10.0, 1000.0, 1.0), Some(1));
        assert_eq!(gpus_needed(180.0, 0.0, 1.0), None);
    }

    #[test]
    fn yearly_cost_is_gpu_hours_plus_licence() {
        assert_eq!(yearly_cost(3.0, 2.0, 0.0), 52_560.0);
        assert_eq!(yearly_cost(1.0, 2.0, 2000.0), 19_520.0);
    }

    #[test]
    fn cost_per_million_tokens_books_the_gpus_around_the_clock() {
        // 1 GPU at 3.6 per hour making 1000 tokens/s = 3.6M tokens an hour: 1.0 per million.
        let c = cost_per_million_tokens(1000.0, 1.0, 3.6, 0.0).unwrap();
        assert!((c - 1.0).abs() < 1e-12, "{c}");
        assert_eq!(cost_per_million_tokens(0.0, 1.0, 2.0, 0.0), None);
    }
}
