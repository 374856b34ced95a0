//! Everything berthd parses from a request before it touches the system: the path and its
//! version prefix, the query (filters, times, references), and a create body (every check
//! `create` makes: command, capabilities, security options, ulimits, resources, mounts),
//! plus a json-file log line. Input: `TARGET \0 BODY`. Nothing may panic.

#![no_main]

use berth_daemon::api::query::{Query, parse_time};
use berth_daemon::images::Reference;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let target = String::from_utf8_lossy(&data[..split]);
    let body = data.get(split + 1..).unwrap_or(&[]);

    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let _ = berth_daemon::api::strip_version(path);
    let q = Query::parse(Some(query));
    let _ = q.filters();
    let _ = q.int("t");
    for key in ["since", "until", "name", "fromImage", "tag", "repo", "signal"] {
        if let Some(v) = q.get(key) {
            let _ = parse_time(v);
            let _ = Reference::parse(v);
            let _ = berth_daemon::names::check_name(v);
            let _ = berth_daemon::containers::lifecycle::parse_signal(v);
        }
    }
    if let Ok(config) = serde_json::from_slice::<serde_json::Value>(body) {
        let host_config = config.get("HostConfig").cloned().unwrap_or_default();
        let image = serde_json::json!({"Cmd": ["sh"]});
        let _ = berth_daemon::containers::spec::validate(&image, &config, &host_config);
        let _ = berth_daemon::containers::spec::environment(&image, &config, "h");
    }
    let mut entries = Vec::new();
    let _ = berth_daemon::json_log::read_from(body, &mut entries);
});
