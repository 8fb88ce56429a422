//! The verdict: one paragraph written from the numbers of the comparison.

use crate::report::{Comparison, PhaseSummary};
use crate::util::human_ms;

use super::table::{format_count, group_thousands, util_name};

pub fn write(c: &Comparison) -> String {
    let ps = &c.phases;
    let Some(first) = ps.first() else {
        return String::new();
    };
    let mut s: Vec<String> = Vec::new();
    let per_gpu = |p: &PhaseSummary| p.requests_per_min / p.gpus;

    if ps.len() == 1 {
        s.push(format!(
            "Only one phase was measured: {} serves {} req/min per GPU at a p95 latency of {}.",
            first.label,
            rpm(per_gpu(first)),
            human_ms(first.latency_p95_ms)
        ));
    } else {
        // Throughput per GPU: what a GPU gives in each deployment.
        let mut order: Vec<&PhaseSummary> = ps.iter().collect();
        order.sort_by(|a, b| per_gpu(b).total_cmp(&per_gpu(a)));
        let (best, second) = (order[0], order[1]);
        let other = if best.label == first.label { second } else { first };
        let ratio = if per_gpu(other) > 0.0 { per_gpu(best) / per_gpu(other) } else { f64::INFINITY };
        if ratio < 1.05 {
            s.push(format!(
                "{} and {} get about as much out of a GPU: {} and {} req/min per GPU.",
                best.label,
                other.label,
                rpm(per_gpu(best)),
                rpm(per_gpu(other))
            ));
        } else {
            s.push(format!(
                "{} gets the most out of a GPU: {} req/min per GPU, {} {}'s {}.",
                best.label,
                rpm(per_gpu(best)),
                times(ratio),
                other.label,
                rpm(per_gpu(other))
            ));
        }

        let fastest = ps.iter().fold(first, |a, b| if b.latency_p95_ms < a.latency_p95_ms { b } else { a });
        if fastest.latency_p95_ms <= 0.0 {
            // Nothing sensible to say about latencies that round to zero.
        } else if fastest.label == best.label {
            s.push(format!("It also answers fastest, with a p95 latency of {}.", human_ms(best.latency_p95_ms)));
        } else {
            let more = (best.latency_p95_ms / fastest.latency_p95_ms - 1.0) * 100.0;
            s.push(format!(
                "{} answers fastest (p95 {}); {}'s p95 of {} is {:.0}% higher.",
                fastest.label,
                human_ms(fastest.latency_p95_ms),
                best.label,
                human_ms(best.latency_p95_ms),
                more
            ));
        }

        let with_util: Vec<&PhaseSummary> = ps.iter().filter(|p| p.util_mean_pct.is_some()).collect();
        if with_util.len() >= 2 {
            let u = |p: &PhaseSummary| p.util_mean_pct.unwrap_or(0.0);
            let lo = with_util.iter().copied().fold(with_util[0], |a, b| if u(b) < u(a) { b } else { a });
            let hi = with_util.iter().copied().fold(with_util[0], |a, b| if u(b) > u(a) { b } else { a });
            s.push(format!(
                "Mean {} ranges from {:.0}% ({}) to {:.0}% ({}).",
                match util_name(ps) {
                    "GPU utilization" => "GPU utilization",
                    "CPU utilization" => "CPU utilization",
                    _ => "utilization",
                },
                u(lo),
                lo.label,
                u(hi),
                hi.label
            ));
        }
    }

    // Cost for the target.
    let slo = slo_text(c);
    let costed: Vec<&PhaseSummary> = ps.iter().filter(|p| p.yearly_cost.is_some()).collect();
    let target = format_count(c.cost_model.target_rpm);
    if let Some(&head) = costed.first() {
        let y = |p: &PhaseSummary| p.yearly_cost.unwrap_or(0.0);
        let cheap = costed.iter().copied().fold(head, |a, b| if y(b) < y(a) { b } else { a });
        let dear = costed.iter().copied().fold(head, |a, b| if y(b) > y(a) { b } else { a });
        if costed.len() == 1 || y(dear) <= y(cheap) {
            s.push(format!(
                "Serving {target} req/min{slo} takes {} with {} ({} a year).",
                gpus(cheap.gpus_needed),
                if costed.len() == 1 { cheap.label.clone() } else { "every phase".into() },
                money(y(cheap))
            ));
        } else {
            let saving = y(dear) - y(cheap);
            s.push(format!(
                "Serving {target} req/min{slo} takes {} with {} ({} a year) against {} with {} ({}): {} ({:.0}%) less a year.",
                gpus(cheap.gpus_needed),
                cheap.label,
                money(y(cheap)),
                gpus(dear.gpus_needed),
                dear.label,
                money(y(dear)),
                money(saving),
                saving / y(dear) * 100.0
            ));
        }
    }
    let missed: Vec<&str> = ps.iter().filter(|p| !p.meets_slo).map(|p| p.label.as_str()).collect();
    if !missed.is_empty() {
        s.push(format!(
            "{} met the SLO at no measured point, so {} no cost for the target.",
            join(&missed),
            if missed.len() == 1 { "it has" } else { "they have" }
        ));
    }
    s.join(" ")
}

fn slo_text(c: &Comparison) -> String {
    if c.cost_model.slo_ms.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = c.cost_model.slo_ms.iter().map(|(m, ms)| format!("{m} p95 ≤ {}", human_ms(*ms))).collect();
    format!(" within {}", parts.join(", "))
}

fn rpm(x: f64) -> String {
    if x >= 100.0 {
        group_thousands(&format!("{x:.0}"))
    } else {
        format!("{x:.1}")
    }
}

fn times(ratio: f64) -> String {
    if ratio.is_finite() {
        format!("{ratio:.1}×")
    } else {
        "far above".into()
    }
}

fn gpus(n: Option<u32>) -> String {
    match n {
        Some(1) => "1 GPU".into(),
        Some(n) => format!("{n} GPUs"),
        None => "no GPU count".into(),
    }
}

/// `$43,800`: whole currency units, thousands grouped.
pub fn money(x: f64) -> String {
    format!("${}", group_thousands(&format!("{x:.0}")))
}

fn join(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => (*one).to_string(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_money_read_well() {
        assert_eq!(join(&["a"]), "a");
        assert_eq!(join(&["a", "b", "c"]), "a, b and c");
        assert_eq!(money(43800.0), "$43,800");
        assert_eq!(rpm(59.94), "59.9");
        assert_eq!(rpm(1234.4), "1,234");
        assert_eq!(times(3.04), "3.0×");
    }
}
