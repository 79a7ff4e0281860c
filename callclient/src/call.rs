//! One call, from sign-in to hangup.
//!
//! The SDP goes out complete (non-trickle): each side waits until ICE gathering is done,
//! so its offer or answer already lists its relay candidate, and sends no `ice` messages.
//! Candidates the other side trickles (a browser does) are applied as they come.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::time::{sleep_until, timeout_at};
use turnpike::quic::client::Verify;
use turnpike::quic::tunnel::{self, TunnelOptions};
use turnpike_signaling::protocol::{ClientBody, IceCandidate, IceServer, ServerBody};
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::peer_connection::{RTCIceCandidateInit, RTCPeerConnectionState, RTCSessionDescription};

use crate::media::{Payload, PayloadSource, PCMU_PAYLOAD_TYPE, SAMPLES_PER_PACKET, SILENCE};
use crate::peer::{Peer, PeerEvent};
use crate::report::{Report, Sent};
use crate::signal::{self, Session, SignalClient, SignalError};

/// Which side of the call this client is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Invite this user (waits until they are online).
    Call { to: String },
    /// Wait for an invite and accept it.
    Answer,
}

#[derive(Debug, Clone)]
pub struct CallOptions {
    /// `ws://host:port` of the signaling service.
    pub signal: String,
    pub user: String,
    pub device: String,
    /// A bearer token; `None` = dev login (`POST /v1/dev/login`).
    pub token: Option<String>,
    pub role: Role,
    /// How long to send media once connected.
    pub media_time: Duration,
    pub payload: Payload,
    /// Count received packets whose payload contains this.
    pub expect_marker: Option<Vec<u8>>,
    /// Bound on each wait before media: sign-in, the callee coming online, the invite,
    /// the answer, ICE gathering, ICE + DTLS.
    pub setup_timeout: Duration,
    /// How this client reaches the relay.
    pub relay_transport: RelayTransport,
    /// With QUIC: this long into the media, move the tunnel to a new local socket (a
    /// network change); QUIC migrates it and the call goes on without an ICE restart.
    pub rebind_after: Option<Duration>,
}

/// How the call client reaches its TURN relay.
#[derive(Debug, Clone)]
pub enum RelayTransport {
    /// The `turn:` URLs of `ice_servers`, as any WebRTC client.
    Udp,
    /// The first `quic_urls` entry of `ice_servers` (`masque://host:port`): a CONNECT-UDP
    /// tunnel over QUIC, which webrtc-rs reaches as a TURN server on a local UDP port
    /// (`turnpike tunnel`'s code), checking the relay's certificate as given.
    Quic(Verify),
}

/// A tunnel to the relay for the life of a call.
struct RelayTunnel {
    stop: Arc<AtomicBool>,
    rebind: Arc<AtomicBool>,
    moved: Arc<AtomicU64>,
}

