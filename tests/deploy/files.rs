//! Reading the deployment files: YAML manifests (several documents per file), the Compose file
//! and the Dockerfile, plus the views the checks share (pod templates, containers, argv).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn read(relative: &str) -> String {
    let path = root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Every document of a YAML file, empty documents left out.
pub fn yaml_documents(relative: &str) -> Vec<Value> {
    let text = read(relative);
    let mut docs = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(&text).enumerate() {
        let value = Value::deserialize(doc).unwrap_or_else(|e| panic!("{relative}: document {}: {e}", i + 1));
        if !value.is_null() {
            docs.push(value);
        }
    }
    docs
}

/// One Kubernetes object and the file it came from (relative to the repository root).
#[derive(Debug, Clone)]
pub struct Manifest {
    pub file: String,
    pub value: Value,
}

impl Manifest {
    pub fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or("")
    }
    pub fn api_version(&self) -> &str {
        self.value["apiVersion"].as_str().unwrap_or("")
    }
    pub fn name(&self) -> &str {
        self.value["metadata"]["name"].as_str().unwrap_or("")
    }
    pub fn namespace(&self) -> Option<&str> {
        self.value["metadata"]["namespace"].as_str()
    }
    pub fn id(&self) -> String {
        format!("{} {}/{}", self.file, self.kind(), self.name())
    }
    /// Resources of the KAI / Run:AI API group (validated against our own schema, not by
    /// kubernetes-validate, which has no schema for them).
    pub fn is_scheduling_crd(&self) -> bool {
        self.api_version().starts_with("scheduling.run.ai/")
    }
    /// The pod (metadata, spec) of a Pod, or of the template of a Deployment or Job.
    pub fn pod(&self) -> Option<(&Value, &Value)> {
        match self.kind() {
            "Pod" => Some((&self.value["metadata"], &self.value["spec"])),
            "Deployment" | "Job" | "StatefulSet" | "DaemonSet" | "ReplicaSet" => {
                let template = &self.value["spec"]["template"];
                Some((&template["metadata"], &template["spec"]))
            }
            _ => None,
        }
    }
    pub fn replicas(&self) -> u64 {
        self.value["spec"]["replicas"].as_u64().unwrap_or(1)
    }
}

/// Every Kubernetes manifest under deploy/ (the Compose file excluded), sorted by path.
pub fn manifest_files() -> Vec<String> {
    let mut files = Vec::new();
    collect_yaml(&root().join("deploy"), &mut files);
    files.sort();
    files
        .into_iter()
        .filter_map(|p| p.strip_prefix(root()).ok().map(|r| r.to_string_lossy().replace('\\', "/")))
        .filter(|p| p != "deploy/compose.yaml")
        .collect()
}

fn collect_yaml(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_yaml(&path, out);
        } else if matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
            out.push(path);
        }
    }
}

pub fn manifests() -> Vec<Manifest> {
    manifest_files()
        .into_iter()
        .flat_map(|file| yaml_documents(&file).into_iter().map(move |value| Manifest { file: file.clone(), value }))
        .collect()
}

/// The containers (init containers first) of a pod spec.
pub fn containers(spec: &Value) -> Vec<&Value> {
    ["initContainers", "containers"]
        .into_iter()
        .filter_map(|k| spec[k].as_array())
        .flatten()
        .collect()
}

pub fn strings(value: &Value) -> Option<Vec<String>> {
    value.as_array().map(|a| a.iter().map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())).collect())
}

/// What a container runs, the way the kubelet decides it: `command` replaces the image's
/// ENTRYPOINT (and drops its CMD), `args` replaces the CMD.
pub fn container_argv(container: &Value, image: &Dockerfile) -> Vec<String> {
    let command = strings(&container["command"]);
    let args = strings(&container["args"]);
    match (command, args) {
        (Some(c), Some(a)) => c.into_iter().chain(a).collect(),
        (Some(c), None) => c,
        (None, Some(a)) => image.entrypoint().into_iter().chain(a).collect(),
        (None, None) => image.entrypoint().into_iter().chain(image.cmd()).collect(),
    }
}

