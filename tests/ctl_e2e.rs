//! `shardgate ctl` against the real binary: it finds the admin API through
//! the config file (address and token), `status` and `reload` exit 0 on a
//! serving server and a good file, `reload` exits 1 and lists the problem
//! on a broken file while the old map keeps answering, a wrong token is a
//! usage error (2) and a stopped server is unreachable (3). Also
//! `check-config` refuses a function module that does not compile.

mod support;

use std::net::Ipv4Addr;
use std::process::{Command, Output};

use support::*;

const SITE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 5);
const TOKEN: &str = "ctl-test-token-0123456789";

fn ctl(config: &std::path::Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("ctl")
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn ctl_status_reload_and_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::new();
    let good = config(ports, 1, &format!("admin_token = \"{TOKEN}\""));
    let s = Shardgate::start(dir.path(), ports, &good).with_token(TOKEN);
    let cfg = dir.path().join("shardgate.toml");
    assert_eq!(s.ask(SITE), vec![Ipv4Addr::new(10, 0, 1, 5)]);

    let out = ctl(&cfg, &["status"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("ready"), "{}", text(&out));

    // A broken file: reload exits 1 with the problem; the old map serves.
    std::fs::write(&cfg, good.replace("\"10.0.1.5\"", "\"10.0.1.500\"")).unwrap();
    let out = ctl(&cfg, &["reload"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("10.0.1.500"), "{}", text(&out));
    assert_eq!(s.ask(SITE), vec![Ipv4Addr::new(10, 0, 1, 5)]);

    // Unparseable TOML: the server is not asked; still a failed reload.
    std::fs::write(&cfg, "[server\n").unwrap();
    let out = ctl(&cfg, &["reload"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));

    // A good change: exit 0 and the answer changes.
    std::fs::write(&cfg, good.replace("\"10.0.1.5\"", "\"10.0.1.6\"")).unwrap();
    let out = ctl(&cfg, &["reload"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("reloaded"), "{}", text(&out));
    assert_eq!(s.ask(SITE), vec![Ipv4Addr::new(10, 0, 1, 6)]);

    let out = ctl(&cfg, &["views"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("10.0.1.6"), "{}", text(&out));
    let out = ctl(&cfg, &["stats", "shardgate_config_reloads_total"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out)
            .lines()
            .all(|l| l.contains("shardgate_config_reloads_total")),
        "{}",
        text(&out)
    );

    // The wrong token is the caller's mistake: 2.
    let other = dir.path().join("other.toml");
    std::fs::write(&other, good.replace(TOKEN, "some-other-token-0123456789")).unwrap();
    let out = ctl(&other, &["status"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    // Nothing listening: 3.
    drop(s);
    let out = ctl(&cfg, &["status"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    // No config at all: 2.
    let out = ctl(&dir.path().join("missing.toml"), &["status"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[test]
fn check_config_compiles_function_modules() {
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::new();
    let cache = dir.path().join("cache");
    let good = config_with_functions(ports, 1, free_port(), &cache);
    let path = dir.path().join("shardgate.toml");
    std::fs::write(&path, &good).unwrap();
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("1 function(s) compiled"),
        "{}",
        text(&out)
    );
    assert!(!cache.exists(), "check-config wrote the compile cache");

    let broken = dir.path().join("broken.wat");
    std::fs::write(&broken, "(module (func $f (result i32) (i64.const 1)))").unwrap();
    let module = repo("functions/checksum.wat").display().to_string();
    let bad = good.replace(&module, &broken.display().to_string());
    std::fs::write(&path, bad).unwrap();
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("checksum"), "{}", text(&out));
}
