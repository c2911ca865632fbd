//! The text a chat or completions request carries, read straight from the body.
//!
//! The gateway reads every generation request before it forwards it; building a
//! `serde_json::Value` tree for that costs an allocation per key and per string.
//! These types borrow the texts from the body instead and skip everything else.
//! They are lenient on purpose: a field of an unexpected type reads as empty
//! (the model server is the one to refuse it), so only malformed JSON fails.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// The texts of a request body: `messages` (chat) or `prompt` (completions).
#[derive(Debug, Default, Deserialize)]
pub struct RequestText<'a> {
    #[serde(borrow, default)]
    pub messages: Option<Messages<'a>>,
    #[serde(borrow, default)]
    pub prompt: Option<Prompt<'a>>,
}

impl RequestText<'_> {
    /// The text of the last user turn, or of a single-string prompt, when it is
    /// one piece: what a caller who repeats themselves repeats.
    pub fn last_user_text(&self) -> Option<&str> {
        let texts = match (&self.messages, &self.prompt) {
            (Some(Messages(Some(messages))), _) => {
                &messages.iter().rev().find(|m| m.role.as_deref() == Some("user"))?.content
            }
            (_, Some(prompt)) => &prompt.0,
            _ => return None,
        };
        match &texts[..] {
            [only] => Some(only),
            _ => None,
        }
    }
}

/// `messages`: `None` inside when the field is not an array.
#[derive(Debug, Default)]
pub struct Messages<'a>(pub Option<Vec<Message<'a>>>);

/// One chat message: its role and the texts of its content (the string, or
/// each part's `text`).
#[derive(Debug, Default)]
pub struct Message<'a> {
    pub role: Option<Cow<'a, str>>,
    pub content: Vec<Cow<'a, str>>,
}

/// `prompt`: the string, or the strings of an array.
#[derive(Debug, Default)]
pub struct Prompt<'a>(pub Vec<Cow<'a, str>>);

/// A string value; any other value reads as `None`.
#[derive(Default)]
struct MaybeStr<'a>(Option<Cow<'a, str>>);

/// A content part's `text`, when the part is an object with a string there.
#[derive(Default)]
struct Part<'a>(Option<Cow<'a, str>>);

/// A message's `content`: a string, or an array of parts.
#[derive(Default)]
struct Content<'a>(Vec<Cow<'a, str>>);

/// The object keys read here, matched without copying the key.
#[derive(PartialEq)]
enum Key {
    Role,
    Content,
    Text,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_str<E>(self, key: &str) -> Result<Key, E> {
                Ok(match key {
                    "role" => Key::Role,
                    "content" => Key::Content,
                    "text" => Key::Text,
                    _ => Key::Other,
                })
            }
        }
        d.deserialize_str(V)
    }
}

/// Visitor methods that read a value of an unexpected kind as the default.
macro_rules! skip {
    (str) => {
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
    };
    (seq) => {
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(Default::default())
        }
    };
    (map) => {
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(Default::default())
        }
    };
}

/// A lenient `Deserialize` for `$ty` through `deserialize_any`: the methods
/// given handle the kinds it reads, `skip` the listed kinds, and scalars are
/// always the default.
macro_rules! lenient {
    ($ty:ident, skip($($kind:ident),*), { $($methods:tt)* }) => {
        impl<'de: 'a, 'a> Deserialize<'de> for $ty<'a> {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V<'a>(PhantomData<&'a ()>);
                impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
                    type Value = $ty<'a>;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str("any JSON value")
                    }
                    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                        Ok(Default::default())
                    }
                    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                        Ok(Default::default())
                    }
                    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                        Ok(Default::default())
                    }
                    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                        Ok(Default::default())
                    }
                    fn visit_unit<E>(self) -> Result<Self::Value, E> {
                        Ok(Default::default())
                    }
                    $(skip!($kind);)*
                    $($methods)*
                }
                d.deserialize_any(V(PhantomData))
            }
        }
    };
}