/// One instruction of a Dockerfile, continuation lines joined.
#[derive(Debug, Clone)]
pub struct Instruction {
    pub keyword: String,
    pub args: String,
    /// Index of the stage it belongs to (None before the first FROM).
    pub stage: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct Stage {
    pub from: String,
    pub name: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Dockerfile {
    pub instructions: Vec<Instruction>,
    pub stages: Vec<Stage>,
}

impl Dockerfile {
    pub fn parse(text: &str) -> Dockerfile {
        let mut logical = Vec::new();
        let mut current = String::new();
        for line in text.lines() {
            let trimmed = line.trim();
            if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
                continue;
            }
            if trimmed.starts_with('#') {
                continue; // comment inside a continued instruction
            }
            match trimmed.strip_suffix('\\') {
                Some(part) => {
                    current.push_str(part);
                    current.push(' ');
                }
                None => {
                    current.push_str(trimmed);
                    logical.push(std::mem::take(&mut current));
                }
            }
        }
        if !current.is_empty() {
            logical.push(current);
        }
        let mut instructions = Vec::new();
        let mut stages: Vec<Stage> = Vec::new();
        for text in logical {
            let (keyword, args) = text.split_once(char::is_whitespace).unwrap_or((&text, ""));
            let keyword = keyword.to_ascii_uppercase();
            let args = args.trim().to_string();
            if keyword == "FROM" {
                let words: Vec<&str> = args.split_whitespace().filter(|w| !w.starts_with("--platform")).collect();
                let name = match words.as_slice() {
                    [_, as_kw, name] if as_kw.eq_ignore_ascii_case("as") => Some(name.to_string()),
                    _ => None,
                };
                stages.push(Stage { from: words.first().unwrap_or(&"").to_string(), name });
            }
            let stage = stages.len().checked_sub(1);
            instructions.push(Instruction { keyword, args, stage });
        }
        Dockerfile { instructions, stages }
    }

    pub fn load() -> Dockerfile {
        Dockerfile::parse(&read("Dockerfile"))
    }

    /// ARG defaults declared before the first FROM.
    pub fn global_args(&self) -> BTreeMap<String, String> {
        self.instructions
            .iter()
            .filter(|i| i.stage.is_none() && i.keyword == "ARG")
            .filter_map(|i| i.args.split_once('=').map(|(k, v)| (k.trim().to_string(), v.trim().to_string())))
            .collect()
    }

    pub fn stage_index(&self, name: &str) -> Option<usize> {
        self.stages.iter().position(|s| s.name.as_deref() == Some(name))
    }

    pub fn in_stage(&self, stage: usize) -> impl Iterator<Item = &Instruction> {
        self.instructions.iter().filter(move |i| i.stage == Some(stage))
    }

    /// The last instruction of a kind in the final stage.
    pub fn final_instruction(&self, keyword: &str) -> Option<&Instruction> {
        let last = self.stages.len().checked_sub(1)?;
        self.in_stage(last).filter(|i| i.keyword == keyword).last()
    }

    fn exec_form(&self, keyword: &str) -> Vec<String> {
        self.final_instruction(keyword)
            .and_then(|i| serde_json::from_str::<Vec<String>>(&i.args).ok())
            .unwrap_or_default()
    }

    pub fn entrypoint(&self) -> Vec<String> {
        self.exec_form("ENTRYPOINT")
    }

    pub fn cmd(&self) -> Vec<String> {
        self.exec_form("CMD")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerfile_parser_joins_continuations_and_tracks_stages() {
        let df = Dockerfile::parse(
            "# syntax=x\nARG A=1\nFROM img:${A} AS one\nRUN a \\\n  # note\n  && b\nFROM one\nENTRYPOINT [\"x\", \"y\"]\nCMD [\"--z\"]\n",
        );
        assert_eq!(df.global_args().get("A").map(String::as_str), Some("1"));
        assert_eq!(df.stages.len(), 2);
        assert_eq!(df.stages[0].name.as_deref(), Some("one"));
        assert_eq!(df.stages[1].from, "one");
        let run = df.instructions.iter().find(|i| i.keyword == "RUN").map(|i| i.args.clone());
        assert_eq!(run.as_deref(), Some("a  && b"));
        assert_eq!(df.entrypoint(), vec!["x", "y"]);
        assert_eq!(df.cmd(), vec!["--z"]);
    }

    #[test]
    fn container_argv_follows_kubelet_rules() {
        let df = Dockerfile::parse("FROM a\nENTRYPOINT [\"gpubench\", \"serve\"]\nCMD [\"--port\", \"8000\"]\n");
        let only_args = serde_json::json!({"args": ["--port", "9000"]});
        assert_eq!(container_argv(&only_args, &df), vec!["gpubench", "serve", "--port", "9000"]);
        let only_command = serde_json::json!({"command": ["sleep", "1"]});
        assert_eq!(container_argv(&only_command, &df), vec!["sleep", "1"]);
        let nothing = serde_json::json!({});
        assert_eq!(container_argv(&nothing, &df), vec!["gpubench", "serve", "--port", "8000"]);
    }
}
