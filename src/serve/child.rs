//! `gpubench serve` as a child process of another command (bench's phases): the flags it is
//! started with are built here, beside the flags themselves, so that a renamed flag breaks a
//! unit test and not a run.

use std::path::PathBuf;

use super::model::Arch;

/// One local server: loopback, port 0 (it picks a free port and prints it).
#[derive(Debug, Clone, PartialEq)]
pub struct ServeChild {
    pub device: String,
    pub threads: usize,
    pub max_batch_size: usize,
    pub model: Option<PathBuf>,
    /// Random weights of this architecture instead of a model file.
    pub dummy_arch: Option<Arch>,
    pub gpu_memory_fraction: Option<f64>,
}

impl ServeChild {
    /// The argument list after the program name: `serve --host 127.0.0.1 --port 0 ...`.
    pub fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = [
            "serve", "--host", "127.0.0.1", "--port", "0", "--device", &self.device, "--threads", &self.threads.to_string(),
            "--max-batch-size", &self.max_batch_size.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some(m) = &self.model {
            args.extend(["--model".into(), m.display().to_string()]);
        }
        if let Some(arch) = self.dummy_arch {
            args.extend(["--load-format".into(), "dummy".into(), "--arch".into(), arch.name().into()]);
        }
        if let Some(f) = self.gpu_memory_fraction {
            args.extend(["--gpu-memory-fraction".into(), format!("{f:.2}")]);
        }
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::support::cli::parse_flags;

    fn parses(args: &[String]) -> Result<crate::serve::ServeArgs, clap::Error> {
        assert_eq!(args[0], "serve");
        parse_flags::<crate::serve::ServeArgs>("serve", &args[1..])
    }

    #[test]
    fn the_child_flags_are_serve_flags() {
        let child = ServeChild {
            device: "cpu".into(),
            threads: 2,
            max_batch_size: 16,
            model: Some("/m.gguf".into()),
            dummy_arch: None,
            gpu_memory_fraction: Some(0.3166),
        };
        let args = child.args();
        assert!(args.windows(2).any(|w| w == ["--gpu-memory-fraction", "0.32"]), "{args:?}");
        assert!(parses(&args).is_ok());
        let dummy = ServeChild { model: None, dummy_arch: Some(Arch::Llama32_1b), gpu_memory_fraction: None, ..child };
        if let Err(e) = parses(&dummy.args()) {
            panic!("{e}");
        }
    }
}
