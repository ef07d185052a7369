//! `[copilot.model]`: where the language model is, what it may cost, and
//! the key, which never appears in logs or `Debug` output.

use std::fmt;

use serde::Deserialize;

/// `[copilot]`: the co-pilot's global keys. Only `model` lives here for now
/// (flows are per team, `[teams.copilot]`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopilotSection {
    /// `[copilot.model]`: without it the co-pilot uses only the built-in engine.
    #[serde(default)]
    pub model: Option<ModelConfig>,
}

impl CopilotSection {
    /// Checks `[copilot]`: `Err((key, problem))` with the full key path.
    pub fn validate(&self) -> Result<(), (String, String)> {
        match &self.model {
            Some(model) => model.validate().map_err(|(key, problem)| (format!("copilot.model.{key}"), problem)),
            None => Ok(()),
        }
    }
}

/// An API key. Its `Debug` and `Display` print `<redacted>`; only the
/// client reads it ([`ApiKey::expose`]) to set the `Authorization` header.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> ApiKey {
        ApiKey(key.into())
    }

    /// The key itself: for the request header and the leak check, nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("<redacted>")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("<redacted>")
    }
}

/// `[copilot.model]`: an OpenAI-compatible chat-completions API.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// `https://api.openai.com/v1`, or a local server's (`http://127.0.0.1:11434/v1`):
    /// requests go to `{base_url}/chat/completions`.
    pub base_url: String,
    /// The model's name as the server knows it.
    pub model: String,
    /// The key itself (prefer `api_key_env` in files you commit).
    #[serde(default)]
    pub api_key: Option<ApiKey>,
    /// The name of an environment variable holding the key, read when the
    /// client is made. Neither set: no `Authorization` header (a local server).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// A request without a whole answer by then has failed (the built-in engine answers).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Tokens (prompt and completion, as the server counts them) one
    /// conversation may spend; once spent, no more requests for it.
    #[serde(default = "default_budget")]
    pub max_tokens_per_conversation: u32,
    /// The completion's bound, sent as `max_tokens`.
    #[serde(default = "default_max_output_tokens")]
    pub max_output_tokens: u32,
    #[serde(default)]
    pub temperature: f32,
    /// The longest reply or draft (characters) accepted from the model;
    /// a longer one is refused, not cut.
    #[serde(default = "default_max_reply_chars")]
    pub max_reply_chars: usize,
    /// The longest handoff summary (characters) accepted from the model.
    #[serde(default = "default_max_summary_chars")]
    pub max_summary_chars: usize,
    /// Hosts a reply may link to (`example.com` also allows its subdomains);
    /// a reply with any other link is refused.
    #[serde(default)]
    pub allowed_link_hosts: Vec<String>,
}

fn default_timeout_ms() -> u64 {
    4_000
}
fn default_budget() -> u32 {
    4_000
}
fn default_max_output_tokens() -> u32 {
    300
}
fn default_max_reply_chars() -> usize {
    500
}
fn default_max_summary_chars() -> usize {
    600
}

/// WhatsApp's longest text body.
const WHATSAPP_TEXT_MAX: usize = 4096;

impl ModelConfig {
    /// A configuration with the defaults, for tests and code.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> ModelConfig {
        ModelConfig {
            base_url: base_url.into(),
            model: model.into(),
            api_key: None,
            api_key_env: None,
            timeout_ms: default_timeout_ms(),
            max_tokens_per_conversation: default_budget(),
            max_output_tokens: default_max_output_tokens(),
            temperature: 0.0,
            max_reply_chars: default_max_reply_chars(),
            max_summary_chars: default_max_summary_chars(),
            allowed_link_hosts: Vec::new(),
        }
    }

    /// `Err((key, problem))`, the key relative to `[copilot.model]`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let fail = |key: &str, problem: String| Err((key.to_owned(), problem));
        if let Err(problem) = parse_base_url(&self.base_url) {
            return fail("base_url", problem);
        }
        if self.model.trim().is_empty() {
            return fail("model", "must name the model (for example \"gpt-4o-mini\")".to_owned());
        }
        if self.api_key.as_ref().is_some_and(|key| key.expose().trim().is_empty()) {
            return fail("api_key", "must not be empty (leave it out for a server that needs no key)".to_owned());
        }
        if self.api_key.is_some() && self.api_key_env.is_some() {
            return fail("api_key_env", "set only one of `api_key` and `api_key_env`".to_owned());
        }
        if let Some(name) = &self.api_key_env
            && (name.is_empty() || !name.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'_'))
        {
            return fail(
                "api_key_env",
                format!("must be an environment variable's name (letters, digits, `_`), not {name:?}"),
            );
        }
        for (key, value) in [
            ("timeout_ms", self.timeout_ms),
            ("max_tokens_per_conversation", u64::from(self.max_tokens_per_conversation)),
            ("max_output_tokens", u64::from(self.max_output_tokens)),
            ("max_reply_chars", self.max_reply_chars as u64),
            ("max_summary_chars", self.max_summary_chars as u64),
        ] {
            if value == 0 {
                return fail(key, "must be greater than 0".to_owned());
            }
        }
        for (key, value) in [("max_reply_chars", self.max_reply_chars), ("max_summary_chars", self.max_summary_chars)] {
            if value > WHATSAPP_TEXT_MAX {
                return fail(
                    key,
                    format!("must be at most {WHATSAPP_TEXT_MAX} (WhatsApp's longest text), not {value}"),
                );
            }
        }
        if !(self.temperature.is_finite() && (0.0..=2.0).contains(&self.temperature)) {
            return fail("temperature", format!("must be between 0 and 2, not {}", self.temperature));
        }
        for host in &self.allowed_link_hosts {
            if host.is_empty() || host.contains(['/', ':', ' ']) {
                return fail("allowed_link_hosts", format!("{host:?} is not a host name like example.com"));
            }
        }
        Ok(())
    }

    /// The key: `api_key`, or the variable `api_key_env` names as `lookup`
    /// finds it (`Err` when it is unset or empty), or none.
    pub fn resolve_api_key(&self, lookup: impl Fn(&str) -> Option<String>) -> Result<Option<ApiKey>, String> {
        if let Some(key) = &self.api_key {
            return Ok(Some(key.clone()));
        }
        let Some(name) = &self.api_key_env else { return Ok(None) };
        match lookup(name) {
            Some(value) if !value.trim().is_empty() => Ok(Some(ApiKey::new(value.trim()))),
            _ => Err(format!("copilot.model.api_key_env names {name}, which is not set")),
        }
    }

    /// `{base_url}/chat/completions`.
    pub fn completions_url(&self) -> String {
        format!("{}/chat/completions", self.base_url.trim_end_matches('/'))
    }
}

