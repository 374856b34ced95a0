//! `linux.seccomp`, checked from inside: Docker's default profile loads and blocks what Docker
//! blocks, errnoRet and argument conditions, the filter without no_new_privs, exec'd processes
//! inherit it, and SCMP_ACT_NOTIFY hands a listener to `listenerPath`.

use std::io::IoSliceMut;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::thread;

use berth_kernel_tests::harness::{Bundle, Runtime, unique};
use berth_runtime::spec_template::DOCKER_DEFAULT_CAPS;
use serde_json::json;

/// A bundle with Docker's capabilities and, if given, a seccomp profile.
fn docker_like(script: &str, seccomp: Option<serde_json::Value>) -> Bundle {
    Bundle::sh(script).edit(move |s| {
        let caps = DOCKER_DEFAULT_CAPS;
        s["process"]["capabilities"] =
            json!({"bounding": caps, "effective": caps, "permitted": caps});
        s["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .retain(|n| n["type"] != "user");
        if let Some(p) = seccomp {
            s["linux"]["seccomp"] = p;
        }
    })
}

#[test]
fn docker_default_profile_blocks_what_docker_blocks() {
    let rt = Runtime::new();
    // Docker's profile as berthd gives it (moby's file, embedded in berth-daemon).
    let profile =
        berth_daemon::seccomp_profile::default_for(&DOCKER_DEFAULT_CAPS.map(String::from));
    // A user namespace needs no capability, so only the filter stops it; everyday commands run.
    let script = "(unshare -U true) 2>&1; echo unshare=$?; ls /bin >/dev/null && date >/dev/null && echo everyday-ok; grep Seccomp: /proc/self/status";
    let out = rt.run_ok(
        &unique("docker-seccomp"),
        &docker_like(script, Some(profile)),
    );
    assert!(out.contains("Operation not permitted"), "{out}");
    assert!(out.contains("unshare=1"), "{out}");
    assert!(out.contains("everyday-ok"), "{out}");
    assert!(out.contains("Seccomp:\t2"), "filter mode: {out}");

    let out = rt.run_ok(&unique("no-seccomp"), &docker_like(script, None));
    assert!(
        out.contains("unshare=0"),
        "without the filter the same call works: {out}"
    );
}

#[test]
fn errno_ret_and_argument_conditions() {
    let rt = Runtime::new();
    let profile = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
            {"names": ["kill"], "action": "SCMP_ACT_ERRNO",
             "args": [{"index": 1, "value": 10, "op": "SCMP_CMP_EQ"}]}
        ]
    });
    let script =
        "(mkdir /tmp/x) 2>&1; (kill -USR1 $$) 2>&1; echo usr1=$?; kill -0 $$; echo zero=$?";
    let bundle = docker_like(script, Some(profile)).edit(|s| {
        s["mounts"]
            .as_array_mut()
            .unwrap()
            .push(json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}));
    });
    let out = rt.run_ok(&unique("errno"), &bundle);
    assert!(
        out.contains("Function not implemented"),
        "errnoRet 38 (ENOSYS): {out}"
    );
    assert!(out.contains("usr1=1"), "kill with signal 10 refused: {out}");
    assert!(out.contains("zero=0"), "kill with signal 0 allowed: {out}");
}

#[test]
fn filter_without_no_new_privs_and_for_exec() {
    let rt = Runtime::new();
    let profile = json!({"defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]});
    let id = unique("seccomp-nnp");
    let bundle = docker_like("sleep 100", Some(profile)).edit(|s| {
        s["process"]["noNewPrivileges"] = false.into();
        s["mounts"]
            .as_array_mut()
            .unwrap()
            .push(json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}));
    });
    rt.create(&id, &bundle);
    rt.ok(&["start", &id]);
    let out = rt.output(&[
        "exec",
        &id,
        "sh",
        "-c",
        "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status; mkdir /tmp/y",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("Seccomp:\t2") && text.contains("NoNewPrivs:\t0"),
        "{text}"
    );
    assert!(
        err.contains("Operation not permitted"),
        "exec'd process is filtered too: {err}"
    );
}

#[test]
fn notify_hands_the_listener_to_the_agent() {
    let rt = Runtime::new();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("agent.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    // The agent: receive the state and the descriptor, then answer one mkdir with EEXIST.
    let agent = thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 65536];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = rustix::net::RecvAncillaryBuffer::new(&mut space);
        let n = rustix::net::recvmsg(
            &conn,
            &mut [IoSliceMut::new(&mut buf)],
            &mut control,
            rustix::net::RecvFlags::empty(),
        )
        .unwrap()
        .bytes;
        let fd: OwnedFd = control
            .drain()
            .find_map(|m| match m {
                rustix::net::RecvAncillaryMessage::ScmRights(mut fds) => fds.next(),
                _ => None,
            })
            .expect("the listener descriptor");
        let state: serde_json::Value = serde_json::from_slice(&buf[..n]).unwrap();
        let req = libseccomp::ScmpNotifReq::receive(fd.as_raw_fd()).unwrap();
        let name = req.data.syscall.get_name().unwrap();
        libseccomp::ScmpNotifResp::new_error(
            req.id,
            -libc::EEXIST,
            libseccomp::ScmpNotifRespFlags::empty(),
        )
        .respond(fd.as_raw_fd())
        .unwrap();
        (state, name)
    });
    let profile = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": sock,
        "listenerMetadata": "berth-test",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}]
    });
    let bundle = docker_like("(mkdir /tmp/z) 2>&1; echo done", Some(profile)).edit(|s| {
        s["mounts"]
            .as_array_mut()
            .unwrap()
            .push(json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}));
    });
    let out = rt.run_ok(&unique("notify"), &bundle);
    let (state, name) = agent.join().unwrap();
    assert!(
        out.contains("File exists"),
        "the agent's answer reached the container: {out}"
    );
    assert!(name.starts_with("mkdir"), "{name}");
    assert_eq!(state["fds"], json!(["seccompFd"]));
    assert_eq!(state["metadata"], "berth-test");
    assert!(state["pid"].as_i64().unwrap() > 0);
    assert!(state["state"]["id"].as_str().unwrap().starts_with("notify"));
}