impl Drop for RelayTunnel {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

impl RelayTunnel {
    /// Starts a tunnel to the first QUIC relay of `servers` and returns the ICE server
    /// that points webrtc-rs at it (same credentials).
    fn start(servers: &[IceServer], verify: Verify) -> Result<(RelayTunnel, IceServer), CallError> {
        let (server, url) = servers
            .iter()
            .find_map(|s| s.quic_urls.first().map(|u| (s, u)))
            .ok_or(CallError::NoQuicRelay)?;
        let host_port = url.trim_start_matches("masque://");
        let relay: SocketAddr = std::net::ToSocketAddrs::to_socket_addrs(host_port)
            .ok()
            .and_then(|mut a| a.next())
            .ok_or(CallError::NoQuicRelay)?;
        let server_name = host_port
            .rsplit_once(':')
            .map_or(host_port, |(h, _)| h)
            .trim_matches(|c| c == '[' || c == ']')
            .to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let rebind = Arc::new(AtomicBool::new(false));
        let moved = Arc::new(AtomicU64::new(0));
        let options = TunnelOptions {
            relay,
            server_name,
            verify,
            local: SocketAddr::from(([127, 0, 0, 1], 0)),
            rebind: rebind.clone(),
            moved: moved.clone(),
        };
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread_stop = stop.clone();
        std::thread::Builder::new()
            .name("turnpike-tunnel".into())
            .spawn(move || {
                if let Err(e) = tunnel::run(options, thread_stop, |local| {
                    let _ = ready_tx.send(local);
                }) {
                    tracing::warn!("relay tunnel: {e}");
                }
            })
            .map_err(|_| CallError::NoQuicRelay)?;
        let local = ready_rx
            .recv_timeout(Duration::from_secs(5))
            .map_err(|_| CallError::Timeout("the relay tunnel to start"))?;
        tracing::info!(%relay, %local, "relay over QUIC");
        let via_tunnel = IceServer {
            urls: vec![format!("turn:{local}?transport=udp")],
            quic_urls: Vec::new(),
            ..server.clone()
        };
        Ok((
            RelayTunnel {
                stop,
                rebind,
                moved,
            },
            via_tunnel,
        ))
    }
}

/// Why a call did not complete.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("signaling: {0}")]
    Signal(#[from] SignalError),
    #[error("WebRTC: {0}")]
    WebRtc(#[from] webrtc::error::Error),
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    #[error("the call ended before media: {0}")]
    Ended(String),
    #[error("the peer connection {0}")]
    PeerConnection(RTCPeerConnectionState),
    #[error("the peer connection has no local description")]
    NoLocalDescription,
    #[error("no relay in ice_servers offers TURN over QUIC (quic_urls)")]
    NoQuicRelay,
}

/// Place or answer one call and report on it.
pub async fn run(options: CallOptions) -> Result<Report, CallError> {
    let deadline = Instant::now() + options.setup_timeout;
    let token = match &options.token {
        Some(token) => token.clone(),
        None => {
            within(
                deadline,
                "dev login",
                signal::dev_login(&options.signal, &options.user, &options.device),
            )
            .await??
        }
    };
    let watch = match &options.role {
        Role::Call { to } => vec![to.clone()],
        Role::Answer => vec![],
    };
    let (sig, mut session) = within(
        deadline,
        "hello_ok",
        SignalClient::connect(&options.signal, &token, watch),
    )
    .await??;
    // Kept for the whole call: dropping it stops the tunnel.
    let tunnel = match &options.relay_transport {
        RelayTransport::Udp => None,
        RelayTransport::Quic(verify) => {
            let (tunnel, server) = RelayTunnel::start(&session.ice_servers, verify.clone())?;
            session.ice_servers = vec![server];
            Some(tunnel)
        }
    };
    let rebind = tunnel
        .as_ref()
        .zip(options.rebind_after)
        .map(|(t, after)| (after, t.rebind.clone()));
    // URLs only: the credentials are secrets until they expire.
    let relays: Vec<&String> = session.ice_servers.iter().flat_map(|s| &s.urls).collect();
    tracing::info!(user = %session.user, device = %session.device, ?relays, "signed in");
    let mut report = match options.role.clone() {
        Role::Call { to } => place(sig, session, to, &options, rebind).await,
        Role::Answer => answer(sig, session, &options, rebind).await,
    }?;
    report.tunnel_moves = tunnel.map_or(0, |t| t.moved.load(Ordering::Relaxed));
    Ok(report)
}

async fn within<F: std::future::Future>(
    deadline: Instant,
    what: &'static str,
    future: F,
) -> Result<F::Output, CallError> {
    timeout_at(deadline.into(), future)
        .await
        .map_err(|_| CallError::Timeout(what))
}

/// Where an ICE restart onto another relay (after `relay_moved`) stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Restart {
    Idle,
    /// Gathering through the new relay; then send our offer (`answer` false, the
    /// caller) or answer (true) as `renegotiate`.
    Gathering {
        answer: bool,
    },
    /// Our restart offer went out; waiting for the answer.
    AwaitingAnswer,
}

/// The call as seen by both sides once SDP is on its way.
struct Call {
    sig: SignalClient,
    peer: Peer,
    call_id: String,
    other: String,
    /// Candidates that arrived before the remote description was set.
    early_candidates: Vec<IceCandidate>,
    remote_set: bool,
    /// RTP sequence number and timestamp of the next packet.
    sequence_number: u16,
    timestamp: u32,
    /// When into the media to move the relay tunnel to a new socket, and the switch.
    rebind: Option<(Duration, Arc<AtomicBool>)>,
    restart: Restart,
    /// Restarts completed onto another relay.
    relay_moves: u64,
    /// What `relay_used` says when the selected local candidate does not name the TURN
    /// server it came from: the first TURN URL of the ICE servers in use.
    relay_hint: Option<String>,
    /// Every relay reported in `relay_used`, in order.
    relays_used: Vec<String>,
}

impl Call {
    /// React to a signaling message that may arrive at any stage; returns the reason if
    /// the call ended.
    async fn on_signal(&mut self, message: ServerBody) -> Result<Option<String>, CallError> {
        match message {
            ServerBody::Ice {
                call_id,
                candidate: Some(candidate),
                ..
            } if call_id == self.call_id => {
                if self.remote_set {
                    self.add_candidate(candidate).await?;
                } else {
                    self.early_candidates.push(candidate);
                }
            }
            ServerBody::CallEnded {
                call_id,
                reason,
                by,
                ..
            } if call_id == self.call_id => {
                let reason = serde_json::to_value(reason)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_else(|| "unknown".into());
                return Ok(Some(match by {
                    Some(by) => format!("{reason} by {by}"),
                    None => reason,
                }));
            }
            ServerBody::AnsweredElsewhere { call_id } if call_id == self.call_id => {
                return Ok(Some("answered_elsewhere".into()));
            }
            // Our relay is draining: gather through the new ICE servers; the caller
            // restarts ICE with a new offer, the callee waits for it.
            ServerBody::RelayMoved {
                call_id,
                relay,
                ice_servers,
                offer,
                ..
            } if call_id == self.call_id => {
                tracing::info!(%relay, offer, "relay draining: moving the call");
                self.relay_hint = first_turn_url(&ice_servers);
                self.peer.set_ice_servers(&ice_servers).await?;
                if offer {
                    self.peer.pc.restart_ice().await?;
                    let offer = self.peer.pc.create_offer(None).await?;
                    self.peer.pc.set_local_description(offer).await?;
                    self.restart = Restart::Gathering { answer: false };
                }
            }
            ServerBody::Renegotiate {
                call_id,
                sdp,
                answer,
                ..
            } if call_id == self.call_id => {
                if answer {
                    self.peer
                        .pc
                        .set_remote_description(RTCSessionDescription::answer(sdp)?)
                        .await?;
                    if self.restart == Restart::AwaitingAnswer {
                        self.relay_moves += 1;
                    }
                    self.restart = Restart::Idle;
                } else {
                    self.set_remote(RTCSessionDescription::offer(sdp)?).await?;
                    let answer = self.peer.pc.create_answer(None).await?;
                    self.peer.pc.set_local_description(answer).await?;
                    self.restart = Restart::Gathering { answer: true };
                }
            }
            other => tracing::debug!(message = ?other, "signaling message"),
        }
        self.sig.ack().await?;
        Ok(None)
    }

