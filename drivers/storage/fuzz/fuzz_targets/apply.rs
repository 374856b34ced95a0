//! Any bytes as a layer: apply (as files, and as an EROFS index) must return (Ok or an error),
//! never panic, never hang, and never write outside the snapshot. The snapshot lives in a
//! directory whose sibling is a canary that must stay empty.
#![no_main]

use berth_storage::layer::{self, ApplyOptions, DevicePolicy};
use berth_storage::{ApplyTarget, Whiteouts};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    let canary = dir.path().join("canary");
    std::fs::create_dir(&root).unwrap();
    std::fs::create_dir(&canary).unwrap();
    let opts = ApplyOptions {
        devices: DevicePolicy::Skip,
        ..ApplyOptions::default()
    };
    for whiteouts in [Whiteouts::Delete, Whiteouts::Overlay] {
        let target = ApplyTarget {
            dir: root.clone(),
            whiteouts,
            image: None,
        };
        let _ = layer::apply(&target, data, &opts);
    }
    // The same bytes indexed into an EROFS image (the erofs driver's form).
    let image = dir.path().join("layer.erofs");
    let target = ApplyTarget {
        dir: root.clone(),
        whiteouts: Whiteouts::Overlay,
        image: Some(image.clone()),
    };
    let _ = layer::apply(&target, data, &opts);
    let _ = std::fs::remove_file(&image);
    assert_eq!(
        std::fs::read_dir(&canary).unwrap().count(),
        0,
        "a layer wrote outside its snapshot"
    );
});
