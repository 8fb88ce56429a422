//! Where the Hub is, who we are, and where files go: flags first, then the environment
//! variables that every Hugging Face tool reads (HF_ENDPOINT, HF_TOKEN, HF_HOME, HF_HUB_CACHE, HF_HUB_OFFLINE).

use std::fmt;
use std::path::{Path, PathBuf};

/// The default Hub endpoint when neither `--endpoint` nor `HF_ENDPOINT` is given.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// An access token. Its `Debug` and `Display` never show the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub fn new(secret: &str) -> Option<Token> {
        let secret = secret.trim();
        (!secret.is_empty()).then(|| Token(secret.to_string()))
    }
    pub fn secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(***)")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Reads the environment through a function so tests can give their own.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl<F: Fn(&str) -> Option<String>> Env for F {
    fn var(&self, name: &str) -> Option<String> {
        self(name)
    }
}

/// The Hub endpoint without a trailing `/`.
pub fn endpoint(flag: Option<&str>, env: &dyn Env) -> String {
    let raw = flag.map(str::to_string).or_else(|| env.var("HF_ENDPOINT")).unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
    raw.trim().trim_end_matches('/').to_string()
}

/// `$HF_HOME`, else `~/.cache/huggingface`.
pub fn hf_home(env: &dyn Env) -> PathBuf {
    if let Some(home) = env.var("HF_HOME") {
        return expand_home(&home, env);
    }
    let cache = env.var("XDG_CACHE_HOME").map(PathBuf::from).unwrap_or_else(|| home_dir(env).join(".cache"));
    cache.join("huggingface")
}

/// The hub cache: `--cache-dir`, else `$HF_HUB_CACHE`, else `$HF_HOME/hub`.
pub fn cache_dir(flag: Option<&Path>, env: &dyn Env) -> PathBuf {
    if let Some(dir) = flag {
        return dir.to_path_buf();
    }
    if let Some(dir) = env.var("HF_HUB_CACHE").or_else(|| env.var("HUGGINGFACE_HUB_CACHE")) {
        return expand_home(&dir, env);
    }
    hf_home(env).join("hub")
}

/// The token: `--token`, else `$HF_TOKEN`, else the file `$HF_HOME/token` (as written by `hf auth login`).
pub fn token(flag: Option<&str>, env: &dyn Env) -> Option<Token> {
    if let Some(t) = flag.and_then(Token::new) {
        return Some(t);
    }
    if let Some(t) = env.var("HF_TOKEN").or_else(|| env.var("HUGGING_FACE_HUB_TOKEN")).as_deref().and_then(Token::new) {
        return Some(t);
    }
    let path = env.var("HF_TOKEN_PATH").map(|p| expand_home(&p, env)).unwrap_or_else(|| hf_home(env).join("token"));
    std::fs::read_to_string(path).ok().as_deref().and_then(Token::new)
}

/// `--offline`, or `HF_HUB_OFFLINE` set to a true value (1, ON, YES, TRUE).
pub fn offline(flag: bool, env: &dyn Env) -> bool {
    flag || env.var("HF_HUB_OFFLINE").is_some_and(|v| is_true(&v))
}

fn is_true(value: &str) -> bool {
    matches!(value.trim().to_ascii_uppercase().as_str(), "1" | "ON" | "YES" | "TRUE")
}

fn home_dir(env: &dyn Env) -> PathBuf {
    env.var("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."))
}

fn expand_home(path: &str, env: &dyn Env) -> PathBuf {
    match path.strip_prefix("~/") {
        Some(rest) => home_dir(env).join(rest),
        None if path == "~" => home_dir(env),
        None => PathBuf::from(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name: &str| map.get(name).cloned()
    }

    #[test]
    fn endpoint_strips_trailing_slash_and_prefers_the_flag() {
        assert_eq!(endpoint(None, &env(&[])), DEFAULT_ENDPOINT);
        assert_eq!(endpoint(None, &env(&[("HF_ENDPOINT", "http://mirror.local/")])), "http://mirror.local");
        assert_eq!(endpoint(Some("http://a:1//"), &env(&[("HF_ENDPOINT", "http://b")])), "http://a:1");
    }

    #[test]
    fn cache_dir_follows_the_python_precedence() {
        let e = env(&[("HOME", "/home/u")]);
        assert_eq!(cache_dir(None, &e), PathBuf::from("/home/u/.cache/huggingface/hub"));
        let e = env(&[("HOME", "/home/u"), ("HF_HOME", "/data/hf")]);
        assert_eq!(cache_dir(None, &e), PathBuf::from("/data/hf/hub"));
        let e = env(&[("HF_HOME", "/data/hf"), ("HF_HUB_CACHE", "/fast/hub")]);
        assert_eq!(cache_dir(None, &e), PathBuf::from("/fast/hub"));
        assert_eq!(cache_dir(Some(Path::new("/x")), &e), PathBuf::from("/x"));
    }

    #[test]
    fn token_comes_from_flag_then_env_then_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "hf_file\n").unwrap();
        let home = dir.path().to_str().unwrap();
        let e = env(&[("HF_HOME", home)]);
        assert_eq!(token(None, &e), Token::new("hf_file"));
        let e = env(&[("HF_HOME", home), ("HF_TOKEN", "hf_env")]);
        assert_eq!(token(None, &e), Token::new("hf_env"));
        assert_eq!(token(Some("hf_flag"), &e), Token::new("hf_flag"));
        assert_eq!(token(None, &env(&[("HF_HOME", "/nonexistent")])), None);
    }

    #[test]
    fn token_never_prints_its_secret() {
        let t = Token::new("hf_secret").unwrap();
        assert!(!format!("{t:?} {t}").contains("hf_secret"));
    }

    #[test]
    fn offline_accepts_the_usual_true_values() {
        for v in ["1", "on", "YES", "true"] {
            assert!(offline(false, &env(&[("HF_HUB_OFFLINE", v)])));
        }
        assert!(!offline(false, &env(&[("HF_HUB_OFFLINE", "0")])));
        assert!(offline(true, &env(&[])));
    }
}
