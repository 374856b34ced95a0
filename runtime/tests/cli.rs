//! The CLI's surface, without containers: version shape, help, argument errors, `spec`.
//! (Container tests run as root in kernel-tests/.)

use std::process::Command;

fn berth_runtime(root: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_berth-runtime"));
    c.arg("--root").arg(root);
    c
}

#[test]
fn version_has_runcs_three_lines() {
    let dir = tempfile::tempdir().unwrap();
    let out = berth_runtime(dir.path()).arg("--version").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with("berth-runtime version "));
    assert!(lines[1].starts_with("commit: "));
    assert_eq!(lines[2], format!("spec: {}", berth_runtime::OCI_VERSION));
}

#[test]
fn help_lists_the_verbs() {
    let out = Command::new(env!("CARGO_BIN_EXE_berth-runtime"))
        .arg("--help")
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    for verb in [
        "create", "start", "run", "state", "kill", "delete", "list", "exec", "ps", "pause",
        "resume", "spec",
    ] {
        assert!(text.contains(verb), "{verb} missing from --help:\n{text}");
    }
}

#[test]
fn unknown_container_does_not_exist() {
    let dir = tempfile::tempdir().unwrap();
    let out = berth_runtime(dir.path())
        .args(["state", "ghost"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    // podman matches this text.
    assert!(
        err.contains("ghost") && err.contains("does not exist"),
        "{err}"
    );
}

#[test]
fn flags_after_the_id_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let out = berth_runtime(dir.path())
        .args(["delete", "ghost", "--force"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn spec_writes_a_parseable_config() {
    let dir = tempfile::tempdir().unwrap();
    let out = berth_runtime(dir.path())
        .arg("spec")
        .arg("--bundle")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let spec = berth_runtime::bundle::load_spec(&dir.path().join("config.json")).unwrap();
    assert_eq!(
        spec.process().as_ref().unwrap().args().as_ref().unwrap(),
        &vec!["sh".to_string()]
    );
}

#[test]
fn the_entry_prepares_the_standard_descriptors_and_sigpipe_as_std_does() {
    // berth-runtime has its own C entry (std's start-up skipped). A closed stdout is opened on
    // /dev/null, so printing succeeds (and no file the runtime opens can take descriptor 1).
    let out = Command::new("sh")
        .arg("-c")
        .arg(r#""$0" --version >&-"#)
        .arg(env!("CARGO_BIN_EXE_berth-runtime"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // SIGPIPE is ignored: a stdout whose reader is gone is an error (std's 101 for a failed
    // print), not death by the signal.
    use std::os::unix::process::ExitStatusExt;
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let status = Command::new(env!("CARGO_BIN_EXE_berth-runtime"))
        .arg("--version")
        .stdout(writer)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.signal(), None, "{status:?}");
    assert_eq!(status.code(), Some(101), "{status:?}");
}
