//! What the comparison adds from beside the load numbers: the engines' own metrics
//! (KV-cache use and queueing rows), each pod's share of its GPU (from the metric
//! series' per-pod rows), and the environment stamps of the inputs.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::report::{Comparison, ComparisonRow, MetricSample, PhaseSummary, PodUsage, RunReport};

use super::inputs::{percentile, PhaseData};
use super::table::winners;
use super::CompareError;

/// KV-cache use (mean, peak, in %) and peak waiting requests of a run, where it has server metrics.
pub fn server_numbers(run: &RunReport) -> (Option<f64>, Option<f64>, Option<f64>) {
    let Some(m) = &run.server_metrics else { return (None, None, None) };
    let pct = |v: f64| (v * 1000.0).round() / 10.0;
    (m.kv_usage_mean().map(pct), m.kv_usage_peak().map(pct), m.waiting_peak())
}

/// The KV-cache and queueing rows, where any phase has them; placed before the cost rows.
pub fn insert_rows(rows: &mut Vec<ComparisonRow>, phases: &[PhaseSummary]) {
    type Getter = fn(&PhaseSummary) -> Option<f64>;
    let defs: [(&str, &str, &str, Getter); 3] = [
        ("kv_usage_mean_pct", "KV-cache use, mean", "none", |p| p.kv_usage_mean_pct),
        ("kv_usage_peak_pct", "KV-cache use, peak", "none", |p| p.kv_usage_peak_pct),
        ("waiting_peak", "Requests waiting, peak", "lower", |p| p.waiting_peak),
    ];
    let new: Vec<ComparisonRow> = defs
        .into_iter()
        .filter_map(|(metric, title, better, get)| {
            let values: Vec<Option<f64>> = phases.iter().map(get).collect();
            if values.iter().all(Option::is_none) {
                return None;
            }
            let winners = winners(phases, &values, better);
            Some(ComparisonRow { metric: metric.into(), title: title.into(), better: better.into(), values, winners })
        })
        .collect();
    let at = rows.iter().position(|r| r.metric == "gpus_needed" || r.metric == "yearly_cost").unwrap_or(rows.len());
    rows.splice(at..at, new);
}

/// Every phase's pods, in phase order, then by pod and GPU.
pub fn pods(phases: &[PhaseData]) -> Result<Vec<PodUsage>, CompareError> {
    let mut out = Vec::new();
    for p in phases {
        if let Some(path) = &p.input.metrics {
            out.extend(load_pods(path, &p.input.label)?);
        }
    }
    Ok(out)
}

/// The per-pod rows of a metric series CSV, one [`PodUsage`] per pod and GPU.
pub fn load_pods(path: &Path, phase: &str) -> Result<Vec<PodUsage>, CompareError> {
    let err = |detail: String| CompareError::Input { path: path.into(), detail };
    let mut reader = csv::Reader::from_path(path).map_err(|e| err(format!("cannot read the metric series ({e})")))?;
    // (pod, GPU) -> (samples, SM utilization values, peak memory)
    type Acc = (u64, Vec<f64>, Option<f64>);
    let mut by_pod: BTreeMap<(String, String), Acc> = BTreeMap::new();
    for (i, row) in reader.deserialize::<MetricSample>().enumerate() {
        let s = row.map_err(|e| err(format!("row {} is not a metric sample: {e}. Write it with gpubench metrics --out", i + 1)))?;
        let Some(pod) = s.pod.filter(|p| !p.is_empty()) else { continue };
        let entry = by_pod.entry((pod, s.device_id)).or_default();
        entry.0 += 1;
        if let Some(u) = s.process_sm_util_pct.filter(|u| u.is_finite()) {
            entry.1.push(u);
        }
        if let Some(m) = s.process_mem_mib.filter(|m| m.is_finite()) {
            entry.2 = Some(entry.2.map_or(m, |p: f64| p.max(m)));
        }
    }
    let round = |x: f64| (x * 100.0).round() / 100.0;
    Ok(by_pod
        .into_iter()
        .map(|((pod, device_id), (samples, mut util, mem))| {
            util.sort_by(f64::total_cmp);
            let mean = (!util.is_empty()).then(|| round(util.iter().sum::<f64>() / util.len() as f64));
            let p95 = (!util.is_empty()).then(|| round(percentile(&util, 95.0)));
            PodUsage { phase: phase.to_string(), pod, device_id, samples, sm_util_mean_pct: mean, sm_util_p95_pct: p95, mem_peak_mib: mem }
        })
        .collect())
}

