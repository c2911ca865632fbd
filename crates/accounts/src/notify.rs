//! Delivery of one-time codes to a phone or an inbox.
//!
//! The default, [`Notifier::Outbox`], appends each message to a local JSON-lines
//! file (mode 0600, one whole line per write) for development and demos: it records
//! the user id, the channel, a masked destination and the text, never the full phone
//! number or address.
//! [`Notifier::Webhook`] POSTs each message to an operator's endpoint, which
//! hands it to a real SMS or e-mail provider:
//!
//! ```text
//! POST <url>
//! content-type: application/json
//! x-palisade-signature: sha256=<hex HMAC-SHA256 of the body under the webhook secret>
//!
//! {"channel":"sms","to":"+8613812345678","text":"Your Palisade code is 123456","user_id":42}
//! ```
//!
//! Any 2xx answer within five seconds counts as delivered.
//!
//! [`Notifier::smtp`] sends e-mail codes over SMTP (`lettre` on rustls:
//! `smtp://host:587?tls=required` for STARTTLS, `smtps://host:465` for TLS from the start,
//! credentials in the URL) and hands every other message (text messages) to the notifier it
//! wraps. The relay's certificate is checked against the public (Mozilla) roots, plus the
//! operator's own CA when [`SmtpRelay::ca_pem`] is given.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::Serialize;
use sha2::Sha256;

/// How a message travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Sms,
    Email,
}

/// One message to deliver. `to` is plain personal data: it must not be logged.
#[derive(Clone, Serialize)]
pub struct Message {
    pub channel: Channel,
    pub to: String,
    pub text: String,
    pub user_id: i64,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("channel", &self.channel)
            .field("to", &mask(&self.to))
            .field("user_id", &self.user_id)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("cannot write the outbox file: {0}")]
    Outbox(#[from] std::io::Error),
    #[error("the notification webhook failed: {0}")]
    Webhook(String),
    /// Never carries the SMTP URL (it may hold a password) nor the address.
    #[error("sending the e-mail failed: {0}")]
    Smtp(String),
    /// The SMTP settings cannot be used; names the `[notify]` field, never the URL.
    #[error("notify.{field}: {reason}")]
    SmtpSettings { field: &'static str, reason: String },
}

/// The SMTP server that e-mail codes go through.
#[derive(Clone, Copy)]
pub struct SmtpRelay<'a> {
    /// `smtp://` (plain, or STARTTLS with `?tls=required`) or `smtps://`. May hold a
    /// password: never logged nor repeated in an error.
    pub url: &'a str,
    /// The sender, `Name <address>`.
    pub from: &'a str,
    /// PEM certificates of a private CA that issued the relay's certificate, trusted on
    /// top of the public roots; only meaningful with TLS.
    pub ca_pem: Option<&'a [u8]>,
}

/// Where codes go.
pub enum Notifier {
    Outbox {
        path: PathBuf,
    },
    Webhook {
        url: http::Uri,
        secret: Vec<u8>,
        client: Client<HttpConnector, Full<Bytes>>,
    },
    /// E-mail over SMTP; anything else to `others`.
    Smtp {
        transport: AsyncSmtpTransport<Tokio1Executor>,
        from: Mailbox,
        others: Box<Notifier>,
    },
}

impl Notifier {
    pub fn outbox(path: PathBuf) -> Notifier {
        Notifier::Outbox { path }
    }

