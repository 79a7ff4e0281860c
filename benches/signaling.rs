//! Signaling load generator: WebSocket clients on loopback against one signaling node,
//! then against two nodes sharing a `redis-server`.
//!
//! ```sh
//! cargo bench --bench signaling                   # 15 000 idle sessions, ~1 min
//! cargo bench --bench signaling -- --sessions N   # another session count
//! cargo bench --bench signaling -- --smoke        # 200 sessions, a few seconds
//! ```
//!
//! The node runs in a child process (this binary started again with `--serve`), so its
//! memory is measured alone: the generator's own sockets and buffers live in this one.
//! Three figures:
//!
//! 1. **RSS per idle session.** The node's VmRSS is read from `/proc/PID/status`, then N
//!    sessions each do a dev login, open `/v1/signal`, send `hello` watching 5 other
//!    users and wait for `hello_ok`; they stay open, reading (so pings are answered).
//!    VmRSS is read again once the login connections have closed: the difference over N
//!    is what one signed-in idle session costs the node.
//! 2. **hello→hello_ok p99** while 200 more sessions, already connected, send `hello` at
//!    the same instant (the N idle sessions stay open).
//! 3. **Call setups per second**: pairs of sessions repeat invite → invite (callee) →
//!    accept → accept (caller) → hangup → call_ended (callee), one call in flight per
//!    pair; the invite→ring time (invite sent until the callee has it) is reported too.
//! 4. **Through two nodes and Redis**: a `redis-server` of its own and two nodes on it
//!    (each another child), every caller on the first node and its callee on the second,
//!    so every message crosses Redis. First as fast as the pairs go (the capacity), then
//!    with each pair pacing its calls so that all together make half that rate: the
//!    invite→ring latency at 50 % of capacity.
//!
//! The generator raises its open-file limit to the hard limit (the child inherits it) and
//! connects from several loopback source addresses (127.0.0.2–9) so 15 000 connections
//! don't exhaust one address's ephemeral ports.

#![allow(clippy::unwrap_used)] // a benchmark that cannot set up stops with the reason

#[path = "../tests/support/redis.rs"]
mod test_redis;

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use test_redis::Redis;

type Ws = WebSocketStream<TcpStream>;

/// Users each idle session watches (the next ones by number).
const WATCHED: usize = 5;
/// Sessions that send `hello` at the same instant.
const BURST: usize = 200;
/// Dev logins and WebSocket handshakes in flight while the idle sessions sign in.
const IN_FLIGHT: usize = 128;
/// Longest wait for any one reply.
const WAIT: Duration = Duration::from_secs(20);
/// Messages read while waiting for one reply before giving up (presence and the like).
const MAX_SKIPPED: usize = 1000;
/// Loopback source addresses the clients connect from: 127.0.0.2 up.
const SOURCES: u8 = 8;
/// Pairs of sessions making calls.
const CALL_PAIRS: usize = 50;

struct Opts {
    sessions: usize,
    call_secs: u64,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--serve") {
        serve();
        return;
    }
    let mut opts = Opts {
        sessions: 15_000,
        call_secs: 10,
    };
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--smoke" => {
                opts.sessions = 200;
                opts.call_secs = 2;
            }
            "--sessions" => {
                i += 1;
                opts.sessions = args.get(i).and_then(|v| v.parse().ok()).unwrap_or_else(|| {
                    eprintln!("--sessions needs a number");
                    std::process::exit(2)
                });
            }
            "--bench" => {} // cargo bench passes it to every bench binary
            other => {
                eprintln!("unknown option {other}; options: --sessions N, --smoke");
                std::process::exit(2)
            }
        }
        i += 1;
    }
    let limit = raise_fd_limit();
    println!("open-file limit {limit}");
    let mut node = Node::spawn(None);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let result = runtime.block_on(run(&opts, &node));
    node.stop();
    result.unwrap();
    let redis = Redis::start();
    let mut nodes = [Node::spawn(Some(&redis.url)), Node::spawn(Some(&redis.url))];
    let result = runtime.block_on(two_nodes(&opts, &nodes));
    for n in &mut nodes {
        n.stop();
    }
    drop(redis);
    result.unwrap();
}

