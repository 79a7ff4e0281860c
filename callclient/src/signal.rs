//! A signaling client: dev login over HTTP, then one WebSocket session that speaks the
//! JSON protocol of `docs/signaling.md` with the message types of `turnpike_signaling`.

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use turnpike_signaling::protocol::{ClientBody, IceServer, ServerBody, ServerMessage, VERSION};

/// Why talking to the signaling service failed.
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    #[error("signal URL must start with ws:// or wss://: {0}")]
    BadUrl(String),
    #[error("dev login failed: {0}")]
    Login(#[from] reqwest::Error),
    #[error("WebSocket: {0}")]
    Ws(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("the server closed the connection")]
    Closed,
    #[error("cannot encode or decode a message: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the server refused: {code}: {reason}")]
    Refused { code: String, reason: String },
    #[error("unexpected message before hello_ok: {0}")]
    Unexpected(String),
}

/// What `hello_ok` told us that a call needs.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: String,
    pub device: String,
    /// Relay (TURN) servers with short-lived credentials, best first.
    pub ice_servers: Vec<IceServer>,
}

/// `POST {http base}/v1/dev/login`: a token for any user, when the server has dev login on.
pub async fn dev_login(signal: &str, user: &str, device: &str) -> Result<String, SignalError> {
    #[derive(serde::Deserialize)]
    struct LoginReply {
        token: String,
    }
    let url = format!("{}/v1/dev/login", http_base(signal)?);
    let reply: LoginReply = reqwest::Client::new()
        .post(url)
        .json(&serde_json::json!({ "user": user, "device": device }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(reply.token)
}

/// `ws://host:port[/...]` → `http://host:port` (the HTTP routes live on the same listener).
fn http_base(signal: &str) -> Result<String, SignalError> {
    let (secure, host) = split_url(signal)?;
    Ok(format!(
        "{}://{host}",
        if secure { "https" } else { "http" }
    ))
}

/// `ws://host:port[/...]` → `ws://host:port/v1/signal`.
fn signal_url(signal: &str) -> Result<String, SignalError> {
    let (secure, host) = split_url(signal)?;
    Ok(format!(
        "{}://{host}/v1/signal",
        if secure { "wss" } else { "ws" }
    ))
}

/// (TLS?, host[:port]) of a `ws://` or `wss://` URL; any path is ignored.
fn split_url(signal: &str) -> Result<(bool, &str), SignalError> {
    let (secure, rest) = if let Some(rest) = signal.strip_prefix("ws://") {
        (false, rest)
    } else if let Some(rest) = signal.strip_prefix("wss://") {
        (true, rest)
    } else {
        return Err(SignalError::BadUrl(signal.to_owned()));
    };
    match rest.split('/').next() {
        Some(host) if !host.is_empty() => Ok((secure, host)),
        _ => Err(SignalError::BadUrl(signal.to_owned())),
    }
}

/// Envelope of a client message (`ClientMessage` only deserializes; this is its writer).
#[derive(Serialize)]
struct Outgoing<'a> {
    v: u32,
    id: String,
    #[serde(flatten)]
    body: &'a ClientBody,
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One signed-in signaling session.
pub struct SignalClient {
    ws: Ws,
    next_id: u64,
    /// Highest server `seq` received, and the one last acknowledged: the server keeps
    /// unacknowledged messages for a resume, so a long session should `ack` now and then.
    last_seq: u64,
    acked_seq: u64,
}

impl SignalClient {
    /// Open `{signal}/v1/signal`, send `hello` with `token`, wait for `hello_ok`.
    /// `watch` names users whose presence the server should push.
    pub async fn connect(
        signal: &str,
        token: &str,
        watch: Vec<String>,
    ) -> Result<(SignalClient, Session), SignalError> {
        let (ws, _) = tokio_tungstenite::connect_async(signal_url(signal)?).await?;
        let mut client = SignalClient {
            ws,
            next_id: 1,
            last_seq: 0,
            acked_seq: 0,
        };
        client
            .send(&ClientBody::Hello {
                token: Some(token.to_owned()),
                resume_token: None,
                last_seq: None,
                region: None,
                watch,
            })
            .await?;
        match client.recv().await? {
            ServerBody::HelloOk {
                user,
                device,
                ice_servers,
                ..
            } => Ok((
                client,
                Session {
                    user,
                    device,
                    ice_servers,
                },
            )),
            other => Err(SignalError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Send one message (a fresh `id` each time).
    pub async fn send(&mut self, body: &ClientBody) -> Result<(), SignalError> {
        let id = format!("m{}", self.next_id);
        self.next_id += 1;
        let text = serde_json::to_string(&Outgoing {
            v: VERSION,
            id,
            body,
        })?;
        self.ws.send(Message::text(text)).await?;
        Ok(())
    }

    /// The next server message. An `error` message becomes `SignalError::Refused`.
    /// Cancel-safe (it awaits only the stream's `next`), so it can sit in `select!`.
    pub async fn recv(&mut self) -> Result<ServerBody, SignalError> {
        loop {
            let frame = self.ws.next().await.ok_or(SignalError::Closed)??;
            let text = match frame {
                Message::Text(text) => text,
                Message::Close(_) => return Err(SignalError::Closed),
                // tungstenite answers pings itself; binary frames are not in the protocol.
                _ => continue,
            };
            let message: ServerMessage = serde_json::from_str(text.as_str())?;
            self.last_seq = self.last_seq.max(message.seq);
            if let ServerBody::Error { code, reason, .. } = message.body {
                let code = serde_json::to_value(code)?
                    .as_str()
                    .unwrap_or("unknown")
                    .to_owned();
                return Err(SignalError::Refused { code, reason });
            }
            return Ok(message.body);
        }
    }

    /// Acknowledge everything received so far, if there is anything new (docs: "ack
    /// regularly"; the server forgets acknowledged messages).
    pub async fn ack(&mut self) -> Result<(), SignalError> {
        if self.last_seq > self.acked_seq {
            self.acked_seq = self.last_seq;
            self.send(&ClientBody::Ack {
                last_seq: self.last_seq,
            })
            .await?;
        }
        Ok(())
    }

    /// Close the WebSocket politely.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_base_keeps_host_and_port_and_drops_the_path() {
        assert_eq!(
            http_base("ws://127.0.0.1:8080").expect("valid"),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            http_base("wss://sig.example.com/v1/signal").expect("valid"),
            "https://sig.example.com"
        );
        assert_eq!(
            signal_url("ws://127.0.0.1:8080/").expect("valid"),
            "ws://127.0.0.1:8080/v1/signal"
        );
        assert!(matches!(http_base("http://x"), Err(SignalError::BadUrl(_))));
        assert!(matches!(http_base("ws:///x"), Err(SignalError::BadUrl(_))));
    }
}
