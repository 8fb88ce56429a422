//! Unit tests of `device/prometheus.rs`.

use super::*;

#[test]
fn selectors_parse_and_are_asked_in_every_spelling() {
    let sel = PrometheusSelector::parse(r#"namespace="llm", pod=~"llm-.*""#).unwrap();
    let q = sel.query();
    assert!(q.contains(r#"namespace="llm",pod=~"llm-.*"}"#), "{q}");
    assert!(q.contains(r#"exported_namespace="llm",exported_pod=~"llm-.*"}"#), "{q}");
    assert!(q.contains(r#"pod_namespace="llm",pod_name=~"llm-.*"}"#), "{q}");
    assert_eq!(q.matches(" or ").count(), 2);
    assert!(q.contains("DCGM_FI_DEV_GPU_UTIL|"), "{q}");
    assert!(q.contains("runai_gpu_utilization_per_pod_per_gpu"), "{q}");
}

#[test]
fn selectors_without_pod_labels_are_asked_once() {
    let sel = PrometheusSelector::parse(r#"{Hostname="node-1",gpu!="3"}"#).unwrap();
    assert!(!sel.query().contains(" or "));
    assert!(PrometheusSelector::parse("").unwrap().query().starts_with("{__name__=~"));
}

#[test]
fn commas_inside_values_do_not_split() {
    let sel = PrometheusSelector::parse(r#"pod=~"a,b|c", namespace='x'"#).unwrap();
    assert_eq!(sel.matchers.len(), 2);
    assert_eq!(sel.matchers[0].value, r#""a,b|c""#);
}

#[test]
fn bad_selectors_get_a_clear_message() {
    assert!(PrometheusSelector::parse("pod").unwrap_err().contains("is not a label matcher"));
    assert!(PrometheusSelector::parse("pod=llm").unwrap_err().contains("must be quoted"));
    assert!(PrometheusSelector::parse(r#"pod="llm"#).unwrap_err().contains("unclosed quote"));
    assert!(PrometheusSelector::parse(r#"=~"x""#).unwrap_err().contains("is not a label matcher"));
}

fn series(labels: &[(&str, &str)], values: &[(f64, &str)]) -> Series {
    Series {
        metric: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        values: values.iter().map(|(t, v)| (*t, v.to_string())).collect(),
        value: None,
    }
}

fn sampler() -> PrometheusSampler {
    PrometheusSampler {
        client: reqwest::Client::new(),
        runtime: tokio::runtime::Runtime::new().unwrap().handle().clone(),
        base: url::Url::parse("http://127.0.0.1:9").unwrap(),
        query: String::new(),
        step: Duration::from_secs(1),
        device: None,
        last_eval: None,
        energy_base: BTreeMap::new(),
    }
}

#[test]
fn series_become_rows_per_device_pod_and_time() {
    let dev = |name: &str, pod_label: &'static str| -> Vec<(&'static str, String)> {
        vec![
            ("__name__", name.to_string()),
            ("gpu", "0".into()),
            ("UUID", "GPU-1".into()),
            ("modelName", "NVIDIA H100 80GB HBM3".into()),
            ("Hostname", "node-1".into()),
            (pod_label, "llm-0".into()),
            ("namespace", "llm".into()),
        ]
    };
    let mk = |labels: Vec<(&str, String)>, values: &[(f64, &str)]| {
        let l: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        series(&l, values)
    };
    let util = dev("DCGM_FI_DEV_GPU_UTIL", "exported_pod");
    let used = dev("DCGM_FI_DEV_FB_USED", "exported_pod");
    let free = dev("DCGM_FI_DEV_FB_FREE", "exported_pod");
    let tensor = dev("DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", "exported_pod");
    let runai: Vec<(&str, String)> = vec![
        ("__name__", "runai_gpu_utilization_per_pod_per_gpu".into()),
        ("gpu", "0".into()),
        ("node", "node-1".into()),
        ("pod_name", "llm-1".into()),
        ("pod_namespace", "llm".into()),
    ];
    let mut s = sampler();
    let rows = s.rows(vec![
        mk(util, &[(10.0, "42"), (11.0, "57")]),
        mk(used, &[(10.0, "20000"), (11.0, "20100")]),
        mk(free, &[(10.0, "61559"), (11.0, "61459")]),
        mk(tensor, &[(10.0, "0.25"), (11.0, "NaN")]),
        mk(runai, &[(10.0, "33")]),
    ]);
    assert_eq!(rows.len(), 3, "{rows:#?}");
    let first = &rows[0];
    assert_eq!(first.device_id, "node-1:0");
    assert_eq!(first.device_name, "NVIDIA H100 80GB HBM3");
    assert_eq!(first.pod, None, "device rows are about the whole GPU");
    assert_eq!(first.gpu_util_pct, Some(42.0));
    assert_eq!(first.mem_total_mib, Some(81559.0));
    assert_eq!(first.tensor_activity_pct, Some(25.0));
    let pod_row = rows.iter().find(|r| r.process_sm_util_pct.is_some()).unwrap();
    assert_eq!(pod_row.pod.as_deref(), Some("llm/llm-1"));
    assert_eq!(pod_row.process_sm_util_pct, Some(33.0));
    assert_eq!(pod_row.gpu_util_pct, None);
    let second = rows.iter().find(|r| r.timestamp == 11.0 && r.gpu_util_pct.is_some()).unwrap();
    assert_eq!(second.tensor_activity_pct, None, "NaN is no value");
}
