//! The Prometheus sampler: reads dcgm-exporter and Run:AI series from a Prometheus
//! server with `query_range`, one window per tick (from the last point read to now).
//!
//! dcgm-exporter's pod labels are `pod`/`namespace`/`container`, which Prometheus often
//! stores as `exported_pod`/`exported_namespace`/`exported_container`; Run:AI's per-pod
//! metrics may say `pod_name`/`pod_namespace`. A selector written with `pod` and
//! `namespace` is asked in every spelling, joined with `or`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::{SampleError, Sampler};
use crate::report::MetricSample;

/// Device-level series (dcgm-exporter): name, column, scale to our unit.
const DCGM: &[(&str, Column, f64)] = &[
    ("DCGM_FI_DEV_GPU_UTIL", Column::GpuUtil, 1.0),
    ("DCGM_FI_DEV_MEM_COPY_UTIL", Column::MemUtil, 1.0),
    ("DCGM_FI_DEV_FB_USED", Column::MemUsed, 1.0),
    ("DCGM_FI_DEV_FB_FREE", Column::MemFree, 1.0),
    ("DCGM_FI_DEV_POWER_USAGE", Column::Power, 1.0),
    ("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", Column::EnergyMj, 1.0),
    ("DCGM_FI_DEV_GPU_TEMP", Column::Temperature, 1.0),
    ("DCGM_FI_DEV_SM_CLOCK", Column::SmClock, 1.0),
    ("DCGM_FI_PROF_SM_ACTIVE", Column::SmActivity, 100.0),
    ("DCGM_FI_PROF_GR_ENGINE_ACTIVE", Column::GrEngineActive, 100.0),
    ("DCGM_FI_PROF_SM_OCCUPANCY", Column::SmOccupancy, 100.0),
    ("DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", Column::Tensor, 100.0),
    ("DCGM_FI_PROF_DRAM_ACTIVE", Column::Dram, 100.0),
    // Run:AI, per pod and GPU.
    ("runai_gpu_utilization_per_pod_per_gpu", Column::PodUtil, 1.0),
    ("runai_gpu_memory_used_mebibytes_per_pod_per_gpu", Column::PodMem, 1.0),
];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Column {
    GpuUtil,
    MemUtil,
    MemUsed,
    MemFree,
    Power,
    EnergyMj,
    Temperature,
    SmClock,
    SmActivity,
    GrEngineActive,
    SmOccupancy,
    Tensor,
    Dram,
    PodUtil,
    PodMem,
}

/// Label spellings: ours first, then what Prometheus or Run:AI write instead.
const SPELLINGS: &[&[(&str, &str)]] = &[
    &[],
    &[("pod", "exported_pod"), ("namespace", "exported_namespace"), ("container", "exported_container")],
    &[("pod", "pod_name"), ("namespace", "pod_namespace")],
];

/// One label matcher of a selector: `name op "value"`.
#[derive(Debug, Clone, PartialEq)]
struct Matcher {
    name: String,
    op: &'static str,
    value: String,
}

/// A parsed series selector such as `namespace="x",pod=~"llm-.*"`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PrometheusSelector {
    matchers: Vec<Matcher>,
}

