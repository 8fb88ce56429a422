//! Unit tests of `check/kube.rs`.

use super::*;

const NODES: &str = include_str!("../../fixtures/tools/kubectl-get-nodes.json");

#[test]
fn nodes_list_their_gpus_mig_slices_and_time_slicing() {
    let nodes = parse_nodes(NODES).unwrap();
    assert_eq!(nodes.len(), 3);
    let sliced = nodes.iter().find(|n| n.name == "gpu-node-1").unwrap();
    assert_eq!((sliced.gpus, sliced.physical, sliced.replicas), (4, Some(1), Some(4)));
    assert!(sliced.ready);
    assert_eq!(describe_node(sliced), "gpu-node-1: 4 nvidia.com/gpu (NVIDIA-H100-80GB-HBM3, 1 physical x4 time-slicing)");
    let mig = nodes.iter().find(|n| n.name == "gpu-node-2").unwrap();
    assert_eq!(mig.gpus, 0);
    assert_eq!(mig.mig, vec![("nvidia.com/mig-1g.10gb".to_string(), 3), ("nvidia.com/mig-2g.20gb".to_string(), 2)]);
    let cpu = nodes.iter().find(|n| n.name == "cpu-node-1").unwrap();
    assert_eq!((cpu.gpus, cpu.mig.len()), (0, 0));
}

#[test]
fn cluster_policy_state_and_device_plugin_config() {
    let p = parse_cluster_policies(include_str!("../../fixtures/tools/kubectl-get-clusterpolicies.json")).unwrap();
    assert_eq!(p[0].name, "cluster-policy");
    assert_eq!(p[0].state, "ready");
    assert_eq!(p[0].device_plugin_config, Some(("time-slicing-config".into(), Some("any".into()))));
    assert_eq!(p[0].mig_strategy.as_deref(), Some("mixed"));
}

#[test]
fn time_slicing_replicas_are_read_from_the_configmap() {
    let t = parse_time_slicing(include_str!("../../fixtures/tools/kubectl-get-configmap-time-slicing.json")).unwrap();
    assert_eq!(t, vec![("any".to_string(), vec![4])]);
}

#[test]
fn queues_and_namespaces_parse() {
    let q = parse_queues(include_str!("../../fixtures/tools/kubectl-get-queues.json")).unwrap();
    assert_eq!(q.len(), 2);
    assert_eq!(q[1], Queue { name: "llm".into(), parent: Some("default".into()), gpu_quota: Some(1.0) });
    let ns = parse_namespaces(include_str!("../../fixtures/tools/kubectl-get-namespaces.json")).unwrap();
    assert!(ns.contains(&"kai-scheduler".to_string()));
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    assert!(parse_nodes("error: You must be logged in").is_err());
    assert!(parse_nodes("{}").is_err());
    assert!(parse_cluster_policies("[]").is_err());
    assert!(parse_time_slicing("{\"data\": 3}").is_err());
}
