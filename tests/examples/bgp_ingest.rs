//! `scripts/bench.sh bgp-ingest`: how fast a speaker takes a full table
//! over one eBGP session, and how much memory it needs, for our `bird`
//! and for BIRD 2 in the same run.
//!
//! For each daemon and each run: two fresh lab namespaces joined by a veth
//! pair; the daemon in one (10.0.0.1, AS 64512, passive, import
//! everything), the injector in the other (10.0.0.2, AS 65001). The
//! injector encodes every UPDATE before it connects, establishes the
//! session, then writes them as fast as TCP takes them. Times:
//! - ingest: from the first UPDATE byte written to the daemon reporting
//!   every prefix in its table (our `CountRoutes` Loc-RIB count; BIRD's
//!   "imported" counter of the protocol, read on its control socket);
//! - withdraw: from the first withdrawal written to the count reaching 0.
//!
//! Both counters are read every 2 ms over a Unix socket (no process
//! spawned per poll). Peak RSS is the daemon's `VmHWM` at the end; CPU
//! time its user + system time over the whole run (our daemon uses two
//! threads for this, BIRD one, so CPU time is the work comparison and the
//! ingest time the latency one).
//!
//! With `--with-watcher`, a consumer of our route stream (what felix runs,
//! `proto::routes_client::watch`) is subscribed during the runs, and the
//! time until it holds every route ("stream") is reported too; BIRD has no
//! counterpart in this benchmark (its table is not exported anywhere).
//!
//! ```text
//! bgp_ingest [--routes N] [--per-update K] [--runs R] [--only ours|bird]
//!            [--with-watcher] [--bird-bin PATH]
//! ```
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bird::packet::Family;
use bird::packet::aspath::AsPath;
use bird::packet::attributes::PathAttrs;
use bird::packet::capability::Capability;
use bird::packet::open::Open;
use bird::packet::{nlri, update};
use bytes::Bytes;
use ipnetwork::{IpNetwork, Ipv4Network};
use lab::{Netns, NsProcess};
use proto::bird::CountRoutesRequest;
use proto::bird::bird_client::BirdClient;

const DAEMON: &str = "10.0.0.1";
const INJECTOR: &str = "10.0.0.2";
const LOCAL_AS: u32 = 64512;
const PEER_AS: u32 = 65001;
/// Prefixes are /24s in 1.0.0.0 - 126.255.255.0, a range no speaker
/// treats as martian.
const SPACE: u32 = 126 * 65536;
/// A prime, so `i * STRIDE mod SPACE` visits distinct /24s, scattered.
const STRIDE: u32 = 1_000_003;

struct Args {
    routes: u32,
    per_update: usize,
    runs: usize,
    only: Option<String>,
    with_watcher: bool,
    bird_bin: PathBuf,
}

