//! Fault injection for the robustness tests (not a user feature, so not a flag): the environment
//! variable `GPUBENCH_SERVE_FAULT`, read once when `serve` starts, makes the server fail on
//! purpose at a named place. A `;`-separated list of:
//!
//! - `panic-on-prompt:TEXT`: the engine panics while producing a token for a request whose
//!   prompt contains TEXT (that request alone must fail with a 500; the rest go on);
//! - `panic-in-step:TEXT`: the engine panics inside a forward step that holds such a request
//!   (every sequence of that step fails; the engine must go on with the next requests);
//! - `panic-in-handler:TEXT`: the HTTP handler panics on such a request (a 500 for it alone);
//! - `load-delay:DURATION`: model loading waits this long first (e.g. `3s`), so that the
//!   loading state of `/ready` can be observed;
//! - `sse-padding:BYTES`: every event of a stream carries an SSE comment of BYTES spaces, so that
//!   a client that stops reading fills the socket buffers after a few tokens.
//!
//! Unset (the normal case) every check is one load of an empty static.

use std::sync::OnceLock;
use std::time::Duration;

/// The environment variable read at startup.
pub const ENV: &str = "GPUBENCH_SERVE_FAULT";

/// Faults to inject; all empty by default.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Faults {
    pub panic_on_prompt: Option<String>,
    pub panic_in_step: Option<String>,
    pub panic_in_handler: Option<String>,
    pub load_delay: Option<Duration>,
    pub sse_padding: Option<usize>,
}

static FAULTS: OnceLock<Faults> = OnceLock::new();

impl Faults {
    /// Parses the variable's value; the error names the bad entry.
    pub fn parse(spec: &str) -> Result<Faults, String> {
        let mut f = Faults::default();
        for entry in spec.split(';').map(str::trim).filter(|e| !e.is_empty()) {
            let (kind, arg) = entry.split_once(':').ok_or_else(|| format!("{ENV}: `{entry}` is not KIND:ARG"))?;
            if arg.is_empty() {
                return Err(format!("{ENV}: `{entry}` has an empty argument"));
            }
            match kind {
                "panic-on-prompt" => f.panic_on_prompt = Some(arg.to_string()),
                "panic-in-step" => f.panic_in_step = Some(arg.to_string()),
                "panic-in-handler" => f.panic_in_handler = Some(arg.to_string()),
                "load-delay" => f.load_delay = Some(crate::support::cli::parse_duration(arg).map_err(|e| format!("{ENV}: load-delay: {e}"))?),
                "sse-padding" => f.sse_padding = Some(arg.parse().map_err(|_| format!("{ENV}: sse-padding: `{arg}` is not a number of bytes"))?),
                _ => {
                    return Err(format!(
                        "{ENV}: unknown fault `{kind}`; known: panic-on-prompt, panic-in-step, panic-in-handler, load-delay, sse-padding"
                    ))
                }
            }
        }
        Ok(f)
    }

    /// Any fault at all (so that callers skip work, e.g. detokenizing a prompt, when none is set).
    pub fn any(&self) -> bool {
        *self != Faults::default()
    }
}

/// Reads `GPUBENCH_SERVE_FAULT` once; later calls return what the first one read.
pub fn init() -> Result<&'static Faults, String> {
    if let Some(f) = FAULTS.get() {
        return Ok(f);
    }
    let parsed = match std::env::var(ENV) {
        Ok(spec) => Faults::parse(&spec)?,
        Err(_) => Faults::default(),
    };
    if parsed.any() {
        tracing::warn!("{ENV} is set: faults will be injected on purpose ({parsed:?})");
    }
    Ok(FAULTS.get_or_init(|| parsed))
}

/// The faults in force (none before [`init`]).
pub fn get() -> &'static Faults {
    static NONE: Faults = Faults { panic_on_prompt: None, panic_in_step: None, panic_in_handler: None, load_delay: None, sse_padding: None };
    FAULTS.get().unwrap_or(&NONE)
}

/// Whether `text` contains the trigger of an enabled fault.
pub fn triggers(trigger: &Option<String>, text: &str) -> bool {
    trigger.as_deref().is_some_and(|t| text.contains(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind_and_rejects_bad_entries() {
        let f = Faults::parse("panic-on-prompt:BOOM; load-delay:2s;panic-in-handler:x:y").unwrap();
        assert_eq!(f.panic_on_prompt.as_deref(), Some("BOOM"));
        assert_eq!(f.panic_in_handler.as_deref(), Some("x:y"));
        assert_eq!(f.load_delay, Some(Duration::from_secs(2)));
        assert!(f.any());
        assert!(!Faults::parse("").unwrap().any());
        assert!(Faults::parse("explode:now").unwrap_err().contains("unknown fault"));
        assert!(Faults::parse("panic-on-prompt").unwrap_err().contains("KIND:ARG"));
        assert!(Faults::parse("panic-on-prompt:").unwrap_err().contains("empty"));
        assert!(Faults::parse("load-delay:soon").is_err());
    }

    #[test]
    fn triggers_on_contained_text_only() {
        assert!(triggers(&Some("BOOM".into()), "say BOOM now"));
        assert!(!triggers(&Some("BOOM".into()), "say boom now"));
        assert!(!triggers(&None, "BOOM"));
    }
}
