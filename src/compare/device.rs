//! What the phases ran on: a GPU or the host's CPU. The report's rows, verdict and cost
//! model name that device ("CPUs for 180 req/min") instead of always saying GPU.

use crate::report::{Comparison, RunReport};

use super::inputs::PhaseData;

/// The device of one phase, where its metric series tells (`gpu` or `cpu`); `None`
/// without one (a server elsewhere, or behind a port-forward, may run on anything).
pub fn phase_kind(phase: &PhaseData) -> Option<&'static str> {
    phase.util.as_ref().map(|u| u.kind.as_str())
}

/// The device of the whole comparison: what the phases' metric series agree on; where
/// none has one, `cpu` when every run measured a server on loopback of a machine
/// without GPUs (its environment stamp lists none), else `gpu`.
pub fn overall_for(phases: &[PhaseData]) -> &'static str {
    if phases.iter().any(|p| p.util.is_some()) {
        return overall(phases.iter().map(phase_kind));
    }
    let runs = || phases.iter().flat_map(|p| p.runs.iter());
    if runs().next().is_some() && runs().all(local_without_gpu) {
        "cpu"
    } else {
        "gpu"
    }
}

fn local_without_gpu(run: &RunReport) -> bool {
    run.environment.gpus.is_empty() && !run.target.urls.is_empty() && run.target.urls.iter().all(|u| is_loopback(u))
}

fn is_loopback(url: &str) -> bool {
    match url::Url::parse(url).ok().and_then(|u| u.host().map(|h| h.to_owned())) {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// The device of phases that tell: `cpu` or `gpu` when they agree,
/// `mixed` when they differ, `gpu` when none tells (the cost model prices GPU hours).
pub fn overall<'a>(kinds: impl IntoIterator<Item = Option<&'a str>>) -> &'static str {
    let known: std::collections::BTreeSet<&str> = kinds.into_iter().flatten().collect();
    match (known.contains("gpu"), known.contains("cpu")) {
        (true, true) => "mixed",
        (false, true) => "cpu",
        _ => "gpu",
    }
}

/// The device as a noun in labels: `GPU`, `CPU` or `device`.
pub fn noun(c: &Comparison) -> &'static str {
    noun_of(c.device_kind.as_deref())
}

pub fn noun_of(kind: Option<&str>) -> &'static str {
    match kind {
        Some("cpu") => "CPU",
        Some("mixed") => "device",
        _ => "GPU",
    }
}

/// The noun at the start of a title: `Device`, `GPU`.
pub fn capitalized(noun: &str) -> String {
    let mut c = noun.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

/// `1 GPU`, `3 CPUs`.
pub fn count(n: u32, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_urls_are_recognised() {
        assert!(is_loopback("http://127.0.0.1:8000/generate"));
        assert!(is_loopback("http://localhost:1/v1/completions"));
        assert!(is_loopback("http://[::1]:8000/"));
        assert!(!is_loopback("http://10.0.0.5:8000/generate"));
        assert!(!is_loopback("not a url"));
    }

    #[test]
    fn the_comparison_names_the_device_the_phases_agree_on() {
        assert_eq!(overall([Some("cpu"), None, Some("cpu")]), "cpu");
        assert_eq!(overall([Some("gpu"), Some("cpu")]), "mixed");
        assert_eq!(overall([None, None]), "gpu");
        assert_eq!(overall([Some("gpu")]), "gpu");
        assert_eq!(noun_of(Some("cpu")), "CPU");
        assert_eq!(noun_of(Some("mixed")), "device");
        assert_eq!(noun_of(None), "GPU");
        assert_eq!(count(1, "CPU"), "1 CPU");
        assert_eq!(count(4, "GPU"), "4 GPUs");
        assert_eq!(capitalized("device"), "Device");
        assert_eq!(capitalized("CPU"), "CPU");
    }
}
