//! Liveness of the nodes of a multi-node run (docs/algorithm.md §4.4): burn-collective's
//! operations wait for a node that went away (or fail on its runtime threads), so shear keeps a
//! connection of its own from every node to node 0 — lines of text over TCP, a ping every
//! [`PING`] — and knows at once when one closes without saying `done`: node 0 tells the others
//! which node it lost, and every node stops within seconds with one line naming it, instead of
//! waiting for ever.
//!
//! Hand-written (about 150 lines of std TCP): burn-communication's websocket layer has no
//! notion of a lost peer, and a crate for this would be heavier than the code.
//!
//! The port: node 0 listens on the coordinator's port + nodes + 1 (the nodes' data services take
//! the ports from the coordinator's + 1 on unless `--node-address` says otherwise).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use shear_train::peers::{host_port, Nodes};

use crate::error::{invalid, PipelineError, Result};

/// How often each side writes a ping.
pub const PING: Duration = Duration::from_secs(2);
/// A connection silent for this long is lost (a machine that stopped without closing it).
pub const SILENCE: Duration = Duration::from_secs(30);
/// How long a node tries to reach node 0's watch.
const CONNECT: Duration = Duration::from_secs(600);

/// The first node found lost in this process, as the line that reports it.
static LOST: OnceLock<String> = OnceLock::new();
/// Whether a watch runs in this process (a panic elsewhere may then be the echo of a loss).
static WATCHING: AtomicBool = AtomicBool::new(false);

/// What to do once a node is found lost (the binary prints the line and exits: the run's
/// threads may be stuck in the collective). Checkpoints are written whole or not at all, so
/// nothing is left half-written.
pub type OnLost = fn(&str);

/// The loss found in this process, if any.
pub fn lost() -> Option<&'static str> {
    LOST.get().map(String::as_str)
}