/// The child: one signaling node with dev login on a loopback port, printed on stdout,
/// until the generator kills it; on the Redis at `--redis URL` when given.
fn serve() {
    let args: Vec<String> = std::env::args().collect();
    let redis_url = args
        .iter()
        .position(|a| a == "--redis")
        .and_then(|i| args.get(i + 1).cloned());
    let config = turnpike_signaling::SignalingConfig {
        redis_url,
        token_key: b"signaling-bench-key".to_vec(),
        dev_login: true,
        // Calls are the load here, not abuse.
        invites_per_minute: 1_000_000,
        hello_timeout: Duration::from_secs(60),
        ..Default::default()
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("{}", listener.local_addr().unwrap().port());
        turnpike_signaling::serve(listener, config, std::future::pending())
            .await
            .unwrap();
    });
}

struct Node {
    child: Child,
    addr: SocketAddr,
}

impl Node {
    fn spawn(redis: Option<&str>) -> Node {
        let mut command = Command::new(std::env::current_exe().unwrap());
        command.arg("--serve");
        if let Some(url) = redis {
            command.args(["--redis", url]);
        }
        let mut child = command.stdout(Stdio::piped()).spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port: u16 = line.trim().parse().expect("the node prints its port");
        Node {
            child,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        }
    }

    fn rss_kib(&self) -> u64 {
        let text = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Raises the open-file limit to the hard limit: every session is a socket here and one
/// in the node, which inherits the limit.
fn raise_fd_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit read and write the struct we own.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        lim.rlim_cur
    }
}

async fn run(opts: &Opts, node: &Node) -> anyhow::Result<()> {
    let addr = node.addr;
    // Let the node finish starting before the baseline.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = node.rss_kib();
    println!("node RSS before: {before} KiB");

    // 1. N idle signed-in sessions.
    let http = reqwest::Client::new();
    let started = Instant::now();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let n = opts.sessions;
    let opened: Vec<tokio::task::JoinHandle<()>> = futures_util::stream::iter(0..n)
        .map(|i| {
            let http = http.clone();
            let stop = stop_rx.clone();
            async move {
                let token = login(&http, addr, &format!("u{i}")).await?;
                let watch: Vec<String> =
                    (1..=WATCHED).map(|k| format!("u{}", (i + k) % n)).collect();
                let mut ws = connect(addr, i).await?;
                send(
                    &mut ws,
                    json!({"v":1,"id":"h","type":"hello","token":token,"watch":watch}),
                )
                .await?;
                expect(&mut ws, "hello_ok").await?;
                anyhow::Ok(tokio::spawn(idle(ws, stop)))
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .filter_map(|r| async move { r.map_err(|e| eprintln!("session failed: {e:#}")).ok() })
        .collect()
        .await;
    drop(http);
    let signin = started.elapsed();
    println!(
        "{} of {n} sessions signed in in {:.1} s",
        opened.len(),
        signin.as_secs_f64()
    );
    anyhow::ensure!(opened.len() == n, "not every session signed in");
    // Login connections close, the node's allocator settles.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = node.rss_kib();
    let per = (after.saturating_sub(before)) as f64 * 1024.0 / n as f64;
    println!(
        "node RSS with {n} idle sessions: {after} KiB; per session: {:.1} KB ({:.1} KiB)",
        per / 1000.0,
        per / 1024.0
    );

    // 2. hello burst.
    let http = reqwest::Client::new();
    let mut conns = Vec::with_capacity(BURST);
    for i in 0..BURST {
        let token = login(&http, addr, &format!("b{i}")).await?;
        conns.push((connect(addr, i).await?, token));
    }
    drop(http);
    let barrier = Arc::new(tokio::sync::Barrier::new(BURST));
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|(mut ws, token)| {
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                let t = Instant::now();
                send(
                    &mut ws,
                    json!({"v":1,"id":"h","type":"hello","token":token}),
                )
                .await?;
                expect(&mut ws, "hello_ok").await?;
                let took = t.elapsed();
                let _ = ws.close(None).await;
                anyhow::Ok(took)
            })
        })
        .collect();
    let mut hello = Vec::with_capacity(BURST);
    for t in tasks {
        hello.push(t.await??);
    }
    println!(
        "hello→hello_ok, {BURST} at once (with {n} idle sessions open): {}",
        summary(&mut hello)
    );

    // 3. Call setups.
    let pairs = pairs_across([addr, addr], "").await?;
    let (setups, mut ring, took) =
        run_calls("", pairs, Duration::from_secs(opts.call_secs), None).await?;
    let secs = took.as_secs_f64();
    println!(
        "call setups: {setups} in {secs:.1} s with {CALL_PAIRS} pairs: {:.0}/s; invite→ring {}",
        setups as f64 / secs,
        summary(&mut ring)
    );

    let _ = stop_tx.send(true);
    for h in opened {
        let _ = h.await;
    }
    Ok(())
}

