//! What load-test learns from the target before a run: its API (from the URL path), whether
//! it accepts connections, and its model list (`GET /v1/models`, or Ollama's `GET /api/tags`).

use std::time::Duration;

use super::api::ApiKind;
use super::options::ApiChoice;
use super::LoadTestError;

pub(super) fn resolve_api(choice: ApiChoice, urls: &[reqwest::Url]) -> Result<ApiKind, LoadTestError> {
    let explicit = match choice {
        ApiChoice::Generate => Some(ApiKind::Generate),
        ApiChoice::OpenaiCompletions => Some(ApiKind::OpenaiCompletions),
        ApiChoice::OpenaiChat => Some(ApiKind::OpenaiChat),
        ApiChoice::OllamaGenerate => Some(ApiKind::OllamaGenerate),
        ApiChoice::OllamaChat => Some(ApiKind::OllamaChat),
        ApiChoice::Tgi => Some(match urls.first().map(|u| u.path().trim_end_matches('/').ends_with("/generate_stream")) {
            Some(true) => ApiKind::TgiStream,
            _ => ApiKind::TgiGenerate,
        }),
        ApiChoice::Auto => None,
    };
    if let Some(api) = explicit {
        return Ok(api);
    }
    let mut found = None;
    for url in urls {
        let api = ApiKind::from_path(url.path()).ok_or_else(|| {
            LoadTestError::Usage(format!(
                "cannot tell the API from the path of {url}: end the URL with /generate, /generate_stream, /v1/completions, /v1/chat/completions, /api/generate or /api/chat, or pass --api"
            ))
        })?;
        if found.is_some_and(|f| f != api) {
            return Err(LoadTestError::Usage("all --url values must speak the same API".into()));
        }
        found = Some(api);
    }
    found.ok_or_else(|| LoadTestError::Usage("give at least one --url".into()))
}

pub(super) async fn check_reachable(url: &reqwest::Url) -> Result<(), LoadTestError> {
    let host = url.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_string();
    let port = url.port_or_known_default().unwrap_or(80);
    let connect = tokio::net::TcpStream::connect((host.as_str(), port));
    match tokio::time::timeout(Duration::from_secs(5), connect).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(LoadTestError::Unreachable(format!(
            "cannot connect to {host}:{port} (--url {url}): {e}. Is the server running and listening there?"
        ))),
        Err(_) => Err(LoadTestError::Unreachable(format!(
            "no answer from {host}:{port} (--url {url}) within 5 s: check the address and any firewall"
        ))),
    }
}

/// The server's base URL: everything before `/v1/`, Ollama's `/api/generate` or `/api/chat`,
/// or the last path segment.
pub(super) fn base_url(url: &reqwest::Url) -> reqwest::Url {
    let mut base = url.clone();
    let path = url.path();
    let trimmed = path.trim_end_matches('/');
    let ollama = ["/api/generate", "/api/chat"].iter().find_map(|s| trimmed.strip_suffix(s)).map(str::len);
    let cut = path.find("/v1/").or(ollama).unwrap_or_else(|| path.rfind('/').unwrap_or(0));
    base.set_path(&path[..cut]);
    base.set_query(None);
    base
}

/// Asks the server for its model list at `route` (`/v1/models`, or Ollama's `/api/tags`;
/// best effort): the report's self-description.
pub(super) async fn describe_server(url: &reqwest::Url, route: &str) -> Option<serde_json::Value> {
    let mut models = base_url(url);
    let path = format!("{}{route}", models.path().trim_end_matches('/'));
    models.set_path(&path);
    let client = crate::support::http::client(Duration::from_secs(5)).ok()?;
    let resp = client.get(models).send().await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    resp.json::<serde_json::Value>().await.ok()
}

/// The first model of a `/v1/models` answer (`data[0].id`) or of Ollama's `/api/tags`
/// (`models[0].name`).
pub(super) fn first_model(url: &reqwest::Url, models: Option<&serde_json::Value>) -> Result<String, LoadTestError> {
    let pick = |list: &str, field: &str| {
        models?.get(list)?.as_array()?.first()?.get(field)?.as_str().map(str::to_string)
    };
    pick("data", "id")
        .or_else(|| pick("models", "name"))
        .ok_or_else(|| {
            LoadTestError::Failed(format!(
                "could not learn the model name from {}/v1/models: pass --model NAME",
                base_url(url).as_str().trim_end_matches('/')
            ))
        })
}

/// Whether the server at `url` is TGI: its `GET /info` names a `model_id` (gpubench serve
/// has no such route). Best effort.
pub(super) async fn is_tgi(url: &reqwest::Url) -> bool {
    let mut info = base_url(url);
    let path = format!("{}/info", info.path().trim_end_matches('/'));
    info.set_path(&path);
    let Ok(client) = crate::support::http::client(Duration::from_secs(5)) else { return false };
    let Ok(resp) = client.get(info).send().await else { return false };
    if !resp.status().is_success() {
        return false;
    }
    resp.json::<serde_json::Value>().await.ok().is_some_and(|v| v.get("model_id").is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_and_model_lists() {
        let base = |u: &str| base_url(&reqwest::Url::parse(u).unwrap()).to_string();
        assert_eq!(base("http://h:11434/api/generate"), "http://h:11434/");
        assert_eq!(base("http://h/ollama/api/chat/"), "http://h/ollama");
        assert_eq!(base("http://h:8000/v1/chat/completions"), "http://h:8000/");
        assert_eq!(base("http://h:8080/generate_stream"), "http://h:8080/");
        let url = reqwest::Url::parse("http://h/api/chat").unwrap();
        let tags = serde_json::json!({"models": [{"name": "llama3.2:latest", "model": "llama3.2:latest"}]});
        assert_eq!(first_model(&url, Some(&tags)).unwrap(), "llama3.2:latest");
        let v1 = serde_json::json!({"data": [{"id": "m"}]});
        assert_eq!(first_model(&url, Some(&v1)).unwrap(), "m");
        assert!(first_model(&url, None).is_err());
    }
}