impl PrometheusSelector {
    /// Parses the label matchers (without braces; braces around them are accepted).
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let t = t.strip_prefix('{').and_then(|x| x.strip_suffix('}')).unwrap_or(t);
        let mut matchers = Vec::new();
        for part in split_outside_quotes(t)? {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let name_len = part.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(part.len());
            let (name, rest) = part.split_at(name_len);
            let rest = rest.trim_start();
            let op = ["=~", "!~", "!=", "="].into_iter().find(|op| rest.starts_with(op));
            let (Some(op), false) = (op, name.is_empty()) else {
                return Err(format!("'{part}' is not a label matcher: write name=\"value\", name=~\"regex\", name!=\"value\" or name!~\"regex\""));
            };
            let value = rest[op.len()..].trim();
            let quoted = value.len() >= 2
                && ((value.starts_with('"') && value.ends_with('"')) || (value.starts_with('\'') && value.ends_with('\'')) || (value.starts_with('`') && value.ends_with('`')));
            if !quoted {
                return Err(format!("the value in '{part}' must be quoted: {name}{op}\"...\""));
            }
            matchers.push(Matcher { name: name.to_string(), op, value: value.to_string() });
        }
        Ok(PrometheusSelector { matchers })
    }

    fn render(&self, rename: &[(&str, &str)], extra: &str) -> String {
        let mut parts = vec![extra.to_string()];
        for m in &self.matchers {
            let name = rename.iter().find(|(from, _)| *from == m.name).map(|(_, to)| *to).unwrap_or(&m.name);
            parts.push(format!("{name}{}{}", m.op, m.value));
        }
        format!("{{{}}}", parts.join(","))
    }

    /// The PromQL query for all our metric names, in every label spelling.
    pub fn query(&self) -> String {
        let names: Vec<&str> = DCGM.iter().map(|(n, _, _)| *n).collect();
        let by_name = format!("__name__=~\"{}\"", names.join("|"));
        let mentions_pod_labels = self.matchers.iter().any(|m| matches!(m.name.as_str(), "pod" | "namespace" | "container"));
        let spellings = if mentions_pod_labels { SPELLINGS } else { &SPELLINGS[..1] };
        spellings.iter().map(|rename| self.render(rename, &by_name)).collect::<Vec<_>>().join(" or ")
    }
}

fn split_outside_quotes(s: &str) -> Result<Vec<String>, String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in s.chars() {
        match quote {
            Some(q) => {
                cur.push(c);
                if escaped {
                    escaped = false;
                } else if c == '\\' && q != '`' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None if c == ',' => parts.push(std::mem::take(&mut cur)),
            None => {
                if matches!(c, '"' | '\'' | '`') {
                    quote = Some(c);
                }
                cur.push(c);
            }
        }
    }
    if quote.is_some() {
        return Err(format!("unclosed quote in selector '{s}'"));
    }
    parts.push(cur);
    Ok(parts)
}

#[derive(Debug, Deserialize)]
struct ApiResponse {
    status: String,
    #[serde(default)]
    data: Option<ApiData>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ApiData {
    #[serde(default)]
    result: Vec<Series>,
}

#[derive(Debug, Deserialize)]
struct Series {
    metric: BTreeMap<String, String>,
    #[serde(default)]
    values: Vec<(f64, String)>,
    #[serde(default)]
    value: Option<(f64, String)>,
}

/// Why the Prometheus source could not start.
#[derive(Debug, thiserror::Error)]
pub enum PrometheusError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Unreachable(String),
}

pub struct PrometheusSampler {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
    base: url::Url,
    query: String,
    step: Duration,
    device: Option<String>,
    last_eval: Option<f64>,
    energy_base: BTreeMap<String, f64>,
}