/// One pair's calls until `end`, one after the other, or each `every` apart when
/// given: returns how many completed and each invite→ring time. The callee is user
/// `{prefix}callee{p}`; call ids start with the prefix too.
async fn calls(
    prefix: String,
    p: usize,
    mut two: Vec<Ws>,
    end: Instant,
    every: Option<Duration>,
) -> anyhow::Result<(usize, Vec<Duration>)> {
    let mut callee = two.pop().unwrap();
    let mut caller = two.pop().unwrap();
    let mut rings = Vec::new();
    let first = Instant::now();
    // Bounded by time, and by a count no 2-core machine reaches in the time.
    for c in 0..1_000_000usize {
        if let Some(every) = every {
            // Paced from the pair's start, so a slow call does not shift the schedule,
            // and the pairs staggered over the interval, so calls arrive evenly rather
            // than all pairs at once.
            let offset = every.mul_f64(p as f64 / CALL_PAIRS as f64);
            tokio::time::sleep_until((first + offset + every * c as u32).into()).await;
        }
        if Instant::now() >= end {
            return Ok((c, rings));
        }
        let call_id = format!("{prefix}p{p}c{c}");
        let t = Instant::now();
        send(&mut caller, json!({"v":1,"id":format!("i{c}"),"type":"invite","call_id":call_id,"to":format!("{prefix}callee{p}"),"sdp":"v=0 offer"})).await?;
        expect(&mut callee, "invite").await?;
        rings.push(t.elapsed());
        send(&mut callee, json!({"v":1,"id":format!("a{c}"),"type":"accept","call_id":call_id,"sdp":"v=0 answer"})).await?;
        expect(&mut caller, "accept").await?;
        send(
            &mut caller,
            json!({"v":1,"id":format!("h{c}"),"type":"hangup","call_id":call_id}),
        )
        .await?;
        expect(&mut callee, "call_ended").await?;
    }
    Ok((1_000_000, rings))
}

/// Phase 4: [`CALL_PAIRS`] pairs, each caller signed in on `nodes[0]` and its callee
/// on `nodes[1]`: call setups per second at full speed, then invite→ring at half that.
async fn two_nodes(opts: &Opts, nodes: &[Node; 2]) -> anyhow::Result<()> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut pairs = pairs_across([nodes[0].addr, nodes[1].addr], "full").await?;
    let secs = Duration::from_secs(opts.call_secs);
    let (setups, mut ring, took) = run_calls("full", pairs, secs, None).await?;
    let capacity = setups as f64 / took.as_secs_f64();
    println!(
        "two nodes + Redis: call setups: {setups} in {:.1} s with {CALL_PAIRS} pairs: \
         {capacity:.0}/s; invite→ring {}",
        took.as_secs_f64(),
        summary(&mut ring)
    );
    anyhow::ensure!(setups > 0, "no call completed through two nodes");
    // Half the capacity: each pair one call every CALL_PAIRS / (capacity / 2) seconds.
    let every = Duration::from_secs_f64(CALL_PAIRS as f64 / (capacity / 2.0));
    pairs = pairs_across([nodes[0].addr, nodes[1].addr], "half").await?;
    let (setups, mut ring, took) = run_calls("half", pairs, secs, Some(every)).await?;
    println!(
        "two nodes + Redis at 50% of capacity ({:.0} calls/s offered): {setups} calls \
         ({:.0}/s); invite→ring {}",
        capacity / 2.0,
        setups as f64 / took.as_secs_f64(),
        summary(&mut ring)
    );
    Ok(())
}

/// [`CALL_PAIRS`] pairs of signed-in sessions: callers on the node at `nodes[0]`,
/// callees on the one at `nodes[1]` (the same node twice for one-node calls), users
/// named with `prefix` (a fresh one each time, so no earlier session or call lingers).
async fn pairs_across(nodes: [SocketAddr; 2], prefix: &str) -> anyhow::Result<Vec<Vec<Ws>>> {
    let http = reqwest::Client::new();
    let mut pairs = Vec::with_capacity(CALL_PAIRS);
    for p in 0..CALL_PAIRS {
        let mut two = Vec::with_capacity(2);
        for (node, role) in nodes.into_iter().zip(["caller", "callee"]) {
            let token = login(&http, node, &format!("{prefix}{role}{p}")).await?;
            let mut ws = connect(node, p).await?;
            send(
                &mut ws,
                json!({"v":1,"id":"h","type":"hello","token":token}),
            )
            .await?;
            expect(&mut ws, "hello_ok").await?;
            two.push(ws);
        }
        pairs.push(two);
    }
    Ok(pairs)
}