/// The loss found in this process, waiting up to `wait` for one while a watch runs (`None` at
/// once without a watch).
pub fn wait_lost(wait: Duration) -> Option<&'static str> {
    let until = Instant::now() + wait;
    while WATCHING.load(Ordering::SeqCst) && Instant::now() < until {
        if let Some(l) = lost() {
            return Some(l);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    lost()
}

/// The watch of one node.
pub(crate) struct Watch {
    /// Node 0: a connection per other node; another node: its connection to node 0.
    streams: Arc<Mutex<Vec<TcpStream>>>,
    /// Set once the run ended here: a closed connection is then no loss.
    ended: Arc<AtomicBool>,
}

struct Ctx {
    count: usize,
    ended: Arc<AtomicBool>,
    streams: Arc<Mutex<Vec<TcpStream>>>,
    on_lost: Option<OnLost>,
    abort: Box<dyn Fn() + Send + Sync>,
}

impl Ctx {
    /// Node `rank` is lost: recorded once, told to the others (from node 0), then reported.
    fn lost(&self, rank: usize, how: &str) {
        if self.ended.load(Ordering::SeqCst) {
            return;
        }
        let line = format!(
            "data parallelism: node {rank} of {} went away during the run ({how}); the other \
             nodes stop too (run again with every node to resume from the newest checkpoint)",
            self.count
        );
        if LOST.set(line).is_err() {
            return;
        }
        for s in self
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter_mut()
        {
            let _ = writeln!(s, "lost {rank}");
        }
        (self.abort)();
        if let (Some(f), Some(l)) = (self.on_lost, lost()) {
            f(l);
        }
    }
}

impl Watch {
    /// Starts the watch of this node of `nodes`; `abort` wakes the local peers' collective
    /// operations, `on_lost` is called with the line once a node is lost.
    pub(crate) fn start(
        nodes: &Nodes,
        on_lost: Option<OnLost>,
        abort: Box<dyn Fn() + Send + Sync>,
    ) -> Result<Self> {
        let (host, port) = host_port(&nodes.coordinator)?;
        let Some(watch_port) = (port as usize)
            .checked_add(nodes.count + 1)
            .and_then(|p| u16::try_from(p).ok())
        else {
            return invalid!(
                "coordinator {}: port {port} + {} for the nodes' liveness watch is out of range",
                nodes.coordinator,
                nodes.count + 1
            );
        };
        let ctx = Arc::new(Ctx {
            count: nodes.count,
            ended: Arc::new(AtomicBool::new(false)),
            streams: Arc::new(Mutex::new(Vec::new())),
            on_lost,
            abort,
        });
        WATCHING.store(true, Ordering::SeqCst);
        if nodes.rank == 0 {
            let listener = TcpListener::bind(("0.0.0.0", watch_port)).map_err(|e| {
                PipelineError::Invalid(format!("liveness watch port {watch_port}: {e}"))
            })?;
            let c = ctx.clone();
            spawn("shear-watch-accept", move || accept(listener, c))?;
        } else {
            let stream = connect(host, watch_port)?;
            writeln!(&stream, "node {}", nodes.rank)
                .map_err(|e| PipelineError::Invalid(format!("liveness watch: {e}")))?;
            ctx.streams
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(clone(&stream)?);
            let c = ctx.clone();
            spawn("shear-watch-read", move || read(stream, 0, c))?;
        }
        let c = ctx.clone();
        spawn("shear-watch-ping", move || ping(c))?;
        Ok(Watch {
            streams: ctx.streams.clone(),
            ended: ctx.ended.clone(),
        })
    }

    /// The run ended here (whole or with an error of its own): says `done` to the others.
    pub(crate) fn done(self) {
        self.ended.store(true, Ordering::SeqCst);
        for s in self
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter_mut()
        {
            let _ = writeln!(s, "done");
            let _ = s.flush();
        }
        WATCHING.store(false, Ordering::SeqCst);
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map(|_| ())
        .map_err(|e| PipelineError::Invalid(format!("liveness watch: {e}")))
}

fn clone(s: &TcpStream) -> Result<TcpStream> {
    s.try_clone()
        .map_err(|e| PipelineError::Invalid(format!("liveness watch: {e}")))
}

/// Node `k`'s connection to node 0, tried until [`CONNECT`] (node 0 may start later).
fn connect(host: &str, port: u16) -> Result<TcpStream> {
    let start = Instant::now();
    loop {
        match TcpStream::connect((host, port)) {
            Ok(s) => return Ok(s),
            Err(e) if start.elapsed() > CONNECT => {
                return invalid!("liveness watch: cannot reach node 0 at {host}:{port}: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Node 0: takes every other node's connection and reads it.
fn accept(listener: TcpListener, ctx: Arc<Ctx>) {
    for _ in 1..ctx.count {
        let Ok((stream, _)) = listener.accept() else {
            return;
        };
        let mut first = String::new();
        let mut reader = BufReader::new(match stream.try_clone() {
            Ok(s) => s,
            Err(_) => continue,
        });
        if reader.read_line(&mut first).is_err() {
            continue;
        }
        let Some(rank) = first
            .trim()
            .strip_prefix("node ")
            .and_then(|r| r.parse::<usize>().ok())
        else {
            continue;
        };
        if let Ok(s) = stream.try_clone() {
            ctx.streams
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(s);
        }
        let c = ctx.clone();
        let _ = spawn("shear-watch-read", move || read(stream, rank, c));
    }
}

/// Reads the connection to node `rank` until it says `done`; anything else that ends it is a
/// loss. From node 0, `lost K` names another node it lost.
fn read(stream: TcpStream, rank: usize, ctx: Arc<Ctx>) {
    let _ = stream.set_read_timeout(Some(SILENCE));
    let mut lines = BufReader::new(stream).lines();
    loop {
        match lines.next() {
            Some(Ok(l)) if l == "done" => return,
            Some(Ok(l)) => {
                if let Some(k) = l.strip_prefix("lost ").and_then(|k| k.parse().ok()) {
                    return ctx.lost(k, "node 0 lost its connection");
                }
            }
            Some(Err(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                return ctx.lost(rank, &format!("silent for {} s", SILENCE.as_secs()))
            }
            Some(Err(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
                return ctx.lost(rank, &format!("silent for {} s", SILENCE.as_secs()))
            }
            _ => return ctx.lost(rank, "its connection closed"),
        }
    }
}

/// Pings every connection until the run ends.
fn ping(ctx: Arc<Ctx>) {
    while !ctx.ended.load(Ordering::SeqCst) && lost().is_none() {
        for s in ctx
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter_mut()
        {
            let _ = writeln!(s, "ping");
        }
        std::thread::sleep(PING);
    }
}