    /// The restart's gathering finished: send our offer or answer.
    async fn restart_gathered(&mut self) -> Result<(), CallError> {
        let Restart::Gathering { answer } = self.restart else {
            return Ok(());
        };
        let sdp = self
            .peer
            .pc
            .local_description()
            .await
            .ok_or(CallError::NoLocalDescription)?
            .sdp;
        self.sig
            .send(&ClientBody::Renegotiate {
                call_id: self.call_id.clone(),
                sdp,
                answer,
            })
            .await?;
        self.restart = if answer {
            self.relay_moves += 1;
            Restart::Idle
        } else {
            Restart::AwaitingAnswer
        };
        Ok(())
    }

    /// Tell signaling which relay the selected pair runs through, when it changed.
    async fn report_relay(&mut self) -> Result<(), CallError> {
        let Some(pair) = self.peer.selected_pair().await else {
            return Ok(());
        };
        let Some(relay) = pair.local.url.or_else(|| self.relay_hint.clone()) else {
            return Ok(());
        };
        if self.relays_used.last() == Some(&relay) {
            return Ok(());
        }
        tracing::info!(%relay, "media runs through this relay");
        self.sig
            .send(&ClientBody::RelayUsed {
                call_id: self.call_id.clone(),
                relay: relay.clone(),
            })
            .await?;
        self.relays_used.push(relay);
        Ok(())
    }