/// Every pair's calls for `secs` (paced `every` apart per pair, when given): calls
/// completed, invite→ring times, and how long it took.
async fn run_calls(
    prefix: &str,
    pairs: Vec<Vec<Ws>>,
    secs: Duration,
    every: Option<Duration>,
) -> anyhow::Result<(usize, Vec<Duration>, Duration)> {
    let started = Instant::now();
    let end = started + secs;
    let tasks: Vec<_> = pairs
        .into_iter()
        .enumerate()
        .map(|(p, two)| tokio::spawn(calls(prefix.to_string(), p, two, end, every)))
        .collect();
    let mut setups = 0usize;
    let mut ring = Vec::new();
    for t in tasks {
        let (count, rings) = t.await??;
        setups += count;
        ring.extend(rings);
    }
    Ok((setups, ring, started.elapsed()))
}

/// An idle session: reads (answering pings) until told to stop, the node closes it, or
/// a bound on time or messages is reached.
async fn idle(mut ws: Ws, mut stop: tokio::sync::watch::Receiver<bool>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3600);
    for _ in 0..100_000 {
        tokio::select! {
            _ = stop.changed() => break,
            _ = tokio::time::sleep_until(deadline) => break,
            m = ws.next() => match m {
                Some(Ok(_)) => {}
                _ => return,
            },
        }
    }
    let _ = ws.close(None).await;
}

async fn login(http: &reqwest::Client, addr: SocketAddr, user: &str) -> anyhow::Result<String> {
    let reply: Value = http
        .post(format!("http://{addr}/v1/dev/login"))
        .json(&json!({"user": user, "device": "d"}))
        .timeout(WAIT)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    reply["token"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("dev login without a token: {reply}"))
}

/// A WebSocket to `/v1/signal` from loopback source address 127.0.0.(2 + i % 8). The
/// generator's own buffers are small too: it holds as many connections as the node.
async fn connect(addr: SocketAddr, i: usize) -> anyhow::Result<Ws> {
    let socket = TcpSocket::new_v4()?;
    let source = Ipv4Addr::new(127, 0, 0, 2 + (i % usize::from(SOURCES)) as u8);
    socket.bind(SocketAddr::from((source, 0)))?;
    let tcp = tokio::time::timeout(WAIT, socket.connect(addr)).await??;
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (ws, _) = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::client_async_with_config(
            format!("ws://{addr}/v1/signal"),
            tcp,
            Some(config),
        ),
    )
    .await??;
    Ok(ws)
}

async fn send(ws: &mut Ws, msg: Value) -> anyhow::Result<()> {
    tokio::time::timeout(WAIT, ws.send(Message::Text(msg.to_string().into()))).await??;
    Ok(())
}

/// Reads until a message of type `kind` (skipping others such as presence); an error
/// message or a close fails.
async fn expect(ws: &mut Ws, kind: &str) -> anyhow::Result<Value> {
    let deadline = tokio::time::Instant::now() + WAIT;
    for _ in 0..MAX_SKIPPED {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| anyhow::anyhow!("no {kind} within {WAIT:?}"))?
            .ok_or_else(|| anyhow::anyhow!("closed while waiting for {kind}"))??;
        let Message::Text(text) = msg else { continue };
        let v: Value = serde_json::from_str(&text)?;
        match v["type"].as_str() {
            Some(t) if t == kind => return Ok(v),
            Some("error") => anyhow::bail!("error while waiting for {kind}: {v}"),
            _ => {}
        }
    }
    anyhow::bail!("{MAX_SKIPPED} other messages while waiting for {kind}")
}

/// "p50 … ms, p99 … ms, max … ms" of the samples.
fn summary(samples: &mut [Duration]) -> String {
    if samples.is_empty() {
        return "no samples".into();
    }
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i].as_secs_f64() * 1000.0
    };
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} samples)",
        at(0.5),
        at(0.99),
        at(1.0),
        samples.len()
    )
}
