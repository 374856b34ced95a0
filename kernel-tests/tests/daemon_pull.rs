//! `docker pull` and `docker run` of an image berth does not have, from a local registry
//! (Debian's docker-registry on 127.0.0.1; the image put there by skopeo).

use berth_kernel_tests::test_daemon::TestDaemon;
use berth_kernel_tests::test_registry::{CuttingProxy, TestRegistry};

#[test]
fn pull_from_a_local_registry_and_run() {
    let registry = TestRegistry::start();
    let digest = registry.push_busybox("tools/busybox:1");
    let d = TestDaemon::start();
    let image = format!("{}/tools/busybox:1", registry.host());
    let r = d.docker(&["pull", &image]);
    assert_eq!(r.code, 0, "{r:?}\n{}", d.log());
    assert!(
        r.stdout.contains(&format!("Digest: {digest}")),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("Downloaded newer image for"),
        "{}",
        r.stdout
    );
    let digests = d.docker_ok(&["inspect", "-f", "{{json .RepoDigests}}", &image]);
    assert_eq!(
        digests.trim(),
        format!("[\"{}/tools/busybox@{digest}\"]", registry.host())
    );
    assert_eq!(
        d.docker_ok(&["run", "--rm", &image, "echo", "pulled"]),
        "pulled\n"
    );
    // By digest, and a second pull that finds every layer present.
    let by_digest = format!("{}/tools/busybox@{digest}", registry.host());
    assert_eq!(
        d.docker_ok(&["run", "--rm", &by_digest, "echo", "by digest"]),
        "by digest\n"
    );
    let again = d.docker_ok(&["pull", &image]);
    assert!(again.contains("Already exists"), "{again}");
    // `docker run` of an image berthd does not have: the CLI's 404-then-pull path.
    registry.push_busybox("other/box:latest");
    let other = format!("{}/other/box", registry.host());
    let r = d.docker(&["run", "--rm", &other, "echo", "pulled on demand"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout.lines().last(), Some("pulled on demand"), "{r:?}");
    assert!(r.stderr.contains("Unable to find image"), "{r:?}");
    // berth's own CLI pulls too.
    d.docker_ok(&["rmi", "-f", &other]);
    let r = d.berth(&["run", "--rm", &other, "echo", "berth pulled"]);
    assert_eq!(
        (r.code, r.stdout.lines().last()),
        (0, Some("berth pulled")),
        "{r:?}"
    );
}

#[test]
fn pull_errors_are_clear_and_leave_no_image() {
    let registry = TestRegistry::start();
    let d = TestDaemon::start();
    let missing = format!("{}/nothing/here:1", registry.host());
    let r = d.docker(&["pull", &missing]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("not found"), "{r:?}");
    // Registries off this host are blocked for the test daemons: refused before any traffic
    // (not even a name lookup).
    let r = d.docker(&["pull", "registry.example.invalid/x:1"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("is blocked"), "{r:?}");
    let r = d.docker(&["pull", "busybox"]);
    assert!(
        r.stderr.contains("registry-1.docker.io is blocked"),
        "{r:?}"
    );
    // The registry goes away: an error, no image, and a retry once it is back succeeds.
    let digest = registry.push_busybox("gone/box:1");
    let image = format!("{}/gone/box:1", registry.host());
    let port = registry.port;
    drop(registry);
    let r = d.docker(&["pull", &image]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains(&format!("127.0.0.1:{port}")), "{r:?}");
    assert_eq!(d.docker_ok(&["images", "-q"]), "");
    let _ = digest;
}

#[test]
fn pull_with_credentials() {
    let registry = TestRegistry::start_with(Some(("berth", "s3cret")));
    let digest = registry.push_busybox("private/box:1");
    let d = TestDaemon::start();
    let image = format!("{}/private/box:1", registry.host());
    let r = d.docker(&["pull", &image]);
    assert_ne!(r.code, 0, "pulled without credentials");
    assert!(r.stderr.contains("authentication required"), "{r:?}");
    // The Docker CLI sends X-Registry-Auth from its config after `docker login`; berth's API
    // takes the header as dockerd does.
    let auth = base64_url(r#"{"username":"berth","password":"s3cret"}"#);
    let (status, body) = d
        .raw(
            &format!("POST /v1.47/images/create?fromImage={}%2Fprivate%2Fbox&tag=1 HTTP/1.1\r\nHost: x\r\nX-Registry-Auth: {auth}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", registry.host()),
            b"",
        )
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&format!("Digest: {digest}")), "{body}");
    assert_eq!(
        d.docker_ok(&["run", "--rm", &image, "echo", "private"]),
        "private\n"
    );
}

#[test]
fn login_is_checked_by_the_daemon_and_shared_by_both_clis() {
    let registry = TestRegistry::start_with(Some(("berth", "s3cret")));
    registry.push_busybox("private/box:1");
    let d = TestDaemon::start();
    let image = format!("{}/private/box:1", registry.host());
    let config = d.docker_config().join("config.json");
    let host = registry.host();

    let r = d.berth_stdin(
        &["login", "-u", "berth", "--password-stdin", &host],
        b"wrong\n",
    );
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("incorrect username or password"), "{r:?}");
    assert!(!config.exists(), "a failed login was stored");

    // berth's login: checked by berthd (POST /auth), stored in Docker's config.json (0600),
    // used by the docker CLI's pull.
    let r = d.berth_stdin(
        &["login", "-u", "berth", "--password-stdin", &host],
        b"s3cret\n",
    );
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (0, "Login Succeeded\n"),
        "{r:?}"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&config).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    assert_eq!(
        stored["auths"][&host]["auth"],
        base64_std("berth:s3cret").as_str()
    );
    let r = d.docker(&["pull", &image]);
    assert_eq!(r.code, 0, "{r:?}");
    d.docker_ok(&["rmi", &image]);

    // Logged out: pulls are refused again.
    let r = d.berth(&["logout", &host]);
    assert_eq!(r.stdout, format!("Removing login credentials for {host}\n"));
    let r = d.berth(&["pull", &image]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("authentication required"), "{r:?}");

    // The docker CLI's login goes through berthd's /auth too; berth's pull then uses it.
    let r = d.docker_stdin(
        &["login", "-u", "berth", "--password-stdin", &host],
        b"s3cret\n",
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("Login Succeeded"), "{r:?}");
    let r = d.berth(&["pull", &image]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        d.docker_ok(&["run", "--rm", &image, "echo", "logged in"]),
        "logged in\n"
    );
}

