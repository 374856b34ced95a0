//! `linux.netDevices`: a device of the runtime's network namespace moved into the container,
//! renamed, with its addresses and up state. The runtime itself runs in a network namespace
//! this test makes, holding a veth pair: nothing of the host's network is touched, and all
//! traffic stays between the two ends.

use std::time::{Duration, Instant};

use berth_kernel_tests::harness::{Bundle, Runtime, unique};
use berth_kernel_tests::test_netns::TestNetns;
use serde_json::json;

fn run_in(ns: &TestNetns, rt: &Runtime, id: &str, bundle: &Bundle) -> (i32, String, String) {
    let dir = rt.prepare(id, bundle);
    ns.runtime(rt, &["run", "--bundle", dir.to_str().unwrap(), id])
}

#[test]
fn a_veth_moves_in_renamed_with_its_address() {
    let ns = TestNetns::create();
    ns.ip(&[
        "link", "add", "bnd0", "type", "veth", "peer", "name", "bnd1",
    ]);
    ns.ip(&["addr", "add", "10.213.7.1/24", "dev", "bnd1"]);
    ns.ip(&["addr", "add", "10.213.7.2/24", "dev", "bnd0"]);
    ns.ip(&["link", "set", "bnd1", "up"]);
    ns.ip(&["link", "set", "bnd0", "up"]);

    let rt = Runtime::new();
    let docker = json!(berth_runtime::spec_template::DOCKER_DEFAULT_CAPS);
    let bundle = Bundle::sh(
        "ip -o -4 addr show dev eth7; cat /sys/class/net/eth7/operstate; \
         ls /sys/class/net; ping -c 1 -W 5 10.213.7.1 >/dev/null && echo reached",
    )
    .edit(|s| {
        s["linux"]["netDevices"] = json!({"bnd0": {"name": "eth7"}});
        s["process"]["capabilities"] =
            json!({"bounding": docker, "effective": docker, "permitted": docker});
    });
    let (code, out, err) = run_in(&ns, &rt, &unique("netdev"), &bundle);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("eth7") && out.contains("10.213.7.2/24"),
        "{out}"
    );
    assert!(
        out.contains("\nup\n") || out.contains("\nunknown\n"),
        "{out}"
    );
    assert!(!out.contains("bnd0"), "the old name is gone: {out}");
    assert!(
        out.contains("reached"),
        "the moved device carries traffic: {out}"
    );

    // The container's namespace is gone, and the kernel destroyed the veth pair with it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while ns.ip(&["-o", "link", "show"]).contains("bnd1") {
        assert!(
            Instant::now() < deadline,
            "the veth pair outlived the container"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn net_device_mistakes_leave_nothing_behind() {
    let ns = TestNetns::create();
    ns.ip(&[
        "link", "add", "bnd0", "type", "veth", "peer", "name", "bnd1",
    ]);
    let rt = Runtime::new();
    let cases = [
        // No such device: found out by the runtime, after the clone; all of it is undone.
        (json!({"nosuchdev0": {}}), None, "nosuchdev0"),
        // Names are checked before anything exists.
        (
            json!({"bnd0": {"name": "a/b"}}),
            None,
            "not a valid interface name",
        ),
        (
            json!({"bnd0": {"name": "eth0"}, "bnd1": {"name": "eth0"}}),
            None,
            "already taken",
        ),
        // The host's network namespace cannot receive devices from itself.
        (json!({"bnd0": {}}), Some("network"), "network namespace"),
    ];
    for (devices, drop_ns, want) in cases {
        let id = unique("netdevbad");
        let bundle = Bundle::sh("true").edit(|s| {
            s["linux"]["netDevices"] = devices;
            if let Some(kind) = drop_ns {
                s["linux"]["namespaces"]
                    .as_array_mut()
                    .unwrap()
                    .retain(|n| n["type"] != kind);
            }
        });
        let (code, out, err) = run_in(&ns, &rt, &id, &bundle);
        assert_ne!(code, 0, "{out}");
        assert!(
            err.contains("linux.netDevices") && err.contains(want),
            "{err}"
        );
        assert!(!rt.root().join(&id).exists(), "state left behind");
        let links = ns.ip(&["-o", "link", "show"]);
        assert!(links.contains("bnd0") && links.contains("bnd1"), "{links}");
    }
    assert!(rt.leftover_cgroups().is_empty());
}