    /// Hand one 20 ms packet to webrtc-rs, which encrypts it (SRTP) and sends it.
    async fn send_rtp(&mut self, payload: Vec<u8>, marker: bool) -> Result<(), CallError> {
        let packet = rtc::rtp::packet::Packet {
            header: rtc::rtp::header::Header {
                version: 2,
                marker,
                payload_type: PCMU_PAYLOAD_TYPE,
                sequence_number: self.sequence_number,
                timestamp: self.timestamp,
                ssrc: self.peer.ssrc,
                ..Default::default()
            },
            payload: payload.into(),
        };
        self.sequence_number = self.sequence_number.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(SAMPLES_PER_PACKET as u32);
        self.peer.track.write_rtp(packet).await?;
        Ok(())
    }

    async fn add_candidate(&self, candidate: IceCandidate) -> Result<(), CallError> {
        self.peer
            .pc
            .add_ice_candidate(RTCIceCandidateInit {
                candidate: candidate.candidate,
                sdp_mid: candidate.sdp_mid,
                sdp_mline_index: candidate.sdp_mline_index,
                username_fragment: candidate.username_fragment,
                url: None,
            })
            .await?;
        Ok(())
    }

    async fn set_remote(&mut self, description: RTCSessionDescription) -> Result<(), CallError> {
        self.peer.pc.set_remote_description(description).await?;
        self.remote_set = true;
        for candidate in std::mem::take(&mut self.early_candidates) {
            self.add_candidate(candidate).await?;
        }
        Ok(())
    }

    /// Wait for ICE gathering to finish (handling signaling meanwhile), then return the
    /// local SDP with every candidate in it.
    async fn gathered_sdp(&mut self, deadline: Instant) -> Result<String, CallError> {
        loop {
            tokio::select! {
                event = self.peer.events.recv() => match event {
                    Some(PeerEvent::GatheringComplete) => break,
                    Some(PeerEvent::State(RTCPeerConnectionState::Failed)) | None => {
                        return Err(CallError::PeerConnection(RTCPeerConnectionState::Failed));
                    }
                    Some(_) => {}
                },
                message = self.sig.recv() => {
                    if let Some(reason) = self.on_signal(message?).await? {
                        return Err(CallError::Ended(reason));
                    }
                }
                _ = sleep_until(deadline.into()) => return Err(CallError::Timeout("ICE gathering")),
            }
        }
        let description = self
            .peer
            .pc
            .local_description()
            .await
            .ok_or(CallError::NoLocalDescription)?;
        Ok(description.sdp)
    }

