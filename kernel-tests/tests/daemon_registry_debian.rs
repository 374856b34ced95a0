//! A real multi-layer image (Debian minbase from debootstrap, a layer with a whiteout, busybox)
//! through a local registry: pushed by berthd (its 90 MB layer in chunks, one chunk's answer
//! lost on the way and the upload recovered), mounted into a second repository rather than sent again, read back by
//! skopeo, pulled by another berthd and by Debian's dockerd, and pushed by skopeo then pulled
//! by berthd: digests agree everywhere.

use berth_kernel_tests::fixtures;
use berth_kernel_tests::test_daemon::TestDaemon;
use berth_kernel_tests::test_registry::{CuttingProxy, TestRegistry};

fn skopeo(args: &[&str]) -> String {
    let out = std::process::Command::new("skopeo")
        .args(args)
        .output()
        .expect("skopeo");
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn pushed_digest(out: &str) -> String {
    out.lines()
        .find_map(|l| l.split("digest: ").nth(1))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no digest in {out}"))
        .to_string()
}

/// What the image's three layers left, as a container sees it.
const CHECK: &str = "cat /etc/berth-layer; test -e /etc/motd && echo motd is back; cat /etc/debian_version | cut -d. -f1; busybox true && echo busybox";

fn check_output(out: &str) {
    assert_eq!(out, "the middle layer\n12\nbusybox\n", "{out}");
}

#[test]
fn a_debian_image_round_trips_through_a_registry() {
    let image = fixtures::debian_image().expect("the Debian image fixture (debootstrap)");
    let registry = TestRegistry::start();
    let proxy = CuttingProxy::start(registry.port);
    let d = TestDaemon::start();
    let r = d.docker(&["load", "-i", &image.archive.display().to_string()]);
    assert_eq!(r.code, 0, "{r:?}");
    check_output(&d.docker_ok(&["run", "--rm", image.tag, "sh", "-c", CHECK]));

    // Push through the proxy; the answer to the first chunk is lost: berthd asks the registry
    // where the upload stands, and goes on from there (or, as distribution forgets an upload
    // whose state token went stale, starts it once more).
    let target = format!("{}/debian/multi:1", proxy.host());
    d.docker_ok(&["tag", image.tag, &target]);
    proxy.cut_blob("PATCH ", 0, 1);
    let out = d.docker_ok(&["push", &target]);
    let digest = pushed_digest(&out);
    let requests = proxy.requests();
    let patches = requests.iter().filter(|l| l.starts_with("PATCH")).count();
    assert!(
        patches >= 6,
        "the 90 MB layer went up in {patches} chunks: {requests:#?}"
    );
    let status_checks = requests
        .iter()
        .filter(|l| l.starts_with("GET") && l.contains("/blobs/uploads/"))
        .count();
    assert_eq!(status_checks, 1, "{requests:#?}");
    assert_eq!(
        out.matches("Pushed").count(),
        3,
        "every layer pushed once: {out}"
    );

    // A second repository on the same registry: the layers are mounted, not sent.
    let copy = format!("{}/debian/copy:1", proxy.host());
    d.docker_ok(&["tag", image.tag, &copy]);
    let before = proxy.requests().len();
    let out = d.docker_ok(&["push", &copy]);
    assert_eq!(out.matches("Mounted from debian/multi").count(), 3, "{out}");
    assert_eq!(pushed_digest(&out), digest);
    assert!(
        !proxy.requests()[before..]
            .iter()
            .any(|l| l.starts_with("PATCH") || l.starts_with("PUT") && l.contains("digest=")),
        "a mounted blob was uploaded"
    );

    // skopeo reads it (every blob checked against its digest) and agrees on the digest.
    let direct = format!("{}/debian/multi:1", registry.host());
    let inspect: serde_json::Value = serde_json::from_str(&skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{direct}"),
    ]))
    .unwrap();
    assert_eq!(inspect["Digest"], digest.as_str());
    assert_eq!(
        inspect["Layers"],
        serde_json::json!(image.layers),
        "{inspect}"
    );
    let oci = tempfile::tempdir().unwrap();
    skopeo(&[
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        &format!("docker://{direct}"),
        &format!("oci:{}:x", oci.path().display()),
    ]);

    // Another berthd pulls it (three layers at once) and runs it.
    let d2 = TestDaemon::start();
    let out = d2.docker_ok(&["pull", &direct]);
    assert!(out.contains(&format!("Digest: {digest}")), "{out}");
    check_output(&d2.docker_ok(&["run", "--rm", &direct, "sh", "-c", CHECK]));

    // Debian's dockerd pulls what berth pushed.
    let dockerd = berth_kernel_tests::test_dockerd::TestDockerd::start();
    let r = dockerd.docker(&["pull", &direct]);
    assert_eq!(r.code, 0, "{r:?}\n{}", dockerd.log());
    assert!(r.stdout.contains(&digest), "{r:?}");
    let r = dockerd.docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        &direct,
        "sh",
        "-c",
        CHECK,
    ]);
    check_output(&r.stdout);

    // skopeo pushes it to another repository; berthd pulls that, same manifest digest.
    let by_skopeo = format!("{}/skopeo/debian:1", registry.host());
    let digest_file = oci.path().join("pushed-digest");
    skopeo(&[
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        &format!("--digestfile={}", digest_file.display()),
        &format!("oci:{}:x", oci.path().display()),
        &format!("docker://{by_skopeo}"),
    ]);
    let skopeo_digest = std::fs::read_to_string(&digest_file).unwrap();
    let out = d2.docker_ok(&["pull", &by_skopeo]);
    assert!(
        out.contains(&format!("Digest: {}", skopeo_digest.trim())),
        "{out}"
    );
    // skopeo turned the config into an OCI one (another id); the layers are the same.
    let layers = |name: &str| d2.docker_ok(&["inspect", "-f", "{{json .RootFS.Layers}}", name]);
    assert_eq!(layers(&by_skopeo), layers(&direct));
    check_output(&d2.docker_ok(&["run", "--rm", &by_skopeo, "sh", "-c", CHECK]));
}
