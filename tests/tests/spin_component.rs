//! The Spin component as shipped: what it imports (only what a Spin host
//! provides), and `spin.toml` declaring every setting the core reads.
//!
//! Needs `make spin-test-component` (`make test` runs it first).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use failsoft_edge::config::EdgeConfig;
use failsoft_edge::sqs::SqsSettings;
use failsoft_lab::process::bin_dir;

fn workspace_root() -> PathBuf {
    failsoft_lab::local_stack::workspace_root()
}

/// The cargo target directory (the one the test binaries are in).
fn target_dir() -> PathBuf {
    bin_dir().parent().expect("target/debug has a parent").to_path_buf()
}

/// The imports and exports of a component, as `wasm-tools component wit` prints them.
fn world_of(component: &Path) -> (Vec<String>, Vec<String>) {
    assert!(component.exists(), "{} is missing: run `make spin-test-component`", component.display());
    let wasm_tools = workspace_root().join(".venv/bin/wasm-tools");
    let output = Command::new(&wasm_tools)
        .args(["component", "wit"])
        .arg(component)
        .output()
        .unwrap_or_else(|e| panic!("{} runs (scripts/setup.sh python): {e}", wasm_tools.display()));
    assert!(output.status.success(), "wasm-tools: {}", String::from_utf8_lossy(&output.stderr));
    let wit = String::from_utf8(output.stdout).expect("WIT is text");
    let items = |keyword: &str| -> Vec<String> {
        wit.lines()
            .filter_map(|line| line.trim().strip_prefix(keyword))
            .map(|name| name.trim_end_matches(';').to_owned())
            .collect()
    };
    (items("import "), items("export "))
}

#[test]
fn shipped_component_imports_only_wasi_and_spin() {
    let (imports, exports) = world_of(&target_dir().join("wasm32-wasip2/release/failsoft_edge_spin.wasm"));
    let foreign: Vec<&String> =
        imports.iter().filter(|i| !(i.starts_with("wasi:") || i.starts_with("fermyon:spin/"))).collect();
    assert!(foreign.is_empty(), "a Spin host provides only wasi:* and fermyon:spin/*, not {foreign:?}");
    for needed in ["fermyon:spin/key-value@2.0.0", "fermyon:spin/variables@2.0.0", "wasi:http/outgoing-handler@"] {
        assert!(imports.iter().any(|i| i.starts_with(needed)), "imports {needed}: {imports:?}");
    }
    assert!(
        exports.iter().any(|e| e.starts_with("wasi:http/incoming-handler@0.2")),
        "exports the wasi-http 0.2 handler Spin's HTTP trigger calls: {exports:?}"
    );
}

/// The shim must provide every `fermyon:spin` import, or `wasmtime serve`
/// cannot instantiate the test component.
#[test]
fn test_component_leaves_only_wasi_imports() {
    let (imports, _) = world_of(&target_dir().join("spin/failsoft-edge-spin-with-shim.wasm"));
    let left: Vec<&String> = imports.iter().filter(|i| !i.starts_with("wasi:")).collect();
    assert!(left.is_empty(), "the shim leaves {left:?} unprovided");
}

/// The `[variables]` and `[component.failsoft.variables]` names of spin.toml.
fn manifest_variables() -> (BTreeSet<String>, BTreeSet<String>) {
    let text = std::fs::read_to_string(workspace_root().join("spin.toml")).expect("spin.toml at the root");
    let (mut app, mut component) = (BTreeSet::new(), BTreeSet::new());
    let mut section = String::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line.to_owned();
            continue;
        }
        let Some((name, value)) = line.split_once('=') else { continue };
        let (name, value) = (name.trim().to_owned(), value.trim());
        if name.starts_with('#') {
            continue;
        }
        match section.as_str() {
            "[variables]" => {
                app.insert(name);
            }
            "[component.failsoft.variables]" => {
                assert_eq!(value, format!("\"{{{{ {name} }}}}\""), "{name} maps the application variable of its name");
                component.insert(name);
            }
            _ => {}
        }
    }
    (app, component)
}

#[test]
fn spin_toml_declares_every_setting_the_core_reads() {
    // Read by the Spin host itself, not the core: its log level and its
    // key-value sweep (edge/spin/src/kv.rs).
    let asked = Mutex::new(BTreeSet::from(["FAILSOFT_LOG".to_owned(), "FAILSOFT_KV_SWEEP_EVERY".to_owned()]));
    let lookup = |name: &str| {
        asked.lock().unwrap().insert(name.to_owned());
        Some(match name {
            "FAILSOFT_CRM_URL" => "http://127.0.0.1:9".to_owned(),
            "FAILSOFT_ORIGIN_URL" => "http://127.0.0.1:10".to_owned(),
            "FAILSOFT_QUEUE_URL" => "http://127.0.0.1:11/000000000000/q.fifo".to_owned(),
            "FAILSOFT_BASIC_USER" | "AWS_REGION" => "x".to_owned(),
            n if n.contains("SECRET") || n.contains("TOKEN") || n.contains("PASSWORD") || n.starts_with("AWS_") => {
                "0123456789abcdef0123".to_owned()
            }
            _ => return None,
        })
    };
    EdgeConfig::from_lookup(lookup).expect("a complete configuration");
    // Each shipped CRM profile, so the secrets their mappings name are asked.
    for (profile, _) in failsoft_shared::mapping::profiles::PROFILES {
        let with_profile = |name: &str| match name {
            "FAILSOFT_CRM_PROFILE" => {
                asked.lock().unwrap().insert(name.to_owned());
                Some((*profile).to_owned())
            }
            "FAILSOFT_CRM_CLIENT_ID" | "FAILSOFT_CRM_USERNAME" => {
                asked.lock().unwrap().insert(name.to_owned());
                Some("x".to_owned())
            }
            _ => lookup(name),
        };
        EdgeConfig::from_lookup(with_profile).unwrap_or_else(|e| panic!("the {profile} profile: {e}"));
    }
    SqsSettings::from_lookup(lookup).expect("complete SQS settings").expect("SQS configured");
    // The write outbox's caps, read with a queue configured.
    failsoft_edge::outbox::caps(lookup).expect("the outbox's caps");
    let asked: BTreeSet<String> = asked.into_inner().unwrap().iter().map(|n| n.to_ascii_lowercase()).collect();

    let (app, component) = manifest_variables();
    let undeclared: Vec<&String> = asked.difference(&component).collect();
    assert!(undeclared.is_empty(), "spin.toml does not give the component {undeclared:?}: it would read them as unset");
    let unread: Vec<&String> = component.difference(&asked).collect();
    assert!(unread.is_empty(), "spin.toml maps {unread:?}, which nothing reads");
    let missing: Vec<&String> = component.difference(&app).collect();
    assert!(missing.is_empty(), "component variables without an application variable: {missing:?}");
}