/// An `http` or `https` URL with a host and no query.
fn parse_base_url(text: &str) -> Result<(), String> {
    let url = reqwest::Url::parse(text).map_err(|error| format!("{text:?} is not a URL: {error}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{text:?} must start with http:// or https://"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{text:?} has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{text:?} must not carry a query or fragment (the key goes in `api_key`)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Result<CopilotSection, String> {
        let section: CopilotSection = toml::from_str(text).map_err(|error| error.to_string())?;
        section.validate().map_err(|(key, problem)| format!("{key}: {problem}"))?;
        Ok(section)
    }

    #[test]
    fn defaults_and_keys() {
        let section = parsed(
            r#"
            [model]
            base_url = "https://api.openai.com/v1"
            model = "gpt-4o-mini"
            api_key_env = "OPENAI_API_KEY"
            "#,
        )
        .unwrap();
        let model = section.model.unwrap();
        assert_eq!(model.timeout_ms, 4000);
        assert_eq!(model.max_tokens_per_conversation, 4000);
        assert_eq!(model.temperature, 0.0);
        assert_eq!(model.completions_url(), "https://api.openai.com/v1/chat/completions");
        let key = model.resolve_api_key(|name| (name == "OPENAI_API_KEY").then(|| "sk-env".to_owned())).unwrap();
        assert_eq!(key.unwrap().expose(), "sk-env");
        let missing = model.resolve_api_key(|_| None).unwrap_err();
        assert!(missing.contains("OPENAI_API_KEY"), "{missing}");
    }

    #[test]
    fn bad_values_name_the_key() {
        let base = "[model]\nbase_url = \"https://api.openai.com/v1\"\nmodel = \"m\"\n";
        for (extra, key) in [
            ("timeout_ms = 0", "copilot.model.timeout_ms"),
            ("max_tokens_per_conversation = 0", "copilot.model.max_tokens_per_conversation"),
            ("temperature = 3.0", "copilot.model.temperature"),
            ("max_reply_chars = 5000", "copilot.model.max_reply_chars"),
            ("api_key_env = \"NOT A NAME\"", "copilot.model.api_key_env"),
            ("api_key = \"k\"\napi_key_env = \"K\"", "copilot.model.api_key_env"),
            ("allowed_link_hosts = [\"https://x.com/\"]", "copilot.model.allowed_link_hosts"),
        ] {
            let error = parsed(&format!("{base}{extra}\n")).unwrap_err();
            assert!(error.starts_with(key), "{extra}: {error}");
        }
        let error = parsed("[model]\nbase_url = \"ftp://x\"\nmodel = \"m\"\n").unwrap_err();
        assert!(error.starts_with("copilot.model.base_url"), "{error}");
        let error = parsed("[model]\nbase_url = \"https://x/v1\"\nmodel = \" \"\n").unwrap_err();
        assert!(error.starts_with("copilot.model.model"), "{error}");
        assert!(parsed(&format!("{base}unknown = 1\n")).unwrap_err().contains("unknown"));
    }

    /// The key never shows in `Debug` (of the key, of the configuration).
    #[test]
    fn the_key_is_never_in_debug_output() {
        let mut model = ModelConfig::new("https://api.openai.com/v1", "m");
        model.api_key = Some(ApiKey::new("sk-very-secret-key"));
        let section = CopilotSection { model: Some(model) };
        for shown in [format!("{section:?}"), format!("{section:#?}"), format!("{}", ApiKey::new("sk-very-secret-key"))]
        {
            assert!(!shown.contains("sk-very-secret-key"), "{shown}");
        }
        assert!(format!("{section:?}").contains("<redacted>"));
    }
}
