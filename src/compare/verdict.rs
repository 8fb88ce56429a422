//! The verdict: one paragraph written from the numbers of the comparison.

use crate::report::{Comparison, PhaseSummary};
use crate::support::fmt::human_ms;

use super::device;
use super::table::util_name;
use crate::support::fmt::{format_count, group_thousands};

pub fn write(c: &Comparison) -> String {
    let ps = &c.phases;
    let Some(first) = ps.first() else {
        return String::new();
    };
    let dev = device::noun(c);
    let mut s: Vec<String> = Vec::new();
    if ps.len() == 1 {
        s.push(single_phase(first, dev));
    } else {
        let (best, throughput) = throughput(ps, first, dev);
        s.push(throughput);
        s.extend(latency(ps, first, best));
    }
    s.extend(utilization(ps));
    s.extend(cost(c, dev));
    s.extend(missed_slo(ps));
    s.join(" ")
}

/// Requests per minute that one device gives in a phase.
fn per_gpu(p: &PhaseSummary) -> f64 {
    p.requests_per_min / p.gpus
}

/// The only sentence about throughput and latency when one phase was measured.
fn single_phase(first: &PhaseSummary, dev: &str) -> String {
    format!(
        "Only one phase was measured: {} serves {} req/min per {dev} at a p95 latency of {}.",
        first.label,
        rpm(per_gpu(first)),
        human_ms(first.latency_p95_ms)
    )
}

/// The throughput sentence: what one device gives in each deployment; with the phase
/// that gets the most out of one.
fn throughput<'a>(ps: &'a [PhaseSummary], first: &'a PhaseSummary, dev: &str) -> (&'a PhaseSummary, String) {
    let mut order: Vec<&PhaseSummary> = ps.iter().collect();
    order.sort_by(|a, b| per_gpu(b).total_cmp(&per_gpu(a)));
    let (best, second) = (order[0], order[1]);
    let other = if best.label == first.label { second } else { first };
    let ratio = if per_gpu(other) > 0.0 { per_gpu(best) / per_gpu(other) } else { f64::INFINITY };
    let text = if ratio < 1.05 {
        format!(
            "{} and {} get about as much out of a {dev}: {} and {} req/min per {dev}.",
            best.label,
            other.label,
            rpm(per_gpu(best)),
            rpm(per_gpu(other))
        )
    } else {
        format!(
            "{} gets the most out of a {dev}: {} req/min per {dev}, {} {}'s {}.",
            best.label,
            rpm(per_gpu(best)),
            times(ratio),
            other.label,
            rpm(per_gpu(other))
        )
    };
    (best, text)
}

/// The latency sentence, said against the phase with the best throughput; nothing when
/// the latencies round to zero.
fn latency(ps: &[PhaseSummary], first: &PhaseSummary, best: &PhaseSummary) -> Option<String> {
    let fastest = ps.iter().fold(first, |a, b| if b.latency_p95_ms < a.latency_p95_ms { b } else { a });
    if fastest.latency_p95_ms <= 0.0 {
        return None;
    }
    if fastest.label == best.label {
        return Some(format!("It also answers fastest, with a p95 latency of {}.", human_ms(best.latency_p95_ms)));
    }
    let more = (best.latency_p95_ms / fastest.latency_p95_ms - 1.0) * 100.0;
    Some(if more < 0.5 {
        format!("It answers as fast as {}, with a p95 latency of {}.", fastest.label, human_ms(best.latency_p95_ms))
    } else {
        format!(
            "{} answers fastest (p95 {}); {}'s p95 of {} is {:.0}% higher.",
            fastest.label,
            human_ms(fastest.latency_p95_ms),
            best.label,
            human_ms(best.latency_p95_ms),
            more
        )
    })
}

/// The cost sentence for the target: the cheapest phase, against the dearest when they
/// differ; nothing when no phase has a cost.
fn cost(c: &Comparison, dev: &str) -> Option<String> {
    let ps = &c.phases;
    let slo = slo_text(c);
    let costed: Vec<&PhaseSummary> = ps.iter().filter(|p| p.yearly_cost.is_some()).collect();
    let target = format_count(c.cost_model.target_rpm);
    let head = *costed.first()?;
    let y = |p: &PhaseSummary| p.yearly_cost.unwrap_or(0.0);
    let cheap = costed.iter().copied().fold(head, |a, b| if y(b) < y(a) { b } else { a });
    let dear = costed.iter().copied().fold(head, |a, b| if y(b) > y(a) { b } else { a });
    if costed.len() == 1 || y(dear) <= y(cheap) {
        let who = match costed.len() {
            1 => cheap.label.clone(),
            n if n == ps.len() => "every phase".into(),
            _ => join(&costed.iter().map(|p| p.label.as_str()).collect::<Vec<_>>()),
        };
        return Some(format!(
            "Serving {target} req/min{slo} takes {} with {who} ({} a year).",
            devices(cheap.gpus_needed, dev),
            money(y(cheap))
        ));
    }
    let saving = y(dear) - y(cheap);
    Some(format!(
        "Serving {target} req/min{slo} takes {} with {} ({} a year) against {} with {} ({}): {} ({:.0}%) less a year.",
        devices(cheap.gpus_needed, dev),
        cheap.label,
        money(y(cheap)),
        devices(dear.gpus_needed, dev),
        dear.label,
        money(y(dear)),
        money(saving),
        saving / y(dear) * 100.0
    ))
}