fn base64_std(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn base64_url(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE.encode(s)
}

#[test]
fn push_to_a_local_registry_and_pull_back() {
    let registry = TestRegistry::start();
    let d = TestDaemon::start();
    d.load_busybox();
    // A loaded image: its layer blobs as the archive had them, a schema 2 manifest made here.
    let target = format!("{}/pushed/box:1", registry.host());
    d.docker_ok(&["tag", "busybox", &target]);
    let out = d.docker_ok(&["push", &target]);
    let digest = out
        .lines()
        .find_map(|l| l.split("digest: ").nth(1))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no digest in {out}"))
        .to_string();
    // skopeo reads what berth pushed, and agrees on the digest.
    let inspect = std::process::Command::new("skopeo")
        .args([
            "inspect",
            "--tls-verify=false",
            &format!("docker://{target}"),
        ])
        .output()
        .unwrap();
    assert!(
        inspect.status.success(),
        "{}",
        String::from_utf8_lossy(&inspect.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(v["Digest"], digest.as_str());
    // Pushing again finds every layer there.
    assert!(
        d.docker_ok(&["push", &target])
            .contains("Layer already exists")
    );
    // Another daemon pulls it back and runs it.
    let d2 = TestDaemon::start();
    assert!(
        d2.docker_ok(&["pull", &target])
            .contains(&format!("Digest: {digest}"))
    );
    assert_eq!(
        d2.docker_ok(&["run", "--rm", &target, "echo", "round trip"]),
        "round trip\n"
    );
    // A pulled image pushed elsewhere keeps its manifest digest.
    let original = registry.push_busybox("orig/box:1");
    let pulled = format!("{}/orig/box:1", registry.host());
    d2.docker_ok(&["pull", &pulled]);
    let copy = format!("{}/copy/box:1", registry.host());
    d2.docker_ok(&["tag", &pulled, &copy]);
    let out = d2.docker_ok(&["push", &copy]);
    assert!(out.contains(&format!("digest: {original}")), "{out}");
}

/// Flips a byte in the middle of a blob in the registry's own storage.
fn corrupt_blob(storage: &std::path::Path, digest: &str) -> (std::path::PathBuf, Vec<u8>) {
    let hex = digest.trim_start_matches("sha256:");
    let path = storage.join(format!(
        "docker/registry/v2/blobs/sha256/{}/{hex}/data",
        &hex[..2]
    ));
    let original = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut bad = original.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    std::fs::write(&path, &bad).unwrap();
    (path, original)
}

/// The busybox fixture's one layer blob (skopeo pushes it unchanged).
fn busybox_layer_digest() -> String {
    let layout = &berth_kernel_tests::fixtures::busybox().oci_layout;
    let read = |p: std::path::PathBuf| -> serde_json::Value {
        serde_json::from_slice(
            &std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
        )
        .unwrap()
    };
    let index = read(layout.join("index.json"));
    let manifest = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest = read(
        layout
            .join("blobs/sha256")
            .join(manifest.trim_start_matches("sha256:")),
    );
    manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn a_cut_download_resumes_where_it_stopped() {
    let registry = TestRegistry::start();
    registry.push_busybox("cut/box:1");
    let layer = busybox_layer_digest();
    let proxy = CuttingProxy::start(registry.port);
    let d = TestDaemon::start();
    let image = format!("{}/cut/box:1", proxy.host());

    // One cut: the same pull retries and asks only for the rest.
    proxy.cut_blob(&layer, 300_000, 1);
    let r = d.docker(&["pull", &image]);
    assert_eq!(
        r.code,
        0,
        "{r:?}
{}",
        d.log()
    );
    let gets: Vec<String> = proxy
        .requests()
        .into_iter()
        .filter(|l| l.starts_with("GET") && l.contains(&layer))
        .collect();
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert!(!gets[0].contains("Range"), "{gets:?}");
    let resumed_at: u64 = gets[1]
        .split("bytes=")
        .nth(1)
        .and_then(|r| r.trim_end_matches('-').parse().ok())
        .unwrap_or_else(|| panic!("the retry did not resume: {gets:?}"));
    assert!(
        resumed_at > 0 && resumed_at <= 300_000,
        "resumed at {resumed_at}"
    );
    assert_eq!(
        d.docker_ok(&["run", "--rm", &image, "echo", "resumed"]),
        "resumed\n"
    );
    d.docker_ok(&["rmi", &image]);

    // The registry goes away mid-download and stays away: a clear error, no image, and the
    // next pull (registry back) resumes from the bytes the failed one kept.
    proxy.cut_blob(&layer, 400_000, 1);
    let proxy_for_outage = &proxy;
    std::thread::scope(|s| {
        s.spawn(|| {
            // Down as soon as the cut response was served.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while std::time::Instant::now() < deadline {
                let cut_served = proxy_for_outage
                    .requests()
                    .iter()
                    .filter(|l| l.starts_with("GET") && l.contains(&layer))
                    .count()
                    >= 3;
                if cut_served {
                    proxy_for_outage.set_down(true);
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        });
        let r = d.docker(&["pull", &image]);
        assert_ne!(r.code, 0, "pulled through an outage: {r:?}");
        assert!(
            r.stderr.contains(&proxy_for_outage.host()) || r.stderr.contains(&layer),
            "the error names neither the registry nor the blob: {r:?}"
        );
    });
    assert_eq!(
        d.docker_ok(&["images", "-q"]),
        "",
        "a half-pulled image is visible"
    );
    proxy.set_down(false);
    let before = proxy.requests().len();
    let r = d.docker(&["pull", &image]);
    assert_eq!(r.code, 0, "{r:?}\n{}", d.log());
    let retry: Vec<String> = proxy.requests()[before..]
        .iter()
        .filter(|l| l.starts_with("GET") && l.contains(&layer))
        .cloned()
        .collect();
    assert_eq!(retry.len(), 1, "{retry:?}");
    assert!(
        retry[0].contains("Range: bytes="),
        "the next pull started over: {retry:?}"
    );
    assert_eq!(
        d.docker_ok(&["run", "--rm", &image, "echo", "after the outage"]),
        "after the outage\n"
    );
}

#[test]
fn a_daemon_killed_mid_pull_shows_no_image_and_resumes_after_restart() {
    let registry = TestRegistry::start();
    registry.push_busybox("crash/box:1");
    let layer = busybox_layer_digest();
    let proxy = CuttingProxy::start(registry.port);
    let mut d = TestDaemon::start();
    let image = format!("{}/crash/box:1", proxy.host());
    proxy.stall_blob(&layer, 500_000);
    let mut pull = std::process::Command::new("docker")
        .args(["pull", &image])
        .env("DOCKER_HOST", d.host())
        .env("DOCKER_CONFIG", d.docker_config())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("docker pull");
    d.eventually("the layer download stalls half-way", || proxy.stalled());
    // Let the bytes before the stop reach the ingest, then kill the daemon mid-download.
    std::thread::sleep(std::time::Duration::from_millis(200));
    d.kill9();
    assert!(
        !pull.wait().unwrap().success(),
        "the pull outlived its daemon"
    );
    d.restart();
    assert_eq!(
        d.docker_ok(&["images", "-q"]),
        "",
        "a half-pulled image is visible after the crash"
    );
    proxy.release();
    let before = proxy.requests().len();
    let r = d.docker(&["pull", &image]);
    assert_eq!(r.code, 0, "{r:?}\n{}", d.log());
    let resumed: Vec<String> = proxy.requests()[before..]
        .iter()
        .filter(|l| l.starts_with("GET") && l.contains(&layer))
        .cloned()
        .collect();
    assert!(
        resumed.len() == 1 && resumed[0].contains("Range: bytes="),
        "the pull after the restart did not resume the download: {resumed:?}"
    );
    assert_eq!(
        d.docker_ok(&["run", "--rm", &image, "echo", "after the crash"]),
        "after the crash\n"
    );
}

#[test]
fn a_corrupt_layer_is_refused_and_a_retry_after_repair_succeeds() {
    let registry = TestRegistry::start();
    registry.push_busybox("bad/box:1");
    let image = format!("{}/bad/box:1", registry.host());
    let layer = busybox_layer_digest();
    let (path, original) = corrupt_blob(&registry.storage(), &layer);
    let d = TestDaemon::start();
    let r = d.docker(&["pull", &image]);
    assert_ne!(r.code, 0, "a corrupt layer was accepted");
    assert!(
        r.stderr.contains("digest") || r.stderr.contains("sha256"),
        "{r:?}"
    );
    assert_eq!(
        d.docker_ok(&["images", "-q"]),
        "",
        "a half-pulled image is visible"
    );
    std::fs::write(&path, original).unwrap();
    assert!(
        d.docker_ok(&["pull", &image])
            .contains("Downloaded newer image")
    );
    assert_eq!(
        d.docker_ok(&["run", "--rm", &image, "echo", "repaired"]),
        "repaired\n"
    );
}

#[test]
fn dockerd_pulls_what_berth_pushed() {
    let registry = TestRegistry::start();
    let d = TestDaemon::start();
    d.load_busybox();
    let target = format!("{}/from/berth:1", registry.host());
    d.docker_ok(&["tag", "busybox", &target]);
    d.docker_ok(&["push", &target]);
    let dockerd = berth_kernel_tests::test_dockerd::TestDockerd::start();
    let r = dockerd.docker(&["pull", &target]);
    assert_eq!(r.code, 0, "{r:?}\n{}", dockerd.log());
    let r = dockerd.docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        &target,
        "echo",
        "run by dockerd",
    ]);
    assert_eq!(r.stdout, "run by dockerd\n", "{r:?}");
}