fn args() -> Result<Args> {
    let mut a = Args {
        routes: 1_000_000,
        per_update: usize::MAX,
        runs: 3,
        only: None,
        with_watcher: false,
        bird_bin: std::env::current_exe()?
            .parent()
            .and_then(Path::parent)
            .map(|d| d.join("bird"))
            .context("cannot locate target/<profile>/bird")?,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().with_context(|| format!("{k} needs a value"));
        match k.as_str() {
            "--routes" => a.routes = v()?.parse()?,
            "--per-update" => a.per_update = v()?.parse()?,
            "--runs" => a.runs = v()?.parse()?,
            "--only" => a.only = Some(v()?),
            "--bird-bin" => a.bird_bin = v()?.into(),
            "--with-watcher" => a.with_watcher = true,
            "-h" | "--help" => {
                println!(
                    "bgp_ingest [--routes N] [--per-update K] [--runs R] [--only ours|bird] [--with-watcher] [--bird-bin PATH]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}"),
        }
    }
    if a.routes == 0 || a.routes > SPACE {
        bail!("--routes must be 1..={SPACE}");
    }
    Ok(a)
}

/// The pre-encoded session: announcements and withdrawals.
struct Load {
    announce: Vec<u8>,
    withdraw: Vec<u8>,
    updates: usize,
}

fn prefix(i: u32) -> IpNetwork {
    let j = ((u64::from(i) * u64::from(STRIDE)) % u64::from(SPACE)) as u32;
    let addr = Ipv4Addr::from((1u32 << 24) + (j << 8));
    IpNetwork::V4(Ipv4Network::new(addr, 24).unwrap())
}

fn encode(routes: u32, per_update: usize) -> Load {
    let prefixes: Vec<IpNetwork> = (0..routes).map(prefix).collect();
    let mut announce = Vec::new();
    let mut updates = 0;
    // As many prefixes per UPDATE as fit (or --per-update), each UPDATE
    // with its own AS path, so attribute handling is exercised too.
    let mut rest = &prefixes[..];
    let mut k = 0u32;
    while !rest.is_empty() {
        let attrs = PathAttrs {
            as_path: AsPath::sequence([PEER_AS, 64600 + (k % 400), 4_200_000_000 + k]),
            next_hop: Some(INJECTOR.parse().unwrap()),
            med: Some(k % 7),
            ..PathAttrs::default()
        };
        let mut common = bytes::BytesMut::new();
        attrs.encode(&mut common, true, true);
        let room = bird::packet::MAX_MESSAGE_LEN - bird::packet::HEADER_LEN - 4 - common.len();
        let mut used = 0;
        let mut sent = 0;
        for p in rest.iter().take(per_update) {
            let l = nlri::encoded_len(p);
            if used + l > room {
                break;
            }
            used += l;
            sent += 1;
        }
        let msgs =
            update::encode_announce(&attrs, &rest[..sent], Family::Ipv4Unicast, true).unwrap();
        assert_eq!(msgs.len(), 1, "one UPDATE per attribute set");
        let first = &msgs[0];
        announce.extend_from_slice(first);
        updates += 1;
        rest = &rest[sent..];
        k += 1;
    }
    let withdraw: Vec<u8> = update::encode_withdraw(&prefixes, Family::Ipv4Unicast)
        .into_iter()
        .flat_map(|b: Bytes| b.to_vec())
        .collect();
    Load {
        announce,
        withdraw,
        updates,
    }
}

fn read_msg(s: &mut TcpStream) -> Result<(u8, Vec<u8>)> {
    let mut h = [0u8; 19];
    s.read_exact(&mut h)?;
    let len = usize::from(u16::from_be_bytes([h[16], h[17]]));
    let mut body = vec![0; len.saturating_sub(19)];
    s.read_exact(&mut body)?;
    Ok((h[18], body))
}

fn keepalive() -> [u8; 19] {
    let mut k = [0xffu8; 19];
    k[16] = 0;
    k[17] = 19;
    k[18] = 4;
    k
}

/// Connects and establishes the session; returns the stream.
fn establish() -> Result<TcpStream> {
    let addr = (DAEMON.parse::<IpAddr>()?, 179);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut s = loop {
        match TcpStream::connect(addr) {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(e).context("connecting to the daemon"),
        }
    };
    s.set_nodelay(true)?;
    let open = Open::new(
        PEER_AS,
        240,
        INJECTOR.parse()?,
        vec![
            Capability::multiprotocol(Family::Ipv4Unicast),
            Capability::FourOctetAs(PEER_AS),
        ],
    );
    s.write_all(&open.encode())?;
    let (t, _) = read_msg(&mut s)?;
    if t != 1 {
        bail!("expected OPEN, got message type {t}");
    }
    s.write_all(&keepalive())?;
    loop {
        let (t, b) = read_msg(&mut s)?;
        match t {
            4 => return Ok(s),
            3 => bail!("NOTIFICATION {b:?} while establishing"),
            _ => {}
        }
    }
}

/// Reads and discards what the daemon sends (End-of-RIB, KEEPALIVEs).
fn drain(mut s: TcpStream) {
    let mut sink = [0u8; 4096];
    while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
}

trait Counter {
    fn count(&mut self) -> Result<u64>;
}

struct OursCounter {
    rt: tokio::runtime::Runtime,
    client: BirdClient<tonic::transport::Channel>,
}

impl Counter for OursCounter {
    fn count(&mut self) -> Result<u64> {
        let r = self
            .rt
            .block_on(self.client.count_routes(CountRoutesRequest {}))?;
        Ok(r.into_inner().loc_rib_ipv4)
    }
}

struct BirdCounter {
    rd: BufReader<UnixStream>,
    wr: UnixStream,
}

impl BirdCounter {
    fn connect(path: &Path) -> Result<BirdCounter> {
        let s = UnixStream::connect(path)?;
        let mut c = BirdCounter {
            rd: BufReader::new(s.try_clone()?),
            wr: s,
        };
        let mut greeting = String::new();
        c.rd.read_line(&mut greeting)?;
        Ok(c)
    }
}

impl Counter for BirdCounter {
    fn count(&mut self) -> Result<u64> {
        self.wr.write_all(b"show protocols all inj\n")?;
        let mut n = 0;
        loop {
            let mut line = String::new();
            if self.rd.read_line(&mut line)? == 0 {
                bail!("BIRD closed its control socket");
            }
            if let Some(rest) = line.trim().strip_prefix("Routes:") {
                n = rest
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
            }
            if line.starts_with("0000") {
                return Ok(n);
            }
        }
    }
}

/// Polls until the count satisfies `done`; returns when it did.
fn wait_count(
    c: &mut dyn Counter,
    done: impl Fn(u64) -> bool,
    timeout: Duration,
) -> Result<Instant> {
    let deadline = Instant::now() + timeout;
    loop {
        let n = c.count()?;
        if done(n) {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            bail!("timed out with {n} routes");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// utime + stime of `pid` (/proc/<pid>/stat fields 14 and 15).
fn cpu_time(pid: u32) -> Result<Duration> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces; fields after it are
    // counted from its closing parenthesis.
    let rest = s.rsplit_once(')').map(|(_, r)| r).context("bad stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 =
        f.get(11).context("utime")?.parse::<u64>()? + f.get(12).context("stime")?.parse::<u64>()?;
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(Duration::from_millis(ticks * 1000 / hz))
}

fn vm_hwm_kib(pid: u32) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmHWM")
}

struct Sample {
    ingest: Duration,
    withdraw: Duration,
    hwm_kib: u64,
    /// The daemon's CPU time (user + system) over the whole run, start-up
    /// included.
    cpu: Duration,
    /// When the route-stream consumer held every route.
    stream: Option<Duration>,
}

/// A route-stream consumer on its own thread: reports when it first holds
/// `want` routes.
fn watcher(
    socket: PathBuf,
    want: usize,
) -> (
    mpsc::Receiver<Instant>,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio_stream::StreamExt;
    let (tx, rx) = mpsc::channel();
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut s = proto::routes_client::watch(socket);
            let mut held = std::collections::HashSet::new();
            let mut reported = false;
            while !stop2.load(Ordering::Relaxed) {
                let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(100), s.next()).await
                else {
                    continue;
                };
                match ev {
                    proto::routes_client::RouteEvent::Replace(all) => {
                        held = all.into_iter().map(|(p, _)| p).collect();
                    }
                    proto::routes_client::RouteEvent::Changes(changes) => {
                        for (p, nh) in changes {
                            if nh.is_some() {
                                held.insert(p);
                            } else {
                                held.remove(&p);
                            }
                        }
                    }
                    _ => {}
                }
                if !reported && held.len() >= want {
                    reported = true;
                    let _ = tx.send(Instant::now());
                }
            }
        });
    });
    (rx, stop)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Which {
    Ours,
    Bird,
}