    pub fn webhook(url: &str, secret: &[u8]) -> Result<Notifier, NotifyError> {
        let url: http::Uri = url.parse().map_err(|e| NotifyError::Webhook(format!("bad URL: {e}")))?;
        if url.scheme_str() != Some("http") {
            return Err(NotifyError::Webhook("only http:// webhook URLs are supported".into()));
        }
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Notifier::Webhook { url, secret: secret.to_vec(), client })
    }

    /// E-mail through `relay` (see the module notes); every other message to `others`.
    /// Fails, naming the field, on a URL lettre cannot use, a bad sender, or a CA file
    /// that holds no valid certificate or is given for a URL without TLS.
    pub fn smtp(relay: SmtpRelay<'_>, others: Notifier) -> Result<Notifier, NotifyError> {
        let setting = |field, reason: &str| NotifyError::SmtpSettings { field, reason: reason.to_owned() };
        // lettre's own error could repeat the URL, and with it a password: say only what.
        let bad_url = || setting("smtp_url", "is not a valid smtp:// or smtps:// URL");
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(relay.url).map_err(|_| bad_url())?;
        if let Some(pem) = relay.ca_pem {
            builder = builder.tls(tls_with_ca(relay.url, pem)?);
        }
        let transport = builder.timeout(Some(Duration::from_secs(10))).build();
        let from =
            relay.from.parse().map_err(|e: lettre::address::AddressError| setting("smtp_from", &e.to_string()))?;
        Ok(Notifier::Smtp { transport, from, others: Box::new(others) })
    }

    pub fn send<'a>(
        &'a self,
        message: &'a Message,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), NotifyError>> + Send + 'a>> {
        Box::pin(self.deliver(message))
    }

    async fn deliver(&self, message: &Message) -> Result<(), NotifyError> {
        match self {
            Notifier::Smtp { others, .. } if message.channel != Channel::Email => others.send(message).await,
            Notifier::Smtp { transport, from, .. } => {
                let to: Mailbox =
                    message.to.parse().map_err(|_| NotifyError::Smtp("the address is not valid".into()))?;
                let email = lettre::Message::builder()
                    .from(from.clone())
                    .to(to)
                    .subject(subject(&message.text))
                    .header(ContentType::TEXT_PLAIN)
                    .body(message.text.clone())
                    .map_err(|e| NotifyError::Smtp(e.to_string()))?;
                transport.send(email).await.map(drop).map_err(|e| {
                    // The server's refusal (its reply code only: its text may quote the
                    // address), or the connection's failure with its cause (an I/O or TLS
                    // error, e.g. an untrusted certificate; never the URL).
                    let why = if e.is_permanent() || e.is_transient() {
                        e.status().map_or_else(|| "refused".to_owned(), |c| format!("refused with {c}"))
                    } else if e.is_timeout() {
                        "timed out".to_owned()
                    } else if e.is_response() || e.is_client() {
                        "the exchange with the server failed".to_owned()
                    } else if let Some(cause) = std::error::Error::source(&e) {
                        format!("could not reach the server or set up TLS with it: {cause}")
                    } else {
                        "could not reach the server".to_owned()
                    };
                    NotifyError::Smtp(why)
                })
            }
            Notifier::Outbox { path } => {
                let line = serde_json::json!({
                    "at": crate::unix_millis(),
                    "user_id": message.user_id,
                    "channel": message.channel,
                    "to": mask(&message.to),
                    "text": message.text,
                });
                let mut bytes = line.to_string().into_bytes();
                bytes.push(b'\n');
                let path = path.clone();
                tokio::task::spawn_blocking(move || append_line(&path, &bytes))
                    .await
                    .map_err(|e| NotifyError::Outbox(std::io::Error::other(e)))??;
                Ok(())
            }
            Notifier::Webhook { url, secret, client } => {
                let body = serde_json::to_vec(message).map_err(|e| NotifyError::Webhook(e.to_string()))?;
                let mut mac =
                    Hmac::<Sha256>::new_from_slice(secret).map_err(|e| NotifyError::Webhook(e.to_string()))?;
                mac.update(&body);
                let signature = format!("sha256={}", hex(&mac.finalize().into_bytes()));
                let request = http::Request::post(url.clone())
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .header("x-palisade-signature", signature)
                    .body(Full::new(Bytes::from(body)))
                    .map_err(|e| NotifyError::Webhook(e.to_string()))?;
                match tokio::time::timeout(Duration::from_secs(5), client.request(request)).await {
                    Ok(Ok(response)) if response.status().is_success() => Ok(()),
                    Ok(Ok(response)) => Err(NotifyError::Webhook(format!("answered {}", response.status()))),
                    Ok(Err(e)) => Err(NotifyError::Webhook(e.to_string())),
                    Err(_) => Err(NotifyError::Webhook("no answer within 5s".into())),
                }
            }
        }
    }
}