/// Visitor methods that read a string as `$make(Cow)`, borrowed when it can be.
macro_rules! strings {
    ($make:expr) => {
        fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
            Ok($make(Cow::Borrowed(s)))
        }
        fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
            Ok($make(Cow::Owned(s.to_owned())))
        }
        fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
            Ok($make(Cow::Owned(s)))
        }
    };
}

lenient!(MaybeStr, skip(seq, map), {
    strings!(|s| MaybeStr(Some(s)));
});

lenient!(Part, skip(str, seq), {
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut text = None;
        while let Some(key) = map.next_key::<Key>()? {
            if key == Key::Text {
                text = map.next_value::<MaybeStr>()?.0;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(Part(text))
    }
});

lenient!(Content, skip(map), {
    strings!(|s| Content(vec![s]));
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut texts = Vec::new();
        while let Some(part) = seq.next_element::<Part>()? {
            texts.extend(part.0);
        }
        Ok(Content(texts))
    }
});

lenient!(Message, skip(str, seq), {
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut message = Message::default();
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Role => message.role = map.next_value::<MaybeStr>()?.0,
                Key::Content => message.content = map.next_value::<Content>()?.0,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(message)
    }
});

lenient!(Messages, skip(str, map), {
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut messages = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(message) = seq.next_element()? {
            messages.push(message);
        }
        Ok(Messages(Some(messages)))
    }
});