fn escape(text: &str) -> String {
    text.replace('|', "\\|")
}

/// The markdown sections: what the server-metric rows mean, pods, environments.
pub fn sections(md: &mut String, c: &Comparison) {
    if c.rows.iter().any(|r| r.metric.starts_with("kv_usage") || r.metric == "waiting_peak") {
        let _ = writeln!(
            md,
            "## Server metrics\n\nKV-cache use and waiting requests are the engines' own numbers (their `/metrics`, scraped by `load-test --server-metrics` during the operating point): KV-cache use is the mean of the replicas' means and the highest of any replica; waiting is the longest queue of any replica. A KV cache near 100% with requests waiting means the engine ran out of cache, not of compute.\n"
        );
    }
    if !c.pods.is_empty() {
        let _ = writeln!(md, "## Pods\n");
        let _ = writeln!(md, "| Phase | Pod | GPU | Samples | SM util, mean | SM util, p95 | Memory, peak |");
        let _ = writeln!(md, "|---|---|---|---:|---:|---:|---:|");
        let pct = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1}%"));
        for p in &c.pods {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} |",
                escape(&p.phase),
                escape(&p.pod),
                escape(&p.device_id),
                p.samples,
                pct(p.sm_util_mean_pct),
                pct(p.sm_util_p95_pct),
                p.mem_peak_mib.map_or("-".into(), |m| format!("{m:.0} MiB"))
            );
        }
        md.push('\n');
    }
    if c.phases.iter().any(|p| p.environment.is_some()) {
        let _ = writeln!(md, "## Environments\n");
        let _ = writeln!(md, "| Phase | gpubench | Host | OS | CPU | Accelerators |");
        let _ = writeln!(md, "|---|---|---|---|---|---|");
        for p in &c.phases {
            let Some(e) = &p.environment else { continue };
            let gpus = if e.gpus.is_empty() {
                "none seen".to_string()
            } else {
                let mut names: BTreeMap<&str, u32> = BTreeMap::new();
                for g in &e.gpus {
                    *names.entry(g.name.as_str()).or_default() += 1;
                }
                names.iter().map(|(n, k)| format!("{k} × {n}")).collect::<Vec<_>>().join(", ")
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} {} | {} ({} cores) | {} |",
                escape(&p.label),
                escape(&e.gpubench_version),
                escape(&e.hostname),
                escape(&e.os),
                escape(&e.arch),
                escape(&e.cpu_model),
                e.cpu_cores,
                escape(&gpus)
            );
        }
        md.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_are_grouped_by_pod_and_gpu() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.csv");
        let mut w = csv::Writer::from_path(&path).unwrap();
        let row = |dev: &str, pod: Option<&str>, util: f64, mem: f64| MetricSample {
            timestamp: 1.0,
            source: "nvml".into(),
            device_id: dev.into(),
            gpu_util_pct: pod.is_none().then_some(90.0),
            pod: pod.map(String::from),
            process_sm_util_pct: pod.map(|_| util),
            process_mem_mib: pod.map(|_| mem),
            ..Default::default()
        };
        for r in [
            row("0", None, 0.0, 0.0),
            row("0", Some("llm/a"), 30.0, 1000.0),
            row("0", Some("llm/a"), 50.0, 1200.0),
            row("0", Some("llm/b"), 20.0, 800.0),
            row("1", Some("llm/a"), 10.0, 500.0),
        ] {
            w.serialize(r).unwrap();
        }
        w.flush().unwrap();
        drop(w);
        let pods = load_pods(&path, "sharing").unwrap();
        let keys: Vec<(&str, &str, u64)> = pods.iter().map(|p| (p.pod.as_str(), p.device_id.as_str(), p.samples)).collect();
        assert_eq!(keys, vec![("llm/a", "0", 2), ("llm/a", "1", 1), ("llm/b", "0", 1)]);
        assert_eq!((pods[0].sm_util_mean_pct, pods[0].sm_util_p95_pct, pods[0].mem_peak_mib), (Some(40.0), Some(50.0), Some(1200.0)));
        assert!(pods.iter().all(|p| p.phase == "sharing"));
    }
}
