//! Which Kubernetes pod a process belongs to, from `/proc/PID/cgroup`.
//!
//! The kubelet puts every container in a cgroup under the pod's UID:
//! cgroup v1 `/kubepods/burstable/pod<uid>/<container>`, cgroup v2 with the systemd
//! driver `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid with _>.slice/...`.
//! The pod's name is its container's `HOSTNAME` (Kubernetes sets it), read from
//! `/proc/PID/environ` where we may; otherwise the pod is named by its UID.

/// The pod of a process: its name where readable, else `uid:<pod uid>`. `None` outside Kubernetes.
pub fn pod_of_pid(pid: u32) -> Option<String> {
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let uid = pod_uid_from_cgroup(&cgroup)?;
    let name = std::fs::read(format!("/proc/{pid}/environ")).ok().and_then(|env| hostname_from_environ(&env));
    Some(name.unwrap_or_else(|| format!("uid:{uid}")))
}

/// The pod UID in a `/proc/PID/cgroup` text, if the process runs in a pod.
pub fn pod_uid_from_cgroup(text: &str) -> Option<String> {
    for line in text.lines() {
        let path = line.splitn(3, ':').nth(2).unwrap_or("");
        if !path.contains("kubepods") {
            continue;
        }
        for part in path.split('/') {
            // cgroup v2 + systemd: kubepods-besteffort-pod<uid>.slice, or kubepods-pod<uid>.slice
            if let Some(slice) = part.strip_suffix(".slice") {
                if let Some(pos) = slice.rfind("-pod") {
                    let uid = &slice[pos + 4..];
                    if looks_like_uid(uid) {
                        return Some(uid.replace('_', "-"));
                    }
                }
            }
            // cgroupfs driver: pod<uid>
            if let Some(uid) = part.strip_prefix("pod") {
                if looks_like_uid(uid) {
                    return Some(uid.to_string());
                }
            }
        }
    }
    None
}

fn looks_like_uid(s: &str) -> bool {
    s.len() >= 32 && s.chars().all(|c| c.is_ascii_hexdigit() || c == '-' || c == '_')
}

fn hostname_from_environ(env: &[u8]) -> Option<String> {
    env.split(|b| *b == 0)
        .filter_map(|kv| std::str::from_utf8(kv).ok())
        .find_map(|kv| kv.strip_prefix("HOSTNAME="))
        .filter(|h| !h.is_empty())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_v1_cgroupfs_paths_name_the_pod() {
        let text = "12:memory:/kubepods/burstable/pod0f6a3e2c-1b7d-4c59-9a51-2f1e8d7c6b5a/8d1f2e3c4b5a69788796a5b4c3d2e1f0\n\
                    11:cpu,cpuacct:/kubepods/burstable/pod0f6a3e2c-1b7d-4c59-9a51-2f1e8d7c6b5a/8d1f2e3c4b5a69788796a5b4c3d2e1f0\n";
        assert_eq!(pod_uid_from_cgroup(text).as_deref(), Some("0f6a3e2c-1b7d-4c59-9a51-2f1e8d7c6b5a"));
    }

    #[test]
    fn cgroup_v2_systemd_paths_name_the_pod() {
        let text = "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0f6a3e2c_1b7d_4c59_9a51_2f1e8d7c6b5a.slice/cri-containerd-8d1f2e3c4b5a.scope\n";
        assert_eq!(pod_uid_from_cgroup(text).as_deref(), Some("0f6a3e2c-1b7d-4c59-9a51-2f1e8d7c6b5a"));
        let guaranteed = "0::/kubepods.slice/kubepods-pod0f6a3e2c_1b7d_4c59_9a51_2f1e8d7c6b5a.slice/cri-containerd-8d1f.scope\n";
        assert_eq!(pod_uid_from_cgroup(guaranteed).as_deref(), Some("0f6a3e2c-1b7d-4c59-9a51-2f1e8d7c6b5a"));
    }

    #[test]
    fn processes_outside_kubernetes_have_no_pod() {
        assert_eq!(pod_uid_from_cgroup("0::/user.slice/user-1000.slice/session-2.scope\n"), None);
        assert_eq!(pod_uid_from_cgroup(""), None);
        assert_eq!(pod_of_pid(u32::MAX), None);
    }

    #[test]
    fn the_pod_name_is_the_hostname() {
        let env = b"PATH=/usr/bin\0HOSTNAME=llm-server-7c9f5d-abcde\0HOME=/root\0";
        assert_eq!(hostname_from_environ(env).as_deref(), Some("llm-server-7c9f5d-abcde"));
        assert_eq!(hostname_from_environ(b"PATH=/usr/bin\0"), None);
    }
}
