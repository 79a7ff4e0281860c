//! Push: when a callee has no device online, POST the incoming call to the app's webhook,
//! which wakes the callee's phone (APNs/FCM are the app backend's business, not ours).

use std::time::Duration;

use serde::Serialize;

/// The JSON body of the webhook POST.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IncomingCall {
    /// Always `"incoming_call"`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub call_id: String,
    /// The callee, whose devices should be woken.
    pub user: String,
    pub from: String,
    /// Unix ms by which the call must be answered.
    pub expires_at: u64,
}

/// Posts to one webhook URL.
#[derive(Clone)]
pub struct Pusher {
    client: reqwest::Client,
    url: String,
}

/// A webhook that hangs must not pile up tasks.
const TIMEOUT: Duration = Duration::from_secs(5);

impl Pusher {
    pub fn new(url: String) -> Pusher {
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .build()
            .unwrap_or_else(|e| {
                tracing::warn!("push client with defaults ({e})");
                reqwest::Client::new()
            });
        Pusher { client, url }
    }

    /// POST `call` in the background; failures are logged, never retried (the caller
    /// still rings until the invite expires, and the missed call is stored).
    pub fn notify(&self, call: IncomingCall) {
        let (client, url) = (self.client.clone(), self.url.clone());
        tokio::spawn(async move {
            match client.post(&url).json(&call).send().await {
                Ok(r) if r.status().is_success() => {
                    tracing::debug!(call_id = %call.call_id, "push sent")
                }
                Ok(r) => tracing::warn!(status = %r.status(), "push webhook refused"),
                Err(e) => tracing::warn!("push webhook failed: {e}"),
            }
        });
    }
}
