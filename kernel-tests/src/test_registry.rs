//! A local registry for tests: Debian's `docker-registry` on 127.0.0.1 with a random port and
//! temporary storage (optionally htpasswd-protected), stopped and removed on drop. Images are
//! put in with `skopeo` (from the fixtures' OCI layout), so what berth pulls was written by
//! another tool.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct TestRegistry {
    dir: tempfile::TempDir,
    child: Child,
    pub port: u16,
    address: String,
    /// user, password when protected.
    pub credentials: Option<(String, String)>,
}

use crate::harness::free_port;

impl TestRegistry {
    pub fn start() -> TestRegistry {
        Self::start_with(None)
    }

    /// With `credentials`, Basic authentication over an htpasswd file (bcrypt, by `htpasswd`).
    pub fn start_with(credentials: Option<(&str, &str)>) -> TestRegistry {
        Self::launch(Launch {
            credentials,
            ..Default::default()
        })
    }

    /// A registry speaking TLS only, on `address` inside `netns` (a name that is not loopback,
    /// so berthd checks its certificate), serving the images of `storage` (another test
    /// registry's, filled by skopeo). Its certificate is signed by [`TestRegistry::ca`].
    pub fn start_tls_in(
        netns: &crate::test_netns::TestNetns,
        address: &str,
        storage: &std::path::Path,
    ) -> TestRegistry {
        Self::launch(Launch {
            tls_address: Some(address),
            netns: Some(netns),
            storage: Some(storage),
            ..Default::default()
        })
    }