impl PrometheusSampler {
    /// Checks the server and the selector with one instant query, so that a wrong URL
    /// or selector fails at once with a clear message. Must run inside a tokio runtime.
    pub fn connect(url: &str, selector: &PrometheusSelector, step: Duration, device: Option<u32>) -> Result<Self, PrometheusError> {
        let base = url::Url::parse(url.trim_end_matches('/'))
            .map_err(|e| PrometheusError::Usage(format!("--prometheus-url '{url}' is not a URL ({e}): write e.g. http://localhost:9090")))?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| PrometheusError::Unreachable("the Prometheus source needs an async runtime".into()))?;
        let client = crate::support::http::client(Duration::from_secs(10)).map_err(|e| PrometheusError::Unreachable(format!("cannot build an HTTP client: {e}")))?;
        let s = PrometheusSampler {
            client,
            runtime,
            base,
            query: selector.query(),
            step: step.max(Duration::from_millis(1)),
            device: device.map(|d| d.to_string()),
            last_eval: None,
            energy_base: BTreeMap::new(),
        };
        let probe = s.base_join("api/v1/query");
        let q = s.query.clone();
        s.get(probe, &[("query", q)]).map_err(|e| match e {
            ApiFailure::Rejected(msg) => PrometheusError::Usage(format!("Prometheus rejected the query ({msg}): check --selector")),
            ApiFailure::Transport(msg) => PrometheusError::Unreachable(msg),
        })?;
        Ok(s)
    }

    fn base_join(&self, path: &str) -> url::Url {
        let mut u = self.base.clone();
        let joined = format!("{}/{path}", u.path().trim_end_matches('/'));
        u.set_path(&joined);
        u
    }

    fn get(&self, url: url::Url, params: &[(&str, String)]) -> Result<Vec<Series>, ApiFailure> {
        let request = self.client.get(url.clone()).query(params);
        self.runtime.block_on(async move {
            let resp = request
                .send()
                .await
                .map_err(|e| ApiFailure::Transport(format!("Prometheus at {} did not answer ({e}): check --prometheus-url and that the server runs", self.base)))?;
            let status = resp.status();
            let body = resp.text().await.map_err(|e| ApiFailure::Transport(format!("reading Prometheus's answer: {e}")))?;
            let parsed: ApiResponse = serde_json::from_str(&body).map_err(|_| {
                let head: String = body.chars().take(120).collect();
                ApiFailure::Transport(format!("{url} answered HTTP {status} with something that is not the Prometheus API ({head:?}): check --prometheus-url"))
            })?;
            if parsed.status != "success" {
                return Err(ApiFailure::Rejected(parsed.error.unwrap_or_else(|| format!("HTTP {status}"))));
            }
            Ok(parsed.data.map(|d| d.result).unwrap_or_default())
        })
    }

    /// Turns a matrix answer into rows: one per timestamp, device and pod.
    fn rows(&mut self, series: Vec<Series>) -> Vec<MetricSample> {
        let mut rows: BTreeMap<(i64, String, String, bool), MetricSample> = BTreeMap::new();
        let mut fb_free: BTreeMap<(i64, String, String, bool), f64> = BTreeMap::new();
        let mut gr_engine: BTreeMap<(i64, String, String, bool), f64> = BTreeMap::new();
        for s in series {
            let Some(name) = s.metric.get("__name__") else { continue };
            let Some(&(_, column, scale)) = DCGM.iter().find(|(n, _, _)| *n == name.as_str()) else { continue };
            let label = |keys: &[&str]| keys.iter().find_map(|k| s.metric.get(*k)).filter(|v| !v.is_empty()).cloned();
            let gpu = label(&["gpu", "gpu_index"]);
            if self.device.is_some() && gpu != self.device {
                continue;
            }
            let host = label(&["Hostname", "hostname", "node", "kubernetes_node"]);
            let uuid = label(&["UUID", "uuid", "gpu_uuid"]);
            let device_id = match (&host, &gpu, &uuid) {
                (Some(h), Some(g), _) => format!("{h}:{g}"),
                (None, Some(g), _) => g.clone(),
                (_, None, Some(u)) => u.clone(),
                _ => "unknown".into(),
            };
            let device_name = label(&["modelName", "model_name"]).unwrap_or_default();
            // Where Prometheus renamed the exporter's labels, `pod` is the exporter's own pod.
            let pod_name = label(&["exported_pod", "pod", "pod_name"]);
            let namespace = label(&["exported_namespace", "namespace", "pod_namespace"]);
            let pod = pod_name.map(|p| match &namespace {
                Some(ns) => format!("{ns}/{p}"),
                None => p,
            });
            let per_pod = matches!(column, Column::PodUtil | Column::PodMem);
            // A device row is about the whole GPU (the contract leaves `pod` empty there);
            // the selector has already picked the GPUs of the pods asked for.
            let pod = if per_pod { pod } else { None };
            let points = s.values.into_iter().chain(s.value);
            for (ts, text) in points {
                let Ok(raw) = text.parse::<f64>() else { continue };
                if !raw.is_finite() {
                    continue;
                }
                // Ratios become % without binary noise (0.55 -> 55, not 55.00000000000001).
                let v = if scale == 1.0 { raw } else { (raw * scale * 1e6).round() / 1e6 };
                let key = ((ts * 1000.0).round() as i64, device_id.clone(), pod.clone().unwrap_or_default(), per_pod);
                let row = rows.entry(key.clone()).or_insert_with(|| MetricSample {
                    timestamp: ts,
                    source: "prometheus".into(),
                    device_id: device_id.clone(),
                    device_name: device_name.clone(),
                    pod: pod.clone(),
                    ..Default::default()
                });
                if row.device_name.is_empty() {
                    row.device_name = device_name.clone();
                }
                match column {
                    Column::GpuUtil => row.gpu_util_pct = Some(v),
                    Column::MemUtil => row.mem_util_pct = Some(v),
                    Column::MemUsed => row.mem_used_mib = Some(v),
                    Column::MemFree => {
                        fb_free.insert(key, v);
                    }
                    Column::Power => row.power_w = Some(v),
                    Column::EnergyMj => {
                        let base = *self.energy_base.entry(device_id.clone()).or_insert(v);
                        row.energy_j = Some(((v - base) / 1000.0).max(0.0));
                    }
                    Column::Temperature => row.temperature_c = Some(v),
                    Column::SmClock => row.sm_clock_mhz = Some(v),
                    Column::SmActivity => row.sm_activity_pct = Some(v),
                    Column::GrEngineActive => {
                        gr_engine.insert(key, v);
                    }
                    Column::SmOccupancy => row.sm_occupancy_pct = Some(v),
                    Column::Tensor => row.tensor_activity_pct = Some(v),
                    Column::Dram => row.dram_activity_pct = Some(v),
                    Column::PodUtil => row.process_sm_util_pct = Some(v),
                    Column::PodMem => row.process_mem_mib = Some(v),
                }
            }
        }
        for (key, free) in fb_free {
            if let Some(row) = rows.get_mut(&key) {
                row.mem_total_mib = row.mem_used_mib.map(|u| u + free);
            }
        }
        for (key, active) in gr_engine {
            if let Some(row) = rows.get_mut(&key) {
                // Graphics engine activity stands in for SM activity where the latter is not exported.
                row.sm_activity_pct = row.sm_activity_pct.or(Some(active));
            }
        }
        rows.into_values().collect()
    }
}

