//! How berthd reaches registries: TLS checked against its certs.d (a registry on a
//! non-loopback address inside a test network namespace), Docker Hub through a mirror, and
//! blocked registries.

use berth_kernel_tests::test_daemon::TestDaemon;
use berth_kernel_tests::test_netns::TestNetns;
use berth_kernel_tests::test_registry::TestRegistry;

/// An address that is not loopback, so berthd treats the registry as it would one on the
/// network; it lives on the test namespace's `lo`, so nothing leaves the namespace.
const REGISTRY_ADDRESS: &str = "198.18.0.1";

#[test]
fn a_tls_registry_is_trusted_through_certs_d_only() {
    let plain = TestRegistry::start();
    let digest = plain.push_busybox("secure/box:1");
    let ns = TestNetns::create();
    ns.ip(&["link", "set", "lo", "up"]);
    ns.ip(&[
        "addr",
        "add",
        &format!("{REGISTRY_ADDRESS}/32"),
        "dev",
        "lo",
    ]);
    let tls = TestRegistry::start_tls_in(&ns, REGISTRY_ADDRESS, &plain.storage());
    let image = format!("{}/secure/box:1", tls.host());

    let d = TestDaemon::start_in(&ns, &[]);
    // Unknown CA: refused, with the reason.
    let r = d.docker(&["pull", &image]);
    assert_ne!(r.code, 0, "pulled from a registry whose CA is not trusted");
    assert!(
        r.stderr.contains("certificate") && r.stderr.contains(&tls.host()),
        "{r:?}"
    );
    assert_eq!(d.docker_ok(&["images", "-q"]), "");

    // Its CA in certs.d/<host:port>/ca.crt: verified and pulled.
    let dir = d.certs_dir().join(tls.host());
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(tls.ca(), dir.join("ca.crt")).unwrap();
    let out = d.docker_ok(&["pull", &image]);
    assert!(out.contains(&format!("Digest: {digest}")), "{out}");
    assert_eq!(
        d.docker_ok(&[
            "run",
            "--rm",
            "--network",
            "none",
            &image,
            "echo",
            "over TLS"
        ]),
        "over TLS\n"
    );

    // Named insecure, it is reached over TLS without the check.
    let insecure = TestDaemon::start_in(&ns, &["--insecure-registry", &tls.host()]);
    let out = insecure.docker_ok(&["pull", &image]);
    assert!(out.contains(&format!("Digest: {digest}")), "{out}");
}

#[test]
fn docker_hub_images_come_through_a_mirror() {
    let mirror = TestRegistry::start();
    let digest = mirror.push_busybox("library/busybox:latest");
    let d = TestDaemon::start_with_flags(
        None,
        &["--registry-mirror", &format!("http://{}", mirror.host())],
    );
    let out = d.docker_ok(&["pull", "busybox"]);
    assert!(out.contains(&format!("Digest: {digest}")), "{out}");
    assert_eq!(
        d.docker_ok(&[
            "inspect",
            "-f",
            "{{json .RepoTags}} {{json .RepoDigests}}",
            "busybox"
        ])
        .trim(),
        format!("[\"busybox:latest\"] [\"busybox@{digest}\"]")
    );
    assert_eq!(
        d.docker_ok(&["run", "--rm", "busybox", "echo", "mirrored"]),
        "mirrored\n"
    );
    // Not on the mirror: Docker Hub is next, which this daemon may not reach.
    let r = d.docker(&["pull", "alpine"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("registry-1.docker.io is blocked"),
        "{r:?}"
    );
}