    fn launch(how: Launch) -> TestRegistry {
        let dir = tempfile::tempdir().expect("temporary directory");
        let address = how.tls_address.unwrap_or("127.0.0.1");
        let port = match how.netns {
            Some(ns) => ns.inside(free_port),
            None => free_port(),
        };
        let storage = how
            .storage
            .map(std::path::Path::to_path_buf)
            .unwrap_or_else(|| dir.path().join("storage"));
        let mut config = format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {address}:{port}\n",
            storage.display()
        );
        if how.tls_address.is_some() {
            make_certificates(dir.path(), address);
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                dir.path().join("server.crt").display(),
                dir.path().join("server.key").display()
            ));
        }
        if let Some((user, password)) = how.credentials {
            let htpasswd = dir.path().join("htpasswd");
            let status = Command::new("htpasswd")
                .args(["-Bbc", &htpasswd.display().to_string(), user, password])
                .stderr(Stdio::null())
                .status()
                .expect("htpasswd (apache2-utils)");
            assert!(status.success(), "htpasswd failed");
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("registry config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("log");
        let mut cmd = Command::new("docker-registry");
        cmd.arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        let _ns = how.netns.map(|ns| ns.enter_on_spawn(&mut cmd));
        let child = cmd
            .spawn()
            .expect("docker-registry (Debian package docker-registry)");
        let mut r = TestRegistry {
            dir,
            child,
            port,
            address: address.to_string(),
            credentials: how.credentials.map(|(u, p)| (u.to_string(), p.to_string())),
        };
        let listening = || std::net::TcpStream::connect((address, port)).is_ok();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let up = match how.netns {
                Some(ns) => ns.inside(listening),
                None => listening(),
            };
            // Listening, and ours: a registry that failed to bind has exited.
            if let Ok(Some(status)) = r.child.try_wait() {
                panic!("docker-registry exited ({status}):\n{}", r.log());
            }
            if up {
                return r;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("docker-registry did not listen on {port}:\n{}", r.log());
    }

    /// The CA that signed a TLS registry's certificate (PEM).
    pub fn ca(&self) -> std::path::PathBuf {
        self.dir.path().join("ca.crt")
    }

    pub fn host(&self) -> String {
        format!("{}:{}", self.address, self.port)
    }

    /// The registry's filesystem storage.
    pub fn storage(&self) -> std::path::PathBuf {
        self.dir.path().join("storage")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// `skopeo copy` of the busybox fixture to `repo:tag` here; the manifest digest.
    pub fn push_busybox(&self, repo_tag: &str) -> String {
        let layout = &crate::fixtures::busybox().oci_layout;
        let mut cmd = Command::new("skopeo");
        cmd.args([
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            "--format",
            "v2s2",
        ]);
        if let Some((u, p)) = &self.credentials {
            cmd.arg(format!("--dest-creds={u}:{p}"));
        }
        let digest_file = self.dir.path().join("digest");
        cmd.arg(format!("--digestfile={}", digest_file.display()))
            .arg(format!("oci:{}:latest", layout.display()))
            .arg(format!("docker://{}/{repo_tag}", self.host()));
        let out = cmd.output().expect("skopeo");
        assert!(
            out.status.success(),
            "skopeo copy: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read_to_string(digest_file)
            .expect("digest file")
            .trim()
            .to_string()
    }
}

#[derive(Default)]
struct Launch<'a> {
    credentials: Option<(&'a str, &'a str)>,
    tls_address: Option<&'a str>,
    netns: Option<&'a crate::test_netns::TestNetns>,
    storage: Option<&'a std::path::Path>,
}

/// A CA and a server certificate for `address` (an IP), signed by it, with openssl.
fn make_certificates(dir: &std::path::Path, address: &str) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509", "-days", "2", "-subj", "/CN=berth test CA"];
    ca.extend_from_slice(&ec);
    ca.extend_from_slice(&["-keyout", "ca.key", "-out", "ca.crt"]);
    openssl(&ca);
    let subject = format!("/CN={address}");
    let mut csr = vec!["req", "-subj", subject.as_str()];
    csr.extend_from_slice(&ec);
    csr.extend_from_slice(&["-keyout", "server.key", "-out", "server.csr"]);
    openssl(&csr);
    std::fs::write(
        dir.join("san.ext"),
        format!("subjectAltName=IP:{address}\n"),
    )
    .expect("san.ext");
    openssl(&[
        "x509",
        "-req",
        "-days",
        "2",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-extfile",
        "san.ext",
        "-out",
        "server.crt",
    ]);
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP proxy on 127.0.0.1 in front of a registry that can break blob downloads: the next
/// `cuts` responses for a blob are cut after `after` bytes, or (`down`) every connection is
/// refused, as a registry that went away. It records each request's line and `Range`.
pub struct CuttingProxy {
    pub port: u16,
    state: std::sync::Arc<std::sync::Mutex<ProxyState>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Default)]
struct ProxyState {
    /// (blob digest, bytes of the response let through, responses still to cut)
    cut: Option<(String, usize, usize)>,
    /// (blob digest, bytes let through before the response stops until released)
    stall: Option<(String, usize)>,
    /// Bytes held by a stalled response so far (0 until one stalls).
    stalled_at: usize,
    down: bool,
    /// "GET /v2/…" plus " Range: bytes=N-" when asked.
    requests: Vec<String>,
}

impl CuttingProxy {
    pub fn start(upstream: u16) -> CuttingProxy {
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let port = listener.local_addr().expect("address").port();
        let state = std::sync::Arc::new(std::sync::Mutex::new(ProxyState::default()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (s, st) = (state.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let s = s.clone();
                        std::thread::spawn(move || proxy_one(client, upstream, &s));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        CuttingProxy {
            port,
            state,
            stop,
            thread: Some(thread),
        }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Cuts the next `times` responses for `digest` after `after` bytes.
    pub fn cut_blob(&self, digest: &str, after: usize, times: usize) {
        self.state.lock().unwrap().cut = Some((digest.to_string(), after, times));
    }

    /// Holds the next response for `digest` after `after` bytes until [`CuttingProxy::release`].
    pub fn stall_blob(&self, digest: &str, after: usize) {
        let mut s = self.state.lock().unwrap();
        s.stall = Some((digest.to_string(), after));
        s.stalled_at = 0;
    }

    /// Whether a stalled response has reached its stop.
    pub fn stalled(&self) -> bool {
        self.state.lock().unwrap().stalled_at > 0
    }

    pub fn release(&self) {
        self.state.lock().unwrap().stall = None;
    }

    /// Every new connection is closed at once (`true`), or served again (`false`).
    pub fn set_down(&self, down: bool) {
        self.state.lock().unwrap().down = down;
    }

    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn proxy_one(mut client: std::net::TcpStream, upstream: u16, state: &std::sync::Mutex<ProxyState>) {
    use std::io::{Read, Write};
    let _ = client.set_nonblocking(false);
    if state.lock().unwrap().down {
        return;
    }
    // The request head (GETs and HEADs only come through here whole; bodies are piped).
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match client.read(&mut byte) {
            // A TLS hello (berthd probes loopback registries for TLS): plain HTTP here, so
            // the connection ends as docker-registry's own would.
            Ok(1) if head.is_empty() && byte[0] == 0x16 => return,
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let line = text.lines().next().unwrap_or("").to_string();
    let range = text
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("range:"))
        .map(|l| format!(" Range: {}", l[6..].trim()))
        .unwrap_or_default();
    let (limit, stall) = {
        let mut s = state.lock().unwrap();
        s.requests.push(format!("{line}{range}"));
        let limit = match &mut s.cut {
            Some((digest, after, times)) if *times > 0 && line.contains(digest.as_str()) => {
                *times -= 1;
                Some(*after)
            }
            _ => None,
        };
        let stall = match &s.stall {
            Some((digest, after)) if line.contains(digest.as_str()) => Some(*after),
            _ => None,
        };
        (limit, stall)
    };
    let Ok(mut server) = std::net::TcpStream::connect(("127.0.0.1", upstream)) else {
        return;
    };
    if server.write_all(&head).is_err() {
        return;
    }
    let (Ok(mut client_in), Ok(mut server_out)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut client_in, &mut server_out);
        let _ = server_out.shutdown(std::net::Shutdown::Write);
    });
    let mut sent = 0usize;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match server.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let n = limit.map_or(n, |l| n.min(l - sent));
        if let Some(at) = stall.filter(|at| sent + n > *at) {
            // Up to the stop, then hold the rest until released or the client goes away.
            let first = at.saturating_sub(sent);
            if client.write_all(&buf[..first]).is_err() {
                break;
            }
            state.lock().unwrap().stalled_at = at.max(1);
            while state.lock().unwrap().stall.is_some() {
                std::thread::sleep(Duration::from_millis(10));
            }
            if client.write_all(&buf[first..n]).is_err() {
                break;
            }
            sent += n;
            continue;
        }
        if client.write_all(&buf[..n]).is_err() {
            break;
        }
        sent += n;
        if limit.is_some_and(|l| sent >= l) {
            break;
        }
    }
    let _ = client.shutdown(std::net::Shutdown::Both);
    let _ = server.shutdown(std::net::Shutdown::Both);
}