lenient!(Prompt, skip(map), {
    strings!(|s| Prompt(vec![s]));
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut texts = Vec::new();
        while let Some(item) = seq.next_element::<MaybeStr>()? {
            texts.extend(item.0);
        }
        Ok(Prompt(texts))
    }
});

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A request's messages (role, contents) and its prompt strings, owned.
    type Texts = (Vec<(Option<String>, Vec<String>)>, Option<Vec<String>>);

    fn texts(body: &str) -> Texts {
        let text: RequestText = serde_json::from_str(body).expect("valid JSON reads");
        let owned = |v: &[Cow<str>]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let messages = text
            .messages
            .and_then(|m| m.0)
            .unwrap_or_default()
            .iter()
            .map(|m| (m.role.as_deref().map(str::to_owned), owned(&m.content)))
            .collect();
        (messages, text.prompt.map(|p| owned(&p.0)))
    }

    #[test]
    fn reads_string_and_part_contents_and_skips_the_rest() {
        let body = json!({
            "model": "m", "temperature": 0.2, "tools": [{"type": "function", "function": {"name": "f"}}],
            "messages": [
                {"role": "system", "content": "be \"nice\"", "name": "ops"},
                {"role": "user", "content": [{"type": "text", "text": "hello"}, {"type": "image_url", "image_url": {"url": "x"}}, {"text": "again"}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "1"}]},
            ]
        });
        let (messages, prompt) = texts(&body.to_string());
        assert_eq!(
            messages,
            vec![
                (Some("system".into()), vec!["be \"nice\"".into()]),
                (Some("user".into()), vec!["hello".into(), "again".into()]),
                (Some("assistant".into()), vec![]),
            ]
        );
        assert_eq!(prompt, None);
    }

    #[test]
    fn values_of_unexpected_types_read_as_empty() {
        for body in [
            r#"{"messages": 3}"#,
            r#"{"messages": {"role": "user"}}"#,
            r#"{"messages": "hi"}"#,
            r#"{"messages": [1, "x", [2], {"role": 5, "content": {"text": "no"}}]}"#,
            r#"{"messages": [{"role": "user", "content": [3, "loose", {"text": 4}, null]}]}"#,
            r#"{"prompt": {"text": "no"}}"#,
            r#"{"prompt": [1, null, {"a": "b"}]}"#,
        ] {
            let (messages, prompt) = texts(body);
            assert!(messages.iter().all(|(_, c)| c.is_empty()), "{body}: {messages:?}");
            assert!(prompt.unwrap_or_default().is_empty(), "{body}");
        }
        assert!(serde_json::from_str::<RequestText>(r#"{"messages": [}"#).is_err(), "malformed JSON still fails");
    }

    #[test]
    fn prompts_read_as_one_string_or_the_strings_of_an_array() {
        assert_eq!(texts(r#"{"prompt": "once"}"#).1, Some(vec!["once".into()]));
        assert_eq!(texts(r#"{"prompt": ["a", 1, "b"]}"#).1, Some(vec!["a".into(), "b".into()]));
    }

    #[test]
    fn escaped_strings_are_decoded() {
        let (messages, _) = texts(r#"{"messages": [{"role": "user", "content": "line\nnext \u00e9"}]}"#);
        assert_eq!(messages[0].1, vec!["line\nnext é".to_owned()]);
    }

    #[test]
    fn a_string_the_reader_skips_is_not_checked_for_utf8() {
        // Found by the `request_body` fuzz target (fuzz/regressions/): serde_json checks
        // UTF-8 only in the strings it reads, so a body that is not UTF-8, hence not JSON,
        // reads when the bad bytes sit in a member the guard skips.
        // FIXME: the proxy then forwards that body as it came; refuse it as invalid JSON
        // if a model server could read those bytes otherwise.
        let body = b"{\"model\":\"m\",\"rrompt\":\"once upon Ka \xf4ime\",\"max_tokens\":2}";
        assert!(serde_json::from_slice::<serde_json::Value>(body).is_err());
        let text = serde_json::from_slice::<RequestText>(body).expect("reads today");
        assert!(text.messages.is_none() && text.prompt.is_none());
        let read = b"{\"prompt\": \"once upon Ka \xf4ime\"}";
        assert!(serde_json::from_slice::<RequestText>(read).is_err(), "a string it reads must be UTF-8");
    }

    #[test]
    fn a_lone_surrogate_escape_in_a_skipped_string_reads() {
        // Found by the fuzz target too: serde_json checks a `\u` escape's surrogate pair
        // only in the strings it decodes. The texts the guard scores are decoded, so they
        // cannot hide one; what a skipped member carries is the model server's to refuse.
        for body in [&br#"{"prurompt":["a",1,"b\udddd00a9\n"],"s":null}"#[..], br#"{"x":"\ud800"}"#] {
            assert!(serde_json::from_slice::<serde_json::Value>(body).is_err());
            assert!(serde_json::from_slice::<RequestText>(body).is_ok());
        }
        let read = br#"{"prompt": "b\udddd00a9"}"#;
        assert!(serde_json::from_slice::<RequestText>(read).is_err(), "a string it reads is decoded whole");
    }

    #[test]
    fn a_number_beyond_f64_in_a_skipped_member_reads() {
        // Also found by the fuzz target: valid JSON that a `serde_json::Value` refuses.
        let body = br#"{"mpt":6666666666666666e6666666}"#;
        assert!(serde_json::from_slice::<serde_json::Value>(body).is_err());
        assert!(serde_json::from_slice::<RequestText>(body).is_ok());
    }

    #[test]
    fn the_last_user_text_is_what_repeats() {
        let read = |body: &str| {
            let text: RequestText = serde_json::from_str(body).unwrap();
            text.last_user_text().map(str::to_owned)
        };
        let chat = r#"{"messages": [{"role": "user", "content": "first"}, {"role": "user", "content": "second"}, {"role": "assistant", "content": "ok"}]}"#;
        assert_eq!(read(chat).as_deref(), Some("second"));
        assert_eq!(read(r#"{"prompt": "p"}"#).as_deref(), Some("p"));
        assert_eq!(read(r#"{"prompt": ["p", "q"]}"#), None);
        assert_eq!(read(r#"{"messages": [{"role": "system", "content": "s"}]}"#), None);
        assert_eq!(read(r#"{}"#), None);
    }
}
