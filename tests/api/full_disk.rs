//! A real full disk: the data folder on a small tmpfs that the test mounts (as root, which CI
//! is; elsewhere the test has no disk to fill and checks nothing), filled by webhook calls.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use crate::binary::start_with;
use crate::helpers::rhai_fleet;

/// A mounted tmpfs, unmounted when dropped, even by a failing assertion.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: PathBuf, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(&dir).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        mounted.then_some(Tmpfs(dir))
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(status.success(), "the tmpfs grows");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test]
async fn a_full_disk_refuses_calls_with_503_and_loses_nothing_accepted_once_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = Tmpfs::mount(dir.path().join("disk"), "24m") else {
        eprintln!("no tmpfs could be mounted (not root): no disk to fill");
        return;
    };
    // The free-space guard off, so the disk really fills: what is tested is what happens then.
    let server = start_with(&disk.0.join("data"), 0, |c| {
        c.args(["--min-free-disk", "0"]);
    })
    .await;
    let (fleet, url) = server.fleet_with_hook(rhai_fleet("let x = 1;")).await;
    let body = format!("{{\"x\":\"{}\"}}", "a".repeat(20_000));
    let client = reqwest::Client::new();
    let mut accepted = Vec::new();
    let mut refused = 0;
    for _ in 0..3_000 {
        let res = client.post(&url).body(body.clone()).send().await.unwrap();
        match res.status() {
            StatusCode::CREATED => {
                let v: Value = res.json().await.unwrap();
                accepted.push(v["data"]["fleet_run_id"].as_str().unwrap().to_owned());
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                refused += 1;
                if refused == 100 {
                    break;
                }
            }
            other => panic!(
                "a full disk answered {other}: {}",
                res.text().await.unwrap()
            ),
        }
    }
    assert_eq!(refused, 100, "the disk filled and calls were refused");
    assert!(
        accepted.len() > 100,
        "{} calls accepted first",
        accepted.len()
    );

    // Space comes back, as when an operator frees some: no restart.
    disk.resize("96m");
    let started = Instant::now();
    loop {
        let res = client.post(&url).body("{}").send().await.unwrap();
        if res.status() == StatusCode::CREATED {
            let v: Value = res.json().await.unwrap();
            accepted.push(v["data"]["fleet_run_id"].as_str().unwrap().to_owned());
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "calls are accepted again once there is space: {}",
            res.status()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server.drained(&fleet, Duration::from_secs(120)).await;
    for id in &accepted {
        let (s, run) = server.get(&format!("/runs/{id}")).await;
        assert_eq!(s, StatusCode::OK, "{run}");
        assert_eq!(run["status"], "succeeded", "an accepted run: {run}");
    }
    drop(server);
}