/// The TLS mode `url` asks for (as lettre's `from_url` reads it), with the CA in `pem`
/// trusted besides the public roots.
fn tls_with_ca(url: &str, pem: &[u8]) -> Result<Tls, NotifyError> {
    let setting = |field, reason: &str| NotifyError::SmtpSettings { field, reason: reason.to_owned() };
    // `from_url` accepted it already; this parse only reads the host and the TLS mode.
    let url = url::Url::parse(url).map_err(|_| setting("smtp_url", "is not a valid URL"))?;
    let host = url.host_str().ok_or_else(|| setting("smtp_url", "names no host"))?;
    let mode = url.query_pairs().find(|(k, _)| k == "tls").map(|(_, v)| v.into_owned());
    let wrap: fn(TlsParameters) -> Tls = match (url.scheme(), mode.as_deref()) {
        ("smtps", _) => Tls::Wrapper,
        ("smtp", Some("required")) => Tls::Required,
        ("smtp", Some("opportunistic")) => Tls::Opportunistic,
        _ => {
            return Err(setting(
                "smtp_ca_file",
                "is only used with TLS: give smtp_url as smtp://…?tls=required (STARTTLS) or smtps://…",
            ));
        }
    };
    let unreadable = || setting("smtp_ca_file", "is not a readable PEM file");
    let ders = CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>().map_err(|_| unreadable())?;
    if ders.is_empty() {
        return Err(setting("smtp_ca_file", "holds no certificate (-----BEGIN CERTIFICATE-----)"));
    }
    let mut parameters = TlsParameters::builder(host.to_owned());
    for der in ders {
        parameters = parameters.add_root_certificate(Certificate::from_der(der.to_vec()).map_err(|_| unreadable())?);
    }
    // rustls reads each certificate here: one that is not X.509 fails now, not at the first send.
    let parameters =
        parameters.build().map_err(|_| setting("smtp_ca_file", "holds a certificate that cannot be read as a CA"))?;
    Ok(wrap(parameters))
}

/// The subject of a message: its first sentence, short.
fn subject(text: &str) -> String {
    let first = text.split(['.', '\n']).next().unwrap_or(text).trim();
    first.chars().take(78).collect()
}

/// Append one whole line to the outbox in a single `write` on a file opened with
/// `O_APPEND`: the kernel puts each write at the end of the file as one piece, so lines
/// from concurrent senders (or several processes sharing the file) never interleave.
/// (Formatting straight into the file would issue one `write` per JSON token.) A new
/// file is created readable by its owner only: it holds one-time codes.
fn append_line(path: &Path, line: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    let written = file.write(line)?;
    if written < line.len() {
        // A regular file takes a whole write unless the disk is full; never finish
        // the line with a second write that another sender could cut into.
        return Err(std::io::Error::new(std::io::ErrorKind::WriteZero, "the outbox line was cut short"));
    }
    Ok(())
}