    /// Wait for ICE + DTLS to connect, then send media for `options.media_time`, then
    /// hang up (unless the other side did first).
    async fn connect_and_talk(
        mut self,
        role: &'static str,
        user: &str,
        started: Instant,
        options: &CallOptions,
    ) -> Result<Report, CallError> {
        let deadline = started + options.setup_timeout;
        // webrtc-rs 0.21.1 flushes a DTLS flight only when its driver task wakes up, which
        // over a relay took 150-250 ms per flight (2.3 s to connect). Writing to the track
        // wakes it, so send silence every 20 ms while connecting: 0.4 s. Until DTLS-SRTP
        // has keys the SRTP layer drops these packets ("local_srtp_context is not set
        // yet"); nothing leaves unencrypted.
        let mut nudge = tokio::time::interval(Duration::from_millis(20));
        loop {
            tokio::select! {
                _ = nudge.tick() => {
                    if let Err(e) = self.send_rtp(vec![SILENCE; SAMPLES_PER_PACKET], false).await {
                        tracing::debug!("silence before connecting: {e}");
                    }
                }
                event = self.peer.events.recv() => match event {
                    Some(PeerEvent::State(RTCPeerConnectionState::Connected)) => break,
                    Some(PeerEvent::State(state @ (RTCPeerConnectionState::Failed
                        | RTCPeerConnectionState::Closed))) => {
                        return Err(CallError::PeerConnection(state));
                    }
                    None => return Err(CallError::PeerConnection(RTCPeerConnectionState::Closed)),
                    Some(_) => {}
                },
                message = self.sig.recv() => {
                    if let Some(reason) = self.on_signal(message?).await? {
                        return Err(CallError::Ended(reason));
                    }
                }
                _ = sleep_until(deadline.into()) => return Err(CallError::Timeout("ICE and DTLS to connect")),
            }
        }
        let connect_ms = millis(started.elapsed());
        tracing::info!(connect_ms, "connected");
        self.sig
            .send(&ClientBody::Connected {
                call_id: self.call_id.clone(),
            })
            .await?;

        self.report_relay().await?;
        let mut relay_check = tokio::time::interval(Duration::from_millis(250));

        let media_started = Instant::now();
        let media_end = media_started + options.media_time;
        let mut source = PayloadSource::new(options.payload.clone());
        let mut sent = Sent {
            ssrc: self.peer.ssrc,
            payload_type: PCMU_PAYLOAD_TYPE,
            ..Sent::default()
        };
        let mut ticker = tokio::time::interval(Duration::from_millis(20));
        let mut ended_by_peer = None;
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    if let Some((after, switch)) = &self.rebind {
                        if media_started.elapsed() >= *after {
                            tracing::info!("moving the relay tunnel to a new socket");
                            switch.store(true, Ordering::Release);
                            self.rebind = None;
                        }
                    }
                    let payload = source.next_packet();
                    let payload_len = payload.len() as u64;
                    // RFC 3551 §4.1: the marker bit flags the first packet of a talkspurt.
                    match self.send_rtp(payload, sent.packets == 0).await {
                        Ok(()) => {
                            sent.packets += 1;
                            sent.payload_bytes += payload_len;
                        }
                        Err(e) => tracing::warn!("cannot send RTP: {e}"),
                    }
                }
                message = self.sig.recv() => {
                    if let Some(reason) = self.on_signal(message?).await? {
                        ended_by_peer = Some(reason);
                        break;
                    }
                }
                event = self.peer.events.recv() => match event {
                    Some(PeerEvent::State(state @ (RTCPeerConnectionState::Failed
                        | RTCPeerConnectionState::Closed))) => {
                        return Err(CallError::PeerConnection(state));
                    }
                    Some(PeerEvent::GatheringComplete) => self.restart_gathered().await?,
                    _ => {}
                },
                _ = relay_check.tick(), if self.restart == Restart::Idle => {
                    self.report_relay().await?;
                }
                _ = sleep_until(media_end.into()) => break,
            }
        }
        let media_ms = millis(media_started.elapsed());
        // Right after an ICE restart the pair can be unset for a moment: ask again, for
        // at most a second.
        let mut selected_pair = self.peer.selected_pair().await;
        for _ in 0..10 {
            if selected_pair.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            selected_pair = self.peer.selected_pair().await;
        }
        let received = self.peer.received();
        let ended = match ended_by_peer {
            Some(reason) => reason,
            None => {
                self.sig
                    .send(&ClientBody::Hangup {
                        call_id: self.call_id.clone(),
                        reason: Some("done".into()),
                    })
                    .await?;
                "hangup_sent".into()
            }
        };
        if let Err(e) = self.peer.pc.close().await {
            tracing::warn!("closing the peer connection: {e}");
        }
        self.sig.close().await;
        Ok(Report {
            user: user.to_owned(),
            role,
            peer: self.other,
            call_id: self.call_id,
            connect_ms,
            media_ms,
            sent,
            received,
            selected_pair,
            ended,
            // Filled in by `run`, which owns the tunnel.
            tunnel_moves: 0,
            relay_moves: self.relay_moves,
            relays_used: self.relays_used,
        })
    }
}

