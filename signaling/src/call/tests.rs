//! The call rules on virtual time: a harness of several switchboards ("nodes") whose
//! published events and claims are routed like the bus would, stepping time by hand.

use std::collections::{HashMap, HashSet, VecDeque};

use super::*;
use crate::protocol::{EndReason, ErrorCode, IceCandidate, ServerBody};

struct Net {
    now: Millis,
    nodes: Vec<Switchboard>,
    /// Node index → users it is subscribed to.
    subs: Vec<HashSet<String>>,
    claims: HashSet<String>,
    inbox: HashMap<DeviceId, Vec<ServerBody>>,
    missed: Vec<(String, MissedCall)>,
    invited: Vec<String>,
}

fn d(user: &str, device: &str) -> DeviceId {
    DeviceId::new(user, device)
}

impl Net {
    fn new(nodes: usize) -> Net {
        Net {
            now: 1_000_000,
            nodes: (0..nodes)
                .map(|i| Switchboard::new(CallConfig::default(), format!("n{i}")))
                .collect(),
            subs: vec![HashSet::new(); nodes],
            claims: HashSet::new(),
            inbox: HashMap::new(),
            missed: Vec::new(),
            invited: Vec::new(),
        }
    }

    fn up(&mut self, node: usize, dev: DeviceId) {
        self.subs[node].insert(dev.user.clone());
        self.run(node, Input::DeviceUp(dev));
    }

    /// Feed `input` to `node` and deliver everything that follows until quiet.
    fn run(&mut self, node: usize, input: Input) {
        let mut work: VecDeque<(usize, Input)> = VecDeque::from([(node, input)]);
        let mut steps = 0;
        while let Some((n, input)) = work.pop_front() {
            steps += 1;
            assert!(steps < 10_000, "no quiescence");
            for out in self.nodes[n].handle(self.now, input) {
                match out {
                    Output::Send { to, body, .. } => self.inbox.entry(to).or_default().push(body),
                    Output::Publish { users, event } => {
                        for user in users {
                            for (m, subs) in self.subs.iter().enumerate() {
                                if subs.contains(&user) {
                                    work.push_back((m, Input::Event(event.clone())));
                                }
                            }
                        }
                    }
                    Output::Claim {
                        call_id,
                        outcome,
                        parties,
                        ..
                    } => {
                        let won = self.claims.insert(call_id.clone());
                        work.push_back((
                            n,
                            Input::Claimed {
                                call_id,
                                outcome,
                                parties,
                                won,
                            },
                        ));
                    }
                    Output::Invited { callee, .. } => self.invited.push(callee),
                    Output::Missed { user, call } => self.missed.push((user, call)),
                }
            }
        }
    }

    fn req(&mut self, node: usize, dev: &DeviceId, request: Request) {
        let input = Input::Request {
            device: dev.clone(),
            re: Some("m".into()),
            request,
        };
        self.run(node, input);
    }

    fn advance(&mut self, ms: Millis) {
        self.now += ms;
        for n in 0..self.nodes.len() {
            self.run(n, Input::Tick);
        }
    }

    fn take(&mut self, dev: &DeviceId) -> Vec<ServerBody> {
        self.inbox.remove(dev).unwrap_or_default()
    }

