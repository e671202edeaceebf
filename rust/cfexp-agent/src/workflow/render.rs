//! Rendering prompts: `{{name}}` placeholders by plain string replacement,
//! and the nonce that defeats the server's prompt cache put in front (its
//! text is [`crate::spec::nonce_text`]).

use crate::workflow::data::PromptTemplate;

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// `system` or `user`.
    pub role: &'static str,
    /// Its text.
    pub content: String,
}

/// Replaces each `{{name}}` (name: ASCII `a-z` and `_`) found in
/// `template` by its value in `vars`, in one pass: inserted values are never
/// scanned again, and a name without a value stays as it is.
pub fn render(template: &str, vars: &[(&str, &str)]) -> String {
    let bytes = template.as_bytes();
    let mut out = String::with_capacity(template.len());
    let (mut copied, mut i) = (0, 0);
    while i + 1 < bytes.len() {
        if bytes[i] == b'{' && bytes[i + 1] == b'{' {
            let start = i + 2;
            let mut end = start;
            while end < bytes.len() && (bytes[end].is_ascii_lowercase() || bytes[end] == b'_') {
                end += 1;
            }
            if end > start && bytes[end..].starts_with(b"}}") {
                let name = &template[start..end];
                if let Some((_, value)) = vars.iter().find(|(n, _)| *n == name) {
                    out.push_str(&template[copied..i]);
                    out.push_str(value);
                    copied = end + 2;
                }
                i = end + 2;
                continue;
            }
        }
        i += 1;
    }
    out.push_str(&template[copied..]);
    out
}

/// A step's messages: system (if any) then user, rendered, with `nonce`
/// (if any) prefixed to the first.
pub fn messages(
    template: &PromptTemplate,
    vars: &[(&str, &str)],
    nonce: Option<&str>,
) -> Vec<Message> {
    let mut msgs = Vec::with_capacity(2);
    if let Some(system) = &template.system {
        msgs.push(Message {
            role: "system",
            content: render(system, vars),
        });
    }
    msgs.push(Message {
        role: "user",
        content: render(&template.user, vars),
    });
    if let Some(nonce) = nonce {
        msgs[0].content.insert_str(0, nonce);
    }
    msgs
}

/// Characters (Unicode scalar values, like Python's `len`) of all messages.
pub fn prompt_chars(messages: &[Message]) -> u64 {
    messages
        .iter()
        .map(|m| m.content.chars().count() as u64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::nonce_text;

    #[test]
    fn renders_placeholders_plainly() {
        assert_eq!(
            render("a {{x}} b {{x}} {{y}} {z}", &[("x", "1"), ("y", "{{x}}")]),
            "a 1 b 1 {{x}} {z}"
        );
        assert_eq!(render("{{missing}}", &[("x", "1")]), "{{missing}}");
    }

    #[test]
    fn nonce_goes_first_in_the_first_message() {
        let t = PromptTemplate {
            system: Some("sys".into()),
            user: "hi {{x}}".into(),
        };
        let nonce = nonce_text("r1", "agent_0", 2);
        let m = messages(&t, &[("x", "é")], Some(&nonce));
        assert_eq!(m[0].content, format!("{nonce}sys"));
        assert_eq!(m[1].content, "hi é");
        assert_eq!(prompt_chars(&m), nonce.chars().count() as u64 + 3 + 4);
        let t = PromptTemplate {
            system: None,
            user: "u".into(),
        };
        assert_eq!(messages(&t, &[], Some("N\n"))[0].content, "N\nu");
    }
}