/// The phases that met the SLO at no measured point; nothing when every phase did.
fn missed_slo(ps: &[PhaseSummary]) -> Option<String> {
    let missed: Vec<&str> = ps.iter().filter(|p| !p.meets_slo).map(|p| p.label.as_str()).collect();
    if missed.is_empty() {
        return None;
    }
    Some(format!(
        "{} met the SLO at no measured point, so {} no cost for the target.",
        join(&missed),
        if missed.len() == 1 { "it has" } else { "they have" }
    ))
}

/// The utilization sentence: the range over the phases with a metric series, a tie said
/// once, and the phases without one named; nothing when no phase has one.
fn utilization(ps: &[PhaseSummary]) -> Option<String> {
    let with: Vec<&PhaseSummary> = ps.iter().filter(|p| p.util_mean_pct.is_some()).collect();
    let without: Vec<&str> = ps.iter().filter(|p| p.util_mean_pct.is_none()).map(|p| p.label.as_str()).collect();
    let first = *with.first()?;
    let name = match util_name(ps) {
        "GPU utilization" => "GPU utilization",
        "CPU utilization" => "CPU utilization",
        _ => "utilization",
    };
    let u = |p: &PhaseSummary| p.util_mean_pct.unwrap_or(0.0);
    let pct = |p: &PhaseSummary| format!("{:.0}%", u(p));
    let lo = with.iter().copied().fold(first, |a, b| if u(b) < u(a) { b } else { a });
    let hi = with.iter().copied().fold(first, |a, b| if u(b) > u(a) { b } else { a });
    let mut text = if ps.len() == 1 {
        format!("It averaged {} {name}.", pct(first))
    } else if with.len() == 1 {
        format!("{} averaged {} {name}", first.label, pct(first))
    } else if pct(lo) == pct(hi) {
        let who = if without.is_empty() { "Every phase".to_string() } else { join(&with.iter().map(|p| p.label.as_str()).collect::<Vec<_>>()) };
        format!("{who} averaged {} {name}", pct(hi))
    } else {
        format!("Mean {name} ranges from {} ({}) to {} ({})", pct(lo), lo.label, pct(hi), hi.label)
    };
    if ps.len() > 1 {
        if without.is_empty() {
            text.push('.');
        } else {
            let verb = if without.len() == 1 { "has" } else { "have" };
            text.push_str(&format!("; {} {verb} no metric series.", join(&without)));
        }
    }
    Some(text)
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

fn devices(n: Option<u32>, noun: &str) -> String {
    match n {
        Some(n) => device::count(n, noun),
        None => format!("no {noun} count"),
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
    use crate::compare::table::tests::phase;
    use crate::report::{CostModel, SCHEMA_VERSION};

    fn comparison(phases: Vec<PhaseSummary>, device_kind: &str) -> Comparison {
        Comparison {
            schema_version: SCHEMA_VERSION,
            cost_model: CostModel {
                gpu_hour_cost: 2.0,
                license_per_gpu_year: 0.0,
                hours_per_year: 8760.0,
                target_rpm: 600.0,
                target_rpm_is_default: false,
                slo_ms: Default::default(),
            },
            phases,
            rows: Vec::new(),
            verdict: String::new(),
            charts: Vec::new(),
            notes: Vec::new(),
            pods: Vec::new(),
            device_kind: Some(device_kind.into()),
        }
    }

    /// A measured phase: req/min, p95 latency, mean utilization, devices for the target.
    fn measured(label: &str, rpm: f64, p95: f64, util: Option<f64>, needed: Option<u32>) -> PhaseSummary {
        let mut p = phase(label);
        p.requests_per_min = rpm;
        p.latency_p95_ms = p95;
        p.util_kind = util.map(|_| "cpu".into());
        p.util_mean_pct = util;
        p.gpus_needed = needed;
        p.yearly_cost = needed.map(|n| n as f64 * 17_520.0);
        p
    }

    #[test]
    fn tied_utilization_is_said_once() {
        let c = comparison(
            vec![measured("bare-metal", 300.0, 900.0, Some(100.0), Some(2)), measured("sharing", 600.0, 450.0, Some(99.8), Some(1))],
            "cpu",
        );
        let v = write(&c);
        assert!(!v.contains("ranges from"), "{v}");
        insta::assert_snapshot!("verdict_tie", v);
    }

    #[test]
    fn a_single_phase_reads_as_one() {
        let c = comparison(vec![measured("batched", 1181.8, 450.0, Some(98.4), Some(1))], "cpu");
        insta::assert_snapshot!("verdict_single_phase", write(&c));
    }

    #[test]
    fn phases_without_metrics_are_named() {
        let c = comparison(
            vec![
                measured("bare-metal", 60.0, 900.0, Some(40.0), Some(10)),
                measured("kubernetes", 55.0, 800.0, None, Some(11)),
                measured("sharing", 180.0, 1200.0, Some(71.0), Some(4)),
            ],
            "gpu",
        );
        insta::assert_snapshot!("verdict_some_without_metrics", write(&c));
        let none = comparison(
            vec![measured("a", 100.0, 500.0, None, Some(6)), measured("b", 100.0, 500.0, None, Some(6))],
            "gpu",
        );
        let v = write(&none);
        assert!(!v.contains("utilization"), "{v}");
        insta::assert_snapshot!("verdict_no_metrics", v);
    }

    #[test]
    fn lists_and_money_read_well() {
        assert_eq!(join(&["a"]), "a");
        assert_eq!(join(&["a", "b", "c"]), "a, b and c");
        assert_eq!(money(43800.0), "$43,800");
        assert_eq!(rpm(59.94), "59.9");
        assert_eq!(rpm(1234.4), "1,234");
        assert_eq!(times(3.04), "3.0×");
        assert_eq!(devices(Some(1), "CPU"), "1 CPU");
        assert_eq!(devices(None, "GPU"), "no GPU count");
    }
}