    fn types(&mut self, dev: &DeviceId) -> Vec<String> {
        self.take(dev)
            .iter()
            .map(|b| {
                serde_json::to_value(b).unwrap()["type"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    }
}

fn invite(call_id: &str, to: &str) -> Request {
    Request::Invite {
        call_id: call_id.into(),
        to: to.into(),
        sdp: "offer".into(),
    }
}

fn accept(call_id: &str) -> Request {
    Request::Accept {
        call_id: call_id.into(),
        sdp: "answer".into(),
    }
}

fn ended(bodies: &[ServerBody]) -> Option<EndReason> {
    bodies.iter().find_map(|b| match b {
        ServerBody::CallEnded { reason, .. } => Some(*reason),
        _ => None,
    })
}

fn error(bodies: &[ServerBody]) -> Option<ErrorCode> {
    bodies.iter().find_map(|b| match b {
        ServerBody::Error { code, .. } => Some(*code),
        _ => None,
    })
}

/// alice/a on node 0; bob/b1 on node 0, bob/b2 on node 1.
fn setup() -> (Net, DeviceId, DeviceId, DeviceId) {
    let mut net = Net::new(2);
    let (a, b1, b2) = (d("alice", "a"), d("bob", "b1"), d("bob", "b2"));
    net.up(0, a.clone());
    net.up(0, b1.clone());
    net.up(1, b2.clone());
    (net, a, b1, b2)
}

#[test]
fn invite_rings_every_device_and_first_accept_wins() {
    let (mut net, a, b1, b2) = setup();
    net.req(0, &a, invite("c1", "bob"));
    assert_eq!(net.types(&b1), ["invite"]);
    assert_eq!(net.types(&b2), ["invite"]);
    net.req(
        1,
        &b2,
        Request::Ringing {
            call_id: "c1".into(),
        },
    );
    assert_eq!(net.types(&a), ["ringing"]);
    net.req(1, &b2, accept("c1"));
    net.req(0, &b1, accept("c1")); // too late
    let to_a = net.take(&a);
    assert!(
        matches!(&to_a[..], [ServerBody::Accept { from, sdp, .. }] if from == "bob" && sdp == "answer")
    );
    assert_eq!(net.types(&b2), ["accepted"]);
    let b1_got = net.take(&b1);
    assert!(matches!(b1_got[0], ServerBody::AnsweredElsewhere { .. }));
    assert_eq!(error(&b1_got), Some(ErrorCode::NotRinging));
}

#[test]
fn ice_is_forwarded_in_order_with_end_of_candidates() {
    let (mut net, a, b1, b2) = setup();
    net.req(0, &a, invite("c1", "bob"));
    let cand = |n: u32| {
        Some(IceCandidate {
            candidate: format!("candidate:{n} 1 udp 1 192.0.2.1 {n} typ host"),
            sdp_mid: Some("0".into()),
            sdp_mline_index: Some(0),
            username_fragment: None,
        })
    };
    let ice = |n, end| Request::Ice {
        call_id: "c1".into(),
        candidate: cand(n),
        end_of_candidates: end,
    };
    // Caller trickles while ringing: every ringing device gets them.
    net.req(0, &a, ice(1, false));
    net.take(&b1);
    // A device that comes online late gets the invite and the early candidates.
    let b3 = d("bob", "b3");
    net.up(1, b3.clone());
    assert_eq!(net.types(&b3), ["invite", "ice"]);
    net.req(1, &b2, accept("c1"));
    net.take(&a);
    net.take(&b2);
    for n in 2..5 {
        net.req(0, &a, ice(n, false));
    }
    net.req(
        0,
        &a,
        Request::Ice {
            call_id: "c1".into(),
            candidate: None,
            end_of_candidates: true,
        },
    );
    let got: Vec<(Option<String>, bool)> = net
        .take(&b2)
        .into_iter()
        .map(|b| match b {
            ServerBody::Ice {
                candidate,
                end_of_candidates,
                ..
            } => (candidate.map(|c| c.candidate), end_of_candidates),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(got.len(), 4);
    assert!(got[0].0.as_deref().unwrap().starts_with("candidate:2 "));
    assert!(got[2].0.as_deref().unwrap().starts_with("candidate:4 "));
    assert_eq!(got[3], (None, true));
    // And the other way, to the caller only.
    net.req(1, &b2, ice(9, false));
    assert_eq!(net.types(&a), ["ice"]);
    assert!(net
        .take(&b1)
        .iter()
        .all(|b| !matches!(b, ServerBody::Ice { .. })));
    // A ringing device that lost may not send candidates.
    net.req(0, &b1, ice(7, false));
    assert_eq!(error(&net.take(&b1)), Some(ErrorCode::NotRinging));
}

#[test]
fn reject_ends_ringing_everywhere() {
    let (mut net, a, b1, b2) = setup();
    net.req(0, &a, invite("c1", "bob"));
    net.take(&b1);
    net.take(&b2);
    net.req(
        0,
        &b1,
        Request::Reject {
            call_id: "c1".into(),
        },
    );
    assert_eq!(ended(&net.take(&a)), Some(EndReason::Rejected));
    assert_eq!(ended(&net.take(&b2)), Some(EndReason::Rejected));
    assert!(
        net.take(&b1).is_empty(),
        "the rejecting device is not told again"
    );
    // Accept after the end.
    net.req(1, &b2, accept("c1"));
    assert_eq!(error(&net.take(&b2)), Some(ErrorCode::CallEnded));
}

#[test]
fn cancel_and_busy() {
    let (mut net, a, b1, b2) = setup();
    net.req(0, &a, invite("c1", "bob"));
    net.req(
        0,
        &a,
        Request::Cancel {
            call_id: "c1".into(),
        },
    );
    assert_eq!(ended(&net.take(&b1)), Some(EndReason::Cancelled));
    assert_eq!(ended(&net.take(&b2)), Some(EndReason::Cancelled));
    // Bob in a call with alice; carol calls bob → busy, bob's devices never ring.
    net.req(0, &a, invite("c2", "bob"));
    net.req(0, &b1, accept("c2"));
    net.take(&b1);
    net.take(&b2);
    let c = d("carol", "c");
    net.up(1, c.clone());
    net.req(1, &c, invite("c3", "bob"));
    assert_eq!(ended(&net.take(&c)), Some(EndReason::Busy));
    assert!(net.take(&b1).is_empty() && net.take(&b2).is_empty());
    // A device may also answer busy itself.
    let dave = d("dave", "x");
    net.up(1, dave.clone());
    net.req(1, &dave, invite("c4", "carol"));
    net.req(
        1,
        &c,
        Request::Busy {
            call_id: "c4".into(),
        },
    );
    assert_eq!(ended(&net.take(&dave)), Some(EndReason::Busy));
}

#[test]
fn glare_keeps_the_lesser_call_id() {
    let mut net = Net::new(2);
    let (a, b) = (d("alice", "a"), d("bob", "b"));
    net.up(0, a.clone());
    net.up(1, b.clone());
    // Both invites are published before either arrives: deliver them "crossed".
    let mut outs = Vec::new();
    let i1 = Input::Request {
        device: a.clone(),
        re: None,
        request: invite("zzz", "bob"),
    };
    let i2 = Input::Request {
        device: b.clone(),
        re: None,
        request: invite("aaa", "alice"),
    };
    outs.extend(net.nodes[0].handle(net.now, i1));
    outs.extend(net.nodes[1].handle(net.now, i2));
    for out in outs {
        if let Output::Publish { users, event } = out {
            for user in users {
                let node = if user == "alice" { 0 } else { 1 };
                net.run(node, Input::Event(event.clone()));
            }
        }
    }
    // "zzz" loses on both sides; "aaa" (bob → alice) rings alice.
    let to_a = net.take(&a);
    assert!(to_a.iter().any(|m| matches!(m, ServerBody::CallEnded { call_id, reason: EndReason::Glare, .. } if call_id == "zzz")));
    assert!(to_a
        .iter()
        .any(|m| matches!(m, ServerBody::Invite { call_id, .. } if call_id == "aaa")));
    // Bob's node saw alice's invite before its own came back, so bob may have rung
    // briefly; either way "zzz" ends for him with glare.
    let to_b = net.take(&b);
    assert!(to_b.iter().any(|m| matches!(m, ServerBody::CallEnded { call_id, reason: EndReason::Glare, .. } if call_id == "zzz")));
    net.req(0, &a, accept("aaa"));
    assert_eq!(net.types(&b), ["accept"]);
}

#[test]
fn unanswered_invite_becomes_a_missed_call_after_90_s() {
    let mut net = Net::new(1);
    let a = d("alice", "a");
    net.up(0, a.clone());
    net.req(0, &a, invite("c1", "bob"));
    assert_eq!(
        net.invited,
        ["bob"],
        "offline callee: the node is told to push"
    );
    net.advance(89_999);
    assert!(net.missed.is_empty());
    net.advance(1);
    assert_eq!(ended(&net.take(&a)), Some(EndReason::Timeout));
    assert_eq!(net.missed.len(), 1);
    let (user, m) = &net.missed[0];
    assert_eq!(
        (user.as_str(), m.from.as_str(), m.call_id.as_str()),
        ("bob", "alice", "c1")
    );
    // Bob coming online now gets no invite (the node stores and delivers missed calls).
    let b = d("bob", "b");
    net.up(0, b.clone());
    assert!(net.take(&b).is_empty());
}

#[test]
fn hangup_reason_renegotiate_and_connect_timeout() {
    let (mut net, a, b1, b2) = setup();
    net.req(0, &a, invite("c1", "bob"));
    net.req(1, &b2, accept("c1"));
    net.take(&a);
    net.req(
        0,
        &a,
        Request::Renegotiate {
            call_id: "c1".into(),
            sdp: "restart".into(),
            answer: false,
        },
    );
    assert!(
        matches!(net.take(&b2).last(), Some(ServerBody::Renegotiate { sdp, answer: false, .. }) if sdp == "restart")
    );
    net.req(
        1,
        &b2,
        Request::Renegotiate {
            call_id: "c1".into(),
            sdp: "ok".into(),
            answer: true,
        },
    );
    assert_eq!(net.types(&a), ["renegotiate"]);
    net.req(
        1,
        &b2,
        Request::Hangup {
            call_id: "c1".into(),
            reason: Some("network".into()),
        },
    );
    let to_a = net.take(&a);
    assert!(
        matches!(&to_a[..], [ServerBody::CallEnded { reason: EndReason::Hangup, by: Some(by), detail: Some(r), .. }] if by == "bob" && r == "network")
    );
    net.take(&b1);
    // Connect timeout: answered, nobody reports connected for 30 s.
    net.req(0, &a, invite("c2", "bob"));
    net.req(0, &b1, accept("c2"));
    net.take(&a);
    net.advance(29_000);
    assert!(net.take(&a).is_empty());
    net.advance(1_000);
    assert_eq!(ended(&net.take(&a)), Some(EndReason::ConnectTimeout));
    assert_eq!(ended(&net.take(&b1)), Some(EndReason::ConnectTimeout));
    // With `connected` the call stays up.
    net.req(0, &a, invite("c3", "bob"));
    net.req(0, &b1, accept("c3"));
    net.req(
        0,
        &b1,
        Request::Connected {
            call_id: "c3".into(),
        },
    );
    assert_eq!(net.types(&a), ["accept", "connected"]);
    net.advance(60_000);
    assert_eq!(ended(&net.take(&a)), None);
}

#[test]
fn strangers_and_bad_requests_get_errors() {
    let (mut net, a, b1, _b2) = setup();
    let eve = d("eve", "e");
    net.up(0, eve.clone());
    net.req(0, &a, invite("c1", "bob"));
    net.req(
        0,
        &eve,
        Request::Hangup {
            call_id: "c1".into(),
            reason: None,
        },
    );
    assert_eq!(error(&net.take(&eve)), Some(ErrorCode::NotInCall));
    net.req(0, &eve, accept("c1"));
    assert_eq!(error(&net.take(&eve)), Some(ErrorCode::NotInCall));
    net.req(0, &a, invite("c1", "bob"));
    assert_eq!(error(&net.take(&a)), Some(ErrorCode::DuplicateCall));
    net.req(0, &a, invite("bad id!", "bob"));
    assert_eq!(error(&net.take(&a)), Some(ErrorCode::BadMessage));
    net.req(0, &a, invite("c9", "alice"));
    assert_eq!(error(&net.take(&a)), Some(ErrorCode::BadMessage));
    net.req(
        0,
        &a,
        Request::Renegotiate {
            call_id: "c1".into(),
            sdp: "x".into(),
            answer: false,
        },
    );
    assert_eq!(error(&net.take(&a)), Some(ErrorCode::NotAccepted));
    // The call itself is unaffected.
    net.req(0, &b1, accept("c1"));
    assert_eq!(net.types(&a), ["accept"]);
}

#[test]
fn caller_disconnect_ends_the_call() {
    let (mut net, a, b1, b2) = setup();
    net.req(0, &a, invite("c1", "bob"));
    net.take(&b1);
    net.take(&b2);
    net.run(0, Input::DeviceDown(a.clone()));
    assert_eq!(ended(&net.take(&b1)), Some(EndReason::Disconnected));
    assert_eq!(ended(&net.take(&b2)), Some(EndReason::Disconnected));
}