fn start(which: Which, ns: &Netns, dir: &Path, a: &Args) -> Result<(NsProcess, Box<dyn Counter>)> {
    let log = dir.join("daemon.log");
    match which {
        Which::Ours => {
            let cfg = dir.join("bird.toml");
            std::fs::write(
                &cfg,
                format!(
                    "router_id = \"{DAEMON}\"\nasn = {LOCAL_AS}\nlisten = \"{DAEMON}:179\"\n\
                     pools = [\"192.168.0.0/16\"]\nstartup_deferral = 0\n\
                     accept_node_networks = true\n\
                     [[peers]]\naddress = \"{INJECTOR}\"\nasn = {PEER_AS}\npassive = true\n\
                     hold_time = 240\nfamilies = [\"ipv4\"]\nmax_prefixes = {SPACE}\n"
                ),
            )?;
            let sock = dir.join("bird.sock");
            let bin = a.bird_bin.to_str().context("bird path")?;
            let p = ns.spawn(
                bin,
                &[
                    "run",
                    "--config",
                    cfg.to_str().unwrap(),
                    "--socket",
                    sock.to_str().unwrap(),
                ],
                Some(&log),
            )?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let deadline = Instant::now() + Duration::from_secs(20);
            let client = loop {
                if let Ok(ch) = rt.block_on(proto::uds::connect(&sock)) {
                    break BirdClient::new(ch);
                }
                if Instant::now() > deadline {
                    bail!("our bird did not start: {}", std::fs::read_to_string(&log)?);
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            Ok((p, Box::new(OursCounter { rt, client })))
        }
        Which::Bird => {
            let cfg = dir.join("bird.conf");
            std::fs::write(
                &cfg,
                format!(
                    "router id {DAEMON};\nprotocol device {{}}\n\
                     protocol bgp inj {{\n  local {DAEMON} as {LOCAL_AS}; neighbor {INJECTOR} as {PEER_AS};\n  \
                     passive on; hold time 240;\n  ipv4 {{ import all; export none; }};\n}}\n"
                ),
            )?;
            let sock = dir.join("bird.ctl");
            let p = ns.spawn(
                "/usr/sbin/bird",
                &[
                    "-f",
                    "-c",
                    cfg.to_str().unwrap(),
                    "-s",
                    sock.to_str().unwrap(),
                ],
                Some(&log),
            )?;
            let deadline = Instant::now() + Duration::from_secs(20);
            let counter = loop {
                if let Ok(c) = BirdCounter::connect(&sock) {
                    break c;
                }
                if Instant::now() > deadline {
                    bail!("BIRD did not start: {}", std::fs::read_to_string(&log)?);
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            Ok((p, Box::new(counter)))
        }
    }
}

fn run_once(which: Which, a: &Args, load: &Load) -> Result<Sample> {
    let tag = match which {
        Which::Ours => "bio",
        Which::Bird => "bib",
    };
    let d = Netns::create(&format!("{tag}d"))?;
    let i = Netns::create(&format!("{tag}i"))?;
    lab::veth(&d, "eth0", &i, "eth0")?;
    d.ip(&["addr", "add", &format!("{DAEMON}/24"), "dev", "eth0"])?;
    i.ip(&["addr", "add", &format!("{INJECTOR}/24"), "dev", "eth0"])?;
    let dir = tempfile::tempdir()?;
    let (mut proc, mut counter) = start(which, &d, dir.path(), a)?;
    let watch = (a.with_watcher && which == Which::Ours)
        .then(|| watcher(dir.path().join("bird.sock"), a.routes as usize));

    let announce = load.announce.clone();
    let withdraw = load.withdraw.clone();
    let (tx, rx) = mpsc::channel::<Result<Instant>>();
    let (go_withdraw, withdraw_rx) = mpsc::channel::<()>();
    let injector = i.spawn_thread(move || {
        let run = || -> Result<()> {
            let s = establish()?;
            let reader = s.try_clone()?;
            std::thread::spawn(move || drain(reader));
            let mut w = s;
            let t0 = Instant::now();
            w.write_all(&announce)?;
            tx.send(Ok(t0)).ok();
            withdraw_rx.recv().ok();
            let t1 = Instant::now();
            w.write_all(&withdraw)?;
            tx.send(Ok(t1)).ok();
            withdraw_rx.recv().ok();
            Ok(())
        };
        if let Err(e) = run() {
            let _ = tx.send(Err(e));
        }
    })?;
    let routes = u64::from(a.routes);
    let t0 = rx.recv_timeout(Duration::from_secs(60))??;
    let done = wait_count(counter.as_mut(), |n| n >= routes, Duration::from_secs(120))?;
    let ingest = done - t0;
    let stream = match &watch {
        Some((rx, _)) => Some(rx.recv_timeout(Duration::from_secs(120))? - t0),
        None => None,
    };
    go_withdraw.send(()).ok();
    let t1 = rx.recv_timeout(Duration::from_secs(60))??;
    let done = wait_count(counter.as_mut(), |n| n == 0, Duration::from_secs(120))?;
    let withdraw = done - t1;
    let hwm_kib = vm_hwm_kib(proc.pid())?;
    let cpu = cpu_time(proc.pid())?;
    go_withdraw.send(()).ok();
    let _ = injector.join();
    if let Some((_, stop)) = &watch {
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    proc.kill();
    Ok(Sample {
        ingest,
        withdraw,
        hwm_kib,
        cpu,
        stream,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let a = args()?;
    let _ = lab::sweep_stale();
    let load = encode(a.routes, a.per_update);
    let version = std::process::Command::new("/usr/sbin/bird")
        .arg("--version")
        .output()
        .map(|o| {
            let s = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            s.trim().replace("BIRD version ", "")
        })
        .unwrap_or_else(|_| "?".into());
    println!(
        "bgp-ingest: {} IPv4 prefixes in {} UPDATEs ({:.1} MB), withdrawn in {:.1} MB; {} run(s) each",
        a.routes,
        load.updates,
        load.announce.len() as f64 / 1e6,
        load.withdraw.len() as f64 / 1e6,
        a.runs
    );
    let mut results: Vec<(Which, Vec<Sample>)> = Vec::new();
    for which in [Which::Ours, Which::Bird] {
        let name = match which {
            Which::Ours => "ours",
            Which::Bird => "bird",
        };
        if a.only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        let mut samples = Vec::new();
        for r in 0..a.runs {
            let s = run_once(which, &a, &load).with_context(|| format!("{name} run {}", r + 1))?;
            println!(
                "  {:<7} run {}: ingest {:>8.1} ms  withdraw {:>8.1} ms  peak RSS {:>6.1} MB  CPU {:>6.0} ms{}",
                if which == Which::Ours { "ours" } else { "BIRD" },
                r + 1,
                s.ingest.as_secs_f64() * 1e3,
                s.withdraw.as_secs_f64() * 1e3,
                s.hwm_kib as f64 / 1024.0,
                s.cpu.as_secs_f64() * 1e3,
                s.stream
                    .map(|d| format!("  stream {:>8.1} ms", d.as_secs_f64() * 1e3))
                    .unwrap_or_default()
            );
            samples.push(s);
        }
        results.push((which, samples));
    }
    let med = |s: &[Sample], f: &dyn Fn(&Sample) -> f64| median(s.iter().map(f).collect());
    let row = |label: &str, f: &dyn Fn(&Sample) -> f64, unit: &str| {
        let vals: Vec<f64> = results.iter().map(|(_, s)| med(s, f)).collect();
        let ratio = if vals.len() == 2 && vals[1] > 0.0 {
            format!("{:.2}×", vals[0] / vals[1])
        } else {
            "-".into()
        };
        let cells: Vec<String> = vals.iter().map(|v| format!("{v:>10.1} {unit}")).collect();
        println!("{label:<12} {}  {ratio}", cells.join("  "));
    };
    println!();
    let header: Vec<String> = results
        .iter()
        .map(|(w, _)| match w {
            Which::Ours => format!("{:>13}", "ours"),
            Which::Bird => format!("{:>13}", format!("BIRD {version}")),
        })
        .collect();
    println!(
        "{:<12} {}  ratio (ours/BIRD), medians",
        "",
        header.join("  ")
    );
    row("ingest", &|s| s.ingest.as_secs_f64() * 1e3, "ms");
    row("withdraw", &|s| s.withdraw.as_secs_f64() * 1e3, "ms");
    row("peak RSS", &|s| s.hwm_kib as f64 / 1024.0, "MB");
    row("CPU time", &|s| s.cpu.as_secs_f64() * 1e3, "ms");
    Ok(())
}