enum ApiFailure {
    Rejected(String),
    Transport(String),
}

impl Sampler for PrometheusSampler {
    fn source(&self) -> &'static str {
        "prometheus"
    }

    fn note(&self) -> String {
        "gpu_util_pct is dcgm-exporter's DCGM_FI_DEV_GPU_UTIL (the same kernel duty cycle as NVML utilization.gpu); \
         sm_activity_pct is DCGM_FI_PROF_SM_ACTIVE (or GR_ENGINE_ACTIVE) x 100 where exported; \
         pod rows with process_sm_util_pct come from Run:AI's per-pod metrics"
            .into()
    }

    fn sample(&mut self, now: f64) -> Result<Vec<MetricSample>, SampleError> {
        let step = self.step.as_secs_f64();
        let start = match self.last_eval {
            Some(last) => last + step,
            None => now,
        };
        if now < start {
            return Ok(Vec::new());
        }
        let url = self.base_join("api/v1/query_range");
        let params = [
            ("query", self.query.clone()),
            ("start", format!("{start:.3}")),
            ("end", format!("{now:.3}")),
            ("step", format!("{step:.3}")),
        ];
        let series = self.get(url, &params).map_err(|e| match e {
            ApiFailure::Rejected(m) | ApiFailure::Transport(m) => SampleError::Unavailable(m),
        })?;
        // The window is done even when it held no data: do not ask for it again.
        let evals = ((now - start) / step).floor();
        self.last_eval = Some(start + evals * step);
        Ok(self.rows(series))
    }
}

#[cfg(test)]
#[path = "prometheus_tests.rs"]
mod tests;
