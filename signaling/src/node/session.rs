//! A device's session: its connection, if any, and the server messages it has not
//! acknowledged, kept for replay when it resumes.

use std::collections::VecDeque;
use std::time::Instant;

use super::{ConnOut, ConnTx};
use crate::call::{DeviceId, Millis};
use crate::protocol::{ServerBody, ServerMessage, VERSION};

pub(super) struct Queued {
    pub(super) seq: u64,
    pub(super) origin: Millis,
    pub(super) body: ServerBody,
}

pub(super) struct Session {
    pub(super) device: DeviceId,
    pub(super) resume_token: String,
    pub(super) conn: Option<(u64, ConnTx)>,
    pub(super) next_seq: u64,
    /// Sent but not acknowledged, replayed on resume; oldest dropped past the cap.
    pub(super) queue: VecDeque<Queued>,
    pub(super) last_client_seq: u64,
    pub(super) recent_ids: VecDeque<String>,
    pub(super) detached_at: Option<Instant>,
    pub(super) region: Option<String>,
}

impl Session {
    pub(super) fn encode(seq: u64, body: &ServerBody) -> String {
        let msg = ServerMessage {
            v: VERSION,
            seq,
            body: body.clone(),
        };
        // Our own enums of strings and numbers always serialize.
        serde_json::to_string(&msg).expect("server messages serialize")
    }

    /// Write to the live connection; a full or closed channel detaches it (the client
    /// resumes and gets the queue replayed).
    pub(super) fn write(&mut self, text: String) {
        if let Some((_, tx)) = &self.conn {
            if tx.try_send(ConnOut::Text(text)).is_err() {
                self.conn = None;
                self.detached_at = Some(Instant::now());
            }
        }
    }

    pub(super) fn transmit(&mut self, q_index: usize, now: Millis) {
        let Some(q) = self.queue.get(q_index) else {
            return;
        };
        let mut body = q.body.clone();
        body.set_age(now.saturating_sub(q.origin));
        let text = Self::encode(q.seq, &body);
        self.write(text);
    }

    pub(super) fn push(&mut self, body: ServerBody, origin: Millis, now: Millis, cap: usize) {
        self.next_seq += 1;
        self.queue.push_back(Queued {
            seq: self.next_seq,
            origin,
            body,
        });
        while self.queue.len() > cap.max(1) {
            self.queue.pop_front();
        }
        self.transmit(self.queue.len() - 1, now);
    }
}
