//! The webrtc-rs peer connection of one call: relay-only ICE through the ICE servers
//! signaling handed out, one send-receive PCMU audio track, DTLS-SRTP.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::MIME_TYPE_PCMU;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use tokio::sync::mpsc;
use turnpike_signaling::protocol::IceServer;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    register_default_interceptors, MediaEngine, PeerConnection, PeerConnectionBuilder,
    PeerConnectionEventHandler, RTCConfigurationBuilder, RTCIceCandidate, RTCIceGatheringState,
    RTCIceServer, RTCIceTransportPolicy, RTCPeerConnectionState, Registry, SettingEngineBuilder,
};

use crate::media::{Received, PCMU_CLOCK_RATE, PCMU_PAYLOAD_TYPE};
use crate::report::{CandidateInfo, PairInfo};

/// What the peer connection reports to the call loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerEvent {
    /// ICE gathering finished: the local description now lists every candidate.
    GatheringComplete,
    State(RTCPeerConnectionState),
}

/// Forwards webrtc-rs callbacks to the call loop and counts received RTP.
struct Handler {
    events: mpsc::UnboundedSender<PeerEvent>,
    received: Arc<Mutex<Received>>,
    marker: Option<Vec<u8>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.events.send(PeerEvent::GatheringComplete);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.events.send(PeerEvent::State(state));
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let received = self.received.clone();
        let marker = self.marker.clone();
        tokio::spawn(async move {
            while let Some(event) = track.poll().await {
                match event {
                    TrackRemoteEvent::OnRtpPacket(packet) => {
                        // A poisoned lock means a panic elsewhere already failed the call;
                        // keep counting into the data that is there.
                        let mut received = received.lock().unwrap_or_else(|e| e.into_inner());
                        received.record(
                            packet.header.ssrc,
                            packet.header.payload_type,
                            &packet.payload,
                            marker.as_deref(),
                        );
                    }
                    TrackRemoteEvent::OnEnded => break,
                    _ => {}
                }
            }
        });
    }
}

/// One call's peer connection and its outgoing track.
pub struct Peer {
    pub pc: Arc<dyn PeerConnection>,
    pub track: Arc<TrackLocalStaticRTP>,
    /// The SSRC our RTP goes out with.
    pub ssrc: u32,
    pub events: mpsc::UnboundedReceiver<PeerEvent>,
    pub received: Arc<Mutex<Received>>,
}

fn pcmu_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_PCMU.to_owned(),
        clock_rate: PCMU_CLOCK_RATE,
        channels: 1,
        sdp_fmtp_line: String::new(),
        rtcp_feedback: vec![],
    }
}

impl Peer {
    /// A relay-only peer connection using `ice_servers`, with a PCMU track added.
    /// `marker`: count received packets whose payload contains it.
    pub async fn new(
        ice_servers: &[IceServer],
        marker: Option<Vec<u8>>,
    ) -> Result<Peer, webrtc::error::Error> {
        let mut media_engine = MediaEngine::default();
        media_engine.register_codec(
            RTCRtpCodecParameters {
                rtp_codec: pcmu_codec(),
                payload_type: PCMU_PAYLOAD_TYPE,
            },
            RtpCodecKind::Audio,
        )?;
        let registry = register_default_interceptors(Registry::new(), &mut media_engine)?;

        let bind_addr = local_bind_addr(ice_servers);
        let configuration = relay_only(ice_servers);
        // webrtc-rs waits 2 s before it accepts a relay candidate (hoping for a direct
        // path); with relay-only ICE there is nothing better to wait for. An ICE restart
        // (a move off a draining relay) gathers afresh on new sockets, so no candidate
        // of the old relay is offered again.
        let settings = SettingEngineBuilder::new()
            .with_relay_acceptance_min_wait(Some(Duration::ZERO))
            .with_discard_local_candidates_during_ice_restart(true)
            .build();

        let (events_tx, events) = mpsc::unbounded_channel();
        let received = Arc::new(Mutex::new(Received::default()));
        let handler = Arc::new(Handler {
            events: events_tx,
            received: received.clone(),
            marker,
        });
        let pc = PeerConnectionBuilder::new()
            .with_configuration(configuration)
            .with_media_engine(media_engine)
            .with_interceptor_registry(registry)
            .with_setting_engine(settings)
            .with_handler(handler)
            .with_udp_addrs(vec![bind_addr])
            .build()
            .await?;
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);