/// The first `turn:` URL of `servers`.
fn first_turn_url(servers: &[IceServer]) -> Option<String> {
    servers
        .iter()
        .flat_map(|s| &s.urls)
        .find(|u| u.starts_with("turn:"))
        .cloned()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Caller: wait for `to` to be online, invite with a complete offer, wait for the answer.
async fn place(
    mut sig: SignalClient,
    session: Session,
    to: String,
    options: &CallOptions,
    rebind: Option<(Duration, Arc<AtomicBool>)>,
) -> Result<Report, CallError> {
    let deadline = Instant::now() + options.setup_timeout;
    // Invite only once the callee is online: an invite to an offline user rings nobody
    // (it goes to the push webhook and ends as a missed call).
    loop {
        let message = within(deadline, "the callee to come online", sig.recv()).await??;
        if let ServerBody::Presence { user, online, .. } = message {
            if user == to && online {
                break;
            }
        }
    }
    let peer = Peer::new(&session.ice_servers, options.expect_marker.clone()).await?;
    let call_id = format!("{:016x}", rand::random::<u64>());
    let mut call = Call {
        sig,
        peer,
        call_id,
        other: to.clone(),
        early_candidates: Vec::new(),
        remote_set: false,
        // RFC 3550 §5.1: sequence number and timestamp start at random values.
        sequence_number: rand::random(),
        timestamp: rand::random(),
        rebind: rebind.clone(),
        restart: Restart::Idle,
        relay_moves: 0,
        relay_hint: first_turn_url(&session.ice_servers),
        relays_used: Vec::new(),
    };
    let offer = call.peer.pc.create_offer(None).await?;
    call.peer.pc.set_local_description(offer).await?;
    let sdp = call.gathered_sdp(deadline).await?;
    let started = Instant::now();
    call.sig
        .send(&ClientBody::Invite {
            call_id: call.call_id.clone(),
            to,
            sdp,
        })
        .await?;
    tracing::info!(call_id = %call.call_id, "invited");

    let deadline = started + options.setup_timeout;
    let answer = loop {
        let message = within(deadline, "the answer", call.sig.recv()).await??;
        match message {
            ServerBody::Accept { call_id, sdp, .. } if call_id == call.call_id => break sdp,
            ServerBody::Ringing { call_id, .. } if call_id == call.call_id => {
                tracing::info!("ringing");
            }
            other => {
                if let Some(reason) = call.on_signal(other).await? {
                    return Err(CallError::Ended(reason));
                }
            }
        }
    };
    call.set_remote(RTCSessionDescription::answer(answer)?)
        .await?;
    call.connect_and_talk("caller", &session.user, started, options)
        .await
}

/// Callee: wait for an invite, ring, accept with a complete answer.
async fn answer(
    mut sig: SignalClient,
    session: Session,
    options: &CallOptions,
    rebind: Option<(Duration, Arc<AtomicBool>)>,
) -> Result<Report, CallError> {
    let deadline = Instant::now() + options.setup_timeout;
    let (call_id, from, offer) = loop {
        let message = within(deadline, "an invite", sig.recv()).await??;
        if let ServerBody::Invite {
            call_id, from, sdp, ..
        } = message
        {
            break (call_id, from, sdp);
        }
    };
    tracing::info!(%call_id, %from, "invited");
    sig.send(&ClientBody::Ringing {
        call_id: call_id.clone(),
    })
    .await?;
    let peer = Peer::new(&session.ice_servers, options.expect_marker.clone()).await?;
    let mut call = Call {
        sig,
        peer,
        call_id,
        other: from,
        early_candidates: Vec::new(),
        remote_set: false,
        // RFC 3550 §5.1: sequence number and timestamp start at random values.
        sequence_number: rand::random(),
        timestamp: rand::random(),
        rebind: rebind.clone(),
        restart: Restart::Idle,
        relay_moves: 0,
        relay_hint: first_turn_url(&session.ice_servers),
        relays_used: Vec::new(),
    };
    call.set_remote(RTCSessionDescription::offer(offer)?)
        .await?;
    let answer = call.peer.pc.create_answer(None).await?;
    call.peer.pc.set_local_description(answer).await?;
    let sdp = call.gathered_sdp(deadline).await?;
    let started = Instant::now();
    call.sig
        .send(&ClientBody::Accept {
            call_id: call.call_id.clone(),
            sdp,
        })
        .await?;
    call.connect_and_talk("callee", &session.user, started, options)
        .await
}
