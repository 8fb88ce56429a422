//! Chat templates: the model's Jinja template (`tokenizer.chat_template`) rendered with minijinja,
//! ChatML when the model has none.

use minijinja::{context, Environment, Error, ErrorKind};
use serde::{Deserialize, Serialize};

use super::ServeError;

/// ChatML, used when a model carries no template.
pub const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// One chat message as the OpenAI API sends it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
}

impl ChatTemplate {
    /// Compiles `source` (or ChatML when `None`). `bos`/`eos` are the token strings templates may use.
    pub fn new(source: Option<&str>, bos: &str, eos: &str) -> Result<Self, ServeError> {
        let mut env = Environment::new();
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<String, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_template_owned("chat", source.unwrap_or(CHATML).to_string())
            .map_err(|e| ServeError::Model(format!("the model's chat template does not compile: {e}")))?;
        Ok(Self { env, bos: bos.to_string(), eos: eos.to_string() })
    }

    /// The prompt for `messages`, ending with the assistant's turn opened.
    pub fn render(&self, messages: &[ChatMessage]) -> Result<String, ServeError> {
        let tmpl = self.env.get_template("chat").map_err(|e| ServeError::Internal(e.to_string()))?;
        tmpl.render(context! {
            messages => messages,
            add_generation_prompt => true,
            bos_token => self.bos.as_str(),
            eos_token => self.eos.as_str(),
        })
        .map_err(|e| ServeError::BadRequest { field: "messages".into(), message: format!("the chat template rejected the messages: {e}") })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chatml_fallback() {
        let t = ChatTemplate::new(None, "", "").unwrap();
        let out = t.render(&[ChatMessage { role: "user".into(), content: "Hi".into() }]).unwrap();
        assert_eq!(out, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    }

    #[test]
    fn raise_exception_is_a_bad_request() {
        let t = ChatTemplate::new(Some("{{ raise_exception('roles must alternate') }}"), "", "").unwrap();
        let err = t.render(&[]).unwrap_err();
        assert!(err.to_string().contains("roles must alternate"), "{err}");
    }

    #[test]
    fn python_string_methods_work() {
        let t = ChatTemplate::new(Some("{{ messages[0]['content'].strip() }}"), "", "").unwrap();
        let out = t.render(&[ChatMessage { role: "user".into(), content: "  x ".into() }]).unwrap();
        assert_eq!(out, "x");
    }
}