        let ssrc = rand::random::<u32>();
        let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            "turnpike-call".to_owned(),
            "audio".to_owned(),
            "turnpike-call-audio".to_owned(),
            RtpCodecKind::Audio,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec: pcmu_codec(),
                ..Default::default()
            }],
        )));
        pc.add_track(track.clone() as Arc<dyn TrackLocal>).await?;
        Ok(Peer {
            pc,
            track,
            ssrc,
            events,
            received,
        })
    }

    /// Use `ice_servers` from now on (the next ICE restart gathers through them).
    pub async fn set_ice_servers(
        &self,
        ice_servers: &[IceServer],
    ) -> Result<(), webrtc::error::Error> {
        self.pc.set_configuration(relay_only(ice_servers)).await
    }

    /// The nominated candidate pair, read from the DTLS transport of our RTP sender
    /// (there is no SCTP transport: the call has no data channel).
    pub async fn selected_pair(&self) -> Option<PairInfo> {
        for sender in self.pc.get_senders().await {
            let Ok(Some(dtls)) = sender.transport().await else {
                continue;
            };
            if let Ok(Some(pair)) = dtls.ice_transport().get_selected_candidate_pair().await {
                return Some(PairInfo {
                    local: candidate_info(pair.local()),
                    remote: candidate_info(pair.remote()),
                });
            }
        }
        None
    }

    /// A snapshot of what arrived so far.
    pub fn received(&self) -> Received {
        self.received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// A relay-only configuration through `ice_servers`.
fn relay_only(ice_servers: &[IceServer]) -> webrtc::peer_connection::RTCConfiguration {
    let ice_servers: Vec<RTCIceServer> = ice_servers
        .iter()
        .map(|server| RTCIceServer {
            urls: server.urls.clone(),
            username: server.username.clone().unwrap_or_default(),
            credential: server.credential.clone().unwrap_or_default(),
        })
        .collect();
    RTCConfigurationBuilder::new()
        .with_ice_servers(ice_servers)
        // Only relayed candidates: the peers never learn each other's addresses, and
        // every packet of the call crosses Turnpike.
        .with_ice_transport_policy(RTCIceTransportPolicy::Relay)
        .build()
}

fn candidate_info(candidate: &RTCIceCandidate) -> CandidateInfo {
    CandidateInfo {
        candidate_type: candidate.typ.to_string(),
        protocol: candidate.protocol.to_string(),
        address: format!("{}:{}", candidate.address, candidate.port),
        related_address: (!candidate.related_address.is_empty())
            .then(|| format!("{}:{}", candidate.related_address, candidate.related_port)),
        url: candidate.url.clone(),
    }
}

/// The address our UDP socket binds to: the local address the kernel would use towards
/// the first UDP TURN server, port 0. With relay-only ICE the socket talks to nothing
/// but the TURN server. A wildcard bind would not do: webrtc-rs expands it to interface
/// addresses and skips loopback, so a relay on 127.0.0.1 would be unreachable.
fn local_bind_addr(ice_servers: &[IceServer]) -> String {
    let towards = ice_servers
        .iter()
        .flat_map(|server| &server.urls)
        .find_map(|url| turn_udp_host_port(url));
    let local_ip = towards.and_then(|target| {
        let target = std::net::ToSocketAddrs::to_socket_addrs(&target)
            .ok()?
            .next()?;
        let unspecified = if target.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        };
        // connect() on UDP sends nothing: it only asks the kernel for a route.
        let probe = std::net::UdpSocket::bind(unspecified).ok()?;
        probe.connect(target).ok()?;
        Some(probe.local_addr().ok()?.ip())
    });
    match local_ip {
        Some(ip) => std::net::SocketAddr::new(ip, 0).to_string(),
        None => "0.0.0.0:0".to_owned(),
    }
}

/// `turn:HOST:PORT?transport=udp` → `HOST:PORT` (RFC 7065 §3.1; no transport means UDP,
/// no port means 3478). `turns:` and TCP URLs are skipped.
fn turn_udp_host_port(url: &str) -> Option<String> {
    let rest = url.strip_prefix("turn:")?;
    let (host_port, query) = rest.split_once('?').unwrap_or((rest, ""));
    if !query.is_empty() && query != "transport=udp" {
        return None;
    }
    let has_port = match host_port.rsplit_once(']') {
        // [v6]:port
        Some((_, after)) => after.starts_with(':'),
        None => host_port.contains(':'),
    };
    Some(if has_port {
        host_port.to_owned()
    } else {
        format!("{host_port}:3478")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_urls_yield_the_udp_server_address() {
        assert_eq!(
            turn_udp_host_port("turn:127.0.0.1:3478?transport=udp").as_deref(),
            Some("127.0.0.1:3478")
        );
        assert_eq!(
            turn_udp_host_port("turn:relay.example.com").as_deref(),
            Some("relay.example.com:3478")
        );
        assert_eq!(
            turn_udp_host_port("turn:[::1]:5000").as_deref(),
            Some("[::1]:5000")
        );
        assert_eq!(
            turn_udp_host_port("turn:[::1]").as_deref(),
            Some("[::1]:3478")
        );
        assert_eq!(
            turn_udp_host_port("turn:127.0.0.1:3478?transport=tcp"),
            None
        );
        assert_eq!(
            turn_udp_host_port("turns:127.0.0.1:5349?transport=tcp"),
            None
        );
    }

    #[test]
    fn a_loopback_relay_gets_a_loopback_socket() {
        let servers = [IceServer {
            urls: vec!["turn:127.0.0.1:3478?transport=udp".into()],
            username: None,
            credential: None,
            region: "test".into(),
            quic_urls: Vec::new(),
        }];
        assert_eq!(local_bind_addr(&servers), "127.0.0.1:0");
    }
}
