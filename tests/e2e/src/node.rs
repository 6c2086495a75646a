//! The one-node Kubernetes of `scripts/kube-node`, as the node tests drive it: every client
//! (kubectl, helm, node with the official Pusher SDKs, curl) runs inside the node's network
//! namespace, where the pod and Service addresses exist.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::workspace_root;

/// The node `scripts/kube-node up` started, from the variables it printed.
pub struct KubeNode {
    pub kubeconfig: PathBuf,
    pub netns: String,
    pub server_image: String,
    pub operator_image: String,
    pub redis_image: String,
    helm: PathBuf,
}

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run `scripts/kube-node up` and export the variables it prints")
    })
}

impl KubeNode {
    pub fn from_env() -> KubeNode {
        KubeNode {
            kubeconfig: var("KUBECONFIG").into(),
            netns: var("HERALD_NETNS"),
            server_image: var("HERALD_SERVER_IMAGE"),
            operator_image: var("HERALD_OPERATOR_IMAGE"),
            redis_image: var("HERALD_REDIS_IMAGE"),
            helm: crate::control_plane_bin().join("helm"),
        }
    }

    /// A command run inside the node's network namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.netns, program]).env("KUBECONFIG", &self.kubeconfig);
        command
    }

    fn run(&self, mut command: Command, stdin: Option<&str>) -> (bool, String) {
        command.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("ip netns exec");
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes()).expect("write stdin");
        }
        let out = child.wait_with_output().expect("wait");
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }

    /// Any program inside the namespace; returns (success, stdout + stderr).
    pub fn run_in_ns(&self, program: &str, args: &[&str]) -> (bool, String) {
        let mut command = self.command(program);
        command.args(args);
        self.run(command, None)
    }

    /// kubectl inside the namespace; returns (success, stdout + stderr).
    pub fn kubectl(&self, args: &[&str]) -> (bool, String) {
        let mut command = self.command("kubectl");
        command.args(args);
        self.run(command, None)
    }

    /// kubectl that must succeed; returns its output.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let (ok, out) = self.kubectl(args);
        assert!(ok, "kubectl {args:?}: {out}");
        out
    }

    /// `kubectl apply -f -` of a YAML document.
    pub fn apply(&self, namespace: &str, yaml: &str) {
        let mut command = self.command("kubectl");
        command.args(["apply", "-n", namespace, "-f", "-"]);
        let (ok, out) = self.run(command, Some(yaml));
        assert!(ok, "kubectl apply: {out}\n{yaml}");
    }

    pub fn helm(&self, args: &[&str]) -> (bool, String) {
        let mut command = self.command(&self.helm.display().to_string());
        command.args(args);
        self.run(command, None)
    }

    /// A `tests/compat` script under node, with its JSON argument; stdout is read line by line.
    pub fn script(&self, script: &str, arg: &Value) -> Script {
        let dir = workspace_root().join("tests/compat");
        let mut command = self.command("node");
        command.arg(dir.join(script)).arg(arg.to_string()).current_dir(&dir);
        command.stdout(Stdio::piped()).stderr(Stdio::inherit()).stdin(Stdio::null());
        let mut child = command.spawn().expect("node");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        Script { child, stdout }
    }

    /// One pod's Prometheus metric (first sample), read from inside the namespace.
    pub fn pod_metric(&self, pod_ip: &str, port: u16, name: &str) -> Option<f64> {
        let mut command = self.command("curl");
        command.args(["-sf", "--max-time", "3", &format!("http://{pod_ip}:{port}/metrics")]);
        let (ok, out) = self.run(command, None);
        if !ok {
            return None;
        }
        out.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    /// `kubectl get -o jsonpath=...`.
    pub fn jsonpath(&self, namespace: &str, what: &str, path: &str) -> String {
        self.kubectl_ok(&["get", "-n", namespace, what, "-o", &format!("jsonpath={path}")])
    }
}

/// A running node script.
pub struct Script {
    child: Child,
    stdout: BufReader<ChildStdout>,
}

impl Script {
    /// The next JSON line with `key` (other lines are skipped); panics if the script exits.
    pub fn line(&mut self, key: &str) -> Value {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.stdout.read_line(&mut line).expect("read");
            if n == 0 {
                let status = self.child.wait().expect("wait");
                panic!("the script exited ({status}) before printing {key:?}");
            }
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if let Some(found) = v.get(key) {
                    return found.clone();
                }
            }
        }
    }

    /// Waits for the script to exit; its success.
    pub fn finish(mut self) -> bool {
        self.child.wait().map(|s| s.success()).unwrap_or(false)
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` every 200 ms until it returns `Some`, or panics after `within`.
pub fn poll<T>(what: &str, within: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Milliseconds since the Unix epoch (the clock the node scripts print).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