/// `+8613812345678` → `+86*******5678`; `alice@example.com` → `a****@example.com`.
pub fn mask(destination: &str) -> String {
    if let Some((local, domain)) = destination.split_once('@') {
        let first: String = local.chars().take(1).collect();
        return format!("{first}****@{domain}");
    }
    let chars: Vec<char> = destination.chars().collect();
    let keep_start = 3.min(chars.len());
    let keep_end = 4.min(chars.len().saturating_sub(keep_start));
    let hidden = chars.len() - keep_start - keep_end;
    let mut out: String = chars[..keep_start].iter().collect();
    out.extend(std::iter::repeat_n('*', hidden));
    out.extend(&chars[chars.len() - keep_end..]);
    out
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 0xf) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_hide_most_of_the_destination() {
        assert_eq!(mask("+8613812345678"), "+86*******5678");
        assert_eq!(mask("alice@example.com"), "a****@example.com");
        assert_eq!(mask("12"), "12");
        let debug = format!(
            "{:?}",
            Message { channel: Channel::Sms, to: "+8613812345678".into(), text: "x".into(), user_id: 1 }
        );
        assert!(!debug.contains("13812345678"), "{debug}");
    }

    /// Many sign-ups at once: every line of the outbox is one whole message.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_messages_never_interleave_in_the_outbox() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.jsonl");
        let notifier = std::sync::Arc::new(Notifier::outbox(path.clone()));
        let (writers, each) = (32, 25);
        let mut tasks = Vec::new();
        for w in 0..writers {
            let notifier = notifier.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..each {
                    // Long enough that a line written in pieces would be cut by another.
                    let text = format!("Your Palisade code is {w:03}{i:03} {}", "x".repeat(2000));
                    let message = Message { channel: Channel::Sms, to: "+8613812345678".into(), text, user_id: w };
                    notifier.send(&message).await.unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let written = std::fs::read_to_string(&path).unwrap();
        let mut seen = std::collections::HashSet::new();
        for line in written.lines() {
            let value: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("unreadable line ({e}): {line:.120}"));
            assert!(seen.insert(value["text"].as_str().unwrap()[..28].to_owned()));
        }
        assert_eq!(seen.len(), (writers * each) as usize);
    }

    fn smtp_settings_error(url: &str, ca_pem: Option<&[u8]>) -> String {
        let relay = SmtpRelay { url, from: "Palisade <no-reply@example.com>", ca_pem };
        match Notifier::smtp(relay, Notifier::outbox(PathBuf::from("unused"))) {
            Ok(_) => panic!("accepted {url} with {ca_pem:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn unusable_smtp_settings_name_their_field_and_never_the_password() {
        let why = smtp_settings_error("smtp://palisade:hunter2@/?tls=bogus", None);
        assert!(why.starts_with("notify.smtp_url: "), "{why}");
        assert!(!why.contains("hunter2"), "{why}");

        let url = "smtp://palisade:hunter2@mail.example.com:587?tls=required";
        let no_certificate = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        let why = smtp_settings_error(url, Some(no_certificate));
        assert_eq!(why, "notify.smtp_ca_file: holds no certificate (-----BEGIN CERTIFICATE-----)");
        let why = smtp_settings_error(url, Some(b"not PEM at all"));
        assert!(why.starts_with("notify.smtp_ca_file: holds no certificate"), "{why}");
        // Well-formed PEM whose contents are not X.509: refused at start, not at the first send.
        let not_x509 = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let why = smtp_settings_error(url, Some(not_x509));
        assert_eq!(why, "notify.smtp_ca_file: holds a certificate that cannot be read as a CA");
        let broken_pem = b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        let why = smtp_settings_error(url, Some(broken_pem));
        assert_eq!(why, "notify.smtp_ca_file: is not a readable PEM file");
    }

    #[test]
    fn a_private_ca_needs_a_url_with_tls() {
        // Checked before the certificate is read: the mode is the mistake to report.
        for url in ["smtp://mail.example.com:25", "smtp://palisade:hunter2@mail.example.com"] {
            let why = smtp_settings_error(url, Some(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"));
            assert!(why.starts_with("notify.smtp_ca_file: is only used with TLS"), "{url}: {why}");
            assert!(!why.contains("hunter2"), "{why}");
        }
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn the_outbox_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.jsonl");
        let message = Message { channel: Channel::Email, to: "a@example.com".into(), text: "hi".into(), user_id: 1 };
        Notifier::outbox(path.clone()).send(&message).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
}
